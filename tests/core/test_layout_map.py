"""The README's map of the layout names every folder and core/adapter module that exists, and only those."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAP = README[README.index("## Development: where things live"):README.index("## Tests")]


def listed_modules(package: str) -> set[str]:
    line = re.search(rf"^- `{package}/`: (.*?)(?=^- |\n\n)", MAP, re.M | re.S).group(1)
    return set(re.findall(r"`(\w+)`", line))


def test_every_core_and_adapter_module_is_on_the_map():
    for package in ("eye_core", "comfy_adapter"):
        modules = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
        assert listed_modules(package) == modules, package


def test_every_folder_on_the_map_exists():
    folders = set(re.findall(r"^\| `([\w/.]+)` \|", MAP, re.M))
    assert {"nodes/", "comfy_adapter/", "eye_core/", "eye_demo/", "tests/"} <= folders
    for folder in folders:
        assert (ROOT / folder).exists(), folder
    top = {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and
           (p / "__init__.py").exists()}
    assert top <= folders, top - folders
