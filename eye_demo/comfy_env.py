"""Find a ComfyUI tree and import it, for the demo's scripts run outside ComfyUI.

Inside ComfyUI nothing here is needed. The training scripts and the headless demo look
for ComfyUI at ``COMFYUI_PATH``, else at comfy-cli's default ``~/comfy/ComfyUI``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def comfyui_path() -> Path:
    return Path(os.environ.get("COMFYUI_PATH") or Path.home() / "comfy" / "ComfyUI")


def import_comfyui(cpu: bool = True) -> Path:
    """Put ComfyUI on sys.path and import its core as ``main.py`` would (``--cpu`` when asked)."""
    root = comfyui_path()
    if not (root / "comfy" / "model_patcher.py").is_file():
        raise SystemExit(f"no ComfyUI at {root}: set COMFYUI_PATH to your ComfyUI folder "
                         "(the one with main.py), or install it at ~/comfy/ComfyUI")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package, before comfy/utils.py can shadow it)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu
    args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401  (reads args at import)
    return root
