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
    _, _, basis = torch.pca_lowrank(centred, q=components, center=False, niter=4)
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
