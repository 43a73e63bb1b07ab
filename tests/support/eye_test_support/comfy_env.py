"""Find the ComfyUI tree the integration tests use and import it in-process (CPU)."""

import sys
from pathlib import Path


def comfyui_path() -> Path:
    """Where ComfyUI is expected: $COMFYUI_PATH, else comfy-cli's default ~/comfy/ComfyUI."""
    from eye_for_an_eye.comfy_adapter import bootstrap

    return bootstrap.default_comfyui_path()


def comfyui_available() -> bool:
    """True when a ComfyUI source tree is laid out at comfyui_path()."""
    from eye_for_an_eye.comfy_adapter import bootstrap

    return bootstrap.is_comfyui(comfyui_path())


def skip_reason() -> str:
    return f"integration tests SKIPPED: no ComfyUI at {comfyui_path()}"


def import_comfy():
    """Import ComfyUI for CPU use through the pack's one bootstrap, as `main.py --cpu` would set it up."""
    from eye_for_an_eye.comfy_adapter import bootstrap

    return str(bootstrap.import_comfyui(comfyui_path(), cpu=True))


def require_comfy():
    """At the top of an integration test module: import ComfyUI, or skip the module loudly."""
    import pytest

    if not comfyui_available():
        pytest.skip(skip_reason(), allow_module_level=True)
    return import_comfy()


def import_comfy_or_exit():
    """For benchmark scripts: import ComfyUI for CPU use, or exit saying where it was looked for."""
    if not comfyui_available():
        sys.exit(skip_reason())
    return import_comfy()
