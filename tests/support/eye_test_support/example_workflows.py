"""Builds the example workflows that are generated rather than drawn by hand.

    python tests/support/eye_test_support/example_workflows.py

needs a ComfyUI (COMFYUI_PATH or ~/comfy/ComfyUI) for the node definitions. After a
change, regenerate the thumbnails with tests/browser/make_thumbnails.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "example_workflows"

OFFICIAL_INVERSION = [100, 3.5, "edit-friendly DDPM"]  # steps, cfg, method; then seed, control, skip, capture...
OFFICIAL_TRANSFER = ["feature", "two finest decoder levels", 0.1618, 1.0, 0.5882, 0.0735, "official (asymmetric)", 1.0]
OFFICIAL_ADAIN = [0.7206, 1.0]


AUTHORS_FREEU = [1.2, 1.4, 0.9, 0.2]
SAM_LOADER = ["sam_hq_vit_l.pth", "auto (from file name)", "auto"]
SAM_BOX = ["0.125,0.125,0.875,0.875", "", "", True, False]  # relative: fits any image size
CHECKPOINT = ["v1-5-pruned-emaonly.safetensors"]
# steps, skip, inversion cfg, cfg, matching, seed, control, freeu, pairs (empty: automatic), proxy parts (0: off),
# best reference (off)
ALL_IN_ONE_OFFICIAL = [100, 32, 3.5, 2.5, "per-step matching (official)", 0, "fixed", "authors' FreeU (official)", "",
                       0, False]
# left and right half: two objects, each mask kept inside its own box
TWO_BOXES = ["0.02,0.05,0.49,0.95; 0.51,0.05,0.98,0.95", "", "", True, True]


def modular_workflow(info: dict):
    """The official configuration, stage by stage: the authors' FreeU, SAM-HQ masks, per-step matching
    (the DIFT correspondence is there to look at; connected to the patch it gives the fixed-DIFT variant)."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, "appearance_transfer")
    checkpoint = b.node("CheckpointLoaderSimple", (0, 300), (320, 100), CHECKPOINT)
    freeu = b.node("EyeForAnEye_AuthorsFreeU", (0, 460), (320, 150), AUTHORS_FREEU,
                   title="FreeU (authors' variant): the official backbone")
    positive = b.node("CLIPTextEncode", (380, 60), (330, 100), ["a photo of a bird"],
                      title="Positive prompt: a photo of a <domain>")
    negative = b.node("CLIPTextEncode", (380, 210), (330, 100), [""], title="Negative prompt (empty)")
    sam = b.node("EyeForAnEye_LoadSAMHQModel", (0, 670), (320, 110), SAM_LOADER)
    sides = {}
    for side, y, seed in (("target", 820, 0), ("reference", 1460, 1)):
        image = b.node("LoadImage", (0, y), (300, 330), [f"{side}.png", "image"], title=f"{side.capitalize()} image")
        segment = b.node("EyeForAnEye_SAMHQSegment", (380, y), (360, 200), SAM_BOX, title=f"SAM-HQ Segment ({side})")
        preview = b.node("PreviewImage", (380, y + 262), (300, 260), title=f"{side.capitalize()} mask")
        encode = b.node("VAEEncode", (840, y), (200, 50))
        invert = b.node("EyeForAnEye_InvertLatent", (1080, y - 60), (340, 330),
                        OFFICIAL_INVERSION + [seed, "fixed", 32, True, 2048, "two finest decoder levels"],
                        title="Invert Latent (target)" if side == "target" else
                        "Invert Latent (reference, its own noise seed)")
        features = b.node("EyeForAnEye_ExtractUNetFeatures", (1080, y + 320), (340, 200),
                          [261, "auto (DIFT)", 8, 0, "fixed"], title=f"Extract UNet Features ({side})")
        b.link(sam, 0, segment, "sam_model")
        b.link(image, 0, segment, "image")
        b.link(segment, 2, preview, "images")
        b.link(image, 0, encode, "pixels")
        b.link(checkpoint, 2, encode, "vae")
        b.link(freeu, 0, invert, "model")
        b.link(encode, 0, invert, "latent")
        b.link(positive, 0, invert, "positive")
        b.link(negative, 0, invert, "negative")
        b.link(checkpoint, 0, features, "model")
        b.link(encode, 0, features, "latent")
        b.link(positive, 0, features, "positive")
        sides[side] = {"image": image, "segment": segment, "invert": invert, "features": features}
    b.link(checkpoint, 0, freeu, "model")
    b.link(checkpoint, 1, positive, "clip")
    b.link(checkpoint, 1, negative, "clip")
    match = b.node("EyeForAnEye_MatchCorrespondence", (1500, 1040), (360, 170), title=(
        "Match Correspondence (to look at; connect its correspondence to Apply Appearance Transfer for the "
        "fixed-DIFT variant)"))
    rearranged = b.node("PreviewImage", (1500, 1280), (380, 300), title="Reference rearranged into the target's layout")
    where = b.node("PreviewImage", (1920, 1280), (380, 300), title="Where each target pixel matched")
    transfer = b.node("EyeForAnEye_ApplyAppearanceTransfer", (1500, 300), (360, 400), OFFICIAL_TRANSFER,
                      title="Apply Appearance Transfer (official: per-step)")
    sampler = b.node("EyeForAnEye_TransferSampler", (1920, 720), (330, 170), OFFICIAL_ADAIN)
    guider = b.node("CFGGuider", (1920, 300), (330, 100), [2.5], title="CFGGuider (generation cfg 2.5)")
    no_noise = b.node("DisableNoise", (1920, 480), (330, 40))
    sample = b.node("SamplerCustomAdvanced", (2320, 400), (280, 110))
    decode = b.node("VAEDecode", (2660, 400), (200, 50))
    save = b.node("SaveImage", (2900, 400), (360, 400), ["eye_for_an_eye"], title="Result")
    target, reference = sides["target"], sides["reference"]
    b.link(target["features"], 0, match, "target_features")
    b.link(reference["features"], 0, match, "reference_features")
    b.link(target["segment"], 1, match, "target_mask")
    b.link(reference["segment"], 1, match, "reference_mask")
    b.link(reference["image"], 0, match, "reference_image")
    b.link(target["image"], 0, match, "target_image")
    b.link(match, 1, rearranged, "images")
    b.link(match, 2, where, "images")
    b.link(freeu, 0, transfer, "model")
    for node in (transfer, sampler):  # both take the two trajectories and the two masks
        b.link(reference["invert"], 0, node, "reference")
        b.link(target["invert"], 0, node, "structure")
        b.link(target["segment"], 1, node, "target_mask")
        b.link(reference["segment"], 1, node, "reference_mask")
    b.link(transfer, 0, guider, "model")
    b.link(positive, 0, guider, "positive")
    b.link(negative, 0, guider, "negative")
    b.link(no_noise, 0, sample, "noise")
    b.link(guider, 0, sample, "guider")
    b.link(sampler, 0, sample, "sampler")
    b.link(target["invert"], 2, sample, "sigmas")
    b.link(target["invert"], 1, sample, "latent_image")
    b.link(sample, 0, decode, "samples")
    b.link(checkpoint, 2, decode, "vae")
    b.link(decode, 0, save, "images")
    return b


