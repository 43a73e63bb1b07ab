"""Find the ComfyUI tree the integration tests use and import it in-process (CPU)."""

import os
import sys
from pathlib import Path


def comfyui_path() -> Path:
    """Where ComfyUI is expected: $COMFYUI_PATH, else comfy-cli's default ~/comfy/ComfyUI."""
    return Path(os.environ.get("COMFYUI_PATH") or Path.home() / "comfy" / "ComfyUI")


def comfyui_available() -> bool:
    """True when a ComfyUI source tree is laid out at comfyui_path()."""
    return (comfyui_path() / "comfy" / "model_patcher.py").is_file()


def skip_reason() -> str:
    return f"integration tests SKIPPED: no ComfyUI at {comfyui_path()}"


def import_comfy():
    """Put ComfyUI on sys.path and import it for CPU use, as `main.py --cpu` would set it up."""
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package, as main.py imports it first)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401  (device set-up reads args at import)
    import comfy.samplers  # noqa: F401
    return root


def require_comfy():
    """At the top of an integration test module: import ComfyUI, or skip the module loudly."""
    import pytest

    if not comfyui_available():
        pytest.skip(skip_reason(), allow_module_level=True)
    return import_comfy()


def import_comfy_or_exit():
    """For benchmark scripts: import ComfyUI for CPU use, or exit saying where it was looked for."""
    import sys

    if not comfyui_available():
        sys.exit(skip_reason())
    return import_comfy()
