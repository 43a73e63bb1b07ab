"""Invert Latent and Trajectory Sampler: invert an image's latent, then replay it exactly."""

from __future__ import annotations

import logging

import torch
from comfy_api.v0_0_2 import io

from ..eye_core.feature_bank import SD15_512_BYTES_PER_STEP, FeatureBank
from ..eye_core.fingerprint import Origin, model_of
from ..eye_core.inversion import NoiseStream, inversion_sigmas, invert_ddim, invert_edit_friendly
from ..eye_core.rearrange import LAYER_CHOICES, OFFICIAL_STEPS, TWO_FINEST, TransferSchedule, choose_layers
from ..eye_core.trajectory import EF_DDPM, METHODS, replay
from ..comfy_adapter.checks import (check_conditioning, check_guidance, check_latent_channels, check_sampler_conditioning,
                                    require_unet)
from ..comfy_adapter.fingerprints import image_print, model_print, sampling_model_print
from ..comfy_adapter.memory import feature_store, storage_device
from ..comfy_adapter.patches import check_token_patches, transfer_plans, with_feature_recorder
from ..comfy_adapter.progress import check_interrupt, progress_callback, warn_user
from ..comfy_adapter.sampling import make_sampler, sample_with_cfg, sampler_cfg, sigma_grid
from ..comfy_adapter.unet_layout import decoder_attention_levels
from .common import (CATEGORY, TRAJECTORY, check_choices, check_same_model, named, node_id, require_finite,
                     step_counts_problem)

# Latents whose values are all below this (in raw VAE units) are treated as empty.
EMPTY_LATENT_ATOL = 1e-8
DEFAULT_FEATURE_BUDGET_MB = 2048
LOG = logging.getLogger("eye_for_an_eye")


def feature_memory_text() -> str:
    """The captured features' memory figures (tooltip and README say exactly this)."""
    per_step = SD15_512_BYTES_PER_STEP / 2**20
    kept = OFFICIAL_STEPS - TransferSchedule().first_step(OFFICIAL_STEPS)
    per_image = per_step * kept / 1024
    return (f"SD1.5 at 512 px: {per_step:.1f} MiB per step, {per_image:.2f} GiB per image for the {kept} steps the "
            f"official preset keeps ({2 * per_image:.1f} GiB for the target and the reference)")


def _invert(model, x, sigmas, extra_args=None, callback=None, disable=None, *, method, seed, skip, cfg,
            total_steps, result, recorder=None):
    """A SAMPLER function: runs the inversion inside ComfyUI's guider and returns the start latent.

    Running inside ``CFGGuider.sample`` gives the inversion the very same predictions the
    replay will see (same conds, same batching, same patches and wrappers).
    """
    extra_args = {} if extra_args is None else extra_args
    ones = x.new_ones([x.shape[0]])
    index_of = {float(s): i for i, s in enumerate(sigmas.tolist())}

    def denoise(latent, sigma):
        check_interrupt()
        if recorder is None:
            return model(latent, sigma * ones, **extra_args)
        recorder.index = index_of[float(sigma)]  # the stored latent this call evaluates
        try:
            return model(latent, sigma * ones, **extra_args)
        finally:
            recorder.bank.commit(recorder.index)
            recorder.index = None

    def on_step(i, total, latent, denoised):
        if callback is not None:
            callback({"x": latent, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})

    settings = {"cfg": cfg, "total_steps": total_steps, "start_step": skip, "seed": seed}
    store = storage_device()
    if method == EF_DDPM:
        noise = NoiseStream(seed, x.shape, discard=skip)
        trajectory = invert_edit_friendly(x, sigmas, denoise, noise, on_step, store, **settings)
    else:
        trajectory = invert_ddim(x, sigmas, denoise, on_step, store, **settings)
    result["trajectory"] = trajectory
    return trajectory.start_latent.to(x.device, x.dtype)


def check_sampling_model(sampler_model, trajectory, node: str, what: str = "this trajectory") -> None:
    """At the start of a replay: the sampler's model must be the one ``trajectory`` was inverted with.

    Another family or other weights: a clear error (the replay would land far from the
    image without a word). Other patches only: a warning, since editing with another
    patch on purpose is legitimate.
    """
    inverted = model_of(trajectory)
    if inverted is None:
        return
    check_same_model(
        inverted, sampling_model_print(sampler_model), what, "the sampler's model", node,
        "A trajectory only replays on the model it was inverted with: connect that model to the CFGGuider (the same "
        "checkpoint and patches), or invert the image again with this model.",
        "The replay will not rebuild the inverted image exactly; that is expected if you edit with another patch on "
        "purpose, otherwise give the CFGGuider the model (and patches) Invert Latent had.")


