"""Load SAM-HQ Model and SAM-HQ Segment: object masks of the target and the reference.

``segment-anything-hq`` (and ``timm``, which it needs at import without declaring it) is
imported only when a model is loaded, so these nodes always appear in the node library
and, without the libraries, say what to install when used; every other node works.

Batch layout of SAM-HQ Segment: every image of the IMAGE batch gets the same N prompts
(one per box, or one for points only / the whole image). ``masks`` is one MASK batch of
B*N masks, image-major: row ``b * N + n`` is prompt n of image b (with one box it is
simply one mask per image). ``union`` is (B, H, W), the prompts of each image merged.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch
from comfy_api.v0_0_2 import io

from ..eye_core.masks import (
    ARCHITECTURES,
    CHECKPOINT_NAMES,
    PromptError,
    DOWNLOAD_URL,
    PROJECT_URL,
    architecture_from_name,
    architecture_from_state_dict,
    build_prompts,
    is_hq_state_dict,
    keep_inside_boxes as cut_to_boxes,
    read_state_dict,
    sam_masks,
    union,
)
from ..eye_core.visualize import mask_overlay
from ..comfy_adapter.memory import storage_device
from ..comfy_adapter.progress import check_interrupt, progress_bar
from ..comfy_adapter.sam_models import (load_for_segmenting, register_sams_folder, sam_checkpoint_names,
                                        sam_checkpoint_path, sam_devices, sam_patcher)
from .common import CATEGORY, check_choices, node_id

LOG = logging.getLogger("eye_for_an_eye")

SAM_MODEL = "EYE_SAM_MODEL"
AUTO_ARCHITECTURE = "auto (from file name)"
DEVICES = ("auto", "GPU", "CPU")
NO_CHECKPOINT = "(no SAM-HQ checkpoint in models/sams: see the tooltip)"
# The checkpoint the README recommends and every example workflow names (the authors' choice).
DEFAULT_CHECKPOINT = CHECKPOINT_NAMES["vit_l"]
INSTALL_HINT = "pip install segment-anything-hq timm"
# Working memory of one 1024x1024 SAM pass on the GPU (activations of the ViT-H encoder, with margin).
WORKING_BYTES = 1536 * 1024 ** 2


class SamDependencyError(ImportError):
    """segment-anything-hq or timm is missing."""

    __module__ = "eye_for_an_eye"  # ComfyUI shows module.Class: not the install path of the pack


class SamCheckpointError(FileNotFoundError):
    """No usable SAM-HQ checkpoint."""

    __module__ = "eye_for_an_eye"


def import_sam_hq():
    """The ``segment_anything_hq`` module, or an error saying exactly what to install."""
    try:
        with warnings.catch_warnings():
            # its TinyViT re-registers timm model names at import ("Overwriting tiny_vit_... in registry")
            warnings.filterwarnings("ignore", message=".*in registry.*", category=UserWarning)
            warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
            import segment_anything_hq
    except ImportError as error:
        missing = getattr(error, "name", None) or "segment_anything_hq"
        package = "timm" if missing.split(".")[0] == "timm" else "segment-anything-hq"
        raise SamDependencyError(
            f"Load SAM-HQ Model: the SAM-HQ nodes need the Python packages segment-anything-hq and timm ({package} is missing: "
            f"{error}). Install them into ComfyUI's Python environment: `{INSTALL_HINT}` (segment-anything-hq "
            "needs timm although it does not declare it), then restart ComfyUI. Every other Eye-for-an-eye node "
            "works without them."
        ) from error
    return segment_anything_hq


def _missing_checkpoint_message(name: str) -> str:
    folders = register_sams_folder()
    expected = ", ".join(CHECKPOINT_NAMES[a] for a in ARCHITECTURES)
    what = "no SAM-HQ checkpoint was found" if name in ("", NO_CHECKPOINT) else f"'{name}' was not found"
    return (
        f"Load SAM-HQ Model: {what} in the sams model folder(s): {', '.join(folders)}. Put one of {expected} "
        f"there (sam_hq_vit_l.pth is the authors' choice, sam_hq_vit_tiny.pth the small and fast Light HQ-SAM) "
        f"and refresh the node list (press R). Download them from {DOWNLOAD_URL} (files: {DOWNLOAD_URL}/tree/main; "
        f"the project's list: {PROJECT_URL}). Another folder can be added under the key 'sams' in "
        "extra_model_paths.yaml."
    )


def _checkpoint_options() -> list[str]:
    names = sam_checkpoint_names()
    return names if names else [NO_CHECKPOINT]


def _default_checkpoint(options: list[str]) -> str:
    """sam_hq_vit_l.pth when it is there (in any sams folder), else the first file."""
    named = [name for name in options if os.path.basename(name) == DEFAULT_CHECKPOINT]
    return named[0] if named else options[0]


@dataclass
class SamHQModel:
    """A loaded SAM-HQ model (the EYE_SAM_MODEL type): a ModelPatcher ComfyUI's memory manager loads.

    Its image encoder computes in fp16 on a device that does it well, fp32 on the CPU
    (comfy_adapter.sam_models.sam_dtype); ``dtype`` is the image encoder's.
    """

    patcher: object
    architecture: str
    checkpoint: str

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model.sam

    @property
    def compute_device(self) -> torch.device:
        return self.patcher.load_device

    @property
    def offload_device(self) -> torch.device:
        return self.patcher.offload_device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.image_encoder.parameters()).dtype

    def __repr__(self):
        return (f"SamHQModel({self.architecture}, {self.checkpoint}, {self.dtype}, compute={self.compute_device}, "
                f"idle={self.offload_device})")


def _architecture(choice: str, name: str, state_dict) -> str:
    from_weights = architecture_from_state_dict(state_dict)
    if choice in ARCHITECTURES:
        architecture = choice
    else:
        architecture = architecture_from_name(name) or from_weights
        if architecture is None:
            raise ValueError(f"Load SAM-HQ Model: cannot tell the architecture of '{name}' from its name or its "
                             f"weights; set architecture to one of {', '.join(ARCHITECTURES)}.")
    if from_weights is not None and from_weights != architecture:
        raise ValueError(f"Load SAM-HQ Model: '{name}' holds {from_weights} weights but the architecture is "
                         f"{architecture}; set architecture to {from_weights} or '{AUTO_ARCHITECTURE}'.")
    return architecture


def load_sam_hq(name: str, architecture: str = AUTO_ARCHITECTURE, device: str = "auto") -> SamHQModel:
    """Build the SAM-HQ module for a checkpoint of the sams folders and load its weights (on the CPU, fp32)."""
    registry = import_sam_hq().sam_model_registry
    path = sam_checkpoint_path(name) if name != NO_CHECKPOINT else None
    if path is None or not os.path.isfile(path):
        raise SamCheckpointError(_missing_checkpoint_message(name))
    sam_devices(device)  # a device the host cannot give is refused before the file is read
    state_dict = read_state_dict(path)
    if not is_hq_state_dict(state_dict):
        raise ValueError(
            f"Load SAM-HQ Model: '{name}' is not a SAM-HQ checkpoint (HQ-SAM's decoder weights hf_token/hf_mlp are "
            f"missing; is it an original Segment Anything checkpoint?). Download a sam_hq_vit_*.pth from "
            f"{DOWNLOAD_URL}.")
    arch = _architecture(architecture, name, state_dict)
    module = registry[arch](checkpoint=None)  # the registry's own loading uses torch.load without map_location
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        raise ValueError(f"Load SAM-HQ Model: the weights of '{name}' do not fit the {arch} architecture; choose "
                         f"another architecture. ({str(error).splitlines()[0]})") from error
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise ValueError(f"Load SAM-HQ Model: '{name}' lacks {len(result.missing_keys)} weights of the {arch} "
                         f"architecture (e.g. {shown}); is it a complete SAM-HQ {arch} checkpoint?")
    if result.unexpected_keys:
        LOG.info("[Eye-for-an-eye] %s: ignored %d weights not used by SAM-HQ %s (e.g. %s)", name,
                 len(result.unexpected_keys), arch, result.unexpected_keys[0])
    del state_dict
    module.eval().requires_grad_(False)
    return SamHQModel(sam_patcher(module, device), arch, name)


class LoadSAMHQModel(io.ComfyNode):
    """Loads a SAM-HQ checkpoint from models/sams."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        options = _checkpoint_options()
        expected = ", ".join(CHECKPOINT_NAMES[a] for a in ARCHITECTURES)
        return io.Schema(
            node_id=node_id("LoadSAMHQModel"),
            display_name="Load SAM-HQ Model (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Loads a SAM-HQ (HQ-SAM) checkpoint from models/sams for SAM-HQ Segment. The model waits on the CPU "
                "and visits the GPU only while it segments. Needs the Python packages segment-anything-hq and timm."
            ),
            inputs=[
                io.Combo.Input("checkpoint", options=options, default=_default_checkpoint(options), tooltip=(
                    f"A SAM-HQ checkpoint in models/sams (or a 'sams' folder of extra_model_paths.yaml; create "
                    f"models/sams if it is missing): {expected}. Default: {DEFAULT_CHECKPOINT} (the authors' "
                    f"choice) when it is there; sam_hq_vit_tiny.pth is small and fast. Download: {DOWNLOAD_URL}")),
                io.Combo.Input("architecture", options=[AUTO_ARCHITECTURE, *ARCHITECTURES], default=AUTO_ARCHITECTURE,
                               tooltip="The network the checkpoint belongs to. auto reads it from the file name "
                               "(vit_tiny, vit_b, vit_l, vit_h), else from the weights; set it for renamed files."),
                io.Combo.Input("device", options=list(DEVICES), default="auto", tooltip=(
                    "Where SAM-HQ runs: auto = ComfyUI's device (the GPU if there is one), GPU (refused on a "
                    "CPU-only host), CPU. ComfyUI loads and unloads it like its other models; its image encoder "
                    "runs in fp16 where the GPU does that well, float32 on the CPU.")),
            ],
            outputs=[
                io.Custom(SAM_MODEL).Output(display_name="sam_model", tooltip="The loaded SAM-HQ model; connect it "
                                            "to SAM-HQ Segment (one loader can serve every Segment node)."),
            ],
        )

    @classmethod
    def execute(cls, checkpoint, architecture, device) -> io.NodeOutput:
        check_choices(cls, "Load SAM-HQ Model", architecture=architecture, device=device)
        return io.NodeOutput(load_sam_hq(checkpoint, architecture, device))


