"""Corresponding points by prompt optimisation (eye_core.points) on a toy cross-attention with an exact answer."""

import math

import pytest
import torch

from eye_for_an_eye.eye_core import points as P


def toy_latent(h=16, w=16, channels=64, seed=0):
    """Smooth features that tell every position apart (random Fourier features of the position)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    freq = torch.randn(channels, 2, generator=g) * 12.0
    phase = torch.rand(channels, generator=g) * 6.28
    return torch.cos(freq[:, 0, None, None] * xs + freq[:, 1, None, None] * ys + phase[:, None, None])[None]


def toy_attention(latent, context, token=1):
    """First-token cross-attention: softmax over the text tokens of q k^T per pixel, as in SD's attn2."""
    q = latent[0].flatten(1).t()  # (N, C)
    k = context[0, :, : q.shape[1]]  # (T, C)
    probs = torch.softmax(q @ k.t() * 2.0 / math.sqrt(q.shape[1]), dim=-1)
    return probs[:, token].reshape(1, *latent.shape[-2:])


FAST = P.PointSettings(steps=60, lr=0.05, embeddings=1, crops=6)


def test_the_authors_defaults():
    assert (P.HEDLIN.steps, P.HEDLIN.embeddings, P.HEDLIN.crops) == (129, 5, 20)
    assert P.HEDLIN.sigma * 512 == pytest.approx(27.9785, abs=1e-3) and P.HEDLIN.crop == pytest.approx(0.9317, abs=1e-4)
    with pytest.raises(ValueError, match="crop"):
        P.PointSettings(crop=0.0)


def test_the_gaussian_target_peaks_at_the_point():
    target = P.gaussian_map((0.25, 0.75), (16, 32), 0.05)
    row, col = divmod(int(target.argmax()), 32)
    assert (row, col) in {(11, 7), (12, 7), (11, 8), (12, 8)} and float(target.max()) > 0.9


def test_a_random_crop_keeps_the_point_inside_with_its_margin():
    g = torch.Generator().manual_seed(1)
    for point in [(0.5, 0.5), (0.02, 0.97), (0.99, 0.01)]:
        for _ in range(20):
            crop = P.random_crop(point, 0.8, g)
            x, y = P.point_in_crop(point, crop)
            assert 0.0 <= crop[0] <= 0.2 + 1e-9 and 0.0 <= crop[1] <= 0.2 + 1e-9
            assert -1e-9 <= x <= 1 + 1e-9 and -1e-9 <= y <= 1 + 1e-9


def test_a_whole_image_crop_is_the_identity():
    latent = toy_latent()
    assert torch.allclose(P.crop_latent(latent, (0.0, 0.0, 1.0, 1.0)), latent, atol=1e-5)
    placed, cover = P.uncrop_map(latent[0, :2], (0.0, 0.0, 1.0, 1.0), (16, 16))
    assert torch.allclose(placed, latent[0, :2], atol=1e-5) and bool((cover == 1).all())


def test_the_optimised_attention_loss_falls_and_peaks_at_the_point():
    latent, point = toy_latent(), (0.3, 0.6)
    init = torch.randn(1, 8, 64, generator=torch.Generator().manual_seed(2))
    context, losses = P.optimise_embedding(toy_attention, latent, point, init, FAST)
    # below the loss of the degenerate answer (no attention anywhere): the map really peaks
    trivial = float(P.gaussian_map(point, (16, 16), FAST.sigma).pow(2).mean())
    assert sum(losses[-10:]) / 10 < 0.7 * trivial < sum(losses[:10]) / 10, (trivial, losses)
    assert not context.requires_grad and not init.requires_grad
    (x, y), confidence = P.read_point(toy_attention(latent, context))
    assert math.dist((x, y), point) <= 1.5 / 16 and 0 < confidence <= 1


def test_on_a_flipped_copy_the_found_point_is_the_mirrored_one_within_a_token():
    latent = toy_latent(seed=3)
    flipped = torch.flip(latent, dims=[-1])
    for point in [(0.3, 0.4), (0.7, 0.2), (0.55, 0.8)]:
        init = torch.randn(1, 8, 64, generator=torch.Generator().manual_seed(4))
        context, _ = P.optimise_embedding(toy_attention, latent, point, init, FAST)
        (x, y), _, _ = P.find_in_other(toy_attention, flipped, [context], settings=FAST)
        assert math.dist((x, y), (1 - point[0], point[1])) <= 1.0 / 16 * math.sqrt(2), (point, x, y)


def test_a_flat_map_has_low_confidence_and_a_peak_high():
    flat = torch.ones(1, 8, 8)
    peak = torch.zeros(1, 8, 8)
    peak[0, 3, 4] = 1
    assert P.read_point(flat)[1] == 0.0 and P.read_point(peak) == ((4.5 / 8, 3.5 / 8), 1.0)


def test_pck_counts_points_within_a_tenth_of_the_object():
    assert P.pck([(0, 0), (10, 0)], [(1, 0), (0, 0)], size=20) == 0.5
    assert math.isnan(P.pck([], [], size=1))