def _all_in_one_with_sam(b, prompt, transfer_at, save_at):
    """Checkpoint, SAM-HQ loader, prompts, the all-in-one node and a SaveImage, wired: (sam, transfer, save).

    ``prompt``: (text, title); ``transfer_at``: (pos, size, title or None); ``save_at``: (pos, prefix).
    """
    checkpoint = b.node("CheckpointLoaderSimple", (0, 200), (320, 100), CHECKPOINT)
    sam = b.node("EyeForAnEye_LoadSAMHQModel", (0, 360), (320, 110), SAM_LOADER)
    positive = b.node("CLIPTextEncode", (380, 60), (330, 100), [prompt[0]], title=prompt[1])
    negative = b.node("CLIPTextEncode", (380, 210), (330, 100), [""], title="Negative prompt (empty)")
    transfer = b.node("EyeForAnEye_AppearanceTransfer", transfer_at[0], transfer_at[1], ALL_IN_ONE_OFFICIAL,
                      title=transfer_at[2])
    save = b.node("SaveImage", save_at[0], (360, 400), [save_at[1]], title="Result")
    b.link(checkpoint, 1, positive, "clip")
    b.link(checkpoint, 1, negative, "clip")
    b.link(checkpoint, 0, transfer, "model")
    b.link(checkpoint, 2, transfer, "vae")
    b.link(positive, 0, transfer, "positive")
    b.link(negative, 0, transfer, "negative")
    return sam, transfer, save


