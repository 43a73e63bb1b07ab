"""Every example workflow loads in the real ComfyUI frontend (headless Chromium).

Each ``example_workflows/*.json`` is fetched from the server's workflow-templates route and
loaded with ``app.loadGraphData``, as the frontend's template browser does. Then, in the
page: no node type is missing (the frontend's own missing-nodes list, its node registry, no
open dialog), every link joins existing nodes and slots of compatible types and every
required socket is connected, no error reaches the console while it loads, the widgets
hold the saved values, the prompt the frontend would queue (``app.graphToPrompt``) is the
one the e2e harness builds from the file, and no two nodes overlap. A screenshot of each
loaded graph is saved to tests/_artifacts/browser/<name>.png ($EYE_BROWSER_ARTIFACTS).

The workflows are listed when the tests are collected: a workflow added to the folder is
tested without touching this file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from eye_test_support import workflow_api

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = [p.stem for p in sorted(EXAMPLES.glob("*.json"))]
PACK_FOLDER = "eye_for_an_eye"
PACK_NODE_PREFIX = "EyeForAnEye_"
# How the pack shows up in a console message: node ids, folder / logger name, category.
PACK_PATTERN = re.compile(r"EyeForAnEye|eye_for_an_eye|Eye-for-an-eye", re.I)
FILE_NAME = re.compile(r"\.[A-Za-z0-9]{2,12}$")  # a combo value naming a user's file
OVERLAP_TOLERANCE = 4.0  # canvas units two node boxes may share (touching borders)

workflows = pytest.mark.parametrize("name", NAMES)


def saved(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def _link_rows(workflow: dict) -> dict[int, tuple]:
    rows = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            row = (link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link.get("type"))
        else:
            row = tuple(link[:6])
        rows[int(row[0])] = (int(row[1]), int(row[2]), int(row[3]), int(row[4]), row[5])
    return rows


def _compatible(a, b) -> bool:
    """LiteGraph's isValidConnection: equal, a wildcard, or overlapping comma lists."""
    a = "" if a in (None, "*", "", 0) else str(a)
    b = "" if b in (None, "*", "", 0) else str(b)
    if not a or not b or a == b:
        return True
    return bool({t.strip().lower() for t in a.split(",")} & {t.strip().lower() for t in b.split(",")})


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# --- the graph loads ---------------------------------------------------------------------------

def test_examples_exist():
    assert NAMES, "example_workflows/ has no workflow"


@workflows
def test_no_missing_node_types(name, load_example):
    report = load_example(name)
    workflow = saved(name)
    assert report.unregistered == [], f"{name}: the frontend has no node type {report.unregistered}"
    assert report.missing == [], f"{name}: loadGraphData reported missing node types {report.missing}"
    broken = [(n["id"], n["type"]) for n in report.nodes if not n["registered"] or n["hasErrors"]]
    assert broken == [], f"{name}: nodes the frontend could not create: {broken}"
    assert report.dialogs == [], f"{name}: a dialog opened while loading:\n" + "\n---\n".join(report.dialogs)
    assert sorted((n["id"], n["type"]) for n in report.nodes) == sorted((n["id"], n["type"]) for n in workflow["nodes"])


