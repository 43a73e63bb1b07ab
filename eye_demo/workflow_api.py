"""Turn a UI-format ComfyUI workflow (what the frontend saves) into an API prompt.

The headless demo (``python -m eye_for_an_eye.demo``) runs the pack's example workflow
through it, and the tests run every example workflow on a real server with it.

Why a converter and not a stored API-format copy of the demo workflow: the demo command runs
any UI workflow a user saved (``--workflow``), not only the shipped one, and a stored copy
would be a second file to keep in step with the template. The frontend's own rules are what
make it long (about 500 lines); they are kept in one module, checked against the real frontend
by tests/e2e/test_workflow_api.py and tests/browser.

The frontend saves a graph: ``nodes`` (each with ``type``, ``mode``, ``inputs`` holding
link ids, and ``widgets_values``, a flat list of widget values) and ``links``
(``[id, origin_id, origin_slot, target_id, target_slot, type]``). ``POST /prompt`` wants
``{node_id: {"class_type": ..., "inputs": {name: value or [origin_id, slot]}}}``.
``widgets_values`` carries no names, so the layout is rebuilt from the server's
``/object_info`` the way the frontend (comfyui-frontend-package 1.27) builds a node's widgets:

* one value per widget input, in ``input_order`` (required, then optional); an input is
  a widget when its type is a widget type (INT, FLOAT, STRING, BOOLEAN, a COMBO list or
  "COMBO", ...) and it is not ``forceInput``;
* an INT with ``control_after_generate`` (or named ``seed`` / ``noise_seed``) is followed
  by its control value ("fixed", "randomize", ...); a COMBO with it by the control value
  and a filter string;
* a COMBO with ``remote`` options is followed by an "auto-refresh" toggle and, with
  ``refresh_button``, a "refresh" button value;
* a media upload combo (``image_upload`` / ``video_upload`` / ``animated_image_upload``,
  e.g. LoadImage's ``image``) adds an ``upload`` button whose value ("image") comes after
  all other inputs (the extension adds it to ``required`` and ``input_order`` lacks it).

A widget turned into a socket keeps its slot in ``widgets_values``; when linked, the link
wins. Frontend-only nodes are resolved like the frontend's ``graphToPrompt``: ``Reroute``
passes its input through, ``PrimitiveNode`` gives its value to the widgets it feeds,
``Note`` / ``MarkdownNote`` vanish. Muted nodes (mode 2) are dropped with every input that
comes from them; bypassed nodes (mode 4) are dropped and each consumer is wired to the
bypassed node's input of a matching type (same slot first, then the first exact type match,
then the first compatible one). Subgraphs and legacy group nodes are not supported.

``substitutions`` swaps node types, e.g. ``{"CheckpointLoaderSimple":
"EyeTestTinyCheckpointLoader"}`` (the tiny random-weight stand-in of the pack's tests). The
replacement gets only the inputs given in the substitution (its defaults otherwise); links
from the replaced node are moved slot by slot, matching output types.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

MODE_ALWAYS = 0
MODE_NEVER = 2  # "mute"
MODE_BYPASS = 4

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
FRONTEND_ONLY_TYPES = NOTE_TYPES | {REROUTE, PRIMITIVE}

# Input types the frontend draws as widgets (ComfyWidgets of the 1.27 frontend).
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD",
    "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA", "SELECTBUTTON",
    "TEXTAREA",
})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
LEGACY_SEED_NAMES = ("seed", "noise_seed")

class WorkflowConversionError(ValueError):
    """The workflow cannot be turned into an API prompt (the message says which node)."""


# --- workflow shapes ----------------------------------------------------------------------------

def load_workflow(path_or_dict) -> dict:
    """A workflow dict from a dict (deep-copied), a JSON string or a path to a .json file."""
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict))
    if isinstance(path_or_dict, str) and path_or_dict.lstrip().startswith("{"):
        return json.loads(path_or_dict)
    return json.loads(Path(path_or_dict).read_text(encoding="utf-8"))


def is_ui_workflow(data: Mapping) -> bool:
    """True for the frontend's saved format (``nodes`` list), False for an API prompt."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def is_api_prompt(data: Mapping) -> bool:
    return (isinstance(data, Mapping) and bool(data)
            and all(isinstance(v, Mapping) and "class_type" in v for v in data.values()))


