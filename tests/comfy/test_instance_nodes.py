"""Several objects at node level: Number Instances, Pair Instances, Proxy Parts, Label Constraint, and the
constraint input of Match Correspondence and Apply Appearance Transfer."""

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_core.features import FeatureMap  # noqa: E402
from eye_for_an_eye.nodes import correspondence as corr_nodes  # noqa: E402
from eye_for_an_eye.nodes import instances as nodes  # noqa: E402

SIZE = 128  # image pixels; features at 16x16


def _halves(swap=False):
    """Masks of two objects, left and right half of a SIZE x SIZE image (swapped when asked)."""
    masks = torch.zeros(2, SIZE, SIZE)
    masks[0, 16:112, 8:60] = 1.0
    masks[1, 16:112, 68:120] = 1.0
    return masks.flip(0) if swap else masks


def _features(swap=False, seed=0):
    """Features whose left half is creature A and right half creature B (or swapped): two kinds of token."""
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(32, generator=generator), torch.randn(32, generator=generator)
    noise = torch.randn(1, 32, 16, 16, generator=torch.Generator().manual_seed(seed + 1)) * 0.3
    left, right = (b, a) if swap else (a, b)
    features = torch.cat([left.view(1, 32, 1, 1).expand(1, 32, 16, 8), right.view(1, 32, 1, 1).expand(1, 32, 16, 8)],
                         dim=-1) + noise
    return FeatureMap(features=features, layer="output block 5", timestep=261, latent_size=(16, 16), ensemble=1)


def _instances(masks):
    instances, preview = nodes.NumberInstances.execute(image=torch.rand(1, SIZE, SIZE, 3), masks=masks).args
    return instances, preview


def test_number_instances_numbers_the_masks_in_order_with_a_preview(comfy):
    instances, preview = _instances(_halves())
    assert instances.count == 2 and preview.shape == (1, SIZE, SIZE, 3)
    assert instances.labels[60, 30] == 0 and instances.labels[60, 90] == 1 and instances.labels[0, 0] == -1


@pytest.mark.parametrize("image, masks, message", [
    (torch.rand(2, SIZE, SIZE, 3), _halves(), "Number Instances: the image is a batch of 2"),
    (torch.rand(1, SIZE, SIZE, 3), torch.cat([_halves(), torch.zeros(1, SIZE, SIZE)]),
     r"Number Instances: instance\(s\) \[3\] cover no pixel"),
])
def test_number_instances_refuses_what_it_cannot_number(comfy, image, masks, message):
    before = masks.clone()
    with pytest.raises(ValueError, match=message):
        nodes.NumberInstances.execute(image=image, masks=masks)
    assert torch.equal(masks, before)


def test_pairs_typed_by_the_user_become_the_constraint_and_come_back_as_text(comfy):
    target, _ = _instances(_halves())
    reference, _ = _instances(_halves())
    constraint, text, preview = nodes.PairInstances.execute(target_instances=target, reference_instances=reference,
                                                            pairs="1>2, 2>1").args
    assert text == "1>2, 2>1" and preview.shape == (1, SIZE, 2 * SIZE, 3)
    assert constraint.target[60, 30] == 1 and constraint.target[60, 90] == 0 and constraint.target[0, 0] == -1


@pytest.mark.parametrize("pairs, message", [
    ("1>3", "Pair Instances: the pair '1>3' names reference instance 3, but the reference has 2"),
    ("1=2", "Pair Instances: cannot read the pair '1=2'"),
])
def test_bad_pairs_name_the_node_and_say_what_to_write(comfy, pairs, message):
    target, _ = _instances(_halves())
    with pytest.raises(ValueError, match=message):
        nodes.PairInstances.execute(target_instances=target, reference_instances=target, pairs=pairs)


def test_automatic_pairing_follows_the_creature_not_its_position(comfy):
    target, _ = _instances(_halves())
    reference, _ = _instances(_halves())
    _, text, _ = nodes.PairInstances.execute(target_instances=target, reference_instances=reference, pairs="",
                                             target_features=_features(), reference_features=_features(swap=True,
                                                                                                       seed=5)).args
    assert text == "1>2, 2>1"
    _, same, _ = nodes.PairInstances.execute(target_instances=target, reference_instances=reference, pairs="",
                                             target_features=_features(), reference_features=_features(seed=5)).args
    assert same == "1>1, 2>2"


