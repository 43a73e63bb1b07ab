"""Benchmark (not a test): can the demo model's DIFT features pair creatures at all? Pairing only.

Automatic instance pairing (Pair Instances) compares each target creature's mean DIFT
descriptor with each reference creature's and takes the best assignment. On the swapped
two-creature scenes of bench_multi.py (a bird and a fish, the reference showing them in the
other order, other poses and *other colours*) it is right on about half the scenes. This
benchmark asks whether another feature layer, noise level or descriptor would do better, and
whether the pairing works when the features can tell the creatures apart:

  distinct colours  the benchmark's scenes (eye_demo.pairs.swapped_pair): pairing must follow
                    the species, since every colour changed
  same colours      control: the same scenes with each reference creature given its target
                    counterpart's colours (background, pose and order still differ)

Descriptors, each compared by cosine and assigned by eye_core.instances.pair_automatically:

  mean      the pack's: the mean of each instance's L2-normalised tokens
  centred   the same after subtracting the image's mean foreground token (removes what
            both creatures of an image share: lighting, background bleed, the prompt)
  chamfer   no averaging: mean over a creature's tokens of the best cosine to the other
            creature's tokens, both ways

    python tests/benchmarks/bench_pairing.py [--seeds 2000-2019] [--levels 1,2,3,4,5]
        [--timesteps 261,501] [--ensemble 8] [--threads 2] [--name pairing]

Writes tests/benchmarks/results/<name>.json (right-pairing rates per condition, level,
timestep and descriptor) and <name>.png (one heat map per condition and descriptor), and prints
the best and the pack's default configuration per condition.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DESCRIPTORS = ("mean", "centred", "chamfer")
CONDITIONS = ("distinct colours", "same colours")


def same_colours(target, reference, pairing):
    """The reference with each creature wearing its target counterpart's appearance."""
    creatures = list(reference.creatures)
    for i, j in enumerate(pairing):
        creatures[j] = replace(creatures[j], appearance=target.creatures[i].appearance)
    return replace(reference, creatures=tuple(creatures))


def scores(target_features, target_labels, reference_features, reference_labels, n_t, n_r, descriptor):
    """(n_t, n_r) similarities of the instances under ``descriptor``."""
    import torch
    import torch.nn.functional as F

    from eye_for_an_eye.eye_core import instances

    if descriptor == "mean":
        return instances.similarity(instances.instance_descriptors(target_features, target_labels, n_t),
                                    instances.instance_descriptors(reference_features, reference_labels, n_r))
    tokens = []
    for features, labels in ((target_features, target_labels), (reference_features, reference_labels)):
        flat = features.reshape(features.shape[0], -1).t().double()
        if descriptor == "centred":
            flat = flat - flat[labels.reshape(-1) >= 0].mean(0)
        tokens.append((F.normalize(flat, dim=1), labels.reshape(-1)))
    (t, tl), (r, rl) = tokens
    out = torch.full((n_t, n_r), -1.0, dtype=torch.float64)
    for i in range(n_t):
        for j in range(n_r):
            a, b = t[tl == i], r[rl == j]
            if len(a) == 0 or len(b) == 0:
                continue
            if descriptor == "centred":
                out[i, j] = F.cosine_similarity(a.mean(0), b.mean(0), dim=0)
            else:
                m = a @ b.t()
                out[i, j] = 0.5 * (m.amax(1).mean() + m.amax(0).mean())
    return out.float()


