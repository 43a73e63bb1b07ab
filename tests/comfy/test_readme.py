"""The README's node reference and test command stay true to the code."""

import re
from pathlib import Path

from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.nodes import load_node_classes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(node_id):
    start = README.index(f"(`{node_id}`)")
    end = README.find("\n### ", start)
    return README[start:end if end != -1 else len(README)]


def test_every_node_and_input_is_documented():
    classes = load_node_classes()
    assert len(classes) == 19  # inversion 2, features 1, correspondence 1, transfer 3, several objects 5, points 2,
    # FreeU 1, SAM-HQ 2, demo 2
    for cls in classes:
        schema = cls.GET_SCHEMA()
        text = section(schema.node_id)
        for item in schema.inputs:
            assert re.search(rf"^\| {re.escape(item.id)}( \(optional\))? \|", text, re.M), (schema.node_id, item.id)
        for output in schema.outputs:
            assert f"| {output.display_name} |" in text, (schema.node_id, output.display_name)


def test_readme_test_command_is_what_ci_runs():
    assert "python -m pytest" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'exec "\$py" -m pytest', ci)


def _rows(text, header):
    """{first cell: last cell} of the table under ``| header |`` in a node's section ({} if it has none)."""
    if f"| {header} |" not in text:
        return {}
    start = text.index(f"| {header} |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[re.sub(r" \(optional\)$", "", cells[0])] = cells[-1]
    return rows


def test_readme_tables_say_what_the_tooltips_say():
    """One source of truth: each README table cell is its input's or output's tooltip, word for word."""
    problems = []
    for cls in load_node_classes():
        schema = cls.GET_SCHEMA()
        if f"(`{schema.node_id}`)" not in README:
            continue  # documented or not: test_every_node_and_input_is_documented's business
        text = section(schema.node_id)
        inputs, outputs = _rows(text, "input"), _rows(text, "output")
        for item in schema.inputs:
            if inputs.get(item.id) != item.tooltip:
                problems.append(f"{schema.node_id} input {item.id}:\n  README:  {inputs.get(item.id)}\n"
                                f"  tooltip: {item.tooltip}")
        for output in schema.outputs:
            if outputs.get(output.display_name) != output.tooltip:
                problems.append(f"{schema.node_id} output {output.display_name}:\n  README:  "
                                f"{outputs.get(output.display_name)}\n  tooltip: {output.tooltip}")
    assert problems == [], "\n".join(problems)


def test_memory_figures_have_one_source():
    from eye_for_an_eye.eye_core.feature_bank import SD15_512_BYTES_PER_STEP
    from eye_for_an_eye.nodes.inversion import feature_memory_text

    # the figure is computed from the bank's per-step size (test_inversion_nodes checks that against
    # what the bank really keeps); the README must quote it, not a figure of its own
    text = feature_memory_text()
    assert f"{SD15_512_BYTES_PER_STEP / 2**20:.1f} MiB per step" in text
    troubleshooting = README[README.index("## Troubleshooting"):README.index("## Performance")]
    assert text in section("EyeForAnEye_InvertLatent") and text in troubleshooting
    for stale in ("1.5 GiB", "3 GiB", "1.3 GiB"):
        assert stale not in README, stale
