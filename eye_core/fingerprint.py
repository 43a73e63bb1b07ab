"""Where a trajectory, a feature map or a correspondence came from, checked where they meet.

A trajectory replayed with another model, features of two model families matched with
each other, a correspondence used on other images: each of these runs without any error
and gives a wrong result. So every such object carries an :class:`Origin`, the
fingerprint of the model (and its patches) and of the images it was made from, and the
nodes compare origins wherever two of them meet.

Fingerprints are cheap: the host computes a :class:`ModelPrint` once per node execution
from the architecture, a few weight tensors (a strided sample of their values and their
sum of squares, never a hash of all weights) and the descriptions of the model patches;
an :class:`ImagePrint` is the latent pooled to an 8x8 grid. This module holds the data
and the comparisons; it knows nothing of ComfyUI.

Comparing two model prints gives one of:

* ``FAMILY``: another architecture or latent format (SD1.x against SDXL): always an error;
* ``WEIGHTS``: the same architecture with other weights (another checkpoint): an error,
  the replay or the transfer would be silently wrong;
* ``PATCHES``: the same weights with other patches (LoRA, FreeU, ModelSampling...): a
  warning, since editing with another patch on purpose is legitimate;
* None: the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FAMILY = "family"
WEIGHTS = "weights"
PATCHES = "patches"

#: An image's signature is its latent average-pooled to this many cells per side.
SIGNATURE_CELLS = 8
#: Two signatures belong to the same image when their relative L2 distance is below this.
#: The same image encoded again (another VAEEncode, tiled encoding, fp16) stays far below it,
#: two different pictures are far above it.
SAME_IMAGE_TOLERANCE = 0.05


@dataclass(frozen=True)
class ModelPrint:
    """Fingerprint of a model: its family, its architecture, its base weights and its patches.

    ``family`` is what users call it ("SD1.x", "SDXL"); ``layout`` digests the architecture
    and latent format; ``weights`` a few base weight tensors (patches not applied);
    ``patches`` the model patches (the pack's own left out); ``patch_summary`` names them
    in a few words for messages; ``latent`` the latent format (models of one latent format,
    SD1.x and SD2.x say, encode an image alike, so their image prints compare).
    """

    family: str
    layout: str
    weights: str
    patches: str
    patch_summary: tuple = ()
    latent: str = ""

    def difference(self, other: "ModelPrint | None") -> str | None:
        """FAMILY, WEIGHTS, PATCHES or None (the same model, or nothing to compare with)."""
        if other is None:
            return None
        if self.layout != other.layout:
            return FAMILY
        if self.weights != other.weights:
            return WEIGHTS
        if self.patches != other.patches:
            return PATCHES
        return None

    @property
    def patches_text(self) -> str:
        return ", ".join(self.patch_summary) if self.patch_summary else "no patches"


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEFHILMNORSX8" else "a"


def describe_difference(kind: str, first: ModelPrint, second: ModelPrint, first_what: str, second_what: str) -> str:
    """One sentence saying how the models of two things differ ("A and B belong to different model families: ...")."""
    if kind == FAMILY:
        if first.family == second.family:
            return (f"{first_what} and {second_what} come from two {first.family} models of different architectures "
                    "(other layer sizes or latent format)")
        return (f"{first_what} and {second_what} belong to different model families: {first_what} to "
                f"{_article(first.family)} {first.family} model, {second_what} to {_article(second.family)} "
                f"{second.family} model, each with its own latent format")
    if kind == WEIGHTS:
        return (f"{first_what} and {second_what} come from two different {first.family} models (the same "
                "architecture, other weights: another checkpoint)")
    if kind == PATCHES:
        return (f"{first_what} and {second_what} come from the same {first.family} model with other patches "
                f"({first.patches_text} against {second.patches_text})")
    raise ValueError(f"unknown difference {kind!r}")


@dataclass(frozen=True, eq=False)
class ImagePrint:
    """Fingerprint of a batch of images: each latent pooled to SIGNATURE_CELLS x SIGNATURE_CELLS.

    ``signature`` is (B, C, cells, cells) float32 on the CPU; ``latent_size`` the (H, W) of
    the latent it was pooled from. Made from the raw VAE latent (VAEEncode's LATENT), the
    same way wherever it is made, so prints of one image agree.
    """

    signature: torch.Tensor
    latent_size: tuple

    @classmethod
    def of(cls, latent: torch.Tensor) -> "ImagePrint":
        """The print of a (B, C, H, W) latent (any device; one small copy to the CPU)."""
        pooled = F.adaptive_avg_pool2d(latent.detach().float(), SIGNATURE_CELLS)
        return cls(pooled.to("cpu"), tuple(int(s) for s in latent.shape[-2:]))

    @property
    def batch(self) -> int:
        return int(self.signature.shape[0])

    def differing_rows(self, other: "ImagePrint | None") -> list:
        """Rows whose image differs from ``other``'s (batches 1 and B broadcast); [] when all agree.

        Latents of different sizes or channels are different images: every row differs.
        """
        if other is None:
            return []
        rows = max(self.batch, other.batch)
        if (self.latent_size != other.latent_size or self.signature.shape[1:] != other.signature.shape[1:]
                or {self.batch, other.batch} - {1, rows}):
            return list(range(rows))
        a = self.signature.expand(rows, *self.signature.shape[1:]).flatten(1)
        b = other.signature.expand(rows, *other.signature.shape[1:]).flatten(1)
        scale = torch.maximum(a.norm(dim=1), b.norm(dim=1)).clamp_min(1e-6)
        far = (a - b).norm(dim=1) / scale > SAME_IMAGE_TOLERANCE
        return [row for row, differs in enumerate(far.tolist()) if differs]


@dataclass(frozen=True, eq=False)
class Origin:
    """What an object was made from: the model's print and the images' print (either may be None)."""

    model: ModelPrint | None = None
    images: ImagePrint | None = None


def model_of(thing) -> ModelPrint | None:
    """The ModelPrint of anything carrying an ``origin`` (trajectory, feature map), or None."""
    origin = getattr(thing, "origin", None)
    return None if origin is None else origin.model


def images_of(origin: Origin | None) -> ImagePrint | None:
    return None if origin is None else origin.images


__all__ = ["FAMILY", "WEIGHTS", "PATCHES", "ModelPrint", "ImagePrint", "Origin", "describe_difference", "model_of",
           "images_of", "SAME_IMAGE_TOLERANCE", "SIGNATURE_CELLS"]
