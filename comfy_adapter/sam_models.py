"""SAM-HQ checkpoints in ComfyUI's model folders, and the devices SAM-HQ runs on."""

from __future__ import annotations

import torch

import comfy.model_management


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


def sam_dtype(device: torch.device) -> torch.dtype:
    """fp16 where ComfyUI would compute a model of this size in fp16 on ``device``, else fp32 (the CPU)."""
    if device.type == "cpu":
        return torch.float32
    return torch.float16 if comfy.model_management.should_use_fp16(device, prioritize_performance=True) else \
        torch.float32


class SamHolder(torch.nn.Module):
    """SAM-HQ (``.sam``) in a module whose ``device`` ComfyUI's ModelPatcher may set (Sam's own is read-only)."""

    def __init__(self, sam: torch.nn.Module, device: torch.device):
        super().__init__()
        self.sam = sam
        self.device = device


def sam_patcher(module: torch.nn.Module, choice: str):
    """SAM-HQ held as ComfyUI holds its auxiliary models (CLIP vision's way): a ModelPatcher.

    The image encoder (nearly all of SAM's weights and work) is cast once to its compute
    dtype (sam_dtype), the prompt encoder and mask decoder stay fp32; it waits on the idle device;
    ``load_for_segmenting`` lets ComfyUI's memory manager bring it to the compute device,
    count it, and unload it (or other models) when memory is needed, as for any model.
    The patcher's model is a SamHolder; the SAM module is ``patcher.model.sam``.
    """
    import comfy.model_patcher

    compute, idle = sam_devices(choice)
    module.to(device=idle, dtype=torch.float32)
    module.image_encoder.to(sam_dtype(compute))
    return comfy.model_patcher.ModelPatcher(SamHolder(module, idle), load_device=compute, offload_device=idle)


def load_for_segmenting(patcher, working_bytes: int = 0):
    """Bring SAM-HQ to its compute device through ComfyUI, with ``working_bytes`` kept free beside it."""
    comfy.model_management.load_models_gpu([patcher], memory_required=working_bytes)
