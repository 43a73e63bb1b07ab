"""See the transfer work on any machine: the demo workflow, run headless by ComfyUI's own executor.

    python -m eye_for_an_eye.demo --out demo.png

Loads ComfyUI (``COMFYUI_PATH``, else the ComfyUI this pack is installed in, else
``~/comfy/ComfyUI``), its built-in nodes and this pack, turns
``example_workflows/appearance_transfer_demo.json`` into a prompt exactly as the frontend
would, runs it with ``execution.PromptExecutor`` and writes the side-by-side picture
(target | reference | result | ideal, the last drawn by the renderer: what a perfect transfer
looks like) to ``--out``. The demo model ships with the pack and the
images are drawn by Eye Demo Scene: nothing is downloaded, no GPU is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent
DEMO_WORKFLOW = PACK_DIR / "example_workflows" / "appearance_transfer_demo.json"
SCENE_NODE = "EyeForAnEye_DemoScene"
RESULT_TITLE = "target | reference | result | ideal"


def find_comfyui() -> Path:
    """``COMFYUI_PATH``, else the ComfyUI whose custom_nodes holds this pack, else ``~/comfy/ComfyUI``."""
    given = os.environ.get("COMFYUI_PATH")
    if given:
        if not (Path(given) / "comfy" / "model_patcher.py").is_file():
            raise SystemExit(f"COMFYUI_PATH is {given!r}, which is not a ComfyUI folder (no comfy/model_patcher.py "
                             "in it): point it at the folder that holds ComfyUI's main.py, or unset it to use the "
                             "ComfyUI this pack is installed in.")
        return Path(given)
    candidates = [PACK_DIR.parent.parent, Path.home() / "comfy" / "ComfyUI"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "comfy" / "model_patcher.py").is_file():
            return Path(candidate)
    raise SystemExit("No ComfyUI found: set COMFYUI_PATH to your ComfyUI folder (the one with main.py), install "
                     "this pack in its custom_nodes, or put ComfyUI at ~/comfy/ComfyUI.")


def import_comfyui(root: Path, cpu: bool, output_dir: Path):
    """Import ComfyUI's core as main.py sets it up, writing outputs to ``output_dir``."""
    sys.path.insert(0, str(root))
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package, before comfy/utils.py can shadow it)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    import torch

    args.cpu = cpu or not (torch.cuda.is_available() or getattr(torch.backends, "mps", None) and
                           torch.backends.mps.is_available())
    args.use_pytorch_cross_attention = True
    args.disable_api_nodes = True
    import folder_paths

    folder_paths.set_output_directory(str(output_dir))
    folder_paths.set_temp_directory(str(output_dir / "temp"))
    import comfy.model_management  # noqa: F401  (reads args at import)
    import execution  # noqa: F401
    import nodes  # noqa: F401


def object_info(node_types) -> dict:
    """``GET /object_info`` of the given node types, computed in-process as the server does."""
    import nodes
    from comfy_api.internal import _ComfyNodeInternal

    info = {}
    for name in node_types:
        cls = nodes.NODE_CLASS_MAPPINGS.get(name)
        if cls is None:
            continue
        if issubclass(cls, _ComfyNodeInternal):
            info[name] = cls.GET_NODE_INFO_V1()
            continue
        inputs = cls.INPUT_TYPES()
        info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                      "output": cls.RETURN_TYPES, "name": name}
    return info


