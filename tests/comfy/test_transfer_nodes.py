"""Apply Appearance Transfer, Transfer Sampler and the all-in-one node against the real ComfyUI."""

import copy
import gc

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

import comfy.model_management  # noqa: E402
import comfy.patcher_extension  # noqa: E402

from eye_for_an_eye.eye_core.rearrange import OFFICIAL, SYMMETRIC, TWO_FINEST, TransferSchedule  # noqa: E402
from eye_for_an_eye.eye_core.trajectory import EF_DDPM  # noqa: E402
from eye_for_an_eye.comfy_adapter import patches  # noqa: E402
from eye_for_an_eye.nodes import inversion, transfer  # noqa: E402

OFFICIAL_SCHEDULE = TransferSchedule()


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg, steps=12, skip=3, capture=True, budget=2048):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg,
               steps=steps, cfg=3.5, method=EF_DDPM, seed=1, skip_steps=skip, capture_features=capture,
               feature_budget_mb=budget, capture_layers=TWO_FINEST)


def apply(model, reference, structure, **settings):
    inputs = dict(model=model, reference=reference, structure=structure, injection="feature", layers=TWO_FINEST,
                  rearrange_start=OFFICIAL_SCHEDULE.rearrange_start, rearrange_end=OFFICIAL_SCHEDULE.rearrange_end,
                  structure_end=OFFICIAL_SCHEDULE.structure_end,
                  structure_interval=OFFICIAL_SCHEDULE.structure_interval, guidance=OFFICIAL, strength=1.0)
    inputs.update(settings)
    return run(transfer.ApplyAppearanceTransfer, **inputs)[0]


def transfer_sampler(structure, reference, adain=True, **masks):
    start, end = (OFFICIAL_SCHEDULE.adain_start, 1.0) if adain else (1.0, 1.0)
    return run(transfer.TransferSampler, structure=structure, reference=reference, adain_start=start,
               adain_end=end, **masks)[0]


def sample(nodes, model, pos, neg, cfg, sampler, sigmas, start):
    (guider,) = nodes.CFGGuider().get_guider(model, pos, neg, cfg)
    (noise,) = nodes.DisableNoise().get_noise()
    out, _ = nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
    return out["samples"]