def link_problems(workflow: Mapping) -> list[str]:
    """Inconsistencies between ``links`` and the nodes' ``inputs[].link`` / ``outputs[].links``
    (what a hand-edited workflow gets wrong; the frontend repairs or drops such links)."""
    problems = []
    nodes = {str(n["id"]): n for n in workflow.get("nodes") or []}
    for link_id, link in _link_table(workflow).items():
        origin, target = nodes.get(str(link["origin_id"])), nodes.get(str(link["target_id"]))
        if origin is None or target is None:
            problems.append(f"link {link_id}: node {link['origin_id'] if origin is None else link['target_id']} missing")
            continue
        outputs, inputs = origin.get("outputs") or [], target.get("inputs") or []
        slot, tslot = int(link["origin_slot"]), int(link["target_slot"])
        if slot >= len(outputs) or link_id not in (outputs[slot].get("links") or []):
            problems.append(f"link {link_id}: not in outputs[{slot}].links of node {origin['id']}")
        if tslot >= len(inputs) or inputs[tslot].get("link") != link_id:
            problems.append(f"link {link_id}: not inputs[{tslot}].link of node {target['id']}")
    linked = set(_link_table(workflow))
    for node in nodes.values():
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None and int(inp["link"]) not in linked:
                problems.append(f"node {node['id']} input {inp.get('name')!r}: link {inp['link']} not in 'links'")
        for i, output in enumerate(node.get("outputs") or []):
            for link_id in output.get("links") or []:
                if int(link_id) not in linked:
                    problems.append(f"node {node['id']} outputs[{i}]: link {link_id} not in 'links'")
    return problems


# --- node definitions -----------------------------------------------------------------------

def _spec_type_and_options(spec) -> tuple[Any, dict]:
    if not isinstance(spec, (list, tuple)) or not spec:
        return spec, {}
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    return spec[0], dict(options)


def _is_combo(input_type) -> bool:
    return isinstance(input_type, (list, tuple)) or input_type == "COMBO"


def ordered_inputs(node_def: Mapping) -> list[tuple[str, Any, dict, bool]]:
    """``(name, type, options, optional)`` in the frontend's order: input_order required,
    then optional, then anything input_order does not list."""
    section = node_def.get("input") or {}
    required = section.get("required") or {}
    optional = section.get("optional") or {}
    order = node_def.get("input_order") or {}
    result, seen = [], set()

    def add(name, spec, is_optional):
        if name in seen:
            return
        seen.add(name)
        input_type, options = _spec_type_and_options(spec)
        result.append((name, input_type, options, is_optional))

    if order:
        for name in order.get("required") or []:
            if name in required:
                add(name, required[name], False)
        for name in order.get("optional") or []:
            if name in optional:
                add(name, optional[name], True)
    for name, spec in required.items():
        add(name, spec, False)
    for name, spec in optional.items():
        add(name, spec, True)
    return result


def is_widget_input(input_type, options: Mapping, extra_widget_types=()) -> bool:
    if options.get("forceInput"):
        return False
    if _is_combo(input_type):
        return True
    return isinstance(input_type, str) and (input_type in WIDGET_TYPES or input_type in extra_widget_types)


def widget_layout(node_def: Mapping, extra_widget_types=()) -> list[tuple[str | None, str]]:
    """What each ``widgets_values`` entry of a node of this type is: ``(input name, role)``
    with role "value" (the input's value, sent to the server) or a frontend-only role
    ("control", "filter", "auto_refresh", "refresh", "upload")."""
    layout = []
    upload_for = None
    for name, input_type, options, is_optional in ordered_inputs(node_def):
        if not is_widget_input(input_type, options, extra_widget_types):
            continue
        layout.append((name, "value"))
        combo = _is_combo(input_type)
        if combo and options.get("remote"):
            layout.append((name, "auto_refresh"))
            if (options.get("remote") or {}).get("refresh_button"):
                layout.append((name, "refresh"))
        if input_type == "INT":
            control = options.get("control_after_generate")
            if control is None:
                control = name in LEGACY_SEED_NAMES
            if control:
                layout.append((name, "control"))
        elif combo and options.get("control_after_generate") and not options.get("multi_select"):
            layout.append((name, "control"))
            layout.append((name, "filter"))
        if (combo and not is_optional and upload_for is None
                and any(options.get(key) is True for key in UPLOAD_OPTIONS)):
            upload_for = name
    if upload_for is not None:
        # The upload extension adds ``upload`` to ``required``; input_order does not list it,
        # so the frontend creates it after every listed input (after the optional ones too).
        # Without input_order, widgets follow the dict order: ``upload`` ends ``required``.
        if node_def.get("input_order"):
            layout.append((None, "upload"))
        else:
            required = {name for name, _, _, opt in ordered_inputs(node_def) if not opt}
            index = max((i + 1 for i, (name, _) in enumerate(layout) if name in required), default=0)
            layout.insert(index, (None, "upload"))
    return layout


