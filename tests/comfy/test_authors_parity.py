"""Parity with the authors' released code: the official preset, step by step.

Runs tests/parity/run_parity.py's parity mode: the pack's ComfyUI path and the authors'
pipeline (their unmodified checkout, in their own environment) on the same tiny random
SD1.5-layout UNet, latents, conditioning, masks and noise draws, with the pack's deliberate
improvements switched to the authors' behaviour. Skips, saying so in the summary, when the
authors' checkout or its environment is not on this machine (tests/parity/setup-authors).

Measured: the inversion noise maps agree within 1e-4 and the generation agrees within 4e-6
through its first 19 steps (structure injection and rearrangement with masks included);
then one cosine argmax near-tie resolves differently (both sides compute in float32, summing
in another order), that token takes another reference feature and the difference grows to
5e-2 per step and 1.1 % of the final latent. The full 1e-4 criterion is an expected failure.
"""

import importlib.util
from pathlib import Path

import pytest

PARITY = Path(__file__).resolve().parents[1] / "parity" / "run_parity.py"
STRUCTURE_AND_REARRANGEMENT = 13  # iterations 0-12 include structure injection (11) and rearrangement (12)


def _run_parity():
    spec = importlib.util.spec_from_file_location("eye_run_parity", PARITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parity(comfy, tmp_path_factory):
    import torch

    run_parity = _run_parity()
    reason = run_parity.missing()
    if reason:
        pytest.skip(f"parity with the authors' code SKIPPED: {reason}")
    threads = torch.get_num_threads()
    try:  # 64x64 latents through a six-row batch: two threads pay off here, unlike for the tiny tests
        summary = run_parity.main(["--parity", "--threads", "2",
                                   "--out", str(tmp_path_factory.mktemp("parity") / "parity.json")])
    finally:
        torch.set_num_threads(threads)
    return run_parity, summary["runs"]["parity"]


@pytest.mark.comfy
def test_the_official_preset_follows_the_authors_code_until_a_matching_near_tie(parity):
    run_parity, run = parity
    assert len(run["max_abs_per_step"]) == run_parity.STEPS - run_parity.SKIP
    for role, gap in run["inversion_noise_max_abs"].items():
        assert gap < run_parity.TOLERANCE, f"the {role} image's inversion noise maps differ by {gap:.3g}"
    first_gap = next((i for i, v in enumerate(run["max_abs_per_step"]) if v >= run_parity.TOLERANCE), None)
    assert first_gap is None or first_gap >= STRUCTURE_AND_REARRANGEMENT, run["max_abs_per_step"][:20]
    assert run["final_relative_rms"] < 0.02, run["final_relative_rms"]


@pytest.mark.comfy
@pytest.mark.xfail(strict=True, reason="a cosine argmax near-tie resolves differently after 19 steps (module docstring)")
def test_every_step_within_the_tolerance(parity):
    run_parity, run = parity
    assert run["max_abs"] < run_parity.TOLERANCE
