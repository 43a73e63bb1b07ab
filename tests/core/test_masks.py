"""SAM-HQ prompts, checkpoints and inference without ComfyUI (eye_core.masks), and the mask overlay.

The inference tests build a random-weight ``vit_tiny`` SAM-HQ (tests/support/eye_test_support/
tiny_sam.py); they are skipped when segment-anything-hq or timm is not installed.
"""

import pytest
import torch

from eye_for_an_eye.eye_core import masks as M
from eye_for_an_eye.eye_core.visualize import MASK_COLOURS, box_outline, mask_overlay


# ------------------------------------------------------------------ parsing

def test_boxes_parse_with_semicolons_new_lines_spaces_and_brackets():
    text = " 10,20,110,220 ;\n[5, 6, 7.5, 8]\r\n\n30 40 50 60; "
    assert M.parse_boxes(text) == [(10, 20, 110, 220), (5, 6, 7.5, 8), (30, 40, 50, 60)]
    assert M.parse_boxes("") == [] and M.parse_boxes("  ;\n ") == [] and M.parse_boxes(None) == []


def test_points_parse():
    assert M.parse_points("1,2; 3.5 4\n(5,6)") == [(1, 2), (3.5, 4), (5, 6)]
    assert M.parse_points("") == []


@pytest.mark.parametrize("text, match", [
    ("10,20,30", r"boxes: box 1 \('10,20,30'\) is not 4 numbers\. Expected 'x0,y0,x1,y1'"),
    ("1,2,3,4; a,b,c,d", r"box 2 \('a,b,c,d'\) is not 4 numbers"),
    ("1,2,3,4,5", r"is not 4 numbers"),
    ("0,0,nan,4", r"is not 4 numbers"),
    ("10,10,10,40", r"box 1 \('10,10,10,40'\) has zero area: zero width"),
    ("10,10,40,10", r"zero area: zero height"),
    ("40,10,10,40", r"is inverted"),
])
def test_bad_boxes_name_the_input_the_box_and_the_format(text, match):
    with pytest.raises(M.PromptError, match=match):
        M.parse_boxes(text)


def test_relative_boxes_and_points_fit_any_image_size():
    for width, height in ((128, 96), (512, 512), (1024, 640)):
        prompts = M.build_prompts("0.125,0.125,0.875,0.875; 10%,20%,50%,100%", "0.5,0.5", "25%,75%", width, height)
        assert torch.allclose(prompts.boxes, torch.tensor([[0.125 * width, 0.125 * height, 0.875 * width, 0.875 * height],
                                                           [0.1 * width, 0.2 * height, 0.5 * width, 1.0 * height]]))
        assert torch.allclose(prompts.points, torch.tensor([[0.5 * width, 0.5 * height], [0.25 * width, 0.75 * height]]))
    # integers stay pixels, even when they are 0 or 1; numbers well above 1 make the box a pixel box
    assert M.parse_boxes("0,0,8,8", size=(64, 64)) == [(0, 0, 8, 8)]
    assert M.parse_boxes("0.5,0.5,20,20", size=(64, 64)) == [(0.5, 0.5, 20, 20)]
    assert M.parse_boxes("0,0,1.0,0.5", size=(64, 32)) == [(0, 0, 64, 16)]
    # without a size, relative boxes stay fractions
    assert M.parse_boxes("10%,20%,30%,40%") == [(0.1, 0.2, 0.3, 0.4)]


@pytest.mark.parametrize("text, match", [
    ("10%,10%,90,90", r"boxes: box 1 \('10%,10%,90,90'\) mixes percentages with other numbers"),
    ("0.5,0.2,0.5,0.9", r"zero area: zero width"),
    ("90%,10%,10%,90%", r"is inverted"),
    # fractions that stray outside 0..1 would be read as a box of a pixel or two
    ("0.1,0.1,1.5,1.5", r"box 1 \('0.1,0.1,1.5,1.5'\) looks like fractions of the image but not all its numbers"),
    ("-0.5,-0.5,0.2,0.2", r"looks like fractions of the image"),
    # a box of a pixel or two is a typing mistake (integers 0 and 1 are pixels)
    ("0,0,1,1", r"box 1 \('0,0,1,1'\) is only 1 x 1 pixels of the 64x64 image, too small"),
])
def test_bad_relative_boxes_are_errors(text, match):
    with pytest.raises(M.PromptError, match=match):
        M.build_prompts(text, "", "", 64, 64)


def test_bad_points_name_the_input():
    with pytest.raises(M.PromptError, match=r"negative_points: point 2 \('3'\) is not 2 numbers\. Expected 'x,y'"):
        M.parse_points("1,2;3", "negative_points")


