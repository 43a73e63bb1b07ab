"""Extract UNet Features (DIFT) and Match Correspondence, with previews."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..eye_core.features import DIFT_ENSEMBLE, DIFT_TIMESTEP, FeatureMap, ensemble_mean
from ..eye_core.fingerprint import Origin
from ..eye_core.visualize import pca_rgb
from ..comfy_adapter.checks import check_conditioning, check_latent_channels, require_unet
from ..comfy_adapter.fingerprints import image_print, model_print
from ..comfy_adapter.memory import storage_device
from ..comfy_adapter.sampling import timestep_sigma
from ..comfy_adapter.unet_layout import dift_output_block, output_block_count, pixels_per_latent, unet_block_output
from .common import CATEGORY, FEATURES, check_choices, node_id, require_finite

AUTO_LEVEL = "auto (DIFT)"
MAX_OUTPUT_BLOCKS = 12


def _level_options():
    return [AUTO_LEVEL] + [f"output block {i}" for i in range(MAX_OUTPUT_BLOCKS)]


def _chosen_block(model, level: str, node: str) -> int:
    if level == AUTO_LEVEL:
        return dift_output_block(model)
    try:
        block = int(level.rsplit(" ", 1)[-1])
    except ValueError:
        raise ValueError(f"{node}: unknown decoder_level {level!r}; pick one from the list") from None
    count = output_block_count(model)
    if block >= count:
        raise ValueError(f"{node}: this UNet has output blocks 0 to {count - 1} (SDXL has 9); "
                         f"pick one of those or '{AUTO_LEVEL}'.")
    return block


def extract_features(model, latent, positive, timestep, decoder_level, ensemble_size, seed,
                     node="Extract UNet Features"):
    """Extract UNet Features' work: (FeatureMap, preview IMAGE); errors name ``node``."""
    require_unet(model, node)
    samples = latent["samples"]
    if samples.numel() == 0 or samples.ndim != 4:
        raise ValueError(f"{node}: the latent is empty; connect the LATENT of VAEEncode.")
    require_finite(samples, "latent", node)
    check_latent_channels(model, samples, node)
    check_conditioning(model, positive, "positive", node)
    block = _chosen_block(model, decoder_level, node)
    origin = Origin(model=model_print(model), images=image_print(samples))
    batch = samples.shape[0]
    members = samples.repeat(ensemble_size, 1, 1, 1)  # member-major: row e * batch + b
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(members.shape, generator=generator, dtype=torch.float32)
    sigma = timestep_sigma(model, timestep)
    raw = unet_block_output(model, positive, members, sigma, noise, block, seed, node)
    features = ensemble_mean(raw, batch).to(storage_device())
    feature_map = FeatureMap(features=features, layer=f"output block {block}", timestep=int(timestep),
                             latent_size=tuple(samples.shape[-2:]), ensemble=int(ensemble_size), origin=origin,
                             pixels_per_latent=pixels_per_latent(model))
    preview = pca_rgb(features, size=feature_map.image_size).to(storage_device())
    return feature_map, preview


class ExtractUNetFeatures(io.ComfyNode):
    """DIFT features of a clean latent: one noisy UNet pass per ensemble member, averaged."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ExtractUNetFeatures"),
            display_name="Extract UNet Features (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Diffusion features (DIFT) for semantic correspondence: noise the clean latent to one timestep, run "
                "the UNet with the prompt, read one decoder level and average over an ensemble of noise draws. The "
                "preview shows the features' first three principal components as colours."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The UNet SD model (SD1.x, SD2.x, SDXL) whose features are read."),
                io.Latent.Input("latent", tooltip="The clean latent of the image (VAEEncode), not a noisy one."),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image, e.g. 'a photo of a bird'."),
                io.Int.Input("timestep", default=DIFT_TIMESTEP, min=0, max=999, tooltip="Noise level the features are read "
                             "at, as a training timestep (DIFT: 261, sigma about 0.72 on SD1.5). Lower keeps more "
                             "detail, higher more semantics."),
                io.Combo.Input("decoder_level", options=_level_options(), default=AUTO_LEVEL, tooltip="Which decoder "
                               "block's output is read. auto = DIFT's choice: the first decoder level with attention, "
                               "after its upsample (SD1.5: output block 5, 1280 ch at 1/16 of the image; SDXL: "
                               "output block 2, same resolution)."),
                io.Int.Input("ensemble_size", default=DIFT_ENSEMBLE, min=1, max=64, tooltip="Noise draws averaged (DIFT: 8). "
                             "They run as one batch: lower it if memory is short."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the ensemble's noise."),
            ],
            outputs=[
                io.Custom(FEATURES).Output(display_name="features", tooltip="Feature map (B, C, h, w) with its "
                                           "layer, timestep and latent size; feed it to Match Correspondence."),
                io.Image.Output(display_name="preview", tooltip="First three principal components of the "
                                "features as RGB, at image size."),
            ],
        )

    @classmethod
    def execute(cls, model, latent, positive, timestep, decoder_level, ensemble_size, seed) -> io.NodeOutput:
        check_choices(cls, "Extract UNet Features", decoder_level=decoder_level)
        return io.NodeOutput(*extract_features(model, latent, positive, timestep, decoder_level, ensemble_size, seed))


NODES = [ExtractUNetFeatures]
