"""What a user could hit without being told: silently wrong results and misleading errors.

Each case below once ran to a wrong result with no word, or failed with a message that
pointed elsewhere. Each asserts the message the user now sees (or the result now right).
"""

import logging

import pytest
import torch
from eye_test_support.comfy_env import require_comfy
from eye_test_support.sampling import all_in_one as _all_in_one
from eye_test_support.sampling import sample, warnings_in

require_comfy()

from eye_for_an_eye.eye_core.rearrange import IMPLICIT, OFFICIAL, SYMMETRIC, TWO_FINEST, TransferSchedule  # noqa: E402
from eye_for_an_eye.eye_core.trajectory import EF_DDPM  # noqa: E402
from eye_for_an_eye.comfy_adapter import patches  # noqa: E402
from eye_for_an_eye.nodes import correspondence, features, inversion, sam, transfer  # noqa: E402

OFFICIAL_SCHEDULE = TransferSchedule()


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg, steps=8, skip=2, seed=1, **more):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg,
               steps=steps, cfg=3.5, method=EF_DDPM, seed=seed, skip_steps=skip, capture_features=False, **more)


def apply(model, reference, structure, **settings):
    inputs = dict(model=model, reference=reference, structure=structure, injection="feature", layers=TWO_FINEST,
                  rearrange_start=round(OFFICIAL_SCHEDULE.rearrange_start, 4), rearrange_end=1.0,
                  structure_end=round(OFFICIAL_SCHEDULE.structure_end, 4),
                  structure_interval=round(OFFICIAL_SCHEDULE.structure_interval, 4), guidance=OFFICIAL, strength=1.0)
    inputs.update(settings)
    return run(transfer.ApplyAppearanceTransfer, **inputs)[0]


def sampler_of(structure, reference, **settings):
    inputs = dict(structure=structure, reference=reference, adain_start=round(OFFICIAL_SCHEDULE.adain_start, 4),
                  adain_end=1.0)
    inputs.update(settings)
    return run(transfer.TransferSampler, **inputs)[0]


@pytest.fixture
def pair(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    target_latent, reference_latent = tiny.vae_like_latent(1, 16, 16, seed=1), tiny.vae_like_latent(1, 16, 16, seed=2)
    target, start, sigmas = invert(sd15, target_latent, pos, neg)
    reference, reference_start, _ = invert(sd15, reference_latent, pos, neg, seed=2)
    return sd15, pos, neg, target, reference, start, sigmas, reference_start


# ---------------------------------------------------------------- silently wrong results

def test_the_modular_graph_with_its_widget_defaults_equals_the_all_in_one(pair, custom_sampler_nodes):
    """The widgets show 11/68 as 0.1618: at 34 generation steps that once moved structure injection."""
    model, pos, neg, target, reference, start, sigmas, _ = pair
    rounded = apply(model, reference, target)
    exact = apply(model, reference, target, rearrange_start=OFFICIAL_SCHEDULE.rearrange_start,
                  structure_end=OFFICIAL_SCHEDULE.structure_end,
                  structure_interval=OFFICIAL_SCHEDULE.structure_interval)
    plans = [patches.transfer_plans(m)[0] for m in (rounded, exact)]
    assert plans[0].schedule == plans[1].schedule == OFFICIAL_SCHEDULE
    a = sample(custom_sampler_nodes, rounded, pos, neg, sampler_of(target, reference), sigmas, start)
    b = sample(custom_sampler_nodes, exact, pos, neg, sampler_of(target, reference,
                                                                  adain_start=OFFICIAL_SCHEDULE.adain_start),
               sigmas, start)
    assert torch.equal(a, b)


def test_guidance_that_leaves_nothing_of_the_method_is_refused_and_one_that_silences_a_part_warns(
        pair, custom_sampler_nodes, caplog, sd15, tiny):
    model, pos, neg, target, reference, start, sigmas, _ = pair
    patched = apply(model, reference, target)
    with pytest.raises(ValueError, match=r"^Transfer Sampler: Apply Appearance Transfer's guidance 'official "
                                         r"\(asymmetric\)' at cfg 0 gives the uncond prediction alone"):
        sample(custom_sampler_nodes, patched, pos, neg, sampler_of(target, reference), sigmas, start, cfg=0.0)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        sample(custom_sampler_nodes, patched, pos, neg, sampler_of(target, reference), sigmas, start, cfg=1.0)
    assert any("at cfg 1 gives the cond prediction alone" in m and "'symmetric'" in m for m in warnings_in(caplog))
    caplog.clear()
    symmetric = apply(model, reference, target, guidance=SYMMETRIC)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        sample(custom_sampler_nodes, symmetric, pos, neg, sampler_of(target, reference), sigmas, start, cfg=1.0)
        sample(custom_sampler_nodes, symmetric, pos, neg, sampler_of(target, reference), sigmas, start, cfg=0.0)
    assert not any("cfg" in m for m in warnings_in(caplog))
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: guidance 'official \(asymmetric\)' "
                                         r"at cfg 0"):
        _all_in_one(sd15, tiny.tiny_vae(), pos, neg, cfg=0.0)


