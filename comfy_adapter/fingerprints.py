"""Fingerprints of models and images (eye_core.fingerprint): which model and which image a result came from.

A fingerprint reads the model's config, a strided sample of its weights and a description
of every patch and wrapper on it, except the pack's own transparent ones (PackPatch with
``fingerprinted = False``): a patched clone has the print of the model it was made from.
"""

from __future__ import annotations

import torch

from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from .checks import model_family
from .patches import CALL_PREFIX, leaves_model_unchanged, short_name
from .unet_layout import unet


_SIMPLE = (int, float, str, bool, type(None))


_SAMPLED_VALUES = 64  # values read per fingerprinted weight tensor


_SAMPLED_PATCH_KEYS = 4  # weight patches whose content is sampled (the others by key and strength)


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

    parameters = list(unet(model).named_parameters())
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
            if not leaves_model_unchanged(fn):
                items.append(("patch", kind, _describe(fn)))
                names.append(f"{kind} {short_name(fn)}")
    for kind, replacements in sorted((transformer.get("patches_replace", {}) or {}).items()):
        for block, fn in sorted(replacements.items(), key=lambda item: repr(item[0])):
            if not leaves_model_unchanged(fn):
                items.append(("replace", kind, repr(block), _describe(fn)))
                names.append(f"{kind} {short_name(fn)}")
    for key in ("model_function_wrapper", "sampler_cfg_function", "sampler_pre_cfg_function",
                "sampler_post_cfg_function"):
        value = options.get(key)
        for fn in value if isinstance(value, (list, tuple)) else ([value] if value is not None else []):
            items.append(("option", key, _describe(fn)))
            names.append(f"{key} {short_name(fn)}")
    for kind, keyed in sorted((getattr(model, "wrappers", {}) or {}).items()):
        for key, wrappers in sorted(keyed.items(), key=lambda item: repr(item[0])):
            if isinstance(key, str) and key.startswith(CALL_PREFIX):
                continue
            for fn in wrappers:
                if not leaves_model_unchanged(fn):
                    items.append(("wrapper", kind, repr(key), _describe(fn)))
                    names.append(f"{kind} wrapper {key or short_name(fn)}")
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
