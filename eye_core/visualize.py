"""Previews people look at: feature PCA as colours, correspondences, mask overlays.

Every function returns an IMAGE-style tensor (B, H, W, 3) with values in 0..1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _resize_rgb(rgb: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w, 3) -> (B, H, W, 3); nearest, so every token stays a crisp block."""
    if size is None or tuple(size) == tuple(rgb.shape[1:3]):
        return rgb
    return F.interpolate(rgb.permute(0, 3, 1, 2), size=tuple(size), mode="nearest").permute(0, 2, 3, 1)


def pca_rgb(maps, size=None):
    """The first three principal components of feature maps as RGB, one basis for all of them.

    ``maps`` is a (B, C, h, w) tensor or a list of them (grids and batches may differ);
    sharing the basis gives corresponding parts the same colour across images. Each map
    is resized to ``size`` (H, W) if given. Returns a tensor, or a list for a list.
    """
    single = torch.is_tensor(maps)
    maps = [maps] if single else list(maps)
    tokens = [m.detach().float().flatten(2).transpose(1, 2).reshape(-1, m.shape[1]) for m in maps]
    if len({t.shape[1] for t in tokens}) != 1:
        raise ValueError("feature maps with different channel counts cannot share one PCA basis")
    everything = torch.cat(tokens)
    everything = F.normalize(everything, dim=1)
    mean = everything.mean(dim=0, keepdim=True)
    centred = everything - mean
    components = min(3, centred.shape[0], centred.shape[1])
    if not bool(torch.isfinite(centred).all()):
        raise ValueError("the feature maps hold NaN or infinite values (from a latent or model that produced them); "
                         "there is nothing to preview. Check the node that made the latent.")
    # exact principal axes (eigenvectors of the C x C covariance), signs fixed: the same colours every run
    # (the small C x C eigenproblem on the CPU in float64: MPS has no float64)
    covariance = (centred.T @ centred).cpu().double()
    _, vectors = torch.linalg.eigh(covariance)
    basis = vectors[:, -components:].flip(1)
    basis = basis * torch.sign(basis[basis.abs().argmax(0), torch.arange(components)])
    basis = basis.to(centred.device, centred.dtype)
    projected = centred @ basis
    low = projected.quantile(0.01, dim=0, keepdim=True) if projected.shape[0] > 1 else projected.min(0, True).values
    high = projected.quantile(0.99, dim=0, keepdim=True) if projected.shape[0] > 1 else projected.max(0, True).values
    scaled = ((projected - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    if components < 3:
        scaled = F.pad(scaled, (0, 3 - components))
    out, start = [], 0
    for m in maps:
        count = m.shape[0] * m.shape[2] * m.shape[3]
        rgb = scaled[start:start + count].reshape(m.shape[0], m.shape[2], m.shape[3], 3)
        out.append(_resize_rgb(rgb, size))
        start += count
    return out[0] if single else out


def position_colours(height: int, width: int) -> torch.Tensor:
    """A 2D colour code of positions, (height, width, 3): red grows to the right, green downwards.

    Blue is high in the top-left corner, so every position has a distinct colour.
    """
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy, 1.0 - 0.5 * (xx + yy)], dim=-1)


UNMATCHED_GREY = 0.25


def correspondence_colours(correspondence, size) -> torch.Tensor:
    """Each target pixel coloured by the reference position it matched, (B, H, W, 3).

    Colours follow :func:`position_colours` over the reference; unmatched target pixels
    (outside the target mask) are dark grey. The correspondence is resampled to ``size``
    with the nearest-token rule, so what is shown is exactly what was matched.
    """
    fine = correspondence.resample(tuple(size), mode="nearest")
    h_r, w_r = fine.reference_grid
    code = position_colours(h_r, w_r).reshape(1, h_r * w_r, 3).to(fine.index.device)
    fallback = torch.full((1, size[0] * size[1], 3), UNMATCHED_GREY, device=fine.index.device)
    return fine.gather(code, fallback=fallback).reshape(-1, size[0], size[1], 3)