def test_a_second_implicit_transfer_is_refused_naming_the_first(pair):
    model, pos, neg, target, reference, *_ = pair
    first = apply(model, reference, target, injection=IMPLICIT)
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: the model's self-attention at output block "
                                         r"\d+ is already replaced by an earlier Apply Appearance Transfer "
                                         r"\(injection 'implicit'\)"):
        apply(first, reference, target, injection=IMPLICIT)
    apply(first, reference, target)  # a feature transfer on top still stacks


def test_non_finite_inputs_are_refused_by_the_first_node(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16, seed=1)
    latent.view(-1)[:5] = float("nan")
    with pytest.raises(ValueError, match=r"^Invert Latent: the latent holds 5 NaN and 0 infinite values"):
        invert(sd15, latent, pos, neg)
    with pytest.raises(ValueError, match=r"^Extract UNet Features: the latent holds 5 NaN"):
        run(features.ExtractUNetFeatures, model=sd15, latent={"samples": latent}, positive=pos, timestep=261,
            decoder_level=features.AUTO_LEVEL, ensemble_size=1, seed=0)
    image = torch.rand(1, 64, 64, 3)
    image[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: the reference image holds 0 NaN "
                                         r"and 1 infinite values"):
        _all_in_one(sd15, tiny.tiny_vae(), pos, neg, reference=image)


def test_a_latent_of_another_family_is_refused_before_the_unet(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match=r"^Invert Latent: the latent has 16 channels but this SD1.x model takes 4"):
        invert(sd15, torch.randn(1, 16, 16, 16), pos, neg)


def test_every_combo_is_checked_at_its_node_with_the_options_listed(pair, sd15, tiny):
    model, pos, neg, target, reference, *_ = pair
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: injection is 'implicit', which is not one "
                                         r"of its options: 'feature', 'value', 'key-value', 'implicit \(cross-image "
                                         r"attention\)'"):
        apply(model, reference, target, injection="implicit")
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: guidance is 'bogus'.*'official "
                                         r"\(asymmetric\)', 'symmetric'"):
        apply(model, reference, target, guidance="bogus")
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: matching is 'fixed', which is not "
                                         r"one of its options: 'per-step matching \(official\)', 'fixed DIFT "
                                         r"correspondence'"):
        _all_in_one(sd15, tiny.tiny_vae(), pos, neg, matching="fixed")
    with pytest.raises(ValueError, match=r"^Invert Latent: method is 'ddpm'"):
        run(inversion.InvertLatent, model=sd15, latent={"samples": tiny.vae_like_latent(1, 16, 16)}, positive=pos,
            negative=neg, steps=8, cfg=3.5, method="ddpm", seed=0, skip_steps=2)
    with pytest.raises(ValueError, match=r"^Load SAM-HQ Model: device is 'gpu0'"):
        run(sam.LoadSAMHQModel, checkpoint="none.pth", architecture="vit_tiny", device="gpu0")


