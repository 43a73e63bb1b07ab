"""The appearance-transfer plan: everything the attention patch needs, and the edit itself.

A :class:`TransferPlan` is built once by the Apply Appearance Transfer node and shared
(never copied) by every clone of the patched model. At each UNet call the host tells it
the current sigma; the plan answers what to do (:meth:`TransferPlan.step`), which
reference or structure features it needs (:meth:`TransferPlan.needed`), and edits one
self-attention layer's inputs (:meth:`TransferPlan.edit`). The host supplies the features,
from the trajectories' captured banks or by running the UNet on the stored latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .adain import labelled_adain, masked_adain
from .correspondence import Correspondence
from .mask_grid import mask_at_grid
from .instances import MatchConstraint
from .rearrange import (CIA_CONTRAST, FEATURE, IMPLICIT, NOTHING, OFFICIAL, REARRANGE, STRUCTURE, SYMMETRIC,
                        TransferSchedule, blend, cross_image_attention, edited_rows, inject, rearranged)
from .trajectory import Trajectory

REFERENCE = "reference"
STRUCTURE_ROLE = "structure"


@dataclass(frozen=True)
class StepInfo:
    """Where one UNet call sits: iteration ``i`` of ``total``, the action, and the trajectories' latent indices."""

    i: int
    total: int
    action: str
    reference_index: int | None
    structure_index: int | None


