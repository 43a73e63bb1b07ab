"""Shared test set-up: import this checkout as the package ``eye_for_an_eye``.

The pack's root folder is a ComfyUI custom-node package (``__init__.py`` at the top),
so it is registered under a fixed name from this checkout, whatever the clone's folder
is called and whatever else is installed.
"""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUPPORT = REPO_ROOT / "tests" / "support"


if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from eye_test_support.pack import load_pack  # noqa: E402

load_pack(REPO_ROOT)

# The tiny test models run thousands of small ops; on a 2-core machine shared with other
# work, OpenMP threads spin-waiting on each other make them up to 50x slower. One thread
# is fast and deterministic; EYE_TEST_THREADS overrides it.
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("EYE_TEST_THREADS", "1")))


def pytest_terminal_summary(terminalreporter):
    """Say on a line of its own when the integration tests could not run."""
    from eye_test_support import comfy_env

    if not comfy_env.comfyui_available():
        terminalreporter.write_line("")
        terminalreporter.write_line(comfy_env.skip_reason(), red=True, bold=True)
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "parity with the authors' code SKIPPED" in reason:
            terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True, bold=True)
