"""What the pack leaves in a model's options: shared (never deep-copied), told apart without module names, and
captured features kept where ComfyUI's memory manager can account for them."""

import copy

import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.comfy_adapter import fingerprints, memory, patches  # noqa: E402
from eye_for_an_eye.eye_core.rearrange import IMPLICIT, OFFICIAL, TWO_FINEST, TransferSchedule  # noqa: E402
from eye_for_an_eye.eye_core.trajectory import EF_DDPM  # noqa: E402
from eye_for_an_eye.nodes import freeu, inversion, transfer  # noqa: E402

SCHEDULE = TransferSchedule()


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def invert(model, latent, pos, neg):
    return run(inversion.InvertLatent, model=model, latent={"samples": latent}, positive=pos, negative=neg, steps=8,
               cfg=3.5, method=EF_DDPM, seed=1, skip_steps=2, capture_features=True, feature_budget_mb=64,
               capture_layers=TWO_FINEST)[0]


def apply(model, reference, structure, injection="feature"):
    return run(transfer.ApplyAppearanceTransfer, model=model, reference=reference, structure=structure,
               injection=injection, layers=TWO_FINEST, rearrange_start=SCHEDULE.rearrange_start,
               rearrange_end=SCHEDULE.rearrange_end, structure_end=SCHEDULE.structure_end,
               structure_interval=SCHEDULE.structure_interval, guidance=OFFICIAL, strength=1.0)[0]


def objects_in(value, depth=0):
    """Every object held in a model_options-like structure (containers opened, plain values skipped)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from objects_in(item, depth + 1)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from objects_in(item, depth + 1)
    elif not isinstance(value, (int, float, str, bool, type(None))) and not torch.is_tensor(value):
        yield value


def added_objects(model, patched):
    before = {id(o) for o in objects_in(model.model_options)}
    return [o for o in objects_in(patched.model_options) if id(o) not in before]


def patched_models(sd15, tiny):
    pos, neg = tiny.sd15_conds()
    target = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=1), pos, neg)
    reference = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=2), pos, neg)
    freeu_model = run(freeu.AuthorsFreeU, model=sd15, b1=1.5, b2=1.6, s1=0.9, s2=0.2)[0]
    recorder_model, _ = patches.with_feature_recorder(sd15, target.features)
    return {"feature": apply(sd15, reference, target), "implicit": apply(sd15, reference, target, IMPLICIT),
            "freeu": freeu_model, "recorder": recorder_model}


def test_every_pack_object_in_model_options_is_shared_by_clones(sd15, tiny):
    for name, patched in patched_models(sd15, tiny).items():
        added = added_objects(sd15, patched)
        assert added, f"{name}: the patch put nothing in model_options"
        for item in added:
            if callable(item) and not isinstance(item, patches.PackPatch):
                assert getattr(item, "__module__", "").startswith("comfy"), (name, item)  # ComfyUI's own wrapping
                continue
            assert isinstance(item, patches.PackPatch), f"{name}: {type(item).__qualname__} is not a PackPatch"
            assert copy.deepcopy(item) is item
        clone = patched.clone()  # ModelPatcher.clone deep-copies model_options
        assert {id(o) for o in added} <= {id(o) for o in objects_in(clone.model_options)}


def test_whether_a_patch_is_ours_does_not_depend_on_its_module(sd15, tiny):
    models = patched_models(sd15, tiny)
    plain = fingerprints.model_print(sd15)
    for name in ("feature", "implicit", "recorder"):
        assert fingerprints.model_print(models[name]) == plain, name  # transparent: the source model's print
    assert fingerprints.model_print(models["freeu"]).patches != plain.patches  # FreeU changes the model

    class Moved(patches.TransferAttentionPatch):  # the same kind of patch defined in another module
        pass

    Moved.__module__ = "somewhere.else"
    assert patches.leaves_model_unchanged(Moved(None, "key"))

    class Foreign:  # another pack's patch, even one defined in the adapter's module
        def __call__(self, *args):
            return args

    Foreign.__module__ = patches.__name__
    assert not patches.leaves_model_unchanged(Foreign())
    clone = sd15.clone()
    clone.set_model_attn1_patch(Foreign())
    assert fingerprints.model_print(clone).patches != plain.patches


def test_captured_features_stay_on_the_cpu_whatever_the_unet_offload_device(sd15, tiny, monkeypatch):
    import comfy.model_management

    # --highvram / --gpu-only make the UNet's offload device the GPU; the features must not follow it there
    monkeypatch.setattr(comfy.model_management, "unet_offload_device", lambda: torch.device("meta"))
    pos, neg = tiny.sd15_conds()
    trajectory = invert(sd15, tiny.vae_like_latent(1, 16, 16, seed=1), pos, neg)
    bank = trajectory.features
    assert bank.nbytes > 0 and bank.device.type == "cpu"
    tensors = [bank.get(i, layer, kind) for i in range(trajectory.latents.shape[0]) for layer in bank.layers
               for kind in (0, 1)]
    assert tensors and all(t[0].device.type == "cpu" for t in tensors if t is not None)


def test_features_are_pinned_exactly_when_comfyui_computes_on_cuda(monkeypatch):
    import comfy.model_management

    assert memory.feature_store() == (torch.device("cpu"), False)  # this machine computes on the CPU
    monkeypatch.setattr(comfy.model_management, "get_torch_device", lambda: torch.device("cuda", 0))
    device, pin = memory.feature_store()
    assert device.type == "cpu" and pin == torch.cuda.is_available()
