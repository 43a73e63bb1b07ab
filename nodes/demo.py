"""The demo: Load Eye Demo Model (the small model shipped with the pack) and Eye Demo Scene
(pairs of the synthetic world with their masks, part maps and ideal transfer)."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.v0_0_2 import io

from ..eye_demo.anatomy import PART_LABELS
from ..eye_demo.pairs import MULTI, SCENE_CATEGORIES, SPECIES_CHOICES, ideal_transfer, make_pair, swapped_pair
from ..eye_demo.render import render
from ..eye_demo.training.data import caption
from .common import CATEGORY, node_id

DEMO_CATEGORY = f"{CATEGORY}/demo"
# One colour per part label for the part-map preview (background dark grey).
PART_COLOURS = np.array([[0.16, 0.16, 0.16], [0.90, 0.20, 0.20], [0.98, 0.78, 0.10], [0.20, 0.45, 0.95],
                         [0.15, 0.75, 0.30], [0.80, 0.25, 0.80], [0.60, 0.60, 0.60]], np.float32)
assert len(PART_COLOURS) == len(PART_LABELS) + 1


class LoadDemoModel(io.ComfyNode):
    """MODEL, CLIP and VAE of the demo model that ships inside the pack (nothing to download)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LoadDemoModel"),
            display_name="Load Eye Demo Model",
            category=DEMO_CATEGORY,
            description=(
                "The small diffusion model that ships with the pack, trained on the synthetic world of Eye Demo Scene "
                "(birds and fish at 128 x 128). An SD1.5-family model (UNet, KL VAE, text encoder on ComfyUI's own "
                "classes): every stock node works with it. Prompts: 'a photo of a bird', 'a photo of a fish'. It "
                "only knows its world; use your own checkpoint for real photographs. Its self-attention carries appearance "
                "from one image to another, which the transfer needs; its own drawings are rough creature shapes "
                "(see eye_demo/MODEL_CARD.md)."
            ),
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The demo UNet (SD1.5 family, epsilon prediction)."),
                io.Clip.Output(display_name="CLIP", tooltip="The demo text encoder: 'a photo of a bird' or "
                               "'a photo of a fish'."),
                io.Vae.Output(display_name="VAE", tooltip="The demo VAE (downscale 8, 4 latent channels)."),
            ],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from ..comfy_adapter.demo_model import load_demo

        model, clip, vae, _metadata = load_demo()
        return io.NodeOutput(model, clip, vae)


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]


def _part_map(labels: np.ndarray) -> np.ndarray:
    return PART_COLOURS[labels.astype(int)]


