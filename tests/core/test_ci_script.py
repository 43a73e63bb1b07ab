""".ci/run's quiet pip wrapper: a pip that prints nothing must not stop CI, a failing pip must.

Under ``set -o pipefail`` a bare ``pip install -q ... | grep -v "is ignored"`` returns grep's 1
when pip prints nothing, which once made CI fail only on a machine with no environment yet.
Here the script's own ``pip_install`` runs with a stand-in for the interpreter.
"""

import subprocess
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parents[2] / ".ci" / "run"


def _pip_install_with(tmp_path, exit_code: int, output: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "python"
    fake.write_text(f"#!/usr/bin/env bash\nprintf '%s' '{output}'\nexit {exit_code}\n")
    fake.chmod(0o755)
    script = CI.read_text()
    function = script[script.index("pip_install() {"):]
    function = function[:function.index("\n}\n") + 3]
    body = f'set -euo pipefail\npy="{fake}"\n{function}pip_install --upgrade pip\necho reached-the-end\n'
    return subprocess.run(["bash", "-c", body], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("output", ["", "WARNING: something is ignored\n"], ids=["silent", "only-filtered-lines"])
def test_a_quiet_successful_pip_does_not_stop_ci(tmp_path, output):
    done = _pip_install_with(tmp_path, 0, output)
    assert done.returncode == 0 and "reached-the-end" in done.stdout, done.stderr
    assert "is ignored" not in done.stdout


def test_a_failing_pip_stops_ci_and_shows_its_message(tmp_path):
    done = _pip_install_with(tmp_path, 1, "ERROR: no matching distribution\n")
    assert done.returncode != 0 and "reached-the-end" not in done.stdout
    assert "no matching distribution" in done.stdout
