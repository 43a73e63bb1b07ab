"""Extract UNet Features (DIFT) in-process against the real ComfyUI (tiny models)."""

import copy

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.nodes import features as features_nodes  # noqa: E402


def extract(model, latent, pos, timestep=261, level=features_nodes.AUTO_LEVEL, ensemble=4, seed=0):
    return tuple(features_nodes.ExtractUNetFeatures.execute(
        model=model, latent={"samples": latent}, positive=pos, timestep=timestep, decoder_level=level,
        ensemble_size=ensemble, seed=seed).args)


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.model.modules())


def test_sd15_default_level_is_output_block_5_and_the_pass_stops_there(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    later_calls = []
    handle = sd15.model.diffusion_model.output_blocks[6][0].register_forward_hook(lambda *a: later_calls.append(1))
    options = copy.deepcopy(sd15.model_options)
    try:
        fmap, preview = extract(sd15, tiny.vae_like_latent(2, 24, 40), pos)
    finally:
        handle.remove()
    assert fmap.layer == "output block 5" and fmap.timestep == 261 and fmap.ensemble == 4
    # 1/16 of the image: the latent grid halved; 4 x 32 channels at that level of the tiny UNet
    assert fmap.features.shape == (2, 128, 12, 20) and fmap.latent_size == (24, 40)
    assert torch.isfinite(fmap.features).all()
    assert later_calls == []
    assert preview.shape == (2, 24 * 8, 40 * 8, 3) and preview.min() >= 0 and preview.max() <= 1
    assert sd15.model_options == options and hooks(sd15) == 0


def test_sdxl_default_level_is_output_block_2(sdxl, tiny):
    pos, _ = tiny.sdxl_conds()
    fmap, _ = extract(sdxl, tiny.vae_like_latent(1, 16, 16), pos, ensemble=2)
    assert fmap.layer == "output block 2" and fmap.features.shape == (1, 128, 8, 8)


def test_ensemble_is_seeded_and_averaged(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16)
    a = extract(sd15, latent, pos, ensemble=4, seed=1)[0].features
    b = extract(sd15, latent, pos, ensemble=4, seed=1)[0].features
    c = extract(sd15, latent, pos, ensemble=4, seed=2)[0].features
    assert torch.equal(a, b) and not torch.allclose(a, c)
    one = [extract(sd15, latent, pos, ensemble=1, seed=s)[0].features for s in range(3)]
    # the batched ensemble of 4 is the mean of its members: its spread across seeds is smaller
    spread_single = torch.stack(one).std(0).mean()
    spread_mean = torch.stack([a, c]).std(0).mean()
    assert spread_mean < spread_single


def test_explicit_level_and_bad_level(sd15, sdxl, tiny):
    pos, _ = tiny.sd15_conds()
    fmap, _ = extract(sd15, tiny.vae_like_latent(1, 16, 16), pos, level="output block 8", ensemble=1)
    assert fmap.layer == "output block 8" and fmap.features.shape[-2:] == (16, 16)
    xpos, _ = tiny.sdxl_conds()
    with pytest.raises(ValueError, match="output blocks 0 to 8"):
        extract(sdxl, tiny.vae_like_latent(1, 16, 16), xpos, level="output block 10", ensemble=1)


def test_the_preview_and_the_image_size_follow_the_models_latent_factor(sd15, tiny, monkeypatch):
    pos, _ = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 8, 12)
    feature_map, preview = extract(sd15, latent, pos, ensemble=1)
    assert feature_map.image_size == (64, 96) and tuple(preview.shape[1:3]) == (64, 96)
    # a latent format that names its own downscale (newer ComfyUI) is believed
    monkeypatch.setattr(sd15.model.latent_format, "spacial_downscale_ratio", 4, raising=False)
    feature_map, preview = extract(sd15, latent, pos, ensemble=1)
    assert feature_map.image_size == (32, 48) and tuple(preview.shape[1:3]) == (32, 48)