class ImportFailures(logging.Handler):
    """Keeps ComfyUI's "Cannot import <module>" warnings while its built-in nodes load quietly."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Cannot import"):
            self.messages.append(message)

    def check(self, workflow_path: Path, mappings) -> None:
        """Stop with the failed modules and their errors when the workflow needs a node that did not load."""
        from .eye_demo import workflow_api

        needed = {node["type"] for node in workflow_api.load_workflow(workflow_path)["nodes"]}
        missing = sorted(t for t in needed - set(mappings) if t not in workflow_api.FRONTEND_ONLY_TYPES)
        if missing:
            reasons = "\n  ".join(self.messages) or "(ComfyUI logged no import failure)"
            raise SystemExit(f"the demo workflow needs ComfyUI nodes that did not load: {', '.join(missing)}. "
                             f"ComfyUI's modules that failed to import:\n  {reasons}\nInstall what they name into "
                             "ComfyUI's environment (pip install -r requirements.txt in the ComfyUI folder).")


class HeadlessServer:
    """What PromptExecutor talks to instead of the web server: it prints which node runs."""

    def __init__(self, quiet: bool):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.quiet = quiet
        self.prompt = {}
        self.started = time.monotonic()

    def send_sync(self, event, data, sid=None):
        if self.quiet or not isinstance(data, dict):
            return
        if event == "executing" and data.get("node") is not None:
            node = self.prompt.get(data["node"], {})
            title = (node.get("_meta") or {}).get("title") or node.get("class_type", data["node"])
            print(f"[{time.monotonic() - self.started:6.1f} s] {title}", file=sys.stderr, flush=True)

    def queue_updated(self):
        pass


def progress_hook(quiet: bool):
    shown = {}

    def hook(value, total, preview_image=None, prompt_id=None, node_id=None):
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        if quiet or not total:
            return
        step = int(20 * value / total)
        if shown.get(node_id) != step or value == total:
            shown[node_id] = step
            end = "\n" if value >= total else "\r"
            print(f"    [{'#' * step}{'.' * (20 - step)}] {value}/{total}", end=end, file=sys.stderr, flush=True)
    return hook


def build_prompt(workflow_path: Path, seed, category, species) -> dict:
    from .eye_demo import workflow_api

    workflow = workflow_api.load_workflow(workflow_path)
    types = {node["type"] for node in workflow["nodes"]}
    prompt = workflow_api.to_api_prompt(workflow, object_info(types))
    overrides = {k: v for k, v in (("seed", seed), ("category", category), ("species", species)) if v is not None}
    if overrides:
        workflow_api.apply_overrides(prompt, {SCENE_NODE: overrides})
    return prompt


def run(prompt: dict, quiet: bool = False) -> dict:
    """Validate and execute ``prompt``; returns the history outputs. Raises with ComfyUI's own error text."""
    import comfy.utils
    import execution

    prompt_id = uuid.uuid4().hex
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid[0]:
        details = [f"{valid[1].get('message')}: {valid[1].get('details')}"]
        for node_id, error in (valid[3] or {}).items():
            for item in error.get("errors", []):
                details.append(f"  node {node_id} ({error.get('class_type')}): {item.get('message')}: "
                               f"{item.get('details')}")
        raise RuntimeError("ComfyUI refused the demo workflow:\n" + "\n".join(details))
    server = HeadlessServer(quiet)
    server.prompt = prompt
    comfy.utils.set_progress_bar_global_hook(progress_hook(quiet))
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)
    executor.execute(prompt, prompt_id, {"client_id": "eye-demo"}, valid[2])
    if not executor.success:
        for event, data in executor.status_messages:
            if event == "execution_error":
                raise RuntimeError(f"{data.get('node_type')} failed: {data.get('exception_type')}: "
                                   f"{data.get('exception_message')}\n{''.join(data.get('traceback') or [])}")
        raise RuntimeError("the demo workflow did not finish")
    return executor.history_result["outputs"]


def check_out(path: Path, parser) -> None:
    """Fail now, not after the run, when the picture cannot be written where asked."""
    if path.is_dir():
        parser.error(f"--out {path}: that is a folder; give a file path such as {path / 'eye_demo.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".eye-demo-"):
            pass
    except OSError as error:
        parser.error(f"--out {path}: cannot write there ({error.strerror or error}); give a file path in a folder "
                     "you can write to")


def main(argv=None) -> Path:
    from .eye_demo.pairs import SCENE_CATEGORIES, SPECIES_CHOICES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="eye_demo.png", help="where to write target | reference | result | ideal (PNG)")
    parser.add_argument("--seed", type=int, default=None, help="another demo pair (Eye Demo Scene's seed, 0 or more)")
    parser.add_argument("--category", default=None, choices=SCENE_CATEGORIES, metavar="CATEGORY",
                        help="the kind of pair (default flipped): " + ", ".join(repr(c) for c in SCENE_CATEGORIES))
    parser.add_argument("--species", default=None, choices=SPECIES_CHOICES, help="bird (default), fish or random")
    parser.add_argument("--workflow", default=str(DEMO_WORKFLOW), help="a UI workflow to run instead")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed {args.seed}: a seed is 0 or more")
    out = Path(args.out).resolve()
    check_out(out, parser)

    started = time.monotonic()
    root = find_comfyui()
    with tempfile.TemporaryDirectory(prefix="eye-demo-") as scratch:
        scratch = Path(scratch)
        import_comfyui(root, args.cpu, scratch)
        import nodes

        # ComfyUI's own built-in nodes, minus the noise of the few whose optional libraries are absent
        # (torchaudio, ...); the pack is loaded after with warnings on.
        # The reasons are kept: if the workflow needs one of those nodes, the user is told which module failed.
        root_logger = logging.getLogger()
        level = root_logger.level
        failures = ImportFailures()
        root_logger.setLevel(logging.ERROR)
        root_logger.addHandler(failures)
        try:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        finally:
            root_logger.setLevel(level)
            root_logger.removeHandler(failures)
        asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
        if SCENE_NODE not in nodes.NODE_CLASS_MAPPINGS:
            raise SystemExit(f"the pack's demo nodes did not load from {PACK_DIR}; see the messages above")
        failures.check(Path(args.workflow), nodes.NODE_CLASS_MAPPINGS)
        prompt = build_prompt(Path(args.workflow), args.seed, args.category, args.species)
        outputs = run(prompt, args.quiet)
        saved = [node_id for node_id, node in prompt.items()
                 if (node.get("_meta") or {}).get("title") == RESULT_TITLE and outputs.get(node_id, {}).get("images")]
        if not saved:
            raise SystemExit(f"the workflow has no output node titled {RESULT_TITLE!r} that saved an image")
        entry = outputs[saved[0]]["images"][0]
        source = scratch / ("temp" if entry.get("type") == "temp" else "") / entry.get("subfolder", "") / entry["filename"]
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out)
    if not args.quiet:
        print(f"wrote {out} (target | reference | result | ideal) in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
