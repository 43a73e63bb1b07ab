"""Benchmark (not a test): how often each matcher finds the same part, on the synthetic world.

With the demo model, for pairs of the chosen categories, every target object token is
matched to a reference token and scored against the renderer's part labels
(eye_demo/metrics.py: correspondence_accuracy; the part of a token is the majority label of
its pixels, mixed tokens are not scored), with and without the objects' masks:

  DIFT          Extract UNet Features (the node) at every decoder block output and several
                timesteps, ensemble of 4, cosine matching (Match Correspondence's matcher);
  attention     the decoder self-attention inputs the inversion captured (Invert Latent,
                official: 100 steps skipping 32), target against reference at the same step
                and layer (cond rows, what per-step matching compares), at every step of the
                68 and every layer of the two finest levels.

Baselines: chance (a random reference object token) and a positional match (the nearest
reference object token on the grid). Prints the best DIFT setting (level and timestep) and
writes tests/benchmarks/results/<name>.json and <name>.png.

    python tests/benchmarks/bench_correspondence.py [--category flipped,rotated,moved,cross-species]
        [--seeds 2000-2023] [--timesteps 61,161,261,401,601,801] [--threads 2] [--name correspondence]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))


def accuracy(renders, target_features, reference_features, masked: bool):
    """Mean part accuracy of cosine matching of (B, C, h, w) maps, with or without the objects' masks."""
    import torch

    from eye_for_an_eye.eye_core.matching import match
    from eye_for_an_eye.eye_demo.metrics import correspondence_accuracy

    grid = tuple(target_features.shape[-2:])
    masks = {}
    if masked:
        for side in (0, 1):
            masks[side] = torch.from_numpy(np.stack([pair[side].object_mask for pair in renders]).astype(np.float32))
    # check_masks=False: at a coarse grid a small creature may cover no token; its tokens are then not scored
    found = match(target_features.float(), reference_features.float(), masks.get(0), masks.get(1), check_masks=False)
    scores = []
    for i, (t, r) in enumerate(renders):
        index = found.index[i].numpy()
        scores.append(correspondence_accuracy(t.labels, r.labels, index, grid, tuple(reference_features.shape[-2:]))
                      ["part_accuracy"])
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else float("nan")


