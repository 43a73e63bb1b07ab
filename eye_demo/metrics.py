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


# ---------------------------------------------------------------- image metrics

def _box_mean(values: np.ndarray, weights: np.ndarray, radius: int) -> np.ndarray:
    """Weighted mean of ``values`` (H, W, C) over (2r+1)^2 neighbourhoods, weights (H, W)."""
    def box(a):
        padded = np.pad(a, [(radius, radius), (radius, radius)] + [(0, 0)] * (a.ndim - 2))
        c = padded.cumsum(0).cumsum(1)
        c = np.pad(c, [(1, 0), (1, 0)] + [(0, 0)] * (a.ndim - 2))
        k = 2 * radius + 1
        return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    total = box(values * weights[..., None])
    count = box(weights.astype(float))[..., None]
    return total / np.maximum(count, 1e-9)


def reference_part_colours(reference_labels: np.ndarray, reference_image: np.ndarray) -> dict:
    """Mean CIELAB colour of every part of the reference (over its interior, patterns and markings included)."""
    from .colour import srgb_to_lab
    from .regions import erode

    lab = srgb_to_lab(reference_image)
    colours = {}
    for label in np.unique(reference_labels):
        if label <= 0:
            continue
        inside = erode(reference_labels == label, 1)
        if not inside.any():
            inside = reference_labels == label
        colours[int(label)] = lab[inside].mean(0)
    return colours


def part_accuracy(result: np.ndarray, target_labels: np.ndarray, reference_labels: np.ndarray,
                  reference_image: np.ndarray, radius: int = 2) -> float:
    """The share of the target's object pixels whose result colour is nearest to the reference's
    colour of the same part, among all the reference's part colours ("the wing took the wing's colour").

    Colours in CIELAB; the result is averaged over a small neighbourhood inside the same target
    part (a pattern or a marking is judged by its part's overall colour, like the reference's
    part colours, which are means over each part's interior). Pixels one pixel from a part
    border are not scored (anti-aliasing).
    """
    from .colour import delta_e, srgb_to_lab
    from .regions import part_interiors

    colours = reference_part_colours(reference_labels, reference_image)
    labels = sorted(colours)
    palette = np.stack([colours[p] for p in labels])
    lab = srgb_to_lab(np.clip(result, 0, 1))
    scored = part_interiors(target_labels) & np.isin(target_labels, labels)
    if not scored.any():
        return float("nan")
    smoothed = np.zeros_like(lab)
    for label in np.unique(target_labels[scored]):
        part = target_labels == label
        smoothed[part] = _box_mean(lab, part, radius)[part]
    nearest = np.array(labels)[delta_e(smoothed[scored][:, None], palette[None]).argmin(1)]
    return float((nearest == target_labels[scored]).mean())


def colour_error(result: np.ndarray, ideal: np.ndarray, target_labels: np.ndarray) -> dict:
    """Mean deltaE76 to the ideal transfer over the object (part interiors) and over the background
    (two pixels away from the object)."""
    from .colour import delta_e, srgb_to_lab
    from .regions import dilate, part_interiors

    difference = delta_e(srgb_to_lab(np.clip(result, 0, 1)), srgb_to_lab(ideal))
    objects = part_interiors(target_labels)
    background = ~dilate(target_labels > 0, 2)
    return {"object": float(difference[objects].mean()) if objects.any() else float("nan"),
            "background": float(difference[background].mean()) if background.any() else float("nan")}


def result_silhouette(result: np.ndarray, background: np.ndarray, threshold: float = 12.0) -> np.ndarray:
    """The result's object: pixels farther than ``threshold`` deltaE from the target's own background."""
    from .colour import delta_e, srgb_to_lab

    return delta_e(srgb_to_lab(np.clip(result, 0, 1)), srgb_to_lab(background)) > threshold


def silhouette_iou(result: np.ndarray, background: np.ndarray, target_labels: np.ndarray) -> float:
    """IoU of the result's object (see result_silhouette) with the target's object mask."""
    mine = result_silhouette(result, background)
    truth = target_labels > 0
    union = (mine | truth).sum()
    return float((mine & truth).sum() / union) if union else float("nan")


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Per-pixel colour gradient magnitude (CIELAB central differences, deltaE per pixel)."""
    from .colour import srgb_to_lab

    lab = srgb_to_lab(np.clip(image, 0, 1))
    gy = np.zeros(lab.shape[:2])
    gx = np.zeros(lab.shape[:2])
    gy[1:-1] = np.linalg.norm(lab[2:] - lab[:-2], axis=-1) / 2
    gx[:, 1:-1] = np.linalg.norm(lab[:, 2:] - lab[:, :-2], axis=-1) / 2
    return np.hypot(gx, gy)


def structure_similarity(result: np.ndarray, ideal: np.ndarray, edge: float = 10.0, c: float = 100.0) -> float:
    """How well the result keeps the ideal transfer's edges: gradient magnitude similarity
    (2 g_r g_i + c) / (g_r^2 + g_i^2 + c) (GMSD, Xue et al. 2014) averaged where either image
    has an edge (gradient above ``edge`` deltaE). 1 for the ideal; a shift of one pixel scores
    about 0.75, three pixels about 0.5, a 3x3 blur about 0.87, the same structure in other
    colours about 0.85, another image about 0.3.
    """
    g_result, g_ideal = gradient_magnitude(result), gradient_magnitude(ideal)
    where = (g_result > edge) | (g_ideal > edge)
    if not where.any():
        return 1.0
    similarity = (2 * g_result * g_ideal + c) / (g_result ** 2 + g_ideal ** 2 + c)
    return float(similarity[where].mean())


def score_transfer(result: np.ndarray, target_render, reference_render, ideal_image: np.ndarray,
                   target_background: np.ndarray) -> dict:
    """Every image metric of one transfer result (H, W, 3) in 0..1."""
    errors = colour_error(result, ideal_image, target_render.labels)
    return {
        "part_accuracy": part_accuracy(result, target_render.labels, reference_render.labels, reference_render.image),
        "delta_e_object": errors["object"],
        "delta_e_background": errors["background"],
        "silhouette_iou": silhouette_iou(result, target_background, target_render.labels),
        "structure": structure_similarity(result, ideal_image),
    }
