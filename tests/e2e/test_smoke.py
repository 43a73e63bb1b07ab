"""Smoke tests of the e2e harness with core nodes only, through a real ComfyUI server."""

import json
import re
from pathlib import Path

import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

PACK_FOLDER = "eye_for_an_eye"
EXAMPLE_WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows"


def test_server_loaded_the_pack_and_the_test_nodes(comfy_server, object_info):
    log = comfy_server.log_text()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    assert not failed, "the pack failed to import:\n" + "\n".join(failed) + "\n" + comfy_server.log_tail(120)
    assert re.search(r"seconds: .*custom_nodes[/\\]eye_for_an_eye\s*$", log, re.M), \
        "ComfyUI did not list the pack among its custom nodes:\n" + comfy_server.log_tail(120)
    assert "EyeTestTinyCheckpointLoader" in object_info
    assert object_info["EyeTestTinyCheckpointLoader"]["output"] == ["MODEL", "CLIP", "VAE"]


def test_every_pack_node_family_loaded(comfy_server, object_info):
    """The pack disables a node family whose import fails with one log line; in the test
    environment every optional dependency is installed, so none may be disabled."""
    disabled = [line for line in comfy_server.log_text().splitlines()
                if "[Eye-for-an-eye]" in line and "disabled" in line]
    assert not disabled, "\n".join(disabled)
    pack_nodes = sorted(k for k, v in object_info.items()
                        if k.startswith("EyeForAnEye") or (v.get("python_module") or "").endswith(PACK_FOLDER))
    for node_id in pack_nodes:
        assert node_id.startswith("EyeForAnEye"), f"pack node id {node_id!r} lacks the EyeForAnEye prefix"
        assert object_info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER}", object_info[node_id]


def test_smoke_workflow_file_is_consistent(smoke_workflow_path):
    workflow = workflow_api.load_workflow(smoke_workflow_path)
    assert workflow_api.is_ui_workflow(workflow)
    assert workflow_api.link_problems(workflow) == []
    assert {n["type"] for n in workflow["nodes"]} >= {"CheckpointLoaderSimple", "LoadImage", "KSampler"}


def test_smoke_workflow_converts(object_info, smoke_workflow_path):
    prompt = workflow_api.to_api_prompt(smoke_workflow_path, object_info, workflow_api.TINY_CHECKPOINT)
    assert prompt["4"] == {"class_type": "EyeTestTinyCheckpointLoader", "inputs": {},
                           "_meta": {"title": "Load Checkpoint"}}
    assert prompt["10"]["inputs"] == {"image": "eye_smoke.png"}  # the "upload" value is dropped
    assert prompt["3"]["inputs"] == {
        "seed": 42, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["11", 0]}
    assert prompt["6"]["inputs"] == {"text": "a photo of a red ball on a wooden table", "clip": ["4", 1]}
    assert prompt["11"]["inputs"] == {"pixels": ["10", 0], "vae": ["4", 2]}
    assert prompt["6"]["_meta"]["title"] == "Positive prompt"


def test_smoke_workflow_runs(run_workflow, input_image, smoke_workflow_path):
    name = input_image("eye_smoke.png", width=96, height=64, seed=1)
    result = run_workflow(smoke_workflow_path, inputs={"LoadImage": {"image": name}})
    saved = result.images("SaveImage")
    previews = result.images("PreviewImage")
    assert len(saved) == 1 and len(previews) == 1
    assert saved[0].size == (96, 64)
    assert result.image_entries("9")[0]["type"] == "output"
    assert result.image_entries("12")[0]["type"] == "temp"
    assert result.image_paths("9")[0].name.startswith("smoke")
    extrema = saved[0].convert("L").getextrema()
    assert extrema[0] < extrema[1], "the decoded image is flat"


def test_a_broken_workflow_raises_the_server_error(run_workflow, smoke_workflow_path):
    with pytest.raises(AssertionError, match=r"(?s)rejected the prompt.*node 3 \(KSampler\).*steps") as info:
        run_workflow(smoke_workflow_path, inputs={"KSampler": {"steps": 0}, "LoadImage": {"image": "eye_smoke.png"}})
    print(info.value)


def test_frontend_is_served(comfy_server):
    status, body = comfy_server.request("GET", "/")
    assert status == 200 and b"<html" in body.lower()[:2000]


def test_pack_example_workflows_are_listed_as_templates(comfy_server):
    examples = sorted(p.stem for p in EXAMPLE_WORKFLOWS.glob("*.json"))
    if not examples:
        pytest.skip("example_workflows/ has no workflow yet")
    templates = comfy_server.get_json("/workflow_templates")
    assert sorted(templates.get(PACK_FOLDER, [])) == examples
    status, body = comfy_server.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{examples[0]}.json")
    assert status == 200 and workflow_api.is_ui_workflow(json.loads(body))


def test_smoke_workflow_runs_on_the_tiny_sdxl_checkpoint(run_workflow, input_image, smoke_workflow_path):
    name = input_image("eye_smoke_sdxl.png", width=64, height=64, seed=4)
    tiny_sdxl = {"CheckpointLoaderSimple": {"class_type": "EyeTestTinyCheckpointLoader",
                                            "inputs": {"family": "sdxl", "weights_seed": 1}}}
    result = run_workflow(smoke_workflow_path, substitutions=tiny_sdxl,
                          inputs={"LoadImage": {"image": name}, "KSampler": {"steps": 2}})
    assert [img.size for img in result.images("SaveImage")] == [(64, 64)]


def test_an_execution_error_names_the_node_and_the_exception(run_workflow, comfy_server, smoke_workflow_path):
    (comfy_server.input_dir / "eye_not_an_image.png").write_bytes(b"not a png")
    with pytest.raises(AssertionError, match=r"(?s)failed prompt.*node 10 \(LoadImage\).*File ") as info:
        run_workflow(smoke_workflow_path, inputs={"LoadImage": {"image": "eye_not_an_image.png"}})
    print(info.value)


@pytest.mark.parametrize("workflow, node, inputs", [
    ("appearance_transfer_demo.json", "EyeForAnEye_InvertLatent", {"steps": 10, "skip_steps": 10}),
    ("several_objects_demo.json", "EyeForAnEye_AppearanceTransfer", {"steps": 10, "skip_steps": 12}),
])
def test_skip_steps_not_below_steps_is_refused_when_queued_before_any_node_runs(comfy_server, object_info, workflow,
                                                                                node, inputs):
    prompt = workflow_api.to_api_prompt(workflow_api.load_workflow(EXAMPLE_WORKFLOWS / workflow), object_info)
    workflow_api.apply_overrides(prompt, {node: inputs})
    status, reply = comfy_server.post_json("/prompt", {"prompt": prompt, "client_id": comfy_server.client_id})
    # the prompt's validation answers (ComfyUI still runs the outputs that do not depend on the node)
    refused = {i: e for i, e in (reply.get("node_errors") or {}).items() if e.get("class_type") == node}
    assert refused, (status, reply)
    for error in refused.values():
        details = " ".join(e.get("details", "") for e in error["errors"])
        assert re.search(r"skip_steps \(\d+\) must be smaller than steps \(10\); lower skip_steps", details), details
