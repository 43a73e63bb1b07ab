"""A random-weight SAM-HQ ``vit_tiny`` (Light HQ-SAM shape) for tests: no download.

``segment_anything_hq`` builds the real network (TinyViT encoder, HQ mask decoder); its
parameters are drawn from a seeded generator, so the masks are meaningless but every
shape, dtype and code path is the real one. ``write_checkpoint`` saves the state dict
under the official file name into a ``sams`` folder, as a user would put a download.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

CHECKPOINT_NAME = "sam_hq_vit_tiny.pth"
_STATE_CACHE: dict[int, dict] = {}


def sam_hq_available() -> bool:
    """True when segment-anything-hq and timm can be imported."""
    try:
        _registry()
    except ImportError:
        return False
    return True


def _registry():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in registry.*", category=UserWarning)
        warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
        from segment_anything_hq import sam_model_registry
    return sam_model_registry


def build_tiny_sam(seed: int = 0) -> torch.nn.Module:
    """A ``vit_tiny`` SAM-HQ with seeded random weights, fp32, CPU, eval mode."""
    registry = _registry()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = registry["vit_tiny"](checkpoint=None)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def tiny_sam_state_dict(seed: int = 0) -> dict:
    """The state dict of build_tiny_sam(seed) (built once per process and seed)."""
    if seed not in _STATE_CACHE:
        _STATE_CACHE[seed] = {k: v.detach().clone() for k, v in build_tiny_sam(seed).state_dict().items()}
    return _STATE_CACHE[seed]


def write_checkpoint(folder, name: str = CHECKPOINT_NAME, seed: int = 0) -> Path:
    """Save the random ``vit_tiny`` weights as ``folder/name`` (folder created); return the path.

    An existing file is kept (the weights of a seed never change), so calling this from
    several fixtures costs one build.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.is_file():
        partial = path.with_name(path.name + f".{os.getpid()}.partial")
        torch.save(tiny_sam_state_dict(seed), partial)
        os.replace(partial, path)
    return path
