"""Unit tests of the UI -> API workflow converter against hand-written node definitions.

No server needed (not marked e2e): the definitions copy the shape of ComfyUI's
``/object_info``; test_graph_features.py checks the converter against the real one.
"""

import pytest

from eye_test_support import workflow_api as wa

INT = lambda **o: ["INT", o]  # noqa: E731
FLOAT = lambda **o: ["FLOAT", o]  # noqa: E731


def definition(required=None, optional=None, output=(), order=True, **extra):
    d = {"input": {"required": dict(required or {})}, "output": list(output),
         "output_name": list(output), "display_name": extra.pop("display_name", None)}
    if optional is not None:
        d["input"]["optional"] = dict(optional)
    if order:
        d["input_order"] = {"required": list(required or {})}
        if optional is not None:
            d["input_order"]["optional"] = list(optional)
    d.update(extra)
    return d


OBJECT_INFO = {
    "Loader": definition({"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}, output=("MODEL", "CLIP", "VAE"),
                         display_name="Load Checkpoint"),
    "Tiny": definition({}, {"family": [["sd15", "sdxl"], {}], "weights_seed": INT(default=0)},
                       output=("MODEL", "CLIP", "VAE")),
    "TinyReordered": definition({}, output=("VAE", "MODEL", "CLIP")),
    "Sampler": definition({"model": ["MODEL", {}], "seed": INT(default=0, control_after_generate=True),
                           "steps": INT(default=20), "cfg": FLOAT(default=8.0),
                           "sampler_name": [["euler", "ddim"], {}], "latent": ["LATENT", {}]},
                          {"denoise": FLOAT(default=1.0)}, output=("LATENT",)),
    "LegacySeed": definition({"noise_seed": INT(default=0), "x": INT(default=1)}, output=("INT",)),
    "ComboControl": definition({"choice": ["COMBO", {"options": ["p", "q"], "control_after_generate": True}],
                                "n": INT()}, output=("STRING",)),
    "Remote": definition({"file": ["COMBO", {"remote": {"route": "/x", "refresh_button": True}}], "n": INT()}),
    "LoadImg": definition({"image": [["x.png"], {"image_upload": True}], "channel": [["alpha", "red"], {}]},
                          {"strength": FLOAT(default=1.0)}, output=("IMAGE", "MASK")),
    "LoadImgNoOrder": definition({"image": [["x.png"], {"image_upload": True}], "channel": [["alpha", "red"], {}]},
                                 {"strength": FLOAT(default=1.0)}, output=("IMAGE", "MASK"), order=False),
    "Forced": definition({"a": INT(forceInput=True), "b": INT(default=3)}, output=("INT",)),
    "Invert": definition({"image": ["IMAGE", {}]}, output=("IMAGE",)),
    "TwoIn": definition({"mask": ["MASK", {}], "image": ["IMAGE", {}]}, output=("IMAGE",)),
    "Preview": definition({"images": ["IMAGE", {}]}),
    "Text": definition({"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]}, output=("CONDITIONING",)),
}


def ui_node(node_id, node_type, widgets=(), inputs=(), outputs=(), mode=0, title=None):
    node = {"id": node_id, "type": node_type, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": list(widgets) if not isinstance(widgets, dict) else widgets}
    if title:
        node["title"] = title
    return node


def inp(name, type_, link=None, widget=False):
    d = {"name": name, "type": type_, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def out(name, type_, links):
    return {"name": name, "type": type_, "links": list(links)}


def workflow(nodes, links):
    return {"nodes": nodes, "links": [list(link) for link in links], "version": 0.4}


# --- widget layout ---------------------------------------------------------------------------

def test_seed_control_value_is_skipped():
    layout = wa.widget_layout(OBJECT_INFO["Sampler"])
    assert layout == [("seed", "value"), ("seed", "control"), ("steps", "value"), ("cfg", "value"),
                      ("sampler_name", "value"), ("denoise", "value")]


def test_inputs_named_seed_get_a_control_without_the_option():
    assert wa.widget_layout(OBJECT_INFO["LegacySeed"]) == [
        ("noise_seed", "value"), ("noise_seed", "control"), ("x", "value")]


def test_combo_with_control_has_a_control_and_a_filter_value():
    assert wa.widget_layout(OBJECT_INFO["ComboControl"]) == [
        ("choice", "value"), ("choice", "control"), ("choice", "filter"), ("n", "value")]


def test_remote_combo_has_refresh_widgets():
    assert wa.widget_layout(OBJECT_INFO["Remote"]) == [
        ("file", "value"), ("file", "auto_refresh"), ("file", "refresh"), ("n", "value")]


def test_upload_value_comes_last_with_input_order_and_after_required_without():
    assert wa.widget_layout(OBJECT_INFO["LoadImg"]) == [
        ("image", "value"), ("channel", "value"), ("strength", "value"), (None, "upload")]
    assert wa.widget_layout(OBJECT_INFO["LoadImgNoOrder"]) == [
        ("image", "value"), ("channel", "value"), (None, "upload"), ("strength", "value")]


def test_force_input_is_a_socket_and_old_values_for_it_are_dropped():
    assert wa.widget_layout(OBJECT_INFO["Forced"]) == [("b", "value")]
    node = ui_node(1, "Forced", [7, 5])
    assert wa.widget_values_by_name(node, OBJECT_INFO["Forced"]) == {"b": 5}


def test_dict_widgets_values_and_trailing_holes():
    assert wa.widget_values_by_name(ui_node(1, "LegacySeed", {"noise_seed": 3, "x": 4}),
                                    OBJECT_INFO["LegacySeed"]) == {"noise_seed": 3, "x": 4}
    assert wa.widget_values_by_name(ui_node(1, "LegacySeed", [3, "fixed", 4, None]),
                                    OBJECT_INFO["LegacySeed"]) == {"noise_seed": 3, "x": 4}


def test_stale_widgets_values_raise_unless_not_strict():
    node = ui_node(5, "Sampler", [1, "fixed", 2, 3.0, "ddim"])  # saved before "denoise" existed
    with pytest.raises(wa.WorkflowConversionError, match="node 5 \\(Sampler\\)"):
        wa.widget_values_by_name(node, OBJECT_INFO["Sampler"])
    assert wa.widget_values_by_name(node, OBJECT_INFO["Sampler"], strict=False) == {
        "seed": 1, "steps": 2, "cfg": 3.0, "sampler_name": "ddim", "denoise": 1.0}


# --- graphs ----------------------------------------------------------------------------------

def sampler_graph(loader_mode=0, sampler_seed_link=None):
    nodes = [
        ui_node(1, "Loader", ["a.safetensors"], outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP", []),
                                                         out("VAE", "VAE", [])], mode=loader_mode),
        ui_node(2, "Sampler", [5, "randomize", 4, 6.5, "ddim", 0.5],
                inputs=[inp("model", "MODEL", 1), inp("latent", "LATENT"), inp("seed", "INT", sampler_seed_link, True),
                        inp("steps", "INT", None, True)],
                outputs=[out("LATENT", "LATENT", [])], title="My sampler"),
    ]
    return nodes, [(1, 1, 0, 2, 0, "MODEL")]


def test_basic_conversion_with_titles_and_links():
    nodes, links = sampler_graph()
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    assert prompt == {
        "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}, "_meta": {"title": "Load Checkpoint"}},
        "2": {"class_type": "Sampler", "_meta": {"title": "My sampler"},
              "inputs": {"seed": 5, "steps": 4, "cfg": 6.5, "sampler_name": "ddim", "denoise": 0.5,
                         "model": ["1", 0]}},
    }


def test_schema_1_links_are_read():
    nodes, _ = sampler_graph()
    wf = {"nodes": nodes, "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2,
                                     "target_slot": 0, "type": "MODEL"}]}
    assert wa.ui_to_api(wf, OBJECT_INFO)["2"]["inputs"]["model"] == ["1", 0]


def test_substitution_maps_outputs_by_type():
    nodes = [
        ui_node(1, "Loader", ["a.safetensors"], outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP", [2]),
                                                         out("VAE", "VAE", [3])]),
        ui_node(2, "Sampler", [5, "fixed", 4, 6.5, "ddim", 0.5], inputs=[inp("model", "MODEL", 1)]),
        ui_node(3, "Text", ["hi"], inputs=[inp("clip", "CLIP", 2)]),
        ui_node(4, "Preview", inputs=[inp("images", "VAE", 3)]),
    ]
    links = [(1, 1, 0, 2, 0, "MODEL"), (2, 1, 1, 3, 0, "CLIP"), (3, 1, 2, 4, 0, "VAE")]
    wf = workflow(nodes, links)
    plain = wa.ui_to_api(wf, OBJECT_INFO, {"Loader": "Tiny"})
    assert plain["1"] == {"class_type": "Tiny", "inputs": {}, "_meta": {"title": "Load Checkpoint"}}
    assert plain["3"]["inputs"]["clip"] == ["1", 1]
    reordered = wa.ui_to_api(wf, OBJECT_INFO, {"Loader": {"class_type": "TinyReordered", "inputs": {"x": 1}}})
    assert reordered["1"]["inputs"] == {"x": 1}
    assert reordered["2"]["inputs"]["model"] == ["1", 1]
    assert reordered["3"]["inputs"]["clip"] == ["1", 2]
    assert reordered["4"]["inputs"]["images"] == ["1", 0]


def test_primitive_node_value_wins_and_reroutes_pass_through():
    nodes, links = sampler_graph(sampler_seed_link=2)
    nodes[1]["inputs"][0]["link"] = 4
    nodes += [
        ui_node(3, "PrimitiveNode", [99, "fixed"], outputs=[out("INT", "INT", [2])]),
        ui_node(4, "Reroute", inputs=[inp("", "*", 3)], outputs=[out("", "MODEL", [4])]),
        ui_node(5, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("", "MODEL", [3])]),
        ui_node(6, "Note", ["text"]),
    ]
    links = [(1, 1, 0, 5, 0, "MODEL"), (3, 5, 0, 4, 0, "MODEL"), (4, 4, 0, 2, 0, "MODEL"), (2, 3, 0, 2, 2, "INT")]
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    assert set(prompt) == {"1", "2"}
    assert prompt["2"]["inputs"]["seed"] == 99
    assert prompt["2"]["inputs"]["model"] == ["1", 0]


