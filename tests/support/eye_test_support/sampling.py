"""Sampling through ComfyUI's own custom-sampler nodes, and the pack's warnings, for the node tests."""

import logging


def sample(nodes, model, pos, neg, sampler, sigmas, start, cfg=2.5):
    """SamplerCustomAdvanced with a CFGGuider and DisableNoise, as the modular workflows run it."""
    (guider,) = nodes.CFGGuider().get_guider(model, pos, neg, cfg)
    (noise,) = nodes.DisableNoise().get_noise()
    out, _ = nodes.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
    return out["samples"]


def warnings_in(caplog):
    """The pack's warnings caught by pytest's caplog."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "eye_for_an_eye"]


def all_in_one(model, vae, pos, neg, **settings):
    """The all-in-one node on two random 64 px images, 4 steps: its settings overridden by ``settings``."""
    import torch

    from eye_for_an_eye.nodes import transfer

    inputs = dict(model=model, vae=vae, positive=pos, negative=neg, target=torch.rand(1, 64, 64, 3),
                  reference=torch.rand(1, 64, 64, 3), steps=4, skip_steps=1, inversion_cfg=3.5, cfg=2.5,
                  matching=transfer.PER_STEP, seed=0)
    inputs.update(settings)
    return tuple(transfer.AppearanceTransfer.execute(**inputs).args)
