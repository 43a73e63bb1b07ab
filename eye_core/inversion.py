"""Latent inversion in sigma space: edit-friendly DDPM (exact replay) and DDIM.

Both take the clean latent ``x0`` (model space), a descending sigma schedule that ends
above zero, and ``denoise(x, sigma) -> x0_hat`` (the host's CFG-combined prediction), and
return a :class:`~.trajectory.Trajectory`. They know nothing of ComfyUI: the host wraps
its model in ``denoise`` and passes ``on_step`` for progress and interruption.

Edit-friendly DDPM (Huberman-Spiegelglas et al., CVPR 2024), steps i from noisiest to cleanest:

1. every noisy latent is drawn independently, ``x_i = x0 + s_i * n_i``;
2. ``D_i = denoise(x_i, s_i)``, ``eps_i = (x_i - D_i) / s_i``;
3. the noise map ``z_i = (x_{i+1} - D_i - s_down * eps_i) / s_up`` is what makes the
   ancestral step from ``x_i`` land exactly on ``x_{i+1}``.

DDIM inversion walks up the schedule from the clean latent,
``x_{k+1} = D(x_k, c_k) + c_{k+1} * eps_k``; it is approximate (best at CFG near 1).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .trajectory import DDIM, EF_DDPM, Trajectory, ancestral_split

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
OnStep = Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]]


def leading_timesteps(steps: int, train_timesteps: int = 1000, offset: int = 1) -> list[int]:
    """Descending timesteps of DDIM's "leading" spacing with ``steps_offset`` (diffusers' DDIMScheduler).

    For 100 steps of a 1000-step model: 991, 981, ..., 1 (the schedule the authors invert
    with, and ComfyUI's ``ddim_uniform`` grid whenever ``steps`` divides 1000).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > train_timesteps - offset:
        raise ValueError(f"steps must be at most {train_timesteps - offset} for a {train_timesteps}-step model, got {steps}")
    ratio = train_timesteps // steps
    return [k * ratio + offset for k in reversed(range(steps))]


def inversion_sigmas(grid: torch.Tensor, steps: int) -> torch.Tensor:
    """Descending inversion schedule on a model's ascending sigma ``grid`` (one sigma per timestep).

    Sigmas at the leading timesteps, then the grid's smallest sigma (timestep 0) as the
    clean end, which keeps the last step's noise term (a final zero would drop it and
    the replay would miss the input). float32 on the CPU.
    """
    grid = grid.detach().to("cpu", torch.float32).flatten()
    timesteps = leading_timesteps(steps, grid.numel())
    return torch.cat([grid[timesteps], grid[:1]])


class NoiseStream:
    """Independent standard normal draws from a seeded CPU generator, one per step.

    The first ``discard`` draws are skipped, so a trajectory started ``k`` steps later
    is exactly the tail of the full one (same seed, same noisy latents).
    """

    def __init__(self, seed: int, shape, discard: int = 0):
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.shape = tuple(shape)
        for _ in range(discard):
            self.next()

    def next(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, dtype=torch.float32)


def _check_schedule(sigmas: torch.Tensor) -> list[float]:
    values = [float(s) for s in sigmas.detach().to("cpu", torch.float64).flatten()]
    if len(values) < 2:
        raise ValueError("the schedule needs at least two sigmas (one step)")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("the schedule must be strictly descending")
    if values[-1] <= 0.0:
        raise ValueError("the schedule must end above zero (on the clean latent) for an exact replay")
    return values


@torch.no_grad()  # pure inference: a caller outside inference mode must not grow an autograd graph per step
def invert_edit_friendly(x0: torch.Tensor, sigmas: torch.Tensor, denoise: Denoise, noise: NoiseStream,
                         on_step: OnStep = None, store_device=None, **settings) -> Trajectory:
    """Edit-friendly DDPM inversion of ``x0`` over ``sigmas`` (descending, last > 0).

    ``noise`` supplies one independent draw per step (see :class:`NoiseStream`).
    ``store_device`` is where the trajectory is kept (default: the CPU). ``settings``
    (cfg, total_steps, start_step, seed, extras) are recorded in the trajectory.
    """
    values = _check_schedule(sigmas)
    steps = len(values) - 1
    store = torch.device(store_device or "cpu")
    noisy = [x0 + values[i] * noise.next().to(x0.device, x0.dtype) for i in range(steps)] + [x0]
    maps = []
    for i in range(steps):
        x = noisy[i]
        denoised = denoise(x, values[i])
        eps = (x - denoised) / values[i]
        down, up = ancestral_split(values[i], values[i + 1])
        maps.append(((noisy[i + 1] - denoised - eps * down) / up).to(store, torch.float32))
        if on_step is not None:
            on_step(i, steps, x, denoised)
    latents = torch.stack([x.to(store, torch.float32) for x in noisy])
    return Trajectory(sigmas=torch.tensor(values, dtype=torch.float32), latents=latents, noise=torch.stack(maps),
                      method=EF_DDPM, **_defaults(settings, steps))


@torch.no_grad()
def invert_ddim(x0: torch.Tensor, sigmas: torch.Tensor, denoise: Denoise, on_step: OnStep = None,
                store_device=None, **settings) -> Trajectory:
    """DDIM inversion of ``x0`` up the schedule ``sigmas`` (given descending, last > 0)."""
    values = _check_schedule(sigmas)
    steps = len(values) - 1
    store = torch.device(store_device or "cpu")
    ascending = values[::-1]
    x = x0
    path = [x0.to(store, torch.float32)]
    for k in range(steps):
        denoised = denoise(x, ascending[k])
        eps = (x - denoised) / ascending[k]
        x = denoised + eps * ascending[k + 1]
        path.append(x.to(store, torch.float32))
        if on_step is not None:
            on_step(k, steps, x, denoised)
    latents = torch.stack(path[::-1])
    return Trajectory(sigmas=torch.tensor(values, dtype=torch.float32), latents=latents, noise=None,
                      method=DDIM, **_defaults(settings, steps))


def _defaults(settings: dict, steps: int) -> dict:
    return {
        "cfg": float(settings.get("cfg", 1.0)),
        "total_steps": int(settings.get("total_steps", steps)),
        "start_step": int(settings.get("start_step", 0)),
        "seed": int(settings.get("seed", 0)),
        "extras": dict(settings.get("extras", {})),
    }
