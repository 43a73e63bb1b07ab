"""End-to-end harness: a real ComfyUI server with this pack and the test-only nodes loaded.

(A little over 500 lines: the server's life cycle, its fixtures and the prompt helpers are one
harness that every e2e test uses.)

Session fixtures
----------------
``comfy_server``  -> ComfyServer: the running server (``url``, ``input_dir``, ``output_dir``,
                     ``log_path``, ``log_text()``, ``get_json(path)``, ``post_json(path, body)``,
                     ``object_info``, ``run_workflow(...)``); one per session, shared with
                     tests/browser through ``session_comfy_server``.
``object_info``   -> dict: the server's ``GET /object_info``.
``run_workflow``  -> ``run_workflow(path_or_dict, substitutions=TINY_CHECKPOINT, inputs=None,
                     timeout=..., strict=True)``: a UI-format workflow (path, dict or JSON
                     text; an API prompt works too) is converted with workflow_api
                     (CheckpointLoaderSimple becomes EyeTestTinyCheckpointLoader by default;
                     ``{"CheckpointLoaderSimple": {"class_type": "EyeTestTinyCheckpointLoader",
                     "inputs": {"family": "sdxl"}}}`` gives the SDXL-shaped one, ``{}`` keeps
                     the real loader; ``strict=False`` accepts stale widgets_values like the
                     frontend), ``inputs`` overrides input values (``{node id | title |
                     class_type: {input: value}}``), then it is queued with ``POST /prompt`` and
                     ``GET /history/<id>`` is polled. Returns a WorkflowResult: the history
                     ``outputs`` dict (``{node_id: {"images": [...]}}``) with ``.images()``,
                     ``.prompt``, ``.prompt_id``, ``.history``. Raises WorkflowError with the
                     server's validation or execution error (and the server log tail).
``input_image``   -> ``input_image(name="eye_test.png", width=64, height=64, seed=0,
                     image=None)``: writes a procedural PIL picture (or ``image``) into the
                     server's input directory and returns the name LoadImage takes.

Every test marked ``e2e`` is skipped, with ``comfy_env.skip_reason()``, when no ComfyUI tree
is found; the terminal summary then repeats that line. The server is started once per
session on a free port with temporary input/output/temp/user/custom_nodes directories; it
never writes into the ComfyUI tree or the repository. Its extra_model_paths.yaml adds a
``sams`` folder holding a random-weight SAM-HQ ``sam_hq_vit_tiny.pth`` (``put_test_models``),
so workflows with Load SAM-HQ Model run. Its log is a temporary file, shown
when something fails. Environment knobs: ``EYE_E2E_START_TIMEOUT`` (s, default 180),
``EYE_E2E_RUN_TIMEOUT`` (s, default 300), ``EYE_E2E_PYTHON`` (interpreter for main.py,
default this one), ``EYE_E2E_THREADS`` (CPU threads of the server, default $EYE_TEST_THREADS or 1),
``EYE_E2E_API_NODES=1`` (load ComfyUI's paid API nodes; off by default, they add seconds to
the start).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from eye_test_support import comfy_env, workflow_api

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
SUPPORT_DIR = REPO_ROOT / "tests" / "support"
TEST_NODES_DIR = E2E_DIR / "test_nodes" / "eye_test_nodes"
WORKFLOWS_DIR = E2E_DIR / "workflows"
EXAMPLE_WORKFLOWS_DIR = REPO_ROOT / "example_workflows"

PACK_FOLDER = "eye_for_an_eye"  # the name ComfyUI sees the pack under (a symlink to the repo)
TEST_NODES_FOLDER = "eye_test_nodes"
PACK_NODE_PREFIX = "EyeForAnEye"
TINY_CHECKPOINT = workflow_api.TINY_CHECKPOINT

START_TIMEOUT = float(os.environ.get("EYE_E2E_START_TIMEOUT", "180"))
RUN_TIMEOUT = float(os.environ.get("EYE_E2E_RUN_TIMEOUT", "300"))
THREADS = os.environ.get("EYE_E2E_THREADS") or os.environ.get("EYE_TEST_THREADS") or "1"

_skipped_without_comfyui: list[str] = []
_started_servers: list["ComfyServer"] = []


# --- skipping when ComfyUI is missing -------------------------------------------------------

def pytest_runtest_setup(item):
    """Runs before any fixture of an item under tests/e2e (so before the server starts)."""
    if item.get_closest_marker("e2e") is not None and not comfy_env.comfyui_available():
        _skipped_without_comfyui.append(item.nodeid)
        pytest.skip(comfy_env.skip_reason())


def _root_conftest_prints_skip_line(config) -> bool:
    """tests/conftest.py prints the same line when ComfyUI is missing; print it once."""
    root = (REPO_ROOT / "tests" / "conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == root and hasattr(plugin, "pytest_terminal_summary"):
            return True
    return False


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped_without_comfyui:
        if not _root_conftest_prints_skip_line(config):
            terminalreporter.write_line("")
            terminalreporter.write_line(comfy_env.skip_reason(), red=True, bold=True)
        terminalreporter.write_line(
            f"  ({len(_skipped_without_comfyui)} e2e tests skipped; set COMFYUI_PATH to a ComfyUI checkout)")
    for server in _started_servers:
        if exitstatus not in (0, 5):
            terminalreporter.write_line(f"ComfyUI e2e server log: {server.log_path}")


# --- errors and results ---------------------------------------------------------------------

class WorkflowError(AssertionError):
    """ComfyUI refused or failed a workflow; the message has the server's own error text."""


