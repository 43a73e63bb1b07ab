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

import math
from typing import Optional

import torch
from einops import rearrange

from .correspondence import Correspondence, Grid
from .instances import resize_labels
from .mask_grid import empty_rows, mask_at_grid, no_token_message

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "chunk_rows",
    "match",
    "nearest_neighbours",
]

#: Default bound on the extra peak memory of one :func:`match` call, in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20


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


def _bias_tokens(bias, tokens, batch, name):
    """Bias channels (1 or ``batch``, ``tokens``, K), checked."""
    if bias is None:
        return None
    if bias.ndim != 3 or bias.shape[1] != tokens or bias.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be (1 or {batch}, {tokens}, K) at the token grid, got {tuple(bias.shape)}")
    return bias


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
    target_bias: Optional[torch.Tensor] = None,
    reference_bias: Optional[torch.Tensor] = None,
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
    other pair -4.

    ``target_bias`` (1 or B, N_t, K) and ``reference_bias`` (1 or B_r, N_r, K) add
    ``sum_k target_bias[i, k] * reference_bias[j, k]`` to every pair's similarity: point
    pairs steer matching this way (eye_core/point_constraint.py), with -4 to exclude a pair
    or a bounded positive pull. Per chunk the work is one matrix product, one
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
    if (target_bias is None) != (reference_bias is None):
        raise ValueError("give bias channels for both images (target_bias and reference_bias), or neither")
    if target_bias is not None:
        if target_bias.shape[-1] != reference_bias.shape[-1]:
            raise ValueError(f"target_bias has {target_bias.shape[-1]} channels but reference_bias "
                             f"{reference_bias.shape[-1]}")
        for k in range(target_bias.shape[-1]):
            t_extra.append(target_bias[..., k].to(dev))
            r_extra.append(reference_bias[..., k].to(dev))
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
    target_bias: Optional[torch.Tensor] = None,
    reference_bias: Optional[torch.Tensor] = None,
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
    a host sync on a GPU. ``target_bias`` / ``reference_bias``: (1 or B, N, K) channels at
    the token grids whose products are added to the similarities (point pairs, see
    :func:`nearest_neighbours`). Inputs are never modified.
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
        target_bias=_bias_tokens(target_bias, n_t, B, "target_bias"),
        reference_bias=_bias_tokens(reference_bias, n_r, b_r, "reference_bias"),
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