def warp_image(correspondence, reference_image: torch.Tensor, size, fallback_image=None) -> torch.Tensor:
    """The reference image rearranged into the target's layout, (B, H, W, 3) at ``size``.

    Every target pixel takes the reference pixel its correspondence points to (the
    correspondence resampled to the two images' pixel grids). Unmatched pixels show
    ``fallback_image`` (the target, darkened) or dark grey.
    """
    height, width = int(size[0]), int(size[1])
    ref_h, ref_w = reference_image.shape[1:3]
    fine = correspondence.resample((height, width), (ref_h, ref_w))
    tokens = reference_image.reshape(reference_image.shape[0], ref_h * ref_w, -1)[..., :3].float()
    if fallback_image is not None:
        fallback = 0.35 * _resize_rgb(fallback_image[..., :3].float(), (height, width)).reshape(
            fallback_image.shape[0], height * width, 3)
    else:
        fallback = torch.full((1, height * width, 3), UNMATCHED_GREY)
    return fine.gather(tokens, fallback=fallback.to(tokens.device)).reshape(-1, height, width, 3)


# ---------------------------------------------------------------- mask overlays

# Distinct, colour-blind-friendly tints (Okabe-Ito), one per prompt.
MASK_COLOURS = (
    (0.0, 0.62, 0.45),  # bluish green
    (0.90, 0.62, 0.0),  # orange
    (0.34, 0.71, 0.91),  # sky blue
    (0.80, 0.47, 0.65),  # reddish purple
    (0.94, 0.89, 0.26),  # yellow
    (0.0, 0.45, 0.70),  # blue
    (0.84, 0.37, 0.0),  # vermillion
)
POSITIVE_POINT = (0.1, 0.9, 0.1)
NEGATIVE_POINT = (0.95, 0.1, 0.1)


