"""The pack's example workflows are ComfyUI workflow templates, each with its thumbnail.

ComfyUI (app/custom_node_manager.py) lists ``<custom node folder>/example_workflows/*.json``
at ``GET /workflow_templates`` as ``{folder name: [file stems]}`` and serves the folder
statically at ``/api/workflow_templates/<folder name>/``; the frontend's template browser
shows ``<stem>.jpg`` from there as the thumbnail. tests/browser/make_thumbnails.py makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "example_workflows"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
PACK_FOLDER = "eye_for_an_eye"  # the name the e2e server links the pack under
THUMBNAIL_SIZE = (512, 384)
THUMBNAIL_MAX_BYTES = 200 * 1024
REGENERATE = "run `python tests/browser/make_thumbnails.py` (needs ComfyUI and .ci/install-browser)"

workflows = pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])


# --- the files (no server needed) ----------------------------------------------------------------

def test_there_are_example_workflows():
    assert EXAMPLE_FILES, "example_workflows/ has no workflow"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment; None when it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


@workflows
def test_every_workflow_has_a_thumbnail(path):
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"{path.name} has no thumbnail {thumbnail.name}: {REGENERATE}"
    data = thumbnail.read_bytes()
    assert len(data) <= THUMBNAIL_MAX_BYTES, f"{thumbnail.name} is {len(data) / 1024:.0f} KB (at most {THUMBNAIL_MAX_BYTES // 1024})"
    size = jpeg_size(data)
    assert size is not None, f"{thumbnail.name} is not a JPEG"
    assert size == THUMBNAIL_SIZE, f"{thumbnail.name} is {size[0]}x{size[1]}, not {THUMBNAIL_SIZE[0]}x{THUMBNAIL_SIZE[1]}: {REGENERATE}"
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with ComfyUI's requirements
        return
    with Image.open(thumbnail) as image:
        extrema = image.convert("L").getextrema()
    assert extrema[1] - extrema[0] > 32, f"{thumbnail.name} is blank"


def test_no_thumbnail_without_its_workflow():
    orphans = sorted(p.name for p in EXAMPLES.glob("*.jpg") if not p.with_suffix(".json").is_file())
    assert orphans == [], f"thumbnails of no workflow: {orphans}"


# --- the server's routes ------------------------------------------------------------------------

@pytest.mark.e2e
def test_workflow_templates_lists_the_pack(comfy_server):
    templates = comfy_server.get_json("/workflow_templates")
    assert PACK_FOLDER in templates, f"GET /workflow_templates has no {PACK_FOLDER!r}: {sorted(templates)}"
    assert sorted(templates[PACK_FOLDER]) == sorted(p.stem for p in EXAMPLE_FILES)


@pytest.mark.e2e
@workflows
def test_template_is_served_as_saved(comfy_server, path):
    status, body = comfy_server.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{path.name}")
    assert status == 200, f"GET /api/workflow_templates/{PACK_FOLDER}/{path.name}: HTTP {status}"
    assert json.loads(body) == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.e2e
@workflows
def test_thumbnail_is_served(comfy_server, path):
    thumbnail = path.with_suffix(".jpg")
    if not thumbnail.is_file():
        pytest.fail(f"{path.name} has no thumbnail {thumbnail.name}: {REGENERATE}")
    status, body = comfy_server.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{thumbnail.name}")
    assert status == 200, f"GET /api/workflow_templates/{PACK_FOLDER}/{thumbnail.name}: HTTP {status}"
    assert body == thumbnail.read_bytes()
