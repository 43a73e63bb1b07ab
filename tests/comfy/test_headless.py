"""The headless runner says which of ComfyUI's own modules failed to load, and why."""

import logging

import pytest


@pytest.fixture
def headless(comfy):
    from eye_for_an_eye.comfy_adapter import headless

    return headless


def test_a_failed_builtin_module_is_named_with_its_error(headless, monkeypatch, tmp_path, capsys):
    import nodes

    async def init_extra_nodes(**_):  # what ComfyUI logs when comfy_extras/nodes_images.py lacks `requests`
        logging.warning("Traceback (most recent call last): ...")
        logging.warning("Cannot import /ComfyUI/comfy_extras/nodes_images.py module for custom nodes: "
                        "No module named 'requests'")

    async def load_custom_node(path):
        return True

    monkeypatch.setattr(nodes, "init_extra_nodes", init_extra_nodes)
    monkeypatch.setattr(nodes, "load_custom_node", load_custom_node)
    root = logging.getLogger()
    before = (root.level, [h.level for h in root.handlers])
    failures = _in_a_thread(headless.load_nodes, tmp_path)  # asyncio.run needs a thread with no running loop
    assert (root.level, [h.level for h in root.handlers]) == before  # logging left as it was
    with pytest.raises(SystemExit) as stop:
        failures.check({"EyeTest_NotLoadedNode"})
    message = str(stop.value)
    assert "EyeTest_NotLoadedNode" in message
    assert "comfy_extras/nodes_images.py" in message and "No module named 'requests'" in message
    assert "Traceback" not in message
    failures.check(set(nodes.NODE_CLASS_MAPPINGS))  # nothing missing: no complaint


def _in_a_thread(function, *args):
    import threading

    result = {}

    def target():
        try:
            result["value"] = function(*args)
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
