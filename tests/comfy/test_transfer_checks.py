"""Apply Appearance Transfer, the Transfer Sampler and the all-in-one node refuse what would run silently wrong.

Trajectories, the model and a fixed correspondence must belong together (fingerprints); masks
must select tokens at the grids the patch edits; every error names the node the user sees.
Each case: the exact error (or warning), nothing mutated, and the next run correct.
"""

import copy
import dataclasses
import logging

import pytest
import torch
from eye_test_support.comfy_env import require_comfy
from eye_test_support.sampling import all_in_one as _all_in_one
from eye_test_support.sampling import sample, warnings_in

require_comfy()

from eye_for_an_eye.eye_core.rearrange import SYMMETRIC, TWO_FINEST, TransferSchedule  # noqa: E402
from eye_for_an_eye.eye_core.trajectory import EF_DDPM  # noqa: E402
from eye_for_an_eye.comfy_adapter import fingerprints  # noqa: E402
from eye_for_an_eye.nodes import correspondence, features, inversion, transfer  # noqa: E402

OFFICIAL_SCHEDULE = TransferSchedule()


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg, steps=8, skip=2, capture=False, seed=1):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg,
               steps=steps, cfg=3.5, method=EF_DDPM, seed=seed, skip_steps=skip, capture_features=capture)


def apply(model, reference, structure, **settings):
    inputs = dict(model=model, reference=reference, structure=structure, injection="feature", layers=TWO_FINEST,
                  rearrange_start=OFFICIAL_SCHEDULE.rearrange_start, rearrange_end=OFFICIAL_SCHEDULE.rearrange_end,
                  structure_end=OFFICIAL_SCHEDULE.structure_end,
                  structure_interval=OFFICIAL_SCHEDULE.structure_interval, guidance=SYMMETRIC, strength=1.0)
    inputs.update(settings)
    return run(transfer.ApplyAppearanceTransfer, **inputs)[0]


def sampler_of(structure, reference, **masks):
    return run(transfer.TransferSampler, structure=structure, reference=reference,
               adain_start=OFFICIAL_SCHEDULE.adain_start, adain_end=1.0, **masks)[0]


@pytest.fixture
def pair(sd15, tiny):
    """Tiny SD1.5, conds, and trajectories of a 16x24 target and a 24x16 reference (latent sizes)."""
    pos, neg = tiny.sd15_conds()
    target_latent, reference_latent = tiny.vae_like_latent(1, 16, 24, seed=1), tiny.vae_like_latent(1, 24, 16, seed=2)
    target, start, sigmas = invert(sd15, target_latent, pos, neg)
    reference, _, _ = invert(sd15, reference_latent, pos, neg)
    return sd15, pos, neg, target, reference, start, sigmas, target_latent, reference_latent


def _dift(model, latent, pos):
    return run(features.ExtractUNetFeatures, model=model, latent={"samples": latent}, positive=pos, timestep=261,
               decoder_level=features.AUTO_LEVEL, ensemble_size=1, seed=0)[0]


# ---------------------------------------------------------------- models and trajectories

