"""The pack's model patches: the feature recorder, the transfer patch, the implicit baseline, the authors' FreeU.

Every patch goes on a clone (ModelPatcher.clone); the input model is never changed.
Every pack object held in a model's ``model_options`` derives from PackPatch, which says
in one place how ComfyUI may copy it.
"""

from __future__ import annotations

import itertools

import torch

import comfy.patcher_extension

from .progress import LOG
from .unet_layout import attention_module, layer_key, token_grid


class PackPatch:
    """Base of every pack object held in a model's ``model_options`` (patches and replacements).

    - Shared, never copied: ModelPatcher.clone() deep-copies ``model_options``, and a copy
      would hold copies of what must be shared (a FeatureRecorder's bank, a transfer's
      trajectories, gigabytes of features). ``copy.deepcopy`` returns the object itself.
    - ``fingerprinted`` says whether the patch is part of the model a result came from:
      False for the patches that only record features or apply a transfer (a patched clone
      keeps the fingerprint of the model it was made from), True for one that changes what
      the model computes (the authors' FreeU).
    """

    fingerprinted = False

    def __deepcopy__(self, memo):
        return self


_TRANSPARENT = "eye_for_an_eye_transparent"  # on the pack's wrapper functions: not part of the model's fingerprint


def transparent(function):
    """Mark one of the pack's wrapper functions as leaving the model's fingerprint unchanged."""
    setattr(function, _TRANSPARENT, True)
    return function


def leaves_model_unchanged(fn) -> bool:
    """True for the pack's own patches and wrappers that do not change what the model computes."""
    owner = getattr(fn, "__func__", fn)
    if isinstance(owner, PackPatch):
        return not type(owner).fingerprinted
    return getattr(owner, "__dict__", {}).get(_TRANSPARENT) is True


def short_name(fn) -> str:
    fn = getattr(fn, "func", fn)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return name.split(".<locals>")[0]


class AuthorsFreeUPatch(PackPatch):
    """ComfyUI output_block_patch applying eye_core.freeu.AuthorsFreeU to the main path ``h``.

    Unlike the pack's other patches it changes what the model computes, so it is part of
    the model's fingerprint (its settings describe it).
    """

    fingerprinted = True

    def __init__(self, freeu):
        self.freeu = freeu
        # what the fingerprint reads (plain values; the AuthorsFreeU object itself describes as its type name)
        self.settings = (freeu.model_channels, freeu.entries, freeu.b1, freeu.b2, freeu.s1, freeu.s2)

    def __call__(self, h, hsp, transformer_options):
        block = transformer_options.get("block", (None, None))
        if block[0] != "output":
            return h, hsp
        return self.freeu.apply(h, int(block[1])), hsp


def with_authors_freeu(model, b1, b2, s1, s2):
    """A clone of ``model`` with the authors' FreeU at each decoder up-block entry."""
    from ..eye_core.freeu import AuthorsFreeU

    config = model.model.model_config.unet_config
    levels = len(config.get("channel_mult", ()))
    blocks = config.get("num_res_blocks", 2)
    blocks = [blocks] * levels if isinstance(blocks, int) else list(blocks)
    clone = model.clone()
    clone.set_model_output_block_patch(AuthorsFreeUPatch(AuthorsFreeU(config["model_channels"], blocks, b1, b2, s1,
                                                                      s2)))
    return clone


def has_output_block_patch(model, kind=None) -> bool:
    """Whether ``model`` carries an output-block patch (ComfyUI's FreeU, or ``kind`` only)."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch", [])
    return any(kind is None or isinstance(p, kind) for p in patches)


_TOKEN_PATCH_NAMES = {"tomesd_m": "Token Merging (ToMe)", "hypertile_in": "HyperTile"}


def check_token_patches(model, node: str) -> None:
    """Refuse a model whose self-attention tokens another patch merges or tiles (ToMe, HyperTile).

    Such a patch pairs an attn1 input patch with an attn1 output patch that undoes it; the
    transfer reads and replaces tokens by their place in the image, so it cannot work inside.
    """
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    if not patches.get("attn1_output_patch"):
        return
    for patch in patches.get("attn1_patch", []):
        if isinstance(patch, (TransferAttentionPatch, FeatureRecorder)):
            continue
        function = getattr(patch, "func", patch)
        name = _TOKEN_PATCH_NAMES.get(getattr(function, "__name__", ""),
                                      f"a patch that changes the attention's tokens ({short_name(patch)})")
        raise ValueError(
            f"{node}: the model carries {name}, which merges or tiles the self-attention's tokens; the transfer "
            "reads and replaces tokens by their place in the image, so the two cannot run together. Remove it from "
            "the model that goes into Invert Latent and Apply Appearance Transfer (it is a speed-up, not part of "
            "the method).")


class FeatureRecorder(PackPatch):
    """An attn1 patch that copies the chosen layers' inputs into a FeatureBank (inputs pass unchanged)."""

    def __init__(self, bank, latent_size=None):
        self.bank = bank
        self.latent_size = None if latent_size is None else tuple(latent_size)
        self.index = None  # latent index of the current UNet call, set by the caller

    def __call__(self, n, context, value, extra_options):
        key = layer_key(extra_options)
        shape = extra_options.get("original_shape")
        if self.latent_size is not None and shape is not None and tuple(shape[-2:]) != self.latent_size:
            return n, context, value  # a call on a crop of the latent (area conditioning): not the image's features
        if self.index is not None and key in self.bank.layers:
            self.bank.record(self.index, key, extra_options["cond_or_uncond"], n, token_grid(extra_options, n.shape[1]))
        return n, context, value


