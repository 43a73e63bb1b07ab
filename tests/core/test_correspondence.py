"""Dense cosine nearest-neighbour matching (eye_core.matching) and its result (eye_core.correspondence).

(About 600 lines: the matcher's contract, case by case, against the authors' loop; split by
concern it would repeat the fixtures in every file.)

The reference behaviour is the authors' per-pixel loop (``matching_feature`` in their
``appearance_transfer_model_final.py``), rewritten here as a naive test oracle with the
pack's mask semantics: every target token inside the target mask is compared with every
reference token, reference tokens outside the reference mask are *excluded* (the authors
multiplied them by zero, so they could still win a row whose similarities are all
negative: the defect the pack fixes), and the first maximum wins.

Exact index equality between a Python loop (one matrix-vector product per token) and the
chunked matrix product needs rows without near-ties: the two paths round differently in
the last bits. Every parity test therefore asserts its own precondition, the gap between
the best and second-best valid similarity (computed in float64), and is built so that it
holds: float64 features for fully random data (rounding ~1e-16, gap checked > 1e-9) and
planted partners for the float32 test (gap checked > 1e-4).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eye_for_an_eye.eye_core import matching as corr_mod
from eye_for_an_eye.eye_core.correspondence import Correspondence
from eye_for_an_eye.eye_core.matching import match
from eye_for_an_eye.eye_core.mask_grid import mask_at_grid as resize_mask


# --------------------------------------------------------------------------- helpers


def naive_loop(target, reference, target_valid, reference_valid):
    """The authors' loop, one token at a time, with masked-out references excluded.

    target (C, h_t, w_t), reference (C, h_r, w_r); valid masks bool (h, w) or None.
    Returns a (h_t * w_t,) int64 numpy array of flat reference indices, -1 if unmatched.
    """
    C, h_t, w_t = target.shape
    _, h_r, w_r = reference.shape
    out = np.full(h_t * w_t, -1, dtype=np.int64)
    style_vec = reference.reshape(1, C, h_r * w_r)
    ref_ok = None if reference_valid is None else reference_valid.reshape(-1).numpy()
    for x_coor, y_coor in np.ndindex(w_t, h_t):
        if target_valid is not None and not bool(target_valid[y_coor, x_coor]):
            continue
        out_vec = F.normalize(target[:, y_coor, x_coor].view(1, -1))
        style_n = F.normalize(style_vec)
        cos_map = torch.matmul(out_vec, style_n).view(h_r * w_r).cpu().numpy()
        if ref_ok is not None:
            cos_map = np.where(ref_ok, cos_map, -np.inf)
        out[y_coor * w_t + x_coor] = int(cos_map.argmax())
    return out


def min_gap(target, reference, target_valid, reference_valid):
    """Smallest best-minus-second-best valid cosine over the matched rows (float64)."""
    C = target.shape[0]
    t = F.normalize(target.reshape(C, -1).T.double(), dim=-1)
    r = F.normalize(reference.reshape(C, -1).T.double(), dim=-1)
    sim = t @ r.T
    if reference_valid is not None:
        sim[:, ~reference_valid.reshape(-1)] = -math.inf
    if target_valid is not None:
        sim = sim[target_valid.reshape(-1)]
    top2 = sim.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def blob_mask(h, w, cy, cx, ry, rx):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy + 0.5) / h - cy) / ry) ** 2 + (((xx + 0.5) / w - cx) / rx) ** 2 <= 1.0


def fourier_map(h, w, channels=128, seed=0, max_freq=2.0):
    """Smooth features, distinctive per position: random Fourier features of the centre."""
    g = torch.Generator().manual_seed(seed)
    omega = torch.randn(channels // 2, 2, generator=g, dtype=torch.float64) * max_freq
    phase = torch.rand(channels // 2, generator=g, dtype=torch.float64) * 2 * math.pi
    yy, xx = torch.meshgrid(
        (torch.arange(h, dtype=torch.float64) + 0.5) / h,
        (torch.arange(w, dtype=torch.float64) + 0.5) / w,
        indexing="ij",
    )
    pos = torch.stack([yy, xx], dim=-1)  # (h, w, 2)
    arg = 2 * math.pi * pos @ omega.T + phase  # (h, w, C/2)
    feats = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
    return feats.permute(2, 0, 1).unsqueeze(0).float()  # (1, C, h, w)


def mirrored_index(h, w):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (yy * w + (w - 1 - xx)).reshape(-1)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("chunk_size", [37, 200, None])
def test_parity_with_naive_loop_float64_random(chunk_size):
    g = torch.Generator().manual_seed(1)
    C = 48
    target = torch.randn(2, C, 24, 40, generator=g, dtype=torch.float64)
    reference = torch.randn(1, C, 32, 32, generator=g, dtype=torch.float64)
    # masks at image size, different sizes and layouts for target and reference
    t_mask = torch.stack(
        [
            blob_mask(192, 320, 0.5, 0.45, 0.4, 0.35).float(),
            blob_mask(192, 320, 0.4, 0.6, 0.35, 0.45).float(),
        ]
    )  # (2, H, W) float
    r_mask = blob_mask(100, 100, 0.55, 0.5, 0.3, 0.4)  # (H, W) bool
    result = match(target, reference, t_mask, r_mask, chunk_size=chunk_size)

    assert result.target_grid == (24, 40) and result.reference_grid == (32, 32)
    t_valid = resize_mask(t_mask, (24, 40))
    r_valid = resize_mask(r_mask, (32, 32))
    assert torch.equal(result.target_mask, t_valid)
    assert torch.equal(result.reference_mask, r_valid)
    for b in range(2):
        assert min_gap(target[b], reference[0], t_valid[b], r_valid[0]) > 1e-9
        expected = naive_loop(target[b], reference[0], t_valid[b], r_valid[0])
        assert np.array_equal(result.index[b].numpy(), expected)
    assert (result.index >= 0).sum() == t_valid.sum()  # the chunked run really ran in chunks
    if chunk_size is not None:
        assert chunk_size < 24 * 40


def test_parity_with_naive_loop_float32_planted_partners():
    g = torch.Generator().manual_seed(2)
    C = 64
    h_t, w_t, h_r, w_r = 24, 40, 32, 32
    reference = torch.randn(1, C, h_r, w_r, generator=g)
    r_mask = blob_mask(h_r, w_r, 0.5, 0.5, 0.45, 0.45)
    valid_idx = torch.nonzero(r_mask.reshape(-1)).squeeze(1)
    pick = valid_idx[torch.randint(len(valid_idx), (h_t * w_t,), generator=g)]
    ref_tokens = reference[0].reshape(C, -1)
    target = ref_tokens[:, pick] + 0.3 * torch.randn(C, h_t * w_t, generator=g)
    target = target.reshape(1, C, h_t, w_t)
    t_mask = blob_mask(h_t, w_t, 0.5, 0.5, 0.45, 0.4)

    result = match(target, reference, t_mask, r_mask, chunk_size=64)
    assert min_gap(target[0], reference[0], t_mask, r_mask) > 1e-4
    expected = naive_loop(target[0], reference[0], t_mask, r_mask)
    assert np.array_equal(result.index[0].numpy(), expected)
    inside = t_mask.reshape(-1)
    assert torch.equal(result.index[0, inside], pick[inside])
    assert result.score.dtype == torch.float32


def test_parity_equal_batches_and_tokens_api():
    g = torch.Generator().manual_seed(3)
    C = 32
    target = torch.randn(3, C, 12, 20, generator=g, dtype=torch.float64)
    reference = torch.randn(3, C, 16, 10, generator=g, dtype=torch.float64)
    r_mask = torch.rand(3, 1, 40, 25, generator=g) > 0.3  # (B, 1, H, W), ragged masks
    maps = match(target, reference, reference_mask=r_mask, chunk_size=16)
    tokens = match(
        target.flatten(2).transpose(1, 2),
        reference.flatten(2).transpose(1, 2),
        reference_mask=r_mask,
        target_grid=(12, 20),
        reference_grid=(16, 10),
        chunk_size=50,
    )
    assert torch.equal(maps.index, tokens.index)
    r_valid = resize_mask(r_mask, (16, 10))
    for b in range(3):
        assert min_gap(target[b], reference[b], None, r_valid[b]) > 1e-9
        assert np.array_equal(maps.index[b].numpy(), naive_loop(target[b], reference[b], None, r_valid[b]))


def test_chunk_sizes_and_budgets_agree():
    g = torch.Generator().manual_seed(4)
    target = torch.randn(2, 40, 16, 16, generator=g, dtype=torch.float64)
    reference = torch.randn(1, 40, 16, 16, generator=g, dtype=torch.float64)
    t_mask = blob_mask(16, 16, 0.5, 0.5, 0.4, 0.4)
    full = match(target, reference, t_mask, chunk_size=256)
    for kwargs in ({"chunk_size": 1}, {"chunk_size": 7}, {"memory_budget": 1}, {}):
        other = match(target, reference, t_mask, **kwargs)
        assert torch.equal(other.index, full.index)
        assert torch.equal(other.mutual, full.mutual)
        torch.testing.assert_close(other.score, full.score)


def test_chunk_size_from_budget():
    # the similarity chunk is what the budget pays for, after the normalised copies
    rows = corr_mod.chunk_rows(n_target=16384, n_reference=16384, channels=320, batch=1,
                               memory_budget=256 * 2**20)
    fixed = 2 * 16384 * 320 * 4
    assert rows * 16384 * 4 <= 256 * 2**20 - fixed
    assert rows >= 1024
    assert corr_mod.chunk_rows(100, 100, 8, 1, memory_budget=1) == 1
    assert corr_mod.chunk_rows(100, 100, 8, 1, memory_budget=2**40) == 100


# --------------------------------------------------------------------------- masks


def test_all_negative_row_never_matches_masked_out_reference():
    g = torch.Generator().manual_seed(5)
    C = 16
    t_vec = torch.randn(C, generator=g)
    reference = torch.randn(1, C, 4, 4, generator=g)
    r_mask = torch.zeros(4, 4, dtype=torch.bool)
    r_mask[1:3, 1:3] = True
    # valid reference tokens all point away from the target token
    inside = r_mask.reshape(-1)
    ref_tokens = reference[0].reshape(C, -1)
    ref_tokens[:, inside] = -t_vec[:, None] + 0.5 * torch.randn(C, int(inside.sum()), generator=g)
    reference = ref_tokens.reshape(1, C, 4, 4)
    target = t_vec.reshape(1, C, 1, 1).expand(1, C, 2, 3).contiguous()
    sims = F.normalize(t_vec, dim=0) @ F.normalize(ref_tokens[:, inside], dim=0)
    assert (sims < 0).all()

    # the authors' zero-multiplication picks a masked-out (zero) token here ...
    zeroed = ref_tokens * inside
    authors = int((F.normalize(t_vec, dim=0) @ F.normalize(zeroed, dim=0)).argmax())
    assert not bool(inside[authors])
    # ... the pack never does
    result = match(target, reference, reference_mask=r_mask)
    assert result.matched.all()
    assert inside[result.index].all()
    assert (result.index == torch.nonzero(inside).squeeze(1)[sims.argmax()]).all()
    assert (result.score < 0).all()


def test_unmatched_targets_and_scores():
    g = torch.Generator().manual_seed(6)
    target = torch.randn(2, 8, 6, 5, generator=g)
    reference = torch.randn(2, 8, 7, 4, generator=g)
    t_mask = torch.rand(2, 6, 5, generator=g) > 0.5
    result = match(target, reference, t_mask)
    flat = t_mask.reshape(2, -1)
    assert torch.equal(result.matched, flat)
    assert (result.index[~flat] == -1).all()
    assert (result.index[flat] >= 0).all() and (result.index < 28).all()
    assert (result.score[~flat] == 0).all()
    assert not result.mutual[~flat].any()
    assert (result.score >= -1).all() and (result.score <= 1).all()
    # scores are the cosine of the chosen pair
    t = F.normalize(target.flatten(2).transpose(1, 2), dim=-1)
    r = F.normalize(reference.flatten(2).transpose(1, 2), dim=-1)
    for b in range(2):
        idx = result.index[b, flat[b]]
        cos = (t[b, flat[b]] * r[b, idx]).sum(-1)
        torch.testing.assert_close(result.score[b, flat[b]], cos)


def test_scores_clamped_for_identical_features():
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(1, 333, 9, 11, generator=g) * 1e3
    result = match(feats, feats.clone())
    assert torch.equal(result.index[0], torch.arange(99))
    assert (result.score <= 1).all() and (result.score >= 0.999).all()
    assert result.mutual.all()


def test_masks_of_any_size_and_layout():
    g = torch.Generator().manual_seed(8)
    target = torch.randn(2, 8, 10, 14, generator=g)
    reference = torch.randn(1, 8, 9, 9, generator=g)
    soft = torch.rand(64, 90, generator=g)
    soft[soft < 0.6] = 0  # holes, so "above 0" selects some tokens and not others
    expected = F.interpolate(soft[None, None], size=(10, 14), mode="bilinear", align_corners=False)[0, 0] > 0
    for m in (soft, soft[None], soft[None, None], soft[None].expand(2, 64, 90), soft >= 0.5):
        got = resize_mask(m, (10, 14))
        assert got.dtype == torch.bool and got.shape[1:] == (10, 14)
        if m.dtype != torch.bool:
            assert torch.equal(got[0], expected)
    # a mask already at the grid is only thresholded: a token is inside where the mask is above 0 (the authors')
    at_grid = torch.rand(10, 14, generator=g) * (torch.rand(10, 14, generator=g) > 0.5)
    assert torch.equal(resize_mask(at_grid, (10, 14))[0], at_grid > 0)
    # integer masks (0/1 or 0/255) are read as "non-zero is inside" before resizing
    as_u8 = (soft >= 0.5).to(torch.uint8) * 255
    assert torch.equal(resize_mask(as_u8, (64, 90))[0], soft >= 0.5)
    result = match(target, reference, soft, torch.ones(1, 1, 3, 3))
    assert torch.equal(result.target_mask, expected[None])
    assert result.reference_mask.all()


def test_empty_target_mask_is_refused_and_gives_no_matches_without_the_check():
    target = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"(?s)target_mask leaves no target token at the 5x5 token grid.*row\(s\) \[0\]"
                                         r".*larger mask"):
        match(target, torch.randn(1, 4, 5, 5), torch.zeros(5, 5))
    result = match(target, torch.randn(1, 4, 5, 5), torch.zeros(5, 5), check_masks=False)
    assert not result.matched.any()
    assert (result.index == -1).all()


def test_target_mask_with_pixels_but_no_token_is_refused_naming_the_grid():
    # a 12-pixel-wide stripe of a 256-pixel-wide mask between two token centres of a 16x16 grid
    stripe = torch.zeros(1, 256, 256)
    stripe[:, :, 106:118] = 1.0
    stripe_copy = stripe.clone()
    with pytest.raises(ValueError, match=r"(?s)target_mask leaves no target token at the 16x16 token grid.*1/16"):
        match(torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16), target_mask=stripe)
    assert torch.equal(stripe, stripe_copy)  # nothing mutated
    # the same stripe at a grid fine enough to hold it: matched inside it only
    result = match(torch.randn(1, 8, 64, 64), torch.randn(1, 8, 64, 64), target_mask=stripe)
    columns = result.matched.reshape(64, 64).any(dim=0).nonzero().flatten().tolist()
    assert columns == [26, 27, 28, 29]


def test_empty_reference_mask_without_check_is_safe():
    # check_masks=False skips the host-side emptiness check: rows then stay unmatched
    result = match(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5),
                   reference_mask=torch.stack([torch.zeros(5, 5), torch.ones(5, 5)]), check_masks=False)
    assert not result.matched[0].any() and result.matched[1].all()


# --------------------------------------------------------------------------- ties and mutual


def test_ties_go_to_the_lowest_index_across_chunks():
    # one-hot features: every similarity is exactly 0 or 1, so ties are exact
    C = 4
    ref_codes = torch.tensor([2, 0, 1, 0, 2, 1, 3, 0])  # duplicates: code 0 at 1, 3, 7 ...
    tgt_codes = torch.tensor([0, 1, 2, 0, 0, 3, 1, 2, 0, 0])
    reference = F.one_hot(ref_codes, C).float().T.reshape(1, C, 2, 4)
    target = F.one_hot(tgt_codes, C).float().T.reshape(1, C, 2, 5)
    first = {int(c): int((ref_codes == c).nonzero()[0]) for c in ref_codes.unique()}
    for chunk in (1, 2, 3, 10):
        result = match(target, reference, chunk_size=chunk)
        assert result.index[0].tolist() == [first[int(c)] for c in tgt_codes]
        # mutual partner of a reference token is its lowest-index best target
        first_t = {int(c): int((tgt_codes == c).nonzero()[0]) for c in tgt_codes.unique()}
        expected_mutual = [i == first_t[int(c)] for i, c in enumerate(tgt_codes)]
        assert result.mutual[0].tolist() == expected_mutual


def test_ties_with_reference_mask_pick_lowest_valid():
    C = 3
    reference = F.one_hot(torch.tensor([1, 1, 1, 1, 2, 0]), C).float().T.reshape(1, C, 2, 3)
    target = F.one_hot(torch.tensor([1, 0]), C).float().T.reshape(1, C, 1, 2)
    r_mask = torch.tensor([[False, False, True], [True, True, True]])
    result = match(target, reference, reference_mask=r_mask, chunk_size=1)
    assert result.index[0].tolist() == [2, 5]


def test_mutual_flag_matches_brute_force():
    g = torch.Generator().manual_seed(9)
    target = torch.randn(2, 24, 9, 13, generator=g, dtype=torch.float64)
    reference = torch.randn(1, 24, 11, 7, generator=g, dtype=torch.float64)
    t_mask = torch.rand(2, 9, 13, generator=g) > 0.3
    r_mask = torch.rand(11, 7, generator=g) > 0.3
    result = match(target, reference, t_mask, r_mask, chunk_size=10)
    t = F.normalize(target.flatten(2).transpose(1, 2), dim=-1)
    r = F.normalize(reference.flatten(2).transpose(1, 2), dim=-1)
    for b in range(2):
        sim = t[b] @ r[0].T
        sim[:, ~r_mask.reshape(-1)] = -math.inf
        sim[~t_mask[b].reshape(-1)] = -math.inf
        back = sim.argmax(dim=0)  # best target of each reference token, within the target mask
        idx = result.index[b]
        matched = idx >= 0
        expected = torch.zeros_like(matched)
        expected[matched] = back[idx[matched]] == torch.nonzero(matched).squeeze(1)
        assert torch.equal(result.mutual[b], expected)
        assert expected.any() and not expected[matched].all()


def test_mutual_can_be_skipped():
    result = match(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), mutual=False)
    assert result.mutual is None


# --------------------------------------------------------------------------- gather


def test_gather_tokens_and_maps():
    g = torch.Generator().manual_seed(10)
    target = torch.randn(2, 6, 4, 5, generator=g)
    reference = torch.randn(1, 6, 3, 3, generator=g)
    t_mask = torch.rand(2, 4, 5, generator=g) > 0.4
    result = match(target, reference, t_mask)
    ref_tokens = reference.flatten(2).transpose(1, 2)  # (1, 9, 6)
    own = target.flatten(2).transpose(1, 2)  # (2, 20, 6)
    out = result.gather(ref_tokens, fallback=own)
    assert out.shape == (2, 20, 6)
    for b in range(2):
        for i in range(20):
            j = int(result.index[b, i])
            want = own[b, i] if j < 0 else ref_tokens[0, j]
            assert torch.equal(out[b, i], want)
    # without fallback, unmatched tokens are zero
    zero_filled = result.gather(ref_tokens)
    assert (zero_filled[~result.matched] == 0).all()
    # maps in, maps out
    out_map = result.gather(reference, fallback=target)
    assert torch.equal(out_map, out.transpose(1, 2).reshape(2, 6, 4, 5))
    # dtype of the reference is kept (fp16 features during sampling)
    assert result.gather(ref_tokens.half(), fallback=own).dtype == torch.float16


def test_gather_rejects_wrong_shapes():
    result = match(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="reference_tokens"):
        result.gather(torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="fallback"):
        result.gather(torch.randn(1, 4, 4), fallback=torch.randn(1, 8, 4))


# --------------------------------------------------------------------------- resample


@pytest.mark.parametrize("src,dst", [(32, 64), (64, 32)])
def test_resample_mirror_lands_on_mirrored_position(src, dst):
    target = fourier_map(src, src, seed=11)
    g = torch.Generator().manual_seed(12)
    noisy = target + 0.05 * torch.randn(target.shape, generator=g)
    mirrored = torch.flip(target, dims=[-1])
    result = match(noisy, mirrored)
    at_src = (result.index[0] == mirrored_index(src, src)).float().mean()
    assert at_src >= 0.95
    resampled = result.resample((dst, dst), (dst, dst))
    assert resampled.target_grid == (dst, dst) and resampled.reference_grid == (dst, dst)
    at_dst = (resampled.index[0] == mirrored_index(dst, dst)).float().mean()
    assert at_dst >= 0.95, f"{src}->{dst}: only {at_dst:.3f} on the mirrored position"
    # and back again
    back = resampled.resample((src, src), (src, src))
    assert (back.index[0] == mirrored_index(src, src)).float().mean() >= 0.95


def test_resample_nearest_mode_is_pure_inheritance():
    target = fourier_map(32, 32, seed=13)
    result = match(target, torch.flip(target, dims=[-1]))
    up = result.resample((64, 64), (64, 64), mode="nearest")
    # every new token takes its containing old token's match, mapped by centre scaling
    rows = torch.arange(64)
    old = (rows // 2)[:, None] * 32 + (rows // 2)[None, :]
    old_idx = result.index[0, old.reshape(-1)]
    ry, rx = old_idx // 32, old_idx % 32
    expected = (2 * ry + 1) * 64 + (2 * rx + 1)
    assert torch.equal(up.index[0], expected)
    # which puts only 1/4 of a mirror exactly right (2x2 new tokens share one): why "smooth" is the default
    assert (up.index[0] == mirrored_index(64, 64)).float().mean() < 0.6


def test_resample_non_square_identity_and_offsets():
    # target = reference shifted: the field is a translation, smooth everywhere
    feats = fourier_map(24, 40, seed=14)
    result = match(feats, feats.clone())
    assert torch.equal(result.index[0], torch.arange(24 * 40))
    for grid in [(48, 80), (12, 20), (36, 60), (24, 40)]:
        r = result.resample(grid, grid)
        assert (r.index[0] == torch.arange(grid[0] * grid[1])).float().mean() >= 0.95
    # different target and reference grids: the reference grid is scaled independently
    r = result.resample((24, 40), (48, 80))
    yy, xx = torch.meshgrid(torch.arange(24), torch.arange(40), indexing="ij")
    expected = ((2 * yy) * 80 + 2 * xx).reshape(-1)
    ok = (r.index[0] == expected) | (r.index[0] == expected + 1) | (r.index[0] == expected + 80) | (
        r.index[0] == expected + 81)
    assert ok.all()


def test_resample_does_not_blend_across_a_seam():
    # left half of the target matches the right half of the reference and vice versa:
    # interpolating across the seam would land in the middle of the reference
    h, w = 16, 16
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    src_x = torch.where(xx < w // 2, xx + w // 2, xx - w // 2)
    index = (yy * w + src_x).reshape(1, -1)
    c = Correspondence(index=index, score=torch.ones(1, h * w), mutual=None,
                       target_grid=(h, w), reference_grid=(h, w))
    up = c.resample((64, 64), (64, 64))
    YY, XX = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    want_x = torch.where(XX < 32, XX + 32, XX - 32)
    got_x = (up.index[0] % 64).reshape(64, 64)
    # at the seam the nearest old position is used: off by at most half the 4x scale
    # factor (2 tokens); a blend of the two halves would be off by ~16-32 tokens
    assert (got_x - want_x).abs().max() <= 2
    assert (got_x == want_x).float().mean() >= 0.9


def test_resample_keeps_unmatched_and_masks():
    g = torch.Generator().manual_seed(15)
    target = fourier_map(32, 32, seed=16)
    t_mask = blob_mask(32, 32, 0.5, 0.5, 0.3, 0.4)
    r_mask = blob_mask(32, 32, 0.5, 0.5, 0.45, 0.45)
    result = match(target + 0.1 * torch.randn(target.shape, generator=g), torch.flip(target, dims=[-1]),
                   t_mask, r_mask)
    up = result.resample((64, 64), (64, 64))
    half = torch.arange(64) // 2
    t_up = t_mask[half][:, half]
    r_up = r_mask[half][:, half]
    assert torch.equal(up.target_mask[0], t_up)
    assert torch.equal(up.reference_mask[0], r_up)
    assert torch.equal(up.matched[0], t_up.reshape(-1))
    # upsampled matches stay inside the (resampled) reference mask
    assert r_up.reshape(-1)[up.index[0, up.matched[0]]].all()
    # scores and mutual flags are inherited from the nearest old token
    old = (half[:, None] * 32 + half[None, :]).reshape(-1)
    assert torch.equal(up.score[0], result.score[0, old])
    assert torch.equal(up.mutual[0], result.mutual[0, old])
    down = result.resample((16, 16), (16, 16))
    assert down.index.shape == (1, 256) and torch.equal(down.matched, down.target_mask.reshape(1, -1))


def test_reference_positions():
    index = torch.tensor([[0, 5, -1, 11]])
    c = Correspondence(index=index, score=torch.zeros(1, 4), mutual=None, target_grid=(2, 2),
                       reference_grid=(3, 4))
    pos = c.reference_positions()
    assert pos.shape == (1, 4, 2)
    torch.testing.assert_close(pos[0, 0], torch.tensor([0.5 / 3, 0.5 / 4]))
    torch.testing.assert_close(pos[0, 1], torch.tensor([1.5 / 3, 1.5 / 4]))
    assert torch.isnan(pos[0, 2]).all()
    torch.testing.assert_close(pos[0, 3], torch.tensor([2.5 / 3, 3.5 / 4]))


def test_to_device_moves_every_tensor():
    result = match(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), torch.ones(3, 3), torch.ones(3, 3))
    moved = result.to("meta")
    for name in ("index", "score", "mutual", "target_mask", "reference_mask"):
        assert getattr(moved, name).device.type == "meta"
    assert moved.target_grid == result.target_grid
    assert result.index.device.type == "cpu"


def test_half_precision_features_are_matched_in_float32():
    g = torch.Generator().manual_seed(17)
    target = torch.randn(1, 32, 8, 8, generator=g)
    reference = torch.randn(1, 32, 8, 8, generator=g)
    r16 = match(target.half(), reference.half())
    r32 = match(target.half().float(), reference.half().float())
    assert torch.equal(r16.index, r32.index)
    assert r16.score.dtype == torch.float32
    assert match(target.double(), reference.double()).score.dtype == torch.float64


def test_input_is_not_modified():
    target = torch.randn(1, 4, 5, 5)
    reference = torch.randn(1, 4, 5, 5)
    t_copy, r_copy = target.clone(), reference.clone()
    match(target, reference, torch.ones(5, 5), torch.ones(5, 5), chunk_size=3)
    assert torch.equal(target, t_copy) and torch.equal(reference, r_copy)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    t = torch.randn(1, 8, 4, 4)
    r = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match=r"(?s)channels.*target.*reference"):
        match(t, torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match=r"(?s)reference_mask.*no reference token.*larger mask|pass none"):
        match(t, r, reference_mask=torch.zeros(64, 64))
    with pytest.raises(ValueError, match=r"(?s)reference_mask.*4x4"):
        # a sliver thinner than a token vanishes at the token grid
        sliver = torch.zeros(64, 64)
        sliver[:, 30:33] = 1
        match(t, r, reference_mask=sliver)
    with pytest.raises(ValueError, match=r"(?s)target_grid.*\(h, w\)"):
        match(t.flatten(2).transpose(1, 2), r.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match=r"(?s)target_grid.*15"):
        match(t.flatten(2).transpose(1, 2), r.flatten(2).transpose(1, 2), target_grid=(3, 5), reference_grid=(4, 4))
    with pytest.raises(ValueError, match=r"(?s)target_grid.*does not agree"):
        match(t, r, target_grid=(2, 8))
    with pytest.raises(ValueError, match=r"^the reference holds 3 images but the target 2: use one reference image "
                                         r"for every target, or one reference per target \(2\)\.$"):
        match(torch.randn(2, 8, 4, 4), torch.randn(3, 8, 4, 4))
    with pytest.raises(ValueError, match=r"^the reference holds 2 images but the target only one: use one reference "
                                         r"image per target"):
        match(torch.randn(1, 8, 4, 4), torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=r"(?s)target_mask.*batch"):
        match(torch.randn(2, 8, 4, 4), r, target_mask=torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match=r"(?s)target_mask.*\(H, W\), \(B, H, W\) or \(B, 1, H, W\)"):
        match(t, r, target_mask=torch.ones(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"(?s)target.*\(B, C, h, w\).*\(B, N, C\)"):
        match(torch.randn(8, 4, 4).flatten(), r)
    with pytest.raises(ValueError, match=r"(?s)target.*floating"):
        match(torch.ones(1, 8, 4, 4, dtype=torch.long), r)
    with pytest.raises(ValueError, match=r"(?s)chunk_size.*positive"):
        match(t, r, chunk_size=0)
    with pytest.raises(ValueError, match=r"(?s)mode"):
        match(t, r).resample((8, 8), mode="bicubic")
    with pytest.raises(ValueError, match=r"(?s)target_grid.*positive"):
        match(t, r).resample((0, 8))


def test_kernel_has_no_host_syncs():
    # on the meta device every host sync (.item(), .cpu(), bool(), nonzero) raises,
    # so running the whole matcher there proves it can run inside sampling on a GPU
    t = torch.randn(2, 16, 6, 7, device="meta")
    r = torch.randn(1, 16, 5, 5, device="meta")
    masks = torch.ones(2, 30, 35, device="meta"), torch.ones(1, 1, 20, 20, device="meta")
    for mutual in (True, False):
        result = match(t, r, *masks, chunk_size=5, mutual=mutual, check_masks=False)
        assert result.index.device.type == "meta" and result.index.shape == (2, 42)
    tokens = torch.randn(2, 42, 16, device="meta")
    assert result.gather(r, fallback=t).shape == (2, 16, 6, 7)
    assert result.gather(r.flatten(2).transpose(1, 2), fallback=tokens).shape == (2, 42, 16)
    assert result.resample((12, 14), (10, 10)).index.shape == (2, 168)
