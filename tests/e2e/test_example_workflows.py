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
    "appearance_transfer_simple.json": {"EyeForAnEye_AppearanceTransfer": {"steps": 10, "skip_steps": 3},
                                        "EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny_full_masks.pth"}},
    "segment_preview.json": {"EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny.pth"}},
    "several_objects_demo.json": {"EyeForAnEye_AppearanceTransfer": {"steps": 10, "skip_steps": 3}},
    "points_demo.json": {**_FAST_INVERSION,
                         "EyeForAnEye_FindCorrespondingPoints": {"steps": 3, "embeddings": 1, "crops": 2}},
    "several_objects_sam.json": {"EyeForAnEye_AppearanceTransfer": {"steps": 10, "skip_steps": 3},
                                 "EyeForAnEye_LoadSAMHQModel": {"checkpoint": "sam_hq_vit_tiny_full_masks.pth"}},
}
IMAGE_SIZE = (128, 128)
NODE_TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
SAM_CHECKPOINT = "sam_hq_vit_l.pth"  # the README's recommendation, nodes.sam.DEFAULT_CHECKPOINT


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_workflow_is_consistent(path):
    workflow = workflow_api.load_workflow(path)
    assert workflow_api.is_ui_workflow(workflow), f"{path.name} is not a UI-format workflow"
    assert workflow_api.link_problems(workflow) == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_workflow_opens_with_every_node_in_view(path):
    """At the view the file saves (extra.ds), no node's title bar starts above or left of the canvas."""
    workflow = workflow_api.load_workflow(path)
    view = (workflow.get("extra") or {}).get("ds") or {"offset": [0, 0], "scale": 1}
    (dx, dy), scale = view["offset"], view["scale"]
    cut = [(n["id"], n["type"]) for n in workflow["nodes"]
           if (n["pos"][0] + dx) * scale < 0 or (n["pos"][1] - NODE_TITLE_HEIGHT + dy) * scale < 0]
    assert cut == [], f"{path.name}: nodes cut off at the canvas edge when it opens: {cut}"


def test_sam_workflows_share_one_checkpoint_and_boxes_that_fit_any_image():
    from eye_test_support.comfy_env import require_comfy

    require_comfy()
    from eye_for_an_eye.eye_core.masks import build_prompts
    from eye_for_an_eye.nodes.sam import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT == SAM_CHECKPOINT
    seen = 0
    for path in EXAMPLE_FILES:
        for node in workflow_api.load_workflow(path)["nodes"]:
            if node["type"] == "EyeForAnEye_LoadSAMHQModel":
                assert node["widgets_values"][0] == SAM_CHECKPOINT, path.name
                seen += 1
            if node["type"] == "EyeForAnEye_SAMHQSegment" and node["widgets_values"][0]:
                for width, height in ((128, 96), (512, 512), (1216, 832)):
                    boxes = build_prompts(node["widgets_values"][0], "", "", width, height).boxes.tolist()
                    # inside the image, whatever its size; one box covers its centre, several share it out
                    for box in boxes:
                        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
                    if len(boxes) == 1:
                        box = boxes[0]
                        assert box[0] < width / 2 < box[2] and box[1] < height / 2 < box[3]
                    else:
                        assert min(b[0] for b in boxes) < width / 4 and max(b[2] for b in boxes) > 3 * width / 4
    assert seen >= 2


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_inversions_draw_independent_noise(path):
    """Two Invert Latent nodes of one workflow (a target and a reference) never share a noise seed."""
    seeds = [node["widgets_values"][3] for node in workflow_api.load_workflow(path)["nodes"]
             if node["type"] == "EyeForAnEye_InvertLatent"]
    assert len(seeds) == len(set(seeds)), f"{path.name}: Invert Latent seeds {seeds}"


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


OFFICIAL_EXAMPLES = ("appearance_transfer.json", "appearance_transfer_demo.json")


def _links_into(workflow, node):
    """{input name: (origin node, origin slot)} of a UI-format node."""
    origin = {link[0]: (link[1], link[2]) for link in workflow["links"]}
    return {i["name"]: origin[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}


@pytest.mark.parametrize("name", OFFICIAL_EXAMPLES)
def test_the_official_modular_examples_run_the_official_preset(name):
    """Masks into the patch and the sampler, per-step matching (no correspondence into the patch), the official
    schedule and guidance, and one model (with the authors' FreeU on real checkpoints) for inversion and transfer."""
    workflow = workflow_api.load_workflow(EXAMPLES / name)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node)
    (apply,) = by_type["EyeForAnEye_ApplyAppearanceTransfer"]
    (sampler,) = by_type["EyeForAnEye_TransferSampler"]
    into_apply, into_sampler = _links_into(workflow, apply), _links_into(workflow, sampler)
    assert "correspondence" not in into_apply
    assert {"target_mask", "reference_mask"} <= set(into_apply) and {"target_mask", "reference_mask"} <= set(
        into_sampler)
    assert apply["widgets_values"] == ["feature", "two finest decoder levels", 0.1618, 1.0, 0.5882, 0.0735,
                                       "official (asymmetric)", 1.0]
    assert sampler["widgets_values"] == [0.7206, 1.0]
    inversions = by_type["EyeForAnEye_InvertLatent"]
    assert len(inversions) == 2 and all(n["widgets_values"][:3] == [100, 3.5, "edit-friendly DDPM"]
                                        and n["widgets_values"][5] == 32 for n in inversions)
    models = {_links_into(workflow, n)["model"] for n in inversions} | {into_apply["model"]}
    assert len(models) == 1  # the same model (and patches) everywhere
    (model_node, _), = models
    if "CheckpointLoaderSimple" in by_type:  # a real checkpoint: the authors' FreeU in front
        assert nodes[model_node]["type"] == "EyeForAnEye_AuthorsFreeU"
        assert nodes[model_node]["widgets_values"] == [1.2, 1.4, 0.9, 0.2]
    (guider,) = by_type["CFGGuider"]
    assert guider["widgets_values"] == [2.5]


def test_the_simple_example_runs_the_official_preset():
    workflow = workflow_api.load_workflow(EXAMPLES / "appearance_transfer_simple.json")
    (node,) = [n for n in workflow["nodes"] if n["type"] == "EyeForAnEye_AppearanceTransfer"]
    assert node["widgets_values"] == [100, 32, 3.5, 2.5, "per-step matching (official)", 0, "fixed",
                                      "authors' FreeU (official)", "", 0, False]
    links = _links_into(workflow, node)
    assert {"target_mask", "reference_mask"} <= set(links)
    assert {n["type"] for n in workflow["nodes"]}.isdisjoint({"FreeU", "FreeU_V2", "EyeForAnEye_AuthorsFreeU"})
