"""Find a ComfyUI tree and import it as ``main.py`` sets it up, for scripts run outside ComfyUI.

Inside ComfyUI nothing here is needed. The headless demo, the demo model's training
scripts and the tests all start ComfyUI through ``import_comfyui``, so the order of its
imports (its ``utils`` package first, argument parsing off, devices read at import) is
written once. This module imports nothing of ComfyUI at its top.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
DEFAULT_COMFYUI = Path.home() / "comfy" / "ComfyUI"  # comfy-cli's default place


def is_comfyui(path) -> bool:
    """True when ``path`` holds a ComfyUI source tree (the folder with main.py)."""
    return path is not None and (Path(path) / "comfy" / "model_patcher.py").is_file()


def default_comfyui_path() -> Path:
    """``COMFYUI_PATH`` when set, else comfy-cli's ``~/comfy/ComfyUI`` (whether or not it exists)."""
    return Path(os.environ.get("COMFYUI_PATH") or DEFAULT_COMFYUI)


def find_comfyui() -> Path:
    """``COMFYUI_PATH``, else the ComfyUI whose custom_nodes holds this pack, else ``~/comfy/ComfyUI``.

    A ``COMFYUI_PATH`` that is not a ComfyUI folder is an error, never silently replaced by another ComfyUI.
    """
    given = os.environ.get("COMFYUI_PATH")
    if given:
        if not is_comfyui(given):
            raise SystemExit(f"COMFYUI_PATH is {given!r}, which is not a ComfyUI folder (no comfy/model_patcher.py "
                             "in it): point it at the folder that holds ComfyUI's main.py, or unset it to use the "
                             "ComfyUI this pack is installed in.")
        return Path(given)
    for candidate in (PACK_DIR.parent.parent, DEFAULT_COMFYUI):
        if is_comfyui(candidate):
            return candidate
    raise SystemExit("No ComfyUI found: set COMFYUI_PATH to your ComfyUI folder (the one with main.py), install "
                     "this pack in its custom_nodes, or put ComfyUI at ~/comfy/ComfyUI.")


def import_comfyui(root=None, cpu: bool | None = True, output_dir=None) -> Path:
    """Put ComfyUI ``root`` (default: find_comfyui()) on sys.path and import its core as ``main.py`` would.

    ``cpu``: True for ``--cpu``; None to compute on a GPU where torch sees one. ``output_dir``
    redirects ComfyUI's output and temp folders (the headless demo writes nothing elsewhere).
    """
    root = Path(root) if root is not None else find_comfyui()
    if not is_comfyui(root):
        raise SystemExit(f"no ComfyUI at {root}: set COMFYUI_PATH to your ComfyUI folder (the one with main.py), "
                         "or install it at ~/comfy/ComfyUI")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package, before comfy/utils.py can shadow it)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    import torch

    if cpu is None:
        mps = getattr(torch.backends, "mps", None)
        cpu = not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    args.cpu = bool(cpu)
    args.use_pytorch_cross_attention = True
    args.disable_api_nodes = True
    if output_dir is not None:
        import folder_paths

        folder_paths.set_output_directory(str(output_dir))
        folder_paths.set_temp_directory(str(Path(output_dir) / "temp"))
    import comfy.model_management  # noqa: F401  (reads args at import)
    import comfy.samplers  # noqa: F401
    return root
