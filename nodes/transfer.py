"""Appearance transfer: the attention patch, the Transfer Sampler and the all-in-one node."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..eye_core.adain import masked_adain
from ..eye_core.rearrange import (GUIDANCE_MODES, INJECTION_MODES, LAYER_CHOICES, OFFICIAL, TWO_FINEST,
                                  TransferSchedule, choose_layers)
from ..eye_core.transfer import TransferPlan, check_pair
from . import _comfy
from .common import CATEGORY, CORRESPONDENCE, TRAJECTORY, node_id
from .correspondence import MatchCorrespondence
from .features import AUTO_LEVEL, ExtractUNetFeatures
from ..eye_core.trajectory import EF_DDPM
from .inversion import InvertLatent, _replay

OFFICIAL_SCHEDULE = TransferSchedule()
PER_STEP = "per-step matching (official)"
FIXED_DIFT = "fixed DIFT correspondence"


def _fraction(name, default, tooltip):
    return io.Float.Input(name, default=round(default, 4), min=0.0, max=1.0, step=0.001, tooltip=tooltip)


def _check_mask(mask, name, batch):
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] not in (1, batch) or mask.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; connect a MASK (B, H, W) with one mask, or one per "
                         f"image of the batch ({batch}).")
    if not bool((mask.flatten(1) > 0).any(dim=1).all()):
        raise ValueError(f"{name} is empty (all zero) for at least one image: SAM-HQ found nothing in the box, or "
                         "it is LoadImage's MASK of an image without alpha. Redraw the box, or leave the input "
                         "unconnected to use the whole image.")
    return mask.float()


class ApplyAppearanceTransfer(io.ComfyNode):
    """MODEL -> patched MODEL clone whose decoder self-attention takes the reference's appearance."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ApplyAppearanceTransfer"),
            display_name="Apply Appearance Transfer (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Patches a clone of the model so that, while the target is regenerated from its trajectory, the "
                "decoder self-attention features are rearranged from the reference along semantic correspondences "
                "(and, on a few early steps, replaced by the target's own structure features). Sample it with the "
                "Transfer Sampler over the target's Invert Latent sigmas. The input MODEL is never modified."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The same UNet SD model (and patches, e.g. FreeU) used to invert both "
                               "images."),
                io.Custom(TRAJECTORY).Input("reference", tooltip="Trajectory of the reference (appearance) image "
                                            "from Invert Latent."),
                io.Custom(TRAJECTORY).Input("structure", tooltip="Trajectory of the target (structure) image from "
                                            "Invert Latent, with the same steps and skip_steps."),
                io.Custom(CORRESPONDENCE).Input("correspondence", optional=True, tooltip="Optional fixed "
                                                "correspondence (Match Correspondence on DIFT features), resampled to "
                                                "every attention grid. Without it, matching runs per step on the "
                                                "attention features, as the authors do."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask (any size). Outside it "
                              "nothing is rearranged, so the background is kept."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask (any size): only "
                              "features inside it are used."),
                io.Combo.Input("injection", options=list(INJECTION_MODES), default="feature", tooltip="feature: Q, K "
                               "and V all come from the rearranged features (the paper's choice). value: only V. "
                               "key-value: K and V."),
                io.Combo.Input("layers", options=list(LAYER_CHOICES), default=TWO_FINEST, tooltip="Decoder "
                               "self-attention levels edited. Two finest: SD1.5 output blocks 6-11, SDXL 0-5."),
                _fraction("rearrange_start", OFFICIAL_SCHEDULE.rearrange_start, "Fraction of the generation steps "
                          "after which rearrangement starts (official: 11 of 68 = 0.162). Earlier: more appearance, "
                          "less structure."),
                _fraction("rearrange_end", OFFICIAL_SCHEDULE.rearrange_end, "Fraction of the steps where "
                          "rearrangement stops (official: 1.0, to the end). rearrange_end <= rearrange_start "
                          "disables the patch."),
                _fraction("structure_end", OFFICIAL_SCHEDULE.structure_end, "Structure injection happens on steps "
                          "before this fraction (official: 40 of 68 = 0.588). 0 turns it off."),
                _fraction("structure_interval", OFFICIAL_SCHEDULE.structure_interval, "Structure injection every "
                          "this fraction of the steps, from rearrange_start (official: every 5 of 68 = 0.074)."),
                io.Combo.Input("guidance", options=list(GUIDANCE_MODES), default=OFFICIAL, tooltip="official: as the "
                               "released code, rearrange only the cond row and inject structure only into the uncond "
                               "row (CFG then pushes toward the rearranged result). symmetric: both rows alike."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="How far the features "
                               "move toward the rearranged ones (0: off, the model samples exactly as without the "
                               "patch)."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A patched clone of the model; connect it to the "
                                     "CFGGuider of the sampling.")],
        )

    @classmethod
    def execute(cls, model, reference, structure, injection, layers, rearrange_start, rearrange_end, structure_end,
                structure_interval, guidance, strength, correspondence=None, target_mask=None,
                reference_mask=None) -> io.NodeOutput:
        _comfy.require_unet(model, "Apply Appearance Transfer")
        check_pair(reference, structure)
        chosen = choose_layers(_comfy.decoder_attention_levels(model), layers)
        if not chosen:
            raise ValueError(f"Apply Appearance Transfer: this model has no decoder self-attention at '{layers}'; "
                             f"choose '{TWO_FINEST}' or 'all decoder levels'.")
        batch = structure.latent_shape[0]
        if correspondence is not None and correspondence.batch_size not in (1, batch):
            raise ValueError(f"Apply Appearance Transfer: the correspondence holds {correspondence.batch_size} "
                             f"targets but the structure trajectory {batch}; match the same target images.")
        schedule = TransferSchedule(rearrange_start=rearrange_start, rearrange_end=rearrange_end,
                                    structure_end=structure_end, structure_interval=structure_interval,
                                    adain_start=OFFICIAL_SCHEDULE.adain_start, adain_end=OFFICIAL_SCHEDULE.adain_end)
        plan = TransferPlan(reference=reference, structure=structure, layers=chosen, schedule=schedule,
                            injection=injection, guidance=guidance, strength=float(strength),
                            correspondence=correspondence,
                            target_mask=_check_mask(target_mask, "target_mask", batch),
                            reference_mask=_check_mask(reference_mask, "reference_mask", reference.latent_shape[0]))
        return io.NodeOutput(_comfy.with_transfer_patch(model, plan))