def _replay(model, x, sigmas, extra_args=None, callback=None, disable=None, *, trajectory, after_step=None,
            node="Trajectory Sampler", what="this trajectory", adain_schedule=None):
    """A SAMPLER function: steps ``x`` down ``sigmas`` with the trajectory's noise maps.

    ``after_step(step, total, next_index, x) -> x``, if given, adjusts the latent after
    each step (the Transfer Sampler's masked AdaIN); ``step`` and ``total`` count along the
    trajectory's own schedule, so sigmas cut with SplitSigmas keep their place in it.
    ``node`` is the node the user sees in errors, ``what`` names the trajectory there.
    ``adain_schedule``: the Transfer Sampler's AdaIN window, checked for selecting no step.
    """
    extra_args = {} if extra_args is None else extra_args
    check_sampling_model(model, trajectory, node, what)
    check_sampler_conditioning(model, node)
    plans = transfer_plans(model)
    check_guidance(plans, sampler_cfg(model), node)
    for plan in plans:
        for text in plan.schedule.empty_windows(trajectory.steps, adain=False):
            warn_user(plan.node, text)
    if adain_schedule is not None:
        for text in adain_schedule.empty_windows(trajectory.steps, rearrange=False):
            warn_user(node, text)
    with named(node):
        offset = trajectory.locate(sigmas)
        trajectory.check_latent(x, "latent entering it")
        if offset == 0:
            trajectory.check_start(x, float(sigmas[0]), what)
    ones = x.new_ones([x.shape[0]])

    def on_step(i, latent, denoised):
        if callback is not None:
            callback({"x": latent, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})

    return replay(trajectory, x, sigmas, lambda latent, sigma: model(latent, sigma * ones, **extra_args), offset,
                  on_step, after_step, check_interrupt)


def _check_latent(samples: torch.Tensor, node: str):
    if samples.numel() == 0 or samples.ndim != 4:
        raise ValueError(
            f"{node}: the latent is empty or not an image latent (shape {tuple(samples.shape)}). Connect the "
            "LATENT output of VAEEncode of the image you want to invert."
        )
    if samples.abs().max().item() <= EMPTY_LATENT_ATOL:
        raise ValueError(
            f"{node}: the latent is all zeros (an EmptyLatentImage?). There is nothing to invert: connect "
            "the LATENT output of VAEEncode of the image you want to invert."
        )


def invert_latent(model, latent, positive, negative, steps, cfg, method, seed, skip_steps, capture_features=True,
                  feature_budget_mb=DEFAULT_FEATURE_BUDGET_MB, capture_layers=TWO_FINEST, node="Invert Latent"):
    """Invert Latent's work: (trajectory, start LATENT, SIGMAS); errors name ``node``."""
    require_unet(model, node)
    samples = latent["samples"]
    _check_latent(samples, node)
    require_finite(samples, "latent", node)
    if capture_features:
        check_token_patches(model, node)
    check_latent_channels(model, samples, node)
    for name, conditioning in (("positive", positive), ("negative", negative)):
        check_conditioning(model, conditioning, name, node)
    if method not in METHODS:
        raise ValueError(f"{node}: method must be one of {METHODS}, got {method!r}")
    problem = step_counts_problem(InvertLatent, node, steps, skip_steps)
    if problem:
        raise ValueError(problem)
    grid = sigma_grid(model)
    if steps > grid.numel() - 1:
        raise ValueError(
            f"{node}: steps is {steps} but this model's noise schedule has only {grid.numel()} timesteps (a "
            f"distilled schedule, such as ModelSamplingDiscrete set to lcm), so at most {grid.numel() - 1} steps "
            f"fit. Lower steps to {grid.numel() - 1} or fewer (and skip_steps below it), or remove the node that "
            "changed the schedule.")
    origin = Origin(model=model_print(model), images=image_print(samples))
    with named(node):
        sigmas = inversion_sigmas(grid, steps)[skip_steps:]
        layers = choose_layers(decoder_attention_levels(model), capture_layers) if capture_features else None
    result = {}
    recorder = None
    sampling_model = model
    if capture_features:
        # the transfer edits nothing before the official rearrange_start: do not spend the budget there
        first = TransferSchedule().first_step(steps - skip_steps)
        store, pin = feature_store()
        bank = FeatureBank(layers, int(feature_budget_mb) * 2**20, store, start_index=first, pin_memory=pin)
        sampling_model, recorder = with_feature_recorder(model, bank, samples.shape[-2:])
    sampler = make_sampler(_invert, method=method, seed=seed, skip=skip_steps, cfg=cfg,
                                  total_steps=steps, result=result, recorder=recorder)
    callback = progress_callback(model, steps - skip_steps)
    start = sample_with_cfg(sampling_model, positive, negative, cfg, samples, sampler, sigmas, seed, callback)
    trajectory = result["trajectory"]
    trajectory.origin = origin
    if recorder is not None:
        trajectory.features = recorder.bank
        LOG.info("%s: captured features of %s", node, recorder.bank.summary())
    out = latent.copy()
    out["samples"] = start.to(storage_device())
    return trajectory, out, sigmas.clone()