def test_automatic_pairing_without_features_says_what_to_connect(comfy):
    target, _ = _instances(_halves())
    with pytest.raises(ValueError, match="Pair Instances: pairs is empty.*target_features and reference_features"):
        nodes.PairInstances.execute(target_instances=target, reference_instances=target, pairs="")


def test_match_correspondence_with_a_pairing_matches_only_the_paired_instance(comfy):
    target, _ = _instances(_halves())
    reference, _ = _instances(_halves())
    constraint, _, _ = nodes.PairInstances.execute(target_instances=target, reference_instances=reference,
                                                   pairs="1>2").args  # instance 2 of the target stays unpaired
    features = _features()
    correspondence, _, _ = corr_nodes.MatchCorrespondence.execute(target_features=features,
                                                                  reference_features=features,
                                                                  constraint=constraint).args
    index = correspondence.index.reshape(16, 16)
    left, right = index[2:14, 1:7], index[2:14, 9:15]
    assert (left >= 0).all() and ((left % 16) >= 8).all()  # target instance 1 -> reference instance 2 (right)
    assert (right == -1).all()  # unpaired: keeps its own appearance
    unconstrained, _, _ = corr_nodes.MatchCorrespondence.execute(target_features=features,
                                                                 reference_features=features).args
    assert ((unconstrained.index.reshape(16, 16)[2:14, 1:7] % 16) < 8).all()  # without it: its own side


def test_proxy_parts_node_is_deterministic_and_combines_with_a_pairing(comfy):
    target, _ = _instances(_halves())
    constraint, _, _ = nodes.PairInstances.execute(target_instances=target, reference_instances=target,
                                                   pairs="1>1, 2>2").args
    inputs = dict(target_features=_features(), reference_features=_features(seed=3), parts=2, seed=4)
    first, t_preview, r_preview = nodes.ProxyParts.execute(**inputs).args
    again, _, _ = nodes.ProxyParts.execute(**inputs).args
    assert torch.equal(first.target, again.target) and torch.equal(first.reference, again.reference)
    assert t_preview.shape == (1, SIZE, SIZE, 3) and r_preview.shape == (1, SIZE, SIZE, 3)
    both, _, _ = nodes.ProxyParts.execute(**inputs, constraint=constraint).args
    assert both.count == 2 * 2 and "instances" in both.what and "proxy parts" in both.what


def test_label_constraint_wants_the_same_labels_for_both_images(comfy):
    constraint = nodes.LabelConstraint.execute(target_labels=_halves(), reference_labels=_halves(swap=True)).args[0]
    assert constraint.count == 2 and constraint.target[60, 30] == 0 and constraint.reference[60, 30] == 1
    with pytest.raises(ValueError, match="Label Constraint: the target has 2 label masks and the reference 1"):
        nodes.LabelConstraint.execute(target_labels=_halves(), reference_labels=_halves()[:1])


def test_apply_appearance_transfer_refuses_a_constraint_with_implicit_attention(comfy, sd15, tiny, pack_nodes):
    from eye_for_an_eye.eye_core.instances import MatchConstraint
    from eye_for_an_eye.eye_core.rearrange import IMPLICIT, OFFICIAL, TWO_FINEST
    from eye_for_an_eye.nodes import inversion, transfer

    positive, negative = tiny.sd15_conds()
    latent = {"samples": tiny.vae_like_latent(height=16, width=16)}
    trajectories = [inversion.invert_latent(sd15, latent, positive, negative, 10, 3.5, "edit-friendly DDPM", seed,
                                            3)[0] for seed in (0, 1)]
    labels = torch.zeros(128, 128, dtype=torch.long)
    constraint = MatchConstraint(labels, labels, 1, "one label")
    schedule = transfer.OFFICIAL_SCHEDULE
    with pytest.raises(ValueError, match="Apply Appearance Transfer: injection 'implicit' has no correspondence"):
        transfer.apply_transfer(sd15, trajectories[1], trajectories[0], IMPLICIT, TWO_FINEST,
                                schedule.rearrange_start, schedule.rearrange_end, schedule.structure_end,
                                schedule.structure_interval, OFFICIAL, 1.0, constraint=constraint)
    patched = transfer.apply_transfer(sd15, trajectories[1], trajectories[0], "feature", TWO_FINEST,
                                      schedule.rearrange_start, schedule.rearrange_end, schedule.structure_end,
                                      schedule.structure_interval, OFFICIAL, 1.0, constraint=constraint)
    assert patched is not sd15


