"""The inversion result: a latent's path from a noisy start step down to the clean latent.

A ``Trajectory`` is what the Invert Latent node hands to the samplers (type
``EYE_TRAJECTORY``). Everything is in the model's own space (the VAE latent already
multiplied by the model's latent scale factor) and in sigma parametrisation
``x = x0 + sigma * eps``, which ComfyUI uses for epsilon and v-prediction models alike.

Layout, for ``n`` generation steps:

- ``sigmas``: (n + 1,) **descending**, from the start step's sigma down to the clean end
  (the model's smallest sigma, which is kept above zero so the last step still carries
  its noise map and the replay lands exactly on the input);
- ``latents``: (n + 1, B, C, H, W); ``latents[k]`` lies at ``sigmas[k]``, ``latents[-1]``
  is the clean input latent;
- ``noise``: (n, B, C, H, W) noise maps of edit-friendly DDPM, ``noise[k]`` used on the
  step ``sigmas[k] -> sigmas[k + 1]``; ``None`` for DDIM, whose steps are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

EF_DDPM = "edit-friendly DDPM"
DDIM = "DDIM"
METHODS = (EF_DDPM, DDIM)

# Relative tolerance when recognising a trajectory's sigmas in a SIGMAS input: ComfyUI
# moves sigmas between devices and float32/float64, which perturbs the last digits only.
SIGMA_RTOL = 1e-4


@dataclass
class Trajectory:
    """Stored path of one inverted latent (a batch of one or more images)."""

    sigmas: torch.Tensor
    latents: torch.Tensor
    noise: torch.Tensor | None
    method: str
    cfg: float
    total_steps: int
    start_step: int
    seed: int
    extras: dict = field(default_factory=dict)
    # Decoder self-attention inputs captured during inversion (a FeatureBank), or None.
    features: object = None
    # The model and the image it was inverted from (a fingerprint.Origin), or None.
    origin: object = None

    def __post_init__(self):
        steps = self.sigmas.shape[0] - 1
        if self.latents.shape[0] != steps + 1:
            raise ValueError(f"trajectory has {steps + 1} sigmas but {self.latents.shape[0]} latents")
        if self.noise is not None and self.noise.shape[0] != steps:
            raise ValueError(f"trajectory has {steps} steps but {self.noise.shape[0]} noise maps")

    @property
    def steps(self) -> int:
        """Number of generation steps stored (the schedule from the start step on)."""
        return self.sigmas.shape[0] - 1

    @property
    def latent_shape(self) -> tuple:
        """(B, C, H, W) of the latents, in the model's latent space."""
        return tuple(self.latents.shape[1:])

    @property
    def clean_latent(self) -> torch.Tensor:
        return self.latents[-1]

    @property
    def start_latent(self) -> torch.Tensor:
        return self.latents[0]

    def nbytes(self) -> int:
        """Memory the stored latents and noise maps take (captured features not included)."""
        total = self.sigmas.nbytes + self.latents.nbytes
        if self.noise is not None:
            total += self.noise.nbytes
        return total

    def index_of_sigma(self, sigma: float):
        """Index of the stored latent at ``sigma``, or None when ``sigma`` is not on the schedule."""
        own = self.sigmas.tolist()
        for index, value in enumerate(own):
            if abs(value - sigma) <= SIGMA_RTOL * max(abs(value), 1e-12):
                return index
        return None

    def to(self, device) -> "Trajectory":
        """A copy whose tensors live on ``device``."""
        noise = None if self.noise is None else self.noise.to(device)
        return replace(self, sigmas=self.sigmas.to(device), latents=self.latents.to(device), noise=noise)

    def locate(self, sigmas: torch.Tensor) -> int:
        """Index of ``sigmas[0]`` in this trajectory, after checking that ``sigmas`` belongs to it.

        A SIGMAS input belongs to the trajectory when it is a contiguous run of the
        trajectory's own schedule (the whole schedule Invert Latent returned, or a part of
        it cut with SplitSigmas). Anything else cannot replay the stored noise maps.
        """
        sigmas = sigmas.detach().to("cpu", torch.float64).flatten()
        own = self.sigmas.detach().to("cpu", torch.float64)
        if sigmas.numel() < 2:
            raise ValueError(
                "SIGMAS has fewer than two values, so there is no step to take. Connect the SIGMAS "
                "output of the Invert Latent node that made this trajectory."
            )
        hits = torch.nonzero(torch.isclose(own, sigmas[0], rtol=SIGMA_RTOL, atol=0.0)).flatten()
        if hits.numel() == 0:
            raise ValueError(
                f"SIGMAS does not belong to this trajectory: its first sigma {sigmas[0].item():.5g} is not on "
                f"the trajectory's schedule ({self.steps} steps from sigma {own[0].item():.5g} down to "
                f"{own[-1].item():.5g}). Connect the SIGMAS output of the same Invert Latent node "
                "(optionally cut with SplitSigmas), not a scheduler's."
            )
        offset = int(hits[0])
        end = offset + sigmas.numel()
        if end > own.numel() or not torch.allclose(own[offset:end], sigmas, rtol=SIGMA_RTOL, atol=0.0):
            raise ValueError(
                f"SIGMAS does not belong to this trajectory: it starts on the trajectory's step {offset} but "
                f"its {sigmas.numel()} values do not follow the trajectory's schedule from there. Connect the "
                "SIGMAS output of the same Invert Latent node (optionally cut with SplitSigmas)."
            )
        return offset

    def check_latent(self, x: torch.Tensor, what: str = "latent") -> None:
        """Raise a clear error when ``x`` cannot be replayed with this trajectory."""
        batch, channels, height, width = self.latent_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (channels, height, width):
            raise ValueError(
                f"the {what} has shape {tuple(x.shape)} but the trajectory was inverted from a latent of shape "
                f"{self.latent_shape} (latent {width}x{height}: an image of another size). Use the LATENT output of the same "
                "Invert Latent node, or invert an image of this size."
            )
        if x.shape[0] != batch and batch != 1:
            raise ValueError(
                f"the {what} has a batch of {x.shape[0]} but the trajectory holds {batch}. Use the LATENT output "
                "of the same Invert Latent node."
            )

    def check_start(self, x: torch.Tensor, first_sigma: float, what: str = "this trajectory") -> None:
        """Raise when ``x``, entering at the trajectory's start, is not its start latent.

        The two usual mistakes get their own advice: noise added on top of it (the sampler's
        NOISE was not DisableNoise) and the other image's start latent.
        """
        start = self.rows(self.start_latent, x.shape[0]).to(x.device, x.dtype)
        gap = (x - start).abs().max().item()
        if gap <= 1e-3 * (1.0 + start.abs().max().item()):
            return
        spread = (x - start).float().std().item()
        if abs(spread / max(float(first_sigma), 1e-8) - 1.0) < 0.25:  # x = start + sigma * noise
            raise ValueError(
                f"the latent entering it differs from the trajectory's start latent (max difference {gap:.3g}) by "
                "noise of the first sigma's size: noise was added to it. Use DisableNoise as the NOISE input of "
                "SamplerCustomAdvanced (or add_noise off in SamplerCustom) and the start_latent output of Invert "
                "Latent.")
        raise ValueError(
            f"the latent entering it is not {what}'s start latent (max difference {gap:.3g}): it is another image's, "
            "perhaps the start_latent of the other Invert Latent. Connect the start_latent output of the Invert "
            "Latent whose trajectory this sampler replays.")

    def rows(self, tensor: torch.Tensor, batch: int) -> torch.Tensor:
        """``tensor`` (whose first dim is this trajectory's batch) expanded to ``batch`` rows."""
        if tensor.shape[0] == batch:
            return tensor
        return tensor.expand(batch, *tensor.shape[1:])