class DemoScene(io.ComfyNode):
    """A target and a reference from the synthetic world, with their masks, part maps and ideal transfer."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DemoScene"),
            display_name="Eye Demo Scene",
            category=DEMO_CATEGORY,
            description=(
                "Draws a pair of the synthetic world: a target creature and a reference creature with other colours, "
                "posed by the chosen category. The world knows every right answer: the masks are exact, the part map "
                "shows which part is which (the same colour for the same part in both images), and 'ideal' is the "
                "perfect transfer (the target's pose and background in the reference's colours). No image files "
                "needed."
            ),
            inputs=[
                io.Int.Input("seed", default=1, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Which pair: every seed draws other creatures, colours, poses and backgrounds."),
                io.Combo.Input("category", options=list(SCENE_CATEGORIES), default="flipped", tooltip=(
                    "How the reference differs from the target: aligned (same pose), moved (translated and "
                    "rescaled), flipped (facing the other way), rotated (30 degrees or more apart), articulated "
                    "(wing and tail angles), cross-species (a bird and a fish: head, beak/mouth, body, wing/dorsal "
                    "fin, tail and legs/pelvic fins correspond). Two or three creatures, swapped: the reference "
                    "shows the target's creatures in another order (the image is that many times wider).")),
                io.Combo.Input("species", options=list(SPECIES_CHOICES), default="bird", tooltip=(
                    "The target's species (cross-species: the reference is the other one; several creatures: the "
                    "first one, the others alternate bird and fish); random: from the seed.")),
                io.Int.Input("size", default=128, min=64, max=1024, step=64, tooltip=(
                    "Image side in pixels. The demo model was trained at 128; use 512 with an SD1.5 checkpoint.")),
            ],
            outputs=[
                io.Image.Output(display_name="target", tooltip="The image whose structure is kept."),
                io.Image.Output(display_name="reference", tooltip="The image whose colours are transferred."),
                io.Mask.Output(display_name="target_mask", tooltip="The target creature's exact mask."),
                io.Mask.Output(display_name="reference_mask", tooltip="The reference creature's exact mask."),
                io.Image.Output(display_name="ideal", tooltip="The perfect transfer, drawn by the renderer: the "
                                "target's pose and background with the reference's part colours and patterns."),
                io.Image.Output(display_name="part_maps", tooltip="The target and the reference side by side, each pixel "
                                "coloured by its part (head red, beak yellow, body blue, wing green, tail magenta, legs grey): the "
                                "same part has the same colour in both."),
                io.String.Output(display_name="target_prompt", tooltip="The target's prompt: 'a photo of a bird' or "
                                 "'a photo of a fish'."),
                io.String.Output(display_name="reference_prompt", tooltip="The reference's prompt: 'a photo of a "
                                 "bird' or 'a photo of a fish'."),
                io.Mask.Output(display_name="target_instances", tooltip="One exact mask per target creature, left to "
                               "right (a MASK batch: instance 1 first)."),
                io.Mask.Output(display_name="reference_instances", tooltip="One exact mask per reference creature, "
                               "left to right."),
                io.String.Output(display_name="pairs", tooltip="The true pairing as text ('1>2, 2>1': target "
                                 "creature > its reference counterpart), to type into Pair Instances or to compare "
                                 "with the automatic one."),
            ],
        )

    @classmethod
    def execute(cls, seed, category, species, size) -> io.NodeOutput:
        if category not in SCENE_CATEGORIES:
            raise ValueError(f"Eye Demo Scene: unknown category {category!r}; choose one of "
                             f"{', '.join(SCENE_CATEGORIES)}.")
        if species not in SPECIES_CHOICES:
            raise ValueError(f"Eye Demo Scene: species must be one of {', '.join(SPECIES_CHOICES)}, got {species!r}.")
        if size % 8 or size < 64:
            raise ValueError(f"Eye Demo Scene: size must be a multiple of 8 and at least 64, got {size}.")
        if category in MULTI:
            count = MULTI[category]
            names = None
            if species != "random":
                other = "fish" if species == "bird" else "bird"
                names = [species if i % 2 == 0 else other for i in range(count)]
            target, reference, pairing = swapped_pair(seed, creatures=count, size=(size, size * count),
                                                      species=names)
        else:
            target, reference = make_pair(seed, category, size=(size, size),
                                          species=None if species == "random" else species)
            pairing = [0]
        t, r = render(target), render(reference)
        ideal = render(ideal_transfer(target, reference, pairing)).image
        part_maps = np.concatenate([_part_map(t.labels), np.ones((size, 2, 3), np.float32), _part_map(r.labels)], 1)
        pairs = ", ".join(f"{i + 1}>{j + 1}" for i, j in enumerate(pairing))
        return io.NodeOutput(
            _image(t.image), _image(r.image),
            torch.from_numpy(t.object_mask.astype(np.float32))[None],
            torch.from_numpy(r.object_mask.astype(np.float32))[None],
            _image(ideal), _image(part_maps),
            caption([c.species for c in target.creatures]), caption([c.species for c in reference.creatures]),
            torch.from_numpy(t.instance_masks.astype(np.float32)), torch.from_numpy(r.instance_masks.astype(np.float32)),
            pairs,
        )


NODES = [LoadDemoModel, DemoScene]