def test_a_window_that_selects_no_step_warns_saying_which_steps(pair, custom_sampler_nodes, caplog):
    model, pos, neg, target, reference, start, sigmas, _ = pair
    late = apply(model, reference, target, rearrange_start=0.97)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        sample(custom_sampler_nodes, late, pos, neg, sampler_of(target, reference, adain_start=0.9, adain_end=0.5),
               sigmas, start)
    messages = warnings_in(caplog)
    assert any(m.startswith("Apply Appearance Transfer: rearrange_start 0.97 and rearrange_end 1 select no step of "
                            "the 6 generation steps (iterations 6 up to 6") for m in messages), messages
    assert any(m.startswith("Transfer Sampler: adain_start 0.9 and adain_end 0.5 select no step") for m in messages)


# ---------------------------------------------------------------- misleading errors

def test_replaying_from_another_images_start_latent_says_so(pair, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas, reference_start = pair
    sampler = run(inversion.TrajectorySampler, trajectory=target)[0]
    with pytest.raises(ValueError, match=r"^Trajectory Sampler: the latent entering it is not this trajectory's "
                                         r"start latent .* perhaps the start_latent of the other Invert Latent"):
        sample(custom_sampler_nodes, model, pos, neg, sampler, sigmas, reference_start, cfg=3.5)
    (guider,) = custom_sampler_nodes.CFGGuider().get_guider(model, pos, neg, 3.5)
    (noise,) = custom_sampler_nodes.RandomNoise().get_noise(0)  # the default NOISE: the sampler adds noise
    with pytest.raises(ValueError, match=r"by noise of the first sigma's size: noise was added to it\. Use "
                                         r"DisableNoise"):
        custom_sampler_nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)


def test_the_all_in_one_with_more_references_than_targets_points_to_best_reference(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: the reference input holds 2 images "
                                         r"and the target 1: .* turn best_reference on"):
        _all_in_one(sd15, tiny.tiny_vae(), pos, neg, reference=torch.rand(2, 64, 64, 3))


def test_match_correspondence_names_the_reference_batch(pair):
    model, pos, *_ = pair
    import eye_test_support.tiny_models as tiny

    feats = run(features.ExtractUNetFeatures, model=model, latent={"samples": tiny.vae_like_latent(1, 16, 16)},
                positive=pos, timestep=261, decoder_level=features.AUTO_LEVEL, ensemble_size=1, seed=0)[0]
    with pytest.raises(ValueError, match=r"reference_mask has batch 3 but the reference batch is 1; pass one mask "
                                         r"\(batch 1, shared by every image\) or one per reference image"):
        run(correspondence.MatchCorrespondence, target_features=feats, reference_features=feats,
            reference_mask=torch.ones(3, 64, 64))


def test_token_merging_or_hypertile_before_the_pack_is_named(pair, tiny):
    from comfy_extras.nodes_hypertile import HyperTile
    from comfy_extras.nodes_tomesd import TomePatchModel

    model, pos, neg, target, reference, *_ = pair
    tome = TomePatchModel.execute(model, 0.5).args[0]
    with pytest.raises(ValueError, match=r"^Apply Appearance Transfer: the model carries Token Merging \(ToMe\), "
                                         r"which merges or tiles the self-attention's tokens"):
        apply(tome, reference, target)
    tiled = HyperTile.execute(model, 256, 2, 0, False)[0]
    with pytest.raises(ValueError, match=r"^Invert Latent: the model carries HyperTile"):
        run(inversion.InvertLatent, model=tiled, latent={"samples": tiny.vae_like_latent(1, 16, 16)}, positive=pos,
            negative=neg, steps=8, cfg=3.5, method=EF_DDPM, seed=0, skip_steps=2)


def test_the_feature_preview_is_the_same_every_run():
    from eye_for_an_eye.eye_core.visualize import pca_rgb

    x = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pca_rgb(x), pca_rgb(x.clone()))
    with pytest.raises(ValueError, match="NaN or infinite"):
        pca_rgb(torch.full((1, 4, 2, 2), float("nan")))
