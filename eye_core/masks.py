"""SAM-HQ object masks from box and point prompts, in plain torch.

The authors restrict matching (and AdaIN) to the object with an HQ-SAM mask from a box
prompt per image (``hq_token_only=True``, one mask per prompt); no box means the whole
image. This module holds the parts that need no ComfyUI and no ``segment_anything_hq``
import:

* parsing the prompt text users type into a node (boxes ``"x0,y0,x1,y1; ..."``, points
  ``"x,y; ..."``, in pixels or relative to the image size: ``"0.1,0.1,0.9,0.9"``,
  ``"10%,10%,90%,90%"``) with errors that name the input and the expected format;
* clipping boxes to the image;
* reading a checkpoint (``map_location="cpu"``, ``weights_only=True``) and telling its
  architecture from the file name or the weights;
* running an already built SAM-HQ module (duck-typed: ``image_encoder``,
  ``prompt_encoder``, ``mask_decoder``, ``preprocess``, ``postprocess_masks``) on one image
  with several prompts, all prompts sharing one image embedding.

Coordinates are pixels of the image as given: x to the right, y down, (0, 0) the top-left
corner of the top-left pixel, (W, H) the bottom-right corner of the image.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ARCHITECTURES = ("vit_tiny", "vit_b", "vit_l", "vit_h")
CHECKPOINT_NAMES = {arch: f"sam_hq_{arch}.pth" for arch in ARCHITECTURES}
DOWNLOAD_URL = "https://huggingface.co/lkeab/hq-sam"
PROJECT_URL = "https://github.com/SysCV/sam-hq#model-checkpoints"

BOX_FORMAT = ("'x0,y0,x1,y1' (left, top, right, bottom) in pixels, or as fractions of the image's width and height "
              "(all four between 0 and 1, written with a decimal point: '0.1,0.1,0.9,0.9') or in percent "
              "('10%,10%,90%,90%'); several boxes separated by ';' or new lines, e.g. '10,20,200,180; 220,40,300,120'")
POINT_FORMAT = ("'x,y' in pixels, or as fractions ('0.5,0.4') or percentages ('50%,40%') of the image's width and "
                "height; several points separated by ';' or new lines, e.g. '120,80; 140,96'")

# A box narrower or lower than this (in pixels) is a typing mistake, not an object.
MIN_BOX_PIXELS = 4.0
_GROUP_SPLIT = re.compile(r"[;\n\r]+")
_NUMBER_SPLIT = re.compile(r"[,\s]+")
# ViT widths of the encoders (patch embedding channels) and the TinyViT marker key.
_VIT_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


class PromptError(ValueError):
    """A box or point prompt cannot be read or does not fit the image."""

    __module__ = "eye_for_an_eye"  # ComfyUI shows module.Class: not the install path of the pack


# --------------------------------------------------------------------------- prompt text

def _groups(text: str | None) -> list[str]:
    if text is None:
        return []
    return [g.strip() for g in _GROUP_SPLIT.split(str(text)) if g.strip()]


def _numbers(group: str, count: int, what: str, index: int, input_name: str, expected: str, size=None) -> list:
    """The ``count`` numbers of one group, in pixels when ``size`` = (width, height) is given.

    A group is relative when every number is a percentage ('10%') or when all numbers lie
    in 0..1 and at least one is written with a decimal point ('0.1,0.1,0.9,0.9'): x values
    are then fractions of the width, y values of the height. Without ``size`` relative
    values are returned as fractions.
    """
    body = group.strip().strip("[]()").strip()
    parts = [p for p in _NUMBER_SPLIT.split(body) if p]
    percent = [p.endswith("%") for p in parts]
    try:
        values = [float(p[:-1] if p.endswith("%") else p) for p in parts]
    except ValueError:
        values = None
    if values is None or len(values) != count or not all(math.isfinite(v) for v in values):
        raise PromptError(f"{input_name}: {what} {index} ('{group}') is not {count} numbers. Expected {expected}.")
    if any(percent) and not all(percent):
        raise PromptError(f"{input_name}: {what} {index} ('{group}') mixes percentages with other numbers; write all "
                          f"{count} as percentages ('10%') or none. Expected {expected}.")
    if all(percent):
        values = [v / 100.0 for v in values]
    relative = all(percent) or (all(0.0 <= v <= 1.0 for v in values) and any("." in p for p in parts))
    if not relative and any("." in p for p in parts) and all(abs(v) <= 2.0 for v in values):
        # '0.1,0.1,1.5,1.5' or '-0.5,-0.5,0.2,0.2': meant as fractions, but not all inside 0..1
        raise PromptError(f"{input_name}: {what} {index} ('{group}') looks like fractions of the image but not all "
                          f"its numbers lie between 0 and 1, so it would be read as pixels (a box of a pixel or "
                          f"two). Keep fractions within 0..1, or give pixels. Expected {expected}.")
    if relative and size is not None:
        width, height = size
        values = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
    return values


def parse_boxes(text: str | None, input_name: str = "boxes", size=None) -> list[tuple[float, float, float, float]]:
    """``"x0,y0,x1,y1; x0,y0,x1,y1"`` -> a list of boxes (empty text -> empty list).

    Groups are separated by ``;`` or new lines, numbers by commas and/or spaces; brackets
    around a group are ignored (a pasted ``[10, 20, 30, 40]`` works). Boxes in fractions or
    percent of the image (see :func:`_numbers`) are turned into pixels of the ``size`` =
    (width, height) image when it is given. A box must have x1 > x0 and y1 > y0: a
    zero-area or inverted box is an error, not silently fixed.
    """
    boxes = []
    for index, group in enumerate(_groups(text), start=1):
        x0, y0, x1, y1 = _numbers(group, 4, "box", index, input_name, BOX_FORMAT, size)
        if x1 == x0 or y1 == y0:
            side = "width (x1 = x0)" if x1 == x0 else "height (y1 = y0)"
            raise PromptError(f"{input_name}: box {index} ('{group}') has zero area: zero {side}. A box is "
                              f"{BOX_FORMAT}; give the right/bottom edge, not the width/height.")
        if x1 < x0 or y1 < y0:
            raise PromptError(f"{input_name}: box {index} ('{group}') is inverted: its right/bottom edge lies "
                              f"left of/above its left/top edge. A box is {BOX_FORMAT}.")
        if size is not None and min(x1 - x0, y1 - y0) < MIN_BOX_PIXELS:
            raise PromptError(f"{input_name}: box {index} ('{group}') is only {x1 - x0:.3g} x {y1 - y0:.3g} pixels of "
                              f"the {size[0]}x{size[1]} image, too small to segment anything. A box is {BOX_FORMAT}.")
        boxes.append((x0, y0, x1, y1))
    return boxes


def parse_points(text: str | None, input_name: str = "points", size=None) -> list[tuple[float, float]]:
    """``"x,y; x,y"`` -> a list of points (empty text -> empty list); relative points as in :func:`parse_boxes`."""
    return [tuple(_numbers(group, 2, "point", index, input_name, POINT_FORMAT, size))
            for index, group in enumerate(_groups(text), start=1)]


def clip_boxes(boxes, width: int, height: int, input_name: str = "boxes") -> torch.Tensor:
    """Clip boxes to the ``width`` x ``height`` image; (N, 4) float32.

    A box reaching outside the image is cut at its border; a box with no area left inside
    the image is an error naming it.
    """
    out = []
    for index, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        cx0, cx1 = min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))
        cy0, cy1 = min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))
        if cx1 <= cx0 or cy1 <= cy0:
            raise PromptError(f"{input_name}: box {index} ({x0:g},{y0:g},{x1:g},{y1:g}) lies outside the "
                              f"{width}x{height} image (x from 0 to {width}, y from 0 to {height}).")
        out.append((cx0, cy0, cx1, cy1))
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def check_points(points, width: int, height: int, input_name: str = "points") -> torch.Tensor:
    """Points as an (P, 2) float32 tensor; a point outside the image is an error naming it."""
    for index, (x, y) in enumerate(points, start=1):
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise PromptError(f"{input_name}: point {index} ({x:g},{y:g}) lies outside the {width}x{height} image "
                              f"(x from 0 to {width}, y from 0 to {height}).")
    return torch.tensor(list(points), dtype=torch.float32).reshape(-1, 2)


@dataclass
class Prompts:
    """What one Segment call asks for; every image of the batch gets the same prompts.

    ``boxes`` (N, 4) or None; ``points`` (P, 2) and ``labels`` (P,) (1 positive,
    0 negative) or None. ``count`` is the number of masks per image: one per box, or one
    when there is no box (the points alone, or the whole image without points).
    """

    boxes: torch.Tensor | None
    points: torch.Tensor | None
    labels: torch.Tensor | None
    whole_image: bool

    @property
    def count(self) -> int:
        return 1 if self.boxes is None else int(self.boxes.shape[0])


def build_prompts(boxes_text: str | None, positive_text: str | None, negative_text: str | None, width: int,
                  height: int, names=("boxes", "positive_points", "negative_points")) -> Prompts:
    """Parse and check the three prompt inputs against a ``width`` x ``height`` image.

    No box and no point -> one box covering the whole image (the authors' default). No box
    but points -> the points alone prompt one mask. Boxes and points -> every box is
    prompted together with all the points.
    """
    size = (width, height)
    boxes = parse_boxes(boxes_text, names[0], size)
    positive = parse_points(positive_text, names[1], size)
    negative = parse_points(negative_text, names[2], size)
    box_tensor = clip_boxes(boxes, width, height, names[0]) if boxes else None
    points = labels = None
    if positive or negative:
        points = torch.cat([check_points(positive, width, height, names[1]),
                            check_points(negative, width, height, names[2])])
        labels = torch.tensor([1] * len(positive) + [0] * len(negative), dtype=torch.int64)
    whole = box_tensor is None and points is None
    if whole:
        box_tensor = torch.tensor([[0.0, 0.0, float(width), float(height)]])
    return Prompts(box_tensor, points, labels, whole)


# --------------------------------------------------------------------------- checkpoints

def architecture_from_name(name: str) -> str | None:
    """``sam_hq_vit_l.pth`` -> ``vit_l``; also ``vit-h``, ``vit_t``, ``tiny``; None if unclear."""
    stem = os.path.basename(str(name)).lower()
    if re.search(r"vit[_-]?t(iny)?(?![a-z])|tiny", stem):
        return "vit_tiny"
    found = {f"vit_{m}" for m in re.findall(r"vit[_-]?([hlb])(?![a-z])", stem)}
    return found.pop() if len(found) == 1 else None


def architecture_from_state_dict(state_dict) -> str | None:
    """The architecture the weights were trained for, from their keys and shapes (None if unknown)."""
    if any(k.startswith("image_encoder.layers.") for k in state_dict):
        return "vit_tiny"
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    return _VIT_WIDTHS.get(int(patch.shape[0])) if patch is not None else None


def is_hq_state_dict(state_dict) -> bool:
    """True when the weights hold HQ-SAM's extra decoder parts (an original SAM checkpoint lacks them)."""
    return any(k.startswith("mask_decoder.hf_token") for k in state_dict)


def read_state_dict(path: str) -> dict:
    """Read a checkpoint onto the CPU, whatever device it was saved from.

    ``.safetensors`` through safetensors; anything else through ``torch.load`` with
    ``map_location="cpu"`` and ``weights_only=True`` (a checkpoint holding code is refused).
    A ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is unwrapped.
    """
    if str(path).lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{os.path.basename(str(path))} does not hold a SAM-HQ state dict (a dict of tensors)")
    return state


# --------------------------------------------------------------------------- inference

def sam_input_size(height: int, width: int, long_side: int = 1024) -> tuple[int, int]:
    """The size SAM sees: the long side scaled to ``long_side``, the aspect ratio kept."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_image_tensor(image: torch.Tensor, long_side: int = 1024) -> torch.Tensor:
    """(H, W, 3) image in 0..1 -> (1, 3, h, w) in 0..255 at SAM's input size (not yet normalised/padded)."""
    size = sam_input_size(image.shape[0], image.shape[1], long_side)
    x = image[..., :3].permute(2, 0, 1).unsqueeze(0).float() * 255.0
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 255.0).round()