def simple_workflow(info: dict):
    """The all-in-one node with the official preset: SAM-HQ masks, per-step matching, the authors' FreeU."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, "appearance_transfer_simple")
    sam, transfer, save = _all_in_one_with_sam(b, ("a photo of a bird", "Positive prompt: a photo of a <domain>"),
                                               ((800, 420), (360, 420), None), ((1200, 420), "eye_for_an_eye"))
    for side, y, title in (("target", 540, "Target image (structure)"), ("reference", 900, "Reference image "
                                                                                            "(appearance)")):
        image = b.node("LoadImage", (0, y), (300, 330), [f"{side}.png", "image"], title=title)
        segment = b.node("EyeForAnEye_SAMHQSegment", (380, y), (360, 200), SAM_BOX, title=f"SAM-HQ Segment ({side})")
        preview = b.node("PreviewImage", (800, 960 if side == "target" else 1240), (300, 250),
                         title=f"{side.capitalize()} mask")
        b.link(sam, 0, segment, "sam_model")
        b.link(image, 0, segment, "image")
        b.link(segment, 2, preview, "images")
        b.link(image, 0, transfer, side)
        b.link(segment, 1, transfer, f"{side}_mask")
    b.link(transfer, 0, save, "images")
    return b


def demo_workflow(info: dict, name: str = "appearance_transfer_demo", save_prefix: str = "eye_demo"):
    """Demo scene + demo model -> the modular transfer graph (official settings) -> target | reference | result | ideal."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, name)
    model = b.node("EyeForAnEye_LoadDemoModel", (0, 0), (300, 100))
    scene = b.node("EyeForAnEye_DemoScene", (0, 160), (300, 260), [1, "flipped", "bird", 128],
                   title="Eye Demo Scene (try other seeds)")
    positive = b.node("CLIPTextEncode", (360, 0), (320, 90), ["a photo of a bird"],
                      title="Positive prompt (the scene's species)")
    negative = b.node("CLIPTextEncode", (360, 140), (320, 90), [""], title="Negative prompt (empty)")
    encode_target = b.node("VAEEncode", (360, 290), (200, 50), title="VAE Encode (target)")
    encode_reference = b.node("VAEEncode", (360, 380), (200, 50), title="VAE Encode (reference)")
    parts = b.node("PreviewImage", (360, 470), (320, 200), title="Part maps: the same colour is the same part")
    ideal = b.node("PreviewImage", (360, 720), (320, 260), title="Ideal transfer (drawn by the renderer)")
    invert_target = b.node("EyeForAnEye_InvertLatent", (740, 0), (330, 330),
                           OFFICIAL_INVERSION + [0, "fixed", 32, True, 2048, "two finest decoder levels"],
                           title="Invert Latent (target)")
    invert_reference = b.node("EyeForAnEye_InvertLatent", (740, 380), (330, 330),
                              OFFICIAL_INVERSION + [1, "fixed", 32, True, 2048, "two finest decoder levels"],
                              title="Invert Latent (reference, its own noise seed)")
    transfer = b.node("EyeForAnEye_ApplyAppearanceTransfer", (1120, 0), (360, 400), OFFICIAL_TRANSFER,
                      title="Apply Appearance Transfer (official: per-step)")
    sampler = b.node("EyeForAnEye_TransferSampler", (1120, 460), (330, 170), OFFICIAL_ADAIN)
    guider = b.node("CFGGuider", (1520, 0), (300, 100), [2.5], title="CFGGuider (generation cfg 2.5)")
    no_noise = b.node("DisableNoise", (1520, 150), (300, 40))
    sample = b.node("SamplerCustomAdvanced", (1520, 250), (300, 110))
    decode = b.node("VAEDecode", (1880, 0), (200, 50))
    stitch_reference = b.node("ImageStitch", (1880, 100), (300, 150), ["right", True, 4, "white"],
                              title="target | reference")
    stitch_result = b.node("ImageStitch", (1880, 300), (300, 150), ["right", True, 4, "white"],
                           title="... | result")
    stitch_ideal = b.node("ImageStitch", (1880, 500), (300, 150), ["right", True, 4, "white"],
                          title="... | ideal")
    save = b.node("SaveImage", (2220, 0), (620, 260), [save_prefix], title="target | reference | result | ideal")

    b.link(model, 0, invert_target, "model")
    b.link(model, 0, invert_reference, "model")
    b.link(model, 0, transfer, "model")
    b.link(model, 1, positive, "clip")
    b.link(model, 1, negative, "clip")
    b.link(model, 2, encode_target, "vae")
    b.link(model, 2, encode_reference, "vae")
    b.link(model, 2, decode, "vae")
    b.link(scene, 0, encode_target, "pixels")
    b.link(scene, 1, encode_reference, "pixels")
    b.link(scene, 6, positive, "text", widget=True)
    b.link(scene, 5, parts, "images")
    b.link(scene, 4, ideal, "images")
    for invert, encoded in ((invert_target, encode_target), (invert_reference, encode_reference)):
        b.link(encoded, 0, invert, "latent")
        b.link(positive, 0, invert, "positive")
        b.link(negative, 0, invert, "negative")
    b.link(invert_reference, 0, transfer, "reference")
    b.link(invert_target, 0, transfer, "structure")
    b.link(scene, 2, transfer, "target_mask")
    b.link(scene, 3, transfer, "reference_mask")
    b.link(invert_target, 0, sampler, "structure")
    b.link(invert_reference, 0, sampler, "reference")
    b.link(scene, 2, sampler, "target_mask")
    b.link(scene, 3, sampler, "reference_mask")
    b.link(transfer, 0, guider, "model")
    b.link(positive, 0, guider, "positive")
    b.link(negative, 0, guider, "negative")
    b.link(no_noise, 0, sample, "noise")
    b.link(guider, 0, sample, "guider")
    b.link(sampler, 0, sample, "sampler")
    b.link(invert_target, 2, sample, "sigmas")
    b.link(invert_target, 1, sample, "latent_image")
    b.link(sample, 0, decode, "samples")
    b.link(scene, 0, stitch_reference, "image1")
    b.link(scene, 1, stitch_reference, "image2")
    b.link(stitch_reference, 0, stitch_result, "image1")
    b.link(decode, 0, stitch_result, "image2")
    b.link(stitch_result, 0, stitch_ideal, "image1")
    b.link(scene, 4, stitch_ideal, "image2")
    b.link(stitch_ideal, 0, save, "images")
    return b


