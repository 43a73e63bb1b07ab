"""Point pairs steering the matcher (eye_core.point_constraint through matching.match and MatchConstraint).

Checked against a naive reading of the rule: with a hard constraint a target token within the
radius of target point k takes the most similar reference token within the radius of
reference point k, every other target token its plain nearest neighbour; a soft pull of
strength 0 changes nothing; combined with an instance pairing both hold.
"""

import pytest
import torch

from eye_for_an_eye.eye_core import instances
from eye_for_an_eye.eye_core.adain import masked_adain
from eye_for_an_eye.eye_core.matching import match
from eye_for_an_eye.eye_core.point_constraint import HARD, SOFT, PointConstraint, regions, token_centres
from eye_for_an_eye.eye_core.transfer import adain_after_step

GRID = (8, 12)


def _features(seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, *GRID, generator=generator), torch.randn(1, 16, *GRID, generator=generator)


def _pairs(mode=HARD, radius=0.15, strength=1.0):
    target = torch.tensor([[[0.2, 0.3], [0.7, 0.6]]])
    reference = torch.tensor([[[0.8, 0.7], [0.25, 0.2]]])
    return PointConstraint(target, reference, radius, mode, strength)


def test_hard_points_restrict_the_tokens_near_each_point_and_leave_the_rest_alone():
    target, reference = _features(0)
    pairs = _pairs()
    constraint = instances.points_only(pairs)
    result = match(target, reference, **constraint.matching_arguments(GRID, GRID))
    plain = match(target, reference)
    t = torch.nn.functional.normalize(target.flatten(2)[0].T, dim=1)
    r = torch.nn.functional.normalize(reference.flatten(2)[0].T, dim=1)
    steered = pairs.target_regions(GRID)[0]
    allowed = regions(pairs.reference, GRID, pairs.radius)[0]
    assert steered.any(dim=0).all() and steered.sum() < steered.shape[0]  # both points steer, not everything
    for i in range(t.shape[0]):
        near = torch.nonzero(steered[i]).flatten()
        if len(near) == 0:
            assert result.index[0, i] == plain.index[0, i]
            continue
        candidates = torch.nonzero(allowed[:, near[0]]).flatten()
        expected = candidates[torch.argmax(r[candidates] @ t[i])]
        assert result.index[0, i] == expected, i
    assert bool(constraint.keeps(result.index, GRID, GRID).all())
    assert not bool(constraint.keeps(plain.index, GRID, GRID).all())  # the plain match breaks the rule somewhere


def test_each_target_token_follows_its_nearest_point_only():
    pairs = PointConstraint(torch.tensor([[[0.30, 0.5], [0.40, 0.5]]]), torch.tensor([[[0.1, 0.1], [0.9, 0.9]]]),
                            radius=0.3)
    steered = pairs.target_regions(GRID)[0]
    assert steered.sum(dim=1).max() == 1
    centres = token_centres(GRID)
    left = centres[:, 0] < 0.35
    assert steered[left & steered.any(dim=1), 0].all()


def test_a_point_counts_at_any_grid_even_with_a_tiny_radius():
    pairs = PointConstraint(torch.tensor([[[0.51, 0.49]]]), torch.tensor([[[0.1, 0.9]]]), radius=0.001)
    assert int(pairs.target_regions((2, 2)).sum()) == 1
    assert int(regions(pairs.reference, (2, 2), 0.001).sum()) == 1


def test_a_soft_pull_of_strength_zero_changes_nothing_and_a_full_one_pulls():
    target, reference = _features(1)
    plain = match(target, reference)
    off = match(target, reference, **instances.points_only(_pairs(SOFT, 0.15, 0.0)).matching_arguments(GRID, GRID))
    assert torch.equal(off.index, plain.index)
    pull = _pairs(SOFT, 0.15, 1.0)
    pulled = match(target, reference, **instances.points_only(pull).matching_arguments(GRID, GRID))
    centres = token_centres(GRID)
    near = torch.nonzero(pull.target_regions(GRID)[0][:, 0]).flatten()

    def distance(result):
        return (centres[result.index[0, near]] - pull.reference[0, 0]).norm(dim=1).mean()

    assert distance(pulled) < 0.5 * distance(plain)


def test_points_combine_with_an_instance_pairing_and_both_hold():
    target, reference = _features(2)
    t_inst = torch.full((32, 48), -1, dtype=torch.long)
    t_inst[:, :24], t_inst[:, 24:] = 0, 1
    r_inst = t_inst.clone()
    pairing = instances.pairing_constraint(t_inst, r_inst, [1, 0])
    pairs = PointConstraint(torch.tensor([[[0.2, 0.5]]]), torch.tensor([[[0.8, 0.5]]]), radius=0.15)
    for combined in (pairing.and_(instances.points_only(pairs)), instances.points_only(pairs).and_(pairing)):
        assert combined.labelled and tuple(combined.target.shape) == (32, 48)  # the finer labels survive
        result = match(target, reference, **combined.matching_arguments(GRID, GRID))
        assert bool(combined.keeps(result.index, GRID, GRID)[result.index >= 0].all())
        assert bool(pairing.keeps(result.index, GRID, GRID)[result.index >= 0].all())
        assert bool(pairs.keeps(result.index, GRID, GRID).all())


def test_points_alone_leave_adain_as_plain_masked_adain():
    generator = torch.Generator().manual_seed(3)
    x, reference = torch.randn(1, 4, 8, 12, generator=generator), torch.randn(1, 4, 8, 12, generator=generator)

    class Path:
        latents = [reference]

    class Always:
        @staticmethod
        def adain(i, total):
            return True

    step = adain_after_step(Path(), Always(), constraint=instances.points_only(_pairs()))
    assert torch.equal(step(0, 1, 0, x), masked_adain(x, reference))


@pytest.mark.parametrize("bad, message", [
    (dict(target=torch.zeros(1, 2, 2), reference=torch.zeros(1, 3, 2)), "2 target points but 3"),
    (dict(target=torch.zeros(2, 2), reference=torch.zeros(2, 2)), r"\(B, P, 2\)"),
    (dict(target=torch.zeros(1, 1, 2), reference=torch.zeros(1, 1, 2), mode="firm"), "mode must be"),
    (dict(target=torch.zeros(1, 1, 2), reference=torch.zeros(1, 1, 2), radius=0.0), "radius"),
])
def test_bad_point_constraints_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        PointConstraint(**bad)
