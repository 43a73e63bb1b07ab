"""UNet feature maps for correspondence (DIFT: Tang et al., NeurIPS 2023).

DIFT adds noise to the clean latent at one timestep (261 by default), runs the UNet once
with the prompt and reads one decoder level; averaging over an ensemble of noise draws
removes most of the noise's influence. The host runs the UNet; this module only holds
the result and does the ensemble arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


#: DIFT's settings (Tang et al. 2023, docs/METHOD.md §5): the noise level and the ensemble size.
DIFT_TIMESTEP = 261
DIFT_ENSEMBLE = 8

@dataclass
class FeatureMap:
    """Ensemble-averaged decoder features of a batch of images (type ``EYE_FEATURES``).

    ``features`` is (B, C, h, w) float32, not normalised (matching normalises);
    ``layer`` names the decoder level, ``timestep`` the noise level, ``latent_size`` the
    (H, W) of the latent it came from; ``origin`` the model and images they were read from
    (a fingerprint.Origin), or None; ``pixels_per_latent`` the model's image-to-latent
    downscale (8 for the SD families), so ``image_size`` is the image the latent encodes.
    """

    features: torch.Tensor
    layer: str
    timestep: int
    latent_size: tuple
    ensemble: int
    origin: object = None
    pixels_per_latent: int = 8

    @property
    def image_size(self) -> tuple:
        """(H, W) in pixels of the image the features were read from."""
        return tuple(int(v) * self.pixels_per_latent for v in self.latent_size)

    @property
    def grid(self) -> tuple:
        """(h, w) of the feature map's token grid."""
        return tuple(self.features.shape[-2:])

    @property
    def batch(self) -> int:
        return self.features.shape[0]

    def to(self, device) -> "FeatureMap":
        return replace(self, features=self.features.to(device))


def ensemble_mean(stacked: torch.Tensor, batch: int) -> torch.Tensor:
    """Average an ensemble laid out member-major, (E * B, C, h, w) -> (B, C, h, w), in float32."""
    members = stacked.shape[0] // batch
    if members * batch != stacked.shape[0]:
        raise ValueError(f"{stacked.shape[0]} rows are not a whole ensemble of a batch of {batch}")
    return stacked.float().reshape(members, batch, *stacked.shape[1:]).mean(dim=0)
