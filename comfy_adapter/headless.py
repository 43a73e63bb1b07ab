"""A workflow run by ComfyUI's own executor, without the web server (the headless demo).

``load_nodes`` loads ComfyUI's built-in nodes and one custom-node pack as the server
does; ``object_info`` is the server's ``GET /object_info`` computed in-process; ``run``
validates and executes an API-format prompt with ``execution.PromptExecutor``, printing
which node runs and a progress bar, and raises with ComfyUI's own error text.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path

import comfy.model_management
import comfy.utils
import execution
import nodes
from comfy_api.internal import _ComfyNodeInternal


def object_info(node_types) -> dict:
    """``GET /object_info`` of the given node types, computed in-process as the server does."""
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

    def check(self, needed_types, what: str = "the demo workflow") -> None:
        """Stop with the failed modules and their errors when ``needed_types`` holds a node that did not load."""
        missing = sorted(set(needed_types) - set(nodes.NODE_CLASS_MAPPINGS))
        if missing:
            reasons = "\n  ".join(self.messages) or "(ComfyUI logged no import failure)"
            raise SystemExit(f"{what} needs ComfyUI nodes that did not load: {', '.join(missing)}. "
                             f"ComfyUI's modules that failed to import:\n  {reasons}\nInstall what they name into "
                             "ComfyUI's environment (pip install -r requirements.txt in the ComfyUI folder).")


def load_nodes(pack_dir: Path) -> ImportFailures:
    """ComfyUI's built-in nodes (quietly: a few need optional libraries), then the pack at ``pack_dir``.

    Returns the import failures of the built-in nodes, so a workflow that needs one of them
    can say which module failed and why (ImportFailures.check).
    """
    root_logger = logging.getLogger()
    # Quiet the handlers, not the logger: a logger at ERROR would drop the warnings before
    # ImportFailures could see them.
    level, handler_levels = root_logger.level, [(h, h.level) for h in root_logger.handlers]
    failures = ImportFailures()
    for handler, _ in handler_levels:
        handler.setLevel(max(handler.level, logging.ERROR))
    root_logger.setLevel(logging.WARNING)
    root_logger.addHandler(failures)
    try:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    finally:
        root_logger.removeHandler(failures)
        root_logger.setLevel(level)
        for handler, handler_level in handler_levels:
            handler.setLevel(handler_level)
    asyncio.run(nodes.load_custom_node(str(pack_dir)))
    return failures


def node_types() -> set:
    """The node types ComfyUI has loaded."""
    return set(nodes.NODE_CLASS_MAPPINGS)


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
    """ComfyUI's global progress hook: Cancel is honoured, and a text bar per node on stderr."""
    shown = {}

    def hook(value, total, preview_image=None, prompt_id=None, node_id=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
        if quiet or not total:
            return
        step = int(20 * value / total)
        if shown.get(node_id) != step or value == total:
            shown[node_id] = step
            end = "\n" if value >= total else "\r"
            print(f"    [{'#' * step}{'.' * (20 - step)}] {value}/{total}", end=end, file=sys.stderr, flush=True)
    return hook


def run(prompt: dict, quiet: bool = False) -> dict:
    """Validate and execute ``prompt``; returns the history outputs. Raises with ComfyUI's own error text."""
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