def widget_values_by_name(node: Mapping, node_def: Mapping, extra_widget_types=(), strict: bool = True) -> dict[str, Any]:
    """The value of each widget input of a UI node, by input name.

    ``strict``: a count that does not match the node definition raises (a stale workflow:
    the frontend would silently assign the values by position). Otherwise values are taken
    by position like the frontend does; missing ones get the input's default."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, Mapping):  # some custom nodes save widgets_values as a dict
        return dict(values)
    values = _drop_legacy_force_input_values(list(values), node_def, extra_widget_types)
    layout = widget_layout(node_def, extra_widget_types)
    while len(values) > len(layout) and values[-1] is None:  # holes of unserialised widgets
        values.pop()
    if len(values) != len(layout) and not strict:
        defaults = _widget_defaults(node_def)
        result = {}
        for i, (name, role) in enumerate(layout):
            if role != "value":
                continue
            if i < len(values):
                result[name] = values[i]
            elif name in defaults:
                result[name] = defaults[name]
        return result
    if len(values) != len(layout):
        raise WorkflowConversionError(
            f"node {node.get('id')} ({node.get('type')}): {len(values)} widgets_values "
            f"{values!r} but the node definition gives {len(layout)} widgets {layout!r}; "
            "the workflow was saved with another version of the node or the frontend")
    return {name: value for (name, role), value in zip(layout, values) if role == "value"}


def _widget_defaults(node_def: Mapping) -> dict[str, Any]:
    defaults = {}
    for name, input_type, options, _ in ordered_inputs(node_def):
        if "default" in options:
            defaults[name] = options["default"]
        elif isinstance(input_type, (list, tuple)) and input_type:
            defaults[name] = input_type[0]
        elif input_type == "COMBO" and options.get("options"):
            defaults[name] = options["options"][0]
    return defaults


def _drop_legacy_force_input_values(values, node_def, extra_widget_types=()):
    """The frontend's migrateWidgetsValues: old frontends also stored a value for each
    forceInput input; when the count says so, those values are dropped (index-wise)."""
    candidates = [(name, options) for name, input_type, options, _ in ordered_inputs(node_def)
                  if options.get("forceInput") or is_widget_input(input_type, options, extra_widget_types)]
    if not any(options.get("forceInput") for _, options in candidates):
        return values
    count = sum(2 if (options.get("control_after_generate") or name in LEGACY_SEED_NAMES) else 1
                for name, options in candidates)
    if count != len(values):
        return values
    return [value for i, value in enumerate(values)
            if not (i < len(candidates) and candidates[i][1].get("forceInput"))]


# --- links -----------------------------------------------------------------------------------

def _link_table(workflow: Mapping) -> dict[int, dict]:
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, Mapping):  # schema version 1
            entry = {"id": link["id"], "origin_id": link["origin_id"], "origin_slot": link["origin_slot"],
                     "target_id": link["target_id"], "target_slot": link["target_slot"],
                     "type": link.get("type")}
        else:
            link_id, origin_id, origin_slot, target_id, target_slot, link_type = list(link)[:6]
            entry = {"id": link_id, "origin_id": origin_id, "origin_slot": origin_slot,
                     "target_id": target_id, "target_slot": target_slot, "type": link_type}
        table[int(entry["id"])] = entry
    return table


def _types_compatible(type_a, type_b) -> bool:
    """LiteGraph.isValidConnection: equal, wildcard, or overlapping comma-separated lists."""
    a = "" if type_a in (None, "*", "", 0) else str(type_a)
    b = "" if type_b in (None, "*", "", 0) else str(type_b)
    if not a or not b or a == b:
        return True
    a_set = {t.strip().lower() for t in a.split(",")}
    b_set = {t.strip().lower() for t in b.split(",")}
    return bool(a_set & b_set)


class _Graph:
    def __init__(self, workflow, object_info, substitutions):
        if (workflow.get("definitions") or {}).get("subgraphs"):
            subgraph_ids = {s.get("id") for s in workflow["definitions"]["subgraphs"]}
        else:
            subgraph_ids = set()
        self.nodes = {}
        for node in workflow["nodes"]:
            if node.get("type") in subgraph_ids:
                raise WorkflowConversionError(
                    f"node {node.get('id')} is a subgraph ({node.get('type')}); unpack it in the editor first")
            self.nodes[str(node["id"])] = node
        self.links = _link_table(workflow)
        self.object_info = object_info
        self.substitutions = substitutions

    def node(self, node_id):
        node = self.nodes.get(str(node_id))
        if node is None:
            raise WorkflowConversionError(f"a link points to node {node_id}, which the workflow lacks")
        return node

    def input_link(self, node, slot_or_input):
        inp = slot_or_input if isinstance(slot_or_input, Mapping) else (node.get("inputs") or [])[slot_or_input]
        link_id = inp.get("link")
        if link_id is None:
            return None
        link = self.links.get(int(link_id))
        if link is None:
            raise WorkflowConversionError(
                f"node {node['id']} input {inp.get('name')!r} uses link {link_id}, missing from 'links'")
        return link

    def output_types(self, node):
        outputs = node.get("outputs")
        if outputs:
            return [o.get("type") for o in outputs]
        node_def = self.object_info.get(node.get("type")) or {}
        return list(node_def.get("output") or [])

    def resolve_output(self, node_id, slot, wanted_type, visited=None):
        """Where the value of output ``slot`` of ``node_id`` really comes from:
        ``("link", origin_id, origin_slot)``, ``("value", v)`` or ``None`` (no value)."""
        visited = set() if visited is None else visited
        key = (str(node_id), slot)
        if key in visited:
            raise WorkflowConversionError(f"circular reference through node {node_id}")
        visited.add(key)
        node = self.node(node_id)
        node_type = node.get("type")
        mode = node.get("mode", MODE_ALWAYS)
        if mode == MODE_BYPASS:
            index = self._bypass_input_index(node, slot, wanted_type)
            if index < 0:
                return None
            return self.resolve_input(node, index, None, visited)
        if node_type == REROUTE:
            if node.get("inputs"):
                return self.resolve_input(node, 0, wanted_type, visited)
            return None
        if node_type == PRIMITIVE:
            values = node.get("widgets_values") or []
            if not values:
                raise WorkflowConversionError(f"PrimitiveNode {node['id']} has no value")
            return ("value", values[0])
        if node_type in NOTE_TYPES:
            return None
        if mode == MODE_NEVER:  # a muted node is left out; the final pass drops this input
            return ("link", str(node["id"]), int(slot))
        if node_type in self.substitutions:
            return ("link", str(node["id"]), self._substituted_slot(node, slot))
        return ("link", str(node["id"]), int(slot))

    def resolve_input(self, node, index, wanted_type, visited):
        inputs = node.get("inputs") or []
        if index >= len(inputs):
            return None
        link = self.input_link(node, index)
        if link is None:
            return None
        wanted = wanted_type if wanted_type not in (None, "") else inputs[index].get("type")
        return self.resolve_output(link["origin_id"], int(link["origin_slot"]), wanted, visited)

    def _bypass_input_index(self, node, slot, wanted_type):
        """ExecutableNodeDTO#getBypassSlotIndex of the 1.27 frontend."""
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        output_type = outputs[slot].get("type") if slot < len(outputs) else None
        if wanted_type in ("*", "", None):
            return slot if len(inputs) > slot else 0
        if slot < len(inputs):
            opposite = inputs[slot].get("type")
            if _types_compatible(opposite, output_type) and _types_compatible(opposite, wanted_type):
                return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == wanted_type:
                return i
        for i, inp in enumerate(inputs):
            if _types_compatible(inp.get("type"), output_type) and _types_compatible(inp.get("type"), wanted_type):
                return i
        return -1

    def _substituted_slot(self, node, slot):
        new_type = _substitution_class(self.substitutions[node["type"]])
        new_def = self.object_info.get(new_type)
        if new_def is None:
            raise WorkflowConversionError(f"substitute node type {new_type!r} is not on the server")
        old_types = self.output_types(node)
        new_types = list(new_def.get("output") or [])
        wanted = old_types[slot] if slot < len(old_types) else None
        rank = sum(1 for t in old_types[:slot] if t == wanted)
        matches = [i for i, t in enumerate(new_types) if t == wanted]
        if rank >= len(matches):
            raise WorkflowConversionError(
                f"node {node['id']} ({node['type']} -> {new_type}): no output of type {wanted!r} "
                f"for slot {slot}; {new_type} outputs {new_types}")
        return matches[rank]


