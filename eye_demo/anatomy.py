"""The creatures of the synthetic world: species, their semantic parts and the part shapes.

Every part is a shape in its own canonical frame, placed on a small skeleton (the body
at the root, the other parts at joints whose angles are the articulation). Part labels
are shared across species, so a bird's wing and a fish's dorsal fin are "the same part"
(label 4) and any two creatures, of one species or two, have an exact correspondence:

| label | bird | fish |
|---|---|---|
| 1 head | head (with an eye) | head (with an eye and a gill line) |
| 2 beak | beak | mouth |
| 3 body | body | body |
| 4 wing | wing (feather lines) | dorsal fin (rays) |
| 5 tail | tail fan (ribs) | forked tail fin (rays) |
| 6 legs | two legs with feet | two pelvic fins |

Coordinates: the creature frame has x toward the head and y **up**, in creature units
(the body of a bird is 0.62 long). A part's local frame maps its canonical coordinates
(u, v) in [0, 1]^2 to the creature frame; the scene transform (pose) maps the creature
frame to pixels. Everything here is plain numpy and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

BACKGROUND = 0
HEAD, BEAK, BODY, WING, TAIL, LEGS = 1, 2, 3, 4, 5, 6
PART_LABELS = (HEAD, BEAK, BODY, WING, TAIL, LEGS)
PART_KEYS = {HEAD: "head", BEAK: "beak", BODY: "body", WING: "wing", TAIL: "tail", LEGS: "legs"}
SPECIES = ("bird", "fish")
PART_NAMES = {
    "bird": {HEAD: "head", BEAK: "beak", BODY: "body", WING: "wing", TAIL: "tail", LEGS: "legs"},
    "fish": {HEAD: "head", BEAK: "mouth", BODY: "body", WING: "dorsal fin", TAIL: "tail fin", LEGS: "pelvic fins"},
}
# Parts that may carry a pattern (stripes, spots): the large ones.
PATTERNED_PARTS = (BODY, WING, TAIL)

# Marking kinds a shape reports per sample (structure, drawn the same for every palette):
NO_MARK, SHADE, EYE_WHITE, EYE_PUPIL = 0, 1, 2, 3
SHADE_FACTOR = 0.55  # a marking is the part's own colour darkened (feather lines, rays, gill line)
EYE_WHITE_RGB = (0.96, 0.96, 0.94)
EYE_PUPIL_RGB = (0.06, 0.06, 0.08)


# ---------------------------------------------------------------- shapes in local frames
#
# A shape takes local coordinates (lx, ly) of its frame and the frame's size in creature
# units, and returns (inside, u, v, mark). Box shapes have their box at [0, 1]^2; fans are
# given creature units around their joint (size (1, 1)).

def _ellipse(lx, ly, size):
    inside = (2 * lx - 1) ** 2 + (2 * ly - 1) ** 2 <= 1
    return inside, lx, ly, np.zeros(lx.shape, np.int8)


def _eye(lx, ly, size, centre, radius, mark):
    """Marks an eye (white ring, black pupil) at ``centre`` (local coords) of radius in creature units."""
    dx = (lx - centre[0]) * size[0]
    dy = (ly - centre[1]) * size[1]
    distance = np.hypot(dx, dy)
    mark = np.where(distance <= radius, EYE_WHITE, mark)
    return np.where(distance <= radius * 0.52, EYE_PUPIL, mark).astype(np.int8)


def _bird_head(lx, ly, size):
    inside, u, v, mark = _ellipse(lx, ly, size)
    return inside, u, v, _eye(lx, ly, size, (0.63, 0.60), 0.052, mark)


def _fish_head(lx, ly, size):
    inside, u, v, mark = _ellipse(lx, ly, size)
    gill = np.abs(lx - (0.16 + 0.16 * (2 * ly - 1) ** 2)) < 0.045
    mark = np.where(gill, SHADE, mark).astype(np.int8)
    return inside, u, v, _eye(lx, ly, size, (0.66, 0.62), 0.052, mark)


def _triangle(lx, ly, size):
    inside = (lx >= 0) & (lx <= 1) & (np.abs(ly - 0.5) <= 0.5 * (1 - lx))
    return inside, lx, ly, np.zeros(lx.shape, np.int8)


def _wing(lx, ly, size):
    """A teardrop: rounded at the shoulder (lx 0), pointed at the tip (lx 1), feather lines across."""
    front = np.sqrt(np.clip(1 - ((0.3 - lx) / 0.3) ** 2, 0, None))
    back = np.cos(np.clip((lx - 0.3) / 0.7, 0, 1) * math.pi / 2) ** 0.9
    half = np.where(lx < 0.3, front, back)
    inside = (lx >= 0) & (lx <= 1) & (np.abs(ly - 0.5) <= 0.5 * half)
    phase = (lx - 0.42) / 0.17
    feathers = (lx > 0.36) & (lx < 0.9) & (np.abs(phase - np.round(phase)) * 0.17 < 0.03)
    return inside, lx, ly, np.where(feathers, SHADE, NO_MARK).astype(np.int8)


def _fan(x, y, size, length, half_angle, forked=False, rays=(0.2, 0.4, 0.6, 0.8)):
    """A circular sector around its joint (x along the axis): u = radius / length, v = angle across."""
    radius = np.hypot(x, y)
    angle = np.arctan2(y, x)
    u = radius / length
    v = (angle + half_angle) / (2 * half_angle)
    inside = (u <= 1) & (np.abs(angle) <= half_angle) & (x > 0)
    if forked:
        inside &= ~((u > 0.62) & (np.abs(v - 0.5) < 0.32 * (u - 0.62) / 0.38))
    ray = np.zeros(x.shape, bool)
    for k in rays:
        ray |= np.abs(v - k) * (2 * half_angle) * np.maximum(radius, 1e-6) < 0.0085
    mark = np.where(ray & (u > 0.3), SHADE, NO_MARK).astype(np.int8)
    return inside, np.clip(u, 0, 1), np.clip(v, 0, 1), mark


def _leg(lx, ly, size, index):
    """A leg pointing down the local x axis with a foot forward (ly up to 2); two legs share the frame,
    the first in v 0..0.5, the second in 0.5..1."""
    shaft = (lx >= 0) & (lx <= 1) & (ly >= 0) & (ly <= 1)
    foot = (lx >= 0.82) & (lx <= 1) & (ly >= 0) & (ly <= 2.1)
    v = (index + np.clip(ly / 2.1, 0, 1)) / 2
    return shaft | foot, np.clip(lx, 0, 1), v, np.zeros(lx.shape, np.int8)


def _side_fan(x, y, size, length, half_angle, index):
    inside, u, v, mark = _fan(x, y, size, length, half_angle, rays=(0.33, 0.66))
    return inside, u, (index + v) / 2, mark


# ---------------------------------------------------------------- placed parts

@dataclass(frozen=True)
class PlacedPart:
    """One part placed on the skeleton: local frame -> creature frame, and its shape."""

    label: int
    matrix: np.ndarray  # 3x3: local (lx, ly, 1) -> creature (x, y, 1)
    size: tuple  # (length, width) in creature units, passed to the shape
    shape: Callable
    local_box: tuple  # (lx0, ly0, lx1, ly1): where the shape can be inside (for drawing windows)


def _rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _box_part(label, anchor, direction, length, width, shape, local_box=(0, 0, 1, 1), centred=True):
    """A box frame whose local x runs along ``direction`` (degrees) from ``anchor`` for ``length``.

    ``centred``: the anchor is the middle of the box's left edge (ly 0.5); otherwise its corner.
    """
    rot = _rotation(direction)
    matrix = np.eye(3)
    matrix[:2, 0] = rot[:, 0] * length
    matrix[:2, 1] = rot[:, 1] * width
    offset = np.array(anchor, float) - (rot[:, 1] * width * 0.5 if centred else 0)
    matrix[:2, 2] = offset
    return PlacedPart(label, matrix, (length, width), shape, local_box)


def _centred_box(label, centre, length, width, shape, direction=0.0):
    """A box frame centred on ``centre`` (used for the body and the head)."""
    rot = _rotation(direction)
    corner = np.array(centre, float) - rot @ np.array([length / 2, width / 2])
    matrix = np.eye(3)
    matrix[:2, 0] = rot[:, 0] * length
    matrix[:2, 1] = rot[:, 1] * width
    matrix[:2, 2] = corner
    return PlacedPart(label, matrix, (length, width), shape, (0, 0, 1, 1))


def _fan_part(label, joint, direction, length, shape):
    rot = _rotation(direction)
    matrix = np.eye(3)
    matrix[:2, :2] = rot
    matrix[:2, 2] = joint
    return PlacedPart(label, matrix, (1.0, 1.0), shape, (-length, -length, length, length))


def bird_parts(wing: float = 0.0, tail: float = 0.0, head: float = 0.0) -> list[PlacedPart]:
    """A bird facing +x, back to front (draw in this order). Angles in degrees."""
    neck = np.array([0.22, 0.10])
    head_centre = neck + _rotation(head) @ np.array([0.10, 0.06])
    beak_base = head_centre + _rotation(head) @ np.array([0.11, -0.02])
    legs = [
        _box_part(LEGS, (x, -0.15), -90.0, 0.24, 0.05,
                  lambda lx, ly, s, i=i: _leg(lx, ly, s, i), local_box=(0, 0, 1, 2.1))
        for i, x in enumerate((-0.07, 0.07))
    ]
    tail_length = 0.36
    return legs + [
        _fan_part(TAIL, (-0.25, 0.03), 165.0 + tail, tail_length,
                  lambda x, y, s: _fan(x, y, s, tail_length, math.radians(24))),
        _centred_box(BODY, (0.0, 0.0), 0.62, 0.40, _ellipse),
        _box_part(WING, (0.06, 0.07), 172.0 - wing, 0.42, 0.17, _wing),
        _box_part(BEAK, beak_base, head, 0.22, 0.15, _triangle),
        _centred_box(HEAD, head_centre, 0.30, 0.30, _bird_head, direction=head),
    ]


def fish_parts(wing: float = 0.0, tail: float = 0.0, head: float = 0.0) -> list[PlacedPart]:
    """A fish facing +x, back to front. ``wing`` leans the dorsal fin (at 0.4 of the angle); no head tilt."""
    dorsal_length, tail_length, pelvic_length = 0.27, 0.32, 0.18
    pelvic = [
        _fan_part(LEGS, joint, 238.0, pelvic_length,
                  lambda x, y, s, i=i: _side_fan(x, y, s, pelvic_length, math.radians(18), i))
        for i, joint in enumerate(((-0.12, -0.12), (0.06, -0.13)))
    ]
    return [
        _fan_part(WING, (-0.04, 0.12), 112.0 + 0.4 * wing, dorsal_length,
                  lambda x, y, s: _fan(x, y, s, dorsal_length, math.radians(27))),
        _fan_part(TAIL, (-0.34, 0.0), 180.0 + tail, tail_length,
                  lambda x, y, s: _fan(x, y, s, tail_length, math.radians(32), forked=True)),
        *pelvic,
        _centred_box(BODY, (0.0, 0.0), 0.80, 0.40, _ellipse),
        _box_part(BEAK, (0.36, -0.04), -4.0, 0.16, 0.11, _triangle),
        _centred_box(HEAD, (0.25, 0.0), 0.32, 0.38, _fish_head),
    ]


ANATOMY = {"bird": bird_parts, "fish": fish_parts}


def species_parts(species: str, wing: float = 0.0, tail: float = 0.0, head: float = 0.0) -> list[PlacedPart]:
    """The placed parts of ``species`` (see ``SPECIES``) for the given articulation."""
    if species not in ANATOMY:
        raise ValueError(f"unknown species {species!r}; the world has {', '.join(SPECIES)}")
    return ANATOMY[species](wing=wing, tail=tail, head=head)
