"""eye_core inversion and replay with torch only (a toy nonlinear denoiser stands in for a UNet)."""

import pytest
import torch

from eye_for_an_eye.eye_core.inversion import (
    NoiseStream,
    inversion_sigmas,
    invert_ddim,
    invert_edit_friendly,
    leading_timesteps,
)
from eye_for_an_eye.eye_core.trajectory import (
    DDIM,
    EF_DDPM,
    ancestral_split,
    reference_noise_seed,
    replay_step,
    share_noise,
)


def sd_like_grid():
    """The ascending sigma grid of a scaled-linear 1000-step schedule (SD1.5's betas)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def toy_denoiser(seed=0, channels=4):
    """A smooth nonlinear x0-predictor depending on x and sigma, like a model's would."""
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(channels, channels, generator=generator) * 0.3

    def denoise(x, sigma):
        scaled = x / (1.0 + float(sigma) ** 2) ** 0.5
        eps = torch.tanh(torch.einsum("bchw,dc->bdhw", scaled, mix) + 0.1 * float(sigma))
        return x - float(sigma) * eps

    return denoise


def replay(trajectory, denoise, start=0):
    x = trajectory.latents[start].clone()
    visited = [x]
    sigmas = trajectory.sigmas.tolist()
    for k in range(start, trajectory.steps):
        noise = None if trajectory.noise is None else trajectory.noise[k]
        x = replay_step(x, denoise(x, sigmas[k]), sigmas[k], sigmas[k + 1], noise)
        visited.append(x)
    return x, visited


@pytest.fixture
def x0():
    return torch.randn(2, 4, 12, 20, generator=torch.Generator().manual_seed(3))


def test_leading_timesteps_for_100_steps():
    timesteps = leading_timesteps(100)
    assert timesteps[0] == 991 and timesteps[-1] == 1 and len(timesteps) == 100
    assert all(a - b == 10 for a, b in zip(timesteps, timesteps[1:]))


def test_leading_timesteps_when_steps_do_not_divide_1000():
    # diffusers: step_ratio = 1000 // 30 = 33, timesteps = arange(30) * 33 + 1, reversed
    assert leading_timesteps(30) == [k * 33 + 1 for k in reversed(range(30))]


def test_inversion_sigmas_end_on_smallest_sigma():
    grid = sd_like_grid()
    sigmas = inversion_sigmas(grid, 100)
    assert sigmas.shape == (101,)
    assert torch.equal(sigmas[:-1], grid[leading_timesteps(100)])
    assert sigmas[-1] == grid[0] > 0
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_edit_friendly_replay_is_exact_and_visits_every_latent(x0):
    denoise = toy_denoiser()
    sigmas = inversion_sigmas(sd_like_grid(), 20)
    trajectory = invert_edit_friendly(x0, sigmas, denoise, NoiseStream(7, x0.shape))
    assert trajectory.method == EF_DDPM and trajectory.steps == 20
    assert torch.equal(trajectory.clean_latent, x0)
    out, visited = replay(trajectory, denoise)
    assert (out - x0).abs().max() < 1e-4
    for k, latent in enumerate(visited):
        assert (latent - trajectory.latents[k]).abs().max() < 1e-4, k


def test_skipped_trajectory_is_the_tail_of_the_full_one(x0):
    denoise = toy_denoiser()
    sigmas = inversion_sigmas(sd_like_grid(), 20)
    full = invert_edit_friendly(x0, sigmas, denoise, NoiseStream(7, x0.shape))
    tail = invert_edit_friendly(x0, sigmas[6:], denoise, NoiseStream(7, x0.shape, discard=6), start_step=6)
    assert tail.start_step == 6 and tail.steps == 14
    assert torch.equal(tail.latents, full.latents[6:])
    assert torch.allclose(tail.noise, full.noise[6:])
    out, _ = replay(tail, denoise)
    assert (out - x0).abs().max() < 1e-4


def test_noise_maps_change_with_the_seed(x0):
    denoise = toy_denoiser()
    sigmas = inversion_sigmas(sd_like_grid(), 10)
    a = invert_edit_friendly(x0, sigmas, denoise, NoiseStream(1, x0.shape))
    b = invert_edit_friendly(x0, sigmas, denoise, NoiseStream(2, x0.shape))
    assert not torch.allclose(a.noise, b.noise)
    assert torch.equal(a.clean_latent, b.clean_latent)


def test_the_reference_seed_draws_noise_independent_of_the_targets(x0):
    """One seed for both images would give them the same noise at every step; the derived seed does not."""
    import dataclasses

    assert reference_noise_seed(0) == 1 and reference_noise_seed(2**64 - 1) == 0  # the widget's whole range
    target, reference = NoiseStream(7, x0.shape), NoiseStream(reference_noise_seed(7), x0.shape)
    a, b = target.next().flatten(), reference.next().flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05
    sigmas = inversion_sigmas(sd_like_grid(), 6)
    one = invert_edit_friendly(x0, sigmas, toy_denoiser(), NoiseStream(7, x0.shape), seed=7)
    assert one.seed == 7
    assert share_noise(one, dataclasses.replace(one, latents=one.latents.flip(1)))  # another image, same seed
    assert not share_noise(one, dataclasses.replace(one, seed=reference_noise_seed(7)))
    assert not share_noise(one, dataclasses.replace(one, method=DDIM, noise=None))  # DDIM draws no noise
    smaller = invert_edit_friendly(x0[..., :8], sigmas, toy_denoiser(), NoiseStream(7, x0[..., :8].shape), seed=7)
    assert not share_noise(one, smaller)  # other latent size: other draws


def test_ddim_round_trip_error_shrinks_with_steps(x0):
    denoise = toy_denoiser()
    grid = sd_like_grid()
    errors = []
    for steps in (10, 25, 50, 100):
        trajectory = invert_ddim(x0, inversion_sigmas(grid, steps), denoise)
        assert trajectory.method == DDIM and trajectory.noise is None
        out, _ = replay(trajectory, denoise)
        errors.append((out - x0).abs().max().item())
    # DDIM inversion is first order: the error roughly halves when the steps double.
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.7 * errors[-2] and errors[-1] < 0.35 * errors[0], errors


def test_ancestral_split_is_the_ddpm_posterior():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)
    t, prev = 501, 491
    sigma, sigma_next = ((1 - abar[t]) / abar[t]).sqrt().item(), ((1 - abar[prev]) / abar[prev]).sqrt().item()
    down, up = ancestral_split(sigma, sigma_next)
    # DDIM with eta = 1: variance (1 - a_prev)/(1 - a_t) (1 - a_t/a_prev), in the scaled (sigma) space
    ddpm_var = (1 - abar[prev]) / (1 - abar[t]) * (1 - abar[t] / abar[prev]) / abar[prev]
    assert up**2 == pytest.approx(ddpm_var.item(), rel=1e-9)
    assert down**2 + up**2 == pytest.approx(sigma_next**2, rel=1e-12)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([3.0]), "at least two"),
    (torch.tensor([1.0, 2.0]), "descending"),
    (torch.tensor([2.0, 1.0, 0.0]), "above zero"),
])
def test_bad_schedules_are_refused(x0, bad, message):
    with pytest.raises(ValueError, match=message):
        invert_edit_friendly(x0, bad, toy_denoiser(), NoiseStream(0, x0.shape))
