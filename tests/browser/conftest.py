"""Browser tests: the real ComfyUI frontend, in Debian's headless Chromium driven by Playwright.

Session fixtures
----------------
``comfy_server``  -> the e2e harness's server (tests/e2e/conftest.py ``session_comfy_server``:
                     one server per session, shared with the e2e tests when both run).
``frontend``      -> eye_test_support.browser.Frontend: one page on that server's frontend,
                     opened after the test user's settings are set and a picture is put in the
                     input folder for every LoadImage of the example workflows.
``artifacts_dir`` -> where screenshots go: $EYE_BROWSER_ARTIFACTS or tests/_artifacts/browser.
``load_example``  -> ``load_example(name)``: example_workflows/<name>.json loaded in the frontend
                     through the workflow-templates route, once per session; returns the
                     browser.LoadReport and saves a screenshot <artifacts_dir>/<name>.png.
``save_screenshot`` -> ``save_screenshot(name)``: the page as <artifacts_dir>/<name>.png (listed
                     in the terminal summary); returns the path.

Every test marked ``browser`` is skipped, loudly, without ComfyUI, without Chromium
(``$EYE_CHROMIUM``, default /usr/bin/chromium) or without the playwright package; the
terminal summary repeats why. ``.ci/install-browser`` installs Chromium and Playwright.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from eye_test_support import browser, comfy_env

BROWSER_DIR = Path(__file__).resolve().parent
REPO_ROOT = BROWSER_DIR.parents[1]
E2E_CONFTEST = REPO_ROOT / "tests" / "e2e" / "conftest.py"
PACK_FOLDER = "eye_for_an_eye"  # the folder name the e2e server links the pack under
EXAMPLE_WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
ARTIFACTS_DIR = Path(os.environ.get("EYE_BROWSER_ARTIFACTS") or REPO_ROOT / "tests" / "_artifacts" / "browser")

_skipped: dict[str, list[str]] = {}  # reason -> node ids
_screenshots: list[Path] = []


def skip_reason() -> str | None:
    if not comfy_env.comfyui_available():
        return f"browser tests SKIPPED: no ComfyUI at {comfy_env.comfyui_path()}"
    return browser.unavailable_reason()


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") is None:
        return
    reason = skip_reason()
    if reason:
        _skipped.setdefault(reason, []).append(item.nodeid)
        pytest.skip(reason)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for reason, items in _skipped.items():
        terminalreporter.write_line("")
        terminalreporter.write_line(reason, red=True, bold=True)
        terminalreporter.write_line(f"  ({len(items)} browser tests skipped)")
    if _screenshots:
        folder = _screenshots[0].parent
        terminalreporter.write_line(f"browser screenshots ({len(_screenshots)}): {folder}")


def e2e_harness(config):
    """tests/e2e/conftest.py as pytest loaded it (so both suites share one server), or
    imported here when this session does not collect tests/e2e."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == E2E_CONFTEST:
            return plugin
    name = "eye_for_an_eye_e2e_conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, E2E_CONFTEST)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def record_screenshot(path: Path) -> Path:
    _screenshots.append(path)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="session")
def e2e(request):
    return e2e_harness(request.config)


@pytest.fixture(scope="session")
def comfy_server(e2e, tmp_path_factory):
    yield from e2e.session_comfy_server(tmp_path_factory)


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def frontend(comfy_server, e2e):
    reason = skip_reason()
    if reason:  # for direct use outside a browser-marked test
        pytest.skip(reason)
    browser.prepare_server(comfy_server, EXAMPLE_WORKFLOWS, e2e.make_test_image)
    page = browser.Frontend(comfy_server.url)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="session")
def load_example(frontend, save_screenshot):
    reports = {}

    def load(name: str) -> browser.LoadReport:
        if name not in reports:
            reports[name] = frontend.load_template(PACK_FOLDER, name)
            frontend.set_focus_mode(True)
            frontend.fit_view()
            save_screenshot(name)
        return reports[name]

    return load


@pytest.fixture(scope="session")
def save_screenshot(frontend, artifacts_dir):
    def save(name: str) -> Path:
        return record_screenshot(frontend.screenshot(artifacts_dir / f"{name}.png"))

    return save
