"""Fingerprints where trajectories, features and models meet, and the input checks that name the node.

Each bad input gets the exact clear error (or the warning), nothing is mutated, and the
next run with the right input is correct. Legitimate uses pass: the same model loaded
twice, FreeU applied identically before inversion and replay, batches.
"""

import copy
import logging

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_core.trajectory import EF_DDPM  # noqa: E402
from eye_for_an_eye.comfy_adapter import fingerprints  # noqa: E402
from eye_for_an_eye.nodes import correspondence, features, inversion  # noqa: E402


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg, steps=6, skip=1, capture=False):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg,
               steps=steps, cfg=3.5, method=EF_DDPM, seed=1, skip_steps=skip, capture_features=capture)


def replay(nodes, model, trajectory, start, sigmas, pos, neg, cfg=3.5):
    (guider,) = nodes.CFGGuider().get_guider(model, pos, neg, cfg)
    (noise,) = nodes.DisableNoise().get_noise()
    (sampler,) = run(inversion.TrajectorySampler, trajectory=trajectory)
    out, _ = nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
    return out["samples"]


def snapshot(trajectory):
    return trajectory.latents.clone(), trajectory.noise.clone(), trajectory.sigmas.clone()


def unchanged(trajectory, before):
    return all(torch.equal(a, b) for a, b in zip((trajectory.latents, trajectory.noise, trajectory.sigmas), before))


def freeu(model):
    from comfy_extras.nodes_freelunch import FreeU

    return FreeU().patch(model, 1.2, 1.4, 0.9, 0.2)[0]


@pytest.fixture
def inverted(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16, seed=3)
    trajectory, start, sigmas = invert(sd15, latent, pos, neg)
    return sd15, pos, neg, latent, trajectory, start, sigmas


# ---------------------------------------------------------------- the model a trajectory replays on

def test_replay_with_another_model_of_the_same_shape_is_refused(inverted, tiny, custom_sampler_nodes):
    model, pos, neg, latent, trajectory, start, sigmas = inverted
    before, options = snapshot(trajectory), copy.deepcopy(model.model_options)
    other = tiny.tiny_sd15(seed=1)
    with pytest.raises(ValueError, match=(
            r"^Trajectory Sampler: this trajectory and the sampler's model come from two "
            r"different SD1\.x models \(the same architecture, other weights: another checkpoint\)\. A trajectory only "
            r"replays on the model it was inverted with: connect that model to the CFGGuider")):
        replay(custom_sampler_nodes, other, trajectory, start, sigmas, pos, neg)
    assert unchanged(trajectory, before) and model.model_options == options
    out = replay(custom_sampler_nodes, model, trajectory, start, sigmas, pos, neg)  # the next run is right
    assert (out - latent).abs().max().item() <= 1e-3


def test_the_same_checkpoint_loaded_twice_replays_exactly(inverted, tiny, custom_sampler_nodes):
    model, pos, neg, latent, trajectory, start, sigmas = inverted
    twin = tiny.tiny_sd15(seed=0)  # another ModelPatcher and module with the same weights
    assert twin.model is not model.model
    out = replay(custom_sampler_nodes, twin, trajectory, start, sigmas, pos, neg)
    assert (out - latent).abs().max().item() <= 1e-3


def test_sd15_trajectory_on_sdxl_names_the_model_not_the_noise(inverted, sdxl, tiny, custom_sampler_nodes):
    model, pos, neg, latent, trajectory, start, sigmas = inverted
    xpos, xneg = tiny.sdxl_conds()
    before, options = snapshot(trajectory), copy.deepcopy(sdxl.model_options)
    with pytest.raises(ValueError) as error:
        replay(custom_sampler_nodes, sdxl, trajectory, start, sigmas, xpos, xneg)
    assert unchanged(trajectory, before) and sdxl.model_options == options
    assert (replay(custom_sampler_nodes, model, trajectory, start, sigmas, pos, neg) - latent).abs().max() <= 1e-3
    message = str(error.value)
    assert message.startswith("Trajectory Sampler: this trajectory and the sampler's model belong to different model "
                              "families: this trajectory to an SD1.x model, the sampler's model to an SDXL model, each "
                              "with its own latent format. A trajectory only replays on the model it was inverted "
                              "with")
    assert "DisableNoise" not in message and "noise was added" not in message


