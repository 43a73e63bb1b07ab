"""Masks at token grids and latent sizes: the one place a user's mask is read and resized.

Every consumer (the matcher, the rearrangement, masked AdaIN, the several-objects nodes,
the transfer's checks) takes a mask as ComfyUI hands it, ``(H, W)``, ``(B, H, W)`` or
``(B, 1, H, W)`` in any size, bool, integer (non-zero is inside) or float 0..1, and
resizes it bilinearly (``align_corners=False``, no antialias), as the authors' code does.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

Grid = Tuple[int, int]


def mask_batch(mask: torch.Tensor, *, name: str = "mask", batch: int | None = None) -> torch.Tensor:
    """``mask`` as a float ``(B, 1, H, W)`` (bool and integer masks as 0/1), shape and batch checked.

    ``batch``: the batch the mask serves; then its own batch must be 1 (one mask for all) or
    ``batch`` (one per image).
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}.")
    if mask.ndim == 2:
        m = mask[None, None]
    elif mask.ndim == 3:
        m = mask[:, None]
    elif mask.ndim == 4 and mask.shape[1] == 1:
        m = mask
    else:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}; a mask must be (H, W), (B, H, W) or "
            f"(B, 1, H, W). Pass a single-channel mask (e.g. ComfyUI's MASK, or image[..., 0])."
        )
    if m.shape[-2] < 1 or m.shape[-1] < 1 or m.shape[0] < 1:
        raise ValueError(f"{name} has an empty shape {tuple(mask.shape)}; pass a mask with pixels.")
    if batch is not None and m.shape[0] not in (1, batch):
        raise ValueError(f"{name} has a batch of {m.shape[0]}; it must be 1 (one mask for all) or {batch} (one per "
                         "image).")
    if m.dtype == torch.bool or not m.is_floating_point():
        return (m != 0).float()
    return m if m.dtype in (torch.float32, torch.float64) else m.float()


def soft_mask_at(mask: torch.Tensor, size, *, name: str = "mask", batch: int | None = None) -> torch.Tensor:
    """The mask resized to ``size`` (h, w), soft: float ``(B, 1, h, w)`` in 0..1 (masked AdaIN's weights)."""
    m = mask_batch(mask, name=name, batch=batch)
    return F.interpolate(m.float(), size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)


def mask_at_grid(mask: torch.Tensor, grid: Grid, *, name: str = "mask") -> torch.Tensor:
    """The mask at a token grid: bool ``(B, h, w)``, inside where the resized mask is above 0 (the authors' rule).

    Not resized when already at ``grid``; stays on the mask's device.
    """
    m = mask_batch(mask, name=name)
    h, w = grid
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m[:, 0] > 0


def empty_rows(valid: torch.Tensor) -> list:
    """Batch rows of a bool ``(B, h, w)`` token mask that hold no token (one host sync)."""
    empty = ~valid.flatten(1).any(dim=1)
    return [i for i, e in enumerate(empty.tolist()) if e] if bool(empty.any()) else []


def no_token_message(name: str, role: str, grids, rows: list, fix: str = "") -> str:
    """Why a mask that is not empty can still select nothing: it leaves no token at the token grid(s)."""
    grids = [tuple(grids)] if isinstance(grids[0], int) else sorted((tuple(g) for g in grids), reverse=True)
    fix = fix or (f"draw a larger mask (a larger SAM box), or pass none to use the whole {role} image")
    where = (f"the {grids[0][0]}x{grids[0][1]} token grid" if len(grids) == 1 else
             "the " + ", ".join(f"{h}x{w}" for h, w in grids[:-1]) + f" and {grids[-1][0]}x{grids[-1][1]} token grids")
    h, w = grids[0]
    return (f"{name} leaves no {role} token at {where} (batch row(s) {rows}; masks are resized bilinearly to the "
            f"grid and a token is inside where the value is above 0). The mask is empty or thinner than one token "
            f"(~1/{h} of the image height, 1/{w} of its width): {fix}.")
