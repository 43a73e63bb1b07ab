"""Corresponding points by prompt optimisation (Hedlin et al., NeurIPS 2023, arXiv 2305.15581), in plain torch.

The method: a text embedding is optimised so that the diffusion model's cross-attention to
its first token peaks, as a Gaussian, at a point of one image; the same embedding's attention
on the other image then peaks where that point lies there. This module holds the parts that
need no model: the Gaussian target, the loss, the random crops, the optimisation loop over a
differentiable ``attention(latent, context) -> maps`` function the host supplies, and reading
the peak (with a confidence) off averaged maps.

Defaults are the authors' (github.com/ubc-vision/LDM_correspondences, eval/eval.py), as
fractions of the image where they gave pixels of their 512 px images (:data:`HEDLIN`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PointSettings:
    """How one point is found. The authors' values are :data:`HEDLIN`.

    ``steps``: optimisation steps per embedding; ``lr``: Adam's learning rate; ``sigma``: the
    Gaussian target's standard deviation as a fraction of the image side (27.98 px of 512);
    ``crop``: the side of each random crop as a fraction of the image (93.2 %); ``embeddings``:
    embeddings optimised independently and averaged; ``crops``: crops of the other image whose
    attention maps are averaged when reading the point there.
    """

    steps: int = 129
    lr: float = 0.0023755632081200314
    sigma: float = 27.97853316316864 / 512
    crop: float = 0.9316549294381423
    embeddings: int = 5
    crops: int = 20

    def __post_init__(self):
        if self.steps < 1 or self.embeddings < 1 or self.crops < 1:
            raise ValueError("steps, embeddings and crops must be at least 1")
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(f"crop must be a fraction of the image in (0, 1], got {self.crop}")
        if not 0.0 < self.sigma < 1.0:
            raise ValueError(f"sigma must be a fraction of the image side in (0, 1), got {self.sigma}")


HEDLIN = PointSettings()


def gaussian_map(point, size, sigma: float, device=None) -> torch.Tensor:
    """(h, w) Gaussian of std ``sigma`` (a fraction of the longer side) at ``point`` = (x, y) fractions."""
    h, w = size
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    aspect_y, aspect_x = h / max(h, w), w / max(h, w)
    dy = (ys[:, None] - float(point[1])) * aspect_y
    dx = (xs[None, :] - float(point[0])) * aspect_x
    return torch.exp(-(dx ** 2 + dy ** 2) / (2.0 * sigma ** 2))


def attention_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The authors' loss: mean squared error of every layer's map (L, h, w) against the target (h, w)."""
    if maps.shape[-2:] != target.shape:
        maps = F.interpolate(maps[:, None], size=tuple(target.shape), mode="bilinear", align_corners=False)[:, 0]
    return F.mse_loss(maps, target.expand_as(maps))


def random_crop(point, fraction: float, generator: torch.Generator, margin: float = 0.15):
    """A crop (x0, y0, side_x, side_y) in fractions of the image that keeps ``point`` at least ``margin`` inside.

    The authors' crop: its side is ``fraction`` of the image, its corner drawn uniformly among
    the places that keep the point ``margin`` of the crop away from its edges (as far as the
    image allows).
    """
    corner = []
    for value in (float(point[0]), float(point[1])):
        low = min(max(0.0, value - fraction + margin * fraction), 1.0 - fraction)
        high = min(max(0.0, value - margin * fraction), 1.0 - fraction)
        low, high = min(low, high), max(low, high)
        corner.append(low + (high - low) * float(torch.rand((), generator=generator)))
    return corner[0], corner[1], fraction, fraction


def crop_latent(latent: torch.Tensor, crop) -> torch.Tensor:
    """The crop of a (B, C, h, w) latent, resized back to (h, w) bilinearly (a zoom, as the authors' crops)."""
    h, w = latent.shape[-2:]
    x0, y0, side_x, side_y = crop
    theta = torch.tensor([[side_x, 0.0, 2 * x0 + side_x - 1], [0.0, side_y, 2 * y0 + side_y - 1]],
                         dtype=latent.dtype, device=latent.device)[None].expand(latent.shape[0], -1, -1)
    grid = F.affine_grid(theta, list(latent.shape), align_corners=False)
    return F.grid_sample(latent, grid, mode="bilinear", padding_mode="border", align_corners=False)


def point_in_crop(point, crop):
    """``point`` (x, y fractions of the image) in fractions of ``crop``."""
    x0, y0, side_x, side_y = crop
    return (float(point[0]) - x0) / side_x, (float(point[1]) - y0) / side_y


