"""The authors' side of the parity run: their own entry point, ``run.run(cfg)``, on the inputs the pack gets.

Runs under the authors' own environment (diffusers 0.19.3; made by tests/parity/setup-authors),
never under the pack's, and imports nothing of the pack: plain torch plus the authors' files
from their checkout, unmodified. Their ``run`` inverts both images, sets the latents and runs
the transfer exactly as their README's command does; what is stood in for, at run time only:

- their CUDA-only lines (``.cuda()``, ``.to("cuda")``, ``torch.Generator("cuda")``): tensors stay
  on the CPU;
- their Segmentor (downloads NLTK data at import; the mask path never reads it) and SAM-HQ
  (a submodule their repository does not carry): SAM's predictor returns the given masks,
  app first, as their loop asks; their mask figures are not drawn;
- image files, the text encoder and the VAE: their loaders get blank images, and the VAE and
  ``encode_text`` return the given clean latents and prompt embeddings (the pack gets the same);
- ``torch.randn_like`` while their inversion draws its noisy latents: it returns the same
  standard-normal draws the pack's inversion makes, in the order their loop asks for them;
- the pipeline call keeps every argument their ``run_appearance_transfer`` passes, except that
  the prompt goes in as the given embeddings and the output stays a latent, and it records the
  rows after each step's callback (their masked AdaIN).

    python authors_side.py <authors checkout> <inputs.pt> <outputs.pt>

``inputs.pt`` (written by run_parity.py): the UNet's diffusers config and weights, the raw
(VAE-space) latents of the reference ("app") and the target ("struct"), cond / uncond
embeddings, the two 512x512 masks, the per-step noise draws of each inversion, the settings.
``outputs.pt``: every inversion noise map and noisy latent, the three generation rows after
each of the 68 steps (after masked AdaIN), in diffusers' latent scale, and every token match
their per-step matching made (layer, grid, and for each output token the reference token it
took, -1 where it kept its own feature), in the order their layers ran.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch


class _TextEncoderStandIn(torch.nn.Module):
    """The pipeline reads only its dtype and device: the prompt embeddings are given."""

    dtype = torch.float32
    device = torch.device("cpu")


class _NoSegmentor:
    """Stands in for the authors' Segmentor (cross-attention self-segmentation, unused with SAM masks)."""

    def __init__(self, *args, **kwargs):
        pass

    def update_attention(self, *args, **kwargs):
        pass


class _GivenMasks:
    """Stands in for SAM-HQ's model and predictor: ``predict`` returns the given masks in turn."""

    def __init__(self, masks):
        self._masks = iter(masks)

    def to(self, *args, **kwargs):
        return self

    def set_image(self, image):
        pass

    def predict(self, **kwargs):
        mask = next(self._masks)
        return mask, np.ones(len(mask)), mask.astype(np.float32)


def _is_cuda(device) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda")


@contextlib.contextmanager
def _cpu_only():
    """Their ``.cuda()``, ``.to("cuda")`` and ``torch.Generator("cuda")`` keep to the CPU."""
    to, generator = torch.Tensor.to, torch.Generator

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if _is_cuda(a) else a for a in args)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)

    with mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self), \
            mock.patch.object(torch.Tensor, "to", to_cpu), \
            mock.patch.object(torch, "Generator", lambda device="cpu": generator("cpu")):
        yield


def _import_authors(checkout: Path, masks):
    """Their ``run`` module, with the Segmentor and SAM-HQ stood in for before it imports them."""
    sys.path.insert(0, str(checkout))
    segmentation = types.ModuleType("utils.segmentation")
    segmentation.Segmentor = _NoSegmentor
    import utils  # their package (utils/__init__.py)

    sys.modules["utils.segmentation"] = segmentation
    utils.segmentation = segmentation
    predictor = _GivenMasks(masks)
    sam = types.ModuleType("sam_hq.segment_anything")
    sam.sam_model_registry = {"vit_l": lambda checkpoint=None: predictor}
    sam.SamPredictor = lambda model: predictor
    sys.modules.setdefault("sam_hq", types.ModuleType("sam_hq"))
    sys.modules["sam_hq.segment_anything"] = sam
    import run

    return run


def _defined_in(module_name: str, base: type) -> type:
    """The one subclass of ``base`` that their module ``module_name`` defines (their UNet, their pipeline)."""
    import importlib

    module = importlib.import_module(module_name)
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__]
    if len(found) != 1:
        sys.exit(f"expected one {base.__name__} in their {module_name}, found {[c.__name__ for c in found]}")
    return found[0]


