"""Where the pack keeps tensors that outlive a node, so ComfyUI's memory manager can account for them."""

from __future__ import annotations

import torch

import comfy.model_management


def storage_device() -> torch.device:
    """Where pack objects that outlive a node (trajectories, masks, images) are kept: ComfyUI's intermediate device."""
    return comfy.model_management.intermediate_device()


def feature_store() -> tuple[torch.device, bool]:
    """(device, pin) for captured attention features: the CPU always, pinned when ComfyUI computes on CUDA.

    Not the UNet's offload device, which is the GPU under --highvram or --gpu-only: up to
    two 2 GiB banks there would be memory ComfyUI's manager can neither see nor free.
    Pinned pages let the transfer copy each step's tokens to the GPU asynchronously.
    """
    compute = comfy.model_management.get_torch_device()
    return torch.device("cpu"), compute.type == "cuda" and torch.cuda.is_available()


def free_memory() -> None:
    """Hand cached accelerator memory back after a node's temporary work (ComfyUI's soft cache emptying)."""
    comfy.model_management.soft_empty_cache()
