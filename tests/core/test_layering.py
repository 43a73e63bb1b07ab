"""The pack's layering, read from its imports: who may import ComfyUI, and which way data flows.

- ``comfy_adapter/`` alone imports ComfyUI's internals (comfy.*, execution, folder_paths,
  ComfyUI's nodes, comfy_api's internals, ...); the node modules may use the node schema's
  public API (``comfy_api.<version>`` ``io``, ``ui``, ``ComfyExtension``).
- ``eye_core/`` is plain torch: it imports neither ComfyUI nor the pack's other packages.
- The demo world (``eye_demo/``, training aside) never reaches into the nodes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADAPTER = "comfy_adapter"

#: Top-level modules of a ComfyUI installation (its root folder on sys.path).
COMFY_MODULES = {"comfy", "comfy_extras", "comfy_execution", "comfy_api", "comfy_api_nodes", "comfy_config",
                 "execution", "folder_paths", "latent_preview", "server", "nodes", "node_helpers", "main",
                 "cuda_malloc", "hook_breaker_ac10a0", "protocol", "app", "api_server", "middleware", "utils",
                 "new_updater", "comfyui_version"}
PUBLIC_SCHEMA = {"io", "ui", "ComfyExtension"}  # what `from comfy_api.<version> import ...` may bring


def absolute_imports(source: str):
    """(line, module, names) of every absolute import in ``source`` (relative ones are the pack's own)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(alias.name for alias in node.names)


def comfy_violations(source: str) -> list[str]:
    """The imports of ComfyUI internals in ``source`` (the public node schema allowed)."""
    found = []
    for line, module, names in absolute_imports(source):
        top = module.split(".")[0]
        if top not in COMFY_MODULES:
            continue
        parts = module.split(".")
        public = (top == "comfy_api" and len(parts) == 2 and (parts[1] == "latest" or parts[1].startswith("v"))
                  and names and set(names) <= PUBLIC_SCHEMA)
        if not public:
            found.append(f"line {line}: {module} {', '.join(names)}".strip())
    return found


def relative_targets(path: Path, source: str) -> set[str]:
    """The pack's top-level packages a module imports relatively (``from ..nodes import x`` -> "nodes")."""
    inside = path.relative_to(REPO).parts[:-1]
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(inside[:len(inside) - (node.level - 1)])
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                targets.add(parts[0])
            elif node.module is None:
                targets.update(alias.name for alias in node.names)
    return targets


def pack_modules():
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", ".ci", "build") or any(p.startswith(".") for p in relative.parts):
            continue
        if "site-packages" in relative.parts or relative.parts[0].endswith(".egg-info"):
            continue
        yield path


def test_the_checker_sees_what_it_must_refuse():
    assert comfy_violations("import comfy.model_management\n")
    assert comfy_violations("from comfy_api.internal import _ComfyNodeInternal\n")
    assert comfy_violations("def f():\n    import folder_paths\n")
    assert comfy_violations("import nodes\n")
    assert comfy_violations("from comfy_api.v0_0_2 import io, ComfyExtension, Types\n")
    assert not comfy_violations("from comfy_api.v0_0_2 import io\nfrom comfy_api.latest import ComfyExtension, io\n")
    assert not comfy_violations("from . import nodes\nfrom ..comfy_adapter import sampling\nimport torch\n")


def test_only_the_adapter_imports_comfyui_internals():
    offenders = {}
    for path in pack_modules():
        if path.relative_to(REPO).parts[0] == ADAPTER:
            continue
        found = comfy_violations(path.read_text())
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert not offenders, ("ComfyUI internals imported outside comfy_adapter/ (move the code into the adapter and "
                           f"call it from there): {offenders}")


def test_the_adapter_does_import_comfyui():
    """The rule above is not empty: ComfyUI is reached, through the adapter."""
    imported = [m for p in (REPO / ADAPTER).glob("*.py") for _, m, _ in absolute_imports(p.read_text())]
    assert any(m.startswith("comfy.") for m in imported)


@pytest.mark.parametrize("package, forbidden", [
    ("eye_core", {"nodes", ADAPTER, "eye_demo", "demo"}),
    ("eye_demo", {"nodes"}),
    (ADAPTER, {"nodes"}),
])
def test_packages_import_only_down_the_chain(package, forbidden):
    offenders = {}
    for path in sorted((REPO / package).rglob("*.py")):
        source = path.read_text()
        wrong = relative_targets(path, source) & forbidden
        if package == "eye_core":
            wrong |= {m for _, m, _ in absolute_imports(source) if m.split(".")[0] in COMFY_MODULES}
        if wrong:
            offenders[str(path.relative_to(REPO))] = sorted(wrong)
    assert not offenders, f"{package}/ imports what it must not: {offenders}"