def test_muted_upstream_drops_the_input_and_the_node():
    nodes, links = sampler_graph(loader_mode=wa.MODE_NEVER)
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    assert set(prompt) == {"2"}
    assert "model" not in prompt["2"]["inputs"]


def test_bypass_passes_the_matching_input_through():
    nodes = [
        ui_node(1, "LoadImg", ["x.png", "alpha", 1.0, "image"],
                outputs=[out("IMAGE", "IMAGE", [1]), out("MASK", "MASK", [2])]),
        # bypassed: outputs IMAGE; its slot-0 input is a MASK, so the first IMAGE input is used
        ui_node(2, "TwoIn", inputs=[inp("mask", "MASK", 2), inp("image", "IMAGE", 1)],
                outputs=[out("IMAGE", "IMAGE", [3])], mode=wa.MODE_BYPASS),
        ui_node(3, "Invert", inputs=[inp("image", "IMAGE", 3)], outputs=[out("IMAGE", "IMAGE", [4])],
                mode=wa.MODE_BYPASS),
        ui_node(4, "Preview", inputs=[inp("images", "IMAGE", 4)]),
    ]
    links = [(1, 1, 0, 2, 1, "IMAGE"), (2, 1, 1, 2, 0, "MASK"), (3, 2, 0, 3, 0, "IMAGE"), (4, 3, 0, 4, 0, "IMAGE")]
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    assert set(prompt) == {"1", "4"}
    assert prompt["1"]["inputs"] == {"image": "x.png", "channel": "alpha", "strength": 1.0}
    assert prompt["4"]["inputs"] == {"images": ["1", 0]}


