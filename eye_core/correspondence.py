"""Dense semantic correspondence: mask-aware cosine nearest neighbours, chunked.

One matcher serves both sources of correspondence the pack offers (docs/METHOD.md §3, §5):
fixed matching on DIFT feature maps ``(B, C, h, w)`` and per-step matching on the
self-attention inputs ``(B, N, C)`` inside sampling. It replaces the authors' per-pixel
Python loop (docs/METHOD.md §9) by one normalised matrix product and an argmax, and returns
the same indices.

Semantics (the contract the tests pin down)
-------------------------------------------
* **Cosine nearest neighbour.** Features are L2-normalised along channels; the
  similarity of target token ``i`` and reference token ``j`` is their dot product; each
  target token takes the reference token with the highest similarity.
* **Ties** go to the lowest reference index (``torch.max`` returns the first maximum;
  chunks split the *target* tokens, so every row is reduced whole and chunking cannot
  change this).
* **Reference mask.** Reference tokens outside it can never be chosen, even by a row
  whose similarities are all negative: they carry a bias of -4 inside the matrix
  product (a bias channel, see :func:`nearest_neighbours`), so they score <= -3 while
  every valid cosine is >= -1 — the same ordering as ``-inf`` without an extra pass over
  the similarity block. (The authors multiplied masked-out features by zero, giving them
  cosine 0, which beats an all-negative row: a defect the pack does not copy.)
* **Target mask.** Tokens outside it are *unmatched*: ``index == -1``, ``score == 0``,
  ``mutual == False``; downstream they keep their own features (``gather(fallback=...)``).
* **Masks** may have any spatial size, be bool, integer (non-zero = inside) or float in
  0..1, shaped ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` with ``B`` 1 or the target
  batch. They are resized to the token grid with ``F.interpolate(mode="bilinear",
  align_corners=False)`` (no antialiasing, as the authors did: a large downscale samples
  the mask near each token centre) and a token is inside when the value is above 0, as the
  authors decide which tokens to edit (a token the object touches at all).
  A mask (reference or target) that leaves no token at the grid raises ``ValueError``
  naming the grid: a reference mask could match nothing, a target mask would leave every
  target token unmatched, a silent no-op either way.
* **Mutual.** A match ``i -> j`` is mutual when no target token inside the target mask
  is more similar to ``j`` than ``i`` is (``i`` attains the maximum of column ``j``), and
  ``i`` is the lowest-index such token among those matched to ``j``. Without exact ties
  this is "``j``'s own best target is ``i``". The column maxima are taken with ``amax``
  over the same similarity values the rows use, so the flag is exact whatever the
  chunking (an index-tracking column ``max`` would cost more than the matrix product on
  CPU).
* **Precision.** Similarities are computed in float32 (float64 if a feature tensor is
  float64). Half precision keeps ~3 significant digits: in fp16 many cosines of
  neighbouring tokens round to the same value, so argmax would pick by index, not by
  feature; the float32 normalised copies cost ``(N_t + N_r) * (C + 2) * 4`` bytes. (On
  GPUs with TF32 matmuls enabled, cosines carry ~1e-3 relative error; near-ties may then
  resolve differently from a float32 reference, which is harmless for matching.)
* **Batches.** Target batch ``B``; reference batch 1 (shared by every target row) or ``B``.

Memory and host syncs
---------------------
The similarity matrix is never built whole: target tokens are processed in chunks of
``chunk_size`` rows, chosen by default from ``memory_budget`` (bytes of extra peak memory:
the normalised float copies plus one ``(B, chunk, N_r)`` similarity block; see
:func:`chunk_rows`). A 128x128 target against a 128x128 reference (16k x 16k tokens)
fits in the default 256 MiB. The kernel (:func:`nearest_neighbours`) has no Python loop
over tokens and no host synchronisation (no ``.item()``, ``.cpu()``, ``nonzero``), so it
can run inside sampling on a GPU. The only host-side check is the empty-mask test in
:func:`match` (free for CPU masks, one sync for a GPU mask); ``check_masks=False`` skips
it, and an empty reference mask then leaves that row unmatched rather than
choosing a masked-out token.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from einops import rearrange

from .instances import resize_labels
from .mask_grid import mask_at_grid

__all__ = [
    "Correspondence",
    "DEFAULT_MEMORY_BUDGET",
    "chunk_rows",
    "match",
    "nearest_neighbours",
]

#: Default bound on the extra peak memory of one :func:`match` call, in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: ``mode`` values of :meth:`Correspondence.resample`.
RESAMPLE_MODES = ("smooth", "nearest")

Grid = Tuple[int, int]


# --------------------------------------------------------------------------- masks


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


def _prepare_mask(mask, grid, batch, device, name, check_nonempty, role="reference", own_batch=None):
    """``mask`` at the token grid; its batch is 1, the target ``batch`` or its own image batch ``own_batch``."""
    if mask is None:
        return None
    valid = mask_at_grid(mask, grid, name=name)
    own_batch = batch if own_batch is None else own_batch
    if valid.shape[0] not in (1, batch, own_batch):
        raise ValueError(
            f"{name} has batch {valid.shape[0]} but the {role} batch is {own_batch}; pass one mask "
            f"(batch 1, shared by every image) or one per {role} image."
        )
    if check_nonempty:
        rows = empty_rows(valid)  # host sync only when the mask lives on a GPU
        if rows:
            raise ValueError(no_token_message(name, role, grid, rows))
    return valid.to(device)


# --------------------------------------------------------------------------- inputs


def _label_tokens(labels, grid, batch, device, name):
    """A label map (H, W) or (1 or B, H, W) as (1 or B, N) tokens at ``grid``."""
    if labels.ndim not in (2, 3):
        raise ValueError(f"{name} must be a label map (H, W) or (B, H, W), got shape {tuple(labels.shape)}")
    tokens = resize_labels(labels if labels.ndim == 3 else labels[None], grid).flatten(1)
    if tokens.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch {tokens.shape[0]} but the target batch is {batch}; "
                         "pass one label map (shared) or one per target image.")
    return tokens.to(device)


def _as_tokens(x, grid, name):
    """(B, C, h, w) or (B, N, C) + grid -> ((B, N, C) view, (h, w))."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; features must be a floating point tensor.")
    if x.ndim == 4:
        b, c, h, w = x.shape
        if grid is not None and tuple(grid) != (h, w):
            raise ValueError(
                f"{name}_grid={tuple(grid)} does not agree with the {name} feature map of shape "
                f"{tuple(x.shape)} (B, C, h, w); leave {name}_grid out for maps."
            )
        return rearrange(x, "b c h w -> b (h w) c"), (h, w)
    if x.ndim == 3:
        if grid is None:
            raise ValueError(
                f"{name} is a token sequence of shape {tuple(x.shape)} (B, N, C); pass "
                f"{name}_grid=(h, w) with h * w == {x.shape[1]} (the grid comes from the "
                f"activation, never from sqrt(N))."
            )
        h, w = (int(v) for v in grid)
        if h < 1 or w < 1 or h * w != x.shape[1]:
            raise ValueError(
                f"{name}_grid=({h}, {w}) holds {h * w} tokens but {name} has {x.shape[1]} "
                f"(shape {tuple(x.shape)}, (B, N, C)); pass the (h, w) the tokens were flattened from."
            )
        return x, (h, w)
    raise ValueError(
        f"{name} has shape {tuple(x.shape)}; pass a feature map (B, C, h, w) or a token "
        f"sequence (B, N, C) with {name}_grid=(h, w)."
    )