@pytest.mark.parametrize("sampler_node", ["Trajectory Sampler", "Transfer Sampler"])
def test_prompts_of_another_text_encoder_in_the_guider_are_named(inverted, tiny, custom_sampler_nodes, sampler_node):
    """Prompts of another text encoder given to the CFGGuider of an SD1.5 replay: the sampler says which input,
    where ComfyUI would fail with a matrix shape deep in the UNet."""
    from eye_for_an_eye.nodes import transfer

    model, pos, neg, latent, trajectory, start, sigmas = inverted
    xpos = tiny.conditioning(48, 0)  # tokens of another width than the tiny SD1.5's
    (guider,) = custom_sampler_nodes.CFGGuider().get_guider(model, xpos, neg, 3.5)
    (noise,) = custom_sampler_nodes.DisableNoise().get_noise()
    if sampler_node == "Trajectory Sampler":
        (sampler,) = run(inversion.TrajectorySampler, trajectory=trajectory)
    else:
        (sampler,) = run(transfer.TransferSampler, structure=trajectory, reference=trajectory, adain_start=0.7,
                         adain_end=1.0)
    before, options = snapshot(trajectory), copy.deepcopy(model.model_options)
    with pytest.raises(ValueError, match=rf"^{sampler_node}: the guider's positive conditioning was encoded for "
                                         r"another model: its tokens are \d+ wide but this SD1\.x model takes \d+"):
        custom_sampler_nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
    assert unchanged(trajectory, before) and model.model_options == options
    assert (replay(custom_sampler_nodes, model, trajectory, start, sigmas, pos, neg) - latent).abs().max() <= 1e-3


def test_identical_freeu_passes_and_other_patches_warn(sd15, tiny, custom_sampler_nodes, caplog):
    pos, neg = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16, seed=4)
    trajectory, start, sigmas = invert(freeu(sd15), latent, pos, neg)
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        out = replay(custom_sampler_nodes, freeu(sd15), trajectory, start, sigmas, pos, neg)  # FreeU applied again
    assert (out - latent).abs().max().item() <= 1e-3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        replay(custom_sampler_nodes, sd15, trajectory, start, sigmas, pos, neg)  # editing without FreeU: allowed
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("Trajectory Sampler: this trajectory and the sampler's model "
                                  "come from the same SD1.x model with other patches (output_block_patch FreeU.patch "
                                  "against no patches). The replay will not rebuild the inverted image exactly")


def test_weight_patches_count_as_patches_and_never_change_the_base_print(sd15, tiny):
    base = fingerprints.model_print(sd15)
    lora = sd15.clone()
    key = "diffusion_model.out.2.weight"  # one of the fingerprinted tensors
    weight = sd15.model.state_dict()[key]
    lora.add_patches({key: (0.1 * torch.ones_like(weight),)}, 0.8)
    patched = fingerprints.model_print(lora)
    assert patched.difference(base) == "patches" and patched.weights == base.weights
    assert "weight patches on 1 tensors (LoRA or merge)" in patched.patch_summary
    lora.patch_model()  # ComfyUI writes the LoRA into the shared module while that clone is loaded
    try:
        assert not torch.equal(sd15.model.state_dict()[key], weight)
        assert fingerprints.model_print(sd15) == base  # read from the patcher's backup: still the checkpoint's print
        assert fingerprints.model_print(lora) == patched
    finally:
        lora.unpatch_model()
    assert torch.equal(sd15.model.state_dict()[key], weight)
    stronger = sd15.clone()
    stronger.add_patches({key: (0.1 * torch.ones_like(weight),)}, 1.0)
    assert fingerprints.model_print(stronger).patches != patched.patches  # another strength, another print


def test_a_fingerprint_reads_five_weight_tensors(sd15, monkeypatch):
    sampled = []
    original = fingerprints._tensor_sample
    monkeypatch.setattr(fingerprints, "_tensor_sample", lambda tensor: sampled.append(tensor.numel()) or original(tensor))
    fingerprints.model_print(sd15)
    total = sum(p.numel() for p in sd15.model.diffusion_model.parameters())
    assert len(sampled) == 5 and sum(sampled) < total / 5


# ---------------------------------------------------------------- features of two models

def _features(model, latent, pos, level=features.AUTO_LEVEL):
    return run(features.ExtractUNetFeatures, model=model, latent={"samples": latent}, positive=pos, timestep=261,
               decoder_level=level, ensemble_size=1, seed=0)[0]


def test_sd15_and_sdxl_features_are_refused_without_the_wrong_advice(sd15, sdxl, tiny):
    pos, _ = tiny.sd15_conds()
    xpos, _ = tiny.sdxl_conds()
    latent = tiny.vae_like_latent(1, 32, 32, seed=5)
    for level in (features.AUTO_LEVEL, "output block 2"):  # the old advice: the same decoder_level on both
        with pytest.raises(ValueError) as error:
            run(correspondence.MatchCorrespondence, target_features=_features(sd15, latent, pos, level),
                reference_features=_features(sdxl, latent, xpos, level))
        message = str(error.value)
        assert message == (
            "Match Correspondence: the target features and the reference features belong to different model "
            "families: the target features to an SD1.x model, the reference features to an SDXL model, each with its "
            "own latent format. Features of different models cannot be matched, whatever their decoder level: "
            "connect the same MODEL to both Extract UNet Features nodes.")
        assert "set the same decoder_level" not in message.lower()


