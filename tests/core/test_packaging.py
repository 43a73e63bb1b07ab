"""pyproject.toml declares the licence and the node API the way current tools expect."""

import re
import tomllib
from pathlib import Path

import pytest

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


def node_api_versions() -> set[str]:
    """The versioned node APIs (comfy_api.vX_Y_Z) the pack's code imports."""
    found = set()
    for path in ROOT.rglob("*.py"):
        if "tests" not in path.relative_to(ROOT).parts:
            found |= set(re.findall(r"comfy_api\.(v\d+_\d+_\d+)", path.read_text(encoding="utf-8")))
    return found


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


def test_the_pack_writes_against_one_pinned_node_api():
    # comfy_api.latest is marked unstable by ComfyUI; one versioned API for every node module
    assert node_api_versions() == {"v0_0_2"}


def test_the_required_comfyui_has_the_node_api_the_pack_imports():
    """requires-comfyui is met by the ComfyUI the tests run against, and that ComfyUI ships the API."""
    from eye_test_support.comfy_env import comfyui_available, comfyui_path, skip_reason

    if not comfyui_available():
        pytest.skip(skip_reason())
    root = comfyui_path()
    required = PYPROJECT["tool"]["comfy"]["requires-comfyui"]
    assert required.startswith(">="), required
    installed = re.search(r'__version__ = "([^"]+)"', (root / "comfyui_version.py").read_text()).group(1)
    assert version_tuple(installed) >= version_tuple(required[2:]), (installed, required)
    for api in node_api_versions():
        assert (root / "comfy_api" / api).is_dir(), f"ComfyUI {installed} has no comfy_api.{api}"


def requirement_names(lines) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_and_pyproject_tell_one_story():
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert requirement_names(requirements) == requirement_names(PYPROJECT["project"]["dependencies"])
    pinned = [r for r in requirements + PYPROJECT["project"]["dependencies"]
              if not r.lstrip().startswith("#") and re.search(r"[<>=!~]", r)]
    assert not pinned, f"pins break other packs sharing ComfyUI's environment: {pinned}"
    assert not {"torch", "torchvision", "safetensors"} & set(requirement_names(requirements))


def test_every_package_folder_ships():
    """setuptools lists packages by hand (the root is the package): a new folder must be added there."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {"eye_for_an_eye." + ".".join(p.parent.relative_to(ROOT).parts)
               for p in ROOT.rglob("__init__.py")
               if p.parent != ROOT and not {"tests", ".git", "example_workflows"} & set(p.relative_to(ROOT).parts)}
    missing = folders - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
