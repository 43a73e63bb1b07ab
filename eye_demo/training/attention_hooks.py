"""Training- and probe-only rewiring of the demo UNet's decoder self-attention for image pairs.

A batch of 2B rows holds B targets then their B partners (or references). While a
``PairedAttention`` is installed, each decoder self-attention (attn1) of the chosen output
blocks can, row by row for the targets:

- ``inject``: replace the target's attention input at its object tokens by the partner's,
  rearranged along a given token correspondence, before Q, K and V (the method's feature
  injection; with the exact correspondence, the probe's oracle);
- ``implicit``: take the queries from the target and the keys and values from the partner
  alone (Cross-Image Attention);
- ``cross``: take the keys and values from the target's own tokens and the partner's
  (how multi-view and video models learn to fetch appearance across views).

Partners always attend to themselves only. Nothing is stored in the weights: once the
context manager exits, the UNet is the stock ComfyUI UNetModel again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("plain", "inject", "implicit", "cross")


def decoder_attention(unet, blocks=None) -> list:
    """(output block index, attn1 module, ...) of every decoder self-attention (in ``blocks`` when given)."""
    found = []
    for index, block in enumerate(unet.output_blocks):
        if blocks is not None and index not in blocks:
            continue
        for layer in block:
            for transformer in getattr(layer, "transformer_blocks", []):
                found.append((index, transformer.attn1))
    return found


def _attend(attention, q, k, v, mask=None):
    heads = attention.heads
    b, n, inner = q.shape
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, inner // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, inner)


class PairedAttention:
    """Install with ``with PairedAttention(unet, blocks) as paired:``; set ``paired.configure(...)`` per call."""

    def __init__(self, unet, blocks=None):
        self.layers = decoder_attention(unet, blocks)
        if not self.layers:
            raise ValueError(f"the UNet has no decoder self-attention in output blocks {blocks}")
        self.pairs = 0
        self.modes = None
        self.index = {}

    def configure(self, pairs: int = 0, modes=None, index: dict | None = None):
        """``pairs`` targets then ``pairs`` partners; ``modes``: one of MODES per target (a str for all);
        ``index``: token count -> (pairs, tokens) long tensor of partner tokens (-1: keep), for ``inject``."""
        if isinstance(modes, str):
            modes = [modes] * pairs
        if modes is not None and any(m not in MODES for m in modes):
            raise ValueError(f"modes must be among {MODES}, got {sorted(set(modes))}")
        self.pairs, self.modes, self.index = pairs, modes, index or {}

    def __enter__(self):
        self._originals = []
        for _, attention in self.layers:
            self._originals.append(attention.forward)
            attention.forward = self._wrap(attention, attention.forward)
        return self

    def __exit__(self, *exc):
        for (_, attention), original in zip(self.layers, self._originals):
            attention.forward = original
        return False

    def _wrap(self, attention, original):
        def forward(x, context=None, value=None, mask=None, transformer_options={}):
            modes = self.modes
            if not self.pairs or modes is None or all(m == "plain" for m in modes) or context is not None:
                return original(x, context=context, value=value, mask=mask, transformer_options=transformer_options)
            return self._paired(attention, x)
        return forward

    def _paired(self, attention, x):
        b = self.pairs
        if x.shape[0] != 2 * b:
            raise ValueError(f"a paired batch has 2 x {b} rows, the attention got {x.shape[0]}")
        target, partner = x[:b], x[b:]
        tokens = target.shape[1]
        modes = self.modes
        inject = torch.tensor([m == "inject" for m in modes], device=x.device)
        if inject.any():
            if tokens not in self.index:
                raise ValueError(f"no correspondence for the {tokens}-token grid")
            index = self.index[tokens].to(x.device)
            keep = (index < 0) | ~inject[:, None]
            gathered = partner.gather(1, index.clamp(min=0)[..., None].expand(-1, -1, target.shape[2]))
            target = torch.where(keep[..., None], target, gathered.to(target.dtype))
        q = attention.to_q(target)
        own_k, own_v = attention.to_k(target), attention.to_v(target)
        partner_k, partner_v = attention.to_k(partner), attention.to_v(partner)
        implicit = torch.tensor([m == "implicit" for m in modes], device=x.device)
        cross = torch.tensor([m == "cross" for m in modes], device=x.device)
        # keys [own | partner]; each row masks what its mode must not see
        k = torch.cat([own_k, partner_k], dim=1)
        v = torch.cat([own_v, partner_v], dim=1)
        sees_own = ~implicit
        sees_partner = implicit | cross
        visible = torch.cat([sees_own[:, None].expand(-1, tokens), sees_partner[:, None].expand(-1, tokens)], dim=1)
        out_target = _attend(attention, q, k, v, visible[:, None, None, :])
        out_partner = _attend(attention, attention.to_q(partner), partner_k, partner_v)
        return attention.to_out(torch.cat([out_target, out_partner]))
