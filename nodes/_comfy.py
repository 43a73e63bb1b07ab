"""The one place where the pack touches ComfyUI internals.

Model sampling, the sigma grid, the UNet check, the CFG guider, samplers, progress bars,
interruption, devices, the model's fingerprint (its config, weights, patches and wrappers)
and the conditioning a model expects are reached only through this module, so a change in
ComfyUI is mended here and nowhere else. Everything below is imported lazily by the node
modules (never at pack import time).
"""

from __future__ import annotations

import itertools
import logging

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import latent_preview
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

SUPPORTED_FAMILIES = "SD1.x, SD2.x or SDXL"


class UnsupportedModelError(ValueError):
    """The MODEL is not a UNet latent diffusion model with a discrete noise schedule."""

    __module__ = "eye_for_an_eye"  # ComfyUI shows module.Class: not the install path of the pack


def _sampling_in_words(sampling) -> str:
    """What a model_sampling object does, in the words of the nodes that set it (never its class name)."""
    if isinstance(sampling, (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.ModelSamplingFlux)) \
            or isinstance(sampling, comfy.model_sampling.CONST):
        return ("flow matching (rectified flow) sampling, as set by ModelSamplingSD3, ModelSamplingAuraFlow or "
                "ModelSamplingFlux")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM):
        return ("continuous (EDM-style) sigmas, as set by ModelSamplingContinuousEDM or ModelSamplingContinuousV")
    return "a noise schedule other than the discrete 1000-step one of Stable Diffusion"


def require_unet(model, node: str):
    """Raise a clear error unless ``model`` is a UNet model with an epsilon/v discrete schedule."""
    base = getattr(model, "model", None)
    diffusion = getattr(base, "diffusion_model", None)
    sampling = model.get_model_object("model_sampling") if base is not None else None
    if not isinstance(diffusion, UNetModel):
        config = type(getattr(base, "model_config", None)).__name__
        kind = type(diffusion if diffusion is not None else model).__name__ if config in _FAMILY_NAMES else \
            model_family(model)
        raise UnsupportedModelError(
            f"{node}: this MODEL is a {kind} model, not a UNet Stable Diffusion model (Flux, SD3 and other "
            f"DiT-style models are not supported). Load an {SUPPORTED_FAMILIES} checkpoint."
        )
    if not isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) or not isinstance(
        sampling, comfy.model_sampling.EPS
    ):
        raise UnsupportedModelError(
            f"{node}: this MODEL uses {_sampling_in_words(sampling)}. The method needs the discrete noise schedule "
            f"Stable Diffusion checkpoints come with: remove that node from the model's path, or load an "
            f"{SUPPORTED_FAMILIES} checkpoint."
        )
    return sampling


def sigma_grid(model) -> torch.Tensor:
    """The model's ascending sigma grid, one sigma per training timestep (float32, CPU)."""
    return model.get_model_object("model_sampling").sigmas.detach().to("cpu", torch.float32)


def make_sampler(function, **options):
    """A ComfyUI SAMPLER running ``function(model, x, sigmas, extra_args, callback, disable, **options)``."""
    return comfy.samplers.KSAMPLER(function, extra_options=options)


def sample_with_cfg(model, positive, negative, cfg, latent, sampler, sigmas, seed, callback=None):
    """Run ``sampler`` over ``sigmas`` through ComfyUI's own CFGGuider, starting at ``latent`` (no noise added).

    The guider loads the model, prepares the conditioning and applies every patch and
    wrapper of ``model`` exactly as SamplerCustomAdvanced with a CFGGuider does, so a
    replay through that node sees the same predictions. Returns the raw VAE latent.
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    noise = torch.zeros_like(latent)
    return guider.sample(noise, latent, sampler, sigmas, callback=callback, disable_pbar=True, seed=seed)


def progress_callback(model, steps: int):
    """ComfyUI's sampler progress bar with latent previews: ``callback(step, x0, x, total)``."""
    return latent_preview.prepare_callback(model, steps)


def check_interrupt():
    """Raise ComfyUI's interruption exception when the user pressed Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def storage_device() -> torch.device:
    """Where pack objects that outlive a node (trajectories) are kept: ComfyUI's intermediate device."""
    return comfy.model_management.intermediate_device()


def progress_bar(total: int):
    return comfy.utils.ProgressBar(total)