def _substitution_class(sub) -> str:
    return sub if isinstance(sub, str) else sub["class_type"]


def _substitution_inputs(sub) -> dict:
    return {} if isinstance(sub, str) else dict(sub.get("inputs") or {})


# --- conversion ------------------------------------------------------------------------------

def ui_to_api(workflow: Mapping, object_info: Mapping, substitutions: Mapping | None = None,
              extra_widget_types=(), strict: bool = True) -> dict:
    """The API prompt (``{id: {"class_type", "inputs", "_meta"}}``) of a UI-format workflow.

    ``object_info``: the server's ``GET /object_info``. ``substitutions``: ``{old type:
    new type}`` or ``{old type: {"class_type": new type, "inputs": {...}}}``.
    ``extra_widget_types``: custom widget types registered by frontend extensions.
    ``strict``: raise when a node's ``widgets_values`` do not fit its definition (see
    widget_values_by_name); False assigns them by position like the frontend.
    """
    if not is_ui_workflow(workflow):
        raise WorkflowConversionError("not a UI-format workflow (no 'nodes' list)")
    substitutions = dict(substitutions or {})
    graph = _Graph(workflow, object_info, substitutions)
    prompt = {}
    for node_id, node in graph.nodes.items():
        node_type = node.get("type")
        mode = node.get("mode", MODE_ALWAYS)
        if node_type in FRONTEND_ONLY_TYPES or mode in (MODE_NEVER, MODE_BYPASS):
            continue
        title = node.get("title")
        if node_type in substitutions:
            sub = substitutions[node_type]
            new_type = _substitution_class(sub)
            if new_type not in object_info:
                raise WorkflowConversionError(f"substitute node type {new_type!r} is not on the server")
            old_display = (object_info.get(node_type) or {}).get("display_name") or node_type
            prompt[node_id] = {"class_type": new_type, "inputs": _substitution_inputs(sub),
                               "_meta": {"title": title or old_display}}
            continue
        node_def = object_info.get(node_type)
        if node_def is None:
            raise WorkflowConversionError(
                f"node {node_id}: type {node_type!r} is not on the server (missing custom node, "
                "or a frontend-only node this converter does not know)")
        inputs = {}
        for name, value in widget_values_by_name(node, node_def, extra_widget_types, strict).items():
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
        for inp in node.get("inputs") or []:
            link = graph.input_link(node, inp)
            if link is None:
                continue
            resolved = graph.resolve_output(link["origin_id"], int(link["origin_slot"]), inp.get("type"))
            if resolved is None:  # nothing to pass: a widget keeps its own value
                continue
            if resolved[0] == "value":
                value = resolved[1]
                inputs[inp["name"]] = {"__value__": value} if isinstance(value, list) else value
            else:
                inputs[inp["name"]] = [resolved[1], resolved[2]]
        display = node_def.get("display_name") or node_type
        prompt[node_id] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": title or display}}
    # Like the frontend: drop links to nodes that are not in the prompt (muted ones).
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in prompt:
                del entry["inputs"][name]
    return prompt