def same_structure(a, b):
    """Deep equality of model_options-like structures holding tensors and callables."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_structure(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_structure(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b or type(a) is type(b)


@pytest.fixture
def pair(sd15, tiny):
    """Tiny SD1.5, conds, and trajectories of a 16x24 target and a 24x16 reference."""
    pos, neg = tiny.sd15_conds()
    target, start, sigmas = invert(sd15, tiny.vae_like_latent(1, 16, 24, seed=1), pos, neg)
    reference, _, _ = invert(sd15, tiny.vae_like_latent(1, 24, 16, seed=2), pos, neg)
    return sd15, pos, neg, target, reference, start, sigmas


# ---------------------------------------------------------------- parity with vanilla ComfyUI

@pytest.mark.parametrize("settings", [{"strength": 0.0}, {"rearrange_start": 0.5, "rearrange_end": 0.5}])
def test_inactive_patch_is_bit_identical_to_vanilla(pair, custom_sampler_nodes, settings):
    model, pos, neg, target, reference, start, sigmas = pair
    patched = apply(model, reference, target, **settings)
    replay = run(inversion.TrajectorySampler, trajectory=target)[0]
    plain = sample(custom_sampler_nodes, model, pos, neg, 2.5, replay, sigmas, start)
    ours = sample(custom_sampler_nodes, patched, pos, neg, 2.5, replay, sigmas, start)
    assert torch.equal(plain, ours)
    (euler,) = custom_sampler_nodes.KSamplerSelect().get_sampler("euler")
    assert torch.equal(sample(custom_sampler_nodes, model, pos, neg, 2.5, euler, sigmas, start),
                       sample(custom_sampler_nodes, patched, pos, neg, 2.5, euler, sigmas, start))


def test_inputs_unchanged_runs_repeatable_and_clones_independent(pair, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas = pair
    options_before = copy.deepcopy(model.model_options)
    wrappers_before = copy.deepcopy(model.wrappers)
    latents_before = target.latents.clone()
    strong = apply(model, reference, target)
    assert same_structure(model.model_options, options_before) and model.wrappers == wrappers_before
    sampler = transfer_sampler(target, reference)
    first = sample(custom_sampler_nodes, strong, pos, neg, 2.5, sampler, sigmas, start)
    assert same_structure(model.model_options, options_before) and model.wrappers == wrappers_before
    assert torch.equal(target.latents, latents_before)
    second = sample(custom_sampler_nodes, strong, pos, neg, 2.5, sampler, sigmas, start)
    assert torch.equal(first, second)
    # a second clone patched differently (off) samples like vanilla and does not leak into the first
    off = apply(strong, reference, target, strength=0.0)
    replay = transfer_sampler(target, reference, adain=False)
    vanilla = sample(custom_sampler_nodes, model, pos, neg, 2.5, replay, sigmas, start)
    off_plain = apply(model, reference, target, strength=0.0)
    assert torch.equal(sample(custom_sampler_nodes, off_plain, pos, neg, 2.5, replay, sigmas, start), vanilla)
    assert not torch.equal(first, vanilla)
    again = sample(custom_sampler_nodes, strong, pos, neg, 2.5, sampler, sigmas, start)
    assert torch.equal(first, again)
    assert off is not strong


@pytest.mark.parametrize("capture, tolerance", [(False, 1e-3), (True, 5e-3)])
def test_identity_reference_equal_to_target(sd15, tiny, custom_sampler_nodes, capture, tolerance):
    # recomputed features are exact (fp32); captured ones are stored in fp16, which alone costs a little
    pos, neg = tiny.sd15_conds()
    target, start, sigmas = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=5), pos, neg, capture=capture)
    full = torch.ones(1, 128, 128)
    patched = apply(sd15, target, target, guidance=SYMMETRIC, target_mask=full, reference_mask=full)
    sampler = transfer_sampler(target, target, target_mask=full, reference_mask=full)
    out = sample(custom_sampler_nodes, patched, pos, neg, 3.5, sampler, sigmas, start)
    replay = run(inversion.TrajectorySampler, trajectory=target)[0]
    replayed = sample(custom_sampler_nodes, sd15, pos, neg, 3.5, replay, sigmas, start)
    assert (out - replayed).abs().max().item() <= tolerance


def test_transfer_sampler_runs_adain_region_by_region_with_a_constraint(pair, custom_sampler_nodes):
    """One label over both whole images is plain masked AdaIN with full masks; a label the reference lacks
    leaves the target as the replay draws it (an unpaired object stays as it is)."""
    from eye_for_an_eye.eye_core.instances import MatchConstraint

    model, pos, neg, target, reference, start, sigmas = pair
    full = torch.ones(1, 128, 192)
    whole = MatchConstraint(torch.zeros(128, 192, dtype=torch.long), torch.zeros(192, 128, dtype=torch.long), 1,
                            "everything")
    labelled = sample(custom_sampler_nodes, model, pos, neg, 2.5, transfer_sampler(target, reference, constraint=whole),
                      sigmas, start)
    masked = sample(custom_sampler_nodes, model, pos, neg, 2.5,
                    transfer_sampler(target, reference, target_mask=full, reference_mask=torch.ones(1, 192, 128)),
                    sigmas, start)
    assert torch.allclose(labelled, masked, atol=1e-6)
    unpaired = MatchConstraint(torch.zeros(128, 192, dtype=torch.long), torch.full((192, 128), -1, dtype=torch.long),
                               1, "nothing paired")
    kept = sample(custom_sampler_nodes, model, pos, neg, 2.5, transfer_sampler(target, reference, constraint=unpaired),
                  sigmas, start)
    replay = sample(custom_sampler_nodes, model, pos, neg, 2.5, transfer_sampler(target, reference, adain=False),
                    sigmas, start)
    assert torch.equal(kept, replay) and not torch.allclose(labelled, replay, atol=1e-3)


# ---------------------------------------------------------------- batch layouts

def _cond_first(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    """APPLY_MODEL wrapper: reorder a batched call's chunks so cond rows come first (ComfyUI puts uncond first)."""
    order = transformer_options["cond_or_uncond"]
    if len(order) < 2:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    size = x.shape[0] // len(order)
    chunks = sorted(range(len(order)), key=lambda j: order[j])
    index = torch.cat([torch.arange(j * size, (j + 1) * size) for j in chunks])

    def take(value):
        return value[index] if torch.is_tensor(value) and value.ndim and value.shape[0] == x.shape[0] else value

    options = dict(transformer_options, cond_or_uncond=[order[j] for j in chunks],
                   uuids=[transformer_options["uuids"][j] for j in chunks], sigmas=take(transformer_options["sigmas"]))
    out = executor(take(x), take(t), take(c_concat), take(c_crossattn), control, options,
                   **{k: take(v) for k, v in kwargs.items()})
    return out[torch.argsort(index)]


