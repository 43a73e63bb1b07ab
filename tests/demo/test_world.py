"""The synthetic world: deterministic renders, exact ground truth, pairs by category."""

from dataclasses import replace

import numpy as np
import pytest

from eye_for_an_eye.eye_demo.anatomy import PART_LABELS, PART_NAMES, SPECIES
from eye_for_an_eye.eye_demo.colour import delta_e, lab_to_srgb, srgb_to_lab
from eye_for_an_eye.eye_demo.pairs import CATEGORIES, ideal_transfer, make_pair, swapped_pair
from eye_for_an_eye.eye_demo.regions import dilate, erode, part_interiors
from eye_for_an_eye.eye_demo.render import render
from eye_for_an_eye.eye_demo.scene import (BACKGROUND_SEPARATION, PART_SEPARATION, Pose, creature_to_pixel,
                                           random_scene)


def test_colour_round_trip_and_known_values():
    rgb = np.random.default_rng(0).random((100, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)) - rgb).max() < 1e-6
    assert np.allclose(srgb_to_lab([1.0, 1.0, 1.0]), [100, 0, 0], atol=1e-3)
    assert np.allclose(srgb_to_lab([1.0, 0.0, 0.0]), [53.24, 80.09, 67.20], atol=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_is_deterministic(seed):
    first, second = render(random_scene(seed)), render(random_scene(seed))
    for name in ("image", "labels", "instances", "marks"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert np.array_equal(first.uv, second.uv, equal_nan=True)
    assert not np.array_equal(first.image, render(random_scene(seed + 100)).image)


def test_render_outputs_are_consistent():
    scene = random_scene(5, size=(96, 160), creatures=2)
    out = render(scene)
    assert out.image.shape == (96, 160, 3) and out.image.dtype == np.float32
    assert 0 <= out.image.min() and out.image.max() <= 1
    objects = out.labels > 0
    assert np.array_equal(objects, out.instances > 0)
    assert np.isnan(out.uv[~objects]).all() and not np.isnan(out.uv[objects]).any()
    assert ((out.uv[objects] >= 0) & (out.uv[objects] <= 1)).all()
    masks = out.instance_masks
    assert masks.shape == (2, 96, 160) and masks.sum(0).max() == 1
    assert set(np.unique(out.labels[objects])) <= set(PART_LABELS)


@pytest.mark.parametrize("species", SPECIES)
def test_every_part_is_visible_and_named(species):
    scene = random_scene(3, species=species, scale=1.0, rotation=0.0)
    labels = render(scene).labels
    for label in PART_LABELS:
        assert (labels == label).sum() >= 20, (species, PART_NAMES[species][label])


def test_palettes_are_clearly_distinct():
    for seed in range(20):
        scene = random_scene(seed)
        labs = np.stack([scene.creatures[0].appearance.lab(label) for label in PART_LABELS])
        pairwise = delta_e(labs[:, None], labs[None, :])[~np.eye(len(labs), dtype=bool)]
        assert pairwise.min() >= PART_SEPARATION
        assert delta_e(scene.background.reference_labs()[:, None], labs[None]).min() >= BACKGROUND_SEPARATION


def test_appearance_does_not_change_the_ground_truth():
    scene = random_scene(7)
    other = random_scene(8)
    repainted = scene.with_appearances([other.creatures[0].appearance])
    a, b = render(scene), render(repainted)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.instances, b.instances)
    assert np.array_equal(a.uv, b.uv, equal_nan=True)
    assert not np.array_equal(a.image, b.image)


def test_two_poses_of_one_creature_agree_in_canonical_coordinates():
    """A pixel of pose A, carried through the known rigid motion to pose B, finds the same part
    at (almost) the same (u, v): the dense ground-truth correspondence is exact."""
    scene = random_scene(11, scale=0.9, rotation=10.0, flip=False)
    creature = scene.creatures[0]
    moved_pose = replace(creature.pose, cx=creature.pose.cx - 6, cy=creature.pose.cy + 4, scale=0.7,
                         rotation=-25.0, flip=True)
    moved = replace(scene, creatures=(replace(creature, pose=moved_pose),))
    a, b = render(scene), render(moved)
    a_to_b = creature_to_pixel(moved_pose, 128, 128) @ np.linalg.inv(creature_to_pixel(creature.pose, 128, 128))
    rows, cols = np.nonzero(a.labels > 0)
    points = a_to_b @ np.stack([cols + 0.5, rows + 0.5, np.ones(rows.size)])
    bc, br = np.floor(points[0]).astype(int), np.floor(points[1]).astype(int)
    inside = (bc >= 0) & (bc < 128) & (br >= 0) & (br < 128)
    same_part = a.labels[rows, cols][inside] == b.labels[br[inside], bc[inside]]
    assert same_part.mean() > 0.95
    agree = np.abs(a.uv[rows, cols][inside][same_part] - b.uv[br[inside], bc[inside]][same_part])
    assert np.median(agree) < 0.05


def test_ideal_transfer_onto_itself_is_the_target():
    target, _ = make_pair(4, "flipped")
    assert np.array_equal(render(ideal_transfer(target, target)).image, render(target).image)


def test_ideal_transfer_keeps_the_target_and_takes_the_reference_colours():
    target, reference = make_pair(5, "rotated")
    ideal, original = render(ideal_transfer(target, reference)), render(target)
    assert np.array_equal(ideal.labels, original.labels)
    background = ~dilate(original.labels > 0)  # anti-aliased edge pixels mix both colours
    assert np.array_equal(ideal.image[background], original.image[background])
    plain = part_interiors(original.labels, ideal.marks)
    assert plain.sum() > 200
    for label in PART_LABELS:  # every plain interior pixel has exactly the reference part's colour
        pixels = ideal.image[plain & (original.labels == label)]
        expected = np.array(reference.creatures[0].appearance.colours[label], np.float32)
        assert np.abs(pixels - expected).max(initial=0) < 1e-6


@pytest.mark.parametrize("category", CATEGORIES)
def test_pairs_by_category(category):
    for seed in range(6):
        target, reference = make_pair(seed, category)
        t, r = target.creatures[0], reference.creatures[0]
        assert (t.species != r.species) == (category == "cross-species")
        for label in PART_LABELS:  # distinct palettes, part by part
            assert delta_e(t.appearance.lab(label), r.appearance.lab(label)) >= PART_SEPARATION
        if category == "aligned":
            assert t.pose == r.pose
        if category == "flipped":
            assert t.pose.flip != r.pose.flip and t.pose.rotation == r.pose.rotation
        if category == "rotated":
            assert abs(t.pose.rotation - r.pose.rotation) >= 30 and t.pose.flip == r.pose.flip
        if category == "moved":
            assert (t.pose.rotation, t.pose.flip) == (r.pose.rotation, r.pose.flip)
        if category == "articulated":
            assert abs(t.pose.wing - r.pose.wing) > 20 and abs(t.pose.tail - r.pose.tail) > 20
            assert (t.pose.cx, t.pose.cy, t.pose.rotation) == (r.pose.cx, r.pose.cy, r.pose.rotation)
        assert render(reference).labels.any() and render(target).labels.any()
    assert make_pair(3, category) == make_pair(3, category)


def test_pose_ranges():
    poses = [random_scene(seed).creatures[0].pose for seed in range(200)]
    scales = [p.scale for p in poses]
    rotations = [p.rotation for p in poses]
    assert min(scales) >= 0.6 and max(scales) <= 1.0 and max(scales) - min(scales) > 0.35
    assert min(rotations) >= -35 and max(rotations) <= 35 and max(rotations) - min(rotations) > 60
    assert 0.3 < np.mean([p.flip for p in poses]) < 0.7


def test_creatures_stay_inside_the_image():
    for seed in range(30):
        out = render(random_scene(seed))
        assert not out.labels[0].any() and not out.labels[-1].any()
        assert not out.labels[:, 0].any() and not out.labels[:, -1].any()


def test_swapped_scenes_pair_by_creature():
    target, reference, pairing = swapped_pair(2, creatures=3, size=(128, 384))
    assert sorted(pairing) == [0, 1, 2] and pairing != [0, 1, 2]
    for i, j in enumerate(pairing):
        assert target.creatures[i].species == reference.creatures[j].species
    masks = render(target).instance_masks
    assert masks.shape[0] == 3 and all(m.any() for m in masks)


def test_bad_requests_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"):
        make_pair(0, "sideways")
    with pytest.raises(ValueError, match="1 to 3"):
        random_scene(0, creatures=4)
    with pytest.raises(ValueError, match="bird, fish"):
        random_scene(0, species="cat")


def test_regions():
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    assert dilate(mask).sum() == 25 and erode(mask).sum() == 1 and erode(mask, 2).sum() == 0
    labels = np.zeros((7, 7), int)
    labels[1:6, 1:6] = 1
    labels[1:6, 4:6] = 2
    assert part_interiors(labels).sum() == 3  # a 3x2 block of label 1 and a 3x1 column of label 2, eroded


def test_pose_defaults():
    assert Pose(10, 20) == Pose(cx=10, cy=20, scale=1.0, rotation=0.0, flip=False, wing=0.0, tail=0.0, head=0.0)
