"""Every workflow in the pack's example_workflows/ folder runs on the real server.

Each workflow is converted exactly as saved (strict: its widgets must fit the current node
definitions), CheckpointLoaderSimple is replaced by the tiny random-weight checkpoint, and
every LoadImage gets its own procedural picture. Add per-workflow input overrides (fewer
steps, smaller images) to EXAMPLE_OVERRIDES: ``{file name: {node id | title | class_type:
{input: value}}}``.
"""

from pathlib import Path

import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
# Shorter schedules and ensembles so every example runs in seconds on the tiny model; the
# random vit_tiny SAM-HQ checkpoint (a seed whose masks cover the box) stands in for the
# vit_l one the transfer example names.
_FAST_INVERSION = {"EyeForAnEye_InvertLatent": {"steps": 10, "skip_steps": 3}}
_FAST_FEATURES = {"EyeForAnEye_ExtractUNetFeatures": {"ensemble_size": 2}}
EXAMPLE_OVERRIDES: dict[str, dict] = {
    "inversion_round_trip.json": _FAST_INVERSION,
    "correspondence_preview.json": _FAST_FEATURES,
    "appearance_transfer.json": {**_FAST_INVERSION, **_FAST_FEATURES,
                                 "EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny_full_masks.pth"}},
    "appearance_transfer_simple.json": {"EyeForAnEye_AppearanceTransfer": {"steps": 10, "skip_steps": 3}},
}
IMAGE_SIZE = (128, 128)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_workflow_is_consistent(path):
    workflow = workflow_api.load_workflow(path)
    assert workflow_api.is_ui_workflow(workflow), f"{path.name} is not a UI-format workflow"
    assert workflow_api.link_problems(workflow) == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_workflow_runs(path, run_workflow, object_info, input_image):
    workflow = workflow_api.load_workflow(path)
    missing = sorted({n["type"] for n in workflow["nodes"]} - set(object_info)
                     - workflow_api.FRONTEND_ONLY_TYPES - set(workflow_api.TINY_CHECKPOINT))
    assert not missing, f"{path.name} uses node types the server does not have: {missing}"
    inputs = {}
    for index, node in enumerate(n for n in workflow["nodes"] if n["type"] == "LoadImage"):
        name = input_image(f"{path.stem}_{node['id']}.png", *IMAGE_SIZE, seed=100 + index)
        inputs[str(node["id"])] = {"image": name}
    inputs.update(EXAMPLE_OVERRIDES.get(path.name, {}))
    result = run_workflow(path, inputs=inputs)
    assert result, f"{path.name} produced no outputs"