def _layouts(nodes, model, pos, neg, cfg, sampler, sigmas, start, monkeypatch, patch=None):
    """The same sampling with cond and uncond batched (uncond first, as ComfyUI does), batched cond first,
    and in separate calls (ComfyUI's low-memory path). ``patch(model)`` is applied after the reordering."""
    patch = patch or (lambda m: m)
    together = sample(nodes, patch(model), pos, neg, cfg, sampler, sigmas, start)
    reordered = model.clone()
    reordered.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test", _cond_first)
    flipped = sample(nodes, patch(reordered), pos, neg, cfg, sampler, sigmas, start)
    with monkeypatch.context() as context:
        context.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 1)
        apart = sample(nodes, patch(model), pos, neg, cfg, sampler, sigmas, start)
    return together, flipped, apart


@pytest.mark.parametrize("cfg", [2.5, 1.0])
def test_symmetric_mode_is_independent_of_batch_layout(pair, custom_sampler_nodes, monkeypatch, cfg):
    model, pos, neg, target, reference, start, sigmas = pair
    ours = _layouts(custom_sampler_nodes, model, pos, neg, cfg, transfer_sampler(target, reference), sigmas,
                    start, monkeypatch, lambda m: apply(m, reference, target, guidance=SYMMETRIC))
    # ComfyUI itself is not bitwise layout-independent: batched and separate UNet calls round
    # differently. The patch must add nothing to that float noise, and stay within 1e-5 relative.
    replay = run(inversion.TrajectorySampler, trajectory=target)[0]
    vanilla = _layouts(custom_sampler_nodes, model, pos, neg, cfg, replay, sigmas, start, monkeypatch)
    scale = max(1.0, ours[0].abs().max().item())
    for layout in (1, 2):
        difference = (ours[0] - ours[layout]).abs().max().item()
        floor = (vanilla[0] - vanilla[layout]).abs().max().item()
        assert difference <= 1e-5 * scale, (layout, difference)
        assert difference <= 2 * floor + 1e-6, (layout, difference, floor)