class WorkflowResult(dict):
    """The ``outputs`` of a finished prompt's history entry, plus helpers."""

    def __init__(self, outputs, *, prompt_id, prompt, history, server):
        super().__init__(outputs)
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.history = history
        self.server = server

    def image_entries(self, node=None):
        """``{"filename", "subfolder", "type"}`` of the images of one node (id, title or
        class_type) or of every node."""
        entries = []
        for node_id, out in self.items():
            if node is not None and not self._matches(node_id, node):
                continue
            entries.extend(out.get("images") or [])
        return entries

    def image_paths(self, node=None):
        return [self.server.file_path(e) for e in self.image_entries(node)]

    def images(self, node=None):
        """The saved / previewed images as PIL images (loaded into memory)."""
        from PIL import Image

        result = []
        for path in self.image_paths(node):
            with Image.open(path) as img:
                img.load()
                result.append(img.copy())
        return result

    def _matches(self, node_id, key):
        key = str(key)
        entry = self.prompt.get(node_id) or {}
        return key in (node_id, entry.get("class_type"), (entry.get("_meta") or {}).get("title"))


# --- the server -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FULL_MASK_SAM = "sam_hq_vit_tiny_full_masks.pth"


def put_test_models(sams_dir: Path):
    """Write the random-weight test checkpoints the example workflows load (skipped without segment-anything-hq)."""
    from eye_test_support import tiny_sam

    sams_dir.mkdir(parents=True, exist_ok=True)
    if tiny_sam.sam_hq_available():
        tiny_sam.write_checkpoint(sams_dir)
        # random weights make random masks: seed 1 happens to cover the whole box, so the transfer
        # workflow's masks are never empty at its token grids
        tiny_sam.write_checkpoint(sams_dir, FULL_MASK_SAM, seed=1)


