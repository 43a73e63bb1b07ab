"""Fixtures for in-process tests against the real ComfyUI (tiny random-weight models)."""

import pytest
from eye_test_support import comfy_env


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI imported for CPU use (skips when there is no ComfyUI tree)."""
    if not comfy_env.comfyui_available():
        pytest.skip(comfy_env.skip_reason())
    comfy_env.import_comfy()
    import comfy.model_management

    return comfy


@pytest.fixture(scope="session")
def tiny():
    """The tiny-model builders (tests/support/eye_test_support/tiny_models.py)."""
    from eye_test_support import tiny_models

    return tiny_models


@pytest.fixture
def sd15(comfy, tiny):
    """A fresh tiny SD1.5-shaped ModelPatcher."""
    return tiny.tiny_sd15()


@pytest.fixture
def sdxl(comfy, tiny):
    """A fresh tiny SDXL-shaped ModelPatcher."""
    return tiny.tiny_sdxl()


@pytest.fixture(scope="session")
def custom_sampler_nodes(comfy):
    """ComfyUI's own custom-sampling nodes (SamplerCustomAdvanced, CFGGuider, DisableNoise, ...)."""
    import comfy_extras.nodes_custom_sampler as nodes_custom_sampler

    return nodes_custom_sampler


@pytest.fixture(scope="session")
def pack_nodes(comfy):
    """The pack's node modules, imported the way ComfyUI does (relative to the pack)."""
    import importlib

    return importlib.import_module("eye_for_an_eye.nodes")
