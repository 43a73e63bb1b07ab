"""ComfyUI adapters for the pack, one module per node family.

Each family is imported on its own: a missing optional library (for example
``segment-anything-hq`` for the SAM-HQ nodes) disables that family with one clear log
line, and every other node of the pack still loads.
"""

import importlib
import logging

# The node API version the pack is written against (comfy_api.latest is marked unstable by ComfyUI).
from comfy_api.v0_0_2 import ComfyExtension, io

LOG = logging.getLogger("eye_for_an_eye")

# (module, attribute listing its node classes); order is the order in the node library.
NODE_FAMILIES = (
    "inversion",
    "features",
    "correspondence",
    "transfer",
    "instances",
    "points",
    "freeu",
    "sam",
    "demo",
)


def load_node_classes():
    """Import every node family and return its node classes, skipping broken families."""
    classes = []
    for family in NODE_FAMILIES:
        try:
            module = importlib.import_module(f".{family}", __name__)
        except Exception as error:  # one broken family must not take the pack down
            LOG.warning("[Eye-for-an-eye] the %s nodes are disabled: %s", family, error)
            continue
        classes.extend(module.NODES)
    return classes


class EyeForAnEyeExtension(ComfyExtension):
    """Lists the pack's nodes for ComfyUI's V3 loader."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return load_node_classes()
