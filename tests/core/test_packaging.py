"""pyproject.toml declares the licence and the node API the way current tools expect."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_an_spdx_string_with_its_file():
    project = PYPROJECT["project"]
    # the table form (license = { file = ... }) is deprecated by PEP 639 and setuptools >= 77
    assert project["license"] == "GPL-3.0-or-later"
    assert project["license-files"] == ["LICENSE"]
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Version 3, 29 June 2007" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))  # no duplicate licence


def test_build_backend_understands_the_license_string():
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    version = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert version and int(version.group(1)) >= 77


def test_the_comfyui_that_has_the_pinned_node_api_is_required():
    # comfy_api.v0_0_2, which the nodes import, ships with ComfyUI 0.3.64 (the version tested against)
    assert PYPROJECT["tool"]["comfy"]["requires-comfyui"] == ">=0.3.64"
