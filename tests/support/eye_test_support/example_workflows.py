"""Builds the example workflows that are generated rather than drawn by hand.

    python tests/support/eye_test_support/example_workflows.py

needs a ComfyUI (COMFYUI_PATH or ~/comfy/ComfyUI) for the node definitions. After a
change, regenerate the thumbnails with tests/browser/make_thumbnails.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "example_workflows"

OFFICIAL_INVERSION = [100, 3.5, "edit-friendly DDPM"]  # steps, cfg, method; then seed, control, skip, capture...
OFFICIAL_TRANSFER = ["feature", "two finest decoder levels", 0.1618, 1.0, 0.5882, 0.0735, "official (asymmetric)", 1.0]
OFFICIAL_ADAIN = [0.7206, 1.0]


def demo_workflow(info: dict):
    """Demo scene + demo model -> the modular transfer graph (official settings) -> target | reference | result | ideal."""
    from eye_test_support.workflow_builder import WorkflowBuilder

    b = WorkflowBuilder(info, "appearance_transfer_demo")
    model = b.node("EyeForAnEye_LoadDemoModel", (0, 0), (300, 100))
    scene = b.node("EyeForAnEye_DemoScene", (0, 160), (300, 260), [1, "flipped", "bird", 128],
                   title="Eye Demo Scene (try other seeds and categories)")
    positive = b.node("CLIPTextEncode", (360, 0), (320, 90), ["a photo of a bird"],
                      title="Positive prompt (from the scene: a photo of a <species>)")
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
                      title="Apply Appearance Transfer (official: per-step matching in the masks)")
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
    save = b.node("SaveImage", (2220, 0), (620, 260), ["eye_demo"], title="target | reference | result | ideal")

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


def object_info_in_process() -> dict:
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy()
    import nodes

    from eye_for_an_eye.demo import object_info

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    asyncio.run(nodes.load_custom_node(str(REPO)))
    return object_info(list(nodes.NODE_CLASS_MAPPINGS))


def main():
    info = object_info_in_process()
    demo_workflow(info).write(EXAMPLES / "appearance_transfer_demo.json")
    print("wrote", EXAMPLES / "appearance_transfer_demo.json")


if __name__ == "__main__":
    main()