class InvertLatent(io.ComfyNode):
    """Inverts a clean latent so that the Trajectory Sampler can rebuild (and edit) it exactly."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("InvertLatent"),
            display_name="Invert Latent (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Inverts an image's latent with the model's own noise schedule. Edit-friendly DDPM stores a noise map "
                "per step, so the Trajectory Sampler rebuilds the image exactly from the returned LATENT and SIGMAS; "
                "the appearance-transfer nodes replay the trajectory of both the target and the reference."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A UNet Stable Diffusion model (SD1.x, SD2.x, SDXL). Put FreeU or "
                               "other model patches before this node if you want them during inversion too."),
                io.Latent.Input("latent", tooltip="The clean latent of the image to invert: the LATENT of VAEEncode. "
                                "Any size the model accepts; a batch inverts every image."),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image, e.g. 'a photo of a "
                                      "bird'. Use the same conditioning when you sample the replay."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (the authors use an empty one)."),
                io.Int.Input("steps", default=100, min=1, max=999, tooltip="Steps of the whole schedule (DDIM leading "
                             "spacing on the model's 1000 timesteps: 100 steps give timesteps 991, 981, ..., 1)."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Guidance scale during inversion. Replay with the same value in CFGGuider to "
                               "rebuild the image exactly; 3.5 is the authors' value."),
                io.Combo.Input("method", options=list(METHODS), default=EF_DDPM,
                               tooltip="Edit-friendly DDPM: independent noise per step plus stored noise maps; "
                               "replays exactly at any cfg. DDIM: deterministic, approximate, best at cfg near 1."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the per-step noise of edit-friendly DDPM (ignored by DDIM). Give the "
                             "target and the reference different seeds: with one seed their noise is the same at "
                             "every step and matching leans toward same-position matches."),
                io.Int.Input("skip_steps", default=32, min=0, max=998, tooltip="Steps skipped at the noisy end: "
                             "generation starts at step skip_steps of steps (the authors skip 32 of 100 and run 68). "
                             "More skipped steps keep more of the image's layout."),
                io.Boolean.Input("capture_features", default=True, optional=True, tooltip="Keep the decoder "
                                 "self-attention inputs the inversion computes anyway, so Apply Appearance Transfer "
                                 "needs no extra UNet pass for this image. Costs memory (fp16, offload device)."),
                io.Int.Input("feature_budget_mb", default=DEFAULT_FEATURE_BUDGET_MB, min=0, max=1 << 20,
                             optional=True, tooltip="Most memory the captured features may take, in MiB; steps "
                             "that do not fit are recomputed during the transfer. The first 16 % of the steps "
                             "(before the official rearrange_start) are never kept: the transfer does not use them. "
                             f"{feature_memory_text()}."),
                io.Combo.Input("capture_layers", options=list(LAYER_CHOICES), default=TWO_FINEST, optional=True,
                               tooltip="Which decoder self-attention levels to keep: the ones Apply Appearance "
                               "Transfer edits (its layers input)."),
            ],
            outputs=[
                io.Custom(TRAJECTORY).Output(display_name="trajectory", tooltip="The stored path (latents and noise "
                                             "maps from the start step on); feed it to the Trajectory Sampler or the "
                                             "transfer nodes."),
                io.Latent.Output(display_name="start_latent", tooltip="The noisy latent at the start step, ready to "
                                 "sample: connect it to SamplerCustomAdvanced with DisableNoise."),
                io.Sigmas.Output(display_name="sigmas", tooltip="The schedule from the start step down to the clean "
                                 "end (the model's smallest sigma, kept above zero so the last step is exact)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None, skip_steps=None):
        """Refuses skip_steps >= steps when the prompt is queued, before any node runs."""
        return step_counts_problem(cls, "Invert Latent", steps, skip_steps) or True

    @classmethod
    def execute(cls, model, latent, positive, negative, steps, cfg, method, seed, skip_steps, capture_features=True,
                feature_budget_mb=DEFAULT_FEATURE_BUDGET_MB, capture_layers=TWO_FINEST) -> io.NodeOutput:
        check_choices(cls, "Invert Latent", method=method, capture_layers=capture_layers)
        return io.NodeOutput(*invert_latent(model, latent, positive, negative, steps, cfg, method, seed, skip_steps,
                                            capture_features, feature_budget_mb, capture_layers))


class TrajectorySampler(io.ComfyNode):
    """A SAMPLER that replays a trajectory's noise maps (rebuilds the inverted image)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrajectorySampler"),
            display_name="Trajectory Sampler (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "A sampler for SamplerCustom / SamplerCustomAdvanced that replays an inversion: with Invert Latent's "
                "start_latent and sigmas, DisableNoise and a CFGGuider at the inversion's cfg and prompts, it rebuilds "
                "the inverted image; with another prompt it edits it (edit-friendly DDPM)."
            ),
            inputs=[
                io.Custom(TRAJECTORY).Input("trajectory", tooltip="The trajectory output of Invert Latent whose noise "
                                            "maps are replayed."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler", tooltip="Connect to the sampler input of "
                                       "SamplerCustomAdvanced or SamplerCustom.")],
        )

    @classmethod
    def execute(cls, trajectory) -> io.NodeOutput:
        return io.NodeOutput(make_sampler(_replay, trajectory=trajectory))


NODES = [InvertLatent, TrajectorySampler]