class SAMHQSegment(io.ComfyNode):
    """Masks of an image batch from box and point prompts, with a preview."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("SAMHQSegment"),
            display_name="SAM-HQ Segment (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Segments the object in a box (and/or at points) with SAM-HQ, as the authors mask the target and the "
                "reference. Every image of the batch gets the same prompts. masks holds one mask per prompt per "
                "image, image-major (row b*N+n is prompt n of image b); union merges each image's masks."
            ),
            inputs=[
                io.Custom(SAM_MODEL).Input("sam_model", tooltip="The output of Load SAM-HQ Model."),
                io.Image.Input("image", tooltip="The image(s) to segment; a batch is segmented image by image with "
                               "the same prompts."),
                io.String.Input("boxes", default="", multiline=True, tooltip=(
                    "Box prompts: 'x0,y0,x1,y1' = left, top, right, bottom, in pixels of the image (e.g. "
                    "'40,30,200,220') or relative to its size, which fits any image: fractions of the width and "
                    "height written with a decimal point ('0.1,0.1,0.9,0.9': from 10 % to 90 % of each side) or "
                    "percentages ('10%,10%,90%,90%'). Several boxes: separate them with ';' or new lines (one mask "
                    "each). A box reaching outside the image is clipped. Empty: the whole image (or the points "
                    "alone, if given).")),
                io.String.Input("positive_points", default="", multiline=False, tooltip=(
                    "Optional points on the object, 'x,y' in pixels or relative like the boxes ('0.5,0.4', "
                    "'50%,40%'), several separated by ';' (e.g. '120,80; 140,96'). They are added to every box "
                    "prompt.")),
                io.String.Input("negative_points", default="", multiline=False, tooltip=(
                    "Optional points on what must NOT be in the mask, 'x,y' in pixels or relative like the boxes, "
                    "separated by ';'.")),
                io.Boolean.Input("hq_token_only", default=True, tooltip=(
                    "On: the HQ output token's mask only (the authors' setting, finest boundaries). Off: the sum of "
                    "SAM's mask and the HQ mask.")),
                io.Boolean.Input("keep_inside_boxes", default=False, optional=True, tooltip=(
                    "On: each mask is cut to its own box. For several objects, one box each, so that one object's "
                    "mask never spills onto a neighbour that looks alike. Off: SAM's masks as they are (the "
                    "authors' setting).")),
            ],
            outputs=[
                io.Mask.Output(display_name="masks", tooltip="One mask per prompt per image, (B*N, H, W) of 0/1 at "
                               "image size, image-major: row b*N+n is prompt n of image b. One box: one mask per "
                               "image."),
                io.Mask.Output(display_name="union", tooltip="The masks of each image merged, (B, H, W): the object "
                               "mask the transfer nodes take."),
                io.Image.Output(display_name="preview", tooltip="The masks tinted over the image (one colour per "
                                "prompt) with the boxes outlined and the points marked (green positive, red "
                                "negative)."),
            ],
        )

    @classmethod
    def execute(cls, sam_model, image, boxes, positive_points, negative_points, hq_token_only,
                keep_inside_boxes=False) -> io.NodeOutput:
        if not isinstance(sam_model, SamHQModel):
            raise TypeError("SAM-HQ Segment: sam_model must come from Load SAM-HQ Model (Eye-for-an-eye).")
        if image.ndim != 4 or image.shape[0] == 0 or min(image.shape[1:3]) == 0:
            raise ValueError(f"SAM-HQ Segment: the image is empty or not an IMAGE batch (shape {tuple(image.shape)})")
        batch, height, width = (int(s) for s in image.shape[:3])
        try:
            prompts = build_prompts(boxes, positive_points, negative_points, width, height)
        except PromptError as error:
            raise PromptError(f"SAM-HQ Segment: {error}") from None
        pbar = progress_bar(batch)
        results = []
        load_for_segmenting(sam_model.patcher, WORKING_BYTES)  # ComfyUI unloads it again when memory is needed
        for index in range(batch):
            check_interrupt()
            picture = image[index, ..., :3] if image.shape[-1] >= 3 else image[index].expand(-1, -1, 3)
            masks = sam_masks(sam_model.model, picture, prompts, hq_token_only=hq_token_only)
            if keep_inside_boxes and not prompts.whole_image and prompts.boxes is not None:
                masks = cut_to_boxes(masks, prompts.boxes)
            results.append(masks.to("cpu", torch.float32))
            pbar.update(1)
        store = storage_device()
        masks = torch.cat(results).to(store)
        merged = union(masks, batch)
        drawn_boxes = None if prompts.whole_image else prompts.boxes
        preview = mask_overlay(image.to(store), masks.reshape(batch, prompts.count, height, width), drawn_boxes,
                               prompts.points, prompts.labels)
        return io.NodeOutput(masks, merged, preview)


NODES = [LoadSAMHQModel, SAMHQSegment]
