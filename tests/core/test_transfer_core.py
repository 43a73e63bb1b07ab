"""The transfer's pure-torch parts: schedule, rows, injection, AdaIN, feature bank, plan."""

import pytest
import torch

from eye_for_an_eye.eye_core.adain import labelled_adain, masked_adain
from eye_for_an_eye.eye_core.feature_bank import FeatureBank
from eye_for_an_eye.eye_core.rearrange import (FEATURE, KEY_VALUE, NOTHING, OFFICIAL, REARRANGE, STRUCTURE,
                                               SYMMETRIC, VALUE, TransferSchedule, choose_layers, edited_rows,
                                               inject)


def test_official_schedule_at_68_steps():
    schedule = TransferSchedule()
    actions = [schedule.action(i, 68) for i in range(68)]
    assert all(a == NOTHING for a in actions[:11])
    assert [i for i, a in enumerate(actions) if a == STRUCTURE] == [11, 16, 21, 26, 31, 36]
    assert all(actions[i] == REARRANGE for i in range(11, 68) if i not in (11, 16, 21, 26, 31, 36))
    assert [i for i in range(68) if schedule.adain(i, 68)] == list(range(49, 68))


@pytest.mark.parametrize("total", [20, 34, 50, 100])
def test_schedule_scales_with_the_step_count(total):
    schedule = TransferSchedule()
    actions = [schedule.action(i, total) for i in range(total)]
    structure = [i for i, a in enumerate(actions) if a == STRUCTURE]
    first = actions.index(STRUCTURE)
    assert actions[:first] == [NOTHING] * first and first == round(11 / 68 * total)
    # six injections like the official preset, spread over the same part of the schedule
    assert len(structure) == 6 and structure[-1] < 40 / 68 * total
    assert structure == sorted(set(structure))
    assert actions.count(REARRANGE) == total - first - 6
    assert [i for i, a in enumerate(actions) if a == STRUCTURE] == sorted(schedule.structure_steps(total))


def test_structure_interval_zero_turns_structure_injection_off():
    schedule = TransferSchedule(structure_interval=0.0)
    assert STRUCTURE not in [schedule.action(i, 68) for i in range(68)]


def test_widget_rounded_defaults_give_the_official_schedule_at_every_step_count():
    """The nodes show 11/68 as 0.1618 (and so on); read back, that is the official schedule, not a neighbour."""
    exact = TransferSchedule()
    names = ("rearrange_start", "rearrange_end", "structure_end", "structure_interval", "adain_start", "adain_end")
    rounded = TransferSchedule(**{name: round(getattr(exact, name), 4) for name in names})
    for total in range(2, 1000):
        assert [rounded.action(i, total) for i in range(total)] == [exact.action(i, total) for i in range(total)], total
        assert [rounded.adain(i, total) for i in range(total)] == [exact.adain(i, total) for i in range(total)], total
    typed = TransferSchedule(rearrange_start=0.162)  # a value the user chose stays theirs
    assert typed.rearrange_start == 0.162


def test_empty_range_does_nothing_and_fractions_are_checked():
    assert TransferSchedule(rearrange_start=0.5, rearrange_end=0.5).active_steps(68) == []
    with pytest.raises(ValueError, match="rearrange_start"):
        TransferSchedule(rearrange_start=1.5)


@pytest.mark.parametrize("order", [[1, 0], [0, 1], [0], [1]])
def test_edited_rows_follow_cond_or_uncond(order):
    rows = 2
    cond_rows = [r for c, kind in enumerate(order) if kind == 0 for r in range(c * rows, (c + 1) * rows)]
    uncond_rows = [r for c, kind in enumerate(order) if kind == 1 for r in range(c * rows, (c + 1) * rows)]
    assert edited_rows(order, rows, REARRANGE, OFFICIAL) == cond_rows
    assert edited_rows(order, rows, STRUCTURE, OFFICIAL) == uncond_rows
    assert edited_rows(order, rows, REARRANGE, SYMMETRIC) == list(range(rows * len(order)))
    assert edited_rows(order, rows, NOTHING, SYMMETRIC) == []