# ---------------------------------------------------------------- UNet layout

def _unet(model) -> UNetModel:
    return model.model.diffusion_model


def output_block_count(model) -> int:
    """How many decoder (output) blocks the UNet has: 12 for SD1.x/SD2.x, 9 for SDXL."""
    return len(_unet(model).output_blocks)


def dift_output_block(model) -> int:
    """The decoder block whose output DIFT reads, found from the layout (not from a model name).

    DIFT's ``up_ft_index = 1`` on SD1.5 is the output of the first decoder level that has
    attention, after its upsample (output block 5: 1280 channels at 1/16 of the image).
    The same rule on SDXL gives output block 2 (1280 channels, also 1/16 of the image).
    """
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

    blocks = _unet(model).output_blocks
    seen_attention = False
    for index, block in enumerate(blocks):
        seen_attention = seen_attention or any(isinstance(layer, SpatialTransformer) for layer in block)
        if seen_attention and any(isinstance(layer, Upsample) for layer in block):
            return index
    return len(blocks) - 1


class _Captured(Exception):
    """Raised from a hook once the wanted activation is in hand: the rest of the UNet is skipped."""


def unet_block_output(model, positive, latent, sigma: float, noise: torch.Tensor, block: int, seed: int,
                      node: str = "Extract UNet Features"):
    """The output of decoder block ``block`` for ``latent + sigma * noise``, with the positive prompt only.

    ``latent`` is a raw VAE latent (rows laid out as the caller wants them batched);
    ``noise`` has its shape. The UNet runs through ComfyUI's guider (cfg 1: cond only), so
    model patches and the conditioning's extras (SDXL's pooled output) apply as in
    sampling. The pass **stops right after the block**: the later decoder blocks, the
    most expensive ones at full resolution, are not needed.
    """
    unet = _unet(model)
    if not 0 <= block < len(unet.output_blocks):
        raise ValueError(f"this UNet has output blocks 0 to {len(unet.output_blocks) - 1}; block {block} does not exist")
    captured = {}

    def hook(module, args, output):
        captured["features"] = output
        raise _Captured()

    def capture(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        handle = unet.output_blocks[block][-1].register_forward_hook(hook)
        try:
            noisy = x + sigmas[0] * noise.to(x.device, x.dtype)
            with torch.no_grad():  # ComfyUI runs nodes in inference mode; called from elsewhere, keep no graph
                model_fn(noisy, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "features" not in captured:
            raise ValueError(f"{node}: output block {block} did not run: a model patch replaced the UNet's forward "
                             "pass; extract features from the model without that patch.")
        return x

    sigmas = torch.tensor([float(sigma), 0.0])
    sample_with_cfg(model, positive, positive, 1.0, latent, make_sampler(capture), sigmas, seed)
    return captured["features"]


def timestep_sigma(model, timestep: int) -> float:
    """The model's sigma at an integer training timestep."""
    return float(model.get_model_object("model_sampling").sigma(torch.tensor(float(timestep))))


# ---------------------------------------------------------------- the authors' FreeU

class AuthorsFreeUPatch:
    """ComfyUI output_block_patch applying eye_core.freeu.AuthorsFreeU to the main path ``h``.

    Unlike the pack's other patches it changes what the model computes, so it is part of
    the model's fingerprint (its settings describe it; see _ours).
    """

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


# ---------------------------------------------------------------- decoder self-attention layers

def decoder_attention_levels(model) -> list:
    """Decoder self-attention layers grouped by resolution level, **finest first**.

    Each level is a list of layer keys ``(("output", block), depth_index)``, the names
    ComfyUI's attention patches see (``extra_options["block"]``, ``["block_index"]``).
    Found from the UNet's layout: a level ends at a block with an upsample. SD1.5 gives
    [output 9-11], [6-8], [3-5]; SDXL [output 3-5 (depth 2)], [0-2 (depth 10)].
    """
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

    levels, current = [], []
    for index, block in enumerate(_unet(model).output_blocks):
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                current.extend((("output", index), depth) for depth in range(len(layer.transformer_blocks)))
        if any(isinstance(layer, Upsample) for layer in block) or index == len(_unet(model).output_blocks) - 1:
            if current:
                levels.append(current)
            current = []
    return levels[::-1]


def _layer_key(extra_options):
    block = extra_options.get("block")
    return None if block is None else ((block[0], block[1]), extra_options.get("block_index", 0))


def _grid(extra_options, tokens: int):
    """(h, w) token grid of a self-attention call, from the activation shape (any aspect ratio)."""
    shape = extra_options.get("activations_shape")
    if shape is not None and shape[-2] * shape[-1] == tokens:
        return (int(shape[-2]), int(shape[-1]))
    original = extra_options.get("original_shape")
    height, width = original[-2], original[-1]
    for factor in (1, 2, 4, 8, 16, 32, 64):
        h, w = -(-height // factor), -(-width // factor)
        if h * w == tokens:
            return (h, w)
    raise ValueError(f"cannot tell the token grid of a {tokens}-token attention call on a {height}x{width} latent: "
                     "a model patch changed the self-attention's tokens (Token Merging (ToMe) or HyperTile merge or "
                     "tile them), which the transfer cannot work with. Remove that patch from the model.")


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
                                      f"a patch that changes the attention's tokens ({_short_name(patch)})")
        raise ValueError(
            f"{node}: the model carries {name}, which merges or tiles the self-attention's tokens; the transfer "
            "reads and replaces tokens by their place in the image, so the two cannot run together. Remove it from "
            "the model that goes into Invert Latent and Apply Appearance Transfer (it is a speed-up, not part of "
            "the method).")


class FeatureRecorder:
    """An attn1 patch that copies the chosen layers' inputs into a FeatureBank (inputs pass unchanged)."""

    def __init__(self, bank, latent_size=None):
        self.bank = bank
        self.latent_size = None if latent_size is None else tuple(latent_size)
        self.index = None  # latent index of the current UNet call, set by the caller

    def __deepcopy__(self, memo):
        return self

    def __call__(self, n, context, value, extra_options):
        key = _layer_key(extra_options)
        shape = extra_options.get("original_shape")
        if self.latent_size is not None and shape is not None and tuple(shape[-2:]) != self.latent_size:
            return n, context, value  # a call on a crop of the latent (area conditioning): not the image's features
        if self.index is not None and key in self.bank.layers:
            self.bank.record(self.index, key, extra_options["cond_or_uncond"], n, _grid(extra_options, n.shape[1]))
        return n, context, value


def with_feature_recorder(model, bank, latent_size=None) -> tuple:
    """A clone of ``model`` that records into ``bank``, and the recorder (set ``.index`` per call).

    Only UNet calls on the whole ``latent_size`` latent are recorded (area conditioning adds calls on crops).
    """
    recorder = FeatureRecorder(bank, latent_size)
    clone = model.clone()
    clone.set_model_attn1_patch(recorder)
    return clone, recorder


def offload_device() -> torch.device:
    """Where large captured data waits while idle: ComfyUI's UNet offload device."""
    return comfy.model_management.unet_offload_device()


_CALL = "eye_for_an_eye_call:"  # + the patch's own number: stacked patches never read each other's state
_CAPTURING = "eye_for_an_eye_capturing"  # set during a capture pass: every transfer wrapper passes through
_patch_numbers = itertools.count()
LOG = logging.getLogger("eye_for_an_eye")


class _CallState:
    """What one UNet call of the patched model does; lives only for that call."""

    def __init__(self, info, capture_role=None, capture_kind=None):
        self.info = info
        self.capture_role = capture_role
        self.capture_kind = capture_kind
        self.features = {}  # (role, kind) -> {layer: (tokens, grid)}


class TransferAttentionPatch:
    """attn1 patch: records features in capture passes, edits the chosen layers in the real pass."""

    def __init__(self, plan, key):
        self.plan = plan
        self.key = key

    def __deepcopy__(self, memo):
        return self

    def __call__(self, n, context, value, extra_options):
        state = extra_options.get(self.key)
        layer = _layer_key(extra_options)
        if state is None or layer not in self.plan.layers:
            return n, context, value
        grid = _grid(extra_options, n.shape[1])
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
    options = {k: v for k, v in transformer_options.items() if not k.startswith(_CALL)}
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

    return wrapper


def with_transfer_patch(model, plan):
    """A clone of ``model`` whose decoder self-attention follows ``plan`` (the input is untouched).

    Patches stack: each has its own key, so two transfers on one model (say, two objects
    with their own references and masks) run one after the other in every layer.
    """
    import comfy.patcher_extension

    from ..eye_core.rearrange import IMPLICIT

    if plan.injection == IMPLICIT:
        replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
        for layer in plan.layers:
            (block_name, number), depth = layer
            earlier = replaced.get((block_name, number, depth))
            if earlier is None:
                continue
            by = (f"an earlier {earlier.plan.node} (injection 'implicit')" if isinstance(earlier, ImplicitAttention)
                  else f"another node's attention replacement ({_short_name(earlier)})")
            raise ValueError(
                f"{plan.node}: the model's self-attention at output block {number} is already replaced by {by}; an "
                "implicit transfer replaces the whole attention, so it would silently undo that one. Use injection "
                "'feature' here (feature transfers stack), or apply only one implicit transfer.")
    key = f"{_CALL}{next(_patch_numbers)}"
    clone = model.clone()
    clone.set_model_attn1_patch(TransferAttentionPatch(plan, key))
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, _transfer_wrapper(plan, key))
    if plan.injection == IMPLICIT:
        for layer in plan.layers:
            (block_name, number), depth = layer
            clone.set_model_attn1_replace(ImplicitAttention(plan, key, _attention_module(model, layer)),
                                          block_name, number, depth)
    return clone


def _attention_module(model, layer):
    """The self-attention module (``attn1``) of a layer key ``(("output", block), depth)``."""
    from comfy.ldm.modules.attention import SpatialTransformer

    (_, number), depth = layer
    for part in _unet(model).output_blocks[number]:
        if isinstance(part, SpatialTransformer):
            return part.transformer_blocks[depth].attn1
    raise ValueError(f"output block {number} has no self-attention")


class ImplicitAttention:
    """attn1 replacement of the implicit (Cross-Image Attention) baseline: on rearrangement steps the
    output's queries attend to the reference's keys and values, projected by the layer's own weights.
    (One implicit transfer per layer: with_transfer_patch refuses a second.)"""

    def __init__(self, plan, key, module):
        self.plan, self.key, self.module = plan, key, module

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")

        def attention(q_, k_, v_):
            return optimized_attention(q_, k_, v_, heads, attn_precision=precision)

        state = extra_options.get(self.key)
        if state is None or state.capture_role is not None:
            return attention(q, k, v)
        cond_or_uncond = extra_options["cond_or_uncond"]
        layer = _layer_key(extra_options)
        sources = {role_kind: state.features[role_kind][layer]
                   for role_kind in self.plan.needed(state.info, cond_or_uncond)}
        return self.plan.attend(q, k, v, state.info, cond_or_uncond, _grid(extra_options, q.shape[1]), sources, heads,
                                lambda tokens: (self.module.to_k(tokens), self.module.to_v(tokens)), attention)


# ---------------------------------------------------------------- SAM-HQ: models/sams and devices

SAMS_FOLDER = "sams"


def register_sams_folder() -> list[str]:
    """Make sure ``models/sams`` is a folder_paths model folder; return every folder searched.

    extra_model_paths.yaml is read before custom nodes load: a ``sams:`` entry there
    creates the folder name with an empty extension filter (which would list any file),
    so the default folder is added to it and the filter set to ComfyUI's model
    extensions. Another pack registering "sams" keeps its folders too.
    """
    import os

    import folder_paths

    default = os.path.join(folder_paths.models_dir, SAMS_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(SAMS_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[SAMS_FOLDER] = ([default], set(folder_paths.supported_pt_extensions))
    else:
        folder_paths.add_model_folder_path(SAMS_FOLDER, default)
        paths, extensions = folder_paths.folder_names_and_paths[SAMS_FOLDER]
        if not extensions:
            folder_paths.folder_names_and_paths[SAMS_FOLDER] = (paths, set(folder_paths.supported_pt_extensions))
    return list(folder_paths.get_folder_paths(SAMS_FOLDER))


def sam_checkpoint_names() -> list[str]:
    """The checkpoint files in every ``sams`` folder (subfolders as ``sub/name.pth``)."""
    import folder_paths

    register_sams_folder()
    return folder_paths.get_filename_list(SAMS_FOLDER)


def sam_checkpoint_path(name: str) -> str | None:
    """The full path of a file listed by sam_checkpoint_names(), or None."""
    import folder_paths

    register_sams_folder()
    return folder_paths.get_full_path(SAMS_FOLDER, name) if name else None


def sam_devices(choice: str) -> tuple[torch.device, torch.device]:
    """(compute device, idle device) for the SAM-HQ loader's choice "auto", "GPU" or "CPU".

    The idle device is always the CPU: the model visits the GPU only while it segments.
    "GPU" on a host where ComfyUI computes on the CPU is refused with what to do instead.
    """
    cpu = torch.device("cpu")
    if choice == "CPU":
        return cpu, cpu
    device = comfy.model_management.get_torch_device()
    if choice == "GPU" and device.type == "cpu":
        raise RuntimeError(
            "Load SAM-HQ Model: device 'GPU' was chosen but ComfyUI computes on the CPU here (no CUDA, ROCm, XPU "
            "or MPS device was found, or ComfyUI was started with --cpu). Choose 'auto' or 'CPU'.")
    if choice not in ("auto", "GPU"):
        raise ValueError(f"Load SAM-HQ Model: device must be 'auto', 'GPU' or 'CPU', got {choice!r}")
    return device, cpu


def make_room_for(module: torch.nn.Module, device: torch.device, working_bytes: int = 0):
    """Ask ComfyUI to unload other models from ``device`` until ``module`` (plus working memory) fits."""
    if device.type == "cpu":
        return
    comfy.model_management.free_memory(comfy.model_management.module_size(module) + working_bytes, device)


def release_device_memory():
    """Return cached GPU memory after a module left the GPU."""
    comfy.model_management.soft_empty_cache()


# ---------------------------------------------------------------- fingerprints (eye_core.fingerprint)

_FAMILY_NAMES = {"SD15": "SD1.x", "SD20": "SD2.x", "SD21UnclipL": "SD2.x unCLIP", "SD21UnclipH": "SD2.x unCLIP",
                 "SDXL": "SDXL", "SDXLRefiner": "SDXL refiner", "SSD1B": "SSD-1B", "Segmind_Vega": "Segmind Vega",
                 "KOALA_700M": "KOALA", "KOALA_1B": "KOALA", "SD15_instructpix2pix": "SD1.x InstructPix2Pix",
                 "SDXL_instructpix2pix": "SDXL InstructPix2Pix"}
_SIMPLE = (int, float, str, bool, type(None))
_SAMPLED_VALUES = 64  # values read per fingerprinted weight tensor
_SAMPLED_PATCH_KEYS = 4  # weight patches whose content is sampled (the others by key and strength)


def model_family(model) -> str:
    """What users call the model's family ("SD1.x", "SDXL"), read from its model config."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else type(getattr(model, "model", model)).__name__
    return _FAMILY_NAMES.get(name, name)


def _simple(value, depth: int = 0):
    """A hashable, stable description of a patch's setting (numbers, strings, small containers)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _SIMPLE):
        return value
    if torch.is_tensor(value):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if depth < 2 and isinstance(value, (tuple, list)):
        return tuple(_simple(v, depth + 1) for v in value[:16])
    if depth < 2 and isinstance(value, dict):  # keys that are not plain (devices, objects) are runtime state
        return tuple(sorted((str(k), _simple(v, depth + 1)) for k, v in value.items() if isinstance(k, _SIMPLE))[:16])
    return type(value).__qualname__


def _ours(fn) -> bool:
    """The pack's own patches and wrappers (they are not part of the model a trajectory came from)."""
    import inspect

    owner = getattr(fn, "__func__", fn)
    if isinstance(owner, AuthorsFreeUPatch):
        return False  # it changes the model's output: part of the model
    module = owner.__module__ if inspect.isfunction(owner) else type(owner).__module__
    return module == __name__


def _describe(fn):
    """A stable description of a patch function: what it is and the plain values it was made with."""
    import functools
    import inspect

    if isinstance(fn, functools.partial):
        return ("partial", _describe(fn.func), _simple(fn.args), _simple(fn.keywords))
    if inspect.ismethod(fn):
        return ("method", fn.__func__.__qualname__, _describe(fn.__self__))
    if inspect.isfunction(fn):
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(_simple(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append(None)
        return ("function", fn.__module__, fn.__qualname__, tuple(cells), _simple(fn.__defaults__))
    settings = tuple(sorted((k, _simple(v)) for k, v in list(getattr(fn, "__dict__", {}).items())[:32]))
    return ("object", type(fn).__module__, type(fn).__qualname__, settings)


def _short_name(fn) -> str:
    fn = getattr(fn, "func", fn)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return name.split(".<locals>")[0]


def _tensor_sample(tensor) -> tuple:
    """A strided sample of a tensor's values (as float16) and its sum of squares: cheap, enough to tell weights apart."""
    try:
        flat = tensor.detach().flatten()
        count = flat.numel()
        if count == 0:
            return (tuple(tensor.shape),)
        index = torch.linspace(0, count - 1, min(count, _SAMPLED_VALUES), device=flat.device).long()
        values = flat[index].to("cpu", torch.float16).numpy().tobytes()
        energy = float(flat.float().square().sum())
        return (tuple(tensor.shape), values, f"{energy:.4g}")
    except Exception:  # quantised or custom tensor types: their shape and type only
        return (tuple(tensor.shape), type(tensor).__name__)


def _first_tensor(value, depth: int = 0):
    if torch.is_tensor(value):
        return value
    if depth > 3:
        return None
    items = value if isinstance(value, (tuple, list)) else getattr(value, "weights", None)
    for item in items if isinstance(items, (tuple, list)) else ():
        found = _first_tensor(item, depth + 1)
        if found is not None:
            return found
    return None


def _weights_digest(model) -> str:
    """Digest of a few base weights of the UNet: the first two, the middle and the last two parameters.

    Weight patches (LoRA) that ComfyUI has applied in place are read from the patcher's
    backup, so the digest is that of the checkpoint, whatever clone is loaded right now.
    """
    import hashlib

    parameters = list(_unet(model).named_parameters())
    chosen = parameters[:2] + parameters[len(parameters) // 2:len(parameters) // 2 + 1] + parameters[-2:]
    backup = getattr(model, "backup", {}) or {}
    digest = hashlib.sha256()
    for name, parameter in chosen:
        key = "diffusion_model." + name
        saved = backup.get(key)
        tensor = saved.weight if saved is not None else parameter
        digest.update(repr((name, _tensor_sample(tensor))).encode())
    return digest.hexdigest()[:16]


def _patches_description(model) -> tuple[list, list]:
    """(descriptions, short names) of every patch of a ModelPatcher except the pack's own."""
    items, names = [], []
    weight_patches = getattr(model, "patches", {}) or {}
    if weight_patches:
        keys = sorted(weight_patches)
        for index, key in enumerate(keys):
            entries = []
            for patch in weight_patches[key]:
                strength, value, strength_model = patch[0], patch[1], patch[2] if len(patch) > 2 else None
                sample = ()
                if index < _SAMPLED_PATCH_KEYS:
                    tensor = _first_tensor(value)
                    sample = _tensor_sample(tensor) if tensor is not None else ()
                entries.append((_simple(strength), _simple(strength_model), type(value).__qualname__, sample))
            items.append(("weight", key, tuple(entries)))
        names.append(f"weight patches on {len(keys)} tensors (LoRA or merge)")
    for name, value in sorted((getattr(model, "object_patches", {}) or {}).items()):
        if name == "model_sampling":
            sigmas = getattr(value, "sigmas", None)
            summary = None if sigmas is None else (int(sigmas.numel()), f"{float(sigmas[0]):.6g}",
                                                     f"{float(sigmas[-1]):.6g}")
            items.append(("object", name, tuple(c.__name__ for c in type(value).__mro__[:4]), summary))
            names.append("ModelSampling*")
        else:
            items.append(("object", name, type(value).__qualname__))
            names.append(f"object patch {name}")
    options = getattr(model, "model_options", {}) or {}
    transformer = options.get("transformer_options", {}) or {}
    for kind, patches in sorted((transformer.get("patches", {}) or {}).items()):
        for fn in patches:
            if not _ours(fn):
                items.append(("patch", kind, _describe(fn)))
                names.append(f"{kind} {_short_name(fn)}")
    for kind, replacements in sorted((transformer.get("patches_replace", {}) or {}).items()):
        for block, fn in sorted(replacements.items(), key=lambda item: repr(item[0])):
            if not _ours(fn):
                items.append(("replace", kind, repr(block), _describe(fn)))
                names.append(f"{kind} {_short_name(fn)}")
    for key in ("model_function_wrapper", "sampler_cfg_function", "sampler_pre_cfg_function",
                "sampler_post_cfg_function"):
        value = options.get(key)
        for fn in value if isinstance(value, (list, tuple)) else ([value] if value is not None else []):
            items.append(("option", key, _describe(fn)))
            names.append(f"{key} {_short_name(fn)}")
    for kind, keyed in sorted((getattr(model, "wrappers", {}) or {}).items()):
        for key, wrappers in sorted(keyed.items(), key=lambda item: repr(item[0])):
            if isinstance(key, str) and key.startswith(_CALL):
                continue
            for fn in wrappers:
                if not _ours(fn):
                    items.append(("wrapper", kind, repr(key), _describe(fn)))
                    names.append(f"{kind} wrapper {key or _short_name(fn)}")
    return items, sorted(set(names))


def model_print(model):
    """The eye_core.fingerprint.ModelPrint of a ModelPatcher (once per node execution; a few ms).

    The pack's own patches (the transfer patch, the feature recorder) are left out: a
    patched clone has the print of the model it was made from.
    """
    import hashlib

    from ..eye_core.fingerprint import ModelPrint

    base = model.model
    config = getattr(base, "model_config", None)
    unet_config = dict(getattr(config, "unet_config", {}) or {})
    latent = getattr(base, "latent_format", None)
    layout = (type(config).__name__, type(base).__name__, type(latent).__name__,
              getattr(latent, "latent_channels", None),
              tuple(sorted((k, _simple(v)) for k, v in unet_config.items() if k != "dtype")))
    items, names = _patches_description(model)
    return ModelPrint(family=model_family(model),
                      layout=hashlib.sha256(repr(layout).encode()).hexdigest()[:16],
                      weights=_weights_digest(model),
                      patches=hashlib.sha256(repr(items).encode()).hexdigest()[:16],
                      patch_summary=tuple(names),
                      latent=f"{type(latent).__name__}/{getattr(latent, 'latent_channels', '?')}")


def sampling_model_print(sampler_model):
    """The ModelPrint of the model a SAMPLER function is running (None if it cannot be told).

    ComfyUI hands a sampler function a KSamplerX0Inpaint around the guider; the guider
    keeps the ModelPatcher it was made with.
    """
    patcher = getattr(getattr(sampler_model, "inner_model", None), "model_patcher", None)
    if patcher is None or not isinstance(getattr(getattr(patcher, "model", None), "diffusion_model", None), UNetModel):
        return None
    return model_print(patcher)


def image_print(latent: torch.Tensor):
    """The eye_core.fingerprint.ImagePrint of a raw VAE latent (VAEEncode's LATENT samples)."""
    from ..eye_core.fingerprint import ImagePrint

    return ImagePrint.of(latent)


# ---------------------------------------------------------------- conditioning and token grids

def check_conditioning(model, conditioning, input_name: str, node: str) -> None:
    """Raise a clear error when a CONDITIONING was not made for this model (another text encoder).

    ComfyUI itself fails deep inside the UNet with a matrix-shape error (or a missing
    'pooled_output'); here the node names the input and what to connect instead.
    """
    import comfy.model_base

    unet_config = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    width = unet_config.get("context_dim")
    family = model_family(model)
    needs_pooled = isinstance(model.model, (comfy.model_base.SDXL, comfy.model_base.SDXLRefiner))
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{node}: {input_name} is empty; connect the CONDITIONING of a CLIPTextEncode node.")
    for entry in conditioning:
        tokens = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        extras = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
        if not torch.is_tensor(tokens) or tokens.ndim != 3:
            raise ValueError(f"{node}: {input_name} is not a text conditioning (CLIPTextEncode's CONDITIONING).")
        if width is not None and int(tokens.shape[-1]) != int(width):
            raise ValueError(
                f"{node}: {input_name} was encoded for another model: its tokens are {tokens.shape[-1]} wide but "
                f"this {family} model takes {width}. Encode the prompt with the CLIP of the same checkpoint as the "
                "model (CLIPTextEncode with that Load Checkpoint's CLIP output).")
        if needs_pooled and extras.get("pooled_output") is None and "unclip_conditioning" not in extras:
            raise ValueError(
                f"{node}: {input_name} has no pooled text embedding, which {family} models need: it was encoded by "
                f"another model's text encoder (SD1.x?). Encode the prompt with the CLIP of the same checkpoint as "
                "the model (CLIPTextEncode with that Load Checkpoint's CLIP output).")


def check_sampler_conditioning(sampler_model, node: str) -> None:
    """In a SAMPLER function: the guider's prompts must fit its model (else a raw matrix-shape error).

    ComfyUI hands the sampler a wrapper around the guider (CFGGuider, ...); the guider keeps
    its model and its prompts as given (``original_conds``). Nothing to check when they
    cannot be found.
    """
    guider = getattr(sampler_model, "inner_model", None)
    patcher = getattr(guider, "model_patcher", None)
    conds = getattr(guider, "original_conds", None)
    if patcher is None or not isinstance(conds, dict):
        return
    for name, entries in conds.items():
        if not entries or not all(isinstance(e, dict) and torch.is_tensor(e.get("cross_attn")) for e in entries):
            continue
        check_conditioning(patcher, [[e["cross_attn"], e] for e in entries], f"the guider's {name} conditioning",
                           node)


def attention_grids(model, layers, latent_size) -> set:
    """The token grids (h, w) the decoder self-attention ``layers`` see on a latent of ``latent_size`` (H, W).

    A decoder block's attention runs at the latent size halved (rounding up, as the
    encoder's strided convolutions do) once per upsample still ahead of it, its own included.
    """
    from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

    blocks = _unet(model).output_blocks
    upsamples = [any(isinstance(layer, Upsample) for layer in block) for block in blocks]
    grids = set()
    for (_, number), _depth in layers:
        height, width = (int(s) for s in latent_size)
        for _ in range(sum(upsamples[number:])):
            height, width = -(-height // 2), -(-width // 2)
        grids.add((height, width))
    return grids


# ---------------------------------------------------------------- what the sampling will do

def warn_user(node: str, text: str) -> None:
    """A warning in the log and, while a prompt runs on the server, under the node in the UI."""
    LOG.warning("%s: %s", node, text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        context = get_executing_context()
        if context is not None and getattr(PromptServer, "instance", None) is not None:
            PromptServer.instance.send_progress_text(f"{node}: {text}", context.node_id)
    except Exception:  # noqa: BLE001 - the log line is the message; the UI text is a courtesy
        pass


def sampler_cfg(sampler_model):
    """The guidance scale of the CFGGuider running a SAMPLER function (None for other guiders)."""
    import comfy.samplers as samplers

    guider = getattr(sampler_model, "inner_model", None)
    return float(guider.cfg) if type(guider) is samplers.CFGGuider else None


def transfer_plans(model) -> list:
    """The TransferPlans patched into a ModelPatcher, or into the model a SAMPLER function runs."""
    patcher = getattr(getattr(model, "inner_model", None), "model_patcher", model)
    options = getattr(patcher, "model_options", {}) or {}
    patches = options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
    return [p.plan for p in patches if isinstance(p, TransferAttentionPatch)]


def check_guidance(plans, cfg, node: str) -> None:
    """Refuse guidance and cfg that leave nothing of the method; warn where they silence a part of it."""
    from ..eye_core.rearrange import guidance_problem

    for plan in plans:
        found = guidance_problem(plan.guidance, cfg)
        if found is None:
            continue
        kind, text = found
        if kind == "refuse":
            raise ValueError(f"{node}: {plan.node}'s {text}")
        warn_user(node, f"{plan.node}'s {text}")


def check_latent_channels(model, samples: torch.Tensor, node: str) -> None:
    """A latent of another model family (16 channels into SD1.5, say) is refused before the UNet's raw conv error."""
    expected = getattr(getattr(model.model, "latent_format", None), "latent_channels", None)
    if expected is not None and samples.ndim == 4 and int(samples.shape[1]) != int(expected):
        raise ValueError(
            f"{node}: the latent has {samples.shape[1]} channels but this {model_family(model)} model takes "
            f"{expected}: it was encoded by another model's VAE. Encode the image with the VAE of the same checkpoint "
            "as the model (VAEEncode with that Load Checkpoint's VAE output).")