def test_rank_exemplars_puts_the_candidate_of_the_same_creature_first(comfy):
    target = _features()
    a_and_b = _features().features  # creature A on the left, B on the right, like the target
    only_b = _features(swap=True).features[..., :1].expand(-1, -1, -1, 16)  # creature B everywhere
    candidates = FeatureMap(features=torch.cat([only_b, a_and_b]), layer="output block 5", timestep=261,
                            latent_size=(16, 16), ensemble=1)
    images = torch.rand(2, SIZE, SIZE, 3)
    instances, _ = _instances(_halves())
    best, index, ranking, preview = nodes.RankExemplars.execute(target_features=target, candidate_features=candidates,
                                                                candidates=images, target_instances=instances,
                                                                instance=1).args
    assert index == 1 and torch.equal(best, images[1:2]) and preview.shape == images.shape
    assert ranking.splitlines()[0].startswith("instance 1: #2") and ranking.splitlines()[1].startswith("instance 2:")
    with pytest.raises(ValueError, match="Rank Exemplars: instance is 3 but the target has 2 instance"):
        nodes.RankExemplars.execute(target_features=target, candidate_features=candidates, candidates=images,
                                    target_instances=instances, instance=3)
    with pytest.raises(ValueError, match="Rank Exemplars: 1 candidate images but features of 2"):
        nodes.RankExemplars.execute(target_features=target, candidate_features=candidates, candidates=images[:1])


# ---------------------------------------------------------------- the all-in-one node, several objects

def _all_in_one(sd15, tiny, monkeypatch, **settings):
    from eye_for_an_eye.nodes import transfer

    seen = {}
    real_apply, real_sampler = transfer.apply_transfer, transfer.transfer_sampler

    def recording(**inputs):
        seen.update(inputs)
        return real_apply(**inputs)

    def recording_sampler(**inputs):
        seen["sampler"] = inputs
        return real_sampler(**inputs)

    monkeypatch.setattr(transfer, "apply_transfer", recording)
    monkeypatch.setattr(transfer, "transfer_sampler", recording_sampler)
    pos, neg = tiny.sd15_conds()
    masks = torch.zeros(2, 64, 64)
    masks[0, 8:56, 4:30], masks[1, 8:56, 34:60] = 1.0, 1.0
    inputs = dict(model=sd15, vae=tiny.tiny_vae(), positive=pos, negative=neg, target=torch.rand(1, 64, 64, 3),
                  reference=torch.rand(1, 64, 64, 3), steps=4, skip_steps=1, inversion_cfg=3.5, cfg=2.5,
                  matching=transfer.PER_STEP, seed=0, target_instances=masks, reference_instances=masks.flip(0))
    inputs.update(settings)
    before = {name: value.clone() for name, value in inputs.items() if torch.is_tensor(value)}
    image, _ = transfer.AppearanceTransfer.execute(**inputs).args
    for name, value in before.items():
        assert torch.equal(inputs[name], value), f"{name} was modified"
    return image, seen


def test_the_all_in_one_node_pairs_instances_as_typed(comfy, sd15, tiny, monkeypatch):
    image, seen = _all_in_one(sd15, tiny, monkeypatch, pairs="1>1, 2>2")
    assert torch.isfinite(image).all()
    constraint = seen["constraint"]
    assert "instances 1>1, 2>2" in constraint.what
    assert constraint.target[30, 10] == 0 and constraint.reference[30, 10] == 1  # the reference's masks are swapped
    assert seen["target_mask"].shape == (1, 64, 64) and seen["target_mask"][0, 30, 10] == 1  # union of the instances
    assert seen["sampler"]["constraint"] is constraint  # AdaIN object by object, too