def test_official_mode_edits_exactly_the_rows_method_names(pair, custom_sampler_nodes, monkeypatch):
    model, pos, neg, target, reference, start, sigmas = pair
    seen = []

    def before(n, context, value, extra_options):
        extra_options["_eye_test_n"] = n
        return n, context, value

    def after(n, context, value, extra_options):
        old = extra_options.pop("_eye_test_n")
        states = [v for k, v in extra_options.items() if k.startswith(patches.CALL_PREFIX)]
        state = states[0] if states else None
        if state is not None and state.capture_role is None and state.info.action != "nothing":
            kinds = extra_options["cond_or_uncond"]
            per_chunk = n.shape[0] // len(kinds)
            changed = {kinds[r // per_chunk] for r in range(n.shape[0]) if not torch.equal(n[r], old[r])}
            seen.append((state.info.action, tuple(sorted(changed))))
        return n, context, value

    spied = model.clone()
    spied.set_model_attn1_patch(before)
    patched = apply(spied, reference, target, guidance=OFFICIAL)
    patched.set_model_attn1_patch(after)
    sampler = transfer_sampler(target, reference)
    for separate in (False, True):
        seen.clear()
        if separate:
            monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 1)
        sample(custom_sampler_nodes, patched, pos, neg, 2.5, sampler, sigmas, start)
        assert {"rearrange", "structure"} == {action for action, _ in seen}
        for action, changed in seen:
            # rearrangement only on cond rows, structure injection only on uncond rows
            assert changed in ({(0,)} if action == "rearrange" else {(1,)}).union({()}), (action, changed)
        assert any(changed for _, changed in seen)


# ---------------------------------------------------------------- shapes, families, sources

def test_sdxl_two_targets_one_reference_non_square(sdxl, tiny, custom_sampler_nodes):
    pos, neg = tiny.sdxl_conds()
    targets, start, sigmas = invert(sdxl, tiny.vae_like_latent(2, 16, 24, seed=3), pos, neg, steps=8, skip=2)
    reference, _, _ = invert(sdxl, tiny.vae_like_latent(1, 24, 24, seed=4), pos, neg, steps=8, skip=2)
    patched = apply(sdxl, reference, targets, guidance=SYMMETRIC, rearrange_start=0.0)
    out = sample(custom_sampler_nodes, patched, pos, neg, 2.5, transfer_sampler(targets, reference), sigmas, start)
    assert out.shape == (2, 4, 16, 24) and torch.isfinite(out).all()
    vanilla = sample(custom_sampler_nodes, sdxl, pos, neg, 2.5,
                     run(inversion.TrajectorySampler, trajectory=targets)[0], sigmas, start)
    assert not torch.allclose(out, vanilla)


def test_captured_and_recomputed_features_agree(sd15, tiny, custom_sampler_nodes):
    pos, neg = tiny.sd15_conds()
    latents = tiny.vae_like_latent(1, 16, 16, seed=6), tiny.vae_like_latent(1, 16, 16, seed=7)
    results, vanilla = [], None
    for capture, budget in ((True, 2048), (False, 0), (True, 1)):
        target, start, sigmas = invert(sd15, latents[0], pos, neg, capture=capture, budget=budget)
        reference, _, _ = invert(sd15, latents[1], pos, neg, capture=capture, budget=budget)
        if capture and budget > 1:
            # everything from the official rearrange_start on is kept; nothing before it
            assert reference.features.indices == list(range(TransferSchedule().first_step(reference.steps),
                                                            reference.steps))
        if capture and budget == 1:  # 1 MiB holds some of the steps: the rest is recomputed
            assert 0 < len(reference.features.indices) < reference.steps - 1
        if vanilla is None:
            replay = run(inversion.TrajectorySampler, trajectory=target)[0]
            vanilla = sample(custom_sampler_nodes, sd15, pos, neg, 2.5, replay, sigmas, start)
        patched = apply(sd15, reference, target, guidance=SYMMETRIC)
        results.append(sample(custom_sampler_nodes, patched, pos, neg, 2.5, transfer_sampler(target, reference),
                              sigmas, start))
    captured, recomputed, partial = results
    # Captured features are stored in fp16, recomputed ones are fp32: per-step argmax matching on a
    # random network is full of near-ties, so the odd match flips. The two sources must still agree
    # far better than either differs from plain sampling (the effect of the transfer itself).
    effect = (recomputed - vanilla).abs().mean().item()
    assert effect > 0.1
    for other in (captured, partial):
        assert (other - recomputed).abs().mean().item() < 0.05 * effect


def test_fixed_correspondence(pair, custom_sampler_nodes):
    from eye_for_an_eye.nodes import correspondence as corr_nodes
    from eye_for_an_eye.nodes import features as feat_nodes

    model, pos, neg, target, reference, start, sigmas = pair
    maps = []
    for trajectory in (target, reference):
        latent = {"samples": model.model.process_latent_out(trajectory.clean_latent)}
        maps.append(run(feat_nodes.ExtractUNetFeatures, model=model, latent=latent, positive=pos, timestep=261,
                        decoder_level=feat_nodes.AUTO_LEVEL, ensemble_size=2, seed=0)[0])
    corr = run(corr_nodes.MatchCorrespondence, target_features=maps[0], reference_features=maps[1])[0]
    patched = apply(model, reference, target, correspondence=corr)
    out = sample(custom_sampler_nodes, patched, pos, neg, 2.5, transfer_sampler(target, reference), sigmas, start)
    assert out.shape == start["samples"].shape and torch.isfinite(out).all()


def test_implicit_attention_baseline(pair, tiny, custom_sampler_nodes):
    """The Cross-Image Attention baseline: the reference steers the result through attention alone,
    the background query tokens (outside the target mask) keep their own attention, and the model is
    left as it was."""
    from eye_for_an_eye.eye_core.rearrange import IMPLICIT

    model, pos, neg, target, reference, start, sigmas = pair
    options_before = copy.deepcopy(model.model_options)
    replay = run(inversion.TrajectorySampler, trajectory=target)[0]
    plain = sample(custom_sampler_nodes, model, pos, neg, 2.5, replay, sigmas, start)
    implicit = apply(model, reference, target, injection=IMPLICIT)
    out = sample(custom_sampler_nodes, implicit, pos, neg, 2.5, replay, sigmas, start)
    assert torch.isfinite(out).all() and (out - plain).abs().max() > 1e-3
    other, _, _ = invert(model, tiny.vae_like_latent(1, 24, 16, seed=7), pos, neg)
    steered = sample(custom_sampler_nodes, apply(model, other, target, injection=IMPLICIT), pos, neg, 2.5, replay,
                     sigmas, start)
    assert (steered - out).abs().max() > 1e-3  # another reference, another result
    # a target mask with pixels but no token at any attention grid would make the patch a silent no-op: refused
    nothing = torch.zeros(1, 128, 192)  # at image size
    nothing[0, 0, 0] = 1.0  # not empty, but 0 at every token centre once resized (bilinear, no antialias)
    with pytest.raises(ValueError, match="no target token|leaves no"):
        apply(model, reference, target, injection=IMPLICIT, structure_end=0.0, target_mask=nothing)
    assert same_structure(model.model_options, options_before)


def test_implicit_attention_takes_no_correspondence(pair):
    from eye_for_an_eye.eye_core.rearrange import IMPLICIT
    from eye_for_an_eye.eye_core.matching import match

    model, pos, neg, target, reference, start, sigmas = pair
    corr = match(torch.randn(1, 4, 2, 3), torch.randn(1, 4, 3, 2))
    with pytest.raises(ValueError, match="implicit.*disconnect the correspondence"):
        apply(model, reference, target, injection=IMPLICIT, correspondence=corr)


# ---------------------------------------------------------------- errors, interruption

def test_unsupported_model_is_refused_when_applied(pair):
    import comfy.model_patcher

    model, pos, neg, target, reference, start, sigmas = pair
    flux_like = copy.copy(model.model)
    flux_like.diffusion_model = torch.nn.Identity()
    patcher = comfy.model_patcher.ModelPatcher(flux_like, model.load_device, model.offload_device)
    with pytest.raises(ValueError, match="UNet Stable Diffusion"):
        apply(patcher, reference, target)


def test_trajectories_of_different_schedules_are_refused(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    a, _, _ = invert(sd15, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=6, skip=1, capture=False)
    b, _, _ = invert(sd15, tiny.vae_like_latent(1, 8, 8), pos, neg, steps=6, skip=2, capture=False)
    with pytest.raises(ValueError, match="same steps and skip_steps"):
        apply(sd15, a, b)


def test_interrupt_mid_sampling_leaves_the_model_clean_and_frees_features(pair, custom_sampler_nodes,
                                                                          monkeypatch):
    import weakref

    model, pos, neg, target, reference, start, sigmas = pair
    target.features, reference.features = None, None  # force recomputed (cached per call) features
    states = []
    original_init = patches._CallState.__init__

    def tracking_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        states.append(weakref.ref(self))

    monkeypatch.setattr(patches._CallState, "__init__", tracking_init)
    options_before = copy.deepcopy(model.model_options)
    patched = apply(model, reference, target, rearrange_start=0.0)
    calls = []

    def interrupting(executor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            comfy.model_management.interrupt_current_processing(True)
        return executor(*args, **kwargs)

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test", interrupting)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(custom_sampler_nodes, patched, pos, neg, 2.5, transfer_sampler(target, reference), sigmas, start)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    gc.collect()
    assert states and all(ref() is None or not ref().features for ref in states)
    assert same_structure(model.model_options, options_before)
    assert sum(len(m._forward_hooks) for m in model.model.modules()) == 0


# ---------------------------------------------------------------- split runs, stacking, masks

def test_split_sigmas_act_on_the_same_steps_as_a_whole_run(pair, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas = pair
    patched = apply(model, reference, target)
    sampler = transfer_sampler(target, reference)
    whole = sample(custom_sampler_nodes, patched, pos, neg, 2.5, sampler, sigmas, start)
    high, low = custom_sampler_nodes.SplitSigmas().get_sigmas(sigmas, 4)
    half = sample(custom_sampler_nodes, patched, pos, neg, 2.5, sampler, high, start)
    split = sample(custom_sampler_nodes, patched, pos, neg, 2.5, sampler, low, {"samples": half})
    # the latent crosses LATENT's raw scale between the halves: float rounding only
    assert (whole - split).abs().max().item() <= 1e-4 * max(1.0, whole.abs().max().item())


def test_two_stacked_transfers_each_with_its_own_reference_and_mask(pair, tiny, custom_sampler_nodes):
    model, pos, neg, target, reference, start, sigmas = pair
    other, _, _ = invert(model, tiny.vae_like_latent(1, 16, 16, seed=9), pos, neg)
    left, right = torch.zeros(1, 128, 192), torch.zeros(1, 128, 192)
    left[..., :96], right[..., 96:] = 1.0, 1.0
    for capture in (True, False):
        if not capture:
            target.features = reference.features = other.features = None
        one = apply(model, reference, target, target_mask=left)
        both = apply(one, other, target, target_mask=right)
        sampler = transfer_sampler(target, reference)
        single = sample(custom_sampler_nodes, one, pos, neg, 2.5, sampler, sigmas, start)
        stacked = sample(custom_sampler_nodes, both, pos, neg, 2.5, sampler, sigmas, start)
        assert torch.isfinite(stacked).all() and not torch.allclose(single, stacked)


def test_empty_masks_are_refused(pair):
    model, pos, neg, target, reference, start, sigmas = pair
    with pytest.raises(ValueError, match="reference_mask is empty"):
        apply(model, reference, target, reference_mask=torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="target_mask is empty"):
        transfer_sampler(target, reference, target_mask=torch.zeros(1, 64, 64))


def test_area_conditioning_runs_untouched_where_it_crops_the_latent(pair, custom_sampler_nodes, caplog):
    import nodes as comfy_nodes  # ComfyUI's own nodes.py

    model, pos, neg, target, reference, start, sigmas = pair
    (area,) = comfy_nodes.ConditioningSetArea().append(pos, 64, 64, 0, 0, 1.0)
    patched = apply(model, reference, target, guidance=SYMMETRIC)
    with caplog.at_level("WARNING", logger="eye_for_an_eye"):
        out = sample(custom_sampler_nodes, patched, pos + area, neg, 2.5, transfer_sampler(target, reference),
                     sigmas, start)
    assert torch.isfinite(out).all()
    assert sum("area conditioning" in record.getMessage() for record in caplog.records) == 1
