"""Several objects: label-restricted matching, pairing (text and automatic), proxy parts, exemplar ranking."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from eye_for_an_eye.eye_core import instances
from eye_for_an_eye.eye_core.matching import match
from eye_for_an_eye.eye_core.instances import PairingError


def _naive(target, reference, target_allowed, reference_labels, target_valid=None, reference_valid=None):
    """Per target token, a Python loop over the reference tokens it may match: the first cosine maximum."""
    t = F.normalize(target.double(), dim=1)
    r = F.normalize(reference.double(), dim=1)
    out = []
    for i in range(t.shape[0]):
        if target_valid is not None and not target_valid[i]:
            out.append(-1)
            continue
        best, best_j = None, -1
        for j in range(r.shape[0]):
            if reference_labels[j] < 0 or reference_labels[j] != target_allowed[i]:
                continue
            if reference_valid is not None and not reference_valid[j]:
                continue
            value = float(t[i] @ r[j])
            if best is None or value > best:
                best, best_j = value, j
        out.append(best_j)
    return torch.tensor(out)


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_label_restricted_matching_equals_a_naive_loop_over_the_allowed_tokens(chunk):
    g = torch.Generator().manual_seed(3)
    target, reference = torch.randn(1, 16, 6, 7, generator=g), torch.randn(1, 16, 5, 8, generator=g)
    target_allowed = torch.randint(-1, 3, (6, 7), generator=g)  # -1: unpaired
    reference_labels = torch.randint(-1, 3, (5, 8), generator=g)
    result = match(target.double(), reference.double(), target_labels=target_allowed,
                   reference_labels=reference_labels, chunk_size=chunk)
    expected = _naive(target[0].flatten(1).t(), reference[0].flatten(1).t(), target_allowed.flatten(),
                      reference_labels.flatten())
    assert torch.equal(result.index[0], expected)
    assert (result.index[0] == -1).any() and (result.index[0] >= 0).any()


def test_labels_and_masks_restrict_together():
    g = torch.Generator().manual_seed(4)
    target, reference = torch.randn(1, 8, 6, 6, generator=g), torch.randn(1, 8, 6, 6, generator=g)
    allowed = torch.randint(0, 2, (6, 6), generator=g)
    labels = torch.randint(0, 2, (6, 6), generator=g)
    target_mask = torch.rand(6, 6, generator=g) > 0.3
    reference_mask = torch.rand(6, 6, generator=g) > 0.3
    result = match(target.double(), reference.double(), target_mask.float(), reference_mask.float(),
                   target_labels=allowed, reference_labels=labels)
    expected = _naive(target[0].flatten(1).t(), reference[0].flatten(1).t(), allowed.flatten(), labels.flatten(),
                      target_mask.flatten(), reference_mask.flatten())
    assert torch.equal(result.index[0], expected)


def test_labels_at_another_size_take_the_label_at_each_token_centre():
    labels = torch.zeros(64, 64, dtype=torch.long)
    labels[:, 32:] = 1
    labels[:4, :4] = 2  # a corner smaller than one 8x8 token cell, off its centre: no token takes it
    small = instances.resize_labels(labels, (8, 8))
    assert small[:, :4].eq(0).all() and small[:, 4:].eq(1).all()


def test_labels_must_come_for_both_images():
    features = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="both images"):
        match(features, features, target_labels=torch.zeros(3, 3, dtype=torch.long))


def test_instances_from_masks_number_them_and_later_masks_win_overlaps():
    masks = torch.zeros(3, 8, 8)
    masks[0, :4, :4] = 1
    masks[1, 2:6, 2:6] = 1
    masks[2, 7, 7] = 1
    labels = instances.instance_labels(masks)
    assert labels[0, 0] == 0 and labels[3, 3] == 1 and labels[7, 7] == 2 and labels[0, 7] == -1
    assert instances.count(labels) == 3


def test_pairs_typed_as_text():
    assert instances.parse_pairs("1>2, 2>1; 3 -> 1", 3, 2) == [1, 0, 0]
    assert instances.parse_pairs("2:1", 3, 1) == [-1, 0, -1]  # unpaired targets stay as they are
    assert instances.format_pairs([1, -1, 0]) == "1>2, 3>1"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("1>", "cannot read the pair '1>'"),
    ("one>two", "cannot read"),
    ("1>2>3", "cannot read"),
    ("4>1", "target instance 4, but the target has 3"),
    ("0>1", "target instance 0"),
    ("1>3", "reference instance 3, but the reference has 2"),
    ("1>1, 1>2", "target instance 1 is paired twice"),
])
def test_bad_pairing_text_gets_an_error_that_says_what_to_write(text, message):
    with pytest.raises(PairingError, match=message):
        instances.parse_pairs(text, 3, 2)


def test_automatic_pairing_recovers_a_known_permutation():
    g = torch.Generator().manual_seed(5)
    for n in (2, 3, 5):
        reference = torch.randn(n, 32, generator=g)
        permutation = torch.randperm(n, generator=g)
        target = reference[permutation] + 0.3 * torch.randn(n, 32, generator=g)
        pairs = instances.pair_automatically(instances.similarity(target, reference))
        assert pairs == permutation.tolist()


def test_automatic_pairing_lets_one_reference_serve_several_targets():
    reference = torch.eye(2, 8)
    target = torch.stack([reference[1], reference[0], reference[1] * 0.9 + 0.1 * reference[0]])
    assert instances.pair_automatically(instances.similarity(target, reference)) == [1, 0, 1]


@pytest.mark.parametrize("rows, columns", [(4, 5), (3, 3), (1, 4), (5, 6)])
def test_assignment_is_optimal_against_every_permutation(rows, columns):
    g = torch.Generator().manual_seed(6 + rows * columns)
    for _ in range(20):
        cost = torch.rand(rows, columns, generator=g)
        chosen = instances.assignment(cost)
        best = min(sum(float(cost[i, p[i]]) for i in range(rows))
                   for p in itertools.permutations(range(columns), rows))
        assert sum(float(cost[i, c]) for i, c in enumerate(chosen)) == pytest.approx(best)
        assert len(set(chosen)) == rows


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_assignment_refuses_costs_that_are_not_finite_instead_of_searching_forever(bad):
    cost = torch.rand(2, 2)
    cost[1, 0] = bad
    with pytest.raises(ValueError, match="finite"):
        instances.assignment(cost)


def test_instance_descriptors_average_each_instance_and_pairing_follows_the_creature_not_the_position():
    # two "creatures" with distinct features, swapped left/right between the images
    a, b = torch.randn(16), torch.randn(16)
    target = torch.zeros(16, 4, 8)
    reference = torch.zeros(16, 4, 8)
    target[:, :, :4], target[:, :, 4:] = a[:, None, None], b[:, None, None]
    reference[:, :, :4], reference[:, :, 4:] = b[:, None, None], a[:, None, None]
    labels = torch.zeros(4, 8, dtype=torch.long)
    labels[:, 4:] = 1
    pairs = instances.pair_automatically(instances.similarity(instances.instance_descriptors(target, labels, 2),
                                                              instances.instance_descriptors(reference, labels, 2)))
    assert pairs == [1, 0]
    allowed = instances.allowed_labels(labels, pairs)
    assert allowed[:, :4].eq(1).all() and allowed[:, 4:].eq(0).all()


def test_proxy_parts_are_deterministic_for_a_seed_and_shared_between_the_images():
    g = torch.Generator().manual_seed(7)
    centres = F.normalize(torch.randn(3, 12, generator=g), dim=1)
    # both images made of the same three "parts", laid out differently
    target_layout = torch.randint(0, 3, (6, 6), generator=g)
    reference_layout = torch.randint(0, 3, (5, 7), generator=g)
    target = (centres[target_layout] + 0.05 * torch.randn(6, 6, 12, generator=g)).permute(2, 0, 1)
    reference = (centres[reference_layout] + 0.05 * torch.randn(5, 7, 12, generator=g)).permute(2, 0, 1)
    first = instances.proxy_parts(target, reference, 3, seed=1)
    again = instances.proxy_parts(target, reference, 3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    t_parts, r_parts = first
    # the clusters are the parts: one label per part, the same label in both images
    mapping = {int(p): int(t_parts[target_layout == p][0]) for p in range(3)}
    assert len(set(mapping.values())) == 3
    for p, label in mapping.items():
        assert t_parts[target_layout == p].eq(label).all()
        assert r_parts[reference_layout == p].eq(label).all()


def test_proxy_parts_leave_tokens_outside_the_masks_unlabelled():
    features = torch.randn(8, 4, 4)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    t_parts, r_parts = instances.proxy_parts(features, features, 2, mask, None, seed=0)
    assert t_parts[~mask].eq(-1).all() and t_parts[mask].ge(0).all() and r_parts.ge(0).all()
    with pytest.raises(ValueError, match="at least 9 tokens"):
        instances.proxy_parts(features, features, 9, mask, mask)


def test_combined_labels_allow_only_the_same_instance_and_part():
    instance = torch.tensor([0, 0, 1, 1, -1])
    part = torch.tensor([0, 1, 0, 1, 0])
    assert instances.combine_labels(instance, part, 2).tolist() == [0, 1, 2, 3, -1]


def test_exemplars_are_ranked_by_similarity():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 1.0]])
    order, scores = instances.rank_exemplars(target, candidates)
    assert order.tolist() == [[1, 2, 0], [0, 2, 1]]
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