def test_injection_modes_write_only_their_inputs():
    n = torch.zeros(4, 3, 2)
    context, value = n.clone() + 1, n.clone() + 2
    new = torch.full((2, 3, 2), 9.0)
    a, b, c = inject(n, context, value, [1, 3], new, FEATURE)
    assert (a[[1, 3]] == 9).all() and (b[[1, 3]] == 9).all() and (c[[1, 3]] == 9).all()
    assert (a[[0, 2]] == 0).all() and (b[[0, 2]] == 1).all() and (c[[0, 2]] == 2).all()
    a, b, c = inject(n, context, value, [1, 3], new, VALUE)
    assert a is n and b is context and (c[[1, 3]] == 9).all()
    a, b, c = inject(n, context, value, [1, 3], new, KEY_VALUE)
    assert a is n and (b[[1, 3]] == 9).all() and (c[[1, 3]] == 9).all()
    assert (n == 0).all() and (context == 1).all()  # inputs untouched


def test_choose_layers_by_level():
    levels = [["fine_a", "fine_b"], ["mid"], ["coarse"]]
    assert choose_layers(levels, "two finest decoder levels") == {"fine_a", "fine_b", "mid"}
    assert choose_layers(levels, "second finest decoder level") == {"mid"}
    assert choose_layers(levels, "all decoder levels") == {"fine_a", "fine_b", "mid", "coarse"}


def test_plain_adain_matches_reference_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 12, generator=generator) * 3 + 1
    reference = torch.randn(1, 4, 10, 6, generator=generator) * 0.5 - 2
    out = masked_adain(x, reference)
    assert torch.allclose(out.mean(dim=(2, 3)), reference.mean(dim=(2, 3)).expand(2, 4), atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3)), reference.std(dim=(2, 3)).expand(2, 4), atol=1e-3)


def test_masked_adain_keeps_the_background_and_uses_masked_statistics():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, generator=generator)
    reference = torch.randn(1, 4, 16, 16, generator=generator)
    reference[..., :, 8:] += 50.0  # outside the reference mask: must not matter
    target_mask = torch.zeros(1, 128, 128)
    target_mask[:, :64] = 1.0  # top half (mask given at image size)
    reference_mask = torch.zeros(1, 16, 16)
    reference_mask[:, :, :8] = 1.0
    out = masked_adain(x, reference, target_mask, reference_mask)
    assert torch.equal(out[..., 9:, :], x[..., 9:, :])  # background rows untouched (beyond the soft border)
    inside = out[..., :7, :]
    ref_inside = reference[..., :, :8]
    assert (inside.mean(dim=(2, 3)) - ref_inside.mean(dim=(2, 3))).abs().max() < 0.3


def _authors_masked_adain(content, style, content_mask, style_mask, eps=1e-5):
    """The authors' masked AdaIN on one (C, H, W) latent, transcribed: statistics over the pixels where the
    (bilinearly resized) mask is exactly 1, unbiased variance; blended back with the soft content mask."""
    def stats(feat, mask):
        picked = feat.reshape(feat.shape[0], -1)[:, mask.reshape(-1) == 1]
        return picked.mean(dim=1).view(-1, 1, 1), (picked.var(dim=1) + eps).sqrt().view(-1, 1, 1)

    style_mean, style_std = stats(style, style_mask)
    content_mean, content_std = stats(content, content_mask)
    moved = (content - content_mean) / content_std * style_std + style_mean
    return content * (1 - content_mask) + moved * content_mask


