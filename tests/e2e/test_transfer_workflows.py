"""The correspondence and appearance-transfer example workflows on the real server: what they show."""

from pathlib import Path

import numpy as np
import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
FAST = {"EyeForAnEye_InvertLatent": {"steps": 10, "skip_steps": 3},
        "EyeForAnEye_ExtractUNetFeatures": {"ensemble_size": 2},
        "EyeForAnEye_AppearanceTransfer": {"steps": 10, "skip_steps": 3},
        # the random vit_tiny stand-in whose masks cover the box, for the vit_l the examples name
        "EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny_full_masks.pth"}}


def prompt_for(name, object_info, input_image, target_size=(96, 64), reference_size=(64, 80), extra=None):
    prompt = workflow_api.to_api_prompt(EXAMPLES / name, object_info, workflow_api.TINY_CHECKPOINT)
    images = {"target.png": input_image("transfer_target.png", *target_size, seed=21),
              "reference.png": input_image("transfer_reference.png", *reference_size, seed=22)}
    for entry in prompt.values():
        if entry["class_type"] == "LoadImage":
            entry["inputs"]["image"] = images[entry["inputs"]["image"]]
    overrides = {k: v for k, v in FAST.items() if any(e["class_type"] == k for e in prompt.values())}
    workflow_api.apply_overrides(prompt, {**overrides, **(extra or {})})
    return prompt


def sizes(result, title):
    return [np.asarray(image).shape for image in result.images(title)]


def test_correspondence_previews_have_the_target_size(comfy_server, object_info, input_image):
    prompt = prompt_for("correspondence_preview.json", object_info, input_image)
    result = comfy_server.run_workflow(prompt)
    assert sizes(result, "Reference rearranged into the target's layout") == [(64, 96, 3)]
    assert sizes(result, "Where each target pixel matched") == [(64, 96, 3)]
    assert sizes(result, "Features of the reference (PCA)") == [(80, 64, 3)]


def test_modular_transfer_workflow(comfy_server, object_info, input_image):
    prompt = prompt_for("appearance_transfer.json", object_info, input_image, extra={
        "EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny_full_masks.pth"},
        "EyeForAnEye_SAMHQSegment": {"boxes": "4,4,60,60"}})
    result = comfy_server.run_workflow(prompt)
    assert sizes(result, "Result") == [(64, 96, 3)]
    assert sizes(result, "Target mask") == [(64, 96, 3)] and sizes(result, "Reference mask") == [(80, 64, 3)]
    assert sizes(result, "Reference rearranged into the target's layout") == [(64, 96, 3)]


def test_all_in_one_node_with_images_of_different_sizes(comfy_server, object_info, input_image):
    prompt = prompt_for("appearance_transfer_simple.json", object_info, input_image)
    result = comfy_server.run_workflow(prompt)
    (image,) = result.images("Result")
    pixels = np.asarray(image)
    assert pixels.shape == (64, 96, 3) and pixels.std() > 0
