"""Pairs of scenes (target, reference) by category, and the ideal transfer of a pair.

Categories (all with distinct palettes: every part of the reference differs in colour from
the same part of the target by at least 25 deltaE, so a result that kept the target's
colours scores badly):

- ``aligned``: the same creature pose, another appearance and background;
- ``moved``: translated and rescaled;
- ``flipped``: mirrored (facing the other way), the rest as in ``moved``;
- ``rotated``: in-plane rotations at least 30 degrees apart;
- ``articulated``: wing and tail angles far apart, the body in place;
- ``cross-species``: a bird and a fish (either way round); parts correspond by label.

The ideal transfer keeps the target's species, pose, background and instance layout and
takes the reference's appearance (part colours and patterns), creature by creature.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .scene import (ROTATION_RANGE, SCALE_RANGE, TAIL_RANGE, WING_RANGE, Creature, Scene, random_appearance,
                    random_background, random_pose)

CATEGORIES = ("aligned", "moved", "flipped", "rotated", "articulated", "cross-species")
SIZE = (128, 128)
# Eye Demo Scene's choices: the categories above, and scenes of several creatures whose reference shows the
# same creatures in another order (pairing must follow the creature).
MULTI = {"two creatures, swapped": 2, "three creatures, swapped": 3}
SCENE_CATEGORIES = tuple(CATEGORIES) + tuple(MULTI)
SPECIES_CHOICES = ("bird", "fish", "random")


def _pose_fields(pose) -> dict:
    return {k: getattr(pose, k) for k in ("scale", "rotation", "flip", "wing", "tail", "head")}


def make_pair(seed: int, category: str, size=SIZE, species: str | None = None) -> tuple[Scene, Scene]:
    """(target, reference) scenes of one creature each for ``category`` (see CATEGORIES), from ``seed``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    height, width = size
    species = species or str(rng.choice(["bird", "fish"]))
    reference_species = {"bird": "fish", "fish": "bird"}[species] if category == "cross-species" else species

    target_bg = random_background(rng)
    target_pose = random_pose(rng, species, height, width)
    target_appearance = random_appearance(rng, target_bg)
    reference_bg = random_background(rng)
    reference_appearance = random_appearance(rng, reference_bg, avoid=target_appearance)
    fields = _pose_fields(target_pose)

    if category == "aligned":
        reference_pose = target_pose
    elif category == "moved":
        others = dict(fields, scale=float(rng.uniform(*SCALE_RANGE)))
        reference_pose = random_pose(rng, species, height, width, **others)
    elif category == "flipped":
        reference_pose = random_pose(rng, species, height, width, **dict(fields, flip=not target_pose.flip))
    elif category == "rotated":
        low, high = -ROTATION_RANGE, ROTATION_RANGE
        choices = [r for r in np.linspace(low, high, 71) if abs(r - target_pose.rotation) >= 30.0]
        reference_pose = random_pose(rng, species, height, width, **dict(fields, rotation=float(rng.choice(choices))))
    elif category == "articulated":
        wing = WING_RANGE[0] if target_pose.wing > sum(WING_RANGE) / 2 else WING_RANGE[1]
        tail = TAIL_RANGE[0] if target_pose.tail > 0 else TAIL_RANGE[1]
        reference_pose = replace(target_pose, wing=float(wing + rng.uniform(-5, 5) * np.sign(-wing)),
                                 tail=float(tail + rng.uniform(-5, 5) * np.sign(-tail)))
    else:  # cross-species: an independent pose
        reference_pose = random_pose(rng, reference_species, height, width)

    target = Scene(height, width, target_bg, (Creature(species, target_pose, target_appearance),))
    reference = Scene(height, width, reference_bg, (Creature(reference_species, reference_pose, reference_appearance),))
    return target, reference


def ideal_transfer(target: Scene, reference: Scene, pairing=None) -> Scene:
    """The target scene with each creature wearing its reference counterpart's appearance.

    ``pairing``: for each target creature the index of its reference creature (default: the
    same index); None for a creature keeps its own appearance (an unpaired instance).
    """
    if pairing is None:
        pairing = list(range(len(target.creatures)))
    if len(pairing) != len(target.creatures):
        raise ValueError(f"pairing has {len(pairing)} entries for {len(target.creatures)} target creatures")
    appearances = [None if j is None else reference.creatures[j].appearance for j in pairing]
    return target.with_appearances(appearances)


def swapped_pair(seed: int, creatures: int = 2, size=(128, 256), species=None) -> tuple[Scene, Scene, list]:
    """A multi-creature pair whose reference shows the same creatures in another order.

    Returns (target, reference, pairing) where pairing[i] is the reference index of target
    creature i (pairing must follow the creature, not its position).
    """
    from .scene import random_scene

    target = random_scene(seed, size=size, creatures=creatures, species=species)
    rng = np.random.default_rng([seed, 99])
    order = list(range(creatures))
    while order == list(range(creatures)):
        order = [int(i) for i in rng.permutation(creatures)]
    reference_bg = random_background(rng)
    strip = size[1] / creatures
    placed = []
    for slot, source in enumerate(order):
        creature = target.creatures[source]
        region = (slot * strip, 0, (slot + 1) * strip, size[0])
        pose = random_pose(rng, creature.species, size[0], size[1], region=region)
        appearance = random_appearance(rng, reference_bg, avoid=creature.appearance)
        placed.append(Creature(creature.species, pose, appearance))
    reference = Scene(size[0], size[1], reference_bg, tuple(placed))
    pairing = [order.index(i) for i in range(creatures)]
    return target, reference, pairing
