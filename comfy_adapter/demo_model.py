"""The demo model's UNet, VAE and text encoder built from ComfyUI's own classes (eye_demo.model has their configs).

The UNet goes through ``comfy.supported_models.SD15`` on ComfyUI's devices and dtype, the
VAE is a ``comfy.sd.VAE`` and the text encoder a ``comfy.sd.CLIP``: what Load Checkpoint
would give for an SD1.5 file, so every stock node works with them.
"""

from __future__ import annotations

import math

import torch

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..eye_demo.model import (CLIP_CONFIG, CLIP_SEED, UNET_CONFIG, VAE_DDCONFIG, WEIGHTS, read_checkpoint,
                              unet_config)


def _reset(module: torch.nn.Module) -> torch.nn.Module:
    """Initialise every layer as torch would.

    ComfyUI's ``disable_weight_init`` layers override ``reset_parameters`` with a no-op (a
    checkpoint overwrites them anyway); training from scratch needs torch's own
    initialisation, so the first torch.nn class in each layer's MRO that defines it is called.
    """
    for layer in module.modules():
        for cls in type(layer).__mro__:
            if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(layer)
                break
    return module


def build_unet(dtype=torch.float32) -> torch.nn.Module:
    """A freshly initialised demo UNet (ComfyUI's UNetModel) for training."""
    config = {k: v for k, v in UNET_CONFIG.items() if k not in ("adm_in_channels",)}
    return _reset(UNetModel(**config, dtype=dtype, operations=comfy.ops.disable_weight_init))


def build_vae_module() -> torch.nn.Module:
    """A freshly initialised demo VAE (ComfyUI's AutoencoderKL) for training."""
    return _reset(AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4))


def _clip_target():
    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)


def _clip_options(dtype=torch.float32):
    return {"dtype": dtype, "clip_l_model_config": dict(CLIP_CONFIG)}


def build_clip():
    """The demo text encoder, initialised from CLIP_SEED (frozen: it is never trained)."""
    clip = comfy.sd.CLIP(_clip_target(), model_options=_clip_options())
    generator = torch.Generator().manual_seed(CLIP_SEED)
    with torch.no_grad():
        for name, param in clip.cond_stage_model.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[-1]))
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    return clip


def encode_prompts(clip, prompts: list[str]) -> torch.Tensor:
    """(N, 77, CONTEXT_DIM) cross-attention tokens, exactly what CLIPTextEncode gives."""
    rows = []
    for prompt in prompts:
        tokens = clip.tokenize(prompt)
        rows.append(clip.encode_from_tokens(tokens))
    return torch.cat(rows)


def load_model(unet_state: dict):
    """A ModelPatcher around an SD1.5-type BaseModel with the demo UNet, on ComfyUI's devices and dtype."""
    config = comfy.supported_models.SD15(unet_config())
    load_device = comfy.model_management.get_torch_device()
    parameters = sum(v.numel() for v in unet_state.values())
    unet_dtype = comfy.model_management.unet_dtype(model_params=parameters,
                                                   supported_dtypes=list(config.supported_inference_dtypes))
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, manual_cast)
    initial_device = comfy.model_management.unet_inital_load_device(parameters, unet_dtype)
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=initial_device)
    missing, unexpected = base.diffusion_model.load_state_dict(
        {k: v.to(unet_dtype) for k, v in unet_state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"the demo UNet's weights do not fit its layout (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): the weights file is damaged or from another version of the pack")
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def load_vae(vae_state: dict):
    """A comfy.sd.VAE around the demo AutoencoderKL."""
    config = {"params": {"ddconfig": dict(VAE_DDCONFIG), "embed_dim": 4}}
    vae = comfy.sd.VAE(sd={k: v.float() for k, v in vae_state.items()}, config=config)
    return vae


def load_clip(clip_state: dict):
    """A comfy.sd.CLIP with the demo text encoder's weights."""
    clip = comfy.sd.CLIP(_clip_target(), model_options=_clip_options())
    missing, unexpected = clip.load_sd({k: v.float() for k, v in clip_state.items()}, full_model=True)
    missing = [k for k in missing if "logit_scale" not in k and "text_projection" not in k]
    if missing:
        raise ValueError(f"the demo text encoder's weights are incomplete (missing {missing[:3]})")
    return clip


def load_demo(path=WEIGHTS):
    """(MODEL, CLIP, VAE, metadata) of the shipped demo model."""
    unet_state, vae_state, clip_state, metadata = read_checkpoint(path)
    return load_model(unet_state), load_clip(clip_state), load_vae(vae_state), metadata


def text_to_image(model, clip, prompt: str, count: int, seed: int = 0, steps: int = 30, cfg: float = 4.0,
                  sampler: str = "euler_ancestral", scheduler: str = "normal", negative: str = "") -> torch.Tensor:
    """``count`` raw latents sampled from ``prompt`` by ComfyUI's own KSampler code path (common_ksampler)."""
    import nodes

    def encode(text):
        return [[clip.encode_from_tokens(clip.tokenize(text)), {}]]

    latent = {"samples": torch.zeros(count, 4, UNET_CONFIG["image_size"], UNET_CONFIG["image_size"])}
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, encode(prompt), encode(negative),
                                   latent)
    return out["samples"]
