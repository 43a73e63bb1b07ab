"""Import this checkout of the pack as the package ``eye_for_an_eye``.

The pack's root folder is a ComfyUI custom-node package (``__init__.py`` at the top), so
tests and benchmarks register it under a fixed name from the checkout they belong to,
whatever the clone's folder is called and whatever else is installed.
"""

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
NAME = "eye_for_an_eye"


def load_pack(root: Path = REPO_ROOT):
    """The package ``eye_for_an_eye`` loaded from ``root`` (reused when it already is)."""
    existing = sys.modules.get(NAME)
    if existing is not None and Path(existing.__file__).resolve().parent == Path(root).resolve():
        return existing
    spec = importlib.util.spec_from_file_location(NAME, Path(root) / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module


def load_parity_harness():
    """tests/parity/run_parity.py as a module (a script folder, not a package), for the tests that drive it."""
    path = REPO_ROOT / "tests" / "parity" / "run_parity.py"
    spec = importlib.util.spec_from_file_location("eye_run_parity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
