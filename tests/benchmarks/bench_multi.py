"""Benchmark (not a test): several objects at once, on the synthetic world's swapped two-creature scenes.

Each pair is a target scene of two creatures (a bird and a fish by default: distinct species)
and a reference showing the same two creatures in the other order, other poses and colours
(eye_demo.pairs.swapped_pair): the right transfer gives each target creature the colours of
*its* counterpart, which now stands on the other side. Methods, through the pack's own nodes
with the demo model, all at the official preset (per-step matching, masks = union of instances):

  no-constraint    the official preset with the union masks, no instance pairing
  user-pairing     the true pairing typed as text (Pair Instances)
  auto-pairing     the pairing Pair Instances finds from DIFT features
  auto+parts       auto-pairing and K proxy parts (Proxy Parts), both constraints at once
  user+parts       user-pairing and K proxy parts: what the parts add when the pairing is right
  user+labels      user-pairing and a Label Constraint from part masks given for both images (here
                   the renderer's part labels: what a user's part segmentation would give)
  user+labels, AdaIN by object
                   the same matching, with AdaIN object by object as in user-pairing: how much of
                   the labels' gain is the matching's
  user-pairing, union AdaIN
                   user-pairing with masked AdaIN over the union of the instances (every creature
                   takes the mixed statistics of both reference creatures), as before AdaIN
                   followed the constraint

With a constraint the Transfer Sampler gets it too: AdaIN runs region by region (each target
creature, or proxy part, takes its own counterpart's statistics).

Scores (eye_demo.metrics): per-instance part accuracy (each target creature's pixels judged
against the part colours of its true reference counterpart), and whether the automatic
pairing equals the true one.

    python tests/benchmarks/bench_multi.py [--seeds 2000-2019] [--steps 100 --skip 32] [--parts 4]
        [--species bird,fish] [--threads 2] [--name multi]
        [--methods "no-constraint;user-pairing"] [--adain-min-pixels 0]

Writes tests/benchmarks/results/<name>.json, <name>-bars.png and <name>-examples.png, and prints
one line per method, per-instance part accuracy in % first.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("no-constraint", "user-pairing", "auto-pairing", "auto+parts", "user+parts", "user+labels",
           "user+labels, AdaIN by object", "user-pairing, union AdaIN")


def instance_part_accuracy(result, target_render, reference_render, pairing) -> list[float]:
    """Part accuracy of each target creature against its true counterpart's part colours."""
    from eye_for_an_eye.eye_demo.metrics import part_accuracy

    scores = []
    for i, j in enumerate(pairing):
        target_labels = np.where(target_render.instances == i + 1, target_render.labels, 0)
        reference_labels = np.where(reference_render.instances == j + 1, reference_render.labels, 0)
        scores.append(part_accuracy(result, target_labels, reference_labels, reference_render.image))
    return scores


