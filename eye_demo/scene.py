"""Scenes of the synthetic world: poses, appearances (palettes and patterns), backgrounds.

A scene is plain data (dataclasses of numbers), so it can be copied, edited (give the
target the reference's appearance: the ideal transfer) and rendered again exactly.
Everything random is drawn from a numpy Generator seeded by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .anatomy import PART_LABELS, PATTERNED_PARTS, SPECIES, species_parts
from .colour import delta_e, in_gamut, lab_to_srgb, srgb_to_lab

# Creature size: at scale 1 a creature frame unit is this fraction of the image's short side.
UNIT = 0.6
SCALE_RANGE = (0.6, 1.0)
ROTATION_RANGE = 35.0  # degrees either way
WING_RANGE = (-15.0, 45.0)  # raise of the wing (bird) / lean of the dorsal fin (fish)
TAIL_RANGE = (-25.0, 25.0)
HEAD_RANGE = (-15.0, 15.0)
# Palette constraints (CIELAB deltaE76)
PART_SEPARATION = 25.0
BACKGROUND_SEPARATION = 20.0
PATTERN_SHIFT = 18.0  # lightness difference of a pattern's second colour


@dataclass(frozen=True)
class Pose:
    """Where and how a creature stands: centre in pixels, scale, rotation (degrees,
    counter-clockwise), flip (facing left), and articulation angles in degrees."""

    cx: float
    cy: float
    scale: float = 1.0
    rotation: float = 0.0
    flip: bool = False
    wing: float = 0.0
    tail: float = 0.0
    head: float = 0.0


@dataclass(frozen=True)
class Pattern:
    """A pattern on a part, a function of the part's (u, v): stripes or spots."""

    kind: str  # "stripes" | "spots"
    frequency: float
    angle: float  # radians (stripes)
    phase: tuple  # (pu, pv)
    size: float  # duty of stripes / radius of spots, as a fraction of the period
    rgb: tuple  # the pattern's colour


@dataclass(frozen=True)
class Appearance:
    """A creature's colours (sRGB per part label) and patterns: what a transfer carries over."""

    colours: dict  # label -> (r, g, b) in 0..1
    patterns: dict = field(default_factory=dict)  # label -> Pattern

    def lab(self, label: int) -> np.ndarray:
        return srgb_to_lab(np.array(self.colours[label]))


@dataclass(frozen=True)
class Creature:
    species: str
    pose: Pose
    appearance: Appearance


@dataclass(frozen=True)
class Background:
    """plain (one colour), gradient (two colours along an angle) or texture (a colour with a
    faint smooth pattern). Colours sRGB."""

    kind: str
    rgb: tuple
    rgb2: tuple = (0.0, 0.0, 0.0)
    angle: float = 0.0
    texture: tuple = ()  # ((fx, fy, phase), ...) sinusoids of the texture
    amplitude: float = 0.0

    def reference_labs(self) -> np.ndarray:
        """Colours the parts must keep their distance from (the extremes of the background)."""
        labs = [srgb_to_lab(np.array(self.rgb))]
        if self.kind == "gradient":
            labs += [srgb_to_lab(np.array(self.rgb2)), srgb_to_lab((np.array(self.rgb) + np.array(self.rgb2)) / 2)]
        if self.kind == "texture":
            base = np.array(self.rgb)
            labs += [srgb_to_lab(np.clip(base + self.amplitude, 0, 1)), srgb_to_lab(np.clip(base - self.amplitude, 0, 1))]
        return np.stack(labs)


@dataclass(frozen=True)
class Scene:
    """An image: its size (height, width), background and creatures (drawn in list order)."""

    height: int
    width: int
    background: Background
    creatures: tuple

    def with_appearances(self, appearances) -> "Scene":
        """The same scene with each creature's appearance replaced (None keeps it)."""
        creatures = tuple(c if a is None else replace(c, appearance=a) for c, a in zip(self.creatures, appearances))
        return replace(self, creatures=creatures)


# ---------------------------------------------------------------- geometry of a pose

