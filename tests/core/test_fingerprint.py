"""Fingerprints of models and images (eye_core.fingerprint): comparisons and messages."""

import pytest
import torch

from eye_for_an_eye.eye_core.fingerprint import (FAMILY, PATCHES, WEIGHTS, ImagePrint, ModelPrint,
                                                 describe_difference)

SD15 = ModelPrint("SD1.x", "layout-a", "weights-a", "patches-none")


def test_model_differences_are_ranked_family_weights_patches():
    same = ModelPrint("SD1.x", "layout-a", "weights-a", "patches-none")
    assert SD15.difference(same) is None and SD15.difference(None) is None
    assert SD15.difference(ModelPrint("SDXL", "layout-b", "weights-b", "patches-x")) == FAMILY
    assert SD15.difference(ModelPrint("SD1.x", "layout-a", "weights-b", "patches-x")) == WEIGHTS
    assert SD15.difference(ModelPrint("SD1.x", "layout-a", "weights-a", "patches-x", ("FreeU",))) == PATCHES


def test_difference_sentences_name_the_real_cause():
    sdxl = ModelPrint("SDXL", "layout-b", "weights-b", "patches-none")
    assert describe_difference(FAMILY, SD15, sdxl, "the trajectory", "the model") == (
        "the trajectory and the model belong to different model families: the trajectory to an SD1.x model, the model "
        "to an SDXL model, each with its own latent format")
    other = ModelPrint("SD1.x", "layout-a", "weights-b", "patches-none")
    assert "two different SD1.x models" in describe_difference(WEIGHTS, SD15, other, "a", "b")
    freeu = ModelPrint("SD1.x", "layout-a", "weights-a", "patches-y", ("FreeU",))
    assert describe_difference(PATCHES, SD15, freeu, "a", "b").endswith("(no patches against FreeU)")


def _latent(seed, batch=1, h=16, w=24):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 4, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear") * 4 + 0.3 * torch.randn(
        batch, 4, h, w, generator=g)


def test_image_prints_tell_images_apart_and_forgive_re_encoding():
    a = _latent(1)
    assert ImagePrint.of(a).differing_rows(ImagePrint.of(a.clone())) == []
    # the same image encoded again, slightly differently (another VAE pass, fp16): the same image
    again = (a + 0.01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5))).half().float()
    assert ImagePrint.of(a).differing_rows(ImagePrint.of(again)) == []
    assert ImagePrint.of(a).differing_rows(ImagePrint.of(_latent(2))) == [0]
    # another size is another image
    assert ImagePrint.of(a).differing_rows(ImagePrint.of(_latent(1, h=24, w=16))) == [0]
    assert ImagePrint.of(a).differing_rows(None) == []


def test_image_prints_compare_batches_row_by_row_and_broadcast_one():
    a, b = _latent(1), _latent(2)
    pair = ImagePrint.of(torch.cat([a, b]))
    assert pair.differing_rows(ImagePrint.of(torch.cat([a, b]))) == []
    assert pair.differing_rows(ImagePrint.of(torch.cat([a, _latent(3)]))) == [1]
    assert pair.differing_rows(ImagePrint.of(a)) == [1]  # one image against two: the second differs
    assert ImagePrint.of(_latent(1, batch=3)).differing_rows(pair) == [0, 1, 2]  # 3 against 2: no broadcast


def test_image_print_is_small_and_leaves_the_latent_alone():
    a = _latent(4, h=128, w=96)
    before = a.clone()
    image_print = ImagePrint.of(a)
    assert image_print.signature.shape == (1, 4, 8, 8) and image_print.latent_size == (128, 96)
    assert torch.equal(a, before)


@pytest.mark.parametrize("family, article", [("SD1.x", "an"), ("SDXL", "an"), ("Kandinsky", "a")])
def test_articles(family, article):
    text = describe_difference(FAMILY, ModelPrint(family, "x", "w", "p"), ModelPrint("SD2.x", "y", "w", "p"),
                               "A", "B")
    assert f"A to {article} {family} model" in text
