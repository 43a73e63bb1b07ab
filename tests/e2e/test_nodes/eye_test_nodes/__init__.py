"""Test-only ComfyUI custom nodes for the Eye-for-an-eye end-to-end tests.

Never shipped with the pack: tests/e2e/conftest.py links this folder into a temporary
custom_nodes directory of the ComfyUI server it starts. ``EyeTestTinyCheckpointLoader``
stands in for ``CheckpointLoaderSimple`` (same outputs MODEL, CLIP, VAE in the same slots)
with tiny random-weight models built through ComfyUI's own classes, so the pack's example
workflows run with real core nodes (CLIPTextEncode, VAEEncode, KSampler, VAEDecode ...)
and no checkpoint file.
"""

import os
import sys
from pathlib import Path

# tests/support holds eye_test_support (tiny model builders shared with in-process tests).
_SUPPORT = os.environ.get("EYE_TEST_SUPPORT") or str(Path(__file__).resolve().parents[3] / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

from eye_test_support import tiny_models  # noqa: E402

FAMILIES = ("sd15", "sdxl")


class EyeTestTinyCheckpointLoader:
    """MODEL, CLIP and VAE of a tiny random-weight SD1.5 (or SDXL) checkpoint."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {},
            "optional": {
                "family": (list(FAMILIES), {"default": "sd15"}),
                "weights_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                         "tooltip": "Seed of the random weights (not a sampling seed)."}),
            },
        }

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "_for_testing/eye_test"
    DESCRIPTION = "Test stand-in for Load Checkpoint: tiny random-weight models, no file."

    def load(self, family="sd15", weights_seed=0):
        if family == "sdxl":
            model = tiny_models.tiny_sdxl(weights_seed)
            clip = tiny_models.tiny_sdxl_clip(weights_seed + 1)
        else:
            model = tiny_models.tiny_sd15(weights_seed)
            clip = tiny_models.tiny_sd15_clip(weights_seed + 1)
        vae = tiny_models.tiny_vae(weights_seed + 2)
        return (model, clip, vae)


NODE_CLASS_MAPPINGS = {"EyeTestTinyCheckpointLoader": EyeTestTinyCheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"EyeTestTinyCheckpointLoader": "Eye test: tiny checkpoint loader"}
