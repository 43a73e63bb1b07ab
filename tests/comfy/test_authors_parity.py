"""Parity with the authors' released code: the official preset, step by step.

Two ways. On every machine, the pack's official preset is compared with the stored golden of
the authors' side (tests/parity/golden/authors-official.npz: their latents at key steps in
full and at every step pooled, and every match they made); a run with one input
changed must fail the same comparison, so the check is shown to catch a wrong result.

Where their checkout is, the full run: tests/parity/run_parity.py's parity mode: the pack's ComfyUI path and the authors'
pipeline (their unmodified checkout, in their own environment) on the same tiny random
SD1.5-layout UNet, latents, conditioning, masks and noise draws, with the pack's deliberate
improvements switched to the authors' behaviour. Skips, saying so in the summary, when the
authors' checkout or its environment is not on this machine (tests/parity/setup-authors).

Every per-step match of the pack is compared with the authors' match for the same layer and
step. Both sides compute in float32 and sum in different orders, so a token whose two best
reference tokens are closer than float32 can tell apart (a cosine gap under 1e-5) may take
either: a near-tie. With near-ties taking the authors' choice, and no other match differing,
the latents agree within 1e-4 at every step. (Left to float32, one near-tie resolves the other
way after 19 steps and the runs part by 1 % of the final latent: ``run_parity.py --parity
--float32-ties`` shows it.)
"""

import pytest
from eye_test_support.pack import load_parity_harness


@pytest.fixture(scope="module")
def golden_run(comfy):
    import torch

    run_parity = load_parity_harness()
    threads = torch.get_num_threads()
    try:
        return run_parity, run_parity.run_golden(threads=2)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.comfy
def test_the_official_preset_matches_the_authors_golden_at_every_step(golden_run):
    run_parity, result = golden_run
    matches = result["matches"]
    assert matches["calls"] == 306 and matches["unpaired_calls"] == 0 and matches["left_unused"] == 0, matches
    assert matches["disagreements"] == 0, matches
    assert matches["near_ties"] <= matches["tokens_compared"] * 1e-4, matches
    assert result["max_abs"] < run_parity.TOLERANCE, result["max_abs_at_keyframes"]
    assert len(result["pooled_max_abs_per_step"]) == run_parity.STEPS - run_parity.SKIP
    assert result["pooled_max_abs"] < run_parity.POOLED_TOLERANCE, result["pooled_max_abs_per_step"]
    for role, gaps in result["inversion_noise"].items():
        assert gaps["first"] < run_parity.TOLERANCE and gaps["pooled"] < run_parity.POOLED_TOLERANCE, (role, gaps)


@pytest.mark.comfy
def test_the_golden_check_fails_when_the_result_is_wrong(golden_run, comfy):
    """The structure mask moved by one token (8 px of 512): the comparison must see it."""
    import torch

    run_parity, right = golden_run
    threads = torch.get_num_threads()

    def shift_mask(inputs):
        inputs["mask_struct"] = torch.roll(inputs["mask_struct"], 8, dims=1)

    try:  # the inversions do not see the masks: the right run's are reused
        wrong = run_parity.run_golden(threads=2, perturb=shift_mask, inversions=right["inversions"])
    finally:
        torch.set_num_threads(threads)
    assert wrong["matches"]["disagreements"] > 0
    assert wrong["max_abs"] > 10 * run_parity.TOLERANCE and wrong["pooled_max_abs"] > 10 * run_parity.POOLED_TOLERANCE


@pytest.fixture(scope="module")
def parity(comfy, tmp_path_factory):
    import torch

    import os

    run_parity = load_parity_harness()
    reason = run_parity.missing()
    if reason:
        pytest.skip(f"parity with the authors' code SKIPPED: {reason}")
    if os.environ.get("EYE_PARITY_FULL") != "1":
        # the golden tests above compare with the authors' side on every run; this one re-runs it
        # from their checkout (minutes more), for when their code or the harness changed
        pytest.skip("full parity run against the authors' checkout SKIPPED: the golden check ran instead; set "
                    "EYE_PARITY_FULL=1 to rerun it from their code")
    threads = torch.get_num_threads()
    try:  # 64x64 latents through a six-row batch: two threads pay off here, unlike for the tiny tests
        summary = run_parity.main(["--parity", "--threads", "2",
                                   "--out", str(tmp_path_factory.mktemp("parity") / "parity.json")])
    finally:
        torch.set_num_threads(threads)
    return run_parity, summary["runs"]


@pytest.mark.comfy
def test_the_inversions_agree(parity):
    run_parity, runs = parity
    for role, gap in runs["parity"]["inversion_noise_max_abs"].items():
        assert gap < run_parity.TOLERANCE, f"the {role} image's inversion noise maps differ by {gap:.3g}"


@pytest.mark.comfy
def test_every_match_is_the_authors_or_a_near_tie(parity):
    run_parity, runs = parity
    matches = runs["parity"]["matches"]
    assert matches["calls"] > 0 and matches["unpaired_calls"] == 0 and matches["left_unused"] == 0, matches
    assert matches["disagreements"] == 0, matches
    assert matches["near_ties"] <= matches["tokens_compared"] * 1e-4, matches


@pytest.mark.comfy
def test_every_step_within_the_tolerance_with_near_ties_taken_the_authors_way(parity):
    run_parity, runs = parity
    run = runs["parity"]
    assert len(run["max_abs_per_step"]) == run_parity.STEPS - run_parity.SKIP
    assert run["max_abs"] < run_parity.TOLERANCE, run["max_abs_per_step"]