def test_masked_adain_is_the_authors_on_sam_like_masks():
    """A 512 px mask resized to the 64x64 latent as the authors do (bilinear): the same result as theirs."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 64, 64, generator=generator) * 2 + 0.5
    reference = torch.randn(1, 4, 64, 64, generator=generator) * 0.7 - 1
    yy, xx = torch.meshgrid(torch.arange(512.0), torch.arange(512.0), indexing="ij")
    target_masks = torch.stack([((yy - 250) ** 2 / 150**2 + (xx - 230) ** 2 / 190**2 <= 1).float(),
                                ((yy - 300) ** 2 / 120**2 + (xx - 280) ** 2 / 90**2 <= 1).float()])
    reference_mask = ((yy - 200).abs() < 140).float() * ((xx - 260).abs() < 170).float()
    out = masked_adain(x, reference, target_masks, reference_mask[None])
    down = lambda m: F.interpolate(m.view(1, 1, 512, 512), size=(64, 64), mode="bilinear").view(64, 64)  # noqa: E731
    for b in range(2):
        theirs = _authors_masked_adain(x[b], reference[0], down(target_masks[b]), down(reference_mask))
        assert torch.allclose(out[b], theirs, atol=1e-5), (out[b] - theirs).abs().max()


def test_masked_adain_of_a_sliver_falls_back_to_soft_weights():
    """A mask with no latent pixel covered entirely (where the authors' code divides by zero) stays finite."""
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 16, 16, generator=generator)
    reference = torch.randn(1, 4, 16, 16, generator=generator) + 3
    sliver = torch.zeros(1, 128, 128)
    sliver[:, 60:64, 30:90] = 1.0  # 4 px high: half a latent pixel
    out = masked_adain(x, reference, sliver, torch.ones(1, 16, 16))
    assert torch.isfinite(out).all() and not torch.equal(out, x)


def test_feature_bank_budget_is_per_latent():
    tokens = torch.randn(2, 6, 4)  # cond and uncond chunks of one row
    per_latent = 2 * tokens.numel() * 2  # two layers, fp16
    bank = FeatureBank({"a", "b"}, budget_bytes=per_latent * 2 + 1)
    for index in range(4):
        bank.record(index, "a", [1, 0], tokens, (2, 3))
        bank.record(index, "b", [1, 0], tokens, (2, 3))
        bank.record(index, "ignored", [1, 0], tokens, (2, 3))
        bank.commit(index)
    assert bank.indices == [0, 1] and bank.nbytes == 2 * per_latent
    cond, grid = bank.get(0, "a", 0)
    assert grid == (2, 3) and cond.dtype == torch.float16 and torch.allclose(cond.float(), tokens[1:], atol=1e-2)
    assert bank.has(1, 1, {"a", "b"}) and not bank.has(2, 1, {"a"}) and bank.get(0, "ignored", 0) is None


def test_fixed_correspondence_obeys_the_patch_masks():
    from eye_for_an_eye.eye_core.matching import match
    from eye_for_an_eye.eye_core.trajectory import EF_DDPM, Trajectory
    from eye_for_an_eye.eye_core.transfer import TransferPlan

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 8, 4, 6, generator=generator)
    correspondence = match(features, features)  # no masks at matching time
    trajectory = Trajectory(sigmas=torch.tensor([2.0, 1.0]), latents=torch.zeros(2, 1, 4, 8, 12),
                            noise=torch.zeros(1, 1, 4, 8, 12), method=EF_DDPM, cfg=3.5, total_steps=1, start_step=0,
                            seed=0)
    target_mask = torch.zeros(1, 32, 48)
    target_mask[..., :24] = 1.0  # left half of the target
    reference_mask = torch.zeros(1, 32, 48)
    reference_mask[:, :16] = 1.0  # top half of the reference
    plan = TransferPlan(reference=trajectory, structure=trajectory, layers=frozenset(), correspondence=correspondence,
                        target_mask=target_mask, reference_mask=reference_mask)
    fixed = plan._fixed_at((8, 12), (8, 12), "cpu")
    index = fixed.index.reshape(8, 12)
    assert (index[:, 6:] == -1).all()  # outside the target mask: unmatched, keeps its own features
    matched = index[index >= 0]
    assert matched.numel() > 0 and (matched // 12 < 4).all()  # never a reference token outside its mask


# ---------------------------------------------------------------- implicit (Cross-Image Attention) baseline

def _naive_cross_attention(q, k, v, heads, keep, contrast):
    """One query at a time, one head at a time: the definition the vectorised version must equal."""
    batch, n_q, width = q.shape
    d = width // heads
    out = torch.zeros(batch, n_q, width, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            valid = [j for j in range(k.shape[1]) if keep is None or keep[0, j]]
            for i in range(n_q):
                logits = torch.tensor([float(q[b, i, cols] @ k[0, j, cols]) / d ** 0.5 for j in valid],
                                      dtype=torch.float64)
                p = torch.softmax(logits, 0)
                p = ((p - p.mean()) * contrast + p.mean()).clamp(0, 1)
                out[b, i, cols] = sum(p[t] * v[0, j, cols].double() for t, j in enumerate(valid))
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_cross_image_attention_matches_its_definition(masked):
    from eye_for_an_eye.eye_core.rearrange import cross_image_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 8, generator=g), torch.randn(1, 7, 8, generator=g), torch.randn(1, 7, 8, generator=g))
    keep = torch.tensor([[True, False, True, True, False, True, True]]) if masked else None
    out = cross_image_attention(q, k, v, heads=2, key_mask=keep, contrast=1.67, chunk=2)
    assert torch.allclose(out.double(), _naive_cross_attention(q, k, v, 2, keep, 1.67), atol=1e-5)