def to_api_prompt(path_or_dict, object_info: Mapping, substitutions: Mapping | None = None,
                  extra_widget_types=(), strict: bool = True) -> dict:
    """An API prompt from a UI workflow or an API prompt (then only substitutions apply)."""
    data = load_workflow(path_or_dict)
    if is_ui_workflow(data):
        return ui_to_api(data, object_info, substitutions, extra_widget_types, strict)
    if not is_api_prompt(data):
        raise WorkflowConversionError("neither a UI-format workflow nor an API prompt")
    for entry in data.values():
        sub = (substitutions or {}).get(entry["class_type"])
        if sub is not None:
            entry["class_type"] = _substitution_class(sub)
            entry["inputs"] = _substitution_inputs(sub)
    return data


def apply_overrides(prompt: dict, overrides: Mapping | None) -> dict:
    """Set input values in an API prompt. Keys select nodes: a node id, else a node title
    (``_meta.title``), else a class_type (every node of that type). Values are
    ``{input name: value}``. An unknown key raises KeyError."""
    for key, values in (overrides or {}).items():
        key = str(key)
        if key in prompt:
            targets = [key]
        else:
            targets = [i for i, e in prompt.items() if (e.get("_meta") or {}).get("title") == key]
            if not targets:
                targets = [i for i, e in prompt.items() if e["class_type"] == key]
        if not targets:
            known = sorted({f"{i}:{e['class_type']}:{(e.get('_meta') or {}).get('title')}" for i, e in prompt.items()})
            raise KeyError(f"no node matches {key!r} (id, title or class_type); nodes: {known}")
        for node_id in targets:
            prompt[node_id]["inputs"].update(values)
    return prompt