def _compute_dtype(*xs):
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


#: Bias channel value that takes a token out of the race: cosines lie in [-1, 1], so a
#: similarity carrying this bias (<= -3) can never beat a valid pair (>= -1), and a row
#: whose best value is below ``_NO_MATCH`` had no valid partner.
_EXCLUDED = -4.0
_NO_MATCH = -2.0


def _normalised(x, dtype, extra):
    """L2-normalise (B, N, C) along C into a fresh (B', N, C + len(extra)) buffer.

    ``extra`` lists the bias channels appended after the features: a float (constant) or a
    (B_m, N) tensor; B' is the largest batch among x and the bias tensors. The buffer keeps
    the input's memory layout: a feature map flattened to tokens is a transposed view of
    (B, C, N), and is normalised and stored channels-first (returned as a transposed
    view, which the matrix product takes as is) instead of being transposed in memory.
    """
    b, n, c = x.shape
    k = len(extra)
    batch = max([b] + [e.shape[0] for e in extra if isinstance(e, torch.Tensor)])
    channels_first = n > 1 and x.stride(1) == 1 and x.stride(2) >= n
    if channels_first:
        xd = x.transpose(1, 2).to(dtype)  # (b, C, N), contiguous for maps
        buf = torch.empty(batch, c + k, n, dtype=dtype, device=x.device)
        feats, dim = buf[:, :c], 1
    else:
        xd = x.to(dtype)
        buf = torch.empty(batch, n, c + k, dtype=dtype, device=x.device)
        feats, dim = buf[:, :, :c], 2
    # sum of squares staged in the output buffer: linalg.vector_norm over the channel dim
    # of a channels-first map is ~15x slower on CPU than this, and no temporary is needed
    stage = feats[:b]
    torch.mul(xd, xd, out=stage)
    norm = stage.sum(dim=dim, keepdim=True).sqrt_().clamp_min_(1e-12)
    torch.div(xd, norm, out=stage)
    if batch != b:  # a batch-1 reference with per-image mask channels
        feats[b:] = stage
    for i, e in enumerate(extra):
        value = e if not isinstance(e, torch.Tensor) else e.to(dtype)
        if channels_first:
            buf[:, c + i] = value
        else:
            buf[:, :, c + i] = value
    return buf.transpose(1, 2) if channels_first else buf


