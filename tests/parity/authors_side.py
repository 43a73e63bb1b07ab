"""The authors' side of the parity run: their released pipeline on the inputs the pack gets.

Runs under the authors' own environment (diffusers 0.19.3; made by tests/parity/setup-authors),
never under the pack's, and imports nothing of the pack: plain torch plus the authors' files
from their checkout, unmodified. What is patched here, at run time only:

- their CUDA-only lines (``.cuda()`` in the Fourier filter, ``"cuda"`` devices): tensors stay
  on the CPU;
- their Segmentor, which downloads NLTK data at import and whose output the mask path
  (``mask_use``) never reads: replaced by a stand-in that records nothing;
- the text encoder and the VAE: the prompt embeddings and the clean latents are given, so
  ``encode_text`` and ``vae.encode`` return them (the pack gets the same tensors);
- ``torch.randn_like`` while their inversion draws its noisy latents: it returns the same
  standard-normal draws the pack's inversion makes, in the order their loop asks for them.

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

import sys
import types
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

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


def _import_authors(checkout: Path):
    sys.path.insert(0, str(checkout))
    fake = types.ModuleType("utils.segmentation")
    fake.Segmentor = _NoSegmentor
    import utils  # their package (utils/__init__.py)

    sys.modules["utils.segmentation"] = fake
    utils.segmentation = fake
    import appearance_transfer_model_final as transfer_model
    import config as config_module
    import utils.ddpm_inversion as ddpm_inversion
    import utils.latent_utils as latent_utils
    from models.stable_diffusion_final import CrossImageAttentionStableDiffusionPipeline
    from models.unet_2d_condition import FreeUUNet2DConditionModel

    return SimpleNamespace(model=transfer_model, config=config_module, inversion=ddpm_inversion,
                           latents=latent_utils, Pipeline=CrossImageAttentionStableDiffusionPipeline,
                           UNet=FreeUUNet2DConditionModel)


def _pipeline(authors, data):
    from diffusers import AutoencoderKL, DDIMScheduler

    unet = authors.UNet(**data["unet_config"])
    unet.load_state_dict(data["unet_state"], strict=True)
    unet.eval()
    # a VAE is only asked for its downscale factor: encode is replaced below, decoding is skipped
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    # SD1.5's scheduler config, as their get_stable_diffusion_model loads it
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
    pipe = authors.Pipeline(vae=vae, text_encoder=_TextEncoderStandIn(), tokenizer=None, unet=unet, scheduler=scheduler,
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


def _invert(authors, pipe, latent, draws, data):
    """Their ``invert`` with the given clean latent, prompts and noise draws."""
    prompt = data["prompt"]
    texts = {prompt: data["cond"], "": data["uncond"]}
    order = iter(range(len(draws) - 1, -1, -1))  # their loop draws from the cleanest step (idx 99) up

    def randn_like(x, *args, **kwargs):
        return draws[next(order)].to(x.device, x.dtype).reshape(x.shape)

    pipe.vae.encode = lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent))
    with mock.patch.object(authors.inversion, "encode_text", lambda model, text: texts[text]), \
            mock.patch("torch.randn_like", randn_like):
        zs, xts = authors.inversion.invert(x0=torch.zeros(1, 3, 8, 8), pipe=pipe, prompt_src=prompt,
                                           num_diffusion_steps=data["steps"], cfg_scale_src=data["inversion_cfg"])
    return zs, xts


def main(checkout: str, inputs: str, outputs: str):
    torch.set_num_threads(int(torch.get_num_threads()))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # their Fourier filter's mask
    data = torch.load(inputs, weights_only=False)
    authors = _import_authors(Path(checkout))
    pipe = _pipeline(authors, data)
    out_dir = Path(outputs).parent / "authors-run"
    cfg = authors.config.RunConfig(app_image_path=Path("app.png"), struct_image_path=Path("struct.png"),
                                   domain_name="bird", prompt=data["prompt"], output_path=out_dir,
                                   num_timesteps=data["steps"], skip_steps=data["skip"],
                                   guidance_scale=data["cfg"], use_masked_adain=True, mask_use=True)
    model = authors.model.AppearanceTransferModel(cfg, pipe=pipe)
    matches = []
    _record_matches(pipe, matches)

    model.enable_edit = False
    zs_app, xts_app = _invert(authors, pipe, data["latent_app"], data["noise_app"], data)
    zs_struct, xts_struct = _invert(authors, pipe, data["latent_struct"], data["noise_struct"], data)
    model.enable_edit = True
    matches.clear()  # only the generation's matches are compared
    model.set_latents(xts_app, xts_struct)
    model.set_noise(zs_app, zs_struct)

    # run_appearance_transfer, minus SAM (the masks are given) and the decoding
    init_latents, init_zs = authors.latents.get_init_latents_and_noises(model=model, cfg=cfg)
    pipe.scheduler.set_timesteps(cfg.num_timesteps)
    ranges = (cfg.cross_attn_32_range, cfg.cross_attn_64_range)  # their pipeline accepts but never reads it
    window = authors.config.Range(min(r.start for r in ranges), max(r.end for r in ranges))
    masks = [data[f"mask_{role}"][None].numpy() for role in ("app", "struct")]  # SAM's (1, H, W) per image
    model.sam_app_mask, model.sam_struct_mask = masks
    adain = model.get_adain_callback()
    rows = []

    def record(step, timestep, latents):
        adain(step, timestep, latents)  # their AdaIN first, as their callback runs it
        rows.append(latents.detach().clone())

    rows_in_batch = init_latents.shape[0]
    settings = dict(
        prompt=None, output_type="latent", generator=None, eta=1, callback=record,
        prompt_embeds=data["cond"].expand(rows_in_batch, -1, -1).clone(),
        negative_prompt_embeds=data["uncond"].expand(rows_in_batch, -1, -1).clone(),
        latents=init_latents, zs=init_zs, mask_lst=masks, cross_image_attention_range=window,
        guidance_scale=cfg.guidance_scale, swap_guidance_scale=cfg.swap_guidance_scale,
        num_inference_steps=cfg.num_timesteps, do_v_swap=cfg.do_v_swap,
    )
    final = pipe(**settings).images
    torch.save({"zs_app": zs_app, "xts_app": xts_app, "zs_struct": zs_struct, "xts_struct": xts_struct,
                "steps": torch.stack(rows), "final": final, "matches": matches,
                "timesteps": pipe.scheduler.timesteps.clone(),
                "alphas_cumprod": pipe.scheduler.alphas_cumprod.clone(),
                "final_alpha_cumprod": torch.as_tensor(pipe.scheduler.final_alpha_cumprod)}, outputs)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
