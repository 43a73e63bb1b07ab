"""Match Correspondence in-process (node level): matching, masks, previews, errors."""

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_core.features import FeatureMap  # noqa: E402
from eye_for_an_eye.nodes import correspondence as corr_nodes  # noqa: E402
from eye_for_an_eye.nodes import features as features_nodes  # noqa: E402


def distinctive(h, w, channels=64, seed=0):
    """A feature map whose every position is distinctive and smooth (random Fourier features)."""
    generator = torch.Generator().manual_seed(seed)
    freqs = torch.randn(channels, 2, generator=generator) * 3.0
    phase = torch.rand(channels, generator=generator) * 6.28
    y = (torch.arange(h) + 0.5) / h
    x = (torch.arange(w) + 0.5) / w
    pos = torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1)
    return torch.cos(pos @ freqs.T + phase).permute(2, 0, 1)[None]


def fmap(features, layer="output block 5"):
    h, w = features.shape[-2:]
    return FeatureMap(features=features, layer=layer, timestep=261, latent_size=(h * 2, w * 2), ensemble=1)


def run(**inputs):
    return tuple(corr_nodes.MatchCorrespondence.execute(**inputs).args)


def test_mirrored_reference_is_rearranged_back(comfy):
    target = distinctive(16, 16)
    reference = target.flip(-1)
    image = torch.rand(1, 256, 256, 3)
    corr, rearranged, colours = run(target_features=fmap(target), reference_features=fmap(reference),
                                    reference_image=image.flip(2))
    h, w = 16, 16
    expected = torch.arange(h * w).reshape(h, w).flip(-1).reshape(1, -1)
    assert (corr.index == expected).float().mean() >= 0.95
    assert rearranged.shape == (1, 256, 256, 3) and colours.shape == (1, 256, 256, 3)
    # the mirrored reference image, rearranged by the mirror correspondence, is the original image
    assert (rearranged - image).abs().mean() < 0.05
    assert 0 <= colours.min() and colours.max() <= 1


def test_masks_of_any_size_and_unmatched_target(comfy):
    target = distinctive(12, 20)
    reference = distinctive(16, 16, seed=1)
    target_mask = torch.zeros(1, 96, 160)
    target_mask[:, :, :80] = 1.0  # left half of the target
    reference_mask = torch.zeros(1, 50, 50)
    reference_mask[:, :25, :] = 1.0  # top half of the reference
    target_image = torch.rand(1, 96, 160, 3)
    corr, rearranged, colours = run(target_features=fmap(target), reference_features=fmap(reference),
                                    target_mask=target_mask, reference_mask=reference_mask,
                                    target_image=target_image)
    index = corr.index.reshape(12, 20)
    assert (index[:, 10:] == -1).all() and (index[:, :10] >= 0).all()
    rows = index[:, :10] // 16
    assert (rows < 8).all()  # only the reference's top half is ever chosen
    assert rearranged.shape == (1, 96, 160, 3)
    # unmatched pixels: the colour map is dark grey there
    assert torch.allclose(colours[0, :, 90:], torch.full_like(colours[0, :, 90:], 0.25))


def test_two_targets_against_one_reference(comfy):
    target = torch.cat([distinctive(8, 8), distinctive(8, 8).flip(-1)])
    corr, rearranged, colours = run(target_features=fmap(target), reference_features=fmap(distinctive(8, 8)))
    assert corr.index.shape == (2, 64) and rearranged.shape[0] == 2 and colours.shape[0] == 2
    assert torch.equal(corr.index[0], torch.arange(64))


def test_features_of_different_levels_are_refused(comfy):
    with pytest.raises(ValueError, match="same decoder_level"):
        run(target_features=fmap(distinctive(8, 8)), reference_features=fmap(distinctive(8, 8), "output block 8"))


def test_empty_reference_mask_is_refused(comfy):
    with pytest.raises(ValueError, match="Match Correspondence: .*reference_mask"):
        run(target_features=fmap(distinctive(8, 8)), reference_features=fmap(distinctive(8, 8)),
            reference_mask=torch.zeros(1, 64, 64))


def test_real_features_from_the_tiny_model(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 24)
    target, _ = features_nodes.ExtractUNetFeatures.execute(
        model=sd15, latent={"samples": latent}, positive=pos, timestep=261,
        decoder_level=features_nodes.AUTO_LEVEL, ensemble_size=2, seed=0).args
    reference, _ = features_nodes.ExtractUNetFeatures.execute(
        model=sd15, latent={"samples": latent.flip(-1)}, positive=pos, timestep=261,
        decoder_level=features_nodes.AUTO_LEVEL, ensemble_size=2, seed=0).args
    corr, rearranged, _ = run(target_features=target, reference_features=reference)
    assert corr.target_grid == (8, 12) and corr.reference_grid == (8, 12)
    assert rearranged.shape == (1, 128, 192, 3)
