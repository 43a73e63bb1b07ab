"""Is a generated picture a creature of the prompted species? A judge fitted on renders.

The demo model's samples carry no ground truth, so they are judged by what can be seen:
the background is estimated from the border (a plane in CIELAB fits plain, gradient and
faint textured backgrounds), the object is the largest connected region that stands out
from it, and a few shape statistics of that silhouette (size, elongation, how much of
its principal-axis box it fills, how ragged its outline is, colour variety inside) are
compared with the same statistics of renders of each species (nearest class mean in
standardised units). Noise, an empty background or a smear has no plausible silhouette;
a bird drawn for "a fish" is classified as a bird.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .anatomy import SPECIES
from .colour import delta_e, srgb_to_lab

FOREGROUND_DELTA_E = 15.0
FEATURES = ("area", "elongation", "fill", "ragged", "colours")


def background_model(lab: np.ndarray, border: int = 3) -> np.ndarray:
    """The background everywhere, as a plane in CIELAB fitted to the border pixels (H, W, 3)."""
    height, width = lab.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    edge = np.zeros((height, width), bool)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = True, True, True, True
    design = np.stack([np.ones(edge.sum()), rows[edge] / height, cols[edge] / width], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, lab[edge], rcond=None)
    full = np.stack([np.ones(height * width), rows.ravel() / height, cols.ravel() / width], axis=1)
    return (full @ coefficients).reshape(height, width, 3)


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    height, width = mask.shape
    seen = np.zeros_like(mask, bool)
    best = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        region, queue = [], deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask, bool)
    if best:
        out[tuple(np.array(best).T)] = True
    return out


def silhouette(image: np.ndarray) -> np.ndarray:
    """The object of an sRGB image (H, W, 3) in 0..1: the largest region far from the background."""
    lab = srgb_to_lab(np.clip(image, 0, 1))
    foreground = delta_e(lab, background_model(lab)) > FOREGROUND_DELTA_E
    return largest_region(foreground)


def shape_features(image: np.ndarray) -> np.ndarray:
    """(area, elongation, fill, ragged, colours) of the image's silhouette (NaN when there is none)."""
    mask = silhouette(image)
    area = mask.sum()
    if area < 20:
        return np.full(len(FEATURES), np.nan)
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], 1).astype(float)
    points -= points.mean(0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(points.T))
    projected = points @ vectors
    extent = projected.max(0) - projected.min(0) + 1
    perimeter = (mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
    lab = srgb_to_lab(np.clip(image, 0, 1))[mask]
    # colour variety: how many distinct colour clusters (20 deltaE boxes) hold at least 3 % of the object
    cells, counts = np.unique(np.floor(lab / 20.0).astype(int), axis=0, return_counts=True)
    colours = (counts >= 0.03 * area).sum()
    return np.array([area / mask.size, np.sqrt(eigenvalues[1] / max(eigenvalues[0], 1e-6)),
                     area / np.prod(extent), perimeter / np.sqrt(area), colours], float)


@dataclass
class SpeciesJudge:
    """Nearest class mean on standardised shape features; ``plausible`` bounds from the renders."""

    means: dict
    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, count: int = 200, seed: int = 0, size: int = 128) -> "SpeciesJudge":
        """Fit on ``count`` renders per species (single creatures, the training distribution's poses)."""
        from .render import render
        from .scene import random_scene

        features = {name: np.stack([shape_features(render(random_scene(seed + i, size=(size, size),
                                                                       species=name)).image)
                                    for i in range(count)]) for name in SPECIES}
        everything = np.concatenate(list(features.values()))
        scale = np.nanstd(everything, 0) + 1e-9
        return cls({name: np.nanmean(f, 0) for name, f in features.items()}, scale,
                   np.nanpercentile(everything, 1, 0), np.nanpercentile(everything, 99, 0))

    def plausible(self, features: np.ndarray, margin: float = 0.5) -> bool:
        """The silhouette looks like one of the world's creatures (within the renders' 1-99 % range,
        widened by ``margin`` of that range)."""
        if np.isnan(features).any():
            return False
        width = self.high - self.low
        return bool(np.all((features >= self.low - margin * width) & (features <= self.high + margin * width)))

    def species(self, features: np.ndarray) -> str | None:
        if np.isnan(features).any():
            return None
        distances = {name: np.linalg.norm((features - mean) / self.scale) for name, mean in self.means.items()}
        return min(distances, key=distances.get)

    def judge(self, image: np.ndarray) -> tuple[bool, str | None]:
        """(plausible creature, species) of one sRGB image (H, W, 3) in 0..1."""
        features = shape_features(image)
        return self.plausible(features), self.species(features)
