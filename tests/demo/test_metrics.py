"""The ground-truth metrics: they reward the ideal transfer and punish each way of being wrong."""

from dataclasses import replace

import numpy as np
import pytest

from eye_for_an_eye.eye_demo.anatomy import BODY, HEAD, TAIL, WING
from eye_for_an_eye.eye_demo.metrics import (colour_error, correspondence_accuracy, part_accuracy,
                                             positional_matches, score_transfer, silhouette_iou,
                                             structure_similarity, token_labels)
from eye_for_an_eye.eye_demo.oracle import oracle_correspondence
from eye_for_an_eye.eye_demo.pairs import ideal_transfer, make_pair
from eye_for_an_eye.eye_demo.render import background_only, render


@pytest.fixture(scope="module")
def flipped():
    target, reference = make_pair(3, "flipped")
    return target, reference, render(target), render(reference), render(ideal_transfer(target, reference)).image


def test_the_ideal_transfer_scores_perfectly(flipped):
    target, reference, t, r, ideal = flipped
    scores = score_transfer(ideal, t, r, ideal, background_only(target))
    assert scores["part_accuracy"] > 0.97
    assert scores["delta_e_object"] < 1e-6 and scores["delta_e_background"] < 1e-6
    assert scores["silhouette_iou"] > 0.95 and scores["structure"] == pytest.approx(1.0)


def test_no_transfer_and_swapped_parts_lose_part_accuracy(flipped):
    target, reference, t, r, ideal = flipped
    assert part_accuracy(t.image, t.labels, r.labels, r.image) < 0.3  # distinct palettes: the target's own colours
    colours = dict(reference.creatures[0].appearance.colours)
    colours[WING], colours[BODY] = colours[BODY], colours[WING]
    swapped = reference.creatures[0].appearance
    swapped = replace(swapped, colours=colours, patterns={})
    wrong = render(target.with_appearances([swapped])).image
    accuracy = part_accuracy(wrong, t.labels, r.labels, r.image)
    share = np.isin(t.labels[t.labels > 0], [WING, BODY]).mean()
    assert accuracy < 1 - 0.6 * share


def test_colour_error_separates_object_and_background(flipped):
    target, reference, t, r, ideal = flipped
    errors = colour_error(t.image, ideal, t.labels)
    assert errors["object"] > 20 and errors["background"] < 1e-6


def test_structure_metrics_fail_a_shifted_blurred_or_empty_result(flipped):
    target, reference, t, r, ideal = flipped
    background = background_only(target)
    shifted = np.roll(ideal, 6, axis=1)
    blurred = sum(np.roll(np.roll(ideal, dy, 0), dx, 1) for dy in range(-2, 3) for dx in range(-2, 3)) / 25
    assert silhouette_iou(shifted, background, t.labels) < 0.8
    assert silhouette_iou(background, background, t.labels) == 0.0
    assert structure_similarity(shifted, ideal) < 0.6 and structure_similarity(blurred, ideal) < 0.85
    assert structure_similarity(np.roll(ideal, 1, axis=0), ideal) < 0.85
    assert structure_similarity(t.image, ideal) > 0.75  # the same structure in other colours


def test_correspondence_accuracy_of_the_oracle_positional_and_random_matches():
    target, reference = make_pair(8, "flipped")
    t, r = render(target), render(reference)
    grid = (16, 16)
    oracle = oracle_correspondence(t.labels, t.uv, r.labels, r.uv, grid)
    perfect = correspondence_accuracy(t.labels, r.labels, oracle.index[0].numpy(), grid, grid, t.uv, r.uv)
    assert perfect["part_accuracy"] == 1.0 and perfect["uv_error"] < 0.25
    positional = correspondence_accuracy(t.labels, r.labels, positional_matches(t.labels, r.labels, grid), grid, grid)
    assert positional["part_accuracy"] < 0.8  # a mirrored creature: head and tail swap ends
    rng = np.random.default_rng(0)
    objects = np.flatnonzero(token_labels(r.labels, grid)[0] > 0)
    draws = [correspondence_accuracy(t.labels, r.labels, rng.choice(objects, 256), grid, grid) for _ in range(50)]
    assert abs(np.mean([d["part_accuracy"] for d in draws]) - draws[0]["chance"]) < 0.05


def test_oracle_matches_parts_across_species():
    target, reference = make_pair(2, "cross-species")
    t, r = render(target), render(reference)
    oracle = oracle_correspondence(t.labels, t.uv, r.labels, r.uv, (16, 16))
    matched = oracle.index[0].numpy()
    t_label = token_labels(t.labels, (16, 16))[0]
    r_label = token_labels(r.labels, (16, 16))[0]
    ok = matched >= 0
    assert ok.sum() > 20 and (r_label[matched[ok]] == t_label[ok]).all()
    assert {HEAD, BODY, TAIL} <= set(t_label[ok].tolist())
