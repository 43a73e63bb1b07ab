"""sRGB (D65) <-> CIELAB and the colour difference deltaE76.

The synthetic world draws its palettes in CIELAB (so "clearly distinct" is a perceptual
distance) and the quality metrics compare colours there. numpy only; arrays of any
shape whose last axis holds the three channels; sRGB in 0..1.
"""

from __future__ import annotations

import numpy as np

# D65 white point, XYZ with Y = 1
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def srgb_to_linear(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear):
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.clip(linear, 0, None) ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB in 0..1 (..., 3) -> CIELAB (..., 3): L in 0..100."""
    xyz = srgb_to_linear(rgb) @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_srgb(lab, clip: bool = True) -> np.ndarray:
    """CIELAB (..., 3) -> sRGB (..., 3); clipped to 0..1 unless ``clip`` is False (then a value
    outside 0..1 says the colour is out of the sRGB gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f ** 3 > _EPSILON, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE
    rgb = linear_to_srgb(xyz @ _XYZ_TO_RGB.T)
    return np.clip(rgb, 0.0, 1.0) if clip else rgb


def delta_e(lab_a, lab_b) -> np.ndarray:
    """CIE76 colour difference (Euclidean distance in CIELAB); broadcasts."""
    return np.linalg.norm(np.asarray(lab_a, dtype=np.float64) - np.asarray(lab_b, dtype=np.float64), axis=-1)


def in_gamut(lab, tolerance: float = 1e-6) -> np.ndarray:
    """True where a CIELAB colour is displayable in sRGB."""
    rgb = lab_to_srgb(lab, clip=False)
    return np.all((rgb >= -tolerance) & (rgb <= 1 + tolerance), axis=-1)