def test_the_all_in_one_node_pairs_automatically_and_adds_proxy_parts(comfy, sd15, tiny, monkeypatch):
    _, seen = _all_in_one(sd15, tiny, monkeypatch, pairs="", proxy_parts=2)
    assert "instances" in seen["constraint"].what and "2 proxy parts" in seen["constraint"].what


@pytest.mark.parametrize("settings, message", [
    ({"pairs": "1>5"}, "^Eye-for-an-eye Appearance Transfer: the pair '1>5' names reference instance 5"),
    ({"reference_instances": None}, "^Eye-for-an-eye Appearance Transfer: connect instance masks for both images"),
])
def test_the_all_in_one_node_names_itself_in_instance_errors(comfy, sd15, tiny, monkeypatch, settings, message):
    from eye_for_an_eye.nodes import transfer

    inverted = []
    real = transfer.invert_latent
    monkeypatch.setattr(transfer, "invert_latent", lambda *a, **k: inverted.append(1) or real(*a, **k))
    with pytest.raises(ValueError, match=message):
        _all_in_one(sd15, tiny, monkeypatch, **settings)
    assert inverted == []  # found before either image was inverted


@pytest.mark.parametrize("category, count", [("two creatures, swapped", 2), ("three creatures, swapped", 3)])
def test_the_demo_scene_draws_several_creatures_with_their_instances_and_true_pairs(comfy, category, count):
    from eye_for_an_eye.eye_core.instances import parse_pairs
    from eye_for_an_eye.nodes import demo

    outputs = demo.DemoScene.execute(seed=3, category=category, species="bird", size=64).args
    target, reference, target_mask, _, ideal = outputs[:5]
    target_instances, reference_instances, pairs = outputs[-3:]
    assert target.shape == reference.shape == ideal.shape == (1, 64, 64 * count, 3)
    assert target_instances.shape == reference_instances.shape == (count, 64, 64 * count)
    pairing = parse_pairs(pairs, count, count)
    assert sorted(pairing) == list(range(count)) and pairing != list(range(count))  # swapped, every one paired
    assert torch.equal(target_instances.amax(0, keepdim=True), target_mask)
    single = demo.DemoScene.execute(seed=3, category="flipped", species="bird", size=64).args
    assert single[-1] == "1>1" and single[-3].shape == (1, 64, 64)


def test_the_all_in_one_node_picks_the_most_similar_of_several_references(comfy, sd15, tiny, monkeypatch):
    from eye_for_an_eye.nodes import transfer

    generator = torch.Generator().manual_seed(3)
    target = torch.rand(1, 64, 64, 3, generator=generator)
    candidates = torch.cat([torch.rand(1, 64, 64, 3, generator=generator), target.clone(),
                            torch.rand(1, 64, 64, 3, generator=generator)])
    picked = {}
    real = transfer._best_reference

    def recording(*args):
        picked["reference"], picked["mask"], _ = result = real(*args)
        return result

    monkeypatch.setattr(transfer, "_best_reference", recording)
    masks = torch.zeros(3, 64, 64)
    masks[1, 8:56, 8:56] = 1.0
    masks[0, 4:20, 4:20], masks[2, 40:60, 40:60] = 1.0, 1.0
    image, seen = _all_in_one(sd15, tiny, monkeypatch, target=target, reference=candidates, target_instances=None,
                              reference_instances=None, target_mask=torch.ones(1, 64, 64), reference_mask=masks,
                              best_reference=True)
    assert image.shape[0] == 1 and torch.isfinite(image).all()
    assert torch.equal(picked["reference"], candidates[1:2])  # the target's own picture among noise
    assert torch.equal(picked["mask"], masks[1:2])  # its mask goes with it
    assert seen["reference"].latent_shape[0] == 1


def test_the_all_in_one_node_refuses_candidates_with_reference_instances(comfy, sd15, tiny, monkeypatch):
    masks = torch.zeros(2, 64, 64)
    masks[0, 8:56, 4:30], masks[1, 8:56, 34:60] = 1.0, 1.0
    with pytest.raises(ValueError, match="^Eye-for-an-eye Appearance Transfer: best_reference picks one of 2 "
                                         "candidate references.*Rank Exemplars"):
        _all_in_one(sd15, tiny, monkeypatch, reference=torch.rand(2, 64, 64, 3), best_reference=True)
