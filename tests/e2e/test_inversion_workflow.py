"""example_workflows/inversion_round_trip.json on the real server rebuilds its input image."""

from pathlib import Path

import numpy as np
import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parents[2] / "example_workflows" / "inversion_round_trip.json"


def node_id_of(prompt, class_type):
    (node_id,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return node_id


def test_round_trip_rebuilds_the_image(comfy_server, object_info, input_image):
    prompt = workflow_api.to_api_prompt(WORKFLOW, object_info, workflow_api.TINY_CHECKPOINT)
    name = input_image("round_trip.png", 96, 64, seed=7)
    workflow_api.apply_overrides(prompt, {
        "LoadImage": {"image": name},
        "EyeForAnEye_InvertLatent": {"steps": 12, "skip_steps": 3},
    })
    # beside the workflow: decode the encoded latent itself, the image a perfect replay gives
    encode = node_id_of(prompt, "VAEEncode")
    vae = prompt[encode]["inputs"]["vae"]
    preview = node_id_of(prompt, "PreviewImage")
    prompt["expected_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": [encode, 0], "vae": vae}}
    prompt["expected_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["expected_decode", 0]}}
    result = comfy_server.run_workflow(prompt)
    (rebuilt,) = result.images(preview)
    (expected,) = result.images("expected_preview")
    rebuilt, expected = np.asarray(rebuilt, dtype=np.int16), np.asarray(expected, dtype=np.int16)
    assert rebuilt.shape == expected.shape == (64, 96, 3)
    # 8-bit previews: the latents agree to float precision, the pixels to a level or two
    assert np.abs(rebuilt - expected).max() <= 2
