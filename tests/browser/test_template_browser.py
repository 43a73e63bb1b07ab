"""The frontend's template browser ("Browse Templates") lists the pack's workflows under the
pack's folder name, shows each one's thumbnail, and loads a workflow when its card is
clicked: what a user sees, on top of tests/e2e/test_workflow_templates.py's routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eye_test_support.browser import THUMBNAIL_SIZE

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))
PACK_FOLDER = "eye_for_an_eye"

_THUMBNAILS_JS = """() => Array.from(document.querySelectorAll(".p-dialog img"))
  .map(i => ({ alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight }))"""


def test_template_browser_shows_every_workflow_with_its_thumbnail(frontend, save_screenshot):
    page = frontend.page
    frontend.close_dialogs()
    frontend.set_focus_mode(False)
    first = len(frontend.messages)
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    category = page.locator(".p-dialog .p-listbox-option").filter(has_text=PACK_FOLDER)
    category.first.wait_for(timeout=30_000)
    assert category.count() == 1, "the template browser has no (or several) entries for the pack"
    category.first.click()
    # the dialog loads a thumbnail when its card is in view and drops it when scrolled away; until
    # loaded the <img> is hidden (display: none), so it is its frame that is scrolled into view (a
    # hidden element cannot be), each card in turn, and its picture read there
    sizes = {}
    for name in NAMES:
        card = page.locator(f'.p-dialog img[alt="{name}"]').first
        try:
            card.wait_for(state="attached", timeout=30_000)
            page.evaluate("""(n) => Array.from(document.querySelectorAll(".p-dialog img")).find(i => i.alt === n)
                .parentElement.scrollIntoView({ block: "center" })""", name)
            page.wait_for_function(
                """(n) => Array.from(document.querySelectorAll(".p-dialog img"))
                    .some(i => i.alt === n && i.complete && i.naturalWidth > 0)""", arg=name, timeout=30_000)
        except Exception:  # noqa: BLE001 - the assertions below say what is missing
            pass
        for shown in page.evaluate(_THUMBNAILS_JS):
            if shown["alt"] == name and (shown["width"], shown["height"]) != (0, 0):
                sizes[name] = (shown["width"], shown["height"])
    save_screenshot("template_browser")
    shown = {t["alt"]: t for t in page.evaluate(_THUMBNAILS_JS)}
    assert sorted(shown) == NAMES, f"the pack's templates in the browser: {sorted(shown)}"
    bad = {n: sizes.get(n, (0, 0)) for n in NAMES if sizes.get(n) != THUMBNAIL_SIZE}
    assert bad == {}, f"thumbnails that did not load (or are not {THUMBNAIL_SIZE}): {bad}"

    # a click on a card loads that workflow (the dialog closes, the graph has its nodes)
    name = NAMES[0]
    page.locator(f'.p-dialog img[alt="{name}"]').first.click()
    page.wait_for_function("() => !document.querySelector('.p-dialog')", timeout=30_000)
    frontend.close_dialogs()
    saved = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    loaded = page.evaluate("() => window.app.graph.nodes.map(n => [n.id, n.type]).sort((a, b) => a[0] - b[0])")
    assert loaded == sorted([n["id"], n["type"]] for n in saved["nodes"])
    assert page.evaluate("() => window.__eyeProbe.missing") == []
    errors = [str(m) for m in frontend.messages[first:] if m.kind in ("pageerror", "console.error")]
    assert errors == [], "errors while browsing the templates:\n" + "\n".join(errors)
