"""The demo command checks its arguments and COMFYUI_PATH before any work, in one line each."""

import os
import re
import subprocess
import sys

import pytest


def demo(*args, env=None):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "eye_for_an_eye.demo", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--category", "nonsense"], "argument --category: invalid choice: 'nonsense' (choose from 'aligned', 'moved', "
                                 "'flipped', 'rotated', 'articulated', 'cross-species', 'two creatures, swapped', "
                                 "'three creatures, swapped')"),
    (["--seed", "-1"], "--seed -1: a seed is 0 or more"),
    (["--out", "/proc/no/such/place.png"], "--out /proc/no/such/place.png: cannot write there"),
    (["--species", "cat"], "argument --species: invalid choice: 'cat'"),
])
def test_bad_arguments_end_in_one_line_before_the_run(args, message):
    result = demo(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_category():
    from eye_for_an_eye.eye_demo.pairs import SCENE_CATEGORIES

    text = re.sub(r"-\s+", "-", " ".join(demo("--help").stdout.split()))  # argparse wraps 'cross-species' at '-'
    assert len(SCENE_CATEGORIES) == 8
    for category in SCENE_CATEGORIES:
        assert repr(category) in text


def test_a_bad_comfyui_path_is_named(tmp_path):
    result = demo("--out", str(tmp_path / "x.png"), env={"COMFYUI_PATH": str(tmp_path / "nothing")})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"COMFYUI_PATH is '{tmp_path / 'nothing'}', which is not a ComfyUI folder" in result.stderr
