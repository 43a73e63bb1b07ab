"""Find Corresponding Points and Point Pairs at node level: right answers where the answer is exact, the model
untouched, bad points refused with errors naming the node, and the constraint obeyed by Match Correspondence."""

import numpy as np
import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.eye_core.features import FeatureMap  # noqa: E402
from eye_for_an_eye.eye_core.point_constraint import regions  # noqa: E402
from eye_for_an_eye.nodes import correspondence as corr_nodes  # noqa: E402
from eye_for_an_eye.nodes import instances as instance_nodes  # noqa: E402
from eye_for_an_eye.nodes import points as nodes  # noqa: E402

FAST = dict(steps=2, embeddings=1, crops=2, learning_rate=0.05, timestep=141, seed=0)


def _parse(text):
    return [tuple(float(v) for v in group.split(",")) for group in text.split("; ")]


def _find(model, conds, target, reference, points, **settings):
    inputs = dict(FAST, layers=nodes.AUTHORS_LAYERS)
    inputs.update(settings)
    return tuple(nodes.FindCorrespondingPoints.execute(model=model, conditioning=conds, target=target,
                                                       reference=reference, target_points=points, **inputs).args)


@pytest.fixture(scope="module")
def demo(comfy):
    from eye_for_an_eye.nodes import demo as demo_nodes

    return tuple(demo_nodes.LoadDemoModel.execute().args)


def test_points_on_a_moved_copy_land_within_a_token_of_the_truth(demo):
    """Two renders of one creature, the second moved by (-24, +16) pixels: the answer is exact."""
    from eye_for_an_eye.eye_demo.oracle import part_points
    from eye_for_an_eye.eye_demo.pairs import make_pair
    from eye_for_an_eye.eye_demo.render import render

    model, clip, vae = demo
    scene = render(make_pair(3000, "moved")[0])
    image = torch.from_numpy(scene.image[None])
    moved = torch.roll(image, shifts=(16, -24), dims=(1, 2))
    queries = part_points(scene, scene, 3, np.random.default_rng(3000))
    with torch.inference_mode():
        latents = [{"samples": vae.encode(x)} for x in (image, moved)]
        conds = [[clip.encode_from_tokens(clip.tokenize("a bird")), {}]]
        _, found, confidences, preview = _find(model, conds, *latents, nodes.format_points(queries), steps=30,
                                               embeddings=2, crops=6, learning_rate=0.3, layers=nodes.EVERY_LAYER)
    grid = 16  # the finest cross-attention grid of a 128 px image: the latent's
    for (x, y), (fx, fy) in zip(queries, _parse(found)):
        truth = ((x - 24 / 128) % 1.0, (y + 16 / 128) % 1.0)
        assert abs(int(truth[0] * grid) - int(fx * grid)) <= 1 and abs(int(truth[1] * grid) - int(fy * grid)) <= 1, \
            (truth, (fx, fy))
    assert all(0.0 < float(c) <= 1.0 for c in confidences.split("; "))
    assert preview.shape == (1, 128, 256, 3)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_model_is_bit_identical_after_the_node_and_vanilla_sampling_is_unchanged(family, tiny):
    from comfy_extras import nodes_custom_sampler as custom
    from eye_test_support.sampling import sample

    with torch.inference_mode():  # as a checkpoint loader runs in ComfyUI's executor
        model = tiny.tiny_sd15() if family == "sd15" else tiny.tiny_sdxl()
        pos, neg = tiny.sd15_conds() if family == "sd15" else tiny.sdxl_conds()
    network = model.model.diffusion_model
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    flags = {k: p.requires_grad for k, p in network.named_parameters()}
    latent = tiny.vae_like_latent(1, 16, 16)
    (sampler,) = custom.KSamplerSelect().get_sampler("euler")
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    with torch.inference_mode():
        before = sample(custom, model, pos, neg, sampler, sigmas, {"samples": latent})
        target_points, reference_points, confidences, _ = _find(model, pos, {"samples": latent},
                                                                {"samples": latent.flip(-1)}, "0.25,0.25; 0.7,0.6")
        after = sample(custom, model, pos, neg, sampler, sigmas, {"samples": latent})
    assert target_points == "0.2500,0.2500; 0.7000,0.6000" and len(_parse(reference_points)) == 2
    assert len(confidences.split("; ")) == 2
    assert torch.equal(before, after)
    assert all(torch.equal(weights[k], v) for k, v in network.state_dict().items())
    assert {k: p.requires_grad for k, p in network.named_parameters()} == flags
    assert "attn2_patch" not in model.model_options.get("transformer_options", {}).get("patches", {})


