"""example_workflows/segment_preview.json on the real server, with the random-weight SAM-HQ vit_tiny.

The harness (conftest.put_test_models) writes ``sam_hq_vit_tiny.pth`` into a ``sams`` folder
listed in the server's extra_model_paths.yaml, so the real Load SAM-HQ Model finds it.
"""

from pathlib import Path

import numpy as np
import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parents[2] / "example_workflows" / "segment_preview.json"
LOADER, SEGMENT = "EyeForAnEye_LoadSAMHQModel", "EyeForAnEye_SAMHQSegment"
FIRST_MASK_COLOUR = (0, 158, 115)  # eye_core.visualize.MASK_COLOURS[0] in 8 bits


def test_the_server_lists_the_sam_nodes_and_the_checkpoint(object_info):
    loader, segment = object_info[LOADER], object_info[SEGMENT]
    assert loader["display_name"] == "Load SAM-HQ Model (Eye-for-an-eye)"
    assert segment["display_name"] == "SAM-HQ Segment (Eye-for-an-eye)"
    assert loader["category"] == segment["category"] == "Eye-for-an-eye"
    checkpoint = loader["input"]["required"]["checkpoint"]
    assert "sam_hq_vit_tiny.pth" in checkpoint[1]["options"]
    assert loader["output"] == ["EYE_SAM_MODEL"]
    assert segment["output"] == ["MASK", "MASK", "IMAGE"]
    assert segment["output_name"] == ["masks", "union", "preview"]
    for section in segment["input"].values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), f"{name} has no tooltip"


# The workflow names sam_hq_vit_l.pth (the README's choice); the server has the random vit_tiny one.
TINY = {LOADER: {"checkpoint": "sam_hq_vit_tiny.pth"}}


@pytest.mark.parametrize("width, height", [(128, 96), (200, 320)])
def test_segment_preview_workflow_draws_its_relative_box_on_any_image_size(run_workflow, input_image, width, height):
    name = input_image(f"segment_preview_{width}x{height}.png", width=width, height=height, seed=3)
    result = run_workflow(WORKFLOW, inputs={"LoadImage": {"image": name}, **TINY})
    (overlay,) = result.images("PreviewImage")
    (union,) = result.images("MaskPreview")
    assert overlay.size == union.size == (width, height)
    pixels = np.asarray(overlay.convert("RGB"), dtype=np.int16)
    # the box 0.125,0.125,0.875,0.875 is the centre three quarters of any image: its outline starts an eighth in
    left, top, right, bottom = width // 8, height // 8, width * 7 // 8, height * 7 // 8
    assert np.abs(pixels[top, left + 4:right - 4] - FIRST_MASK_COLOUR).max() <= 1
    assert np.abs(pixels[top + 4:bottom - 4, left] - FIRST_MASK_COLOUR).max() <= 1
    assert np.abs(pixels[top + 4:bottom - 4, right - 1] - FIRST_MASK_COLOUR).max() <= 1
    mask = np.asarray(union.convert("L"))
    assert set(np.unique(mask)) <= {0, 255}


def test_a_zero_area_box_is_reported_by_the_server(run_workflow, input_image):
    name = input_image("segment_zero_box.png", width=64, height=64, seed=4)
    # the node is named, and the exception type is the pack's, not the install path
    with pytest.raises(AssertionError, match=(r"(?s)SAMHQSegment\): eye_for_an_eye\.PromptError: SAM-HQ Segment: "
                                              r"boxes: box 1 \('10,10,10,40'\) has zero area")):
        run_workflow(WORKFLOW, inputs={"LoadImage": {"image": name}, SEGMENT: {"boxes": "10,10,10,40"}, **TINY})


def test_workflow_converts_with_the_saved_widgets(object_info):
    prompt = workflow_api.to_api_prompt(WORKFLOW, object_info, workflow_api.TINY_CHECKPOINT)
    assert prompt["1"]["inputs"] == {"checkpoint": "sam_hq_vit_l.pth", "architecture": "auto (from file name)",
                                     "device": "auto"}
    assert prompt["3"]["inputs"] == {"sam_model": ["1", 0], "image": ["2", 0], "boxes": "0.125,0.125,0.875,0.875",
                                     "positive_points": "", "negative_points": "", "hq_token_only": True,
                                     "keep_inside_boxes": False}
    assert prompt["4"]["inputs"] == {"images": ["3", 2]} and prompt["5"]["inputs"] == {"mask": ["3", 1]}
    assert "6" not in prompt  # the note is frontend-only