def with_feature_recorder(model, bank, latent_size=None) -> tuple:
    """A clone of ``model`` that records into ``bank``, and the recorder (set ``.index`` per call).

    Only UNet calls on the whole ``latent_size`` latent are recorded (area conditioning adds calls on crops).
    """
    recorder = FeatureRecorder(bank, latent_size)
    clone = model.clone()
    clone.set_model_attn1_patch(recorder)
    return clone, recorder


CALL_PREFIX = "eye_for_an_eye_call:"  # + the patch's own number: stacked patches never read each other's state


_CAPTURING = "eye_for_an_eye_capturing"  # set during a capture pass: every transfer wrapper passes through


_patch_numbers = itertools.count()


class _CallState:
    """What one UNet call of the patched model does; lives only for that call."""

    def __init__(self, info, capture_role=None, capture_kind=None):
        self.info = info
        self.capture_role = capture_role
        self.capture_kind = capture_kind
        self.features = {}  # (role, kind) -> {layer: (tokens, grid)}


class TransferAttentionPatch(PackPatch):
    """attn1 patch: records features in capture passes, edits the chosen layers in the real pass."""

    def __init__(self, plan, key):
        self.plan = plan
        self.key = key

    def __call__(self, n, context, value, extra_options):
        state = extra_options.get(self.key)
        layer = layer_key(extra_options)
        if state is None or layer not in self.plan.layers:
            return n, context, value
        grid = token_grid(extra_options, n.shape[1])
        if state.capture_role is not None:
            state.features.setdefault((state.capture_role, state.capture_kind), {})[layer] = (n, grid)
            return n, context, value
        sources = {}
        for role_kind in self.plan.needed(state.info, extra_options["cond_or_uncond"]):
            sources[role_kind] = state.features[role_kind][layer]
        return self.plan.edit(n, context, value, state.info, extra_options["cond_or_uncond"], grid, sources)


def _rows_of_kind(cond_or_uncond, rows: int, kind: int) -> list:
    per_chunk = rows // len(cond_or_uncond)
    return [c * per_chunk + r for c, k in enumerate(cond_or_uncond) if k == kind for r in range(per_chunk)]


def _take_rows(value, rows: list, total: int):
    """Rows of a per-row tensor; anything else passes through."""
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == total:
        return value[rows]
    return value


def _capture_options(transformer_options, key, state, kind, rows, total, cond_or_uncond):
    """transformer_options for a capture pass: one kind's rows, no other transfer's state."""
    options = {k: v for k, v in transformer_options.items() if not k.startswith(CALL_PREFIX)}
    options["cond_or_uncond"] = [kind]
    options["sigmas"] = _take_rows(transformer_options.get("sigmas"), rows, total)
    if "uuids" in options:
        options["uuids"] = [options["uuids"][cond_or_uncond.index(kind)]]
    options[_CAPTURING] = True
    options[key] = state
    return options


