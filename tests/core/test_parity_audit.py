"""The parity run's match audit (tests/parity/run_parity.py): it tells a float32 near-tie from a real
disagreement with the authors' matches, and gives only near-ties the authors' choice."""

import torch
from eye_test_support.pack import load_parity_harness

from eye_for_an_eye.eye_core.matching import match


def test_near_ties_take_the_authors_choice_and_real_disagreements_are_reported():
    run_parity = load_parity_harness()
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(1, 16, 8, generator=generator)
    reference[0, 5] = reference[0, 4] * (1 + 1e-7)  # tokens 4 and 5: the same direction, a float32 near-tie
    target = reference[:, [4, 9, 2, 11]] + 1e-3 * torch.randn(1, 4, 8, generator=generator)
    ours = match(target, reference, target_grid=(2, 2), reference_grid=(4, 4), mutual=False)
    assert ours.index[0].tolist() in ([4, 9, 2, 11], [5, 9, 2, 11])
    theirs = ours.index[0].clone()
    theirs[0] = 9 - int(ours.index[0, 0])  # the other of the near-tied pair
    theirs[2] = 7  # a clearly worse token: a real disagreement
    audit = run_parity.MatchAudit([{"place": "up_1", "grid": 2, "index": theirs}], resolve_ties=True)
    audited = audit.check(ours, target, reference)
    summary = audit.summary()
    assert summary["near_ties"] == 1 and summary["disagreements"] == 1 and summary["tokens_compared"] == 4
    assert summary["largest_near_tie_gap"] < run_parity.NEAR_TIE < summary["smallest_disagreement_gap"]
    assert audited.index[0].tolist() == [int(theirs[0]), 9, 2, 11]  # only the near-tie changed
    assert ours.index[0, 2] == 2  # the input correspondence is not modified
    left = run_parity.MatchAudit([{"place": "up_1", "grid": 2, "index": theirs}], resolve_ties=False)
    assert torch.equal(left.check(ours, target, reference).index, ours.index)