def run_pair(runner, target, reference, pairing, parts: int, seed: int, methods=METHODS) -> dict:
    """Every method on one pair: results, scores, the automatic pairing."""
    import torch

    from eye_for_an_eye.eye_demo.anatomy import PART_LABELS
    from eye_for_an_eye.eye_demo.render import render
    from eye_for_an_eye.eye_demo.training.data import caption
    from eye_for_an_eye.nodes import instances as instance_nodes
    from eye_for_an_eye.nodes import transfer
    from eye_test_support.quality import run_node

    renders = (render(target), render(reference))
    positive = runner.conditioning(caption([c.species for c in target.creatures]))
    reference_positive = runner.conditioning(caption([c.species for c in reference.creatures]))
    negative = runner.conditioning("")
    images = [torch.from_numpy(r.image[None]) for r in renders]
    instance_masks = [torch.from_numpy(r.instance_masks.astype(np.float32)) for r in renders]
    unions = [m.amax(0, keepdim=True) for m in instance_masks]
    latents = [runner.vae.encode(image) for image in images]
    target_trajectory, start, sigmas = runner._invert(latents[0], positive, negative, seed)
    reference_trajectory, _, _ = runner._invert(latents[1], reference_positive, negative, seed + 1)

    def adain(constraint):
        extra = {} if constraint is None else {"constraint": constraint}
        return run_node(transfer.TransferSampler, structure=target_trajectory, reference=reference_trajectory,
                        adain_start=runner.settings.schedule.adain_start,
                        adain_end=runner.settings.schedule.adain_end, target_mask=unions[0],
                        reference_mask=unions[1], **extra)[0]

    numbered = [run_node(instance_nodes.NumberInstances, image=image, masks=masks)[0]
                for image, masks in zip(images, instance_masks)]
    features = [runner._dift(latents[0], positive), runner._dift(latents[1], reference_positive)]
    true_text = ", ".join(f"{i + 1}>{j + 1}" for i, j in enumerate(pairing))
    user, _, _ = run_node(instance_nodes.PairInstances, target_instances=numbered[0], reference_instances=numbered[1],
                          pairs=true_text)
    auto, auto_text, preview = run_node(instance_nodes.PairInstances, target_instances=numbered[0],
                                        reference_instances=numbered[1], pairs="", target_features=features[0],
                                        reference_features=features[1], target_image=images[0],
                                        reference_image=images[1])
    with_parts = [run_node(instance_nodes.ProxyParts, target_features=features[0], reference_features=features[1],
                           parts=parts, seed=seed, target_mask=unions[0], reference_mask=unions[1],
                           constraint=pairs)[0] for pairs in (auto, user)]
    part_masks = [torch.from_numpy(np.stack([r.labels == label for label in PART_LABELS]).astype(np.float32))
                  for r in renders]
    with_labels = run_node(instance_nodes.LabelConstraint, target_labels=part_masks[0], reference_labels=part_masks[1],
                           constraint=user)[0]
    constraints = {"no-constraint": (None, None), "user-pairing": (user, user), "auto-pairing": (auto, auto),
                   "auto+parts": (with_parts[0], with_parts[0]), "user+parts": (with_parts[1], with_parts[1]),
                   "user+labels": (with_labels, with_labels), "user+labels, AdaIN by object": (with_labels, user),
                   "user-pairing, union AdaIN": (user, None)}
    results, scores = {}, {}
    for method in methods:
        constraint, adain_constraint = constraints[method]
        extra = {} if constraint is None else {"constraint": constraint}
        patched = runner._apply(reference_trajectory, target_trajectory, unions[0], unions[1], **extra)
        results[method] = runner._sample(patched, adain(adain_constraint), positive, negative, sigmas, start)[0]
        per_instance = instance_part_accuracy(results[method], renders[0], renders[1], pairing)
        scores[method] = {"instance_part_accuracy": float(np.nanmean(per_instance)), "per_instance": per_instance}
    return {"renders": renders, "results": results, "scores": scores, "auto_pairs": auto_text,
            "true_pairs": true_text, "pairing_correct": auto_text == true_text, "preview": preview[0].numpy()}


