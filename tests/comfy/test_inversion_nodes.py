"""Invert Latent and Trajectory Sampler in-process against the real ComfyUI (tiny models, fp32, CPU)."""

import copy

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_core.trajectory import DDIM, EF_DDPM  # noqa: E402
from eye_for_an_eye.nodes import inversion  # noqa: E402


def run(node, **inputs):
    """Call a V3 node's execute like ComfyUI does and return its outputs as a tuple."""
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg, steps=20, cfg=3.5, method=EF_DDPM, seed=1, skip=0):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg,
               steps=steps, cfg=cfg, method=method, seed=seed, skip_steps=skip)


def replay_through_comfy(nodes, model, trajectory, start_latent, sigmas, pos, neg, cfg, record=None):
    """SamplerCustomAdvanced + CFGGuider + DisableNoise + Trajectory Sampler, as a user wires them."""
    if record is not None:
        model = model.clone()

        def wrapper(apply_model, args):
            record.append(args["input"][:1].clone())
            return apply_model(args["input"], args["timestep"], **args["c"])

        model.set_model_unet_function_wrapper(wrapper)
    (guider,) = nodes.CFGGuider().get_guider(model, pos, neg, cfg)
    (noise,) = nodes.DisableNoise().get_noise()
    (sampler,) = run(inversion.TrajectorySampler, trajectory=trajectory)
    out, _ = nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start_latent)
    return out["samples"]


@pytest.mark.parametrize("skip", [0, 6])
def test_edit_friendly_replay_rebuilds_the_input(sd15, tiny, custom_sampler_nodes, skip):
    latent = tiny.vae_like_latent(1, 32, 24, seed=2)
    pos, neg = tiny.sd15_conds()
    trajectory, start, sigmas = invert(sd15, latent, pos, neg, steps=20, cfg=3.5, skip=skip)
    assert trajectory.method == EF_DDPM and trajectory.steps == 20 - skip and sigmas.shape == (21 - skip,)
    visited = []
    out = replay_through_comfy(custom_sampler_nodes, sd15, trajectory, start, sigmas, pos, neg, 3.5, visited)
    assert (out - latent).abs().max().item() <= 1e-3
    # the replay passes through every stored latent (model space) on its way down
    assert len(visited) == trajectory.steps
    for k, x in enumerate(visited):
        assert (x - trajectory.latents[k]).abs().max().item() <= 1e-3, f"step {k}"


def test_replay_of_a_batch_and_of_a_v_prediction_model(comfy, tiny, custom_sampler_nodes):
    model = tiny.tiny_sd15(prediction="v")
    latent = tiny.vae_like_latent(2, 24, 32, seed=5)
    pos, neg = tiny.sd15_conds()
    trajectory, start, sigmas = invert(model, latent, pos, neg, steps=10, skip=3)
    out = replay_through_comfy(custom_sampler_nodes, model, trajectory, start, sigmas, pos, neg, 3.5)
    assert out.shape == latent.shape
    assert (out - latent).abs().max().item() <= 1e-3
    # the two images of the batch got their own noise
    assert not torch.allclose(trajectory.noise[:, 0], trajectory.noise[:, 1])


def test_replay_on_sdxl(sdxl, tiny, custom_sampler_nodes):
    latent = tiny.vae_like_latent(1, 16, 24, seed=9)
    pos, neg = tiny.sdxl_conds()
    trajectory, start, sigmas = invert(sdxl, latent, pos, neg, steps=10, skip=2)
    out = replay_through_comfy(custom_sampler_nodes, sdxl, trajectory, start, sigmas, pos, neg, 3.5)
    assert (out - latent).abs().max().item() <= 1e-3


