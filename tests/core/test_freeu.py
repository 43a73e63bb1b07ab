"""The authors' FreeU (eye_core.freeu) against a direct transcription of what their UNet does."""

import pytest
import torch

from eye_for_an_eye.eye_core.freeu import AuthorsFreeU, fourier_filter, up_block_entries


def _their_filter(x, threshold, scale):
    """The authors' Fourier_filter, transcribed (their mask lives on CUDA; here on x's device)."""
    freq = torch.fft.fftshift(torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1))
    b, c, h, w = freq.shape
    mask = torch.ones((b, c, h, w))
    crow, ccol = h // 2, w // 2
    mask[..., crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = scale
    return torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real


def _their_up_block_entry(sample):
    """What their UNet does to the main path before each up-block of SD1.5 (1280 and 640 channels)."""
    sample = sample.clone()
    if sample.shape[1] == 1280:
        sample[:, :640] *= 1.2
        sample = _their_filter(sample, threshold=1, scale=0.9)
    if sample.shape[1] == 640:
        sample[:, :320] *= 1.4
        sample = _their_filter(sample, threshold=1, scale=0.2)
    return sample


def test_fourier_filter_is_theirs_on_random_tensors():
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 8, 8), (1, 4, 7, 12), (1, 2, 1, 5)):
        x = torch.randn(shape, generator=generator)
        for scale in (0.9, 0.2):
            assert torch.allclose(fourier_filter(x, 1, scale), _their_filter(x, 1, scale), atol=1e-5)
    half = torch.randn(1, 2, 8, 8, generator=generator).half()
    assert fourier_filter(half, 1, 0.5).dtype == torch.float16


def test_sd15_layout_up_block_entries_get_their_treatment_and_nothing_else():
    assert up_block_entries([2, 2, 2, 2]) == {0, 3, 6, 9}  # SD1.5: 12 decoder blocks, 4 up-blocks
    assert up_block_entries([2, 2, 2]) == {0, 3, 6}  # SDXL: 9 decoder blocks
    assert up_block_entries([1, 2]) == {0, 3}
    freeu = AuthorsFreeU(320, [2, 2, 2, 2])
    generator = torch.Generator().manual_seed(1)
    # the main path at each decoder block of SD1.5 (channels, grid at a 32x32 latent)
    widths = {0: (1280, 1), 1: (1280, 1), 2: (1280, 1), 3: (1280, 2), 4: (1280, 2), 5: (1280, 2), 6: (1280, 4),
              7: (640, 4), 8: (640, 4), 9: (640, 8), 10: (320, 8), 11: (320, 8)}
    for block, (channels, side) in widths.items():
        h = torch.randn(1, channels, side, side, generator=generator)
        before = h.clone()
        out = freeu.apply(h, block)
        assert torch.equal(h, before)  # the input is not modified
        if block in (0, 3, 6, 9):
            assert torch.allclose(out, _their_up_block_entry(h), atol=1e-5), block
            assert not torch.equal(out, h)
        else:
            assert out is h, block


def test_other_values_and_widths():
    freeu = AuthorsFreeU(64, [1, 1], b1=1.0, b2=2.0, s1=1.0, s2=1.0)
    h = torch.randn(1, 128, 4, 4)
    out = freeu.apply(h, 2)  # entry of the second up-block (1 + 1 blocks per level), 2x width: b2
    assert torch.allclose(out[:, :64], h[:, :64] * 2.0, atol=1e-5) and torch.allclose(out[:, 64:], h[:, 64:],
                                                                                        atol=1e-5)
    assert freeu.apply(torch.randn(1, 96, 4, 4), 0).shape == (1, 96, 4, 4)  # a width it does not know: unchanged


def test_up_block_entries_want_the_per_level_list():
    from eye_for_an_eye.eye_core.freeu import up_block_entries

    assert up_block_entries([2, 2, 2, 2]) == {0, 3, 6, 9}
    with pytest.raises(ValueError, match="every encoder level"):
        up_block_entries(2)


def test_the_filter_falls_back_to_the_cpu_only_for_a_missing_fft_not_for_running_out_of_memory(monkeypatch):
    from eye_for_an_eye.eye_core import freeu

    module = AuthorsFreeU(model_channels=8, num_res_blocks=[1, 1, 1])
    h = torch.randn(1, 32, 4, 4)
    calls = []
    real = freeu.fourier_filter

    failures = []

    def failing(x, threshold, scale):
        calls.append(x.device.type)
        if failures:
            raise RuntimeError(failures.pop())
        return real(x, threshold, scale)

    monkeypatch.setattr(freeu, "fourier_filter", failing)
    monkeypatch.setattr(freeu, "_DEVICES_WITHOUT_FFT", set())
    failures.append("CPU out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):
        module.apply(h, 0)
    assert freeu._DEVICES_WITHOUT_FFT == set()
    calls.clear()
    failures.append("fft: operation not supported on this device")
    first = module.apply(h, 0)  # fails once, filters on the CPU, remembers the device
    assert "cpu" in freeu._DEVICES_WITHOUT_FFT and len(calls) == 2
    calls.clear()
    second = module.apply(h, 0)  # straight to the fallback: no second failure
    assert len(calls) == 1 and torch.allclose(first, second)
