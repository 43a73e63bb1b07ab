"""What the user sees while a node works: progress bars, latent previews, Cancel, warnings."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import latent_preview


def progress_callback(model, steps: int):
    """ComfyUI's sampler progress bar with latent previews: ``callback(step, x0, x, total)``."""
    return latent_preview.prepare_callback(model, steps)


def progress_bar(total: int):
    return comfy.utils.ProgressBar(total)


def check_interrupt():
    """Raise ComfyUI's interruption exception when the user pressed Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def warn_user(node: str, text: str) -> None:
    """A warning in the log and, while a prompt runs on the server, under the node in the UI."""
    LOG.warning("%s: %s", node, text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        context = get_executing_context()
        if context is not None and getattr(PromptServer, "instance", None) is not None:
            PromptServer.instance.send_progress_text(f"{node}: {text}", context.node_id)
    except Exception:  # noqa: BLE001 - the log line is the message; the UI text is a courtesy
        pass


LOG = logging.getLogger("eye_for_an_eye")
