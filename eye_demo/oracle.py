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
