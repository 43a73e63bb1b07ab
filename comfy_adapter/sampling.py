"""Sampling through ComfyUI's own machinery: the sigma grid, custom samplers and the CFG guider."""

from __future__ import annotations

import torch

import comfy.samplers


def sigma_grid(model) -> torch.Tensor:
    """The model's ascending sigma grid, one sigma per training timestep (float32, CPU)."""
    return model.get_model_object("model_sampling").sigmas.detach().to("cpu", torch.float32)


def timestep_sigma(model, timestep: int) -> float:
    """The model's sigma at an integer training timestep."""
    return float(model.get_model_object("model_sampling").sigma(torch.tensor(float(timestep))))


def make_sampler(function, **options):
    """A ComfyUI SAMPLER running ``function(model, x, sigmas, extra_args, callback, disable, **options)``."""
    return comfy.samplers.KSAMPLER(function, extra_options=options)


def sample_with_cfg(model, positive, negative, cfg, latent, sampler, sigmas, seed, callback=None):
    """Run ``sampler`` over ``sigmas`` through ComfyUI's own CFGGuider, starting at ``latent`` (no noise added).

    The guider loads the model, prepares the conditioning and applies every patch and
    wrapper of ``model`` exactly as SamplerCustomAdvanced with a CFGGuider does, so a
    replay through that node sees the same predictions. Returns the raw VAE latent.
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    noise = torch.zeros_like(latent)
    return guider.sample(noise, latent, sampler, sigmas, callback=callback, disable_pbar=True, seed=seed)


def sampler_cfg(sampler_model):
    """The guidance scale of the CFGGuider running a SAMPLER function (None for other guiders)."""
    guider = getattr(sampler_model, "inner_model", None)
    return float(guider.cfg) if type(guider) is comfy.samplers.CFGGuider else None