def _pipeline(data):
    """Their pipeline and UNet classes around the given weights; a VAE only for its downscale factor."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel

    unet = _defined_in("models.unet_2d_condition", UNet2DConditionModel)(**data["unet_config"])
    unet.load_state_dict(data["unet_state"], strict=True)
    unet.eval()
    # encode is replaced below and decoding is skipped
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    # SD1.5's scheduler config, the one their loader reads from the hub
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
    pipeline_class = _defined_in("models.stable_diffusion_final", DiffusionPipeline)
    pipe = pipeline_class(vae=vae, text_encoder=_TextEncoderStandIn(), tokenizer=None, unet=unet, scheduler=scheduler,
                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe.to("cpu")


def _record_matches(pipe, matches: list):
    """Wrap each attention processor's matching so that every match it makes is kept, unchanged."""
    for processor in {id(p): p for p in pipe.unet.attn_processors.values()}.values():
        original = processor.matching_feature

        def recording(x, *args, _original=original, _place=processor.place_in_unet, **kwargs):
            result = _original(x, *args, **kwargs)
            side = int(round(x.shape[1] ** 0.5))
            index = torch.full((side * side,), -1, dtype=torch.long)
            for (column, row), (ref_column, ref_row) in zip(result[1], result[2]):
                index[row * side + column] = ref_row * side + ref_column
            matches.append({"place": _place, "grid": side, "index": index})
            return result

        processor.matching_feature = recording


class _Recorder:
    """The pipeline as their model sees it: every attribute is the pipeline's; a call (the
    transfer) takes the prompt as the given embeddings, returns latents, and keeps each step."""

    def __init__(self, pipe, data, out: dict, matches: list):
        self._pipe, self._data, self._out, self._matches = pipe, data, out, matches

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, prompt, callback, **settings):
        from PIL import Image

        rows = []

        def record(step, timestep, latents):
            callback(step, timestep, latents)  # their AdaIN first, as their pipeline runs it
            rows.append(latents.detach().clone())

        self._matches.clear()  # only the generation's matches are compared
        n = len(prompt)
        final = self._pipe(prompt=None, prompt_embeds=self._data["cond"].expand(n, -1, -1).clone(),
                           negative_prompt_embeds=self._data["uncond"].expand(n, -1, -1).clone(),
                           callback=record, output_type="latent", **settings).images
        self._out.update(steps=torch.stack(rows), final=final)
        return SimpleNamespace(images=[Image.new("RGB", (8, 8))] * n)  # their run saves these


def _inverting(original, pipe, data, out: dict):
    """Their ``invert``, given per image (app first, as their invert_images calls it) its clean
    latent and its noise draws; the noise maps and noisy latents are kept."""
    sides = iter(("app", "struct"))

    def inverting(**kwargs):
        role = next(sides)
        latent, draws = data[f"latent_{role}"], data[f"noise_{role}"]
        order = iter(range(len(draws) - 1, -1, -1))  # their loop draws from the cleanest step (idx 99) up

        def randn_like(x, *args, **kw):
            return draws[next(order)].to(x.device, x.dtype).reshape(x.shape)

        pipe.vae.encode = lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent))
        with mock.patch("torch.randn_like", randn_like):
            zs, xts = original(**kwargs)
        out[f"zs_{role}"], out[f"xts_{role}"] = zs, xts
        return zs, xts

    return inverting


def main(checkout: str, inputs: str, outputs: str):
    data = torch.load(inputs, weights_only=False)
    if data["inversion_cfg"] != 3.5:
        sys.exit(f"their invert_images hard-codes an inversion guidance of 3.5, not {data['inversion_cfg']}")
    masks = [data[f"mask_{role}"][None].numpy() for role in ("app", "struct")]  # SAM's (1, H, W) per image
    run = _import_authors(Path(checkout), masks)
    import config
    import utils.ddpm_inversion as inversion
    import utils.latent_utils as latent_utils

    pipe = _pipeline(data)
    matches = []
    out = {"matches": matches}
    recorder = _Recorder(pipe, data, out, matches)

    model_class = run.AppearanceTransferModel

    def model_on_given_pipe(cfg):
        model = model_class(cfg, pipe=recorder)
        _record_matches(pipe, matches)
        return model

    texts = {data["prompt"]: data["cond"], "": data["uncond"]}
    blank = np.zeros((512, 512, 3), np.uint8)
    workdir = Path(outputs).parent / "authors-run"
    cfg = config.RunConfig(app_image_path=Path("app.png"), struct_image_path=Path("struct.png"), domain_name="bird",
                           prompt=data["prompt"], output_path=workdir, num_timesteps=data["steps"],
                           skip_steps=data["skip"], guidance_scale=data["cfg"], use_masked_adain=True,
                           mask_use=True, load_latents=False)
    with _cpu_only(), \
            mock.patch.object(run, "AppearanceTransferModel", model_on_given_pipe), \
            mock.patch.object(latent_utils, "invert", _inverting(latent_utils.invert, pipe, data, out)), \
            mock.patch.object(inversion, "encode_text", lambda model, text: texts[text]), \
            mock.patch.object(latent_utils.image_utils, "load_images", lambda cfg, save_path=None: (blank, blank)), \
            mock.patch.object(run.cv2, "imread", lambda path, *args: blank), \
            mock.patch.object(run, "show_res", lambda *args, **kwargs: None):
        run.run(cfg)
    torch.save(dict(out, timesteps=pipe.scheduler.timesteps.clone(), alphas_cumprod=pipe.scheduler.alphas_cumprod.clone(),
                    final_alpha_cumprod=torch.as_tensor(pipe.scheduler.final_alpha_cumprod)), outputs)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