def test_cancel_stops_the_search(sd15, tiny, monkeypatch):
    import comfy.model_management

    pos, _ = tiny.sd15_conds()
    latent = {"samples": tiny.vae_like_latent(1, 16, 16)}
    monkeypatch.setattr(comfy.model_management, "interrupt_processing", True)
    with pytest.raises(comfy.model_management.InterruptProcessingException), torch.inference_mode():
        _find(sd15, pos, latent, latent, "0.5,0.5")


@pytest.mark.parametrize("points, message", [
    ("0.5,1.5", "looks like fractions"),
    ("200,20", r"point 1 \(200,20\) lies outside the 128x128 image"),
    ("0.5", "is not 2 numbers"),
    ("", "target_points is empty"),
    ("; ".join(f"{x / 10:.2f},{y / 10:.2f}" for x in range(1, 6) for y in range(1, 6)), r"25 points but .* 4x4 = 16"),
])
def test_bad_points_get_errors_naming_the_node(sd15, tiny, points, message):
    pos, _ = tiny.sd15_conds()
    latent = {"samples": tiny.vae_like_latent(1, 16, 16)}
    with pytest.raises(ValueError, match=message) as error, torch.inference_mode():
        _find(sd15, pos, latent, latent, points)
    assert str(error.value).startswith("Find Corresponding Points:")


def test_a_batch_of_targets_is_refused(sd15, tiny):
    pos, _ = tiny.sd15_conds()
    with pytest.raises(ValueError, match="batch of 2 images"), torch.inference_mode():
        _find(sd15, pos, {"samples": tiny.vae_like_latent(2, 16, 16)}, {"samples": tiny.vae_like_latent(1, 16, 16)},
              "0.5,0.5")


def _pairs(target_points="0.2,0.3; 64,80", reference_points="0.8,0.7; 30%,20%", **settings):
    images = torch.rand(1, 128, 128, 3), torch.rand(1, 96, 160, 3)
    inputs = dict(mode="hard", radius=0.1, strength=1.0)
    inputs.update(settings)
    return tuple(nodes.PointPairs.execute(target_image=images[0], reference_image=images[1],
                                          target_points=target_points, reference_points=reference_points,
                                          **inputs).args)


def _features(seed):
    generator = torch.Generator().manual_seed(seed)
    return FeatureMap(features=torch.randn(1, 32, 16, 16, generator=generator), layer="output block 5",
                      timestep=261, latent_size=(16, 16), ensemble=1)


def test_point_pairs_steer_match_correspondence():
    constraint, preview = _pairs()
    assert preview.shape == (1, 128, 128 + round(160 * 128 / 96), 3)
    points = constraint.points[0]
    assert torch.allclose(points.target, torch.tensor([[[0.2, 0.3], [0.5, 0.625]]]))
    assert torch.allclose(points.reference, torch.tensor([[[0.8, 0.7], [0.3, 0.2]]]))
    correspondence = corr_nodes.MatchCorrespondence.execute(target_features=_features(0),
                                                            reference_features=_features(1),
                                                            constraint=constraint).args[0]
    steered = points.target_regions((16, 16))[0]
    allowed = regions(points.reference, (16, 16), points.radius)[0]
    index = correspondence.index[0]
    for k in range(2):
        rows = torch.nonzero(steered[:, k]).flatten()
        assert len(rows) > 0 and allowed[index[rows], k].all()


def test_point_pairs_combine_with_another_constraint():
    masks = torch.zeros(2, 128, 128)
    masks[0, :, :64], masks[1, :, 64:] = 1.0, 1.0
    image = torch.rand(1, 128, 128, 3)
    target = instance_nodes.NumberInstances.execute(image=image, masks=masks).args[0]
    reference = instance_nodes.NumberInstances.execute(image=image, masks=masks.flip(0)).args[0]
    pairing = instance_nodes.PairInstances.execute(target_instances=target, reference_instances=reference,
                                                   pairs="1>1, 2>2").args[0]
    constraint, _ = _pairs(constraint=pairing)
    assert len(constraint.points) == 1 and constraint.labelled
    assert "instances" in constraint.what and "point pairs" in constraint.what


@pytest.mark.parametrize("inputs, message", [
    (dict(reference_points="0.8,0.7"), "2 target points but 1 reference points"),
    (dict(target_points="", reference_points=""), "no points"),
    (dict(reference_points="0.8,0.7; 170,20"), r"reference_points: point 2 \(170,20\) lies outside the 160x96"),
    (dict(target_points="a,b; 1,2"), "is not 2 numbers"),
    (dict(mode="firm"), "mode is 'firm'"),
])
def test_bad_point_pairs_get_errors_naming_the_node(inputs, message):
    with pytest.raises(ValueError, match=message) as error:
        _pairs(**inputs)
    assert str(error.value).startswith("Point Pairs:")