def test_cross_image_attention_without_contrast_is_plain_attention_and_masked_keys_do_not_count():
    from eye_for_an_eye.eye_core.rearrange import cross_image_attention

    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(1, 6, 8, generator=g), torch.randn(1, 9, 8, generator=g), torch.randn(1, 9, 8, generator=g)
    heads = 2
    split = lambda t: t.reshape(1, -1, heads, 4).transpose(1, 2)  # noqa: E731
    plain = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    assert torch.allclose(cross_image_attention(q, k, v, heads, contrast=1.0), plain.transpose(1, 2).reshape(1, 6, 8),
                          atol=1e-6)
    keep = torch.zeros(1, 9, dtype=torch.bool)
    keep[0, :4] = True
    changed = k.clone()
    changed[0, 4:] = 100.0
    assert torch.allclose(cross_image_attention(q, k, v, heads, keep), cross_image_attention(q, changed, v, heads, keep))


def _plan_with_constraint(correspondence=None):
    from eye_for_an_eye.eye_core.instances import pairing_constraint
    from eye_for_an_eye.eye_core.trajectory import EF_DDPM, Trajectory
    from eye_for_an_eye.eye_core.transfer import TransferPlan

    trajectory = Trajectory(sigmas=torch.tensor([2.0, 1.0]), latents=torch.zeros(2, 1, 4, 8, 12),
                            noise=torch.zeros(1, 1, 4, 8, 12), method=EF_DDPM, cfg=3.5, total_steps=1, start_step=0,
                            seed=0)
    # two instances side by side in both images, paired crosswise; a strip on the right belongs to none
    target = torch.full((32, 48), -1, dtype=torch.long)
    target[:, :20], target[:, 20:40] = 0, 1
    reference = torch.full((32, 48), -1, dtype=torch.long)
    reference[:, :24], reference[:, 24:] = 0, 1
    constraint = pairing_constraint(target, reference, [1, 0])
    return TransferPlan(reference=trajectory, structure=trajectory, layers=frozenset(), correspondence=correspondence,
                        constraint=constraint), constraint


def test_per_step_matching_follows_the_instance_pairing():
    from eye_for_an_eye.eye_core.rearrange import rearranged

    plan, constraint = _plan_with_constraint()
    generator = torch.Generator().manual_seed(1)
    output, reference = torch.randn(1, 96, 8, generator=generator), torch.randn(1, 96, 8, generator=generator)
    new = rearranged(output, reference, (8, 12), (8, 12), labels=plan._labels_at((8, 12), (8, 12), "cpu"))
    allowed, labels = (t.flatten(1) for t in constraint.at((8, 12), (8, 12))[:2])
    for i in range(96):
        if allowed[0, i] < 0:
            assert torch.equal(new[0, i], output[0, i])  # unpaired: keeps its own features
        else:
            source = next(j for j in range(96) if torch.equal(new[0, i], reference[0, j]))
            assert labels[0, source] == allowed[0, i]