@torch.no_grad()
def sam_masks(sam, image: torch.Tensor, prompts: Prompts, hq_token_only: bool = True,
              multimask_output: bool = False) -> torch.Tensor:
    """Masks of one image for every prompt: (N, H, W) float32 of 0/1 at the image's size.

    ``sam`` is a built SAM-HQ module; ``image`` is (H, W, 3) in 0..1 on any device (it is
    resized there, then moved to the module's device). One image embedding serves all N
    prompts. The image encoder may be in fp16 (where nearly all the work is); the prompt
    encoder and mask decoder stay fp32, since SAM's prompt encoder casts coordinates to fp32.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    parameter = next(sam.mask_decoder.parameters())
    encoder_dtype = next(sam.image_encoder.parameters()).dtype
    long_side = int(sam.image_encoder.img_size)
    # resized where the image lives (antialiased resizing is not available on every backend), then moved
    pixels = sam_image_tensor(image, long_side).to(parameter.device, torch.float32)
    input_size = tuple(pixels.shape[-2:])
    embeddings, interm = sam.image_encoder(sam.preprocess(pixels).to(encoder_dtype))
    embeddings = embeddings.to(parameter.dtype)
    interm = [x.to(parameter.dtype) for x in interm]
    scale = torch.tensor([input_size[1] / width, input_size[0] / height], device=parameter.device)
    boxes = points = None
    count = prompts.count
    if prompts.boxes is not None:
        boxes = (prompts.boxes.to(parameter.device).reshape(-1, 2, 2) * scale).reshape(-1, 4).to(parameter.dtype)
    if prompts.points is not None:
        coords = (prompts.points.to(parameter.device) * scale).to(parameter.dtype)
        labels = prompts.labels.to(parameter.device)
        points = (coords.unsqueeze(0).expand(count, -1, -1), labels.unsqueeze(0).expand(count, -1))
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, _ = sam.mask_decoder(
        image_embeddings=embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        hq_token_only=hq_token_only,
        interm_embeddings=interm,
    )
    logits = sam.postprocess_masks(low_res, input_size, (height, width))
    return (logits[:, 0] > getattr(sam, "mask_threshold", 0.0)).float()


def keep_inside_boxes(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Masks (N, H, W) with everything outside their own box (N, 4: x0, y0, x1, y1 in pixels) cleared.

    A pixel counts as inside when its centre is in the box. For several objects in one image,
    one box each: SAM's mask of one object can spill onto a neighbour that looks alike.
    """
    height, width = masks.shape[-2:]
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    b = boxes.to(masks.device, torch.float32)
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (N, H)
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (N, W)
    return masks * (inside_y[:, :, None] & inside_x[:, None, :]).to(masks.dtype)


def union(masks: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*N, H, W) image-major masks -> (B, H, W): each image's masks merged (maximum)."""
    return masks.reshape(batch, -1, *masks.shape[-2:]).amax(dim=1)
