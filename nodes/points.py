"""Points that steer the match: Find Corresponding Points (prompt optimisation, Hedlin et al.) and Point Pairs.

Find Corresponding Points places points of the target on the reference with the diffusion
model's cross-attention (eye_core/points.py, comfy_adapter/cross_attention.py); Point Pairs
turns pairs of points, found or typed, into a MATCH_CONSTRAINT (eye_core/point_constraint.py)
that Match Correspondence and Apply Appearance Transfer obey, alone or with the other
constraints.
"""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..comfy_adapter.checks import check_conditioning, check_latent_channels, require_unet
from ..comfy_adapter.cross_attention import attention_maps, attention_probe, cross_attention_layers, hedlin_layers
from ..comfy_adapter.memory import free_memory, storage_device
from ..comfy_adapter.progress import check_interrupt, progress_bar
from ..comfy_adapter.sampling import timestep_sigma
from ..comfy_adapter.unet_layout import pixels_per_latent
from ..eye_core.instances import points_only
from ..eye_core.masks import POINT_FORMAT, check_points, parse_points
from ..eye_core.point_constraint import HARD, MODES, PointConstraint
from ..eye_core.points import HEDLIN, PointSettings, corresponding_points
from ..eye_core.visualize import points_preview
from .common import CATEGORY, CONSTRAINT, check_choices, named, node_id

SUBCATEGORY = f"{CATEGORY}/points"
FIND = "Find Corresponding Points"
PAIRS = "Point Pairs"
AUTHORS_LAYERS = "around the middle (the authors')"
EVERY_LAYER = "every cross-attention layer"
LAYER_CHOICES = (AUTHORS_LAYERS, EVERY_LAYER)
#: The authors' timestep: the 8th-last of 50 DDIM steps on SD1.5's 1000 (github.com/ubc-vision/LDM_correspondences).
HEDLIN_TIMESTEP = 141


def format_points(points) -> str:
    """Points (x, y fractions) as the text the point inputs read: ``"0.4258,0.4570; 0.7,0.2"``."""
    return "; ".join(f"{x:.4f},{y:.4f}" for x, y in points)


def read_points(text: str, width: int, height: int, input_name: str, node: str) -> list[tuple[float, float]]:
    """Typed points (pixels, fractions or percent of a ``width`` x ``height`` image) as (x, y) fractions."""
    with named(node):
        pixels = parse_points(text, input_name, (width, height))
        check_points(pixels, width, height, input_name)
    return [(x / width, y / height) for x, y in pixels]


def _one_latent(latent, name: str, node: str) -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not torch.is_tensor(samples) or samples.ndim != 4:
        raise ValueError(f"{node}: {name} is not an image latent (VAE Encode's LATENT).")
    if samples.shape[0] != 1:
        raise ValueError(f"{node}: {name} holds a batch of {samples.shape[0]} images; points are found between one "
                         "target and one reference. Pick one image (Latent From Batch).")
    return samples


def _image_for(image, samples, scale):
    """The preview's image: the given one (first of its batch), else a grey canvas of the latent's pixel size."""
    if image is not None:
        return image[0, ..., :3].float().cpu()
    return torch.full((samples.shape[-2] * scale, samples.shape[-1] * scale, 3), 0.5)


