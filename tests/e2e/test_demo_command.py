"""The README's first command: the demo workflow run headless, as a user runs it.

``cd ComfyUI/custom_nodes && python -m eye_for_an_eye.demo --out demo.png`` in a fresh process,
with the pack found as the folder ``eye_for_an_eye`` (a link to this checkout) and ComfyUI at
``COMFYUI_PATH``: a picture of target | reference | result | ideal, the result not a copy of the target.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eye_test_support import comfy_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_demo_command_writes_target_reference_result_ideal(tmp_path):
    comfy_env.require_comfy()
    from PIL import Image

    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / "eye_for_an_eye").symlink_to(REPO, target_is_directory=True)
    out = tmp_path / "demo.png"
    env = {**os.environ, "COMFYUI_PATH": str(comfy_env.comfyui_path())}
    env.pop("PYTHONPATH", None)  # only what the command itself finds
    done = subprocess.run([sys.executable, "-m", "eye_for_an_eye.demo", "--out", str(out), "--cpu"],
                          cwd=custom_nodes, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "wrote" in done.stderr and out.is_file()
    picture = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32) / 255
    height, width, _ = picture.shape
    gap = (width - 4 * height) // 3
    assert 0 <= gap <= 16  # four square panels side by side, thin separators between them
    target, reference, result, ideal = (picture[:, i * (height + gap):i * (height + gap) + height] for i in range(4))
    assert np.abs(result - target).mean() > 0.005  # the transfer changed something
    assert np.abs(target - reference).mean() > 0.01 and np.abs(ideal - target).mean() > 0.01