@dataclass
class TransferPlan:
    """Settings and sources of one appearance transfer (shared by the patched model's clones)."""

    reference: Trajectory
    structure: Trajectory
    layers: frozenset
    schedule: TransferSchedule = field(default_factory=TransferSchedule)
    injection: str = "feature"
    guidance: str = OFFICIAL
    strength: float = 1.0
    correspondence: Correspondence | None = None
    target_mask: torch.Tensor | None = None
    reference_mask: torch.Tensor | None = None
    contrast: float = CIA_CONTRAST  # implicit mode only
    constraint: MatchConstraint | None = None  # several objects: which reference tokens each target token may take
    node: str = "Apply Appearance Transfer"  # the node the user sees, named in errors raised while sampling
    _resampled: dict = field(default_factory=dict, repr=False)

    def __deepcopy__(self, memo):
        return self  # immutable after construction; ComfyUI copies model options on every clone and run

    # ---------------------------------------------------------------- when

    def step(self, sigma: float) -> StepInfo:
        """Where ``sigma`` is on the structure's trajectory, and what happens there.

        The iteration counts along the trajectory's own schedule, not the sampler call's
        sigmas, so a run cut in pieces with SplitSigmas acts on the same steps as a whole one.
        """
        total = self.structure.steps
        if self.strength <= 0.0 or not self._active(total):
            return StepInfo(-1, total, NOTHING, None, None)
        struct_index = self.structure.index_of_sigma(sigma)
        ref_index = self.reference.index_of_sigma(sigma)
        if struct_index is None or ref_index is None or struct_index >= total:
            raise ValueError(
                f"{self.node}: the sampler is at sigma {sigma:.5g}, which is not a step of the target's "
                "and the reference's trajectories. Sample with the Transfer Sampler (or Trajectory Sampler) over the "
                "SIGMAS output of the target's Invert Latent, both images inverted with the same steps and "
                "skip_steps."
            )
        return StepInfo(struct_index, total, self.schedule.action(struct_index, total), ref_index, struct_index)

    def _active(self, total: int) -> bool:
        key = ("active", total)
        if key not in self._resampled:
            self._resampled[key] = bool(self.schedule.active_steps(total))
        return self._resampled[key]

    # ---------------------------------------------------------------- what

    def needed(self, info: StepInfo, cond_or_uncond) -> list:
        """(role, kind) pairs whose features this call needs, e.g. [("reference", 0)]."""
        if info.action == NOTHING:
            return []
        role = REFERENCE if info.action == REARRANGE else STRUCTURE_ROLE
        kinds = []
        for kind in cond_or_uncond:
            if edited_rows([kind], 1, info.action, self.guidance) and int(kind) not in kinds:
                kinds.append(int(kind))
        return [(role, kind) for kind in kinds]

    def trajectory(self, role: str) -> Trajectory:
        return self.reference if role == REFERENCE else self.structure

    def latent_index(self, info: StepInfo, role: str) -> int:
        return info.reference_index if role == REFERENCE else info.structure_index

    # ---------------------------------------------------------------- how

    def _fixed_at(self, target_grid, reference_grid, device):
        """The fixed correspondence at these grids, restricted to this patch's own masks too."""
        key = (tuple(target_grid), tuple(reference_grid), str(device))
        cached = self._resampled.get(key)
        if cached is not None:
            return cached
        fixed = self.correspondence.to(device).resample(target_grid, reference_grid)
        masks = []
        if self.target_mask is not None:
            masks.append(mask_at_grid(self.target_mask, target_grid).flatten(1).to(device))
        inside = None
        if self.reference_mask is not None:
            inside = mask_at_grid(self.reference_mask, reference_grid).flatten(1).to(device)
        rows = max([fixed.batch_size] + [m.shape[0] for m in masks] + ([inside.shape[0]] if inside is not None else []))

        def widen(tensor):
            return None if tensor is None else tensor.expand(rows, *tensor.shape[1:])

        index = widen(fixed.index)
        keep = index >= 0
        for mask in masks:
            keep = keep & mask
        if inside is not None:
            keep = keep & torch.gather(widen(inside), 1, index.clamp(min=0))
        if self.constraint is not None:
            keep = keep & self.constraint.keeps(index, target_grid, reference_grid)
        cached = replace(fixed, index=torch.where(keep, index, -1), score=widen(fixed.score),
                         mutual=widen(fixed.mutual), target_mask=None, reference_mask=None)
        self._resampled[key] = cached
        return cached

    def _masks_at(self, target_grid, reference_grid, device):
        """The patch's masks at these token grids on ``device`` (bool), resized once per grid."""
        key = ("masks", tuple(target_grid), tuple(reference_grid), str(device))
        if key not in self._resampled:
            self._resampled[key] = tuple(
                None if mask is None else mask_at_grid(mask, grid).to(device)
                for mask, grid in ((self.target_mask, target_grid), (self.reference_mask, reference_grid)))
        return self._resampled[key]

    def _labels_at(self, target_grid, reference_grid, device):
        """The constraint's matching arguments at these grids on ``device`` (None without one), made once per grid."""
        if self.constraint is None:
            return None
        key = ("labels", tuple(target_grid), tuple(reference_grid), str(device))
        if key not in self._resampled:
            self._resampled[key] = self.constraint.matching_arguments(target_grid, reference_grid, device)
        return self._resampled[key]

    def edit(self, n, context, value, info: StepInfo, cond_or_uncond, grid, features):
        """Edit one self-attention layer's inputs (n, context, value: (rows, N, C)).

        ``features`` maps (role, kind) to (tokens (1 or B, N_src, C), grid_src) for this
        layer. Returns new (n, context, value); the inputs are not modified. In implicit
        mode rearrangement happens in :meth:`attend` instead, and this passes through.
        """
        if self.injection == IMPLICIT and info.action == REARRANGE:
            return n, context, value
        chunks = len(cond_or_uncond)
        rows_per_chunk = n.shape[0] // chunks
        edited = []
        for chunk, kind in enumerate(cond_or_uncond):
            rows = edited_rows([kind], rows_per_chunk, info.action, self.guidance)
            if not rows:
                continue
            role = REFERENCE if info.action == REARRANGE else STRUCTURE_ROLE
            tokens, source_grid = features[(role, int(kind))]
            tokens = tokens.to(n.device, n.dtype)
            own = n[chunk * rows_per_chunk:(chunk + 1) * rows_per_chunk]
            if info.action == STRUCTURE:
                new = tokens.expand(own.shape[0], *tokens.shape[1:])
            else:
                fixed = None
                if self.correspondence is not None:
                    fixed = self._fixed_at(grid, source_grid, n.device)
                target_mask, reference_mask = self._masks_at(grid, source_grid, n.device)
                new = rearranged(own, tokens, grid, source_grid, fixed, target_mask, reference_mask,
                                 self._labels_at(grid, source_grid, n.device))
            edited.append((chunk, blend(own, new, self.strength)))
        if not edited:
            return n, context, value
        rows = [chunk * rows_per_chunk + r for chunk, _ in edited for r in range(rows_per_chunk)]
        new_rows = torch.cat([tensor for _, tensor in edited])
        return inject(n, context, value, rows, new_rows, FEATURE if self.injection == IMPLICIT else self.injection)

    def attend(self, q, k, v, info: StepInfo, cond_or_uncond, grid, features, heads: int, project, attention):
        """Implicit mode's self-attention output (rows, N, heads*d) for one layer.

        On rearrangement steps the edited rows' queries inside the target mask attend to the
        reference's keys and values (``project(tokens) -> (k, v)`` with the layer's own
        projections), inside the reference mask, with Cross-Image Attention's contrast;
        every other query keeps its own attention ``attention(q, k, v)``.
        """
        own = attention(q, k, v)
        if self.injection != IMPLICIT or info.action != REARRANGE:
            return own
        chunks = len(cond_or_uncond)
        rows_per_chunk = q.shape[0] // chunks
        out = None
        for chunk, kind in enumerate(cond_or_uncond):
            if not edited_rows([kind], rows_per_chunk, info.action, self.guidance):
                continue
            tokens, source_grid = features[(REFERENCE, int(kind))]
            reference_k, reference_v = project(tokens.to(q.device, q.dtype))
            target_mask, reference_mask = self._masks_at(grid, source_grid, q.device)
            rows = slice(chunk * rows_per_chunk, (chunk + 1) * rows_per_chunk)
            cross = cross_image_attention(q[rows], reference_k, reference_v, heads,
                                          None if reference_mask is None else reference_mask.flatten(1),
                                          self.contrast)
            if target_mask is not None:
                cross = torch.where(target_mask.flatten(1)[..., None], cross, own[rows])
            out = own.clone() if out is None else out
            out[rows] = blend(own[rows], cross, self.strength)
        return own if out is None else out


