"""Differentiable first-token cross-attention maps of a ComfyUI UNet, for finding points (eye_core.points).

ComfyUI runs nodes under ``torch.inference_mode`` and a checkpoint loaded by a node holds
inference tensors, which autograd cannot save for backward. So the probe leaves the model's
weights alone: the UNet runs on a detached copy of the embedding, and at the probed
cross-attention layers an ``attn2_patch`` computes the first token's attention map itself,
from the layer's query input and the embedding, through copies of that layer's ``to_q`` and
``to_k`` weights made once (plain tensors, no gradient of their own). The gradient reaches the
embedding through those layers' keys; the path from earlier layers' outputs into later
queries is left out (the UNet runs without a graph, the queries are detached), which keeps
the memory to a few maps and never asks autograd about the model's own parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from comfy.ldm.modules.attention import SpatialTransformer

from .patches import PackPatch
from .sampling import make_sampler, sample_with_cfg
from .unet_layout import layer_key, token_grid, unet


def cross_attention_layers(model) -> list:
    """Every cross-attention layer key ``((part, number), depth)`` in the UNet's order: encoder, middle, decoder."""
    network = unet(model)
    parts = [(("input", i), block) for i, block in enumerate(network.input_blocks)]
    parts.append((("middle", 0), network.middle_block))
    parts += [(("output", i), block) for i, block in enumerate(network.output_blocks)]
    keys = []
    for name, block in parts:
        for module in block:
            if isinstance(module, SpatialTransformer):
                keys += [(name, depth) for depth, inner in enumerate(module.transformer_blocks)
                         if getattr(inner, "attn2", None) is not None]
    return keys


def hedlin_layers(model) -> list:
    """The layers the authors of the point method read: around the UNet's middle.

    Their SD1.5 layers 5-8 of 16 (counted encoder, middle, decoder) are the last encoder
    layer, the middle block's and the first two decoder layers: the same rule serves any UNet
    (SDXL: the last depth of input block 8, the middle block's first, output block 0's first two).
    """
    keys = cross_attention_layers(model)
    middle = [i for i, ((part, _), _) in enumerate(keys) if part == "middle"]
    if not middle:
        raise ValueError("this UNet has no cross-attention in its middle block; the point finder needs one")
    first, last = middle[0], middle[-1]
    chosen = keys[max(0, first - 1):first + 1] + keys[last + 1:last + 3]
    return chosen


def _module(model, key):
    (part, number), depth = key
    network = unet(model)
    block = network.middle_block if part == "middle" else \
        (network.input_blocks if part == "input" else network.output_blocks)[number]
    for module in block:
        if isinstance(module, SpatialTransformer):
            return module.transformer_blocks[depth].attn2
    raise ValueError(f"{part} block {number} has no cross-attention")


class AttentionProbe(PackPatch):
    """An ``attn2_patch`` that keeps, for the probed layers, the map of one text token (differentiable).

    Set ``context`` (1, tokens, dim) before a UNet call; read ``maps`` after it (one (B, h, w)
    per probed layer, in call order) and clear them. It changes nothing the UNet computes.
    """

    def __init__(self, weights: dict, token: int = 1):
        self.weights = weights
        self.token = token
        self.context = None
        self.maps = []

    def __call__(self, n, context, value, extra_options):
        key = layer_key(extra_options)
        if self.context is not None and key in self.weights:
            with torch.enable_grad():  # the UNet itself runs without a graph; only this map has one
                self._keep(key, n, extra_options)
        return n, context, value

    def _keep(self, key, n, extra_options):
        to_q, to_k, heads = self.weights[key]
        q = F.linear(n.detach().float(), to_q.to(n.device))
        k = F.linear(self.context.to(n.device, torch.float32), to_k.to(n.device))
        batch, tokens, inner = q.shape
        d = inner // heads
        q = q.reshape(batch, tokens, heads, d).transpose(1, 2)
        k = k.reshape(k.shape[0], -1, heads, d).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)[..., self.token].mean(dim=1)
        self.maps.append(probs.reshape(batch, *token_grid(extra_options, tokens)))


def attention_probe(model, layers=None, token: int = 1):
    """(a clone of ``model`` carrying the probe, the probe): the model itself is not touched."""
    layers = hedlin_layers(model) if layers is None else list(layers)
    with torch.inference_mode(False):
        weights = {}
        for key in layers:
            attention = _module(model, key)
            weights[key] = (attention.to_q.weight.detach().float().clone(),
                            attention.to_k.weight.detach().float().clone(), attention.heads)
    probe = AttentionProbe(weights, token)
    patched = model.clone()
    patched.set_model_attn2_patch(probe)
    return patched, probe


def attention_maps(patched, probe: AttentionProbe, conditioning_extras: dict, sigma: float, noise,
                   seed: int = 0):
    """``attention(latent, context) -> (L, h, w)``: the probed layers' maps for a raw latent noised by ``sigma * noise``.

    ``noise``: a tensor of the latent's shape (the same noise every call), or a
    ``torch.Generator`` drawing fresh standard normal noise for every call (as the authors
    draw new noise at every optimisation step).

    The UNet runs through ComfyUI's guider (cfg 1, the embedding as the only conditioning,
    with ``conditioning_extras`` such as SDXL's pooled output), so the model's patches apply as
    in sampling; maps of every layer are resized to the finest probed grid.
    """

    def attention(latent, context):
        probe.maps.clear()
        probe.context = context

        def run(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
            extra_args = {} if extra_args is None else extra_args
            drawn = torch.randn(x.shape, generator=noise) if isinstance(noise, torch.Generator) else noise
            noisy = x + sigmas[0] * drawn.to(x.device, x.dtype)
            model_fn(noisy, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
            return x

        positive = [[context.detach(), dict(conditioning_extras)]]
        sigmas = torch.tensor([float(sigma), 0.0])
        # no graph through the UNet (its weights may be inference tensors, and may want grads):
        # the probe builds the maps' own graph inside
        with torch.inference_mode(False), torch.no_grad():
            sample_with_cfg(patched, positive, positive, 1.0, latent.detach().clone(), make_sampler(run), sigmas, seed)
            maps = list(probe.maps)
        probe.maps.clear()
        probe.context = None
        if not maps:
            raise ValueError("no probed cross-attention layer ran: a model patch replaced the UNet's cross-attention")
        size = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        resized = [m if tuple(m.shape[-2:]) == size else
                   F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for m in maps]
        return torch.stack([m[0] for m in resized])

    return attention
