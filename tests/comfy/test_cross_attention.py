"""Differentiable cross-attention maps inside ComfyUI (comfy_adapter.cross_attention), for the point finder.

ComfyUI runs nodes in inference mode with inference-tensor weights; the probe must give a
gradient with respect to the embedding there, leave the model bit-identical (weights and
grad flags) and leave vanilla sampling exactly as it was.
"""

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.comfy_adapter import cross_attention  # noqa: E402
from eye_for_an_eye.eye_core import points  # noqa: E402


@pytest.fixture
def loaded_in_inference_mode(comfy, tiny):
    with torch.inference_mode():  # as a checkpoint loader node runs in ComfyUI's executor
        model = tiny.tiny_sd15()
    assert next(model.model.diffusion_model.parameters()).is_inference()
    return model


def test_the_authors_layers_are_the_ones_around_the_middle(sd15, sdxl):
    # SD1.5's layers 5-8 of 16 in the authors' count: input 8, the middle block, output 3 and 4
    assert cross_attention.hedlin_layers(sd15) == [(("input", 8), 0), (("middle", 0), 0), (("output", 3), 0),
                                                   (("output", 4), 0)]
    assert cross_attention.hedlin_layers(sdxl) == [(("input", 8), 2), (("middle", 0), 0), (("output", 0), 0),
                                                   (("output", 0), 1)]


def test_the_maps_have_a_gradient_in_inference_mode_and_the_model_is_untouched(loaded_in_inference_mode, tiny):
    model = loaded_in_inference_mode
    network = model.model.diffusion_model
    before = {k: v.clone() for k, v in network.state_dict().items()}
    flags = {k: p.requires_grad for k, p in network.named_parameters()}
    pos, neg = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16)
    with torch.inference_mode():
        sigmas = torch.tensor([1.0, 0.5, 0.0])
        plain_before = _vanilla(model, pos, neg, latent, sigmas)
        patched, probe = cross_attention.attention_probe(model)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        attention = cross_attention.attention_maps(patched, probe, {}, 0.4, noise)
        context = pos[0][0].clone().requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            context = context.clone().requires_grad_(True)
            maps = attention(latent, context)
            assert maps.shape == (4, 4, 4) and maps.requires_grad  # four layers at the 4x4 (and 2x2) grids
            maps[:, 1, 2].sum().backward()
        assert context.grad is not None and float(context.grad.abs().sum()) > 0
        plain_after = _vanilla(model, pos, neg, latent, sigmas)
    assert torch.equal(plain_before, plain_after)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert {k: p.requires_grad for k, p in network.named_parameters()} == flags
    assert "attn2_patch" not in model.model_options.get("transformer_options", {}).get("patches", {})


def test_optimising_an_embedding_lowers_the_attention_loss(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    latent = tiny.vae_like_latent(1, 16, 16)
    with torch.inference_mode():
        patched, probe = cross_attention.attention_probe(sd15)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        attention = cross_attention.attention_maps(patched, probe, {}, 0.4, noise)
        init = torch.randn(1, 77, pos[0][0].shape[-1], generator=torch.Generator().manual_seed(1))
        settings = points.PointSettings(steps=25, lr=0.05, crop=1.0, embeddings=1, crops=1)
        with torch.inference_mode(False), torch.enable_grad():  # as the node will run the optimisation
            _, losses = points.optimise_embedding(attention, latent.clone(), (0.25, 0.75), init.clone(), settings)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


def _vanilla(model, pos, neg, latent, sigmas):
    from comfy_extras import nodes_custom_sampler as nodes

    from eye_test_support.sampling import sample

    (sampler,) = nodes.KSamplerSelect().get_sampler("euler")
    return sample(nodes, model, pos, neg, sampler, sigmas, {"samples": latent})