def test_bypass_without_a_matching_input_leaves_the_consumer_unlinked():
    nodes = [
        ui_node(1, "LoadImg", ["x.png", "alpha", 1.0, "image"], outputs=[out("IMAGE", "IMAGE", []),
                                                                        out("MASK", "MASK", [1])]),
        ui_node(2, "TwoIn", inputs=[inp("mask", "MASK", 1), inp("image", "IMAGE")],
                outputs=[out("IMAGE", "IMAGE", [2])], mode=wa.MODE_BYPASS),
        ui_node(3, "Preview", inputs=[inp("images", "IMAGE", 2)]),
    ]
    links = [(1, 1, 1, 2, 0, "MASK"), (2, 2, 0, 3, 0, "IMAGE")]
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    assert prompt["3"]["inputs"] == {}


def test_unknown_types_and_subgraphs_raise():
    with pytest.raises(wa.WorkflowConversionError, match="'Missing' is not on the server"):
        wa.ui_to_api(workflow([ui_node(1, "Missing")], []), OBJECT_INFO)
    # a bypassed or muted unknown node is fine: the frontend leaves it out too
    assert wa.ui_to_api(workflow([ui_node(1, "Missing", mode=wa.MODE_NEVER)], []), OBJECT_INFO) == {}
    sub = workflow([ui_node(1, "1234-uuid")], [])
    sub["definitions"] = {"subgraphs": [{"id": "1234-uuid"}]}
    with pytest.raises(wa.WorkflowConversionError, match="subgraph"):
        wa.ui_to_api(sub, OBJECT_INFO)