def test_transfer_with_another_model_of_the_same_shape_is_refused(pair, tiny, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas, *_ = pair
    other = tiny.tiny_sd15(seed=1)
    options = copy.deepcopy(other.model_options)
    with pytest.raises(ValueError, match=(
            r"^Apply Appearance Transfer: the structure trajectory and the model come from two different SD1\.x "
            r"models \(the same architecture, other weights: another checkpoint\)\. Connect the model both images "
            r"were inverted with \(the same checkpoint and patches\), or invert them again with this one\.$")):
        apply(other, reference, target)
    assert other.model_options == options
    # the patched model of the right checkpoint, sampled through a guider of another one: refused while sampling
    patched = apply(model, reference, target)
    sampler = sampler_of(target, reference)
    with pytest.raises(ValueError, match=(
            r"^Transfer Sampler: the structure trajectory and the sampler's model come from two different SD1\.x "
            r"models")):
        sample(custom_sampler_nodes, other, pos, neg, sampler, sigmas, start)
    out = sample(custom_sampler_nodes, patched, pos, neg, sampler, sigmas, start)  # the next run is right
    assert torch.isfinite(out).all()


def test_the_transfer_patch_keeps_the_models_print_and_freeu_passes(sd15, tiny, custom_sampler_nodes, caplog):
    from comfy_extras.nodes_freelunch import FreeU

    pos, neg = tiny.sd15_conds()
    with_freeu = FreeU().patch(sd15, 1.2, 1.4, 0.9, 0.2)[0]
    target, start, sigmas = invert(with_freeu, tiny.vae_like_latent(1, 16, 16, seed=3), pos, neg, capture=True)
    reference, _, _ = invert(with_freeu, tiny.vae_like_latent(1, 16, 16, seed=4), pos, neg, capture=True, seed=2)
    again = FreeU().patch(sd15, 1.2, 1.4, 0.9, 0.2)[0]  # the authors' FreeU, applied anew before the transfer
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        patched = apply(again, reference, target)
        once_more = apply(patched, reference, target)  # stacked: each patch leaves the print alone
        out = sample(custom_sampler_nodes, once_more, pos, neg, sampler_of(target, reference), sigmas, start)
    assert fingerprints.model_print(patched) == fingerprints.model_print(again) == fingerprints.model_print(once_more)
    assert fingerprints.model_print(again) == target.origin.model
    assert torch.isfinite(out).all() and warnings_in(caplog) == []
    # without FreeU: runs, with a warning naming the patches
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        apply(sd15, reference, target)
    (warning,) = warnings_in(caplog)
    assert warning.startswith("Apply Appearance Transfer: the structure trajectory and the model come from the same "
                              "SD1.x model with other patches (output_block_patch FreeU.patch against no patches)")


def test_trajectories_of_two_checkpoints_are_refused_by_the_node_that_sees_them(pair, tiny):
    model, pos, neg, target, reference, start, sigmas, _, reference_latent = pair
    foreign, _, _ = invert(tiny.tiny_sd15(seed=2), reference_latent, pos, neg)
    expected = (r"the structure trajectory and the reference trajectory come from two different SD1\.x models "
                r".*Invert the target and the reference with the same model \(and the same patches\)\.$")
    with pytest.raises(ValueError, match="^Apply Appearance Transfer: " + expected):
        apply(model, foreign, target)
    with pytest.raises(ValueError, match="^Transfer Sampler: " + expected):
        sampler_of(target, foreign)


def test_the_transfer_sampler_names_itself_for_other_schedules(pair):
    model, pos, neg, target, reference, start, sigmas, _, reference_latent = pair
    other, _, _ = invert(model, reference_latent, pos, neg, steps=8, skip=3)
    with pytest.raises(ValueError, match=(
            r"^Transfer Sampler: the reference and structure trajectories have different schedules \(8 steps "
            r"skipping 3 vs 8 skipping 2\)\. Invert both images with the same steps and skip_steps")):
        sampler_of(target, other)


# ---------------------------------------------------------------- a fixed correspondence

def test_a_correspondence_of_other_images_is_refused(pair, tiny, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas, target_latent, reference_latent = pair
    right = run(correspondence.MatchCorrespondence, target_features=_dift(model, target_latent, pos),
                reference_features=_dift(model, reference_latent, pos))[0]
    other_target = run(correspondence.MatchCorrespondence,
                       target_features=_dift(model, tiny.vae_like_latent(1, 16, 24, seed=7), pos),
                       reference_features=_dift(model, reference_latent, pos))[0]
    options, before = copy.deepcopy(model.model_options), right.index.clone()
    with pytest.raises(ValueError, match=(
            r"^Apply Appearance Transfer: the correspondence was matched on another target image than the structure "
            r"trajectory was inverted from \(image row\(s\) \[0\]\)\. Connect the Match Correspondence made from the "
            r"features of these very images")):
        apply(model, reference, target, correspondence=other_target)
    other_reference = run(correspondence.MatchCorrespondence, target_features=_dift(model, target_latent, pos),
                          reference_features=_dift(model, reference_latent.flip(-1), pos))[0]
    with pytest.raises(ValueError, match=r"another reference image than the reference trajectory"):
        apply(model, reference, target, correspondence=other_reference)
    assert model.model_options == options and torch.equal(right.index, before)
    patched = apply(model, reference, target, correspondence=right)  # the right one: accepted
    out = sample(custom_sampler_nodes, patched, pos, neg, sampler_of(target, reference), sigmas, start)
    assert torch.isfinite(out).all() and (out - sample(custom_sampler_nodes, model, pos, neg,
                                                       sampler_of(target, reference), sigmas, start)).abs().max() > 0


def test_a_batch_correspondence_is_checked_row_by_row(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    targets_latent = tiny.vae_like_latent(2, 16, 16, seed=8)
    reference_latent = tiny.vae_like_latent(1, 16, 16, seed=9)
    targets, _, _ = invert(sd15, targets_latent, pos, neg)
    reference, _, _ = invert(sd15, reference_latent, pos, neg)
    reference_features = _dift(sd15, reference_latent, pos)
    right = run(correspondence.MatchCorrespondence, target_features=_dift(sd15, targets_latent, pos),
                reference_features=reference_features)[0]
    apply(sd15, reference, targets, correspondence=right)
    swapped = torch.cat([targets_latent[:1], tiny.vae_like_latent(1, 16, 16, seed=10)])
    wrong = run(correspondence.MatchCorrespondence, target_features=_dift(sd15, swapped, pos),
                reference_features=reference_features)[0]
    with pytest.raises(ValueError, match=r"another target image .* \(image row\(s\) \[1\]\)"):
        apply(sd15, reference, targets, correspondence=wrong)


def test_a_correspondence_without_matches_is_refused(pair):
    from eye_for_an_eye.eye_core.matching import match

    model, pos, neg, target, reference, *_ = pair
    empty = match(torch.randn(1, 8, 8, 12), torch.randn(1, 8, 12, 8), torch.zeros(1, 8, 12), check_masks=False)
    with pytest.raises(ValueError, match=(
            r"^Apply Appearance Transfer: the correspondence matches no target token for image row\(s\) \[0\] \(its "
            r"target mask selected nothing at its grid\)")):
        apply(model, reference, target, correspondence=dataclasses.replace(empty))
    assert torch.equal(empty.index, torch.full_like(empty.index, -1))  # nothing mutated
    assert apply(model, reference, target) is not model  # the next run (per-step matching) is accepted


def test_match_correspondence_refuses_a_target_mask_without_a_token(pair):
    model, pos, neg, target, reference, start, sigmas, target_latent, reference_latent = pair
    mask = torch.zeros(1, 128, 192)  # image size; the DIFT grid is 8x12 (16-pixel tokens, centres at 8, 24, ...)
    mask[:, 10:20, 10:20] = 1.0  # covers pixels, between token centres
    before = mask.clone()
    with pytest.raises(ValueError, match=(
            r"^Match Correspondence: target_mask leaves no target token at the 8x12 token grid \(batch row\(s\) "
            r"\[0\];.*draw a larger mask \(a larger SAM box\), or pass none to use the whole target image\.$")):
        run(correspondence.MatchCorrespondence, target_features=_dift(model, target_latent, pos),
            reference_features=_dift(model, reference_latent, pos), target_mask=mask)
    assert torch.equal(mask, before)
    mask[:, 0:64, 0:96] = 1.0  # a larger mask: the next run matches
    found = run(correspondence.MatchCorrespondence, target_features=_dift(model, target_latent, pos),
                reference_features=_dift(model, reference_latent, pos), target_mask=mask)[0]
    assert bool(found.matched.any())


# ---------------------------------------------------------------- masks at the patch's grids

def _blob(height, width, rows, cols):
    mask = torch.zeros(1, height, width)
    mask[:, rows, cols] = 1.0
    return mask


@pytest.mark.parametrize("which", ["reference_mask", "target_mask"])
def test_a_mask_without_a_token_at_any_edited_grid_is_refused(pair, custom_sampler_nodes, which):
    model, pos, neg, target, reference, start, sigmas, *_ = pair
    # image-size masks: the target is 128x192 px (grids 16x24 and 8x12), the reference 192x128 (24x16 and 12x8);
    # pixels 0-2 lie before the first token centre of every grid
    size = (128, 192) if which == "target_mask" else (192, 128)
    role = "target" if which == "target_mask" else "reference"
    grids = "16x24 and 8x12" if which == "target_mask" else "24x16 and 12x8"
    mask = _blob(*size, slice(0, 3), slice(0, 3))
    before = mask.clone()
    with pytest.raises(ValueError, match=(
            rf"^Apply Appearance Transfer: {which} leaves no {role} token at the {grids} token grids \(batch row\(s\) "
            rf"\[0\];.*draw a larger mask \(a larger SAM box\), or leave {which} unconnected to use the whole {role} "
            r"image\.$")):
        apply(model, reference, target, **{which: mask})
    assert torch.equal(mask, before)
    # the next run, with a mask that holds tokens, is right: it changes the result inside the mask
    fine = torch.zeros(1, *size)
    fine[:, : size[0] // 2] = 1.0
    plain = sample(custom_sampler_nodes, model, pos, neg, run(inversion.TrajectorySampler, trajectory=target)[0],
                   sigmas, start)
    out = sample(custom_sampler_nodes, apply(model, reference, target, **{which: fine}), pos, neg,
                 run(inversion.TrajectorySampler, trajectory=target)[0], sigmas, start)
    assert (out - plain).abs().max() > 1e-3


def test_a_mask_without_a_token_at_the_coarse_grid_warns(pair, caplog):
    model, pos, neg, target, reference, *_ = pair
    mask = _blob(128, 192, slice(3, 5), slice(3, 5))  # on the first centre of the 16x24 grid only
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        apply(model, reference, target, target_mask=mask)
    (warning,) = warnings_in(caplog)
    assert warning.startswith("Apply Appearance Transfer: target_mask leaves no target token at the 8x12 token grid "
                              "(batch row(s) [0];")
    assert warning.endswith("the layers at that grid leave those images as they are; draw a larger mask, or choose "
                            "layers 'finest decoder level' to edit only the finest grid (16x24).")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        apply(model, reference, target, target_mask=mask, layers="finest decoder level")
    assert warnings_in(caplog) == []


def test_mask_errors_name_the_node(pair):
    model, pos, neg, target, reference, *_ = pair
    with pytest.raises(ValueError, match=r"^Transfer Sampler: target_mask has shape \(1, 2, 8, 8\)"):
        sampler_of(target, reference, target_mask=torch.ones(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: reference_mask is empty \(all zero\)"):
        apply(model, reference, target, reference_mask=torch.zeros(1, 64, 64))


def test_settings_out_of_range_sent_through_the_api_name_the_node(pair):
    model, pos, neg, target, reference, *_ = pair
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: rearrange_start must be a fraction of the "
                                         r"schedule between 0 and 1, got 1\.5$"):
        apply(model, reference, target, rearrange_start=1.5)
    with pytest.raises(ValueError, match=r"^Transfer Sampler: adain_start must be a fraction"):
        run(transfer.TransferSampler, structure=target, reference=reference, adain_start=-0.1, adain_end=1.0)


# ---------------------------------------------------------------- independent noise for the two images

def test_two_inversions_with_one_seed_are_named_and_still_run(sd15, tiny, caplog):
    pos, neg = tiny.sd15_conds()
    target, _, _ = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=3), pos, neg, seed=5)
    same, _, _ = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=4), pos, neg, seed=5)
    other, _, _ = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=4), pos, neg, seed=6)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        patched = apply(sd15, same, target)
    assert warnings_in(caplog) == [
        "Apply Appearance Transfer: the target and the reference were inverted with the same seed (5), so their "
        "noise is the same at every step; per-step matching then leans toward matching each part to the same "
        "position rather than to the same part. Give the reference's Invert Latent another seed (e.g. 6)."]
    assert patched is not sd15
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        apply(sd15, other, target)
    assert warnings_in(caplog) == []