# five points on the parts of Eye Demo Scene seed 1 (flipped bird): body, wing, head, ... (eye_demo.oracle.part_points)
DEMO_POINTS = "0.30,0.39; 0.59,0.37; 0.25,0.31; 0.44,0.34; 0.33,0.48"
# the demo model's fast settings (tests/benchmarks/bench_points.py): 30 steps x 1 embedding, 4 crops, lr 0.3, every layer
DEMO_FINDER = [DEMO_POINTS, 30, 1, 4, 0.3, 141, "every cross-attention layer", 0, "fixed"]


def points_demo_workflow(info: dict):
    """Demo scene -> Find Corresponding Points -> Point Pairs -> the modular transfer with the point constraint."""
    b = demo_workflow(info, "points_demo", save_prefix="eye_points")
    nodes = {n["title"] if "title" in n else n["type"]: n for n in b.nodes}
    model, scene = b.nodes[0], b.nodes[1]
    encode_target, encode_reference = nodes["VAE Encode (target)"], nodes["VAE Encode (reference)"]
    positive = nodes["Positive prompt (the scene's species)"]
    transfer = nodes["Apply Appearance Transfer (official: per-step)"]
    finder = b.node("EyeForAnEye_FindCorrespondingPoints", (0, 1060), (560, 420), DEMO_FINDER,
                    title="Find Corresponding Points (demo settings; real checkpoints: the defaults)")
    pairs = b.node("EyeForAnEye_PointPairs", (980, 1060), (330, 260), ["", "", "hard", 0.1, 1.0],
                   title="Point Pairs (found points, or type your own)")
    found = b.node("PreviewImage", (620, 1060), (300, 260), title="Found points (numbered)")
    steered = b.node("PreviewImage", (1370, 1060), (330, 260), title="Point pairs and their radius")
    b.link(model, 0, finder, "model")
    b.link(positive, 0, finder, "conditioning")
    b.link(encode_target, 0, finder, "target")
    b.link(encode_reference, 0, finder, "reference")
    b.link(scene, 0, finder, "target_image")
    b.link(scene, 1, finder, "reference_image")
    b.link(finder, 3, found, "images")
    b.link(scene, 0, pairs, "target_image")
    b.link(scene, 1, pairs, "reference_image")
    b.link(finder, 0, pairs, "target_points", widget=True)
    b.link(finder, 1, pairs, "reference_points", widget=True)
    b.link(pairs, 0, transfer, "constraint")
    b.link(pairs, 1, steered, "images")
    return b