def find_corresponding_points(model, conditioning, target, reference, target_points: str, steps: int = HEDLIN.steps,
                              embeddings: int = HEDLIN.embeddings, crops: int = HEDLIN.crops,
                              learning_rate: float = HEDLIN.lr, timestep: int = HEDLIN_TIMESTEP,
                              layers: str = AUTHORS_LAYERS, seed: int = 0, target_image=None, reference_image=None,
                              node: str = FIND):
    """(target points text, reference points text, confidences text, preview): each target point found on the reference."""
    check_choices(FindCorrespondingPoints, node, layers=layers)
    require_unet(model, node)
    check_conditioning(model, conditioning, "conditioning", node)
    target_samples = _one_latent(target, "target", node)
    reference_samples = _one_latent(reference, "reference", node)
    for samples in (target_samples, reference_samples):
        check_latent_channels(model, samples, node)
    scale = pixels_per_latent(model)
    height, width = (int(v) * scale for v in target_samples.shape[-2:])
    points = read_points(target_points, width, height, "target_points", node)
    if not points:
        raise ValueError(f"{node}: target_points is empty; give at least one point on the target, {POINT_FORMAT}.")
    settings = PointSettings(steps=steps, lr=learning_rate, embeddings=embeddings, crops=crops)
    chosen = hedlin_layers(model) if layers == AUTHORS_LAYERS else cross_attention_layers(model)
    tokens, extras = conditioning[0][0], dict(conditioning[0][1])
    patched, probe = attention_probe(model, chosen)
    sigma = timestep_sigma(model, timestep)
    generator = torch.Generator().manual_seed(int(seed))
    target_attention = attention_maps(patched, probe, extras, sigma, generator, seed)
    reference_attention = attention_maps(patched, probe, extras, sigma, generator, seed)
    bar = progress_bar(len(points) * (settings.embeddings * settings.steps + settings.crops))

    def on_step():
        check_interrupt()
        bar.update(1)

    def make_init(gen):
        return torch.randn(1, tokens.shape[1], tokens.shape[2], generator=gen)

    try:
        with torch.inference_mode(False), torch.enable_grad():
            grid = tuple(target_attention(target_samples, make_init(generator)).shape[-2:])
            if len(points) > grid[0] * grid[1]:
                raise ValueError(f"{node}: {len(points)} points but the model's cross-attention at these layers has "
                                 f"only {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens for this image: points "
                                 "closer than a token cannot be told apart. Give fewer points, or a larger image.")
            found = corresponding_points(target_attention, reference_attention, target_samples.detach().clone(),
                                         reference_samples.detach().clone(), points, make_init, settings, seed,
                                         on_step)
    finally:
        del patched, probe
        free_memory()
    reference_found = [where for where, _ in found]
    confidences = [confidence for _, confidence in found]
    preview = points_preview(_image_for(target_image, target_samples, scale), points,
                             _image_for(reference_image, reference_samples, scale), reference_found, confidences)
    return (format_points(points), format_points(reference_found), "; ".join(f"{c:.3f}" for c in confidences),
            preview.to(storage_device()))