def creature_to_pixel(pose: Pose, height: int, width: int) -> np.ndarray:
    """3x3 matrix: creature frame (x toward the head, y up) -> pixel (column, row)."""
    unit = UNIT * min(height, width) * pose.scale
    a = math.radians(pose.rotation)
    flip = -1.0 if pose.flip else 1.0
    # pixel rows grow downward: y up becomes -row
    rot = np.array([[math.cos(a), -math.sin(a)], [-math.sin(a), -math.cos(a)]])
    matrix = np.eye(3)
    matrix[:2, :2] = rot @ np.diag([flip * unit, unit])
    matrix[:2, 2] = (pose.cx, pose.cy)
    return matrix


def creature_bbox(species: str, pose: Pose, height: int, width: int) -> tuple:
    """(x0, y0, x1, y1) in pixels enclosing every part's drawing window (conservative)."""
    to_pixel = creature_to_pixel(pose, height, width)
    points = []
    for part in species_parts(species, pose.wing, pose.tail, pose.head):
        lx0, ly0, lx1, ly1 = part.local_box
        corners = np.array([[lx0, ly0, 1], [lx1, ly0, 1], [lx0, ly1, 1], [lx1, ly1, 1]], float).T
        points.append((to_pixel @ part.matrix @ corners)[:2])
    points = np.concatenate(points, axis=1)
    return (float(points[0].min()), float(points[1].min()), float(points[0].max()), float(points[1].max()))


# ---------------------------------------------------------------- sampling

def _random_lab(rng, lightness=(38.0, 88.0), chroma=(18.0, 75.0)) -> np.ndarray:
    while True:
        hue = rng.uniform(0, 2 * math.pi)
        c = rng.uniform(*chroma)
        lab = np.array([rng.uniform(*lightness), c * math.cos(hue), c * math.sin(hue)])
        if in_gamut(lab):
            return lab


def random_background(rng, kind: str | None = None) -> Background:
    kind = kind or str(rng.choice(["plain", "gradient", "texture"]))
    lab = _random_lab(rng, lightness=(22.0, 96.0), chroma=(0.0, 32.0))
    rgb = tuple(float(x) for x in lab_to_srgb(lab))
    if kind == "plain":
        return Background("plain", rgb)
    if kind == "gradient":
        for _ in range(100):
            lab2 = lab + rng.normal(0, 1, 3) * np.array([8.0, 5.0, 5.0])
            if in_gamut(lab2) and 6.0 <= delta_e(lab, lab2) <= 16.0:
                break
        else:
            lab2 = lab
        return Background("gradient", rgb, tuple(float(x) for x in lab_to_srgb(lab2)),
                          angle=float(rng.uniform(0, 2 * math.pi)))
    if kind == "texture":
        waves = tuple((float(rng.uniform(1.5, 6.0) * math.cos(t)), float(rng.uniform(1.5, 6.0) * math.sin(t)),
                       float(rng.uniform(0, 2 * math.pi))) for t in rng.uniform(0, 2 * math.pi, 3))
        return Background("texture", rgb, texture=waves, amplitude=float(rng.uniform(0.02, 0.045)))
    raise ValueError(f"background kind must be plain, gradient or texture, got {kind!r}")


def random_pattern(rng, lab: np.ndarray) -> Pattern:
    shift = PATTERN_SHIFT if (lab[0] < 60 or (lab[0] < 80 and rng.random() < 0.5)) else -PATTERN_SHIFT
    second = lab + np.array([shift, 0.0, 0.0])
    for _ in range(20):
        if in_gamut(second):
            break
        second[1:] *= 0.85
    kind = str(rng.choice(["stripes", "spots"]))
    return Pattern(kind, frequency=float(rng.uniform(2.5, 4.5)), angle=float(rng.uniform(0, math.pi)),
                   phase=(float(rng.random()), float(rng.random())),
                   size=float(rng.uniform(0.35, 0.5) if kind == "stripes" else rng.uniform(0.2, 0.3)),
                   rgb=tuple(float(x) for x in lab_to_srgb(second)))


