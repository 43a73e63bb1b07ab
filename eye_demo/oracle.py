"""The ground-truth correspondence of a pair, from the renderer's canonical maps.

It has the matcher's output format (eye_core's Correspondence), so it feeds the same
rearrangement: what the injection achieves with a perfect match (the benchmark's
``ground-truth`` method), which separates matching errors from injection errors.
"""

from __future__ import annotations

import numpy as np
import torch

from ..eye_core.correspondence import Correspondence
from .metrics import token_labels, token_uv


def oracle_correspondence(target_labels, target_uv, reference_labels, reference_uv, target_grid,
                          reference_grid=None) -> Correspondence:
    """Each target token of part p at (u, v) -> the reference token of part p nearest in (u, v).

    Tokens take their majority part and the mean (u, v) of those pixels; background and
    mixed target tokens, and parts the reference does not show, stay unmatched (-1). The
    masks are the object tokens of each image.
    """
    reference_grid = reference_grid or target_grid
    t_label, _ = token_labels(target_labels, target_grid)
    r_label, _ = token_labels(reference_labels, reference_grid)
    t_uv = token_uv(target_labels, target_uv, target_grid, t_label)
    r_uv = token_uv(reference_labels, reference_uv, reference_grid, r_label)
    index = np.full(t_label.shape, -1, np.int64)
    score = np.zeros(t_label.shape, np.float32)
    for part in np.unique(t_label[t_label > 0]):
        rows = np.flatnonzero(t_label == part)
        candidates = np.flatnonzero((r_label == part) & ~np.isnan(r_uv[:, 0]))
        if candidates.size == 0:
            continue
        distance = np.linalg.norm(t_uv[rows, None] - r_uv[None, candidates], axis=-1)
        distance = np.where(np.isnan(distance), np.inf, distance)
        index[rows] = candidates[distance.argmin(1)]
        score[rows] = 1.0
    as_mask = lambda labels, grid: torch.from_numpy((labels > 0).reshape(1, *grid))  # noqa: E731
    return Correspondence(index=torch.from_numpy(index)[None], score=torch.from_numpy(score)[None],
                          mutual=None, target_grid=tuple(target_grid), reference_grid=tuple(reference_grid),
                          target_mask=as_mask(t_label, target_grid), reference_mask=as_mask(r_label, reference_grid))


def oracle_point(target, reference, point):
    """Where ``point`` ((x, y) fractions on the ``target`` Render) lies on ``reference``: (x, y) fractions, or None.

    The target pixel's part and (u, v) in its part's frame; the reference pixel of the same
    part nearest in (u, v) is the answer (None on the background or a part the reference lacks).
    """
    height, width = target.labels.shape
    col = min(int(point[0] * width), width - 1)
    row = min(int(point[1] * height), height - 1)
    part = int(target.labels[row, col])
    if part <= 0 or not np.isfinite(target.uv[row, col]).all():
        return None
    same = (reference.labels == part) & np.isfinite(reference.uv[..., 0])
    if not same.any():
        return None
    rows, cols = np.nonzero(same)
    distance = np.linalg.norm(reference.uv[rows, cols] - target.uv[row, col], axis=-1)
    best = int(np.argmin(distance))
    r_height, r_width = reference.labels.shape
    return ((cols[best] + 0.5) / r_width, (rows[best] + 0.5) / r_height)


def part_points(target, reference, count: int, rng: np.random.Generator) -> list:
    """``count`` points on the target's parts that the reference shows too, one part after another.

    Parts are taken largest first and cycled; each point is a random pixel inside its part
    (away from its edge where the part allows), so every part is asked about before any twice.
    """
    inner = target.labels.copy()
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        shifted = np.roll(target.labels, (dy, dx), axis=(0, 1))
        inner = np.where(shifted == target.labels, inner, 0)
    parts = [int(p) for p in np.unique(target.labels) if p > 0 and (reference.labels == p).any()]
    parts.sort(key=lambda p: -int((target.labels == p).sum()))
    height, width = target.labels.shape
    points = []
    for k in range(count):
        part = parts[k % len(parts)]
        rows, cols = np.nonzero(inner == part)
        if rows.size == 0:
            rows, cols = np.nonzero(target.labels == part)
        pick = int(rng.integers(rows.size))
        points.append(((cols[pick] + 0.5) / width, (rows[pick] + 0.5) / height))
    return points


def object_size(render) -> float:
    """The object's size as PCK measures it: the longer side of its bounding box, as a fraction of the image's."""
    rows, cols = np.nonzero(render.labels > 0)
    height, width = render.labels.shape
    return max((rows.max() - rows.min() + 1), (cols.max() - cols.min() + 1)) / max(height, width)
