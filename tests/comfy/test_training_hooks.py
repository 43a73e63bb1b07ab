"""The demo model's training-only attention rewiring does what its modes say, and leaves no trace.

Each check compares the rewired attention with a case whose answer is known: with nothing
to inject, or a partner identical to the target, every mode must equal the stock UNet;
with a different partner, each mode must differ; once the context exits, the UNet is stock.
"""

import numpy as np
import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_demo.training.attention_hooks import PairedAttention, decoder_attention  # noqa: E402
from eye_for_an_eye.eye_demo.training.paired import GRIDS, oracle_index, partner_scene, training_pair  # noqa: E402
from eye_for_an_eye.eye_demo.training.probe import METHOD_BLOCKS  # noqa: E402


@pytest.fixture(scope="module")
def unet(comfy):
    from eye_for_an_eye.comfy_adapter.demo_model import build_unet

    torch.manual_seed(0)
    return build_unet().eval()


def run(unet, x, t, context):
    with torch.no_grad():
        return unet(x, t, context=context)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 16, 16, generator=g)
    return x, torch.tensor([500.0, 300.0, 100.0, 50.0]), torch.randn(4, 77, 32, generator=g)


def test_method_blocks_are_the_two_finest_decoder_levels(unet):
    blocks = sorted({index for index, _ in decoder_attention(unet)})
    assert blocks == [0, 1, 2, 3, 4, 5]
    assert METHOD_BLOCKS == (2, 3, 4, 5)  # 8x8 and 16x16 tokens at 128 px: the two finest levels


def test_modes_equal_the_stock_unet_when_they_have_nothing_to_change(unet, batch):
    x, t, context = batch
    stock = run(unet, x, t, context)
    same = torch.cat([x[:2], x[:2]])  # partners identical to their targets
    same_t, same_context = torch.cat([t[:2], t[:2]]), torch.cat([context[:2], context[:2]])
    stock_same = run(unet, same, same_t, same_context)
    identity = {n: torch.arange(n).repeat(2, 1) for n in (256, 64)}
    with PairedAttention(unet, METHOD_BLOCKS) as paired:
        paired.configure(2, "plain")
        assert torch.allclose(run(unet, x, t, context), stock, atol=1e-5)
        paired.configure(2, "inject", {n: torch.full((2, n), -1) for n in (256, 64)})
        assert torch.allclose(run(unet, x, t, context), stock, atol=1e-5)
        paired.configure(2, "inject", identity)  # own features from an identical partner
        assert torch.allclose(run(unet, same, same_t, same_context), stock_same, atol=1e-5)
        paired.configure(2, "implicit")  # keys and values of an identical partner
        assert torch.allclose(run(unet, same, same_t, same_context), stock_same, atol=1e-5)
        paired.configure(2, "cross")  # every key twice: the softmax is unchanged
        assert torch.allclose(run(unet, same, same_t, same_context), stock_same, atol=1e-5)
    assert torch.equal(run(unet, x, t, context), stock)  # the stock forward is back


def test_each_mode_changes_the_targets_only(unet, batch):
    x, t, context = batch
    stock = run(unet, x, t, context)
    reversed_index = {n: torch.arange(n).flip(0).repeat(2, 1) for n in (256, 64)}
    with PairedAttention(unet, METHOD_BLOCKS) as paired:
        for mode in ("inject", "implicit", "cross"):
            paired.configure(2, mode, reversed_index)
            out = run(unet, x, t, context)
            assert (out[:2] - stock[:2]).abs().max() > 1e-3, mode
            assert torch.allclose(out[2:], stock[2:], atol=1e-5), mode  # partners see only themselves
        with pytest.raises(ValueError, match="modes must be among"):
            paired.configure(2, "sideways")


def test_training_pairs_share_the_palette_and_match_part_to_part():
    pair = training_pair(123)
    assert pair["images"].shape == (2, 128, 128, 3)
    assert not np.array_equal(pair["images"][0], pair["images"][1])  # another pose
    from eye_for_an_eye.eye_demo.render import render
    from eye_for_an_eye.eye_demo.training.data import training_scene

    scene = training_scene(123)
    partner_of = partner_scene(scene, 123)
    assert [c.appearance for c in partner_of.creatures] == [c.appearance for c in scene.creatures]
    assert partner_of.background == scene.background
    target, partner = render(scene), render(partner_of)
    for grid in GRIDS:
        index = pair["indices"][f"{grid[0]}x{grid[1]}"][0]
        assert np.array_equal(index, oracle_index(target, partner, grid))
        from eye_for_an_eye.eye_demo.metrics import token_labels

        t_label, _ = token_labels(target.labels, grid)
        p_label, _ = token_labels(partner.labels, grid)
        matched = index >= 0
        assert matched.sum() >= (4 if grid == (16, 16) else 1)
        assert np.array_equal(t_label[matched], p_label[index[matched]])  # the same part, always
