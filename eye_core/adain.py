"""AdaIN and masked AdaIN on latents (METHOD.md §4).

Near the end of generation the output latent is renormalised, channel by channel, to
the reference latent's mean and standard deviation, so the global colour statistics of
the object follow the reference. With masks the statistics are taken inside the target
mask (output) and the reference mask (reference), and the result is blended back with
the soft target mask so the background is untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def _stats(x: torch.Tensor, weight: torch.Tensor | None):
    """Per-channel mean and std of (B, C, H, W) ``x`` under a (B or 1, 1, H, W) weight."""
    if weight is None:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    else:
        total = weight.sum(dim=(2, 3), keepdim=True).clamp_min(EPS)
        mean = (x * weight).sum(dim=(2, 3), keepdim=True) / total
        var = (((x - mean) ** 2) * weight).sum(dim=(2, 3), keepdim=True) / total
    return mean, (var + EPS).sqrt()


def latent_mask(mask: torch.Tensor | None, size, batch: int, device, dtype) -> torch.Tensor | None:
    """A MASK-like tensor ((H, W), (B, H, W) or (B, 1, H, W), values 0..1) at latent size (B|1, 1, h, w)."""
    if mask is None:
        return None
    m = mask.to(device=device, dtype=torch.float32)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    elif m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"a mask must be (H, W), (B, H, W) or (B, 1, H, W); got {tuple(mask.shape)}")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"the mask has a batch of {m.shape[0]}; it must be 1 or {batch} (one per image)")
    m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)
    return m.to(dtype)


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
