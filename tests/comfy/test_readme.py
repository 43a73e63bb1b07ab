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
    assert len(classes) == 9  # inversion 2, features 1, correspondence 1, transfer 3, SAM-HQ 2
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