def best_of(scores: dict) -> str:
    """The key of the highest score; settings that scored nothing (NaN: no token at a coarse grid) lose."""
    return max(scores, key=lambda k: -1.0 if np.isnan(scores[k]) else scores[k])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="flipped,rotated,moved,cross-species")
    parser.add_argument("--seeds", default="2000-2023")
    parser.add_argument("--timesteps", default="61,161,261,401,601,801")
    parser.add_argument("--ensemble", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--name", default="correspondence")
    args = parser.parse_args(argv)

    from bench_quality import parse_seeds
    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from eye_test_support.quality import QualityRunner, run_node

    from eye_for_an_eye.eye_core.trajectory import EF_DDPM
    from eye_for_an_eye.eye_demo.metrics import correspondence_accuracy, positional_matches
    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_demo.model import WEIGHTS
    from eye_for_an_eye.eye_demo.pairs import make_pair
    from eye_for_an_eye.eye_demo.render import render
    from eye_for_an_eye.eye_demo.training.data import caption
    from eye_for_an_eye.comfy_adapter import unet_layout
    from eye_for_an_eye.nodes import features, inversion

    model, clip, vae, metadata = load_demo(args.weights or WEIGHTS)
    runner = QualityRunner(model, clip, vae)
    blocks = unet_layout.output_block_count(model)
    levels = unet_layout.decoder_attention_levels(model)[:2]
    timesteps = [int(t) for t in args.timesteps.split(",")]
    seeds = parse_seeds(args.seeds)
    report = {"settings": vars(args), "model_step": metadata.get("step"), "categories": {}}
    started = time.perf_counter()
    for category in args.category.split(","):
        pairs = [make_pair(seed, category, species="bird" if category != "cross-species" else None)
                 for seed in seeds]
        # one batch per prompt pair
        groups = {}
        for pair in pairs:
            groups.setdefault((caption([pair[0].creatures[0].species]), caption([pair[1].creatures[0].species])),
                              []).append(pair)
        entry = {"dift": {}, "attention": {}, "chance": [], "positional": []}
        for (target_prompt, reference_prompt), group in groups.items():
            renders = [(render(t), render(r)) for t, r in group]
            positive = {0: runner.conditioning(target_prompt), 1: runner.conditioning(reference_prompt)}
            images = {side: torch.from_numpy(np.stack([pair[side].image for pair in renders])) for side in (0, 1)}
            latents = {side: vae.encode(images[side]) for side in (0, 1)}
            finest = tuple(latents[0].shape[-2:])
            for t, r in renders:
                base = correspondence_accuracy(t.labels, r.labels, positional_matches(t.labels, r.labels, finest),
                                               finest, finest)
                entry["chance"].append(base["chance"])
                entry["positional"].append(base["part_accuracy"])
            weight = len(group)
            for block in range(blocks):
                for timestep in timesteps:
                    maps = {side: run_node(features.ExtractUNetFeatures, model=model, latent={"samples": latents[side]},
                                           positive=positive[side], timestep=timestep,
                                           decoder_level=f"output block {block}", ensemble_size=args.ensemble,
                                           seed=side)[0].features for side in (0, 1)}
                    for masked in (False, True):
                        key = f"block {block} t {timestep} {'masked' if masked else 'unmasked'}"
                        entry["dift"].setdefault(key, []).append((accuracy(renders, maps[0], maps[1], masked), weight))
            with torch.inference_mode():
                trajectories = {side: run_node(inversion.InvertLatent, model=model, latent={"samples": latents[side]},
                                               positive=positive[side], negative=runner.conditioning(""), steps=100,
                                               cfg=3.5, method=EF_DDPM, seed=side, skip_steps=32)[0]
                                for side in (0, 1)}
            banks = {side: trajectories[side].features for side in (0, 1)}
            for index in banks[0].indices:
                for level_number, level in enumerate(levels):
                    for layer in level:
                        tokens = {}
                        for side in (0, 1):
                            value, grid = banks[side].get(index, layer, 0)
                            tokens[side] = value.float().transpose(1, 2).reshape(value.shape[0], -1, *grid)
                        for masked in (False, True):
                            key = f"level {level_number} {layer[0][0]} {layer[0][1]}.{layer[1]} " \
                                  f"{'masked' if masked else 'unmasked'}"
                            entry["attention"].setdefault(key, {}).setdefault(index, []).append(
                                (accuracy(renders, tokens[0], tokens[1], masked), weight))
        summary = {"chance": float(np.mean(entry["chance"])), "positional": float(np.mean(entry["positional"])),
                   "dift": {k: float(np.average([a for a, _ in v], weights=[w for _, w in v]))
                            for k, v in entry["dift"].items()},
                   "attention": {k: {int(i): float(np.average([a for a, _ in v], weights=[w for _, w in v]))
                                     for i, v in steps.items()} for k, steps in entry["attention"].items()}}
        report["categories"][category] = summary
        best = best_of(summary["dift"])
        print(f"== {category}: chance {summary['chance']:.3f}, positional {summary['positional']:.3f}, "
              f"best DIFT {best} {summary['dift'][best]:.3f}", flush=True)
        for key, steps in summary["attention"].items():
            values = list(steps.values())
            print(f"   attention {key}: mean {np.mean(values):.3f}, first step {values[0]:.3f}, "
                  f"last {values[-1]:.3f}")
    # the DIFT setting best on average over the categories (masked, as the official preset matches)
    keys = list(next(iter(report["categories"].values()))["dift"])
    mean = {k: float(np.mean([c["dift"][k] for c in report["categories"].values()])) for k in keys}
    report["dift_mean"] = mean
    best = best_of({k: v for k, v in mean.items() if k.endswith(" masked")})
    report["best_dift"] = best
    report["seconds"] = time.perf_counter() - started
    print(f"\nbest DIFT setting over the categories (masked): {best}: {mean[best]:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, blocks, timesteps, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')} and .png")


def plot(report, blocks, timesteps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(report["categories"])
    fig, axes = plt.subplots(2, len(categories), figsize=(4.2 * len(categories), 7.5), squeeze=False)
    for c, category in enumerate(categories):
        data = report["categories"][category]
        grid = np.array([[data["dift"][f"block {b} t {t} masked"] for t in timesteps] for b in range(blocks)])
        ax = axes[0, c]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for b in range(blocks):
            for i in range(len(timesteps)):
                ax.text(i, b, f"{grid[b, i]:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_xticks(range(len(timesteps)), timesteps)
        ax.set_yticks(range(blocks), [f"out {b}" for b in range(blocks)])
        ax.set_title(f"{category}: DIFT (masked)\nchance {data['chance']:.2f}, positional {data['positional']:.2f}",
                     fontsize=9)
        ax.set_xlabel("timestep")
        ax = axes[1, c]
        for key, steps in data["attention"].items():
            style = "-" if key.endswith(" masked") else ":"
            ax.plot(list(steps), list(steps.values()), style, label=key.replace(" masked", " (masks)")
                    .replace(" unmasked", ""), linewidth=1)
        ax.axhline(data["chance"], color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(data["positional"], color="black", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_xlabel("trajectory index (0: start step, noisiest)")
        ax.set_title("attention inputs (captured at inversion)", fontsize=9)
        if c == 0:
            ax.legend(fontsize=6)
    fig.colorbar(image, ax=axes[0, :].tolist(), shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
