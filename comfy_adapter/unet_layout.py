"""The UNet's layout: decoder blocks, self-attention layers, token grids, and one block's output.

Everything is found from the model's modules (never from a model name), so SD1.x, SD2.x
and SDXL need no table.
"""

from __future__ import annotations

import torch

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, Upsample

from .sampling import make_sampler, sample_with_cfg


def unet(model) -> UNetModel:
    return model.model.diffusion_model


def output_block_count(model) -> int:
    """How many decoder (output) blocks the UNet has: 12 for SD1.x/SD2.x, 9 for SDXL."""
    return len(unet(model).output_blocks)


def dift_output_block(model) -> int:
    """The decoder block whose output DIFT reads, found from the layout (not from a model name).

    DIFT's ``up_ft_index = 1`` on SD1.5 is the output of the first decoder level that has
    attention, after its upsample (output block 5: 1280 channels at 1/16 of the image).
    The same rule on SDXL gives output block 2 (1280 channels, also 1/16 of the image).
    """
    blocks = unet(model).output_blocks
    seen_attention = False
    for index, block in enumerate(blocks):
        seen_attention = seen_attention or any(isinstance(layer, SpatialTransformer) for layer in block)
        if seen_attention and any(isinstance(layer, Upsample) for layer in block):
            return index
    return len(blocks) - 1


def decoder_attention_levels(model) -> list:
    """Decoder self-attention layers grouped by resolution level, **finest first**.

    Each level is a list of layer keys ``(("output", block), depth_index)``, the names
    ComfyUI's attention patches see (``extra_options["block"]``, ``["block_index"]``).
    Found from the UNet's layout: a level ends at a block with an upsample. SD1.5 gives
    [output 9-11], [6-8], [3-5]; SDXL [output 3-5 (depth 2)], [0-2 (depth 10)].
    """
    levels, current = [], []
    for index, block in enumerate(unet(model).output_blocks):
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                current.extend((("output", index), depth) for depth in range(len(layer.transformer_blocks)))
        if any(isinstance(layer, Upsample) for layer in block) or index == len(unet(model).output_blocks) - 1:
            if current:
                levels.append(current)
            current = []
    return levels[::-1]


def attention_grids(model, layers, latent_size) -> set:
    """The token grids (h, w) the decoder self-attention ``layers`` see on a latent of ``latent_size`` (H, W).

    A decoder block's attention runs at the latent size halved (rounding up, as the
    encoder's strided convolutions do) once per upsample still ahead of it, its own included.
    """
    blocks = unet(model).output_blocks
    upsamples = [any(isinstance(layer, Upsample) for layer in block) for block in blocks]
    grids = set()
    for (_, number), _depth in layers:
        height, width = (int(s) for s in latent_size)
        for _ in range(sum(upsamples[number:])):
            height, width = -(-height // 2), -(-width // 2)
        grids.add((height, width))
    return grids


def attention_module(model, layer):
    """The self-attention module (``attn1``) of a layer key ``(("output", block), depth)``."""

    (_, number), depth = layer
    for part in unet(model).output_blocks[number]:
        if isinstance(part, SpatialTransformer):
            return part.transformer_blocks[depth].attn1
    raise ValueError(f"output block {number} has no self-attention")


def layer_key(extra_options):
    block = extra_options.get("block")
    return None if block is None else ((block[0], block[1]), extra_options.get("block_index", 0))


def token_grid(extra_options, tokens: int):
    """(h, w) token grid of a self-attention call, from the activation shape (any aspect ratio)."""
    shape = extra_options.get("activations_shape")
    if shape is not None and shape[-2] * shape[-1] == tokens:
        return (int(shape[-2]), int(shape[-1]))
    original = extra_options.get("original_shape")
    height, width = original[-2], original[-1]
    for factor in (1, 2, 4, 8, 16, 32, 64):
        h, w = -(-height // factor), -(-width // factor)
        if h * w == tokens:
            return (h, w)
    raise ValueError(f"cannot tell the token grid of a {tokens}-token attention call on a {height}x{width} latent: "
                     "a model patch changed the self-attention's tokens (Token Merging (ToMe) or HyperTile merge or "
                     "tile them), which the transfer cannot work with. Remove that patch from the model.")


class _Captured(Exception):
    """Raised from a hook once the wanted activation is in hand: the rest of the UNet is skipped."""


def unet_block_output(model, positive, latent, sigma: float, noise: torch.Tensor, block: int, seed: int,
                      node: str = "Extract UNet Features"):
    """The output of decoder block ``block`` for ``latent + sigma * noise``, with the positive prompt only.

    ``latent`` is a raw VAE latent (rows laid out as the caller wants them batched);
    ``noise`` has its shape. The UNet runs through ComfyUI's guider (cfg 1: cond only), so
    model patches and the conditioning's extras (SDXL's pooled output) apply as in
    sampling. The pass **stops right after the block**: the later decoder blocks, the
    most expensive ones at full resolution, are not needed.
    """
    network = unet(model)
    if not 0 <= block < len(network.output_blocks):
        raise ValueError(f"this UNet has output blocks 0 to {len(network.output_blocks) - 1}; block {block} does not exist")
    captured = {}

    def hook(module, args, output):
        captured["features"] = output
        raise _Captured()

    def capture(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        handle = network.output_blocks[block][-1].register_forward_hook(hook)
        try:
            noisy = x + sigmas[0] * noise.to(x.device, x.dtype)
            with torch.no_grad():  # ComfyUI runs nodes in inference mode; called from elsewhere, keep no graph
                model_fn(noisy, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "features" not in captured:
            raise ValueError(f"{node}: output block {block} did not run: a model patch replaced the UNet's forward "
                             "pass; extract features from the model without that patch.")
        return x

    sigmas = torch.tensor([float(sigma), 0.0])
    sample_with_cfg(model, positive, positive, 1.0, latent, make_sampler(capture), sigmas, seed)
    return captured["features"]


def pixels_per_latent(model) -> int:
    """How many image pixels one latent pixel covers for this model (8 for SD1.x, SD2.x and SDXL).

    ComfyUI keeps the factor on the VAE, not on the model; a latent format that names it
    (``spacial_downscale_ratio``, newer ComfyUI) is believed, the SD families' 8 otherwise.
    """
    latent_format = getattr(getattr(model, "model", None), "latent_format", None)
    return int(getattr(latent_format, "spacial_downscale_ratio", 8))