def _rect(height: int, width: int, x0: float, y0: float, x1: float, y1: float, device) -> tuple:
    """The pixel rows/columns a box in pixel-edge coordinates covers (inclusive integer bounds)."""
    c0 = min(max(int(x0 // 1), 0), width - 1)
    c1 = min(max(-int(-x1 // 1) - 1, c0), width - 1)
    r0 = min(max(int(y0 // 1), 0), height - 1)
    r1 = min(max(-int(-y1 // 1) - 1, r0), height - 1)
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    return rows, cols, r0, r1, c0, c1


def box_outline(height: int, width: int, box, thickness: int, device=None) -> torch.Tensor:
    """(H, W) bool: the outline of ``box`` (x0, y0, x1, y1 in pixels), ``thickness`` pixels wide, inside it."""
    rows, cols, r0, r1, c0, c1 = _rect(height, width, *[float(v) for v in box], device)
    inside = (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)
    inner = (rows >= r0 + thickness) & (rows <= r1 - thickness) & (cols >= c0 + thickness) & (cols <= c1 - thickness)
    return inside & ~inner


def _dot(height: int, width: int, x: float, y: float, radius: int, device=None) -> torch.Tensor:
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    cx = min(max(int(x), 0), width - 1)
    cy = min(max(int(y), 0), height - 1)
    return ((rows - cy).abs() <= radius) & ((cols - cx).abs() <= radius)


def mask_overlay(images: torch.Tensor, masks: torch.Tensor, boxes=None, points=None, labels=None,
                 alpha: float = 0.5) -> torch.Tensor:
    """Masks tinted over images, with their prompt boxes outlined and prompt points marked.

    ``images`` (B, H, W, C) in 0..1; ``masks`` (B, N, H, W) in 0..1 (mask n of image b
    gets colour n of MASK_COLOURS); ``boxes`` (N, 4) pixels (x0, y0, x1, y1) or None,
    drawn in the colour of their mask; ``points`` (P, 2) with ``labels`` (P,) 1/0 drawn
    as green (positive) or red (negative) squares. Returns (B, H, W, 3) in 0..1.
    """
    out = images[..., :3].detach().float().clone()
    if out.shape[-1] == 1:
        out = out.expand(-1, -1, -1, 3).clone()
    batch, height, width, _ = out.shape
    masks = masks.detach().to(out.device, out.dtype).reshape(batch, -1, height, width)
    thickness = max(1, round(max(height, width) / 256))
    for n in range(masks.shape[1]):
        colour = out.new_tensor(MASK_COLOURS[n % len(MASK_COLOURS)])
        weight = (alpha * masks[:, n]).unsqueeze(-1)
        out = out * (1.0 - weight) + colour * weight
    if boxes is not None:
        for n, box in enumerate(boxes):
            colour = out.new_tensor(MASK_COLOURS[n % len(MASK_COLOURS)])
            line = box_outline(height, width, box, thickness, out.device)
            out[:, line] = colour
    if points is not None:
        for (x, y), label in zip(points.tolist(), labels.tolist()):
            dot = _dot(height, width, x, y, 2 * thickness, out.device)
            out[:, dot] = out.new_tensor(POSITIVE_POINT if label else NEGATIVE_POINT)
    return out.clamp(0.0, 1.0)


# ---------------------------------------------------------------- instances, pairs, parts

#: Distinct colours for labels 0, 1, ... (cycled); -1 (no label) is drawn dark grey.
PALETTE = torch.tensor([
    [0.90, 0.10, 0.10], [0.10, 0.55, 0.95], [0.15, 0.80, 0.25], [0.95, 0.75, 0.10], [0.70, 0.25, 0.90],
    [0.10, 0.85, 0.85], [0.95, 0.45, 0.70], [0.55, 0.35, 0.15], [0.60, 0.90, 0.45], [0.25, 0.25, 0.70],
    [0.95, 0.55, 0.25], [0.50, 0.50, 0.50]])
UNLABELLED = torch.tensor([0.15, 0.15, 0.15])

# 3x5 bitmaps of the digits 0-9 (rows top to bottom, 3 bits each), for numbers on previews
# without depending on a font being installed.
_DIGITS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
           "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111"]


def label_colours(labels: torch.Tensor, size=None) -> torch.Tensor:
    """A label map (H, W) as colours (1, H', W', 3): one palette colour per label, dark grey for -1."""
    palette = torch.cat([PALETTE, UNLABELLED[None]]).to(labels.device)
    index = torch.where(labels >= 0, labels % len(PALETTE), torch.full_like(labels, len(PALETTE)))
    return _resize_rgb(palette[index][None], size)


def _label_map_at(labels: torch.Tensor, size) -> torch.Tensor:
    if tuple(labels.shape) == tuple(size):
        return labels
    return F.interpolate(labels[None, None].double(), size=tuple(size), mode="nearest-exact")[0, 0].long()


def centroids(labels: torch.Tensor, count: int) -> list:
    """(y, x) centre of each label 0..count-1 in pixels, or None for a label with no pixel."""
    out = []
    for label in range(count):
        ys, xs = torch.nonzero(labels == label, as_tuple=True)
        out.append(None if ys.numel() == 0 else (float(ys.float().mean()), float(xs.float().mean())))
    return out


def stamp_number(rgb: torch.Tensor, number: int, y: float, x: float, scale: int) -> torch.Tensor:
    """``rgb`` (H, W, 3) with ``number`` written in white on a black plate centred at (y, x)."""
    text = str(int(number))
    height, width = rgb.shape[:2]
    glyph_w, glyph_h = 4 * scale, 5 * scale
    total_w = glyph_w * len(text) - scale
    top = int(round(y - glyph_h / 2))
    left = int(round(x - total_w / 2))
    out = rgb.clone()
    y0, y1 = max(top - scale, 0), min(top + glyph_h + scale, height)
    x0, x1 = max(left - scale, 0), min(left + total_w + scale, width)
    out[y0:y1, x0:x1] = 0.0
    for k, digit in enumerate(text):
        bits = _DIGITS[int(digit)]
        for row in range(5):
            for col in range(3):
                if bits[row * 3 + col] == "1":
                    ya, xa = top + row * scale, left + k * glyph_w + col * scale
                    out[max(ya, 0):max(min(ya + scale, height), 0), max(xa, 0):max(min(xa + scale, width), 0)] = 1.0
    return out


def instance_preview(image: torch.Tensor, labels: torch.Tensor, count: int, first: int = 1) -> torch.Tensor:
    """The image (H, W, 3) with each instance tinted in its colour and numbered (from ``first``): (1, H, W, 3)."""
    height, width = image.shape[:2]
    labels = _label_map_at(labels, (height, width))
    colours = label_colours(labels)[0].to(image.device, image.dtype)
    inside = (labels >= 0)[..., None]
    out = torch.where(inside, 0.5 * image + 0.5 * colours, 0.6 * image)
    scale = max(1, min(height, width) // 60)
    for label, centre in enumerate(centroids(labels, count)):
        if centre is not None:
            out = stamp_number(out, label + first, centre[0], centre[1], scale)
    return out[None].clamp(0, 1)


def _line(rgb: torch.Tensor, a, b, colour: torch.Tensor, thickness: int) -> torch.Tensor:
    steps = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) + 1
    ys = torch.linspace(a[0], b[0], steps).round().long()
    xs = torch.linspace(a[1], b[1], steps).round().long()
    out = rgb.clone()
    height, width = rgb.shape[:2]
    for dy in range(-thickness // 2, thickness - thickness // 2):
        for dx in range(-thickness // 2, thickness - thickness // 2):
            yy, xx = (ys + dy).clamp(0, height - 1), (xs + dx).clamp(0, width - 1)
            out[yy, xx] = colour.to(out.dtype)
    return out


def _at_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """``image`` (H, W, C) resized bilinearly to ``height`` rows, keeping its aspect (unchanged when it has them)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return F.interpolate(image.permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
                         align_corners=False)[0].permute(1, 2, 0)


def pairs_preview(target: torch.Tensor, target_labels: torch.Tensor, n_target: int, reference: torch.Tensor,
                  reference_labels: torch.Tensor, n_reference: int, pairs) -> torch.Tensor:
    """Target | reference side by side, instances numbered, a line from each target instance to its pair."""
    height = target.shape[0]
    reference = _at_height(reference, height)
    left = instance_preview(target, target_labels, n_target)[0]
    right = instance_preview(reference, reference_labels, n_reference)[0]
    canvas = torch.cat([left, right], dim=1)
    t_centres = centroids(_label_map_at(target_labels, left.shape[:2]), n_target)
    r_centres = centroids(_label_map_at(reference_labels, right.shape[:2]), n_reference)
    thickness = max(1, height // 150)
    for t, r in enumerate(pairs):
        if r < 0 or t_centres[t] is None or r_centres[r] is None:
            continue
        a = t_centres[t]
        b = (r_centres[r][0], r_centres[r][1] + left.shape[1])
        canvas = _line(canvas, a, b, PALETTE[t % len(PALETTE)], thickness)
    return canvas[None].clamp(0, 1)


def _ring(height: int, width: int, x: float, y: float, radius: float, thickness: float) -> torch.Tensor:
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) + 0.5
    cols = torch.arange(width, dtype=torch.float32).view(1, -1) + 0.5
    distance = ((rows - y) ** 2 + (cols - x) ** 2).sqrt()
    return (distance - radius).abs() <= thickness / 2


def points_preview(target: torch.Tensor, target_points, reference: torch.Tensor, reference_points,
                   confidences=None, radius: float | None = None) -> torch.Tensor:
    """Target | reference side by side, point k numbered k+1 on both in its colour, a line joining each pair.

    ``target`` / ``reference``: (H, W, 3) images; points: lists of (x, y) fractions;
    ``confidences`` (0..1 per pair) fade a pair's line; ``radius`` (a fraction of the longer
    side) draws the region a point constraint steers around each point. Returns (1, H, W', 3).
    """
    height = target.shape[0]
    reference = _at_height(reference, height)
    t_w, r_w = target.shape[1], reference.shape[1]
    canvas = torch.cat([target[..., :3].float(), reference[..., :3].float()], dim=1).clone()
    scale = max(1, min(height, t_w) // 80)
    thickness = max(1, height // 200)
    places = []
    for k, (t, r) in enumerate(zip(target_points, reference_points)):
        a = (float(t[1]) * height, float(t[0]) * t_w)
        b = (float(r[1]) * height, float(r[0]) * r_w + t_w)
        places.append((k, a, b))
        colour = PALETTE[k % len(PALETTE)]
        strength = 1.0 if confidences is None else 0.35 + 0.65 * float(confidences[k])
        line = _line(canvas, a, b, colour, thickness)
        canvas = strength * line + (1.0 - strength) * canvas
    for k, a, b in places:
        colour = PALETTE[k % len(PALETTE)].to(canvas.dtype)
        for (y, x), width, left in ((a, t_w, 0), (b, r_w, t_w)):
            if radius is not None:
                ring = _ring(height, canvas.shape[1], x, y, radius * max(height, width), thickness)
                ring[:, :left] = False
                ring[:, left + width:] = False
                canvas[ring] = colour
            dot = _dot(height, canvas.shape[1], x, y, 2 * scale)
            canvas[dot] = colour
            canvas = stamp_number(canvas, k + 1, max(y - 6 * scale, 3 * scale), x + 6 * scale, scale)
    return canvas[None].clamp(0, 1)