def test_boxes_are_clipped_to_the_image_and_a_box_outside_is_an_error():
    clipped = M.clip_boxes([(-10, 5, 50, 300), (20, 20, 40, 40)], width=64, height=48)
    assert clipped.dtype == torch.float32
    assert clipped.tolist() == [[0, 5, 50, 48], [20, 20, 40, 40]]
    with pytest.raises(M.PromptError, match=r"boxes: box 2 \(70,0,90,10\) lies outside the 64x48 image"):
        M.clip_boxes([(0, 0, 10, 10), (70, 0, 90, 10)], width=64, height=48)


def test_points_outside_the_image_are_errors():
    with pytest.raises(M.PromptError, match=r"positive_points: point 1 \(65,3\) lies outside the 64x48 image"):
        M.build_prompts("", "65,3", "", 64, 48)


def test_prompt_combinations():
    whole = M.build_prompts("", "", "", 64, 48)
    assert whole.whole_image and whole.count == 1 and whole.boxes.tolist() == [[0, 0, 64, 48]]
    assert whole.points is None
    points_only = M.build_prompts("", "10,10; 12,12", "1,1", 64, 48)
    assert not points_only.whole_image and points_only.boxes is None and points_only.count == 1
    assert points_only.labels.tolist() == [1, 1, 0] and points_only.points.shape == (3, 2)
    both = M.build_prompts("0,0,10,10; 5,5,60,40", "", "3,3", 64, 48)
    assert both.count == 2 and both.labels.tolist() == [0]


# ------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("name, arch", [
    ("sam_hq_vit_tiny.pth", "vit_tiny"), ("sam_hq_vit_b.pth", "vit_b"), ("sam_hq_vit_l.pth", "vit_l"),
    ("sam_hq_vit_h.pth", "vit_h"), ("sub/SAM-HQ-ViT-H.safetensors", "vit_h"), ("hq_vit_t.pth", "vit_tiny"),
    ("my_sam.pth", None), ("sam_vit_b_vit_l.pth", None),
])
def test_architecture_from_name(name, arch):
    assert M.architecture_from_name(name) == arch


def test_architecture_from_weights_and_hq_check():
    vit = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16), "mask_decoder.hf_token.weight": 0}
    assert M.architecture_from_state_dict(vit) == "vit_l" and M.is_hq_state_dict(vit)
    tiny = {"image_encoder.layers.0.blocks.0.conv1.c.weight": torch.zeros(1)}
    assert M.architecture_from_state_dict(tiny) == "vit_tiny" and not M.is_hq_state_dict(tiny)
    assert M.architecture_from_state_dict({"x": torch.zeros(1)}) is None


def test_read_state_dict_maps_to_cpu_without_unpickling_code(tmp_path, monkeypatch):
    state = {"a": torch.arange(3.0)}
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = M.read_state_dict(str(tmp_path / "wrapped.pth"))
    assert torch.equal(loaded["a"], state["a"])
    assert str(seen["map_location"]) == "cpu" and seen["weights_only"] is True
    torch.save({"a": 1}, tmp_path / "not_tensors.pth")
    with pytest.raises(ValueError, match="not_tensors.pth does not hold a SAM-HQ state dict"):
        M.read_state_dict(str(tmp_path / "not_tensors.pth"))


def test_read_state_dict_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"b": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    assert torch.equal(M.read_state_dict(str(tmp_path / "m.safetensors"))["b"], torch.ones(2))


# ------------------------------------------------------------------ overlay

def test_box_outline_is_inside_the_box():
    line = box_outline(10, 12, (2, 1, 8, 6), thickness=1)
    rows, cols = torch.nonzero(line, as_tuple=True)
    assert rows.min() == 1 and rows.max() == 5 and cols.min() == 2 and cols.max() == 7
    assert not line[3, 4] and line[1, 4] and line[3, 2]


def test_mask_overlay_tints_masks_and_draws_boxes_and_points():
    images = torch.zeros(2, 32, 40, 3)
    masks = torch.zeros(2, 2, 32, 40)
    masks[:, 0, 10:20, 10:20] = 1
    masks[1, 1, 0:5, 30:40] = 1
    out = mask_overlay(images, masks, boxes=torch.tensor([[8.0, 8, 22, 22], [28, 0, 40, 6]]),
                       points=torch.tensor([[15.0, 25], [3, 3]]), labels=torch.tensor([1, 0]))
    assert out.shape == (2, 32, 40, 3) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[0, 15, 15], 0.5 * torch.tensor(MASK_COLOURS[0]))
    assert torch.allclose(out[1, 2, 35], 0.5 * torch.tensor(MASK_COLOURS[1]))
    assert torch.equal(out[0, 2, 35], torch.zeros(3))  # image 0 has no second mask there
    assert torch.allclose(out[0, 8, 15], torch.tensor(MASK_COLOURS[0]))  # box outline, full colour
    assert out[0, 25, 15, 1] > 0.8 and out[0, 3, 3, 0] > 0.9  # positive green, negative red
    assert torch.equal(out[0, 30, 2], torch.zeros(3))
    assert torch.equal(images, torch.zeros(2, 32, 40, 3))  # input untouched