def test_features_of_two_checkpoints_are_refused_and_of_one_are_matched(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16, seed=6)
    with pytest.raises(ValueError, match=r"^Match Correspondence: .* two different SD1\.x models"):
        run(correspondence.MatchCorrespondence, target_features=_features(sd15, latent, pos),
            reference_features=_features(tiny.tiny_sd15(seed=2), latent, pos))
    corr = run(correspondence.MatchCorrespondence, target_features=_features(sd15, latent, pos),
               reference_features=_features(tiny.tiny_sd15(seed=0), latent.flip(-1), pos))[0]
    assert corr.matched.all() and corr.target_origin is not None and corr.reference_origin is not None


# ---------------------------------------------------------------- conditioning, schedules, messages

def test_conditioning_of_another_text_encoder_names_the_input(sd15, sdxl, tiny):
    latent = tiny.vae_like_latent(1, 8, 8)
    pos, neg = tiny.sd15_conds()
    wide = tiny.conditioning(48, seed=3)
    with pytest.raises(ValueError, match=(
            r"^Invert Latent: negative was encoded for another model: its tokens are 48 wide but this SD1\.x model "
            r"takes 64\. Encode the prompt with the CLIP of the same checkpoint as the model")):
        invert(sd15, latent, pos, wide)
    with pytest.raises(ValueError, match=(
            r"^Invert Latent: positive has no pooled text embedding, which SDXL models need: it was encoded by "
            r"another model's text encoder \(SD1\.x\?\)")):
        invert(sdxl, latent, pos, neg)
    with pytest.raises(ValueError, match=r"^Extract UNet Features: positive was encoded for another model"):
        _features(sd15, latent, wide)
    xpos, xneg = tiny.sdxl_conds()
    trajectory, _, _ = invert(sdxl, latent, xpos, xneg)  # the right conditioning runs
    assert trajectory.steps == 5


def _sd3_sampling(model):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(model, 3.0)[0]


def _edm_sampling(model):
    from comfy_extras.nodes_model_advanced import ModelSamplingContinuousEDM

    return ModelSamplingContinuousEDM().patch(model, "v_prediction", 120.0, 0.002)[0]


@pytest.mark.parametrize("switch, words", [
    (_sd3_sampling, "flow matching (rectified flow) sampling, as set by ModelSamplingSD3, ModelSamplingAuraFlow or "
                    "ModelSamplingFlux"),
    (_edm_sampling, "continuous (EDM-style) sigmas, as set by ModelSamplingContinuousEDM or ModelSamplingContinuousV"),
])
def test_flow_and_edm_sampling_are_named_in_plain_words(sd15, tiny, switch, words):
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError) as error:
        invert(switch(sd15), tiny.vae_like_latent(1, 8, 8), pos, neg)
    message = str(error.value)
    assert message == (f"Invert Latent: this MODEL uses {words}. The method needs the discrete noise schedule Stable "
                       "Diffusion checkpoints come with: remove that node from the model's path, or load an SD1.x, "
                       "SD2.x or SDXL checkpoint.")
    for internal in ("ModelSamplingAdvanced", "ModelSamplingDiscreteFlow", "CONST", " and SDXL checkpoint"):
        assert internal not in message


def test_a_distilled_schedule_names_the_node_and_the_steps_that_fit(sd15, tiny):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    lcm = ModelSamplingDiscrete().patch(sd15, "lcm", False)[0]
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match=(
            r"^Invert Latent: steps is 100 but this model's noise schedule has only 50 timesteps \(a distilled "
            r"schedule, such as ModelSamplingDiscrete set to lcm\), so at most 49 steps fit\. Lower steps to 49")):
        invert(lcm, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=100, skip=32)
    options = copy.deepcopy(lcm.model_options)
    trajectory, _, _ = invert(lcm, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=49, skip=16)  # the advice works
    assert trajectory.steps == 33 and lcm.model_options == options


def test_exceptions_do_not_show_the_install_path():
    """ComfyUI reports an error as module.Class: every exception class of the pack names the pack, not its folder."""
    import importlib
    import pkgutil

    import execution

    import eye_for_an_eye

    seen, wrong = [], []
    for info in pkgutil.walk_packages(eye_for_an_eye.__path__, "eye_for_an_eye."):
        if ".eye_demo" in info.name or info.name.endswith((".demo", ".__main__")):
            continue  # the demo world and the demo command raise no node errors of their own
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and \
                    value.__module__.startswith("eye_for_an_eye") and not value.__name__.startswith("_"):
                seen.append(value.__name__)
                if execution.full_type_name(value) != f"eye_for_an_eye.{value.__name__}":
                    wrong.append(f"{info.name}.{value.__name__} shows as {execution.full_type_name(value)}")
    # (a leading underscore marks control flow that never reaches the user)
    assert {"UnsupportedModelError", "SamDependencyError", "SamCheckpointError", "PromptError", "PairingError"} <= set(seen)
    assert not wrong, "set __module__ = \"eye_for_an_eye\" on: " + "; ".join(wrong)