def test_list_values_are_wrapped_like_the_frontend_does():
    node = ui_node(1, "Text", [["a", "b"]], inputs=[inp("clip", "CLIP")])
    assert wa.ui_to_api(workflow([node], []), OBJECT_INFO)["1"]["inputs"] == {"text": {"__value__": ["a", "b"]}}


def test_link_problems_finds_inconsistent_links():
    nodes, links = sampler_graph()
    assert wa.link_problems(workflow(nodes, links)) == []
    nodes[0]["outputs"][0]["links"] = []
    nodes[1]["inputs"][0]["link"] = 7
    problems = wa.link_problems(workflow(nodes, links))
    assert any("outputs[0].links" in p for p in problems)
    assert any("link 7 not in 'links'" in p for p in problems)


def test_apply_overrides_by_id_title_and_class():
    nodes, links = sampler_graph()
    prompt = wa.ui_to_api(workflow(nodes, links), OBJECT_INFO)
    wa.apply_overrides(prompt, {"My sampler": {"steps": 1}, 1: {"ckpt_name": "b.safetensors"},
                                "Sampler": {"cfg": 1.0}})
    assert prompt["2"]["inputs"]["steps"] == 1 and prompt["2"]["inputs"]["cfg"] == 1.0
    assert prompt["1"]["inputs"]["ckpt_name"] == "b.safetensors"
    with pytest.raises(KeyError, match="Nope"):
        wa.apply_overrides(prompt, {"Nope": {}})


def test_api_prompts_pass_through_with_substitutions():
    api = {"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a"}}, "2": {"class_type": "Preview", "inputs": {}}}
    prompt = wa.to_api_prompt(api, OBJECT_INFO, {"Loader": "Tiny"})
    assert prompt["1"] == {"class_type": "Tiny", "inputs": {}}
    assert api["1"]["class_type"] == "Loader"  # the caller's dict is not modified