def uncrop_map(maps: torch.Tensor, crop, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (L, h_c, w_c) of a crop placed back on the (h, w) image: (sum, coverage) for averaging."""
    h, w = size
    x0, y0, side_x, side_y = crop
    top, left = int(round(y0 * h)), int(round(x0 * w))
    height, width = max(1, int(round(side_y * h))), max(1, int(round(side_x * w)))
    height, width = min(height, h - top), min(width, w - left)
    placed = torch.zeros(maps.shape[0], h, w, dtype=maps.dtype, device=maps.device)
    cover = torch.zeros(h, w, dtype=maps.dtype, device=maps.device)
    placed[:, top:top + height, left:left + width] = F.interpolate(
        maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    cover[top:top + height, left:left + width] = 1.0
    return placed, cover


def optimise_embedding(attention, latent: torch.Tensor, point, init: torch.Tensor, settings: PointSettings = HEDLIN,
                       generator: torch.Generator | None = None, on_step=None) -> tuple[torch.Tensor, list[float]]:
    """One embedding whose first-token cross-attention peaks at ``point`` of ``latent``: (embedding, losses).

    ``attention(latent, context) -> (L, h, w)`` maps, differentiable in ``context``; ``init``
    (1, tokens, dim) the starting embedding (the authors draw it from N(0, 1)). Each step sees a
    random crop of the latent (``settings.crop``) with the point moved accordingly.
    ``on_step(step)`` may raise to stop (Cancel) and drives a progress bar.
    """
    generator = generator or torch.Generator().manual_seed(0)
    context = init.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([context], lr=settings.lr)
    losses = []
    for step in range(settings.steps):
        if on_step is not None:
            on_step(step)
        crop = random_crop(point, settings.crop, generator) if settings.crop < 1.0 else (0.0, 0.0, 1.0, 1.0)
        view = crop_latent(latent, crop) if settings.crop < 1.0 else latent
        maps = attention(view, context)
        loss = attention_loss(maps, gaussian_map(point_in_crop(point, crop), maps.shape[-2:], settings.sigma,
                                                 maps.device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return context.detach(), losses


def read_point(maps: torch.Tensor) -> tuple[tuple[float, float], float]:
    """The peak (x, y fractions) of averaged maps (L, h, w) and a confidence in 0..1.

    The confidence is the share of the map's mass in the 3 x 3 cells around the peak, after
    the map is shifted to be non-negative: 1 for a single sharp peak, about 9 / (h w) for a
    flat map.
    """
    heat = maps.float().mean(dim=0)
    heat = heat - heat.min()
    h, w = heat.shape
    flat = int(torch.argmax(heat))
    row, col = divmod(flat, w)
    total = float(heat.sum())
    near = float(heat[max(0, row - 1):row + 2, max(0, col - 1):col + 2].sum())
    confidence = near / total if total > 0 else 0.0
    return ((col + 0.5) / w, (row + 0.5) / h), min(1.0, confidence)


def find_in_other(attention, latent: torch.Tensor, contexts: list[torch.Tensor], point_hint=None,
                  settings: PointSettings = HEDLIN, generator: torch.Generator | None = None, on_step=None):
    """Where the embeddings' attention peaks on ``latent``: ((x, y) fractions, confidence), maps averaged over crops.

    As the authors read it: the first four crops anchored at the image's corners, then crops
    around the running peak; maps of overlapping crops are averaged pixel by pixel, and the
    maps of every embedding are averaged.
    """
    generator = generator or torch.Generator().manual_seed(0)
    size = tuple(latent.shape[-2:])
    total, cover = None, None
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    with torch.no_grad():
        for index in range(settings.crops):
            if on_step is not None:
                on_step(index)
            if settings.crop >= 1.0:
                crop = (0.0, 0.0, 1.0, 1.0)
            elif index < len(corners):
                x, y = corners[index]
                crop = ((1.0 - settings.crop) * x, (1.0 - settings.crop) * y, settings.crop, settings.crop)
            else:
                peak, _ = read_point(total / cover.clamp(min=1.0))
                crop = random_crop(peak, settings.crop, generator)
            view = crop_latent(latent, crop) if settings.crop < 1.0 else latent
            maps = torch.stack([attention(view, c).mean(dim=0) for c in contexts])
            placed, covered = uncrop_map(maps, crop, _map_size(maps, size))
            total = placed if total is None else total + placed
            cover = covered if cover is None else cover + covered
    averaged = total / cover.clamp(min=1.0)
    return read_point(averaged) + (averaged,)


def _map_size(maps: torch.Tensor, latent_size) -> tuple[int, int]:
    """The resolution the crops' maps are combined at: the finest of the maps and the latent."""
    h, w = maps.shape[-2:]
    return max(h, latent_size[0]), max(w, latent_size[1])


def pck(found, truth, size: float, threshold: float = 0.1) -> float:
    """Share of found points within ``threshold`` x ``size`` (the object's size) of the truth (PCK@threshold)."""
    if not found:
        return math.nan
    hits = [math.dist(a, b) <= threshold * size for a, b in zip(found, truth)]
    return sum(hits) / len(hits)


def corresponding_points(target_attention, reference_attention, target_latent: torch.Tensor,
                         reference_latent: torch.Tensor, points, make_init, settings: PointSettings = HEDLIN,
                         seed: int = 0, on_step=None):
    """Each target point's place on the reference: a list of ((x, y) fractions, confidence).

    The whole method for every point: ``settings.embeddings`` embeddings optimised on the
    target (``target_attention``, see :func:`optimise_embedding`), then read together on the
    reference (``reference_attention``, :func:`find_in_other`). ``make_init(generator)``
    draws a starting embedding; ``seed`` makes the crops and embeddings reproducible, point
    by point. ``on_step()`` is called once per UNet call (progress, Cancel). The caller runs
    this with autograd enabled (outside inference mode).
    """
    tick = (lambda _=None: on_step()) if on_step is not None else None
    found = []
    for index, point in enumerate(points):
        generator = torch.Generator().manual_seed(int(seed) + 7919 * index)
        contexts = []
        for _ in range(settings.embeddings):
            context, _ = optimise_embedding(target_attention, target_latent, point, make_init(generator), settings,
                                            generator, tick)
            contexts.append(context)
        where, confidence, _ = find_in_other(reference_attention, reference_latent, contexts, None, settings,
                                             generator, tick)
        found.append((where, confidence))
    return found


def unet_calls(settings: PointSettings, points: int = 1) -> int:
    """UNet calls the method makes for ``points`` points: optimisation (with backward) plus reading."""
    return points * settings.embeddings * (settings.steps + settings.crops)
