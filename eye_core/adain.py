"""AdaIN and masked AdaIN on latents (docs/METHOD.md §4).

Near the end of generation the output latent is renormalised, channel by channel, to
the reference latent's mean and standard deviation, so the global colour statistics of
the object follow the reference. With masks the statistics are taken inside the target
mask (output) and the reference mask (reference), and the result is blended back with
the soft target mask so the background is untouched.

As the authors compute them: the masks are resized bilinearly to the latent, the statistics
use only the latent pixels the resized mask covers entirely (value 1: the object's interior,
not its blurred rim), and the standard deviation is the unbiased one (n - 1). Where a mask
has fewer than two such pixels (an object a latent pixel or two wide), where the authors'
code divides by zero, the statistics are weighted by the soft mask instead.
"""

from __future__ import annotations

import torch

from .mask_grid import soft_mask_at

EPS = 1e-5
# A resized mask value this close to 1 counts as "covered entirely" (bilinear weights in float).
INTERIOR = 1.0 - 1e-6


def _stats(x: torch.Tensor, weight: torch.Tensor | None):
    """Per-channel mean and unbiased std of (B, C, H, W) ``x``: over all pixels, or over the pixels a
    (B or 1, 1, H, W) soft mask covers entirely (the soft mask itself where fewer than two are)."""
    if weight is None:
        return x.mean(dim=(2, 3), keepdim=True), (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()
    interior = (weight >= INTERIOR).to(x.dtype)
    few = interior.sum(dim=(2, 3), keepdim=True) < 2
    weight = torch.where(few, weight, interior)
    total = weight.sum(dim=(2, 3), keepdim=True)
    mean = (x * weight).sum(dim=(2, 3), keepdim=True) / total.clamp_min(EPS)
    # unbiased (n - 1) over the interior, as the authors; the soft fallback is a weighted (biased) variance
    var = (((x - mean) ** 2) * weight).sum(dim=(2, 3), keepdim=True) / torch.where(few, total, total - 1).clamp_min(EPS)
    return mean, (var + EPS).sqrt()


def latent_mask(mask: torch.Tensor | None, size, batch: int, device, dtype) -> torch.Tensor | None:
    """A MASK-like tensor ((H, W), (B, H, W) or (B, 1, H, W), values 0..1) at latent size (B|1, 1, h, w)."""
    if mask is None:
        return None
    return soft_mask_at(mask.to(device), size, batch=batch).to(dtype)


def masked_adain(x: torch.Tensor, reference: torch.Tensor, target_mask=None, reference_mask=None,
                 strength: float = 1.0) -> torch.Tensor:
    """``x`` (B, C, H, W) renormalised per channel to ``reference`` (1 or B, C, h, w).

    Statistics inside the masks (any size, resized bilinearly to each latent); without a
    target mask the whole latent is renormalised (plain AdaIN); the result is blended
    back with the soft target mask and ``strength``. Target and reference may differ in
    size. ``x`` is not modified.
    """
    batch = x.shape[0]
    t_mask = latent_mask(target_mask, x.shape[-2:], batch, x.device, x.dtype)
    r_mask = latent_mask(reference_mask, reference.shape[-2:], reference.shape[0], x.device, x.dtype)
    mean_x, std_x = _stats(x, t_mask)
    mean_r, std_r = _stats(reference.to(x.device, x.dtype), r_mask)
    normalised = (x - mean_x) / std_x * std_r + mean_r
    blend = strength if t_mask is None else strength * t_mask
    return x + blend * (normalised - x)


def labelled_adain(x: torch.Tensor, reference: torch.Tensor, target_labels: torch.Tensor,
                   reference_labels: torch.Tensor, count: int, target_mask=None, reference_mask=None,
                   strength: float = 1.0, min_pixels: float = 0.0) -> torch.Tensor:
    """Masked AdaIN region by region: the target's label-``l`` pixels take the statistics of the
    reference's label-``l`` pixels, for every label ``l`` below ``count``.

    With several objects each target object (or proxy part) should take its own counterpart's
    colour statistics, not those of every reference object mixed. ``target_labels`` (1 or B,
    h, w) / ``reference_labels`` (1 or B, h_r, w_r): long label maps at the latents' sizes
    (-1: no label); a label absent from either image changes nothing, so unpaired objects
    stay as they are. Inside a label the masks (if any) still weight the statistics and the
    blend, as in :func:`masked_adain`. A label covering fewer than ``min_pixels`` latent pixels
    (mask-weighted) in either image is left out too: statistics of a pixel or two are noise.
    ``x`` is not modified.
    """
    if tuple(target_labels.shape[-2:]) != tuple(x.shape[-2:]) or \
            tuple(reference_labels.shape[-2:]) != tuple(reference.shape[-2:]):
        raise ValueError(f"label maps must be at the latents' sizes: target {tuple(x.shape[-2:])}, reference "
                         f"{tuple(reference.shape[-2:])}; got {tuple(target_labels.shape)} and "
                         f"{tuple(reference_labels.shape)}")
    batch = x.shape[0]
    t_mask = latent_mask(target_mask, x.shape[-2:], batch, x.device, x.dtype)
    r_mask = latent_mask(reference_mask, reference.shape[-2:], reference.shape[0], x.device, x.dtype)
    t_labels = target_labels.to(x.device)[:, None]
    r_labels = reference_labels.to(x.device)[:, None]
    out = x
    for label in range(int(count)):  # a loop over labels (a handful), not over pixels
        t_region = (t_labels == label).to(x.dtype)
        r_region = (r_labels == label).to(x.dtype)
        if t_mask is not None:
            t_region = t_region * t_mask
        if r_mask is not None:
            r_region = r_region * r_mask
        smallest = min(float(t_region.flatten(1).sum(1).min()), float(r_region.flatten(1).sum(1).min()))
        if smallest <= 0 or smallest < min_pixels:
            continue  # this label is missing from an image (nothing to transfer), or too small
        out = masked_adain(out, reference, t_region.expand(batch, -1, -1, -1), r_region, strength)
    return out