class ComfyServer:
    """A ComfyUI main.py subprocess with temporary directories."""

    def __init__(self, comfy_root: Path, work_dir: Path, python: str | None = None):
        self.comfy_root = Path(comfy_root)
        self.work_dir = Path(work_dir)
        self.python = python or os.environ.get("EYE_E2E_PYTHON") or sys.executable
        self.base_dir = self.work_dir / "base"  # --base-directory: keeps ComfyUI's tree untouched
        self.custom_nodes_dir = self.work_dir / "custom_nodes"
        self.input_dir = self.work_dir / "input"
        self.output_dir = self.work_dir / "output"
        self.temp_root = self.work_dir / "temp_root"  # ComfyUI appends "temp" to this
        self.user_dir = self.work_dir / "user"
        self.extra_paths_yaml = self.work_dir / "extra_model_paths.yaml"
        self.log_path = self.work_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.url: str | None = None
        self.client_id = uuid.uuid4().hex
        self.startup_seconds: float | None = None
        self.failed_runs = 0
        self._object_info = None
        self._log_file = None
        self._exited_early = False

    # directories and command line
    def prepare(self):
        for d in (self.base_dir / "custom_nodes", self.base_dir / "models", self.custom_nodes_dir,
                  self.input_dir, self.output_dir, self.temp_root, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)
        for name, target in ((PACK_FOLDER, REPO_ROOT), (TEST_NODES_FOLDER, TEST_NODES_DIR)):
            link = self.custom_nodes_dir / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        # Model files the pack's loaders find through folder_paths ("sams": the random-weight
        # SAM-HQ vit_tiny as sam_hq_vit_tiny.pth), in an extra model folder as users set one up.
        sams_dir = self.work_dir / "models" / "sams"
        put_test_models(sams_dir)
        # utils/extra_config.py: every key of a section is a folder_paths name; custom_nodes
        # directories are listed by nodes.init_external_custom_nodes.
        self.extra_paths_yaml.write_text(
            "eye_for_an_eye_e2e:\n"
            f"  custom_nodes: {json.dumps(str(self.custom_nodes_dir))}\n"
            f"  sams: {json.dumps(str(sams_dir))}\n", encoding="utf-8")

    def command(self, port: int) -> list[str]:
        cmd = [
            self.python, str(self.comfy_root / "main.py"),
            "--cpu", "--listen", "127.0.0.1", "--port", str(port),
            "--use-pytorch-cross-attention",
            "--extra-model-paths-config", str(self.extra_paths_yaml),
            "--base-directory", str(self.base_dir),
            "--output-directory", str(self.output_dir),
            "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.temp_root),
            "--user-directory", str(self.user_dir),
            # the default database lives in <ComfyUI>/user/comfyui.db
            "--database-url", f"sqlite:///{self.work_dir / 'comfyui.db'}",
            "--disable-auto-launch",
            "--preview-method", "none",
        ]
        if os.environ.get("EYE_E2E_API_NODES") != "1":
            cmd.append("--disable-api-nodes")
        return cmd

    def environment(self) -> dict:
        env = dict(os.environ)
        env.update({
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the ComfyUI tree or the repo
            "EYE_TEST_SUPPORT": str(SUPPORT_DIR),
            "HF_HUB_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            # Tiny models: one thread is fastest, and several threads spin-wait badly when the
            # machine is busy (a 3-step smoke run went from 0.7 s to 5-20 s).
            "OMP_NUM_THREADS": THREADS,
            "MKL_NUM_THREADS": THREADS,
        })
        return env

    # life cycle
    def start(self, timeout: float = START_TIMEOUT):
        self.prepare()
        started = time.monotonic()
        for attempt in range(3):
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._log_file = open(self.log_path, "ab")
            self._log_file.write(f"$ {' '.join(self.command(self.port))}\n".encode())
            self._log_file.flush()
            self.process = subprocess.Popen(
                self.command(self.port), cwd=str(self.work_dir), env=self.environment(),
                stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready(started + timeout):
                self.startup_seconds = time.monotonic() - started
                return self
            text = self.log_text()
            self.stop()
            if "address already in use" not in text.lower() or attempt == 2:
                break
        code = self.process.returncode if self.process else None
        why = (f"exited with code {code} before it was ready" if self._exited_early
               else f"was not ready within {timeout:.0f} s (EYE_E2E_START_TIMEOUT)")
        raise RuntimeError(f"ComfyUI {why}.\n--- server log ({self.log_path}) ---\n{self.log_tail(200)}")

    def _wait_ready(self, deadline: float) -> bool:
        self._exited_early = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._exited_early = True
                return False
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # logs
    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # HTTP
    def request(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str, timeout: float = 30):
        status, raw = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {raw[:2000]!r}")
        return json.loads(raw)

    def post_json(self, path: str, body, timeout: float = 30):
        status, raw = self.request("POST", path, body, timeout=timeout)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return status, parsed

    @property
    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get_json("/object_info", timeout=120)
        return self._object_info

    def file_path(self, entry: dict) -> Path:
        """Where an output entry (``filename``, ``subfolder``, ``type``) lives on disk."""
        root = {"output": self.output_dir, "temp": self.temp_root / "temp", "input": self.input_dir}[entry.get("type", "output")]
        return root / (entry.get("subfolder") or "") / entry["filename"]

    # running prompts
    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, reply = self.post_json("/prompt", body)
        if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            self.failed_runs += 1
            raise WorkflowError("ComfyUI rejected the prompt (POST /prompt, HTTP "
                                f"{status}):\n{format_prompt_error(reply, prompt)}")
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT, prompt: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                status = entry.get("status") or {}
                if status.get("status_str") != "success" or not status.get("completed"):
                    self.failed_runs += 1
                    raise WorkflowError(
                        f"ComfyUI failed prompt {prompt_id}:\n{format_execution_error(entry, prompt)}"
                        f"\n--- server log tail ({self.log_path}) ---\n{self.log_tail(60)}")
                return entry
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        self.failed_runs += 1
        self.post_json("/interrupt", {})
        self.post_json("/queue", {"delete": [prompt_id]})
        raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s"
                            f"\n--- server log tail ({self.log_path}) ---\n{self.log_tail(60)}")

    def run_workflow(self, path_or_dict, substitutions=TINY_CHECKPOINT, inputs=None,
                     timeout: float = RUN_TIMEOUT, extra_widget_types=(), strict: bool = True) -> WorkflowResult:
        data = workflow_api.load_workflow(path_or_dict)
        prompt = workflow_api.to_api_prompt(data, self.object_info, substitutions, extra_widget_types, strict)
        workflow_api.apply_overrides(prompt, inputs)
        extra = {"extra_pnginfo": {"workflow": data}} if workflow_api.is_ui_workflow(data) else None
        prompt_id = self.queue(prompt, extra)
        entry = self.wait(prompt_id, timeout, prompt)
        return WorkflowResult(entry.get("outputs") or {}, prompt_id=prompt_id, prompt=prompt,
                              history=entry, server=self)


