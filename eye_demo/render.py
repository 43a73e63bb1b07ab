"""The renderer: a scene -> image, instance masks, part labels and canonical coordinates.

Rendering is inverse mapping: every sample point is taken through each part's inverse
placement into the part's own frame; inside the shape it belongs to that part (the
topmost in drawing order) and carries the part's (u, v). Colours are supersampled
(anti-aliased edges); labels, (u, v) and instances are read at pixel centres (hard).
Two renders of one creature therefore agree exactly in canonical coordinates, and the
ideal transfer of a pair is this same renderer with the reference's appearance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .anatomy import BACKGROUND, EYE_PUPIL, EYE_PUPIL_RGB, EYE_WHITE, EYE_WHITE_RGB, SHADE, SHADE_FACTOR, species_parts
from .scene import Background, Scene, creature_to_pixel


@dataclass
class Render:
    """What the renderer returns for a scene of height H and width W with N creatures.

    image: (H, W, 3) float32 sRGB in 0..1, anti-aliased.
    labels: (H, W) int8, the part label at each pixel centre (0: background; anatomy.PART_LABELS).
    uv: (H, W, 2) float32, the pixel's (u, v) in its part's frame; NaN on the background.
    instances: (H, W) int8, 0 on the background, k for the k-th creature (1-based).
    marks: (H, W) bool, pixels drawn as a marking (eye, feather line, ray, gill) or a pattern's
        second colour: not the part's plain colour.
    """

    image: np.ndarray
    labels: np.ndarray
    uv: np.ndarray
    instances: np.ndarray
    marks: np.ndarray

    @property
    def instance_masks(self) -> np.ndarray:
        """(N, H, W) bool, one visible-pixel mask per creature (N = largest instance id)."""
        count = int(self.instances.max())
        return np.stack([self.instances == k for k in range(1, count + 1)]) if count else \
            np.zeros((0,) + self.labels.shape, bool)

    @property
    def object_mask(self) -> np.ndarray:
        return self.instances > 0


def _background_colour(background: Background, xs, ys, height, width) -> np.ndarray:
    base = np.array(background.rgb, np.float32)
    shape = xs.shape + (3,)
    if background.kind == "plain":
        return np.broadcast_to(base, shape).copy()
    if background.kind == "gradient":
        direction = np.array([math.cos(background.angle), math.sin(background.angle)])
        half = 0.5 * (abs(direction[0]) * width + abs(direction[1]) * height)
        t = ((xs - width / 2) * direction[0] + (ys - height / 2) * direction[1]) / max(half, 1e-6)
        t = np.clip((t + 1) / 2, 0, 1)[..., None]
        return (base * (1 - t) + np.array(background.rgb2, np.float32) * t).astype(np.float32)
    if background.kind == "texture":
        side = min(height, width)
        wave = np.zeros(xs.shape, np.float32)
        for fx, fy, phase in background.texture:
            wave += np.sin(2 * math.pi * (fx * xs + fy * ys) / side + phase)
        wave /= max(len(background.texture), 1)
        return np.clip(base + background.amplitude * wave[..., None], 0, 1).astype(np.float32)
    raise ValueError(f"unknown background kind {background.kind!r}")


def _pattern_hits(pattern, u, v):
    if pattern.kind == "stripes":
        t = (u * math.cos(pattern.angle) + v * math.sin(pattern.angle)) * pattern.frequency + pattern.phase[0]
        return (t - np.floor(t)) < pattern.size
    if pattern.kind == "spots":
        du = u * pattern.frequency + pattern.phase[0]
        dv = v * pattern.frequency + pattern.phase[1]
        du, dv = du - np.floor(du) - 0.5, dv - np.floor(dv) - 0.5
        return du * du + dv * dv < pattern.size ** 2
    raise ValueError(f"unknown pattern kind {pattern.kind!r}")


def rasterize(scene: Scene, xs: np.ndarray, ys: np.ndarray) -> dict:
    """Everything the scene shows at sample points (pixel coordinates, any shape).

    Returns colour (..., 3), label, u, v, instance and mark (bool) arrays.
    """
    colour = _background_colour(scene.background, xs, ys, scene.height, scene.width)
    label = np.zeros(xs.shape, np.int8)
    u = np.full(xs.shape, np.nan, np.float32)
    v = np.full(xs.shape, np.nan, np.float32)
    instance = np.zeros(xs.shape, np.int8)
    mark = np.zeros(xs.shape, bool)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    for index, creature in enumerate(scene.creatures, start=1):
        pose = creature.pose
        to_pixel = creature_to_pixel(pose, scene.height, scene.width)
        for part in species_parts(creature.species, pose.wing, pose.tail, pose.head):
            full = to_pixel @ part.matrix
            lx0, ly0, lx1, ly1 = part.local_box
            corners = full @ np.array([[lx0, lx1, lx0, lx1], [ly0, ly0, ly1, ly1], [1, 1, 1, 1]], float)
            window = ((points[0] >= corners[0].min() - 1) & (points[0] <= corners[0].max() + 1)
                      & (points[1] >= corners[1].min() - 1) & (points[1] <= corners[1].max() + 1))
            where = np.flatnonzero(window)
            if where.size == 0:
                continue
            local = np.linalg.inv(full) @ points[:, where]
            inside, pu, pv, pmark = part.shape(local[0], local[1], part.size)
            hit = where[inside]
            if hit.size == 0:
                continue
            pu, pv, pmark = pu[inside], pv[inside], pmark[inside]
            appearance = creature.appearance
            rgb = np.broadcast_to(np.array(appearance.colours[part.label], np.float32), (hit.size, 3)).copy()
            marked = np.zeros(hit.size, bool)
            pattern = appearance.patterns.get(part.label)
            if pattern is not None:
                patterned = _pattern_hits(pattern, pu, pv)
                rgb[patterned] = np.array(pattern.rgb, np.float32)
                marked |= patterned
            shade = pmark == SHADE
            rgb[shade] *= SHADE_FACTOR
            rgb[pmark == EYE_WHITE] = EYE_WHITE_RGB
            rgb[pmark == EYE_PUPIL] = EYE_PUPIL_RGB
            marked |= pmark != 0
            flat = (colour.reshape(-1, 3), label.reshape(-1), u.reshape(-1), v.reshape(-1),
                    instance.reshape(-1), mark.reshape(-1))
            flat[0][hit] = rgb
            flat[1][hit] = part.label
            flat[2][hit] = pu
            flat[3][hit] = pv
            flat[4][hit] = index
            flat[5][hit] = marked
    return {"colour": colour, "label": label, "u": u, "v": v, "instance": instance, "mark": mark}


def render(scene: Scene, supersample: int = 3) -> Render:
    """Draw ``scene``: colours averaged over supersample x supersample points per pixel,
    labels, (u, v), instances and marks at pixel centres."""
    height, width = scene.height, scene.width
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    centre = rasterize(scene, cols + 0.5, rows + 0.5)
    offsets = (np.arange(supersample) + 0.5) / supersample
    fine_rows = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    fine_cols = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    fine_y, fine_x = np.meshgrid(fine_rows, fine_cols, indexing="ij")
    fine = rasterize(scene, fine_x, fine_y)["colour"]
    image = fine.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    uv = np.stack([centre["u"], centre["v"]], axis=-1).astype(np.float32)
    return Render(image=image.astype(np.float32), labels=centre["label"], uv=uv, instances=centre["instance"],
                  marks=centre["mark"])


def background_only(scene: Scene) -> np.ndarray:
    """The scene's background alone (H, W, 3): what the target's background must stay."""
    rows, cols = np.mgrid[0:scene.height, 0:scene.width].astype(np.float64)
    return _background_colour(scene.background, cols + 0.5, rows + 0.5, scene.height, scene.width)


__all__ = ["Render", "render", "rasterize", "background_only", "BACKGROUND"]
