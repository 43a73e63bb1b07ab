"""Ground-truth metrics: they judge the method, they are not part of it (numpy only).

Token-level correspondence accuracy uses the renderer's part labels and canonical (u, v)
maps; the image metrics (part accuracy, colour error, structure) compare a result with the
reference's part colours and the ideal transfer.
"""

from __future__ import annotations

import numpy as np


def token_labels(labels: np.ndarray, grid: tuple, min_purity: float = 0.5):
    """Majority part label of each token of a (h, w) grid over a pixel label map.

    Returns (token_label (h*w,), purity (h*w,)): the most frequent label among the token's
    pixels (background 0 included) and the share of pixels that carry it. Tokens whose
    majority covers less than ``min_purity`` of them get label -1 (mixed, not scored).
    """
    height, width = labels.shape
    h, w = grid
    rows = np.minimum((np.arange(height) * h) // height, h - 1)
    cols = np.minimum((np.arange(width) * w) // width, w - 1)
    token = rows[:, None] * w + cols[None, :]
    count = int(labels.max()) + 1
    histogram = np.zeros((h * w, count))
    np.add.at(histogram, (token.ravel(), labels.ravel().astype(int)), 1)
    majority = histogram.argmax(1)
    purity = histogram.max(1) / np.maximum(histogram.sum(1), 1)
    majority = np.where(purity >= min_purity, majority, -1)
    return majority, purity


def token_uv(labels: np.ndarray, uv: np.ndarray, grid: tuple, token_label: np.ndarray) -> np.ndarray:
    """Mean (u, v) of each token's pixels of its majority part; NaN where there is none."""
    height, width = labels.shape
    h, w = grid
    rows = np.minimum((np.arange(height) * h) // height, h - 1)
    cols = np.minimum((np.arange(width) * w) // width, w - 1)
    token = (rows[:, None] * w + cols[None, :]).ravel()
    same = labels.ravel() == token_label[token]
    sums = np.zeros((h * w, 2))
    counts = np.zeros(h * w)
    np.add.at(sums, token[same], np.nan_to_num(uv.reshape(-1, 2)[same]))
    np.add.at(counts, token[same], 1)
    with np.errstate(invalid="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)


def correspondence_accuracy(target_labels, reference_labels, matches, target_grid, reference_grid,
                            target_uv=None, reference_uv=None) -> dict:
    """How right a token correspondence is, from the renders' ground truth.

    ``matches``: for each target token (row-major over ``target_grid``) the index of its
    reference token, or -1 (unmatched). Scored over the target's object tokens (majority
    label > 0) that are matched. Returns part_accuracy (share matched into a reference
    token of the same part), uv_error (mean (u, v) distance of same-part matches, when the
    uv maps are given), chance (part accuracy of a uniform random match into the
    reference's object tokens) and the number of tokens scored.
    """
    t_label, _ = token_labels(target_labels, target_grid)
    r_label, _ = token_labels(reference_labels, reference_grid)
    matches = np.asarray(matches).reshape(-1)
    scored = (t_label > 0) & (matches >= 0)
    if not scored.any():
        return {"part_accuracy": float("nan"), "uv_error": float("nan"), "chance": float("nan"), "tokens": 0}
    matched_label = r_label[matches[scored]]
    correct = matched_label == t_label[scored]
    result = {"part_accuracy": float(correct.mean()), "tokens": int(scored.sum())}
    reference_objects = r_label[r_label > 0]
    shares = {p: float((reference_objects == p).mean()) for p in np.unique(reference_objects)}
    result["chance"] = float(np.mean([shares.get(p, 0.0) for p in t_label[scored]]))
    if target_uv is not None and reference_uv is not None:
        t_uv = token_uv(target_labels, target_uv, target_grid, t_label)[scored][correct]
        r_uv = token_uv(reference_labels, reference_uv, reference_grid, r_label)[matches[scored]][correct]
        distance = np.linalg.norm(t_uv - r_uv, axis=1)
        result["uv_error"] = float(np.nanmean(distance)) if distance.size else float("nan")
    return result


def positional_matches(target_labels, reference_labels, grid) -> np.ndarray:
    """The plain positional baseline: each target object token matched to the nearest
    reference object token on the grid (by position only)."""
    t_label, _ = token_labels(target_labels, grid)
    r_label, _ = token_labels(reference_labels, grid)
    h, w = grid
    yy, xx = np.divmod(np.arange(h * w), w)
    reference_objects = np.flatnonzero(r_label > 0)
    matches = np.full(h * w, -1)
    targets = np.flatnonzero(t_label > 0)
    if reference_objects.size and targets.size:
        d = (yy[targets, None] - yy[None, reference_objects]) ** 2 + (xx[targets, None] - xx[None, reference_objects]) ** 2
        matches[targets] = reference_objects[d.argmin(1)]
    return matches