def chunk_rows(n_target: int, n_reference: int, channels: int, batch: int,
               memory_budget: int = DEFAULT_MEMORY_BUDGET, itemsize: int = 4) -> int:
    """Target rows per chunk so that one call stays within ``memory_budget`` bytes.

    The budget pays first for the normalised copies of both feature sets
    (``B * (N_t + N_r) * (C + 2) * itemsize``, counted as if the reference had batch B)
    and the small per-token outputs, then per target row for its similarities
    (``n_reference`` values) and a possible copy of its features (``C + 2``: a batch-B
    chunk is folded into one matrix against a batch-1 reference); at least one row is
    always processed.
    """
    fixed = batch * (n_target + n_reference) * (channels + 2) * itemsize
    fixed += batch * (n_target + n_reference) * 8 * 3  # index/score/mutual, column bests
    per_row = batch * (n_reference + channels + 2) * itemsize
    rows = (int(memory_budget) - fixed) // per_row
    return int(max(1, min(n_target, rows)))


# --------------------------------------------------------------------------- kernel


@torch.no_grad()
def nearest_neighbours(
    target: torch.Tensor,
    reference: torch.Tensor,
    target_valid: Optional[torch.Tensor] = None,
    reference_valid: Optional[torch.Tensor] = None,
    *,
    chunk_size: int,
    mutual: bool = True,
    target_labels: Optional[torch.Tensor] = None,
    reference_labels: Optional[torch.Tensor] = None,
    labels: int = 0,
):
    """The chunked kernel: no host syncs, no loops over tokens.

    ``target`` (B, N_t, C) and ``reference`` (B_r, N_r, C) raw features (any float dtype;
    computed in float32, or float64 if either is float64), ``B_r`` 1 or ``B``.
    ``target_valid`` (1 or B, N_t) and ``reference_valid`` (1 or B, N_r) bool, or None
    for "all". Returns ``(index, score, mutual)``: index (B, N_t) int64 with -1 for
    unmatched, score (B, N_t) cosine clamped to [-1, 1] and 0 where unmatched, mutual
    (B, N_t) bool or None. A row with no valid reference token ends up unmatched.

    Masks ride along the matrix product as bias channels (target ``[t, a_i, 1]``,
    reference ``[r, 1, b_j]`` with ``a, b`` 0 inside and -4 outside), so a masked-out
    pair scores <= -3 and no separate pass over the similarity block is needed; for valid
    pairs the extra terms add exact zeros.

    Labels restrict the race further: ``target_labels`` (1 or B, N_t) is the label of the
    reference tokens each target token may match (-1: none), ``reference_labels`` (1 or
    B_r, N_r) each reference token's label (-1: never matched), ``labels`` how many labels
    there are (given, so no host sync is needed to count them). They ride along as bias
    channels too: the target's one-hot label times 4 and a constant -4, against the
    reference's one-hot label and a constant 1, so an allowed pair adds exactly 0 and any
    other pair -4. Per chunk the work is one matrix product, one
    row ``max`` (value and first index) and, for the mutual check, one column ``amax``.
    """
    B, n_t, C = target.shape
    b_r, n_r, _ = reference.shape
    dev = target.device
    dtype = _compute_dtype(target, reference)
    t_extra, r_extra = [], []
    if mutual and target_valid is not None:  # keeps masked-out targets out of column maxima
        t_extra.append(torch.where(target_valid, 0.0, _EXCLUDED))
        r_extra.append(1.0)
    if reference_valid is not None:
        t_extra.append(1.0)
        r_extra.append(torch.where(reference_valid, 0.0, _EXCLUDED))
    if (target_labels is None) != (reference_labels is None):
        raise ValueError("give label maps for both images (target_labels and reference_labels), or neither")
    if target_labels is not None:
        t_extra.append(_EXCLUDED)
        r_extra.append(1.0)
        for label in range(int(labels)):
            t_extra.append(torch.where(target_labels == label, -_EXCLUDED, 0.0))
            r_extra.append(torch.where(reference_labels == label, 1.0, 0.0))
    t_n = _normalised(target, dtype, t_extra)
    r_n = _normalised(reference.to(dev), dtype, r_extra)
    b_r = r_n.shape[0]
    K = t_n.shape[-1]

    index = torch.empty(B, n_t, dtype=torch.long, device=dev)
    best = torch.empty(B, n_t, dtype=dtype, device=dev)
    if mutual:
        col_best = torch.full((B, n_r), -math.inf, dtype=dtype, device=dev)
    ref_t = r_n.transpose(1, 2)  # (B_r, K, N_r), a view
    for s in range(0, n_t, chunk_size):
        e = min(s + chunk_size, n_t)
        if b_r == 1:
            sim = (t_n[:, s:e].reshape(-1, K) @ ref_t[0]).view(B, e - s, n_r)
        else:
            sim = torch.bmm(t_n[:, s:e], ref_t)
        torch.max(sim, dim=-1, out=(best[:, s:e], index[:, s:e]))  # first max: lowest index
        if mutual:
            torch.maximum(col_best, sim.amax(dim=1), out=col_best)
        del sim
    matched = best > _NO_MATCH
    if target_valid is not None:
        matched &= target_valid
    index = torch.where(matched, index, torch.full_like(index, -1))
    is_mutual = None
    if mutual:
        safe = index.clamp(min=0)
        # same buffer values on both sides: exact whatever the chunking
        top = matched & (best == torch.gather(col_best, 1, safe))
        # ties between several target tokens on one reference token: the lowest index wins
        own = torch.arange(n_t, device=dev).expand(B, n_t)
        first = torch.full((B, n_r + 1), n_t, dtype=torch.long, device=dev)
        first.scatter_reduce_(1, torch.where(top, safe, n_r), own, reduce="amin")
        is_mutual = top & (torch.gather(first, 1, safe) == own)
    score = torch.where(matched, best.clamp(-1.0, 1.0), torch.zeros_like(best))
    return index, score, is_mutual


