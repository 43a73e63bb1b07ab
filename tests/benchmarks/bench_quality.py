"""Benchmark (not a test): is the transfer right? Every method against the synthetic world's ground truth.

For each category (aligned, moved, flipped, rotated, articulated, cross-species) and seed, a
pair of Eye Demo Scene is put through the six methods with the demo model and the pack's
own nodes (tests/support/eye_test_support/quality.py), at the official settings unless told
otherwise, and scored against the renderer's ideal transfer (eye_demo/metrics.py):

  part accuracy  share of the target's object pixels whose colour is nearest the reference's
                 colour of the same part (the wing took the wing's colour)
  dE object      mean deltaE76 to the ideal transfer over the object; dE bg the same over the
                 background (the target's background must stay)
  IoU            silhouette IoU of the result's object with the target's
  structure      gradient-magnitude similarity to the ideal transfer (1: every edge in place)

    python tests/benchmarks/bench_quality.py [--category all|flipped,...] [--seeds 1000-1049]
        [--methods official,implicit,...] [--steps 100 --skip 32] [--batch 10] [--threads 2]
        [--name quality] [--examples 2]

Writes tests/benchmarks/results/<name>.json (settings, per-pair scores, means), <name>-bars.png
(a bar chart per category and method) and <name>-examples.png (target | reference | ideal |
each method, for the first --examples pairs of every category), and prints one line per
method with part accuracy in % first. With --steps/--skip other than 100/32 the transfer
schedule (fractions of the generation steps) scales with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests" / "support"))

CATEGORY_ORDER = ("aligned", "moved", "flipped", "rotated", "articulated", "cross-species")
METRICS = (("part_accuracy", "part acc %", 100.0), ("delta_e_object", "dE object", 1.0),
           ("delta_e_background", "dE bg", 1.0), ("silhouette_iou", "IoU", 1.0), ("structure", "structure", 1.0))


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-")
            seeds.extend(range(int(low), int(high) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def table(summary: dict, methods) -> str:
    header = f"{'method':<14}" + "".join(f"{label:>12}" for _, label, _ in METRICS)
    lines = [header]
    for method in methods:
        values = summary.get(method, {})
        lines.append(f"{method:<14}" + "".join(f"{values.get(key, float('nan')) * scale:>12.3f}" if key != "part_accuracy"
                                              else f"{values.get(key, float('nan')) * scale:>12.1f}"
                                              for key, _, scale in METRICS))
    return "\n".join(lines)


def bar_chart(per_category: dict, methods, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(per_category)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / len(methods)
    colours = plt.get_cmap("tab10")
    for ax, (key, label, scale) in zip(axes, (METRICS[0], METRICS[1], METRICS[3])):
        for m, method in enumerate(methods):
            values = [per_category[c].get(method, {}).get(key, np.nan) * scale for c in categories]
            ax.bar(np.arange(len(categories)) + (m - (len(methods) - 1) / 2) * width, values, width, label=method,
                   color=colours(m))
        ax.set_xticks(np.arange(len(categories)), categories, rotation=20)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_grid(examples: list, methods, path: Path):
    """Rows: pairs; columns: target, reference, ideal, then each method, with labels."""
    from PIL import Image, ImageDraw

    columns = ["target", "reference", "ideal"] + list(methods)
    size = examples[0][1].renders[0].image.shape[0]
    pad, head = 4, 16
    canvas = Image.new("RGB", (len(columns) * (size + pad) + 90, len(examples) * (size + pad) + head), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((90 + c * (size + pad) + 2, 2), name, fill="black")
    for row, (category, result) in enumerate(examples):
        y = head + row * (size + pad)
        draw.text((2, y + size // 2 - 6), category, fill="black")
        tiles = [result.renders[0].image, result.renders[1].image, result.ideal] + [result.images[m] for m in methods]
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray((np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)),
                         (90 + c * (size + pad), y))
            if c >= 3:
                score = result.scores[methods[c - 3]]["part_accuracy"] * 100
                draw.text((90 + c * (size + pad) + 2, y + size - 12), f"{score:.0f}%", fill="white")
    canvas.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="all")
    parser.add_argument("--seeds", default="1000-1049")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the six methods")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip", type=int, default=32)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=2, help="pairs per category in the example grid")
    parser.add_argument("--weights", default=None, help="another demo model file (default: the shipped one)")
    parser.add_argument("--name", default="quality")
    args = parser.parse_args(argv)

    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from eye_test_support.quality import METHODS, QualityRunner, Settings, summarise

    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_demo.model import WEIGHTS
    from eye_for_an_eye.eye_demo.pairs import make_pair

    categories = CATEGORY_ORDER if args.category == "all" else tuple(args.category.split(","))
    methods = METHODS if not args.methods else tuple(args.methods.split(","))
    seeds = parse_seeds(args.seeds)
    model, clip, vae, metadata = load_demo(args.weights or WEIGHTS)
    settings = Settings(steps=args.steps, skip=args.skip)
    runner = QualityRunner(model, clip, vae, settings)
    report = {"settings": {**vars(args), "methods": list(methods), "categories": list(categories),
                           "model_step": metadata.get("step"), "threads": args.threads},
              "per_category": {}, "pairs": {}, "seconds": {}}
    examples = []
    for category in categories:
        started = time.perf_counter()
        pairs = [make_pair(seed, category) for seed in seeds]
        done = [0]

        def progress(n, category=category):
            done[0] += n
            print(f"  {category}: {done[0]}/{len(pairs)} pairs", file=sys.stderr, flush=True)

        results = runner.run(pairs, methods, batch=args.batch, progress=progress)
        report["seconds"][category] = time.perf_counter() - started
        report["per_category"][category] = summarise(results, methods)
        report["pairs"][category] = [{"seed": seed, **{m: r.scores[m] for m in methods}}
                                     for seed, r in zip(seeds, results)]
        examples.extend((category, r) for r in results[:args.examples])
        print(f"\n== {category} ({len(pairs)} pairs, {report['seconds'][category]:.0f} s)")
        print(table(report["per_category"][category], methods), flush=True)
    overall = {m: {key: float(np.nanmean([report["per_category"][c][m][key] for c in categories]))
                   for key, _, _ in METRICS} for m in methods}
    report["overall"] = overall
    print(f"\n== all categories (mean of category means)\n{table(overall, methods)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    bar_chart(report["per_category"], methods, RESULTS / f"{args.name}-bars.png",
              f"Demo model, {len(seeds)} pairs per category, {args.steps} steps skipping {args.skip}")
    if examples:
        example_grid(examples, methods, RESULTS / f"{args.name}-examples.png")
    print(f"\nwrote {RESULTS / (args.name + '.json')}, -bars.png, -examples.png")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