def _adain_hook(reference, schedule, target_mask, reference_mask):
    def after_step(i, total, index, x):
        if not schedule.adain(i, total):
            return x
        return masked_adain(x, reference.latents[index].to(x.device, x.dtype), target_mask, reference_mask)

    return after_step


class TransferSampler(io.ComfyNode):
    """The Trajectory Sampler of the target plus masked AdaIN toward the reference's latents."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TransferSampler"),
            display_name="Transfer Sampler (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "A SAMPLER for SamplerCustomAdvanced: replays the target (structure) trajectory's noise maps and, "
                "after the last steps, renormalises the latent's colour statistics to the reference's inside the "
                "masks (masked AdaIN; plain AdaIN without masks). Use DisableNoise and the target's start_latent "
                "and sigmas."
            ),
            inputs=[
                io.Custom(TRAJECTORY).Input("structure", tooltip="Trajectory of the target image (its noise maps are "
                                            "replayed)."),
                io.Custom(TRAJECTORY).Input("reference", tooltip="Trajectory of the reference image (AdaIN target)."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask: AdaIN statistics and "
                              "blending inside it only."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask: AdaIN statistics "
                              "inside it only."),
                _fraction("adain_start", OFFICIAL_SCHEDULE.adain_start, "Masked AdaIN after each step from this "
                          "fraction of the schedule (official: 49 of 68 = 0.721)."),
                _fraction("adain_end", OFFICIAL_SCHEDULE.adain_end, "... up to this fraction (official: 1.0). "
                          "adain_end <= adain_start turns AdaIN off."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler", tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, structure, reference, adain_start, adain_end, target_mask=None,
                reference_mask=None) -> io.NodeOutput:
        check_pair(reference, structure)
        schedule = TransferSchedule(adain_start=adain_start, adain_end=adain_end)
        batch = structure.latent_shape[0]
        hook = _adain_hook(reference, schedule, _check_mask(target_mask, "target_mask", batch),
                           _check_mask(reference_mask, "reference_mask", reference.latent_shape[0]))
        return io.NodeOutput(_comfy.make_sampler(_replay, trajectory=structure, after_step=hook))


class AppearanceTransfer(io.ComfyNode):
    """All-in-one: target and reference images in, the transferred image out (same code as the modular nodes)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("AppearanceTransfer"),
            display_name="Eye-for-an-eye Appearance Transfer",
            category=CATEGORY,
            description=(
                "Keeps the structure of the target image and takes colours and textures from the reference, part "
                "by part. Runs the whole method with the official preset: inverts both images, patches the model "
                "and samples. For control over every stage, use the separate nodes."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A UNet SD model (SD1.x, SD2.x, SDXL); add FreeU before it as the "
                               "authors do."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE."),
                io.Conditioning.Input("positive", tooltip="'a photo of a <domain>', e.g. 'a photo of a bird'."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (the authors use an empty one)."),
                io.Image.Input("target", tooltip="The image whose structure is kept."),
                io.Image.Input("reference", tooltip="The image whose appearance is transferred."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask (SAM-HQ Segment); keeps "
                              "the background."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask."),
                io.Int.Input("steps", default=100, min=2, max=999, tooltip="Steps of the whole schedule."),
                io.Int.Input("skip_steps", default=32, min=0, max=998, tooltip="Steps skipped at the noisy end."),
                io.Float.Input("inversion_cfg", default=3.5, min=0.0, max=30.0, step=0.1, tooltip="Guidance while "
                               "inverting (official 3.5)."),
                io.Float.Input("cfg", default=2.5, min=0.0, max=30.0, step=0.1, tooltip="Guidance while generating "
                               "(official 2.5): lower keeps the structure more faithfully, higher looks nicer."),
                io.Combo.Input("matching", options=[PER_STEP, FIXED_DIFT], default=PER_STEP, tooltip="Per-step "
                               "matching on attention features (official) or one DIFT correspondence for all steps "
                               "(steadier, cheaper)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the inversion noise."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The target with the reference's appearance."),
                io.Latent.Output(display_name="latent", tooltip="The result's latent."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, target, reference, steps, skip_steps, inversion_cfg, cfg,
                matching, seed, target_mask=None, reference_mask=None) -> io.NodeOutput:
        latents = {name: {"samples": vae.encode(image[:, :, :, :3])} for name, image in
                   (("target", target), ("reference", reference))}
        trajectories, starts, sigmas = {}, {}, None
        for name, latent in latents.items():
            trajectory, start, sigmas = InvertLatent.execute(
                model=model, latent=latent, positive=positive, negative=negative, steps=steps, cfg=inversion_cfg,
                method=EF_DDPM, seed=seed, skip_steps=skip_steps).args
            trajectories[name], starts[name] = trajectory, start
        correspondence = None
        if matching == FIXED_DIFT:
            features = {name: ExtractUNetFeatures.execute(
                model=model, latent=latent, positive=positive, timestep=261, decoder_level=AUTO_LEVEL,
                ensemble_size=8, seed=seed).args[0] for name, latent in latents.items()}
            correspondence = MatchCorrespondence.execute(
                target_features=features["target"], reference_features=features["reference"],
                target_mask=target_mask, reference_mask=reference_mask).args[0]
        (patched,) = ApplyAppearanceTransfer.execute(
            model=model, reference=trajectories["reference"], structure=trajectories["target"], injection="feature",
            layers=TWO_FINEST, rearrange_start=OFFICIAL_SCHEDULE.rearrange_start,
            rearrange_end=OFFICIAL_SCHEDULE.rearrange_end, structure_end=OFFICIAL_SCHEDULE.structure_end,
            structure_interval=OFFICIAL_SCHEDULE.structure_interval, guidance=OFFICIAL, strength=1.0,
            correspondence=correspondence, target_mask=target_mask, reference_mask=reference_mask).args
        (sampler,) = TransferSampler.execute(
            structure=trajectories["target"], reference=trajectories["reference"],
            adain_start=OFFICIAL_SCHEDULE.adain_start, adain_end=OFFICIAL_SCHEDULE.adain_end,
            target_mask=target_mask, reference_mask=reference_mask).args
        callback = _comfy.progress_callback(patched, len(sigmas) - 1)
        samples = _comfy.sample_with_cfg(patched, positive, negative, cfg, starts["target"]["samples"], sampler,
                                         sigmas, seed, callback)
        out = starts["target"].copy()
        out["samples"] = samples.to(_comfy.storage_device())
        image = vae.decode(out["samples"])
        return io.NodeOutput(image.to(_comfy.storage_device()), out)


NODES = [ApplyAppearanceTransfer, TransferSampler, AppearanceTransfer]