def format_prompt_error(reply, prompt=None) -> str:
    if not isinstance(reply, dict):
        return str(reply)
    lines = []
    error = reply.get("error")
    if isinstance(error, dict):
        lines.append(f"{error.get('type')}: {error.get('message')} {error.get('details') or ''}".rstrip())
    elif error:
        lines.append(str(error))
    for node_id, node_error in (reply.get("node_errors") or {}).items():
        class_type = node_error.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type")
        for err in node_error.get("errors") or []:
            lines.append(f"  node {node_id} ({class_type}): {err.get('message')}: {err.get('details')}")
    return "\n".join(lines) or json.dumps(reply)[:4000]


def format_execution_error(entry, prompt=None) -> str:
    lines = []
    for message in (entry.get("status") or {}).get("messages") or []:
        event, data = message[0], message[1] if len(message) > 1 else {}
        if event in ("execution_error", "execution_interrupted"):
            node_id = data.get("node_id")
            lines.append(f"{event} in node {node_id} ({data.get('node_type')}): "
                         f"{data.get('exception_type')}: {data.get('exception_message')}")
            trace = data.get("traceback") or []
            if trace:
                lines.append("".join(trace).rstrip())
    return "\n".join(lines) or json.dumps(entry.get("status"))[:4000]


# --- procedural input pictures --------------------------------------------------------------

def make_test_image(width: int = 64, height: int = 64, seed: int = 0):
    """A deterministic RGB picture: a two-colour gradient, an ellipse and a rectangle whose
    colours and places depend on ``seed`` (structure for the correspondence to find)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    c0 = [rng.randrange(256) for _ in range(3)]
    c1 = [rng.randrange(256) for _ in range(3)]
    img = Image.new("RGB", (width, height))
    px = img.load()
    for y in range(height):
        t = y / max(height - 1, 1)
        row = tuple(int(a + (b - a) * t) for a, b in zip(c0, c1))
        for x in range(width):
            px[x, y] = row
    draw = ImageDraw.Draw(img)
    w, h = width, height
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    rx, ry = rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(rng.randrange(256) for _ in range(3)))
    x0, y0 = rng.uniform(0.0, 0.5) * w, rng.uniform(0.0, 0.5) * h
    draw.rectangle([x0, y0, x0 + 0.25 * w, y0 + 0.2 * h], fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


# --- fixtures -------------------------------------------------------------------------------

_session_server: dict = {"server": None, "failure": None, "users": 0}


def session_comfy_server(tmp_path_factory):
    """The body of the ``comfy_server`` fixture, as a generator: one server per pytest session,
    shared by every fixture that delegates here (tests/browser's ``comfy_server`` does), and
    stopped when the last of them is torn down."""
    if not comfy_env.comfyui_available():  # for direct use outside an e2e-marked test
        pytest.skip(comfy_env.skip_reason())
    if _session_server["failure"] is not None:
        pytest.fail(_session_server["failure"], pytrace=False)
    server = _session_server["server"]
    if server is None:
        server = ComfyServer(comfy_env.comfyui_path(), tmp_path_factory.mktemp("comfyui_e2e"))
        _started_servers.append(server)
        try:
            server.start()
        except RuntimeError as error:
            server.stop()
            _session_server["failure"] = str(error)
            pytest.fail(str(error), pytrace=False)
        _session_server["server"] = server
    _session_server["users"] += 1
    try:
        yield server
    finally:
        _session_server["users"] -= 1
        if _session_server["users"] == 0:
            _session_server["server"] = None
            server.stop()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    yield from session_comfy_server(tmp_path_factory)


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info


@pytest.fixture(scope="session")
def run_workflow(comfy_server):
    return comfy_server.run_workflow


@pytest.fixture(scope="session")
def input_image(comfy_server):
    def put(name: str = "eye_test.png", width: int = 64, height: int = 64, seed: int = 0, image=None) -> str:
        picture = image if image is not None else make_test_image(width, height, seed)
        path = comfy_server.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        return name

    return put


@pytest.fixture(scope="session")
def smoke_workflow_path() -> Path:
    return WORKFLOWS_DIR / "smoke.json"
