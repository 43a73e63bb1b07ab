"""The demo model: a small SD1.5-family UNet, KL VAE and text encoder, and its one weights file.

This module holds the three networks' configurations, the checkpoint's key layout and its
reading and writing; comfy_adapter.demo_model builds the networks from ComfyUI's own classes
(so every stock node, CLIPTextEncode, KSampler, VAEDecode, ..., works with them) and loads
the file back as (MODEL, CLIP, VAE).

- UNet: ``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel`` through
  ``comfy.supported_models.SD15`` (epsilon prediction, SD1.5's scaled-linear schedule),
  64 base channels, levels x1 x2 x2, one res block per level, self- and cross-attention
  at every level (16x16, 8x8 and 4x4 tokens for a 128 px image).
- VAE: ``comfy.ldm.models.autoencoder.AutoencoderKL`` (downscale 8, 4 latent channels),
  scaled so its latents times SD1.5's 0.18215 have unit variance, as SD1.5's do. 96 base
  channels (not fewer: its GroupNorm has 32 groups, and with one or two channels a group it
  normalises away the absolute colour of flat regions, which this world is made of), one
  res block a level in the decoder and none in the encoder (besides the middle block).
- Text encoder: ``comfy.sd1_clip.SD1ClipModel`` with SD1.5's tokenizer, 2 layers of width
  32, random and frozen (the prompt only has to name the species).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

# EYE_DEMO_WEIGHTS points the loader at another file (a retrained model, say).
WEIGHTS = Path(os.environ.get("EYE_DEMO_WEIGHTS") or Path(__file__).resolve().parent / "weights" /
               "eye_demo_model.safetensors")
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model."
IMAGE_SIZE = 128
CONTEXT_DIM = 32
SD15_LATENT_SCALE = 0.18215

UNET_CONFIG = {
    "use_checkpoint": False, "image_size": IMAGE_SIZE // 8, "in_channels": 4, "out_channels": 4,
    "model_channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1], "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "context_dim": CONTEXT_DIM, "num_heads": -1, "num_head_channels": 32, "legacy": False,
    "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
}
VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": IMAGE_SIZE, "in_channels": 3, "out_ch": 3,
    "ch": 96, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 0, "attn_resolutions": [], "dropout": 0.0,
}
CLIP_CONFIG = {  # overrides of ComfyUI's CLIP-L configuration
    "hidden_size": CONTEXT_DIM, "intermediate_size": 2 * CONTEXT_DIM, "num_attention_heads": 2,
    "num_hidden_layers": 2, "projection_dim": CONTEXT_DIM,
}
CLIP_SEED = 20240611


def latent_scale_for(raw_latents: torch.Tensor) -> float:
    """Factor k making k * raw latents have SD1.5's spread (std 1 / 0.18215)."""
    return float((1.0 / SD15_LATENT_SCALE) / raw_latents.float().std())


def rescale_vae_latents(vae_module: torch.nn.Module, k: float) -> None:
    """Make ``vae_module``'s latents k times larger, exactly: the decoder undoes it.

    The encoder's 1x1 ``quant_conv`` gives (mean, logvar): scale the mean rows by k, add
    2 log k to the logvar bias; the decoder's 1x1 ``post_quant_conv`` gets 1/k on its input.
    """
    with torch.no_grad():
        channels = vae_module.quant_conv.out_channels // 2
        vae_module.quant_conv.weight[:channels] *= k
        vae_module.quant_conv.bias[:channels] *= k
        vae_module.quant_conv.bias[channels:] += 2 * math.log(k)
        vae_module.post_quant_conv.weight /= k


# ---------------------------------------------------------------- one file for all three

def save_checkpoint(path, unet_state: dict, vae_state: dict, clip_state: dict, metadata: dict,
                    dtype=torch.float16) -> None:
    """Write UNet, VAE and text encoder (SD checkpoint key layout) and ``metadata`` (JSON values)."""
    from safetensors.torch import save_file

    tensors = {}
    for prefix, state in ((UNET_PREFIX, unet_state), (VAE_PREFIX, vae_state), (CLIP_PREFIX, clip_state)):
        for key, value in state.items():
            value = value.detach().to("cpu")
            tensors[prefix + key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"eye_demo": json.dumps(metadata, sort_keys=True)})


def read_checkpoint(path=WEIGHTS) -> tuple[dict, dict, dict, dict]:
    """(unet_state, vae_state, clip_state, metadata) from a file written by save_checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the demo model's weights are missing at {path}. They ship with the pack; reinstall it, or train them "
            "with `python -m eye_demo.training.train_vae` and `python -m eye_demo.training.train_unet`.")
    states = {UNET_PREFIX: {}, VAE_PREFIX: {}, CLIP_PREFIX: {}}
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("eye_demo", "{}"))
        for key in handle.keys():
            for prefix, state in states.items():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = handle.get_tensor(key)
    return states[UNET_PREFIX], states[VAE_PREFIX], states[CLIP_PREFIX], metadata


def unet_config() -> dict:
    """The UNet configuration ComfyUI's SD15 model class takes."""
    return dict(UNET_CONFIG)