class FindCorrespondingPoints(io.ComfyNode):
    """Where points of the target lie on the reference, by prompt optimisation (Hedlin et al. 2023)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("FindCorrespondingPoints"),
            display_name="Find Corresponding Points (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=(
                "For each target point, a text embedding is optimised so that the model's cross-attention peaks "
                "there (Hedlin et al., Unsupervised Semantic Correspondence Using Stable Diffusion); the same "
                "embedding's attention peak on the reference is the corresponding point. Slow: every point costs "
                "embeddings x (steps + crops) UNet calls. Feed the points to Point Pairs to steer the matching."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint's MODEL (SD1.x, SD2.x or SDXL). It is not changed: "
                               "the gradient flows through copies of a few attention weights only."),
                io.Conditioning.Input("conditioning", tooltip="Any prompt's CONDITIONING from the same checkpoint "
                                      "(CLIPTextEncode): gives the embedding's size and SDXL's pooled output. Its text "
                                      "is replaced by the optimised embedding."),
                io.Latent.Input("target", tooltip="The target (structure) image's latent (VAE Encode), one image."),
                io.Latent.Input("reference", tooltip="The reference (appearance) image's latent (VAE Encode), one "
                                "image."),
                io.String.Input("target_points", multiline=True, default="0.5,0.5",
                                tooltip=f"Points on the target, {POINT_FORMAT}."),
                io.Int.Input("steps", default=HEDLIN.steps, min=1, max=1000, tooltip="Optimisation steps per "
                             "embedding (the authors: 129)."),
                io.Int.Input("embeddings", default=HEDLIN.embeddings, min=1, max=20, tooltip="Embeddings optimised "
                             "independently per point and averaged (the authors: 5). Fewer is faster and noisier."),
                io.Int.Input("crops", default=HEDLIN.crops, min=1, max=100, tooltip="Crops of the reference whose "
                             "attention maps are averaged to read each point (the authors: 20)."),
                io.Float.Input("learning_rate", default=HEDLIN.lr, min=1e-5, max=1.0, step=1e-5, round=False,
                               tooltip="Adam's learning rate for the embedding (the authors: 0.00238)."),
                io.Int.Input("timestep", default=HEDLIN_TIMESTEP, min=0, max=999, tooltip="Noise level the "
                             "attention is read at, in training timesteps (the authors: 141, little noise)."),
                io.Combo.Input("layers", options=list(LAYER_CHOICES), default=AUTHORS_LAYERS,
                               tooltip="Whose cross-attention is optimised and read: the four layers around the "
                               "UNet's middle, as the authors, or every cross-attention layer (finer maps)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the starting embeddings, "
                             "the noise and the crops."),
                io.Image.Input("target_image", optional=True, tooltip="The target image, for the preview only."),
                io.Image.Input("reference_image", optional=True, tooltip="The reference image, for the preview "
                               "only."),
            ],
            outputs=[
                io.String.Output(display_name="target_points", tooltip="The target points as fractions of the "
                                 "image, for Point Pairs."),
                io.String.Output(display_name="reference_points", tooltip="Where each target point lies on the "
                                 "reference, as fractions of the image, in the same order."),
                io.String.Output(display_name="confidences", tooltip="Per point, the share of the averaged "
                                 "attention map's mass around its peak (0..1): low means the peak is unsure."),
                io.Image.Output(display_name="preview", tooltip="Target beside reference, each pair numbered in "
                                "its colour and joined by a line (faint: low confidence)."),
            ],
        )

    @classmethod
    def execute(cls, model, conditioning, target, reference, target_points, steps, embeddings, crops, learning_rate,
                timestep, layers, seed, target_image=None, reference_image=None) -> io.NodeOutput:
        return io.NodeOutput(*find_corresponding_points(model, conditioning, target, reference, target_points, steps,
                                                        embeddings, crops, learning_rate, timestep, layers, seed,
                                                        target_image, reference_image))


def point_pairs(target_image, reference_image, target_points: str, reference_points: str, mode: str = HARD,
                radius: float = 0.1, strength: float = 1.0, constraint=None, node: str = PAIRS):
    """(constraint, preview): the pairs of points as a matching constraint, combined with ``constraint``."""
    check_choices(PointPairs, node, mode=mode)
    sizes = {}
    for name, image in (("target_image", target_image), ("reference_image", reference_image)):
        if not torch.is_tensor(image) or image.ndim != 4:
            raise ValueError(f"{node}: {name} is not an IMAGE.")
        sizes[name] = (int(image.shape[2]), int(image.shape[1]))
    target = read_points(target_points, *sizes["target_image"], "target_points", node)
    reference = read_points(reference_points, *sizes["reference_image"], "reference_points", node)
    if len(target) != len(reference):
        raise ValueError(f"{node}: {len(target)} target points but {len(reference)} reference points; give every "
                         "target point its reference point, in the same order.")
    if not target:
        raise ValueError(f"{node}: no points; type pairs on both images ({POINT_FORMAT}) or connect Find "
                         "Corresponding Points.")
    with named(node):
        pairs = PointConstraint(torch.tensor([target]), torch.tensor([reference]), radius, mode, strength)
    result = points_only(pairs)
    if constraint is not None:
        result = constraint.and_(result)
    preview = points_preview(target_image[0, ..., :3].float().cpu(), target, reference_image[0, ..., :3].float().cpu(),
                             reference, radius=radius)
    return result, preview.to(storage_device())


class PointPairs(io.ComfyNode):
    """Pairs of points on both images (typed or found) as a matching constraint."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("PointPairs"),
            display_name="Point Pairs (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=(
                "Target point k lies where reference point k lies (typed, or from Find Corresponding Points). Near "
                "each target point the matching then takes reference tokens near its reference point: only those "
                "(hard) or preferably those (soft). Elsewhere matching is as before. Combines with Pair Instances, "
                "Proxy Parts and Label Constraint."
            ),
            inputs=[
                io.Image.Input("target_image", tooltip="The target image: the points' size and the preview."),
                io.Image.Input("reference_image", tooltip="The reference image: the points' size and the preview."),
                io.String.Input("target_points", multiline=True, default="",
                                tooltip=f"Points on the target, {POINT_FORMAT}."),
                io.String.Input("reference_points", multiline=True, default="",
                                tooltip="The same number of points on the reference, in the same order, in the same "
                                "format."),
                io.Combo.Input("mode", options=list(MODES), default=HARD, tooltip="hard: tokens near a target "
                               "point match only tokens near its reference point; soft: they are pulled there "
                               "(a similarity bonus) but may match elsewhere."),
                io.Float.Input("radius", default=0.1, min=0.001, max=1.0, step=0.005, tooltip="How far around each "
                               "point the pair acts, as a fraction of the image's longer side (the token holding "
                               "the point always counts)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05, tooltip="soft only: the "
                               "largest similarity bonus (cosines lie in -1..1)."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Another constraint to combine with "
                                            "(Pair Instances, Proxy Parts, Label Constraint): both must hold."),
            ],
            outputs=[
                io.Custom(CONSTRAINT).Output(display_name="constraint", tooltip="For Match Correspondence or Apply "
                                             "Appearance Transfer (feature injection)."),
                io.Image.Output(display_name="preview", tooltip="Target beside reference, each pair numbered in its "
                                "colour, joined by a line, with the radius it acts in."),
            ],
        )

    @classmethod
    def execute(cls, target_image, reference_image, target_points, reference_points, mode, radius, strength,
                constraint=None) -> io.NodeOutput:
        return io.NodeOutput(*point_pairs(target_image, reference_image, target_points, reference_points, mode,
                                          radius, strength, constraint))


NODES = [FindCorrespondingPoints, PointPairs]