def bar_chart(summary: dict, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(summary["methods"])), 4.4))
    methods = list(summary["methods"])
    values = [summary["methods"][m]["instance_part_accuracy"] * 100 for m in methods]
    ax.bar(range(len(methods)), values, color=plt.get_cmap("tab10")(np.arange(len(methods))))
    for x, v in enumerate(values):
        ax.text(x, v + 0.5, f"{v:.1f}", ha="center")
    ax.set_xticks(range(len(methods)), [m.replace(", ", ",\n") for m in methods], rotation=25, ha="right",
                  fontsize=8)
    ax.set_ylabel("per-instance part accuracy %")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_grid(pairs: list, path: Path, methods=METHODS):
    from PIL import Image, ImageDraw

    columns = ["target", "reference", "pairs (auto)"] + list(methods)
    height, width = pairs[0]["renders"][0].image.shape[:2]
    pad, head = 4, 16
    tile_w = {2: 2 * width}
    widths = [width, width, tile_w[2]] + [width] * len(methods)
    canvas = Image.new("RGB", (sum(widths) + pad * len(widths), len(pairs) * (height + pad) + head), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for c, name in enumerate(columns):
        draw.text((x + 2, 2), name, fill="black")
        x += widths[c] + pad
    for row, pair in enumerate(pairs):
        y = head + row * (height + pad)
        tiles = [pair["renders"][0].image, pair["renders"][1].image, pair["preview"]] + \
                [pair["results"][m] for m in methods]
        x = 0
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray((np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)), (x, y))
            if c >= 3:
                score = pair["scores"][methods[c - 3]]["instance_part_accuracy"] * 100
                draw.text((x + 2, y + height - 12), f"{score:.0f}%", fill="white")
            x += widths[c] + pad
    canvas.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="2000-2019")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip", type=int, default=32)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--species", default="bird,fish", help="comma-separated, one per creature ('' = random)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--name", default="multi")
    parser.add_argument("--adain-min-pixels", type=float, default=0.0,
                        help="labelled AdaIN leaves out labels under this many latent pixels (the pack: 0)")
    parser.add_argument("--methods", default=";".join(METHODS),
                        help="semicolon-separated subset (names hold commas) of: " + "; ".join(METHODS))
    args = parser.parse_args(argv)

    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from bench_quality import parse_seeds
    from eye_test_support.quality import QualityRunner, Settings

    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_demo.pairs import swapped_pair
    from eye_for_an_eye.eye_core.rearrange import TransferSchedule

    if args.adain_min_pixels:  # the Transfer Sampler's labelled AdaIN, with the threshold
        import functools

        from eye_for_an_eye.eye_core import adain
        from eye_for_an_eye.nodes import transfer

        transfer.labelled_adain = functools.partial(adain.labelled_adain, min_pixels=args.adain_min_pixels)

    model, clip, vae, _ = load_demo()
    settings = Settings(steps=args.steps, skip=args.skip, schedule=TransferSchedule())
    runner = QualityRunner(model, clip, vae, settings)
    species = [s for s in args.species.split(",") if s] or None
    methods = tuple(m.strip() for m in args.methods.split(";") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {'; '.join(unknown)}; choose from {'; '.join(METHODS)}")
    seeds = parse_seeds(args.seeds)
    pairs, started = [], time.perf_counter()
    with torch.inference_mode():
        for n, seed in enumerate(seeds):
            target, reference, pairing = swapped_pair(seed, creatures=len(species) if species else 2,
                                                      species=species)
            pairs.append(run_pair(runner, target, reference, pairing, args.parts, seed, methods))
            print(f"  pair {n + 1}/{len(seeds)} (seed {seed}): " + "  ".join(
                f"{m} {pairs[-1]['scores'][m]['instance_part_accuracy'] * 100:.0f}" for m in methods) +
                f"  auto pairs {'right' if pairs[-1]['pairing_correct'] else 'WRONG'}", flush=True)
    summary = {
        "settings": {"seeds": args.seeds, "steps": args.steps, "skip": args.skip, "parts": args.parts,
                     "adain_min_pixels": args.adain_min_pixels,
                     "species": species, "scenes": "eye_demo.pairs.swapped_pair (positions swapped)"},
        "seconds": time.perf_counter() - started,
        "pairing_accuracy": float(np.mean([p["pairing_correct"] for p in pairs])),
        "methods": {m: {"instance_part_accuracy": float(np.nanmean([p["scores"][m]["instance_part_accuracy"]
                                                                    for p in pairs]))} for m in methods},
        "pairs": [{"seed": s, "true_pairs": p["true_pairs"], "auto_pairs": p["auto_pairs"],
                   "scores": {m: p["scores"][m] for m in methods}} for s, p in zip(seeds, pairs)],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=1))
    bar_chart(summary, RESULTS / f"{args.name}-bars.png",
              f"{len(seeds)} swapped two-creature scenes, {args.steps} steps")
    example_grid(pairs[:args.examples], RESULTS / f"{args.name}-examples.png", methods)
    print(f"\nautomatic pairing right on {summary['pairing_accuracy'] * 100:.0f} % of {len(seeds)} scenes")
    print(f"{'method':<28}{'inst. part acc %':>18}")
    for m in methods:
        print(f"{m:<28}{summary['methods'][m]['instance_part_accuracy'] * 100:>18.1f}")
    print(f"wrote {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    main()