# --------------------------------------------------------------------------- public API


@torch.no_grad()
def match(
    target: torch.Tensor,
    reference: torch.Tensor,
    target_mask: Optional[torch.Tensor] = None,
    reference_mask: Optional[torch.Tensor] = None,
    *,
    target_grid: Optional[Grid] = None,
    reference_grid: Optional[Grid] = None,
    chunk_size: Optional[int] = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    mutual: bool = True,
    check_masks: bool = True,
    target_labels: Optional[torch.Tensor] = None,
    reference_labels: Optional[torch.Tensor] = None,
    label_count: Optional[int] = None,
) -> "Correspondence":
    """Match every target token to its cosine-nearest reference token.

    ``target``: (B, C, h_t, w_t) feature map, or (B, N_t, C) tokens with
    ``target_grid=(h_t, w_t)``; ``reference`` likewise, batch 1 or B, same C.
    Masks: see the module docstring (any size; bilinear to the grid, above 0).
    ``chunk_size`` (target rows per block) overrides ``memory_budget`` (bytes of extra
    peak memory, default 256 MiB). ``mutual=False`` skips the mutual check (a little
    faster; ``Correspondence.mutual`` is then None). ``check_masks=False`` skips the
    host-side empty-mask check (see module docstring).
    ``target_labels`` / ``reference_labels``: label maps ((H, W) or (B, H, W), any size,
    each token takes the label at its centre) restricting every target token to the
    reference tokens whose label is the target token's (-1: matches nothing / is never
    matched). Instance pairing, proxy parts and label constraints all come down to these
    (eye_core/instances.py). ``label_count`` (labels used, if known) spares counting them,
    a host sync on a GPU. Inputs are never modified.
    """
    t_tok, t_grid = _as_tokens(target, target_grid, "target")
    r_tok, r_grid = _as_tokens(reference, reference_grid, "reference")
    B, n_t, C = t_tok.shape
    b_r, n_r, c_r = r_tok.shape
    if c_r != C:
        raise ValueError(
            f"target has {C} channels but reference has {c_r}; match features from the same "
            f"layer of the same model (target {tuple(target.shape)}, reference {tuple(reference.shape)})."
        )
    if B < 1 or b_r not in (1, B):
        raise ValueError(
            f"the reference holds {b_r} images but the target {B}: use one reference image for every target, "
            f"or one reference per target ({B})."
            if B > 1 else
            f"the reference holds {b_r} images but the target only one: use one reference image per target "
            "(or a batch of as many targets as references)."
        )
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size}; it must be a positive number of target tokens, or None.")
    dev = t_tok.device
    t_valid = _prepare_mask(target_mask, t_grid, B, dev, "target_mask", check_masks, "target")
    r_valid = _prepare_mask(reference_mask, r_grid, B, dev, "reference_mask", check_masks, "reference", b_r)

    labels = 0
    t_labels = r_labels = None
    if (target_labels is None) != (reference_labels is None):
        raise ValueError("give label maps for both images (target_labels and reference_labels), or neither")
    if target_labels is not None:
        t_labels = _label_tokens(target_labels, t_grid, B, dev, "target_labels")
        r_labels = _label_tokens(reference_labels, r_grid, B, dev, "reference_labels")
        labels = label_count if label_count is not None else int(max(int(t_labels.max()), int(r_labels.max()))) + 1

    itemsize = 8 if _compute_dtype(t_tok, r_tok) == torch.float64 else 4
    if chunk_size is None:
        chunk = chunk_rows(n_t, n_r, C, B, memory_budget, itemsize)
    else:
        chunk = min(int(chunk_size), n_t)
    index, score, is_mutual = nearest_neighbours(
        t_tok,
        r_tok,
        None if t_valid is None else t_valid.flatten(1),
        None if r_valid is None else r_valid.flatten(1),
        chunk_size=max(1, chunk),
        mutual=mutual,
        target_labels=t_labels,
        reference_labels=r_labels,
        labels=labels,
    )
    return Correspondence(
        index=index,
        score=score,
        mutual=is_mutual,
        target_grid=t_grid,
        reference_grid=r_grid,
        target_mask=t_valid,
        reference_mask=r_valid,
    )


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