def test_a_fixed_correspondence_is_filtered_by_the_instance_pairing():
    from eye_for_an_eye.eye_core.matching import match

    features = torch.randn(1, 8, 8, 12, generator=torch.Generator().manual_seed(2))
    plan, constraint = _plan_with_constraint(match(features, features))  # identity: the wrong instance
    fixed = plan._fixed_at((8, 12), (8, 12), "cpu")
    allowed, labels = (t.flatten(1) for t in constraint.at((8, 12), (8, 12))[:2])
    matched = fixed.index[0] >= 0
    assert (labels[0, fixed.index[0][matched]] == allowed[0, matched]).all()
    assert not matched[allowed[0] < 0].any()


def test_labelled_adain_gives_each_region_its_counterparts_statistics():
    """Two objects swapped between the images: each target object takes the statistics of the reference
    object with its label, not of both mixed; unlabelled pixels and labels missing from the reference stay."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(1, 4, 12, 16, generator=generator)
    reference = torch.randn(1, 4, 12, 16, generator=generator)
    target_labels = torch.full((1, 12, 16), -1)
    target_labels[:, :, :6] = 0
    target_labels[:, :, 8:] = 1
    target_labels[:, 10:, :] = 2  # label 2: no reference pixel has it
    reference_labels = torch.full((1, 12, 16), -1)
    reference_labels[:, :, 9:] = 0  # swapped sides
    reference_labels[:, :, :5] = 1
    reference[..., :, 9:] = reference[..., :, 9:] * 0.5 + 4.0
    reference[..., :, :5] = reference[..., :, :5] * 2.0 - 3.0
    out = labelled_adain(x, reference, target_labels, reference_labels, 3)
    for label, ref_cols in ((0, slice(9, None)), (1, slice(None, 5))):
        region = (target_labels[0] == label)
        got = out[0][:, region]
        want = reference[0][:, :, ref_cols][:, reference_labels[0][:, ref_cols] == label]
        assert torch.allclose(got.mean(1), want.mean(1), atol=1e-4)
        assert torch.allclose(got.std(1), want.std(1), atol=1e-3)
    untouched = (target_labels[0] == -1) | (target_labels[0] == 2)
    assert torch.equal(out[0][:, untouched], x[0][:, untouched])
    # plain masked AdaIN over the union gives every region the same mixed statistics instead
    union = masked_adain(x, reference, (target_labels >= 0).float(), (reference_labels >= 0).float())
    assert (union[0][:, target_labels[0] == 0].mean(1) - out[0][:, target_labels[0] == 0].mean(1)).abs().max() > 1.0


def test_labelled_adain_leaves_out_labels_smaller_than_min_pixels_in_either_image():
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    reference = torch.randn(1, 4, 8, 8, generator=generator) * 3.0 + 2.0
    target_labels = torch.full((1, 8, 8), -1)
    target_labels[:, :4] = 0  # 32 pixels
    target_labels[:, 6, :4] = 1  # 4 pixels
    reference_labels = torch.full((1, 8, 8), -1)
    reference_labels[:, 4:] = 0  # 32 pixels
    reference_labels[:, 0, :3] = 1  # 3 pixels
    small, large = target_labels[0] == 1, target_labels[0] == 0
    for min_pixels, small_changes in ((0, True), (3, True), (4, False), (5, False)):  # 4: the reference's 3 < 4
        out = labelled_adain(x, reference, target_labels, reference_labels, 2, min_pixels=min_pixels)
        assert torch.equal(out[0][:, small], x[0][:, small]) is not small_changes, min_pixels
        assert not torch.allclose(out[0][:, large], x[0][:, large])


def test_labelled_adain_refuses_label_maps_at_another_size():
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="latents' sizes"):
        labelled_adain(x, x, torch.zeros(1, 16, 16, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long), 1)
