"""Write UI-format workflows (what the frontend saves) from a few lines of Python.

Used to author the pack's example workflows reproducibly: each node is placed with its
widget values, links are made by output slot and input name, and the sockets of every
node come from ``object_info`` (the server's node definitions), so the file matches what
the frontend would save. Regenerate a thumbnail afterwards with tests/browser/make_thumbnails.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from eye_for_an_eye.eye_demo.workflow_api import is_widget_input, ordered_inputs


class WorkflowBuilder:
    def __init__(self, object_info: dict, name: str):
        self.info = object_info
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"eye-for-an-eye/{name}"))

    def node(self, class_type: str, pos, size, widgets=None, title: str | None = None, mode: int = 0) -> dict:
        definition = self.info[class_type]
        inputs = []
        for name, input_type, options, _optional in ordered_inputs(definition):
            if not is_widget_input(input_type, options):
                type_name = "COMBO" if isinstance(input_type, list) else input_type
                inputs.append({"name": name, "type": type_name, "link": None})
        outputs = [{"name": name, "type": kind, "links": [], "slot_index": i}
                   for i, (name, kind) in enumerate(zip(definition.get("output_name") or definition["output"],
                                                        definition["output"]))]
        node = {"id": len(self.nodes) + 1, "type": class_type, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": mode, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": class_type}}
        if widgets is not None:
            node["widgets_values"] = list(widgets)
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, origin: dict, slot: int, target: dict, input_name: str, widget: bool = False):
        """Connect ``origin``'s output ``slot`` to ``target``'s input ``input_name`` (a widget when ``widget``)."""
        link_id = len(self.links) + 1
        kind = origin["outputs"][slot]["type"]
        if widget:
            target["inputs"].append({"name": input_name, "type": kind, "widget": {"name": input_name},
                                     "link": link_id})
            index = len(target["inputs"]) - 1
        else:
            index = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == input_name)
            target["inputs"][index]["link"] = link_id
        origin["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, origin["id"], slot, target["id"], index, kind])

    def group(self, title: str, bounding, color: str = "#3f789e"):
        self.__dict__.setdefault("groups", []).append({"title": title, "bounding": list(bounding), "color": color,
                                                       "font_size": 24, "flags": {}})

    def to_dict(self) -> dict:
        return {"id": self.id, "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.__dict__.get("groups", []), "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4}

    def write(self, path: Path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
