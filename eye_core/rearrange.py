"""Feature rearrangement: which step, which rows, which features (docs/METHOD.md §3 and §8).

At the chosen decoder self-attention layers, the output's attention inputs are replaced
by the reference's, gathered along a correspondence (rearrangement), or on a few early
steps by the structure's own features (structure injection). This module decides when
and where, and does the tensor work; the host calls it from its attention patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .correspondence import Correspondence
from .matching import match

# Actions at one step.
NOTHING = "nothing"
REARRANGE = "rearrange"
STRUCTURE = "structure"

# Injection modes: which of the attention's inputs take the rearranged features.
FEATURE = "feature"  # Q, K and V all from the rearranged features (the paper's choice)
VALUE = "value"  # only V
KEY_VALUE = "key-value"  # K and V
# No explicit correspondence: the output's queries attend to the reference's keys and values
# (Cross-Image Attention, Alaluf et al. 2024), the baseline the paper argues against.
IMPLICIT = "implicit (cross-image attention)"
INJECTION_MODES = (FEATURE, VALUE, KEY_VALUE, IMPLICIT)
# Cross-Image Attention sharpens its attention maps: p' = clip((p - mean_row(p)) * 1.67 + mean_row(p), 0, 1).
CIA_CONTRAST = 1.67

# Guidance treatments (docs/METHOD.md §8).
OFFICIAL = "official (asymmetric)"
SYMMETRIC = "symmetric"
GUIDANCE_MODES = (OFFICIAL, SYMMETRIC)

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond codes

# The official preset: 68 generation steps (100 with 32 skipped), rearrangement on
# iterations 11-67, structure injection instead on 11, 16, ..., 36, masked AdaIN after
# iterations 49-67. Kept as fractions so other step counts scale.
OFFICIAL_STEPS = 68
# Node widgets show fractions to 4 decimals; a value this close to an official fraction is that fraction.
WIDGET_ROUNDING = 0.5e-4 + 1e-12


def _index(fraction: float, total: int) -> int:
    """The iteration a schedule fraction falls on (round half up, so 11/68 of 68 is 11)."""
    return int(math.floor(fraction * total + 0.5))


@dataclass(frozen=True)
class TransferSchedule:
    """When the patch acts, as fractions of the generation schedule (defaults: the official preset)."""

    rearrange_start: float = 11 / OFFICIAL_STEPS
    rearrange_end: float = 1.0
    structure_end: float = 40 / OFFICIAL_STEPS
    structure_interval: float = 5 / OFFICIAL_STEPS
    adain_start: float = 49 / OFFICIAL_STEPS
    adain_end: float = 1.0

    def __post_init__(self):
        for name in ("rearrange_start", "rearrange_end", "structure_end", "structure_interval", "adain_start",
                     "adain_end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction of the schedule between 0 and 1, got {value}")
            # A widget shows the official fraction rounded to 4 decimals (11/68 as 0.1618): read that as the
            # fraction itself, so the modular graph and the all-in-one agree at every step count.
            official = self.__dataclass_fields__[name].default
            if value != official and abs(value - official) <= WIDGET_ROUNDING:
                object.__setattr__(self, name, official)

    def structure_steps(self, total: int) -> set:
        """Iterations of structure injection: from rearrange_start every structure_interval, before structure_end.

        Positions are accumulated as fractions and rounded one by one, so the official six
        injections (11, 16, ..., 36 of 68) stay six, spread alike, at any step count
        (20 steps: 3, 5, 6, 8, 9, 11). An interval of 0 turns structure injection off.
        """
        if self.structure_interval <= 0.0:
            return set()
        steps, k = set(), 0
        while self.rearrange_start + k * self.structure_interval < self.structure_end - 1e-9:
            steps.add(_index(self.rearrange_start + k * self.structure_interval, total))
            k += 1
        return steps

    def first_step(self, total: int) -> int:
        """The first iteration the attention patch may act on."""
        return _index(self.rearrange_start, total)

    def action(self, step: int, total: int) -> str:
        """What the patch does at 0-based iteration ``step`` of ``total``."""
        first, end = _index(self.rearrange_start, total), _index(self.rearrange_end, total)
        if not first <= step < end:
            return NOTHING
        return STRUCTURE if step in self.structure_steps(total) else REARRANGE

    def adain(self, step: int, total: int) -> bool:
        """Whether masked AdaIN follows iteration ``step`` of ``total``."""
        return _index(self.adain_start, total) <= step < _index(self.adain_end, total)

    def empty_windows(self, total: int, rearrange: bool = True, adain: bool = True) -> list:
        """A sentence for each window of these settings (rearrangement, AdaIN) that selects no iteration of ``total``."""
        found = []
        first, end = _index(self.rearrange_start, total), _index(self.rearrange_end, total)
        if rearrange and not self.active_steps(total):
            found.append(f"rearrange_start {self.rearrange_start:.4g} and rearrange_end {self.rearrange_end:.4g} "
                         f"select no step of the {total} generation steps (iterations {first} up to {end}, 0-based): "
                         "the appearance transfer does nothing and the result is the plain replay. Lower "
                         "rearrange_start or raise rearrange_end (official 0.1618 and 1.0).")
        if adain:
            first, end = _index(self.adain_start, total), _index(self.adain_end, total)
            if first >= end:
                found.append(f"adain_start {self.adain_start:.4g} and adain_end {self.adain_end:.4g} select no step "
                             f"of the {total} generation steps (iterations {first} up to {end}): masked AdaIN is "
                             "off. Lower adain_start or raise adain_end (official 0.7206 and 1.0) if you want it.")
        return found

    def active_steps(self, total: int) -> list:
        """Iterations on which the attention patch acts."""
        return [i for i in range(total) if self.action(i, total) != NOTHING]


def guidance_problem(guidance: str, cfg: float):
    """("refuse" | "warn", message) where ``guidance`` at ``cfg`` silences the method, else None.

    Official guidance rearranges only the cond row and injects structure only into the
    uncond row. CFG 1 returns the cond prediction alone (ComfyUI does not even compute the
    uncond one), so structure injection cannot reach the result; CFG 0 returns the uncond
    prediction alone, so the rearrangement cannot, and what is left is the plain replay.
    """
    if guidance != OFFICIAL or cfg is None:
        return None
    if cfg == 0.0:
        return ("refuse", f"guidance '{OFFICIAL}' at cfg 0 gives the uncond prediction alone, which the "
                "rearrangement never edits: the result would be the plain replay of the target, with nothing of the "
                f"reference. Raise cfg (official 2.5), or choose guidance '{SYMMETRIC}', which edits both rows.")
    if cfg == 1.0:
        return ("warn", f"guidance '{OFFICIAL}' at cfg 1 gives the cond prediction alone, and structure injection "
                "acts only on the uncond row: the rearrangement runs, structure injection does not (the shape may "
                f"drift). Use a cfg other than 1 (official 2.5), or guidance '{SYMMETRIC}' to keep both.")
    return None


def edited_rows(cond_or_uncond, rows_per_chunk: int, action: str, guidance: str) -> list:
    """Row indices of an attention batch that ``action`` edits.

    The batch is ``len(cond_or_uncond)`` chunks of ``rows_per_chunk`` rows, chunk ``j``
    being cond (0) or uncond (1), in whatever order and number the host runs them.
    Official guidance (the released code's behaviour) rearranges only cond rows and
    injects structure only into uncond rows; symmetric edits every row alike.
    """
    if action == NOTHING:
        return []
    if guidance == SYMMETRIC:
        kinds = (COND, UNCOND)
    elif guidance == OFFICIAL:
        kinds = (COND,) if action == REARRANGE else (UNCOND,)
    else:
        raise ValueError(f"guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")
    rows = []
    for chunk, kind in enumerate(cond_or_uncond):
        if kind in kinds:
            rows.extend(range(chunk * rows_per_chunk, (chunk + 1) * rows_per_chunk))
    return rows


def rearranged(output: torch.Tensor, reference: torch.Tensor, target_grid, reference_grid,
               correspondence: Correspondence | None = None, target_mask=None, reference_mask=None,
               labels: dict | None = None) -> torch.Tensor:
    """The reference tokens gathered into the output's layout, (B, N_t, C).

    Without ``correspondence`` (already at these grids) the output tokens are matched to
    the reference tokens here (per-step matching, the official way), inside the masks and,
    with ``labels`` (a constraint's matching arguments at these grids, see
    :meth:`~.instances.MatchConstraint.matching_arguments`), only to the reference tokens it
    allows. Target tokens outside the target mask keep the output's own features.
    """
    if correspondence is None:
        correspondence = match(output, reference, target_mask, reference_mask, target_grid=target_grid,
                               reference_grid=reference_grid, mutual=False, check_masks=False, **(labels or {}))
    return correspondence.gather(reference, fallback=output)


def blend(own: torch.Tensor, new: torch.Tensor, strength: float) -> torch.Tensor:
    """``own`` moved toward ``new`` by ``strength`` (1: replaced, 0: unchanged)."""
    if strength >= 1.0:
        return new
    return own + strength * (new - own)


def inject(n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, rows, new: torch.Tensor, mode: str):
    """Write ``new`` (len(rows), N, C) into the attention inputs for ``rows`` according to ``mode``.

    Returns fresh (n, context, value) tensors; the inputs are not modified. With
    ``feature`` injection Q, K and V are all computed from the new features.
    """
    if mode not in INJECTION_MODES or mode == IMPLICIT:
        raise ValueError(f"injection mode must be one of {INJECTION_MODES[:3]}, got {mode!r}")
    index = torch.as_tensor(rows, device=n.device, dtype=torch.long)

    def put(tensor):
        out = tensor.clone()
        out.index_copy_(0, index, new.to(out.dtype))
        return out

    if mode == FEATURE:
        return put(n), put(context), put(value)
    if mode == VALUE:
        return n, context, put(value)
    return n, put(context), put(value)


def cross_image_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                          key_mask: torch.Tensor | None = None, contrast: float = CIA_CONTRAST,
                          chunk: int = 1024) -> torch.Tensor:
    """Attention of ``q`` (B, N_q, heads*d) over another image's ``k``, ``v`` (1 or B, N_k, heads*d).

    As Cross-Image Attention computes it: softmax(q k^T / sqrt(d)) per head, then the contrast
    ``clip((p - mean) * contrast + mean, 0, 1)`` with the mean over each query's row, not
    renormalised. ``key_mask`` (1 or B, N_k) bool keeps keys inside it only (a row with no
    key left attends to every key). Queries are processed in chunks of ``chunk`` to bound
    memory (the attention map of one chunk: B * heads * chunk * N_k floats).
    """
    batch, n_q, width = q.shape
    d = width // heads
    k = rearrange(k.expand(batch, -1, -1), "b n (h d) -> b h n d", h=heads)
    v = rearrange(v.expand(batch, -1, -1), "b n (h d) -> b h n d", h=heads)
    bias = None
    if key_mask is not None:
        keep = key_mask.to(q.device).expand(batch, -1)
        keep = keep | ~keep.any(dim=1, keepdim=True)
        bias = torch.zeros(keep.shape, dtype=torch.float32, device=q.device).masked_fill(~keep, float("-inf"))
        bias = bias[:, None, None, :]
    out = []
    for start in range(0, n_q, chunk):
        part = rearrange(q[:, start:start + chunk], "b n (h d) -> b h n d", h=heads)
        logits = (part.float() @ k.float().transpose(-1, -2)) / math.sqrt(d)
        if bias is not None:
            logits = logits + bias
        probs = torch.softmax(logits, dim=-1)
        if contrast != 1.0:
            mean = probs.mean(dim=-1, keepdim=True) if bias is None else \
                probs.sum(dim=-1, keepdim=True) / torch.isfinite(bias).sum(dim=-1, keepdim=True)
            probs = ((probs - mean) * contrast + mean).clamp(0.0, 1.0)
            if bias is not None:
                probs = probs.masked_fill(~torch.isfinite(bias), 0.0)
        out.append(rearrange(probs @ v.float(), "b h n d -> b n (h d)"))
    return torch.cat(out, dim=1).to(q.dtype)


# Which decoder self-attention levels the transfer edits, by name (levels listed finest first).
TWO_FINEST = "two finest decoder levels"
LAYER_CHOICES = {
    TWO_FINEST: (0, 1),
    "finest decoder level": (0,),
    "second finest decoder level": (1,),
    "all decoder levels": None,
}


def choose_layers(levels, choice: str) -> frozenset:
    """The layer keys of the levels ``choice`` names; ``levels`` is a list of levels, finest first."""
    if choice not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {list(LAYER_CHOICES)}, got {choice!r}")
    picked = LAYER_CHOICES[choice]
    chosen = levels if picked is None else [levels[i] for i in picked if i < len(levels)]
    return frozenset(key for level in chosen for key in level)
