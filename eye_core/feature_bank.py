"""Self-attention inputs kept per latent of a trajectory, for the transfer to reuse.

Edit-friendly inversion already runs the UNet at exactly the latents the reference and
structure pass through during the transfer, with the same prompt; keeping the decoder
self-attention inputs seen there saves the transfer two UNet passes per step. The bank
stores them in fp16 on the CPU (pinned where the UNet runs on CUDA) under a byte budget: a latent whose layers do
not fit is left out whole, and the transfer recomputes what is missing.
"""

from __future__ import annotations

import torch

COND, UNCOND = 0, 1

#: What one step of an SD1.5 image at 512 px (64x64 latent) keeps with the official layers, the two finest
#: decoder levels (output blocks 9-11: 64x64 tokens of 320 channels; 6-8: 32x32 tokens of 640 channels),
#: for the cond and the uncond row, in fp16: the one source of the memory figures in tooltips and README.
SD15_512_BYTES_PER_STEP = 2 * 2 * 3 * (64 * 64 * 320 + 32 * 32 * 640)


class FeatureBank:
    """Captured tokens keyed by (latent index in the trajectory, layer, cond/uncond)."""

    def __init__(self, layers, budget_bytes: int, device="cpu", dtype=torch.float16, start_index: int = 0,
                 pin_memory: bool = False):
        self.layers = frozenset(layers)
        self.start_index = int(start_index)  # latents before it are never kept (the transfer does not use them)
        self.budget = int(budget_bytes)
        self.device = torch.device(device)
        self.dtype = dtype
        self.pin_memory = bool(pin_memory) and self.device.type == "cpu"  # page-locked: fast, async copies to CUDA
        self._tokens = {}
        self._grids = {}
        self._pending = {}
        self._refused = set()
        self.nbytes = 0

    def __deepcopy__(self, memo):
        return self  # shared, never duplicated by ComfyUI's option copies

    # ---------------------------------------------------------------- writing

    def record(self, index: int, layer, kinds, tokens: torch.Tensor, grid) -> None:
        """Keep ``tokens`` (len(kinds) * B, N, C) of ``layer`` seen at latent ``index``.

        ``kinds`` is the host's cond/uncond code per chunk of rows. Records of one latent
        are held back until :meth:`commit` decides whether the whole latent fits.
        """
        if layer not in self.layers or index in self._refused or index < self.start_index:
            return
        rows = tokens.shape[0] // len(kinds)
        for chunk, kind in enumerate(kinds):
            part = tokens[chunk * rows:(chunk + 1) * rows].detach()
            if self.pin_memory:
                part = torch.empty(part.shape, dtype=self.dtype, pin_memory=True).copy_(part)
            else:
                part = part.to(self.device, self.dtype, copy=True)
            self._pending[(index, layer, int(kind))] = part
            self._grids[(index, layer, int(kind))] = tuple(grid)

    def commit(self, index: int) -> bool:
        """Store the pending records of latent ``index`` if they fit the budget; drop them otherwise."""
        keys = [key for key in self._pending if key[0] == index]
        size = sum(self._pending[key].nbytes for key in keys)
        fits = self.nbytes + size <= self.budget
        for key in keys:
            tensor = self._pending.pop(key)
            if fits:
                self._tokens[key] = tensor
            else:
                self._grids.pop(key, None)
        if fits:
            self.nbytes += size
        else:
            self._refused.add(index)
        return fits

    # ---------------------------------------------------------------- reading

    def get(self, index: int, layer, kind: int):
        """(tokens (B, N, C), grid (h, w)) captured at latent ``index``, or None."""
        key = (index, layer, int(kind))
        tokens = self._tokens.get(key)
        return None if tokens is None else (tokens, self._grids[key])

    def has(self, index: int, kind: int, layers) -> bool:
        """Whether every one of ``layers`` was captured at latent ``index`` for ``kind``."""
        return all((index, layer, int(kind)) in self._tokens for layer in layers)

    @property
    def indices(self) -> list:
        return sorted({key[0] for key in self._tokens})

    def clear(self) -> None:
        self._tokens.clear()
        self._grids.clear()
        self._pending.clear()
        self.nbytes = 0

    def summary(self) -> str:
        count = len(self.indices)
        return (f"{count} latents x {len(self.layers)} layers, {self.nbytes / 2**20:.1f} MiB of "
                f"{self.budget / 2**20:.0f} MiB budget" + (f"; {len(self._refused)} latents over budget "
                                                           "(recomputed during transfer)" if self._refused else ""))