def check_pair(reference: Trajectory, structure: Trajectory) -> None:
    """Raise a clear error when two trajectories cannot be transferred between (the caller names its node)."""
    if reference.sigmas.shape != structure.sigmas.shape or not torch.allclose(reference.sigmas, structure.sigmas,
                                                                              rtol=1e-5, atol=0):
        raise ValueError(
            "the reference and structure trajectories have different schedules "
            f"({reference.total_steps} steps skipping {reference.start_step} vs {structure.total_steps} skipping "
            f"{structure.start_step}). Invert both images with the same steps and skip_steps on the same model."
        )
    if reference.latent_shape[0] not in (1, structure.latent_shape[0]):
        raise ValueError(
            f"the reference holds {reference.latent_shape[0]} images and the structure "
            f"{structure.latent_shape[0]}; use one reference for all targets, or one per target."
        )


__all__ = ["TransferPlan", "StepInfo", "check_pair", "REFERENCE", "STRUCTURE_ROLE", "SYMMETRIC", "OFFICIAL"]


def adain_after_step(reference: Trajectory, schedule: TransferSchedule, target_mask=None, reference_mask=None,
                     constraint: MatchConstraint | None = None):
    """The Transfer Sampler's step hook: masked AdaIN toward the reference's latent on the schedule's AdaIN steps.

    Returns ``after_step(step, total, next_index, x) -> x`` for eye_core.trajectory.replay.
    With a ``constraint`` (several objects) AdaIN runs region by region: each target object or
    part takes the statistics of the reference region it may match.
    """
    labels = {}

    def after_step(i, total, index, x):
        if not schedule.adain(i, total):
            return x
        reference_latent = reference.latents[index].to(x.device, x.dtype)
        if constraint is None or not constraint.labelled:  # point pairs alone steer matching, not AdaIN
            return masked_adain(x, reference_latent, target_mask, reference_mask)
        key = (tuple(x.shape[-2:]), tuple(reference_latent.shape[-2:]), x.device)
        if key not in labels:  # the label maps at the latents' sizes, once per sampling
            labels[key] = constraint.at(key[0], key[1], x.device)
        return labelled_adain(x, reference_latent, *labels[key], target_mask, reference_mask)

    return after_step
