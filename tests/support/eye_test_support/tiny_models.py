"""Tiny random-weight SD1.5- and SDXL-shaped models built through ComfyUI's own classes.

The block layout is the real one (so block names, attention levels and transformer
depths match real checkpoints); only the widths are small, so a forward pass on a
64x64 latent takes milliseconds on a CPU. ComfyUI creates weights uninitialised, so
every parameter is filled here from a seeded generator: outputs are finite and the
same on every run.
"""

import math

import torch

SD15_CONTEXT_DIM = 64
SDXL_CONTEXT_DIM = 64
SDXL_POOLED_DIM = 1280


def sd15_unet_config():
    """SD1.5 layout (12 output blocks, attention at output 3-11), 32 base channels."""
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4,
        "model_channels": 32, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": SD15_CONTEXT_DIM, "num_heads": 8, "num_head_channels": -1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def sdxl_unet_config():
    """SDXL layout (attention at output 0-5, transformer depth 3 and 2), 32 base channels."""
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "dtype": torch.float32,
        "in_channels": 4, "model_channels": 32, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 3, 3],
        "channel_mult": [1, 2, 4], "transformer_depth_middle": 3, "use_linear_in_transformer": True,
        "context_dim": SDXL_CONTEXT_DIM, "num_heads": -1, "num_head_channels": 8,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 3, 3, 3],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def init_weights(module: torch.nn.Module, seed: int = 0, gain: float = 1.0):
    """Fill every parameter deterministically: fan-in scaled normals, unit norms, zero biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if param.ndim >= 2:
                fan_in = param[0].numel()
                value = torch.randn(param.shape, generator=generator) * (gain / math.sqrt(fan_in))
            elif leaf == "weight":  # norm scales
                value = torch.ones(param.shape)
            else:
                value = torch.randn(param.shape, generator=generator) * 0.01
            param.copy_(value.to(param.dtype))
    return module


# The final convolution of a random UNet is scaled down so that its epsilon prediction is
# small (std about 0.2), as a trained denoiser's residual is. Unscaled, the random network's
# large Jacobian amplifies float32 rounding step after step at CFG 3.5, which no real
# checkpoint does, and exactness tests would measure the random weights, not the pack.
OUTPUT_GAIN = 0.3


def init_unet(diffusion_model: torch.nn.Module, seed: int = 0):
    """init_weights for a UNet, with its output convolution scaled by OUTPUT_GAIN."""
    init_weights(diffusion_model, seed)
    with torch.no_grad():
        for name, param in diffusion_model.named_parameters():
            if name.startswith("out.") and param.ndim >= 2:
                param.mul_(OUTPUT_GAIN)
    return diffusion_model


def _patcher(base_model):
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        base_model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def tiny_sd15(seed: int = 0, prediction: str = "eps"):
    """A ModelPatcher around a tiny SD1.5-shaped comfy.model_base.BaseModel."""
    return _sd15(sd15_unet_config(), seed, prediction)


def _sd15(unet_config: dict, seed: int, prediction: str = "eps"):
    """A ModelPatcher around a comfy.model_base.BaseModel of SD1.5 type with this UNet configuration."""
    import comfy.model_base
    import comfy.supported_models

    config = comfy.supported_models.SD15(unet_config)
    model_type = {"eps": comfy.model_base.ModelType.EPS, "v": comfy.model_base.ModelType.V_PREDICTION}[prediction]
    base = comfy.model_base.BaseModel(config, model_type=model_type, device="cpu")
    init_unet(base.diffusion_model, seed)
    base.eval()
    return _patcher(base)


def tiny_sdxl(seed: int = 0):
    """A ModelPatcher around a tiny SDXL-shaped comfy.model_base.SDXL."""
    import comfy.model_base
    import comfy.supported_models

    config = comfy.supported_models.SDXL(sdxl_unet_config())
    base = comfy.model_base.SDXL(config, model_type=comfy.model_base.ModelType.EPS, device="cpu")
    init_unet(base.diffusion_model, seed)
    base.eval()
    return _patcher(base)


def conditioning(context_dim: int, seed: int, tokens: int = 77, pooled_dim: int | None = None, batch: int = 1):
    """A CONDITIONING list made without a text encoder: [[cross-attn tokens, extras]]."""
    generator = torch.Generator().manual_seed(seed)
    tokens_tensor = torch.randn((batch, tokens, context_dim), generator=generator)
    extras = {}
    if pooled_dim is not None:
        extras["pooled_output"] = torch.randn((batch, pooled_dim), generator=generator)
    return [[tokens_tensor, extras]]


def sd15_conds(seed: int = 0):
    """(positive, negative) CONDITIONING for the tiny SD1.5 model."""
    return conditioning(SD15_CONTEXT_DIM, seed), conditioning(SD15_CONTEXT_DIM, seed + 1000)


def sdxl_conds(seed: int = 0):
    """(positive, negative) CONDITIONING for the tiny SDXL model (pooled output included)."""
    return (conditioning(SDXL_CONTEXT_DIM, seed, pooled_dim=SDXL_POOLED_DIM),
            conditioning(SDXL_CONTEXT_DIM, seed + 1000, pooled_dim=SDXL_POOLED_DIM))


def vae_like_latent(batch: int = 1, height: int = 64, width: int = 64, seed: int = 0):
    """A smooth, non-zero raw VAE-space latent (what VAEEncode of a picture gives)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((batch, 4, max(height // 8, 1), max(width // 8, 1)), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth * 4.0 + 0.5 * torch.randn((batch, 4, height, width), generator=generator)


# --- Tiny text encoders and VAE (for CLIPTextEncode / VAEEncode / VAEDecode) ----------------
#
# Built through ComfyUI's own classes (comfy.sd.CLIP around sd1_clip / sdxl_clip models with
# the SD1 tokenizer shipped in comfy/sd1_tokenizer, comfy.sd.VAE around AutoencoderKL), so the
# real core nodes work on them unchanged. Only the widths are small.

SD15_CLIP_CONFIG = {  # overrides of comfy/sd1_clip_config.json (CLIP-L): hidden = UNet context
    "hidden_size": SD15_CONTEXT_DIM, "intermediate_size": 2 * SD15_CONTEXT_DIM,
    "num_attention_heads": 4, "num_hidden_layers": 3, "projection_dim": SD15_CONTEXT_DIM,
}
# SDXL: cross-attention tokens are [clip_l hidden | clip_g hidden]. The pooled output is
# clip_g's (square) projection, as wide as clip_g; the SDXL UNet's label embedding wants 1280,
# so the tiny model tiles its 32-wide pooled vector up to 1280 (a 1280-wide clip_g would need
# a 49408 x 1280 token table).
SDXL_CLIP_L_CONFIG = {
    "hidden_size": SDXL_CONTEXT_DIM // 2, "intermediate_size": SDXL_CONTEXT_DIM,
    "num_attention_heads": 2, "num_hidden_layers": 3, "projection_dim": SDXL_CONTEXT_DIM // 2,
}
SDXL_CLIP_G_CONFIG = dict(SDXL_CLIP_L_CONFIG)


def _tiny_clip(tokenizer_class, clip_class, model_options, seed):
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(tokenizer_class, clip_class)
    options = {"dtype": torch.float32, **model_options}
    clip = comfy.sd.CLIP(target, model_options=options)
    init_weights(clip.cond_stage_model, seed, gain=1.0)
    return clip


def tiny_sd15_clip(seed: int = 0):
    """A comfy.sd.CLIP (SD1 tokenizer, 3-layer CLIP-L layout) giving (1, 77, 64) conditioning."""
    import comfy.sd1_clip

    return _tiny_clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel,
                      {"clip_l_model_config": dict(SD15_CLIP_CONFIG)}, seed)


_TINY_SDXL_CLIP_CLASS = None


def _tiny_sdxl_clip_class():
    """comfy.sdxl_clip.SDXLClipModel whose pooled output is tiled to SDXL_POOLED_DIM."""
    global _TINY_SDXL_CLIP_CLASS
    if _TINY_SDXL_CLIP_CLASS is None:
        import comfy.sdxl_clip

        class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
            def encode_token_weights(self, token_weight_pairs):
                out = super().encode_token_weights(token_weight_pairs)
                pooled = out[1]
                repeats = -(-SDXL_POOLED_DIM // pooled.shape[-1])
                pooled = pooled.repeat(1, repeats)[:, :SDXL_POOLED_DIM]
                return (out[0], pooled) + tuple(out[2:])

        _TINY_SDXL_CLIP_CLASS = TinySDXLClipModel
    return _TINY_SDXL_CLIP_CLASS


def tiny_sdxl_clip(seed: int = 0):
    """A comfy.sd.CLIP with SDXL's clip_l + clip_g layout: (1, 77, 64) tokens, 1280 pooled."""
    import comfy.sdxl_clip

    return _tiny_clip(comfy.sdxl_clip.SDXLTokenizer, _tiny_sdxl_clip_class(),
                      {"clip_l_model_config": dict(SDXL_CLIP_L_CONFIG),
                       "clip_g_model_config": dict(SDXL_CLIP_G_CONFIG)}, seed)


def tiny_vae_ddconfig():
    """AutoencoderKL layout of SD1.5 (4 latent channels, 3 downsamples = factor 8), 32 wide."""
    return {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    }


def tiny_vae_state_dict(seed: int = 0):
    """Deterministic weights for tiny_vae_ddconfig() (keys as in an SD1.5 checkpoint's VAE)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    module = AutoencoderKL(ddconfig=tiny_vae_ddconfig(), embed_dim=4)
    # gain < 1 keeps the untrained decoder's output mostly inside [-1, 1] (no flat clamped image)
    init_weights(module, seed, gain=0.5)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def tiny_vae(seed: int = 0):
    """A comfy.sd.VAE (AutoencoderKL, downscale 8, 4 latent channels, fp32) with random weights."""
    import comfy.sd

    config = {"params": {"ddconfig": tiny_vae_ddconfig(), "embed_dim": 4}}
    vae = comfy.sd.VAE(sd=tiny_vae_state_dict(seed), config=config, dtype=torch.float32)
    vae.first_stage_model.requires_grad_(False)
    return vae


def full_sd15_unet_config():
    """The real SD1.5 UNet configuration (320 base channels, 768-d context): 860M parameters."""
    config = sd15_unet_config()
    config.update({"model_channels": 320, "context_dim": 768})
    return config


def full_sd15(seed: int = 0):
    """A ModelPatcher around a full-size SD1.5-architecture UNet with random weights (benchmarks)."""
    return _sd15(full_sd15_unet_config(), seed)


def benchmark_model(kind: str):
    """(ModelPatcher, context dim) for a benchmark: "sd15" is the full SD1.5 architecture, "tiny" the test model."""
    if kind == "sd15":
        return full_sd15(), 768
    return tiny_sd15(), SD15_CONTEXT_DIM
