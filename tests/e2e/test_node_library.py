"""The pack's nodes in ComfyUI's node library, as the frontend gets them from ``GET /object_info``.

Every node of the pack loaded (none disabled, no import failure), sits in the one category
"Eye-for-an-eye", has a display name and a description, and a tooltip on every input and
output. In the V3 ``object_info`` layout an input is ``name: [type, options]`` under
``input.required`` / ``input.optional`` (``hidden`` inputs are not shown), its tooltip is
``options["tooltip"]``; outputs have ``output_tooltips``, one per ``output``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES_DIR = REPO_ROOT / "nodes"
PACK_FOLDER = "eye_for_an_eye"
CATEGORY = "Eye-for-an-eye"
NODE_PREFIX = "EyeForAnEye_"


def _literal_assignment(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} = <literal> found")


def declared_node_ids() -> list[str]:
    """The node ids the pack's source declares: ``node_id=node_id("X")`` in each module of
    nodes.NODE_FAMILIES (read from the files, so a family that fails to import still counts)."""
    families = _literal_assignment(ast.parse((NODES_DIR / "__init__.py").read_text(encoding="utf-8")), "NODE_FAMILIES")
    prefix = _literal_assignment(ast.parse((NODES_DIR / "common.py").read_text(encoding="utf-8")), "NODE_PREFIX")
    ids = []
    for family in families:
        tree = ast.parse((NODES_DIR / f"{family}.py").read_text(encoding="utf-8"))
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            for keyword in call.keywords:
                value = keyword.value
                if (keyword.arg == "node_id" and isinstance(value, ast.Call) and getattr(value.func, "id", None) == "node_id"
                        and value.args and isinstance(value.args[0], ast.Constant)):
                    ids.append(prefix + value.args[0].value)
                elif keyword.arg == "node_id" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    ids.append(value.value)
    return ids


@pytest.fixture(scope="module")
def pack_nodes(object_info) -> dict:
    return {k: v for k, v in object_info.items()
            if k.startswith(NODE_PREFIX) or (v.get("python_module") or "").split(".")[-1] == PACK_FOLDER}


def test_no_node_family_failed(comfy_server):
    log = comfy_server.log_text().splitlines()
    failed = [line for line in log if "IMPORT FAILED" in line and PACK_FOLDER in line]
    disabled = [line for line in log if "[Eye-for-an-eye]" in line and "nodes are disabled" in line]
    assert not failed and not disabled, "\n".join(failed + disabled)


def test_every_declared_node_is_in_the_library(pack_nodes):
    declared = declared_node_ids()
    assert len(declared) == len(set(declared)), f"a node id is declared twice: {sorted(declared)}"
    assert declared, "no node_id=node_id(...) found under nodes/"
    assert sorted(pack_nodes) == sorted(declared)


def test_the_node_list_matches_the_extension(pack_nodes):
    """nodes.load_node_classes() (what comfy_entrypoint hands ComfyUI), imported here."""
    from eye_test_support import comfy_env

    comfy_env.require_comfy()
    from eye_for_an_eye.nodes import load_node_classes

    ids = [cls.define_schema().node_id for cls in load_node_classes()]
    assert sorted(ids) == sorted(pack_nodes)


def test_every_pack_node_is_in_one_category(pack_nodes):
    """All under the pack's category (the demo, several-objects and points nodes in their sub-categories), none elsewhere."""
    allowed = (CATEGORY, *(f"{CATEGORY}/{sub}" for sub in ("demo", "several objects", "points")))
    wrong = {k: v.get("category") for k, v in pack_nodes.items() if v.get("category") not in allowed}
    assert wrong == {}, f"nodes outside the {CATEGORY!r} category: {wrong}"


def test_every_pack_node_is_named_and_described(pack_nodes):
    problems = []
    for node_id, info in sorted(pack_nodes.items()):
        if not node_id.startswith(NODE_PREFIX):
            problems.append(f"{node_id}: the id lacks the {NODE_PREFIX} prefix")
        if info.get("python_module") != f"custom_nodes.{PACK_FOLDER}":
            problems.append(f"{node_id}: python_module is {info.get('python_module')!r}")
        name = (info.get("display_name") or "").strip()
        if not name or name == node_id:
            problems.append(f"{node_id}: no display name")
        if not (info.get("description") or "").strip():
            problems.append(f"{node_id}: no description")
        if info.get("deprecated") or info.get("experimental"):
            problems.append(f"{node_id}: marked deprecated / experimental")
    assert problems == [], "\n".join(problems)


def test_display_names_are_unique(object_info, pack_nodes):
    others = {v.get("display_name"): k for k, v in object_info.items() if k not in pack_nodes}
    names = [v["display_name"] for v in pack_nodes.values()]
    assert len(names) == len(set(names)), f"two pack nodes share a display name: {sorted(names)}"
    clashes = {n: others[n] for n in names if n in others}
    assert clashes == {}, f"display names of core or other nodes: {clashes}"


def test_every_input_has_a_tooltip(pack_nodes):
    missing = []
    for node_id, info in sorted(pack_nodes.items()):
        sections = info.get("input") or {}
        for section in ("required", "optional"):
            for input_name, spec in (sections.get(section) or {}).items():
                options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(options.get("tooltip") or "").strip():
                    missing.append(f"{node_id}.{input_name} ({section})")
    assert missing == [], "inputs without a tooltip:\n" + "\n".join(missing)


def test_every_output_has_a_tooltip(pack_nodes):
    missing = []
    for node_id, info in sorted(pack_nodes.items()):
        outputs = info.get("output") or []
        names = info.get("output_name") or outputs
        tooltips = info.get("output_tooltips") or []
        for index, output_type in enumerate(outputs):
            tooltip = tooltips[index] if index < len(tooltips) else None
            if not str(tooltip or "").strip():
                missing.append(f"{node_id} output {index} {names[index] if index < len(names) else output_type!r}")
    assert missing == [], "outputs without a tooltip:\n" + "\n".join(missing)
