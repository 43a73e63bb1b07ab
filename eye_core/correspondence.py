"""The correspondence a matcher finds: for every target token its reference token, on two token grids.

:class:`Correspondence` is what eye_core.matching.match returns and what the rearrangement
consumes: the matches with their scores and masks, gathered into features
(:meth:`Correspondence.gather`) and resampled to other token grids
(:meth:`Correspondence.resample`) so one fixed DIFT correspondence serves every attention
level.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from einops import rearrange

__all__ = ["Correspondence", "Grid", "RESAMPLE_MODES"]

#: ``mode`` values of :meth:`Correspondence.resample`.
RESAMPLE_MODES = ("smooth", "nearest")

Grid = Tuple[int, int]


@dataclass(frozen=True)
class Correspondence:
    """For every target token, its reference token.

    ``index``: (B, N_t) int64, flat row-major index into the reference grid
    (``row * w_r + col``), -1 for unmatched target tokens. ``score``: (B, N_t) cosine of
    the match (0 where unmatched). ``mutual``: (B, N_t) bool, or None if not computed.
    ``target_grid``/``reference_grid``: (h, w). ``target_mask``/``reference_mask``: bool
    (1 or B, h, w) at those grids as used, or None when no mask was given.
    ``target_origin``/``reference_origin``: the model and images the features came from
    (fingerprint.Origin), or None; kept by :meth:`to` and :meth:`resample`.
    """

    index: torch.Tensor
    score: torch.Tensor
    mutual: Optional[torch.Tensor]
    target_grid: Grid
    reference_grid: Grid
    target_mask: Optional[torch.Tensor] = None
    reference_mask: Optional[torch.Tensor] = None
    target_origin: object = None
    reference_origin: object = None

    def __post_init__(self):
        object.__setattr__(self, "target_grid", _grid(self.target_grid, "target_grid"))
        object.__setattr__(self, "reference_grid", _grid(self.reference_grid, "reference_grid"))
        h, w = self.target_grid
        if self.index.ndim != 2 or self.index.shape[1] != h * w or self.index.dtype != torch.long:
            raise ValueError(
                f"Correspondence.index must be int64 (B, {h * w}) for target_grid {self.target_grid}, "
                f"got {self.index.dtype} {tuple(self.index.shape)}."
            )
        if self.score.shape != self.index.shape:
            raise ValueError(f"Correspondence.score must have shape {tuple(self.index.shape)}, got {tuple(self.score.shape)}.")
        if self.mutual is not None and self.mutual.shape != self.index.shape:
            raise ValueError(f"Correspondence.mutual must have shape {tuple(self.index.shape)}, got {tuple(self.mutual.shape)}.")
        for name, grid in (("target_mask", self.target_grid), ("reference_mask", self.reference_grid)):
            m = getattr(self, name)
            if m is not None and (m.ndim != 3 or tuple(m.shape[1:]) != grid or m.shape[0] not in (1, self.batch_size)):
                raise ValueError(f"Correspondence.{name} must be bool (1 or B, {grid[0]}, {grid[1]}), got {tuple(m.shape)}.")

    # ----------------------------------------------------------------- basics

    @property
    def batch_size(self) -> int:
        return self.index.shape[0]

    @property
    def matched(self) -> torch.Tensor:
        """(B, N_t) bool: target tokens that have a reference token."""
        return self.index >= 0

    def to(self, device, non_blocking: bool = False) -> "Correspondence":
        """The same correspondence with every tensor on ``device``."""

        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return dataclasses.replace(
            self,
            index=mv(self.index),
            score=mv(self.score),
            mutual=mv(self.mutual),
            target_mask=mv(self.target_mask),
            reference_mask=mv(self.reference_mask),
        )

    def reference_positions(self) -> torch.Tensor:
        """(B, N_t, 2) float: matched reference token centres as (y, x) in 0..1, NaN if unmatched.

        Token ``(r, c)`` has its centre at ``((r + 0.5) / h_r, (c + 0.5) / w_r)``.
        """
        h_r, w_r = self.reference_grid
        idx = self.index.clamp(min=0)
        pos = torch.stack([(idx // w_r + 0.5) / h_r, (idx % w_r + 0.5) / w_r], dim=-1).float()
        return torch.where(self.matched[..., None], pos, torch.full_like(pos, math.nan))

    # ----------------------------------------------------------------- gather

    def gather(self, reference_tokens: torch.Tensor, fallback: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reference features rearranged into the target's layout.

        ``reference_tokens``: (B_r, N_r, C) tokens or a (B_r, C, h_r, w_r) map. Returns
        (B, N_t, C) — or (B, C, h_t, w_t) for a map — where target token ``i`` holds
        reference token ``index[i]``; unmatched tokens take ``fallback`` (same layout as
        the output, usually the target's own features) or zero without one. Batches of
        the correspondence, reference and fallback broadcast (each 1 or B). The output
        has the reference's dtype and device.
        """
        h_r, w_r = self.reference_grid
        h_t, w_t = self.target_grid
        n_r, n_t = h_r * w_r, h_t * w_t
        is_map = reference_tokens.ndim == 4
        if is_map:
            if tuple(reference_tokens.shape[-2:]) != (h_r, w_r):
                raise ValueError(
                    f"reference_tokens map has shape {tuple(reference_tokens.shape)}; expected "
                    f"(B, C, {h_r}, {w_r}) for the reference grid {self.reference_grid}. Resample the "
                    f"correspondence to the features' grid first."
                )
            ref = rearrange(reference_tokens, "b c h w -> b (h w) c")
        elif reference_tokens.ndim == 3 and reference_tokens.shape[1] == n_r:
            ref = reference_tokens
        else:
            raise ValueError(
                f"reference_tokens has shape {tuple(reference_tokens.shape)}; expected (B, {n_r}, C) tokens "
                f"or a (B, C, {h_r}, {w_r}) map for the reference grid {self.reference_grid}. Resample the "
                f"correspondence to the features' grid first."
            )
        C = ref.shape[-1]
        fb = None
        if fallback is not None:
            if is_map:
                if fallback.ndim != 4 or tuple(fallback.shape[1:]) != (C, h_t, w_t):
                    raise ValueError(
                        f"fallback has shape {tuple(fallback.shape)}; expected (B, {C}, {h_t}, {w_t}), "
                        f"the target's own features at the target grid."
                    )
                fb = rearrange(fallback, "b c h w -> b (h w) c")
            else:
                if fallback.ndim != 3 or tuple(fallback.shape[1:]) != (n_t, C):
                    raise ValueError(
                        f"fallback has shape {tuple(fallback.shape)}; expected (B, {n_t}, {C}), "
                        f"the target's own tokens at the target grid."
                    )
                fb = fallback
        sizes = {self.batch_size, ref.shape[0]} | ({fb.shape[0]} if fb is not None else set())
        B = max(sizes)
        if not sizes <= {1, B}:
            raise ValueError(
                f"batch sizes do not broadcast: correspondence {self.batch_size}, reference_tokens "
                f"{ref.shape[0]}" + ("" if fb is None else f", fallback {fb.shape[0]}") + "; each must be 1 or the same B."
            )
        idx = self.index.to(ref.device)
        safe = idx.clamp(min=0).expand(B, n_t)
        out = torch.gather(ref.expand(B, n_r, C), 1, safe[..., None].expand(B, n_t, C))
        keep = (idx >= 0).expand(B, n_t)[..., None]
        other = torch.zeros((), dtype=ref.dtype, device=ref.device) if fb is None else fb.to(ref.device, ref.dtype)
        out = torch.where(keep, out, other)
        if is_map:
            out = rearrange(out, "b (h w) c -> b c h w", h=h_t, w=w_t)
        return out

    # ----------------------------------------------------------------- resample

    def resample(self, target_grid: Grid, reference_grid: Optional[Grid] = None, *,
                 mode: str = "smooth", max_jump: float = 2.0) -> "Correspondence":
        """This correspondence at other token grids (e.g. every attention resolution).

        Positions are token centres, ``(i + 0.5) / h``. Each new target token inherits
        matched/unmatched, score and mutual from the *nearest old target token* (the old
        token whose cell contains its centre; a centre exactly on an old cell border goes
        to the lower/right cell). Its reference position:

        * ``mode="nearest"``: that old token's matched reference centre, scaled to the new
          reference grid (the new reference token containing it). Exact inheritance, but
          when upsampling it cannot resolve below the old cell: all 2x2 new tokens of an
          old one get the same reference token, so a mirror matched at 32x32 and
          upsampled to 64x64 lands exactly on the mirrored position for only 1/4 of them.
        * ``mode="smooth"`` (default): the match field (target centre -> reference centre) is
          interpolated bilinearly at the new centre from the 2x2 nearest old tokens
          (extrapolated linearly at the border), so locally smooth maps — translations,
          scalings, mirrors — stay exact at the new grid. Used only where all four old
          tokens are matched, their reference positions lie within ``max_jump`` old
          reference tokens (times ``max(1, h_r/h_t, w_r/w_t)``) of the nearest one's, and the
          result is inside the resampled reference mask; elsewhere (seams between parts,
          noisy matches, mask borders) the ``"nearest"`` position is used, so positions of
          distant parts are never blended.

        Masks are resampled by the same nearest-centre rule. When upsampling, matches are
        guaranteed inside the resampled reference mask; when downsampling a new reference
        token can be marked outside while containing a matched old one (informational).
        """
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"mode={mode!r}; choose one of {RESAMPLE_MODES}.")
        H, W = _grid(target_grid, "target_grid")
        HR, WR = self.reference_grid if reference_grid is None else _grid(reference_grid, "reference_grid")
        h, w = self.target_grid
        h_r, w_r = self.reference_grid
        dev = self.index.device
        B = self.batch_size

        ni = _nearest_old(H, h, dev)
        nj = _nearest_old(W, w, dev)
        near = (ni[:, None] * w + nj[None, :]).reshape(-1)
        idx_near = self.index[:, near]
        matched = idx_near >= 0
        ry = idx_near.clamp(min=0) // w_r
        rx = idx_near.clamp(min=0) % w_r
        ny = ((2 * ry + 1) * HR) // (2 * h_r)  # centre scaling, exact in integers
        nx = ((2 * rx + 1) * WR) // (2 * w_r)

        ref_mask = None
        if self.reference_mask is not None:
            ref_mask = self.reference_mask[:, _nearest_old(HR, h_r, dev)][:, :, _nearest_old(WR, w_r, dev)]
        tgt_mask = None
        if self.target_mask is not None:
            tgt_mask = self.target_mask[:, ni][:, :, nj]

        if mode == "smooth":
            old_matched = self.index >= 0
            old = self.index.clamp(min=0)
            py_old = (old // w_r).to(torch.float32) + 0.5  # in old reference token units
            px_old = (old % w_r).to(torch.float32) + 0.5
            y0, y1, fy = _bracket(H, h, dev)
            x0, x1, fx = _bracket(W, w, dev)
            corners = [
                (y0[:, None] * w + x0[None, :], (1 - fy)[:, None] * (1 - fx)[None, :]),
                (y0[:, None] * w + x1[None, :], (1 - fy)[:, None] * fx[None, :]),
                (y1[:, None] * w + x0[None, :], fy[:, None] * (1 - fx)[None, :]),
                (y1[:, None] * w + x1[None, :], fy[:, None] * fx[None, :]),
            ]
            near_y = py_old[:, near]
            near_x = px_old[:, near]
            limit = float(max_jump) * max(1.0, h_r / h, w_r / w)
            ok = torch.ones_like(matched)
            py = torch.zeros_like(near_y)
            px = torch.zeros_like(near_x)
            for flat, weight in corners:
                flat = flat.reshape(-1)
                weight = weight.reshape(-1)
                cy, cx = py_old[:, flat], px_old[:, flat]
                ok &= old_matched[:, flat]
                ok &= torch.maximum((cy - near_y).abs(), (cx - near_x).abs()) <= limit
                py = py + weight * cy
                px = px + weight * cx
            sy = torch.floor(py * (HR / h_r)).long().clamp(0, HR - 1)
            sx = torch.floor(px * (WR / w_r)).long().clamp(0, WR - 1)
            if ref_mask is not None:
                flat_mask = ref_mask.flatten(1).expand(B, HR * WR)
                ok &= torch.gather(flat_mask, 1, sy * WR + sx)
            ny = torch.where(ok, sy, ny)
            nx = torch.where(ok, sx, nx)

        index = torch.where(matched, ny * WR + nx, torch.full_like(ny, -1))
        return Correspondence(
            index=index,
            score=self.score[:, near],
            mutual=None if self.mutual is None else self.mutual[:, near],
            target_grid=(H, W),
            reference_grid=(HR, WR),
            target_mask=tgt_mask,
            reference_mask=ref_mask,
            target_origin=self.target_origin,
            reference_origin=self.reference_origin,
        )


# --------------------------------------------------------------------------- grid helpers


def _grid(grid, name) -> Grid:
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={grid!r}; pass (h, w), two positive integers.") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name}=({h}, {w}); both sizes must be positive integers.")
    return (h, w)


def _nearest_old(new: int, old: int, device) -> torch.Tensor:
    """For each new cell, the old cell containing its centre: floor((i + 0.5) * old / new)."""
    i = torch.arange(new, device=device)
    return ((2 * i + 1) * old) // (2 * new)


def _bracket(new: int, old: int, device):
    """Old cells (i0, i1) around each new centre and the linear weight of i1 (may leave 0..1 at borders)."""
    u = (torch.arange(new, device=device, dtype=torch.float32) + 0.5) * (old / new) - 0.5
    i0 = torch.floor(u).long().clamp(0, max(old - 2, 0))
    i1 = (i0 + 1).clamp(max=old - 1)
    f = u - i0.to(torch.float32)
    f = torch.where(i1 == i0, torch.zeros_like(f), f)
    return i0, i1, f