def multi_demo_workflow(info: dict):
    """Two swapped creatures of the demo world -> the all-in-one node with instances, paired automatically."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, "several_objects_demo")
    model = b.node("EyeForAnEye_LoadDemoModel", (0, 0), (300, 100))
    scene = b.node("EyeForAnEye_DemoScene", (0, 160), (300, 300), [1, "two creatures, swapped", "bird", 128],
                   title="Eye Demo Scene (two or three creatures, swapped)")
    positive = b.node("CLIPTextEncode", (420, 0), (320, 90), ["a photo of a bird and a fish"],
                      title="Positive prompt (the scene's species)")
    negative = b.node("CLIPTextEncode", (420, 140), (320, 90), [""], title="Negative prompt (empty)")
    number_target = b.node("EyeForAnEye_NumberInstances", (420, 290), (300, 80), title="Number Instances (target)")
    number_reference = b.node("EyeForAnEye_NumberInstances", (420, 440), (300, 80),
                              title="Number Instances (reference)")
    preview_target = b.node("PreviewImage", (780, 290), (320, 200), title="Target instances")
    preview_reference = b.node("PreviewImage", (780, 560), (320, 200), title="Reference instances")
    transfer = b.node("EyeForAnEye_AppearanceTransfer", (1160, 0), (360, 520), ALL_IN_ONE_OFFICIAL,
                      title="Appearance Transfer (instances paired automatically: pairs empty)")
    stitch_reference = b.node("ImageStitch", (1700, 0), (300, 150), ["down", True, 4, "white"],
                              title="target / reference")
    stitch_result = b.node("ImageStitch", (1700, 220), (300, 150), ["down", True, 4, "white"], title="... / result")
    stitch_ideal = b.node("ImageStitch", (1700, 440), (300, 150), ["down", True, 4, "white"], title="... / ideal")
    save = b.node("SaveImage", (2060, 0), (420, 620), ["eye_several_objects"],
                  title="target / reference / result / ideal")
    b.link(model, 0, transfer, "model")
    b.link(model, 1, positive, "clip")
    b.link(model, 1, negative, "clip")
    b.link(model, 2, transfer, "vae")
    b.link(scene, 6, positive, "text", widget=True)
    b.link(positive, 0, transfer, "positive")
    b.link(negative, 0, transfer, "negative")
    b.link(scene, 0, transfer, "target")
    b.link(scene, 1, transfer, "reference")
    b.link(scene, 8, transfer, "target_instances")
    b.link(scene, 9, transfer, "reference_instances")
    b.link(scene, 0, number_target, "image")
    b.link(scene, 8, number_target, "masks")
    b.link(scene, 1, number_reference, "image")
    b.link(scene, 9, number_reference, "masks")
    b.link(number_target, 1, preview_target, "images")
    b.link(number_reference, 1, preview_reference, "images")
    b.link(scene, 0, stitch_reference, "image1")
    b.link(scene, 1, stitch_reference, "image2")
    b.link(stitch_reference, 0, stitch_result, "image1")
    b.link(transfer, 0, stitch_result, "image2")
    b.link(stitch_result, 0, stitch_ideal, "image1")
    b.link(scene, 4, stitch_ideal, "image2")
    b.link(stitch_ideal, 0, save, "images")
    return b


def multi_sam_workflow(info: dict):
    """Your images, two objects each (one SAM-HQ box per object) -> the all-in-one node with instances."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, "several_objects_sam")
    sam, transfer, save = _all_in_one_with_sam(
        b, ("a photo of two birds", "Positive prompt: a photo of <the objects>"),
        ((1160, 300), (360, 520), "Appearance Transfer (pairs empty: automatic; or type e.g. 1>2, 2>1)"),
        ((1700, 300), "eye_several_objects"))
    for side, y, title in (("target", 520, "Target image (structure)"),
                           ("reference", 940, "Reference image (appearance)")):
        image = b.node("LoadImage", (0, y), (300, 330), [f"{side}.png", "image"], title=title)
        segment = b.node("EyeForAnEye_SAMHQSegment", (380, y), (360, 200), TWO_BOXES,
                         title=f"SAM-HQ Segment ({side}): one box per object")
        number = b.node("EyeForAnEye_NumberInstances", (780, y), (300, 80), title=f"Number Instances ({side})")
        preview = b.node("PreviewImage", (780, y + 130), (300, 230), title=f"{side.capitalize()} instances")
        b.link(sam, 0, segment, "sam_model")
        b.link(image, 0, segment, "image")
        b.link(image, 0, number, "image")
        b.link(segment, 0, number, "masks")
        b.link(number, 1, preview, "images")
        b.link(image, 0, transfer, side)
        b.link(segment, 0, transfer, f"{side}_instances")
    b.link(transfer, 0, save, "images")
    return b


def object_info_in_process() -> dict:
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy()
    from eye_for_an_eye.comfy_adapter import headless

    headless.load_nodes(REPO)
    return headless.object_info(sorted(headless.node_types()))


GENERATED = {"appearance_transfer.json": modular_workflow, "appearance_transfer_simple.json": simple_workflow,
             "appearance_transfer_demo.json": demo_workflow, "several_objects_demo.json": multi_demo_workflow,
             "points_demo.json": points_demo_workflow,
             "several_objects_sam.json": multi_sam_workflow}


def main():
    info = object_info_in_process()
    for name, build in GENERATED.items():
        build(info).write(EXAMPLES / name)
        print("wrote", EXAMPLES / name)


if __name__ == "__main__":
    main()