def heat_maps(summary: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels, timesteps = summary["settings"]["levels"], summary["settings"]["timesteps"]
    fig, axes = plt.subplots(len(CONDITIONS), len(DESCRIPTORS), figsize=(3.2 * len(DESCRIPTORS), 2.6 * len(CONDITIONS)),
                             squeeze=False)
    for row, condition in enumerate(CONDITIONS):
        for col, descriptor in enumerate(DESCRIPTORS):
            grid = np.array([[summary["rates"][condition][f"block {lv}, t {ts}"][descriptor] * 100 for ts in timesteps]
                             for lv in levels])
            ax = axes[row][col]
            ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn")
            for (y, x), v in np.ndenumerate(grid):
                ax.text(x, y, f"{v:.0f}", ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(timesteps)), [str(t) for t in timesteps])
            ax.set_xlabel("timestep", fontsize=8)
            ax.set_yticks(range(len(levels)), [f"block {lv}" for lv in levels])
            ax.set_title(f"{condition}: {descriptor}", fontsize=9)
    fig.suptitle(f"automatic pairing right, % of {len(summary['settings']['seeds'])} swapped bird+fish scenes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="2000-2019")
    parser.add_argument("--levels", default="1,2,3,4,5", help="decoder output blocks")
    parser.add_argument("--timesteps", default="261,501")
    parser.add_argument("--ensemble", type=int, default=8, help="noise draws averaged (Pair Instances' default: 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="pairing")
    args = parser.parse_args(argv)

    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from bench_quality import parse_seeds
    from eye_test_support.quality import QualityRunner, run_node

    from eye_for_an_eye.eye_core import instances
    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_demo.pairs import swapped_pair
    from eye_for_an_eye.eye_demo.render import render
    from eye_for_an_eye.eye_demo.training.data import caption
    from eye_for_an_eye.comfy_adapter import unet_layout
    from eye_for_an_eye.nodes import features

    model, clip, vae, _ = load_demo()
    runner = QualityRunner(model, clip, vae)
    seeds = parse_seeds(args.seeds)
    levels = [int(v) for v in args.levels.split(",")]
    timesteps = [int(v) for v in args.timesteps.split(",")]
    default = (unet_layout.dift_output_block(model), 261, "mean")
    right = {c: {} for c in CONDITIONS}
    started = time.perf_counter()
    with torch.inference_mode():
        for seed in seeds:
            target, reference, pairing = swapped_pair(seed, creatures=2, species=["bird", "fish"])
            for condition in CONDITIONS:
                ref = reference if condition == CONDITIONS[0] else same_colours(target, reference, pairing)
                renders = (render(target), render(ref))
                latents = [vae.encode(torch.from_numpy(r.image[None])) for r in renders]
                prompts = [runner.conditioning(caption([c.species for c in s.creatures])) for s in (target, ref)]
                masks = [instances.instance_labels(torch.from_numpy(r.instance_masks.astype(np.float32)))
                         for r in renders]
                for level in levels:
                    for timestep in timesteps:
                        maps = [run_node(features.ExtractUNetFeatures, model=model, latent={"samples": lat},
                                         positive=p, timestep=timestep, decoder_level=f"output block {level}",
                                         ensemble_size=args.ensemble, seed=0)[0].features[0]
                                for lat, p in zip(latents, prompts)]
                        labels = [instances.resize_labels(m, f.shape[-2:]) for m, f in zip(masks, maps)]
                        for descriptor in DESCRIPTORS:
                            s = scores(maps[0], labels[0], maps[1], labels[1], 2, 2, descriptor)
                            ok = instances.pair_automatically(s) == pairing
                            right[condition].setdefault((level, timestep, descriptor), []).append(ok)
            print(f"  seed {seed}: best configuration right so far " + ", ".join(
                f"{c} {max(np.mean(v) for v in right[c].values()) * 100:.0f} %" for c in CONDITIONS), flush=True)
    summary = {
        "settings": {"seeds": seeds, "levels": levels, "timesteps": timesteps, "ensemble": args.ensemble,
                     "scenes": "eye_demo.pairs.swapped_pair, bird + fish (positions swapped)",
                     "default": {"level": default[0], "timestep": default[1], "descriptor": default[2]}},
        "seconds": time.perf_counter() - started,
        "rates": {c: {f"block {lv}, t {ts}": {d: float(np.mean(right[c][(lv, ts, d)])) for d in DESCRIPTORS}
                      for lv in levels for ts in timesteps} for c in CONDITIONS},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=1))
    heat_maps(summary, RESULTS / f"{args.name}.png")
    for c in CONDITIONS:
        best = max(right[c], key=lambda k: np.mean(right[c][k]))
        at_default = f"{np.mean(right[c][default]) * 100:.0f} %" if default in right[c] else "not measured"
        print(f"{c}: pack's default (block {default[0]}, t {default[1]}, mean) right on {at_default}; best block {best[0]}, t {best[1]}, {best[2]}: "
              f"{np.mean(right[c][best]) * 100:.0f} %; median over configurations "
              f"{np.median([np.mean(v) for v in right[c].values()]) * 100:.0f} %")
    print(f"wrote {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    main()
