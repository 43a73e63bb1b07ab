"""Checks that a model, its prompts and its latents are what the method can work with.

Each raises a ValueError that names the node and says what to connect instead, before
ComfyUI would fail deep inside the UNet with a raw shape error.
"""

from __future__ import annotations

import torch

import comfy.model_base
import comfy.model_sampling
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from .progress import warn_user


SUPPORTED_FAMILIES = "SD1.x, SD2.x or SDXL"


class UnsupportedModelError(ValueError):
    """The MODEL is not a UNet latent diffusion model with a discrete noise schedule."""

    __module__ = "eye_for_an_eye"  # ComfyUI shows module.Class: not the install path of the pack


FAMILY_NAMES = {"SD15": "SD1.x", "SD20": "SD2.x", "SD21UnclipL": "SD2.x unCLIP", "SD21UnclipH": "SD2.x unCLIP",
                 "SDXL": "SDXL", "SDXLRefiner": "SDXL refiner", "SSD1B": "SSD-1B", "Segmind_Vega": "Segmind Vega",
                 "KOALA_700M": "KOALA", "KOALA_1B": "KOALA", "SD15_instructpix2pix": "SD1.x InstructPix2Pix",
                 "SDXL_instructpix2pix": "SDXL InstructPix2Pix"}


def model_family(model) -> str:
    """What users call the model's family ("SD1.x", "SDXL"), read from its model config."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else type(getattr(model, "model", model)).__name__
    return FAMILY_NAMES.get(name, name)


def _sampling_in_words(sampling) -> str:
    """What a model_sampling object does, in the words of the nodes that set it (never its class name)."""
    if isinstance(sampling, (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.ModelSamplingFlux)) \
            or isinstance(sampling, comfy.model_sampling.CONST):
        return ("flow matching (rectified flow) sampling, as set by ModelSamplingSD3, ModelSamplingAuraFlow or "
                "ModelSamplingFlux")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM):
        return ("continuous (EDM-style) sigmas, as set by ModelSamplingContinuousEDM or ModelSamplingContinuousV")
    return "a noise schedule other than the discrete 1000-step one of Stable Diffusion"


def require_unet(model, node: str):
    """Raise a clear error unless ``model`` is a UNet model with an epsilon/v discrete schedule."""
    base = getattr(model, "model", None)
    diffusion = getattr(base, "diffusion_model", None)
    sampling = model.get_model_object("model_sampling") if base is not None else None
    if not isinstance(diffusion, UNetModel):
        config = type(getattr(base, "model_config", None)).__name__
        kind = type(diffusion if diffusion is not None else model).__name__ if config in FAMILY_NAMES else \
            model_family(model)
        raise UnsupportedModelError(
            f"{node}: this MODEL is a {kind} model, not a UNet Stable Diffusion model (Flux, SD3 and other "
            f"DiT-style models are not supported). Load an {SUPPORTED_FAMILIES} checkpoint."
        )
    if not isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) or not isinstance(
        sampling, comfy.model_sampling.EPS
    ):
        raise UnsupportedModelError(
            f"{node}: this MODEL uses {_sampling_in_words(sampling)}. The method needs the discrete noise schedule "
            f"Stable Diffusion checkpoints come with: remove that node from the model's path, or load an "
            f"{SUPPORTED_FAMILIES} checkpoint."
        )
    return sampling


def check_conditioning(model, conditioning, input_name: str, node: str) -> None:
    """Raise a clear error when a CONDITIONING was not made for this model (another text encoder).

    ComfyUI itself fails deep inside the UNet with a matrix-shape error (or a missing
    'pooled_output'); here the node names the input and what to connect instead.
    """
    unet_config = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    width = unet_config.get("context_dim")
    family = model_family(model)
    needs_pooled = isinstance(model.model, (comfy.model_base.SDXL, comfy.model_base.SDXLRefiner))
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{node}: {input_name} is empty; connect the CONDITIONING of a CLIPTextEncode node.")
    for entry in conditioning:
        tokens = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        extras = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
        if not torch.is_tensor(tokens) or tokens.ndim != 3:
            raise ValueError(f"{node}: {input_name} is not a text conditioning (CLIPTextEncode's CONDITIONING).")
        if width is not None and int(tokens.shape[-1]) != int(width):
            raise ValueError(
                f"{node}: {input_name} was encoded for another model: its tokens are {tokens.shape[-1]} wide but "
                f"this {family} model takes {width}. Encode the prompt with the CLIP of the same checkpoint as the "
                "model (CLIPTextEncode with that Load Checkpoint's CLIP output).")
        if needs_pooled and extras.get("pooled_output") is None and "unclip_conditioning" not in extras:
            raise ValueError(
                f"{node}: {input_name} has no pooled text embedding, which {family} models need: it was encoded by "
                f"another model's text encoder (SD1.x?). Encode the prompt with the CLIP of the same checkpoint as "
                "the model (CLIPTextEncode with that Load Checkpoint's CLIP output).")


def check_sampler_conditioning(sampler_model, node: str) -> None:
    """In a SAMPLER function: the guider's prompts must fit its model (else a raw matrix-shape error).

    ComfyUI hands the sampler a wrapper around the guider (CFGGuider, ...); the guider keeps
    its model and its prompts as given (``original_conds``). Nothing to check when they
    cannot be found.
    """
    guider = getattr(sampler_model, "inner_model", None)
    patcher = getattr(guider, "model_patcher", None)
    conds = getattr(guider, "original_conds", None)
    if patcher is None or not isinstance(conds, dict):
        return
    for name, entries in conds.items():
        if not entries or not all(isinstance(e, dict) and torch.is_tensor(e.get("cross_attn")) for e in entries):
            continue
        check_conditioning(patcher, [[e["cross_attn"], e] for e in entries], f"the guider's {name} conditioning",
                           node)


def check_latent_channels(model, samples: torch.Tensor, node: str) -> None:
    """A latent of another model family (16 channels into SD1.5, say) is refused before the UNet's raw conv error."""
    expected = getattr(getattr(model.model, "latent_format", None), "latent_channels", None)
    if expected is not None and samples.ndim == 4 and int(samples.shape[1]) != int(expected):
        raise ValueError(
            f"{node}: the latent has {samples.shape[1]} channels but this {model_family(model)} model takes "
            f"{expected}: it was encoded by another model's VAE. Encode the image with the VAE of the same checkpoint "
            "as the model (VAEEncode with that Load Checkpoint's VAE output).")


def check_guidance(plans, cfg, node: str) -> None:
    """Refuse guidance and cfg that leave nothing of the method; warn where they silence a part of it."""
    from ..eye_core.rearrange import guidance_problem

    for plan in plans:
        found = guidance_problem(plan.guidance, cfg)
        if found is None:
            continue
        kind, text = found
        if kind == "refuse":
            raise ValueError(f"{node}: {plan.node}'s {text}")
        warn_user(node, f"{plan.node}'s {text}")