# ------------------------------------------------------------------ inference with a random vit_tiny

@pytest.fixture(scope="module")
def tiny_sam():
    from eye_test_support import tiny_sam as support

    if not support.sam_hq_available():
        pytest.skip("segment-anything-hq / timm not installed")
    return support.build_tiny_sam(0)


def test_sam_input_size_keeps_the_aspect_ratio():
    assert M.sam_input_size(384, 512) == (768, 1024)
    assert M.sam_input_size(1000, 10) == (1024, 10)
    assert M.sam_image_tensor(torch.ones(6, 8, 3), long_side=16).shape == (1, 3, 12, 16)


def test_sam_masks_match_the_official_predictor(tiny_sam):
    """Same masks as segment_anything_hq's SamPredictor given the same resized pixels and prompts."""
    from segment_anything_hq import SamPredictor

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(96, 128, 3, generator=generator)
    prompts = M.build_prompts("-8,10,70,80; 60,20,120,90", "30,40", "100,10", 128, 96)
    ours = M.sam_masks(tiny_sam, image, prompts, hq_token_only=True)
    assert ours.shape == (2, 96, 128) and ours.dtype == torch.float32
    assert set(ours.unique().tolist()) <= {0.0, 1.0}

    predictor = SamPredictor(tiny_sam)
    predictor.set_torch_image(M.sam_image_tensor(image), (96, 128))
    boxes = predictor.transform.apply_boxes_torch(prompts.boxes, (96, 128))
    coords = predictor.transform.apply_coords_torch(prompts.points, (96, 128))
    official, _, _ = predictor.predict_torch(coords[None].expand(2, -1, -1), prompts.labels[None].expand(2, -1),
                                             boxes, multimask_output=False, hq_token_only=True)
    assert torch.equal(ours, official[:, 0].float())
    assert prompts.boxes[0].tolist() == [0, 10, 70, 80]  # clipped before prompting


def test_union_is_image_major():
    masks = torch.zeros(6, 2, 2)  # 2 images x 3 prompts
    masks[1, 0, 0] = 1  # image 0, prompt 1
    masks[5, 1, 1] = 1  # image 1, prompt 2
    merged = M.union(masks, 2)
    assert merged.shape == (2, 2, 2)
    assert merged[0].tolist() == [[1, 0], [0, 0]] and merged[1].tolist() == [[0, 0], [0, 1]]


def test_masks_kept_inside_their_own_boxes():
    from eye_for_an_eye.eye_core.masks import keep_inside_boxes

    masks = torch.ones(2, 8, 10)
    boxes = torch.tensor([[0.0, 0.0, 5.0, 8.0], [5.0, 2.0, 10.0, 6.0]])
    kept = keep_inside_boxes(masks, boxes)
    assert kept[0, :, :5].eq(1).all() and kept[0, :, 5:].eq(0).all()
    assert kept[1, 2:6, 5:].eq(1).all() and kept[1, :2].eq(0).all() and kept[1, :, :5].eq(0).all()
    assert masks.eq(1).all()  # the input is not modified


def test_every_mask_is_read_in_one_place():
    """The matcher, the rearrangement, masked AdaIN and the nodes resize masks through eye_core.mask_grid only."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readers = []
    for path in sorted([*root.glob("eye_core/*.py"), *root.glob("nodes/*.py")]):
        if path.name == "mask_grid.py":
            continue
        text = path.read_text(encoding="utf-8")
        # a private mask reshaper: a function that both takes a mask and interpolates it bilinearly
        for name, body in re.findall(r"^def (\w*mask\w*)\(.*?\n((?:    .*\n|\n)*)", text, re.M):
            if "interpolate" in body and "bilinear" in body:
                readers.append(f"{path.relative_to(root)}:{name}")
    assert readers == [], f"resize masks with eye_core.mask_grid, not here: {readers}"


def test_soft_and_token_masks_agree_on_the_inside():
    from eye_for_an_eye.eye_core.mask_grid import mask_at_grid, soft_mask_at

    mask = torch.zeros(1, 40, 60)
    mask[:, 10:30, 20:50] = 1
    soft = soft_mask_at(mask, (8, 12))
    assert soft.shape == (1, 1, 8, 12) and 0 <= float(soft.min()) and float(soft.max()) <= 1
    assert torch.equal(mask_at_grid(mask, (8, 12)), soft[:, 0] > 0)
    with pytest.raises(ValueError, match=r"target_mask has a batch of 3; it must be 1 .* or 2"):
        soft_mask_at(torch.ones(3, 4, 4), (2, 2), name="target_mask", batch=2)
