"""Are the demo UNet's features semantic? A cheap correspondence probe run during training.

For pairs of the synthetic world (flipped by default: a positional match is wrong on half
of the creature), both images are noised to a timestep, the UNet runs once per noise draw
with the species prompt, and features are read at every decoder block output and at every
decoder self-attention input (what per-step matching uses). Each target object token is
matched to its cosine nearest reference object token; the score is the share matched into
the same part (``metrics.correspondence_accuracy``), against chance and a positional match.
A control repaints the reference in the target's colours: high accuracy there and low on
the real pair means the features encode colour, not part identity.
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import correspondence_accuracy, positional_matches, token_labels
from ..pairs import make_pair
from ..render import render
from .data import caption


def alphas_cumprod() -> torch.Tensor:
    """SD1.5's scaled-linear schedule (ComfyUI's "linear": betas from 0.00085 to 0.012, squared-root spacing)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def encode_images(vae, images: np.ndarray) -> torch.Tensor:
    """Model-space latents (posterior mean x 0.18215) of uint8 or 0..1 float (N, H, W, 3) images."""
    x = torch.as_tensor(images).float()
    if x.max() > 1.5:
        x = x / 255.0
    x = x.permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        mean = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)[0]
    return mean * 0.18215


class FeatureTap:
    """Forward hooks on every decoder block output and every decoder self-attention input."""

    def __init__(self, unet):
        self.features = {}
        self.handles = []
        for index, block in enumerate(unet.output_blocks):
            self.handles.append(block.register_forward_hook(self._keep(f"out{index}")))
            for layer in block:
                for depth, transformer in enumerate(getattr(layer, "transformer_blocks", [])):
                    self.handles.append(transformer.norm1.register_forward_hook(self._keep(f"attn{index}.{depth}")))

    def _keep(self, name):
        def hook(module, args, output):
            self.features[name] = output.detach()
        return hook

    def close(self):
        for handle in self.handles:
            handle.remove()


