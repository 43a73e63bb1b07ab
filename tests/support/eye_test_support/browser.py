"""Drive the real ComfyUI frontend in headless Chromium (Debian's, through Playwright).

Used by tests/browser (the workflow-loading tests) and tests/browser/make_thumbnails.py.
Playwright's own browser download is never used: ``executable_path`` points at Debian's
``/usr/bin/chromium`` (``$EYE_CHROMIUM`` overrides it). ``.ci/install-browser`` installs both.

``Frontend(server_url)`` opens the page, waits until ``window.app`` has registered the node
types, and offers:

* ``load_template(module, name)`` (or ``load_workflow(dict)``): fetch ``/api/workflow_templates/<module>/<name>.json``
  and ``app.loadGraphData`` it, exactly as the frontend's template browser does; returns a
  ``LoadReport`` of what the frontend made of it (nodes, widgets, links, missing types,
  open dialogs, console messages and page errors of the load, the prompt the frontend
  would queue).
* ``fit_view(width, height)``, ``screenshot(path)``, ``thumbnail(path)``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# A closed network: without these, Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
)

# User settings of the test server's user (POST /settings) so the page opens on the bare
# canvas: no first-run template dialog, no minimap, no canvas menu or info text, workflow
# tabs in the (hidden) sidebar, full-detail node rendering at any zoom (for thumbnails).
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Workflow.WorkflowTabsPosition": "Sidebar",
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Validation.Workflows": True,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
}

THUMBNAIL_SIZE = (512, 384)
THUMBNAIL_QUALITY = 85


def chromium_path() -> str:
    return os.environ.get("EYE_CHROMIUM") or DEFAULT_CHROMIUM


def unavailable_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    chromium = chromium_path()
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        hint = f" (there is one at {found}: set EYE_CHROMIUM)" if found else " (.ci/install-browser installs it)"
        return f"browser tests SKIPPED: no Chromium at {chromium}{hint}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return ("browser tests SKIPPED: the Python package playwright is not installed "
                "(.ci/install-browser installs it)")
    return None


# JavaScript run in the page -------------------------------------------------------------------

_READY_JS = """() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph
    && window.app.extensionManager && window.app.extensionManager.command
    && Object.keys(window.LiteGraph.registered_node_types).length > 50)"""

# Records what loadGraphData reports as missing (it hands the list to afterConfigureGraph).
_INSTALL_PROBE_JS = """() => {
  if (window.__eyeProbe) return;
  window.__eyeProbe = { missing: [] };
  window.app.registerExtension({
    name: "EyeForAnEye.BrowserTestProbe",
    afterConfigureGraph(missingNodeTypes) {
      window.__eyeProbe.missing = (missingNodeTypes || []).map(m => typeof m === "object" ? m.type : m);
    },
  });
}"""

_LOAD_JS = """async ([module, name, given]) => {
  window.__eyeProbe.missing = [];
  let workflow = given, status = 200;
  if (!workflow) {
    const response = await fetch(`api/workflow_templates/${module}/${name}.json`);
    status = response.status;
    if (!response.ok) return { fetchStatus: status };
    workflow = await response.json();
  }
  const unregistered = workflow.nodes.map(n => n.type).filter(t => !(t in LiteGraph.registered_node_types));
  await window.app.loadGraphData(workflow, true, true, name);
  return { fetchStatus: status, unregistered };
}"""

_IMAGES_READY_JS = """() => window.app.graph.nodes.every(n => !n.imgs || n.imgs.every(i => i.complete))"""

_DIALOGS_JS = """() => Array.from(document.querySelectorAll(".p-dialog"))
  .filter(d => d.offsetParent !== null || d.getClientRects().length > 0)
  .map(d => d.innerText.slice(0, 500))"""

_REPORT_JS = """async () => {
  const app = window.app, graph = app.graph;
  const plain = v => {
    if (v === undefined) return null;
    try { return JSON.parse(JSON.stringify(v)); } catch (e) { return String(v); }
  };
  const nodes = graph.nodes.map(n => {
    const rect = n.boundingRect ? Array.from(n.boundingRect)
      : [n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.size[0], n.size[1] + LiteGraph.NODE_TITLE_HEIGHT];
    let serialized = null;
    try { serialized = n.serialize().widgets_values ?? null; } catch (e) { serialized = "serialize() failed: " + e; }
    return {
      id: n.id, type: n.type, comfyClass: n.comfyClass ?? null, title: n.title,
      registered: n.type in LiteGraph.registered_node_types,
      hasErrors: !!n.has_errors, mode: n.mode, rect: plain(rect),
      widgets: (n.widgets || []).map(w => ({
        name: w.name, type: w.type, value: plain(w.value),
        serialize: w.serialize !== false && (w.options || {}).serialize !== false,
        values: Array.isArray((w.options || {}).values) ? plain(w.options.values) : null,
        min: (w.options || {}).min ?? null, max: (w.options || {}).max ?? null,
      })),
      serializedWidgetsValues: plain(serialized),
      inputs: (n.inputs || []).map(i => ({ name: i.name, type: plain(i.type), link: i.link ?? null,
                                            widget: i.widget ? i.widget.name : null })),
      outputs: (n.outputs || []).map(o => ({ name: o.name, type: plain(o.type), links: plain(o.links || []) })),
    };
  });
  const linkList = graph.links instanceof Map ? Array.from(graph.links.values()) : Object.values(graph.links || {});
  const links = linkList.filter(l => l).map(l => ({
    id: l.id, origin_id: l.origin_id, origin_slot: l.origin_slot,
    target_id: l.target_id, target_slot: l.target_slot, type: plain(l.type),
  }));
  let prompt = null, promptError = null;
  try { prompt = plain((await app.graphToPrompt()).output); } catch (e) { promptError = String(e && e.stack || e); }
  const dialogs = (""" + _DIALOGS_JS + """)();
  const ds = app.canvas.ds;
  const view = { offset: [ds.offset[0], ds.offset[1]], scale: ds.scale };
  return { nodes, links, prompt, promptError, dialogs, view, missing: window.__eyeProbe.missing.slice() };
}"""

# Fit every node (with its title) into the viewport, centred, with a margin.
_FIT_JS = """([margin]) => {
  const app = window.app, canvas = app.canvas, nodes = app.graph.nodes;
  if (!nodes.length) return null;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of nodes) {
    const r = n.boundingRect ? n.boundingRect
      : [n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.size[0], n.size[1] + LiteGraph.NODE_TITLE_HEIGHT];
    x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
    x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]);
  }
  const el = canvas.canvas, w = el.clientWidth, h = el.clientHeight;
  const scale = Math.min((w - 2 * margin) / (x1 - x0), (h - 2 * margin) / (y1 - y0), 1.5);
  canvas.ds.scale = scale;
  canvas.ds.offset[0] = (w / scale - (x1 - x0)) / 2 - x0;
  canvas.ds.offset[1] = (h / scale - (y1 - y0)) / 2 - y0;
  canvas.setDirty(true, true);
  return { scale, bounds: [x0, y0, x1 - x0, y1 - y0] };
}"""

_NEXT_FRAMES_JS = """() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 50))))"""


@dataclass
class ConsoleEntry:
    kind: str  # "console.error", "console.warning", "pageerror", ...
    text: str
    location: str = ""

    def __str__(self):
        return f"[{self.kind}] {self.text}" + (f" ({self.location})" if self.location else "")


@dataclass
class LoadReport:
    """What the frontend made of one loaded workflow."""

    name: str
    fetch_status: int
    unregistered: list  # saved node types the frontend had not registered before the load
    missing: list  # what loadGraphData reported missing (its dialog's list)
    nodes: list
    links: list
    prompt: dict | None
    prompt_error: str | None
    dialogs: list
    messages: list = field(default_factory=list)  # ConsoleEntry during the load
    view: dict | None = None  # the canvas view after the load: {"offset": [x, y], "scale": s}

    def node(self, node_id):
        return next((n for n in self.nodes if str(n["id"]) == str(node_id)), None)


class Frontend:
    """One headless Chromium page on the ComfyUI frontend of ``server_url``."""

    def __init__(self, server_url: str, width: int = 1600, height: int = 1200, timeout: float = 120):
        from playwright.sync_api import sync_playwright

        self.url = server_url.rstrip("/") + "/"
        self.messages: list[ConsoleEntry] = []
        self._focus_style = False
        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
            self.page = self.browser.new_page(viewport={"width": width, "height": height})
            self.page.on("console", self._on_console)
            self.page.on("pageerror", self._on_page_error)
            started = time.monotonic()
            self.page.goto(self.url, wait_until="domcontentloaded", timeout=timeout * 1000)
            self.page.wait_for_function(_READY_JS, timeout=timeout * 1000)
            self.page.evaluate(_INSTALL_PROBE_JS)
            self._settle()
            self.startup_seconds = time.monotonic() - started
        except BaseException:
            self.close()
            raise
        self.startup_messages = list(self.messages)

    # console --------------------------------------------------------------------------------
    def _on_console(self, message):
        location = message.location or {}
        where = location.get("url") or ""
        if where and location.get("lineNumber"):
            where += f":{location['lineNumber']}"
        self.messages.append(ConsoleEntry(f"console.{message.type}", message.text, where))

    def _on_page_error(self, error):
        stack = getattr(error, "stack", None) or ""
        self.messages.append(ConsoleEntry("pageerror", f"{error}\n{stack}".strip()))

    def _settle(self, seconds: float = 0.3):
        """Let pending console events and animation frames arrive."""
        self.page.evaluate(_NEXT_FRAMES_JS)
        self.page.wait_for_timeout(seconds * 1000)

    # workflows ------------------------------------------------------------------------------
    def load_template(self, module: str, name: str, timeout: float = 60) -> LoadReport:
        """Load ``/api/workflow_templates/<module>/<name>.json`` as the template browser does."""
        return self._load(module, name, None, timeout)

    def load_workflow(self, workflow: dict, name: str = "workflow", timeout: float = 60) -> LoadReport:
        """Load a workflow dict (as dropping its file on the canvas would)."""
        return self._load(None, name, workflow, timeout)

    def open_dialogs(self) -> list[str]:
        """The text of every visible dialog."""
        return self.page.evaluate(_DIALOGS_JS)

    def close_dialogs(self):
        for _ in range(5):
            if not self.open_dialogs():
                return
            self.page.keyboard.press("Escape")
            self._settle(0.2)
        if self.open_dialogs():
            raise RuntimeError("a dialog stays open: " + " | ".join(self.open_dialogs()))

    def _load(self, module, name, workflow, timeout) -> LoadReport:
        self.close_dialogs()  # one left by an earlier load must not be blamed on this one
        first = len(self.messages)
        result = self.page.evaluate(_LOAD_JS, [module, name, workflow])
        if result.get("fetchStatus") != 200:
            raise AssertionError(f"GET /api/workflow_templates/{module}/{name}.json: HTTP {result.get('fetchStatus')}")
        try:  # image previews of LoadImage nodes (fetched from /view) before any screenshot
            self.page.wait_for_function(_IMAGES_READY_JS, timeout=timeout * 1000)
        except Exception:  # noqa: BLE001 - a slow preview must not hide the report
            pass
        self._settle(0.5)
        data = self.page.evaluate(_REPORT_JS)
        self._settle(0.2)
        return LoadReport(
            name=name, fetch_status=result["fetchStatus"], unregistered=result.get("unregistered") or [],
            missing=data["missing"], nodes=data["nodes"], links=data["links"], prompt=data["prompt"],
            prompt_error=data["promptError"], dialogs=data["dialogs"], messages=self.messages[first:],
            view=data.get("view"))

    def set_focus_mode(self, on: bool = True):
        """Hide the menus and sidebars (the frontend's Focus Mode)."""
        if bool(self.page.evaluate("() => !!window.app.extensionManager.focusMode")) != on:
            self.page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        if on and not self._focus_style:  # its one remaining button, top right
            self.page.add_style_tag(content=".comfy-menu-hamburger { visibility: hidden !important; }")
            self._focus_style = True
        self._settle(0.3)

    def fit_view(self, margin: int = 40):
        result = self.page.evaluate(_FIT_JS, [margin])
        self._settle(0.3)
        return result

    def screenshot(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path

    def thumbnail(self, path, size=THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY) -> Path:
        """A JPEG of the whole graph: Focus Mode, fitted into a viewport of the thumbnail's
        aspect, then downscaled."""
        from io import BytesIO

        from PIL import Image

        view = self.page.viewport_size
        aspect = size[0] / size[1]
        width, height = view["width"], view["height"]
        shot_size = {"width": int(round(height * aspect)), "height": height}
        self.page.set_viewport_size(shot_size)
        try:
            self.set_focus_mode(True)
            self.fit_view(margin=max(24, shot_size["height"] // 20))
            raw = self.page.screenshot(type="png")
        finally:
            self.page.set_viewport_size({"width": width, "height": height})
            self._settle(0.2)
        with Image.open(BytesIO(raw)) as shot:
            picture = shot.convert("RGB").resize(size, Image.LANCZOS)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, "JPEG", quality=quality, optimize=True, progressive=True)
        return path

    def close(self):
        try:
            if getattr(self, "browser", None) is not None:
                self.browser.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()
                self._playwright = None


def prepare_server(server, workflows, make_image) -> None:
    """Before the page opens: the test user's settings (FRONTEND_SETTINGS) and, in the
    server's input folder, a procedural picture for every file a LoadImage node of
    ``workflows`` names (so the nodes show a preview, and no /view request fails)."""
    status, reply = server.post_json("/settings", FRONTEND_SETTINGS)
    if status != 200:
        raise RuntimeError(f"POST /settings: HTTP {status}: {reply}")
    seed = 0
    for path in workflows:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for node in data.get("nodes") or []:
            if node.get("type") != "LoadImage" or not node.get("widgets_values"):
                continue
            name = node["widgets_values"][0]
            target = Path(server.input_dir) / name
            if isinstance(name, str) and name and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                make_image(256, 256, seed).save(target)
                seed += 1
