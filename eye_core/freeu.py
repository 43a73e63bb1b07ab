"""FreeU as the authors' UNet applies it (docs/METHOD.md §7), in plain torch.

The authors run SD1.5 through a UNet that, at the entry of each decoder up-block (before
the skip connection is concatenated), scales the first half of the main path's channels
and damps its lowest frequencies: at 1280 channels (up-blocks 0-2) by b1 = 1.2 and a
Fourier filter of scale s1 = 0.9, at 640 channels (up-block 3) by b2 = 1.4 and s2 = 0.2.

ComfyUI's FreeU node is another operation: it scales the main path at *every* decoder
block of those widths and filters the *skip connection* instead. Both are kept: this one
for the official preset, ComfyUI's for whoever prefers it.
"""

from __future__ import annotations

import torch

AUTHORS_B1, AUTHORS_B2, AUTHORS_S1, AUTHORS_S2 = 1.2, 1.4, 0.9, 0.2
_DEVICES_WITHOUT_FFT: set[str] = set()  # device types whose torch.fft failed once: filtered on the CPU


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """``x`` (B, C, H, W) with its lowest spatial frequencies (a 2*threshold square around
    the centre of the shifted spectrum) multiplied by ``scale``; computed in float32."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    row, col = height // 2, width // 2
    weights = torch.ones(spectrum.shape[-2:], device=x.device)
    weights[max(row - threshold, 0):row + threshold, max(col - threshold, 0):col + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * weights, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def up_block_entries(num_res_blocks) -> set[int]:
    """Indices of the decoder blocks (ComfyUI's output_blocks) that start an up-block.

    ``num_res_blocks``: per encoder level, as in a UNet config (ComfyUI always stores the list); each
    decoder level has one block more than its encoder level, deepest level first.
    """
    if isinstance(num_res_blocks, int):
        raise ValueError("num_res_blocks must list the blocks of every encoder level (the UNet config's list); "
                         "one number does not say how many levels there are")
    counts = list(num_res_blocks)
    entries, index = set(), 0
    for count in reversed(counts):
        entries.add(index)
        index += count + 1
    return entries


class AuthorsFreeU:
    """The authors' FreeU on the main path at each up-block entry (see the module docstring).

    ``model_channels`` picks the widths like ComfyUI's FreeU: 4x is the b1/s1 level, 2x the
    b2/s2 level (SD1.5: 1280 and 640). Call with the main path ``h`` and the index of the
    decoder block it enters; returns a new tensor (``h`` is not modified).
    """

    def __init__(self, model_channels: int, num_res_blocks, b1=AUTHORS_B1, b2=AUTHORS_B2, s1=AUTHORS_S1,
                 s2=AUTHORS_S2):
        self.model_channels = int(model_channels)
        self.entries = tuple(sorted(up_block_entries(num_res_blocks)))
        self.b1, self.b2, self.s1, self.s2 = float(b1), float(b2), float(s1), float(s2)

    def settings_for(self, channels: int):
        """(backbone scale, filter scale) for a main path of ``channels``, or None for no change."""
        return {self.model_channels * 4: (self.b1, self.s1), self.model_channels * 2: (self.b2, self.s2)}.get(
            int(channels))

    def apply(self, h: torch.Tensor, block: int) -> torch.Tensor:
        settings = self.settings_for(h.shape[1]) if block in self.entries else None
        if settings is None:
            return h
        backbone, filter_scale = settings
        half = h.shape[1] // 2
        h = torch.cat([h[:, :half] * backbone, h[:, half:]], dim=1)
        if h.device.type in _DEVICES_WITHOUT_FFT:
            return fourier_filter(h.cpu(), threshold=1, scale=filter_scale).to(h.device)
        try:
            return fourier_filter(h, threshold=1, scale=filter_scale)
        except (RuntimeError, NotImplementedError) as error:
            if "out of memory" in str(error).lower():
                raise  # not a missing FFT: the caller's memory handling must see it
            # devices without torch.fft (some MPS builds): filter on the CPU, from now on without trying again
            _DEVICES_WITHOUT_FFT.add(h.device.type)
            return fourier_filter(h.cpu(), threshold=1, scale=filter_scale).to(h.device)
