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
