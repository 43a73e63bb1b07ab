"""Regenerate example_workflows/<name>.jpg, the thumbnails ComfyUI's template browser shows.

    python tests/browser/make_thumbnails.py             # every example_workflows/*.json
    python tests/browser/make_thumbnails.py appearance_transfer segment_preview

Starts the e2e harness's ComfyUI server (tests/e2e/conftest.py, ComfyUI from $COMFYUI_PATH or
~/comfy/ComfyUI) on a free loopback port with temporary folders, opens the real frontend in
headless Chromium (Debian's /usr/bin/chromium or $EYE_CHROMIUM, via Playwright; run
.ci/install-browser first), loads each workflow through the workflow-templates route, fits
the whole graph in view (Focus Mode, 4:3) and saves a 512x384 JPEG (quality 85) beside it.
LoadImage nodes show procedural test pictures. Run it after adding or changing a workflow;
tests/e2e/test_workflow_templates.py checks that every workflow has its thumbnail.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "example_workflows"
PACK_FOLDER = "eye_for_an_eye"
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))

from eye_test_support import browser, comfy_env  # noqa: E402


def e2e_harness():
    spec = importlib.util.spec_from_file_location("eye_for_an_eye_e2e_conftest", REPO_ROOT / "tests" / "e2e" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="workflow names (file stems); default: all")
    parser.add_argument("--out", type=Path, default=EXAMPLES, help="folder for the .jpg files (default: example_workflows)")
    args = parser.parse_args(argv)

    paths = sorted(EXAMPLES.glob("*.json"))
    names = args.names or [p.stem for p in paths]
    unknown = sorted(set(names) - {p.stem for p in paths})
    if unknown:
        parser.error(f"no example_workflows/<name>.json for {unknown}")
    if not comfy_env.comfyui_available():
        print(f"cannot make thumbnails: no ComfyUI at {comfy_env.comfyui_path()} (set COMFYUI_PATH)", file=sys.stderr)
        return 2
    reason = browser.unavailable_reason()
    if reason:
        print(f"cannot make thumbnails: {reason}", file=sys.stderr)
        return 2

    e2e = e2e_harness()
    with tempfile.TemporaryDirectory(prefix="eye_thumbnails_") as work:
        server = e2e.ComfyServer(comfy_env.comfyui_path(), Path(work))
        try:
            server.start()
            browser.prepare_server(server, paths, e2e.make_test_image)
            frontend = browser.Frontend(server.url)
            try:
                for name in names:
                    report = frontend.load_template(PACK_FOLDER, name)
                    if report.missing or report.unregistered:
                        print(f"warning: {name}: missing node types {report.missing or report.unregistered}", file=sys.stderr)
                    path = frontend.thumbnail(args.out / f"{name}.jpg")
                    print(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}: "
                          f"{path.stat().st_size / 1024:.0f} KB")
            finally:
                frontend.close()
        except BaseException:
            print(f"--- ComfyUI log ({server.log_path}) ---\n{server.log_tail(40)}", file=sys.stderr)
            raise
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
