"""The converter against the real /object_info, and real workflows run through the server:
frontend-only nodes (PrimitiveNode, Reroute, MarkdownNote), a bypassed and a muted node, a
widget turned into a socket fed by a V3 node, and ComfyUI's own image2image template."""

import importlib.util
from pathlib import Path

import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parent / "workflows"


def test_graph_features_convert_like_the_frontend(object_info):
    workflow = workflow_api.load_workflow(WORKFLOWS / "graph_features.json")
    assert workflow_api.link_problems(workflow) == []
    prompt = workflow_api.ui_to_api(workflow, object_info, workflow_api.TINY_CHECKPOINT)
    # frontend-only nodes, the bypassed ImageInvert and the muted PreviewImage are gone
    assert sorted(prompt, key=int) == ["3", "4", "6", "7", "8", "9", "10", "11", "12", "24"]
    ksampler = prompt["3"]["inputs"]
    assert ksampler["seed"] == 1234  # from the PrimitiveNode, not the stale widget value 42
    assert ksampler["steps"] == ["24", 0]  # converted widget linked to PrimitiveInt
    assert prompt["24"] == {"class_type": "PrimitiveInt", "inputs": {"value": 2}, "_meta": {"title": "steps"}}
    assert prompt["8"]["inputs"]["vae"] == ["4", 2]  # through the Reroute
    assert prompt["11"]["inputs"]["pixels"] == ["10", 0]  # around the bypassed ImageInvert


def test_graph_features_run(run_workflow, input_image):
    name = input_image("eye_features.png", width=64, height=64, seed=2)
    result = run_workflow(WORKFLOWS / "graph_features.json", inputs={"LoadImage": {"image": name}})
    assert set(result) == {"9", "12"}
    assert [img.size for img in result.images("9")] == [(64, 64)]


def _template(name):
    spec = importlib.util.find_spec("comfyui_workflow_templates")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "templates" / name
    return path if path.is_file() else None


def test_comfyui_image2image_template_runs_on_the_tiny_checkpoint(run_workflow, input_image):
    """A workflow saved by the real frontend (ComfyUI's own template), not written by us."""
    path = _template("image2image.json")
    if path is None:
        pytest.skip("comfyui_workflow_templates with image2image.json is not installed")
    name = input_image("eye_template.png", width=96, height=96, seed=3)
    result = run_workflow(path, inputs={
        "LoadImage": {"image": name},
        "ImageScaleToTotalPixels": {"megapixels": 0.01},  # ~100x100 px
        "KSampler": {"steps": 2},
        "SaveImage": {"filename_prefix": "eye_e2e/image2image"},
    })
    images = result.images("SaveImage")
    assert len(images) == 1 and min(images[0].size) >= 64