@workflows
def test_links_are_intact(name, load_example, object_info):
    report = load_example(name)
    workflow = saved(name)
    nodes = {n["id"]: n for n in report.nodes}
    problems = []
    loaded = {}
    for link in report.links:
        lid = int(link["id"])
        loaded[lid] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link["type"])
        origin, target = nodes.get(link["origin_id"]), nodes.get(link["target_id"])
        if origin is None or target is None:
            problems.append(f"link {lid}: node {link['origin_id'] if origin is None else link['target_id']} does not exist")
            continue
        slot, tslot = link["origin_slot"], link["target_slot"]
        if not 0 <= slot < len(origin["outputs"]):
            problems.append(f"link {lid}: node {origin['id']} ({origin['type']}) has no output {slot}")
            continue
        if not 0 <= tslot < len(target["inputs"]):
            problems.append(f"link {lid}: node {target['id']} ({target['type']}) has no input {tslot}")
            continue
        out, inp = origin["outputs"][slot], target["inputs"][tslot]
        if lid not in (out["links"] or []):
            problems.append(f"link {lid}: missing from output {out['name']!r} of node {origin['id']} ({origin['type']})")
        if inp["link"] != lid:
            problems.append(f"link {lid}: input {inp['name']!r} of node {target['id']} ({target['type']}) holds link {inp['link']}")
        if not (_compatible(out["type"], inp["type"]) and _compatible(link["type"], inp["type"])):
            problems.append(f"link {lid}: {origin['type']}.{out['name']} ({out['type']}) -> "
                            f"{target['type']}.{inp['name']} ({inp['type']}), link type {link['type']}")
    for node in report.nodes:
        for inp in node["inputs"]:
            if inp["link"] is not None and int(inp["link"]) not in loaded:
                problems.append(f"node {node['id']} ({node['type']}) input {inp['name']!r}: link {inp['link']} does not exist")
    expected = _link_rows(workflow)
    if loaded.keys() != expected.keys():
        problems.append(f"links lost on load: {sorted(expected.keys() - loaded.keys())}, "
                        f"added: {sorted(loaded.keys() - expected.keys())}")
    for lid in expected.keys() & loaded.keys():
        if expected[lid][:4] != tuple(loaded[lid][:4]):
            problems.append(f"link {lid}: saved {expected[lid][:4]}, loaded {loaded[lid][:4]}")
    # every required socket (not a widget) of an active node is connected
    for node in report.nodes:
        node_def = object_info.get(node["type"])
        if node_def is None or node["mode"] in (workflow_api.MODE_NEVER, workflow_api.MODE_BYPASS):
            continue
        linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
        for input_name, input_type, options, optional in workflow_api.ordered_inputs(node_def):
            if optional or workflow_api.is_widget_input(input_type, options):
                continue
            if input_name not in linked:
                problems.append(f"node {node['id']} ({node['type']}): required input {input_name!r} is not connected")
    assert problems == [], f"{name}:\n  " + "\n  ".join(problems)


@workflows
def test_no_console_errors(name, load_example, frontend):
    report = load_example(name)
    during = [m for m in report.messages if m.kind in ("pageerror", "console.error")]
    assert during == [], f"{name}: errors in the page while it loaded:\n" + "\n".join(map(str, during))
    pack_warnings = [m for m in report.messages if m.kind == "console.warning" and PACK_PATTERN.search(m.text)]
    assert pack_warnings == [], f"{name}: warnings about the pack while it loaded:\n" + "\n".join(map(str, pack_warnings))
    for m in report.messages:
        if m.kind == "console.warning":
            print(f"{name}: {m}")


def test_page_start_has_no_error_from_the_pack(frontend):
    """Before any workflow: the frontend's own start-up may log (it does, without the pack:
    missing user files, a settings race); nothing may come from the pack."""
    errors = [m for m in frontend.startup_messages if m.kind in ("pageerror", "console.error", "console.warning")]
    ours = [m for m in errors if PACK_PATTERN.search(m.text) or PACK_PATTERN.search(m.location)]
    for m in errors:
        print(f"start-up: {m}")
    assert ours == [], "the pack's errors when the page started:\n" + "\n".join(map(str, ours))


# --- what the graph holds -----------------------------------------------------------------------