def _as_grid(feature: torch.Tensor, latent_hw) -> torch.Tensor:
    """(B, C, h, w) from a block output or a (B, N, C) attention input."""
    if feature.ndim == 4:
        return feature
    b, n, c = feature.shape
    h, w = latent_hw
    for factor in (1, 2, 4, 8):
        if (h // factor) * (w // factor) == n:
            return feature.transpose(1, 2).reshape(b, c, h // factor, w // factor)
    raise ValueError(f"cannot place {n} tokens on a {h}x{w} latent")


def unet_features(unet, latents, context, timestep: int, ensemble: int, generator) -> dict:
    """Features (name -> (B, C, h, w)) averaged over ``ensemble`` noise draws at ``timestep``."""
    abar = alphas_cumprod()[timestep]
    tap = FeatureTap(unet)
    sums = {}
    try:
        with torch.no_grad():
            for _ in range(ensemble):
                noise = torch.randn(latents.shape, generator=generator)
                noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
                t = torch.full((latents.shape[0],), float(timestep))
                unet(noisy, t, context=context)
                for name, value in tap.features.items():
                    value = _as_grid(value, latents.shape[-2:]).float()
                    sums[name] = sums.get(name, 0) + value / ensemble
    finally:
        tap.close()
    return sums


def match(target: torch.Tensor, reference: torch.Tensor, target_tokens, reference_tokens) -> np.ndarray:
    """Cosine nearest reference token (among ``reference_tokens``) of each target token in ``target_tokens``."""
    t = torch.nn.functional.normalize(target.flatten(1).T, dim=1)
    r = torch.nn.functional.normalize(reference.flatten(1).T, dim=1)
    matches = np.full(t.shape[0], -1)
    allowed = torch.as_tensor(np.flatnonzero(reference_tokens))
    rows = np.flatnonzero(target_tokens)
    if rows.size and allowed.numel():
        best = (t[rows] @ r[allowed].T).argmax(1)
        matches[rows] = allowed[best].numpy()
    return matches


def probe(unet, vae, encode_prompt, seeds=range(16), category: str = "flipped", timesteps=(261,), ensemble: int = 2,
          recolour: bool = False, seed: int = 0) -> dict:
    """Mean correspondence part accuracy per feature name and timestep over the pairs of ``seeds``.

    ``encode_prompt(list of str) -> (N, 77, C)``. Returns {"<feature>@<t>": accuracy, ...,
    "chance": ..., "positional": ...} (positional at the finest token grid).
    """
    generator = torch.Generator().manual_seed(seed)
    pairs = [make_pair(s, category) for s in seeds]
    if recolour:
        pairs = [(t, r.with_appearances([t.creatures[0].appearance])) for t, r in pairs]
    renders = [(render(t), render(r)) for t, r in pairs]
    images = np.stack([x.image for pair in renders for x in pair])
    latents = encode_images(vae, images)
    prompts = [caption([c.species for c in scene.creatures]) for pair in pairs for scene in pair]
    context = encode_prompt(prompts)
    scores = {}
    for timestep in timesteps:
        features = unet_features(unet, latents, context, timestep, ensemble, generator)
        for name, value in features.items():
            accuracies = []
            for i, (target, reference) in enumerate(renders):
                grid = tuple(value.shape[-2:])
                t_tokens = token_labels(target.labels, grid)[0] > 0
                r_tokens = token_labels(reference.labels, grid)[0] > 0
                matches = match(value[2 * i], value[2 * i + 1], t_tokens, r_tokens)
                accuracies.append(correspondence_accuracy(target.labels, reference.labels, matches, grid, grid)
                                  ["part_accuracy"])
            scores[f"{name}@{timestep}"] = float(np.nanmean(accuracies))
    finest = max((v.shape[-2:] for v in features.values()), key=lambda s: s[0] * s[1])
    chance, positional = [], []
    for target, reference in renders:
        positional.append(correspondence_accuracy(target.labels, reference.labels,
                                                  positional_matches(target.labels, reference.labels, tuple(finest)),
                                                  tuple(finest), tuple(finest)))
        chance.append(positional[-1]["chance"])
    scores["chance"] = float(np.nanmean(chance))
    scores["positional"] = float(np.nanmean([p["part_accuracy"] for p in positional]))
    return scores


# ---------------------------------------------------------------- P1: does attention carry appearance?

METHOD_BLOCKS = (2, 3, 4, 5)  # the demo UNet's two finest decoder attention levels (what the method edits)


def decode_images(vae, latents: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) float images in 0..1 from model-space latents (the inverse of encode_images)."""
    with torch.no_grad():
        x = vae.decode(latents.float() / 0.18215)
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def injection_probe(unet, vae, encode_prompt, seeds=range(16), category: str = "flipped", timesteps=(300, 500),
                    blocks=METHOD_BLOCKS, seed: int = 0) -> dict:
    """P1: the part-accuracy gain of the one-step x0 prediction when the decoder attention gets the reference.

    For each pair (different palettes), the target is noised to t and its x0 is predicted plainly,
    with its attention inputs replaced by the reference's along the exact correspondence
    (``oracle``, the method's injection with a perfect match) and with the reference's keys and
    values (``implicit``). Returns {"p1_oracle@t", "p1_implicit@t", "pa_plain@t", ...}: gains
    are the mean part accuracy minus the plain one.
    """
    from ..metrics import part_accuracy
    from ..oracle import oracle_correspondence
    from .attention_hooks import PairedAttention

    pairs = [make_pair(s, category) for s in seeds]
    renders = [(render(t), render(r)) for t, r in pairs]
    b = len(renders)
    images = np.stack([x[0].image for x in renders] + [x[1].image for x in renders])
    latents = encode_images(vae, images)
    prompts = [caption([c.species for c in scene.creatures]) for scene in [p[0] for p in pairs] + [p[1] for p in pairs]]
    context = encode_prompt(prompts)
    index = {}
    for grid in ((16, 16), (8, 8)):
        rows = [oracle_correspondence(t.labels, t.uv, r.labels, r.uv, grid).index[0] for t, r in renders]
        index[grid[0] * grid[1]] = torch.stack(rows)
    generator = torch.Generator().manual_seed(seed)
    abar = alphas_cumprod()
    scores = {}
    with PairedAttention(unet, blocks) as paired, torch.no_grad():
        for timestep in timesteps:
            a = abar[timestep]
            noise = torch.randn(latents.shape, generator=generator)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            t = torch.full((2 * b,), float(timestep))
            accuracy = {}
            for mode in ("plain", "inject", "implicit"):
                paired.configure(b, mode, index)
                eps = unet(noisy, t, context=context)[:b]
                x0 = (noisy[:b] - (1 - a).sqrt() * eps) / a.sqrt()
                decoded = decode_images(vae, x0)
                accuracy[mode] = float(np.nanmean([part_accuracy(decoded[i], renders[i][0].labels,
                                                                 renders[i][1].labels, renders[i][1].image)
                                                   for i in range(b)]))
            paired.configure()
            scores[f"pa_plain@{timestep}"] = accuracy["plain"]
            scores[f"p1_oracle@{timestep}"] = accuracy["inject"] - accuracy["plain"]
            scores[f"p1_implicit@{timestep}"] = accuracy["implicit"] - accuracy["plain"]
    return scores