def random_appearance(rng, background: Background, avoid: Appearance | None = None,
                      pattern_probability: float = 0.3) -> Appearance:
    """Part colours at least PART_SEPARATION apart, BACKGROUND_SEPARATION from the background,
    and (with ``avoid``) PART_SEPARATION from ``avoid``'s colour of the same part."""
    background_labs = background.reference_labs()
    for _attempt in range(200):
        labs = {}
        for label in PART_LABELS:
            for _ in range(400):
                lab = _random_lab(rng)
                if delta_e(background_labs, lab).min() < BACKGROUND_SEPARATION:
                    continue
                if any(delta_e(other, lab) < PART_SEPARATION for other in labs.values()):
                    continue
                if avoid is not None and delta_e(avoid.lab(label), lab) < PART_SEPARATION:
                    continue
                labs[label] = lab
                break
            else:
                break
        if len(labs) == len(PART_LABELS):
            break
    else:
        raise RuntimeError("could not draw a palette under the separation constraints")
    colours = {label: tuple(float(x) for x in lab_to_srgb(lab)) for label, lab in labs.items()}
    patterns = {label: random_pattern(rng, labs[label]) for label in PATTERNED_PARTS
                if rng.random() < pattern_probability}
    return Appearance(colours, patterns)


def random_pose(rng, species: str, height: int, width: int, region=None, scale_range=SCALE_RANGE,
                rotation_range=ROTATION_RANGE, margin: float = 2.0, **fixed) -> Pose:
    """A pose inside ``region`` (x0, y0, x1, y1 in pixels; default the whole image).

    Keyword arguments fix any pose field (e.g. ``flip=True``); the centre is then drawn
    so that the creature's box stays inside the region when it can.
    """
    x0, y0, x1, y1 = region or (0, 0, width, height)
    values = dict(
        scale=float(rng.uniform(*scale_range)),
        rotation=float(rng.uniform(-rotation_range, rotation_range)),
        flip=bool(rng.random() < 0.5),
        wing=float(rng.uniform(*WING_RANGE)),
        tail=float(rng.uniform(*TAIL_RANGE)),
        head=float(rng.uniform(*HEAD_RANGE)),
    )
    values.update({k: v for k, v in fixed.items() if k not in ("cx", "cy")})
    pose = Pose(cx=0.0, cy=0.0, **values)
    bx0, by0, bx1, by1 = creature_bbox(species, pose, height, width)
    low_x, high_x = x0 + margin - bx0, x1 - margin - bx1
    low_y, high_y = y0 + margin - by0, y1 - margin - by1
    cx = rng.uniform(low_x, high_x) if high_x > low_x else (low_x + high_x) / 2
    cy = rng.uniform(low_y, high_y) if high_y > low_y else (low_y + high_y) / 2
    return replace(pose, cx=float(fixed.get("cx", cx)), cy=float(fixed.get("cy", cy)))


def random_scene(seed: int, size=(128, 128), creatures: int = 1, species=None, background: str | None = None,
                 pattern_probability: float = 0.3, **pose) -> Scene:
    """A scene of 1 to 3 creatures side by side (left to right), all of it drawn from ``seed``.

    ``species``: one name for all, a list (one per creature) or None (random each).
    ``pose``: pose fields fixed for every creature (e.g. scale=0.8, flip=False).
    """
    if not 1 <= creatures <= 3:
        raise ValueError(f"a scene has 1 to 3 creatures, got {creatures}")
    rng = np.random.default_rng(seed)
    height, width = size
    bg = random_background(rng, background)
    if species is None or isinstance(species, str):
        names = [species or str(rng.choice(SPECIES)) for _ in range(creatures)]
    else:
        names = list(species)
    strip = width / creatures
    result = []
    for index, name in enumerate(names):
        region = (index * strip, 0, (index + 1) * strip, height)
        placed = random_pose(rng, name, height, width, region=region, **pose)
        result.append(Creature(name, placed, random_appearance(rng, bg, pattern_probability=pattern_probability)))
    return Scene(height, width, bg, tuple(result))