def test_ddim_round_trip_at_cfg_1_shrinks_with_steps(sd15, tiny, custom_sampler_nodes):
    latent = tiny.vae_like_latent(1, 8, 8, seed=4)
    pos, neg = tiny.sd15_conds()
    errors = []
    for steps in (10, 20, 40):
        # from the middle of the schedule: a random network's prediction is far from a denoiser's
        # at the noisiest steps, where DDIM's first-order error would swamp the comparison
        trajectory, start, sigmas = invert(sd15, latent, pos, neg, steps=steps, cfg=1.0, method=DDIM,
                                           skip=steps // 2)
        assert trajectory.noise is None
        out = replay_through_comfy(custom_sampler_nodes, sd15, trajectory, start, sigmas, pos, neg, 1.0)
        errors.append((out - latent).abs().max().item())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors
    assert errors[-1] < 0.05 * latent.abs().max().item(), errors


def test_schedule_matches_diffusers_ddim_leading(sd15):
    from diffusers import DDIMScheduler

    _, _, sigmas = invert(sd15, torch.ones(1, 4, 8, 8), *tiny_conds(), steps=100, skip=0)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              timestep_spacing="leading", num_train_timesteps=1000)
    scheduler.set_timesteps(100)
    timesteps = scheduler.timesteps.tolist()
    assert timesteps[:3] == [991, 981, 971] and timesteps[-1] == 1
    model_sampling = sd15.get_model_object("model_sampling")
    ours = [int(model_sampling.timestep(s).item()) for s in sigmas[:-1]]
    assert ours == timesteps
    alphas = scheduler.alphas_cumprod[scheduler.timesteps]
    our_alphas = 1.0 / (1.0 + sigmas[:-1].double() ** 2)
    assert torch.allclose(our_alphas, alphas.double(), rtol=1e-5, atol=0)
    # the clean end is diffusers' final alpha (set_alpha_to_one=False: alphas_cumprod[0])
    assert 1.0 / (1.0 + sigmas[-1].double() ** 2) == pytest.approx(scheduler.final_alpha_cumprod.item(), rel=1e-5)


def tiny_conds():
    from eye_test_support import tiny_models

    return tiny_models.sd15_conds()


# ---------------------------------------------------------------- bad inputs

def test_trajectory_with_a_latent_of_another_size(sd15, tiny, custom_sampler_nodes):
    pos, neg = tiny.sd15_conds()
    trajectory, _, sigmas = invert(sd15, tiny.vae_like_latent(1, 16, 16), pos, neg, steps=4, skip=0)
    other = {"samples": tiny.vae_like_latent(1, 24, 16)}
    with pytest.raises(ValueError, match=r"^Trajectory Sampler: the latent entering it has shape .* Invert Latent"):
        replay_through_comfy(custom_sampler_nodes, sd15, trajectory, other, sigmas, pos, neg, 3.5)


def test_sigmas_that_do_not_belong_to_the_trajectory(sd15, tiny, custom_sampler_nodes):
    pos, neg = tiny.sd15_conds()
    trajectory, start, _ = invert(sd15, tiny.vae_like_latent(1, 16, 16), pos, neg, steps=4, skip=0)
    (foreign,) = custom_sampler_nodes.BasicScheduler().get_sigmas(sd15, "karras", 4, 1.0)
    with pytest.raises(ValueError, match="^Trajectory Sampler: SIGMAS does not belong to this trajectory"):
        replay_through_comfy(custom_sampler_nodes, sd15, trajectory, start, foreign, pos, neg, 3.5)


def test_noise_added_to_the_start_latent_is_refused(sd15, tiny, custom_sampler_nodes):
    pos, neg = tiny.sd15_conds()
    trajectory, start, sigmas = invert(sd15, tiny.vae_like_latent(1, 16, 16), pos, neg, steps=4, skip=0)
    (guider,) = custom_sampler_nodes.CFGGuider().get_guider(sd15, pos, neg, 3.5)
    (noise,) = custom_sampler_nodes.RandomNoise().get_noise(0)
    (sampler,) = run(inversion.TrajectorySampler, trajectory=trajectory)
    with pytest.raises(ValueError, match="^Trajectory Sampler: .*noise was added to it. Use DisableNoise"):
        custom_sampler_nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)


@pytest.mark.parametrize("samples, message", [
    (torch.zeros(0, 4, 8, 8), "empty"),
    (torch.zeros(1, 4, 8, 8), "all zeros"),
])
def test_empty_latent(sd15, tiny, samples, message):
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match=message):
        invert(sd15, samples, pos, neg, steps=4)


def test_model_without_a_unet(sd15, tiny):
    import comfy.model_patcher

    class DiT(torch.nn.Module):
        pass

    flux_like = copy.copy(sd15.model)
    flux_like.diffusion_model = DiT()
    patcher = comfy.model_patcher.ModelPatcher(flux_like, sd15.load_device, sd15.offload_device)
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match="DiT.*UNet Stable Diffusion"):
        invert(patcher, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=4)