def reference_noise_seed(seed: int) -> int:
    """The reference's inversion seed, derived from the target's: seed + 1 (wrapping at 2**64).

    Inverted with one seed, the target and the reference get the same noise map at every step;
    their noisy latents then share that noise, and per-step matching drifts toward matching each
    token to its own position (with random weights, 73 % of the tokens at t=561 against 1 % with
    independent draws), the opposite of what semantic matching is for.
    """
    return (int(seed) + 1) % 2**64


def share_noise(a: Trajectory, b: Trajectory) -> bool:
    """True when two edit-friendly trajectories of one latent size were drawn from the same noise seed."""
    return (a.method == b.method == EF_DDPM and a.seed == b.seed
            and tuple(a.latent_shape[1:]) == tuple(b.latent_shape[1:]))


def ancestral_split(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of a full ancestral (eta = 1, DDPM-posterior) step.

    ``sigma_up**2 = sigma_next**2 (sigma**2 - sigma_next**2) / sigma**2`` and
    ``sigma_down**2 = sigma_next**2 - sigma_up**2``: in sigma space this is exactly the
    DDPM posterior step (DDIM with eta = 1) that edit-friendly inversion replays.
    """
    sigma, sigma_next = float(sigma), float(sigma_next)
    if sigma_next <= 0.0:
        return 0.0, 0.0
    up = math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0))
    down = math.sqrt(max(sigma_next**2 - up**2, 0.0))
    return down, up


def replay_step(x, denoised, sigma, sigma_next, noise_map=None):
    """One step of the replay: DDPM posterior step with the stored noise map, or a DDIM step.

    With ``noise_map`` (edit-friendly DDPM) this rebuilds the trajectory's next latent
    exactly when ``denoised`` is the same prediction the inversion saw; without it this is
    the deterministic DDIM step ``x_next = D + sigma_next * eps``.
    """
    eps = (x - denoised) / sigma
    if noise_map is None:
        return denoised + eps * sigma_next
    down, up = ancestral_split(sigma, sigma_next)
    return denoised + eps * down + noise_map * up


def replay(trajectory: Trajectory, x: torch.Tensor, sigmas: torch.Tensor, denoise, offset: int = 0,
           on_step=None, after_step=None, interrupt=None) -> torch.Tensor:
    """Steps ``x`` down ``sigmas`` (a stretch of the trajectory's schedule from ``offset``) with its noise maps.

    ``denoise(x, sigma)`` is the model's prediction; ``on_step(i, x, denoised)`` sees each
    step (previews); ``after_step(step, total, next_index, x) -> x`` may adjust the latent
    after it (the Transfer Sampler's masked AdaIN), counting along the trajectory's own
    schedule so sigmas cut with SplitSigmas keep their place; ``interrupt()`` may raise to
    stop between steps. With the predictions the inversion saw, this rebuilds its latents.
    """
    values = sigmas.detach().to("cpu", torch.float64).tolist()
    for i in range(len(values) - 1):
        if interrupt is not None:
            interrupt()
        denoised = denoise(x, sigmas[i])
        if on_step is not None:
            on_step(i, x, denoised)
        noise_map = None
        if trajectory.noise is not None:
            noise_map = trajectory.rows(trajectory.noise[offset + i], x.shape[0]).to(x.device, x.dtype)
        x = replay_step(x, denoised, values[i], values[i + 1], noise_map)
        if after_step is not None:
            x = after_step(offset + i, trajectory.steps, offset + i + 1, x)
    return x
