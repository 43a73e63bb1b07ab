"""Binary masks grown or shrunk by whole pixels (numpy only).

Metrics are taken on each part's region shrunk by a pixel or two, so anti-aliased borders
(where a pixel mixes two colours) never decide a score.
"""

from __future__ import annotations

import numpy as np


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """``mask`` (H, W) grown by ``radius`` pixels (square neighbourhood, 8-connected)."""
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def erode(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """``mask`` shrunk by ``radius`` pixels: pixels whose whole neighbourhood is inside."""
    return ~dilate(~np.asarray(mask, bool), radius)


def part_interiors(labels: np.ndarray, marks: np.ndarray | None = None, radius: int = 1) -> np.ndarray:
    """Pixels deep inside their part (label > 0), ``radius`` pixels from any other label,
    and (with ``marks``) as far from any marking or pattern's second colour."""
    keep = np.zeros(labels.shape, bool)
    for label in np.unique(labels):
        if label > 0:
            keep |= erode(labels == label, radius)
    if marks is not None:
        keep &= ~dilate(marks, radius)
    return keep