def test_skip_must_leave_a_step(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    with pytest.raises(ValueError, match="skip_steps"):
        invert(sd15, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=4, skip=4)


# ---------------------------------------------------------------- interruption and mutation

def test_interrupt_stops_within_one_step_and_leaves_the_model_clean(sd15, tiny):
    import comfy.model_management

    pos, neg = tiny.sd15_conds()
    options_before = copy.deepcopy(sd15.model_options)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in sd15.model.modules())
    calls = []
    real_forward = sd15.model.diffusion_model.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            comfy.model_management.interrupt_current_processing(True)
        return real_forward(*args, **kwargs)

    sd15.model.diffusion_model.forward = counting_forward
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            invert(sd15, tiny.vae_like_latent(1, 16, 16), pos, neg, steps=20, skip=0)
    finally:
        del sd15.model.diffusion_model.forward
        comfy.model_management.interrupt_current_processing(False)
    assert len(calls) == 3  # the step that saw the interrupt finished; no further UNet pass ran
    assert sd15.model_options == options_before
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in sd15.model.modules()) == hooks_before


def test_inversion_leaves_its_inputs_untouched(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    latent = {"samples": tiny.vae_like_latent(1, 16, 16), "batch_index": [0]}
    before = copy.deepcopy(latent)
    options_before = copy.deepcopy(sd15.model_options)
    pos_before = copy.deepcopy(pos)
    _, start, _ = run(inversion.InvertLatent, model=sd15, latent=latent, positive=pos, negative=neg, steps=4,
                      cfg=3.5, method=EF_DDPM, seed=0, skip_steps=1)
    assert torch.equal(latent["samples"], before["samples"]) and latent.keys() == before.keys()
    assert start["batch_index"] == [0] and start is not latent
    assert sd15.model_options == options_before
    assert torch.equal(pos[0][0], pos_before[0][0])


def test_same_seed_same_trajectory(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16)
    a = invert(sd15, latent, pos, neg, steps=6, seed=3)[0]
    b = invert(sd15, latent, pos, neg, steps=6, seed=3)[0]
    assert torch.equal(a.latents, b.latents) and torch.equal(a.noise, b.noise)


def test_replay_through_sampler_custom(sd15, tiny, custom_sampler_nodes):
    latent = tiny.vae_like_latent(1, 16, 24, seed=8)
    pos, neg = tiny.sd15_conds()
    trajectory, start, sigmas = invert(sd15, latent, pos, neg, steps=10, skip=2)
    (sampler,) = run(inversion.TrajectorySampler, trajectory=trajectory)
    out, _ = custom_sampler_nodes.SamplerCustom().sample(sd15, False, 0, 3.5, pos, neg, sampler, sigmas, start)
    assert (out["samples"] - latent).abs().max().item() <= 1e-3


def test_replay_of_the_second_half_after_split_sigmas(sd15, tiny, custom_sampler_nodes):
    latent = tiny.vae_like_latent(1, 16, 16, seed=3)
    pos, neg = tiny.sd15_conds()
    trajectory, start, sigmas = invert(sd15, latent, pos, neg, steps=10, skip=0)
    high, low = custom_sampler_nodes.SplitSigmas().get_sigmas(sigmas, 4)
    first = replay_through_comfy(custom_sampler_nodes, sd15, trajectory, start, high, pos, neg, 3.5)
    out = replay_through_comfy(custom_sampler_nodes, sd15, trajectory, {"samples": first}, low, pos, neg, 3.5)
    assert (out - latent).abs().max().item() <= 1e-3


def test_captured_bytes_per_step_are_the_documented_figure(sd15, tiny):
    """The README's and the tooltip's memory figure (one constant) is what the bank really keeps.

    The tiny UNet has SD1.5's layout at a tenth of its widths (32 base channels against 320), so a
    64x64 latent (512 px) keeps exactly a tenth of SD1.5's bytes per step.
    """
    from eye_for_an_eye.eye_core.feature_bank import SD15_512_BYTES_PER_STEP

    pos, neg = tiny.sd15_conds()
    trajectory = run(inversion.InvertLatent, model=sd15, latent={"samples": tiny.vae_like_latent(1, 64, 64)},
                     positive=pos, negative=neg, steps=3, cfg=3.5, method=EF_DDPM, seed=0, skip_steps=0)[0]
    bank = trajectory.features
    assert bank.indices == [0, 1, 2]
    assert bank.nbytes / len(bank.indices) * (320 // 32) == SD15_512_BYTES_PER_STEP