def _transfer_wrapper(plan, key):
    """APPLY_MODEL wrapper: locate the step, fetch or recompute the features, run the edited pass.

    One host sync per UNet call (reading the current sigma); none per layer.
    """
    warned = []

    def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        if transformer_options.get(_CAPTURING):  # another transfer's capture pass: leave it alone
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        info = plan.step(float(t.flatten()[0]))
        if info.action == "nothing":
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        if tuple(x.shape[-2:]) != tuple(plan.structure.latent_shape[-2:]):
            if not warned:
                warned.append(True)
                LOG.warning("%s: a UNet call on a %s latent (area conditioning?) does not "
                            "cover the target's %s latent; it runs without the transfer.", plan.node, tuple(x.shape[-2:]),
                            tuple(plan.structure.latent_shape[-2:]))
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        cond_or_uncond = transformer_options["cond_or_uncond"]
        state = _CallState(info)
        try:
            for role, kind in plan.needed(info, cond_or_uncond):
                trajectory = plan.trajectory(role)
                index = plan.latent_index(info, role)
                bank = trajectory.features
                if bank is not None and bank.has(index, kind, plan.layers):
                    # one transfer of this step's tokens to the device, not one per layer call
                    state.features[(role, kind)] = {
                        layer: (tokens.to(x.device, non_blocking=True), grid)
                        for layer, (tokens, grid) in ((layer, bank.get(index, layer, kind)) for layer in plan.layers)}
                    continue
                # recompute: the role's stored latent through the UNet, rows of this kind only
                latent = trajectory.latents[index].to(x.device, x.dtype)
                rows = _rows_of_kind(cond_or_uncond, x.shape[0], kind)[:latent.shape[0]]
                capture = _CallState(info, role, kind)
                options = _capture_options(transformer_options, key, capture, kind, rows, x.shape[0], cond_or_uncond)
                executor(latent, t[rows], _take_rows(c_concat, rows, x.shape[0]),
                         _take_rows(c_crossattn, rows, x.shape[0]), None, options,
                         **{k: _take_rows(v, rows, x.shape[0]) for k, v in kwargs.items()})
                state.features[(role, kind)] = capture.features[(role, kind)]
            options = transformer_options.copy()
            options[key] = state
            return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
        finally:
            state.features.clear()

    return transparent(wrapper)


def with_transfer_patch(model, plan):
    """A clone of ``model`` whose decoder self-attention follows ``plan`` (the input is untouched).

    Patches stack: each has its own key, so two transfers on one model (say, two objects
    with their own references and masks) run one after the other in every layer.
    """
    from ..eye_core.rearrange import IMPLICIT

    if plan.injection == IMPLICIT:
        replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
        for layer in plan.layers:
            (block_name, number), depth = layer
            earlier = replaced.get((block_name, number, depth))
            if earlier is None:
                continue
            by = (f"an earlier {earlier.plan.node} (injection 'implicit')" if isinstance(earlier, ImplicitAttention)
                  else f"another node's attention replacement ({short_name(earlier)})")
            raise ValueError(
                f"{plan.node}: the model's self-attention at output block {number} is already replaced by {by}; an "
                "implicit transfer replaces the whole attention, so it would silently undo that one. Use injection "
                "'feature' here (feature transfers stack), or apply only one implicit transfer.")
    key = f"{CALL_PREFIX}{next(_patch_numbers)}"
    clone = model.clone()
    clone.set_model_attn1_patch(TransferAttentionPatch(plan, key))
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, _transfer_wrapper(plan, key))
    if plan.injection == IMPLICIT:
        for layer in plan.layers:
            (block_name, number), depth = layer
            clone.set_model_attn1_replace(ImplicitAttention(plan, key, attention_module(model, layer)),
                                          block_name, number, depth)
    return clone


class ImplicitAttention(PackPatch):
    """attn1 replacement of the implicit (Cross-Image Attention) baseline: on rearrangement steps the
    output's queries attend to the reference's keys and values, projected by the layer's own weights.
    (One implicit transfer per layer: with_transfer_patch refuses a second.)"""

    def __init__(self, plan, key, module):
        self.plan, self.key, self.module = plan, key, module

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention  # read per call: packs may swap it

        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")

        def attention(q_, k_, v_):
            return optimized_attention(q_, k_, v_, heads, attn_precision=precision)

        state = extra_options.get(self.key)
        if state is None or state.capture_role is not None:
            return attention(q, k, v)
        cond_or_uncond = extra_options["cond_or_uncond"]
        layer = layer_key(extra_options)
        sources = {role_kind: state.features[role_kind][layer]
                   for role_kind in self.plan.needed(state.info, cond_or_uncond)}
        return self.plan.attend(q, k, v, state.info, cond_or_uncond, token_grid(extra_options, q.shape[1]), sources, heads,
                                lambda tokens: (self.module.to_k(tokens), self.module.to_v(tokens)), attention)


def transfer_plans(model) -> list:
    """The TransferPlans patched into a ModelPatcher, or into the model a SAMPLER function runs."""
    patcher = getattr(getattr(model, "inner_model", None), "model_patcher", model)
    options = getattr(patcher, "model_options", {}) or {}
    patches = options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
    return [p.plan for p in patches if isinstance(p, TransferAttentionPatch)]