def test_the_all_in_one_node_inverts_the_reference_with_its_own_seed(sd15, tiny, monkeypatch, caplog):
    from eye_for_an_eye.eye_core.trajectory import reference_noise_seed

    seeds = []
    real = transfer.invert_latent

    def recording(**inputs):
        seeds.append(inputs["seed"])
        return real(**inputs)

    monkeypatch.setattr(transfer, "invert_latent", recording)
    pos, neg = tiny.sd15_conds()
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        _all_in_one(sd15, tiny.tiny_vae(), pos, neg, seed=41)
    assert seeds == [41, reference_noise_seed(41)] == [41, 42]
    assert not any("same seed" in message for message in warnings_in(caplog))


# ---------------------------------------------------------------- the all-in-one node names itself

def test_the_all_in_one_node_names_itself_in_warnings_raised_while_sampling(sd15, tiny, caplog):
    import nodes as comfy_nodes  # ComfyUI's own nodes.py

    pos, neg = tiny.sd15_conds()
    (area,) = comfy_nodes.ConditioningSetArea().append(pos, 32, 32, 0, 0, 1.0)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        image, _ = _all_in_one(sd15, tiny.tiny_vae(), pos + area, neg)
    area_warnings = [m for m in warnings_in(caplog) if "area conditioning" in m]
    assert area_warnings and all(m.startswith("Eye-for-an-eye Appearance Transfer: a UNet call") for m in area_warnings)
    assert torch.isfinite(image).all()


def test_the_all_in_one_node_names_itself_in_every_error(sd15, tiny):
    vae = tiny.tiny_vae()
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: skip_steps \(4\) must be smaller"):
        _all_in_one(sd15, vae, pos, neg, skip_steps=4)
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: positive was encoded for another "
                                         r"model: its tokens are 48 wide"):
        _all_in_one(sd15, vae, tiny.conditioning(48, 0), neg)
    sliver = _blob(64, 64, slice(0, 3), slice(0, 3))  # no token of the 4x4 DIFT grid
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: reference_mask leaves no reference "
                                         r"token at the 4x4 token grid"):
        _all_in_one(sd15, vae, pos, neg, matching=transfer.FIXED_DIFT, reference_mask=sliver)
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: target_mask is empty"):
        _all_in_one(sd15, vae, pos, neg, target_mask=torch.zeros(1, 64, 64))
    image, latent = _all_in_one(sd15, vae, pos, neg, matching=transfer.FIXED_DIFT)  # the next run is right
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(latent["samples"]).all()