@workflows
def test_widget_values_load_as_saved(name, load_example, object_info):
    report = load_example(name)
    problems = []
    for node in saved(name)["nodes"]:
        shown = report.node(node["id"])
        values = node.get("widgets_values")
        if shown is None or values is None:
            continue
        where = f"node {node['id']} ({node['type']})"
        if not _same(shown["serializedWidgetsValues"], values):
            problems.append(f"{where}: widgets_values saved {values!r}, the frontend holds "
                            f"{shown['serializedWidgetsValues']!r}")
        if not node["type"].startswith(PACK_NODE_PREFIX) or node["type"] not in object_info:
            continue
        widgets = {w["name"]: w for w in shown["widgets"]}
        try:
            by_name = workflow_api.widget_values_by_name(node, object_info[node["type"]])
        except workflow_api.WorkflowConversionError as error:
            problems.append(str(error))
            continue
        for input_name, value in by_name.items():
            widget = widgets.get(input_name)
            if widget is None:
                problems.append(f"{where}: the frontend shows no widget {input_name!r} (saved value {value!r})")
                continue
            if not _same(widget["value"], value):
                problems.append(f"{where}: widget {input_name!r} shows {widget['value']!r}, the file means {value!r}")
            if widget["values"] is not None and widget["value"] not in widget["values"] and not (
                    isinstance(widget["value"], str) and FILE_NAME.search(widget["value"])):
                problems.append(f"{where}: widget {input_name!r} = {widget['value']!r} is not one of {widget['values']}")
            number = widget["value"]
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                if widget["min"] is not None and number < widget["min"] or widget["max"] is not None and number > widget["max"]:
                    problems.append(f"{where}: widget {input_name!r} = {number} is outside [{widget['min']}, {widget['max']}]")
        extra = [w["name"] for w in shown["widgets"] if w["serialize"] and w["name"] not in by_name
                 and w["name"] not in ("control_after_generate", "control_filter_list", "upload")]
        if extra:
            problems.append(f"{where}: frontend widgets the node definition does not explain: {extra}")
    assert problems == [], f"{name}:\n  " + "\n  ".join(problems)


@workflows
def test_frontend_prompt_matches_the_harness(name, load_example, object_info):
    """``app.graphToPrompt`` (what the Run button queues) equals workflow_api's conversion of
    the file (what the e2e tests queue), node by node."""
    report = load_example(name)
    assert report.prompt_error is None, report.prompt_error
    ours = workflow_api.to_api_prompt(saved(name), object_info, {})
    theirs = report.prompt
    problems = []
    if set(ours) != set(theirs):
        problems.append(f"nodes: harness {sorted(ours, key=int)}, frontend {sorted(theirs, key=int)}")
    for node_id in sorted(set(ours) & set(theirs), key=int):
        a, b = ours[node_id], theirs[node_id]
        if a["class_type"] != b["class_type"]:
            problems.append(f"node {node_id}: class_type {a['class_type']} vs {b['class_type']}")
        for key in sorted(set(a["inputs"]) | set(b["inputs"])):
            if not _same(a["inputs"].get(key, "<absent>"), b["inputs"].get(key, "<absent>")):
                problems.append(f"node {node_id} ({a['class_type']}) input {key!r}: harness "
                                f"{a['inputs'].get(key, '<absent>')!r}, frontend {b['inputs'].get(key, '<absent>')!r}")
    assert problems == [], f"{name}:\n  " + "\n  ".join(problems)


@workflows
def test_nodes_do_not_overlap(name, load_example):
    """With the sizes the frontend gives the nodes (it grows each to fit its widgets)."""
    report = load_example(name)
    boxes = [(n["id"], n["title"], n["rect"]) for n in report.nodes]
    overlaps = []
    for i, (id_a, title_a, a) in enumerate(boxes):
        for id_b, title_b, b in boxes[i + 1:]:
            dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
            dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
            if dx > OVERLAP_TOLERANCE and dy > OVERLAP_TOLERANCE:
                overlaps.append(f"node {id_a} {title_a!r} and node {id_b} {title_b!r} overlap by {dx:.0f} x {dy:.0f}")
    assert overlaps == [], f"{name}:\n  " + "\n  ".join(overlaps)


@workflows
def test_nodes_open_inside_the_view(name, load_example):
    """The view the frontend restores on load shows every node's title bar: none is cut off at the top or
    left canvas edge (canvas point p is drawn at (p + offset) * scale)."""
    report = load_example(name)
    assert report.view is not None
    (dx, dy), scale = report.view["offset"], report.view["scale"]
    cut = [f"node {n['id']} {n['title']!r} at screen ({(n['rect'][0] + dx) * scale:.0f}, "
           f"{(n['rect'][1] + dy) * scale:.0f})" for n in report.nodes
           if (n["rect"][0] + dx) * scale < -1 or (n["rect"][1] + dy) * scale < -1]
    assert cut == [], f"{name}: cut off at the canvas edge when it opens:\n  " + "\n  ".join(cut)
