"""Benchmark (not a test): how well Find Corresponding Points places points, against DIFT nearest neighbours.

On pairs of the synthetic world (flipped, rotated, cross-species by default) with their
exact correspondence (eye_demo.oracle.oracle_point), ``--points`` points per pair are drawn
on the target's parts (one part after another, eye_demo.oracle.part_points); each is placed
on the reference by

  found   Find Corresponding Points (the node, with the settings given here)
  dift    the nearest neighbour (cosine) of the point's DIFT feature among the reference's
          object tokens (Extract UNet Features at its defaults), the token's centre

and scored by PCK@0.1: the share of points within 0.1 of the reference object's size (the
longer side of its bounding box) of the truth. Time per point and UNet calls per point are
reported for the settings run.

    python tests/benchmarks/bench_points.py [--categories flipped,rotated,cross-species] [--pairs 30]
        [--points 5] [--steps 30 --embeddings 2 --crops 4 --lr 0.0024] [--layers authors|every]
        [--threads 2] [--name points]

Writes tests/benchmarks/results/<name>.json (settings, per-point results, PCK per category and
method, seconds per point), <name>-bars.png (PCK per category) and <name>-examples.png (the
node's previews of the first pairs, the truth drawn as white rings).
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


def dift_points(target_features, reference_features, reference_mask, points):
    """Each point's DIFT nearest neighbour among the reference's object tokens: (x, y) fractions."""
    import torch

    t = torch.nn.functional.normalize(target_features.features[0].float(), dim=0)
    r = torch.nn.functional.normalize(reference_features.features[0].float(), dim=0)
    c, h, w = r.shape
    inside = torch.nn.functional.interpolate(reference_mask[None, None].float(), size=(h, w), mode="bilinear",
                                             align_corners=False)[0, 0].flatten() > 0
    out = []
    for x, y in points:
        row, col = min(int(y * t.shape[1]), t.shape[1] - 1), min(int(x * t.shape[2]), t.shape[2] - 1)
        similarity = t[:, row, col] @ r.reshape(c, -1)
        similarity = torch.where(inside, similarity, torch.full_like(similarity, -9.0))
        best = int(torch.argmax(similarity))
        out.append(((best % w + 0.5) / w, (best // w + 0.5) / h))
    return out


def bars(pck: dict, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(pck)
    methods = list(next(iter(pck.values())))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(categories), 3.2))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [100 * pck[c][method] for c in categories]
        ax.bar(np.arange(len(categories)) + k * width, values, width, label=method)
        for i, v in enumerate(values):
            ax.text(i + k * width, v + 1, f"{v:.0f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(categories)) + width * (len(methods) - 1) / 2, categories)
    ax.set_ylabel("PCK@0.1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", default="flipped,rotated,cross-species")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=2000)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--embeddings", type=int, default=2)
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.0023755632081200314)
    parser.add_argument("--timestep", type=int, default=141)
    parser.add_argument("--layers", choices=("authors", "every"), default="authors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--name", default="points")
    args = parser.parse_args(argv)

    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_core.points import PointSettings, pck, unet_calls
    from eye_for_an_eye.eye_core.visualize import _ring
    from eye_for_an_eye.eye_demo.model import WEIGHTS
    from eye_for_an_eye.eye_demo.oracle import object_size, oracle_point, part_points
    from eye_for_an_eye.eye_demo.pairs import make_pair
    from eye_for_an_eye.eye_demo.render import render
    from eye_for_an_eye.eye_demo.training.data import caption
    from eye_for_an_eye.nodes import features, points as point_nodes

    model, clip, vae, metadata = load_demo(args.weights or WEIGHTS)
    layers = point_nodes.AUTHORS_LAYERS if args.layers == "authors" else point_nodes.EVERY_LAYER
    settings = PointSettings(steps=args.steps, lr=args.lr, embeddings=args.embeddings, crops=args.crops)
    report = {"settings": {**vars(args), "model_step": metadata.get("step"),
                           "unet_calls_per_point": unet_calls(settings)},
              "pck": {}, "pairs": {}, "seconds_per_point": {}}
    examples = []
    conds = {}

    def conditioning(text):
        if text not in conds:
            conds[text] = [[clip.encode_from_tokens(clip.tokenize(text)), {}]]
        return conds[text]

    for category in args.categories.split(","):
        rows, seconds = [], 0.0
        for n, seed in enumerate(range(args.first_seed, args.first_seed + args.pairs)):
            target, reference = make_pair(seed, category)
            t, r = render(target), render(reference)
            rng = np.random.default_rng(seed)
            queries = part_points(t, r, args.points, rng)
            truth = [oracle_point(t, r, q) for q in queries]
            size = object_size(r)
            images = [torch.from_numpy(x.image[None]) for x in (t, r)]
            with torch.inference_mode():
                latents = [{"samples": vae.encode(image)} for image in images]
                prompt = conditioning(caption([c.species for c in target.creatures]))
                reference_prompt = conditioning(caption([c.species for c in reference.creatures]))
                started = time.perf_counter()
                _, found_text, confidence_text, preview = point_nodes.find_corresponding_points(
                    model, prompt, latents[0], latents[1], point_nodes.format_points(queries), settings.steps,
                    settings.embeddings, settings.crops, settings.lr, args.timestep, layers, seed, images[0],
                    images[1])
                seconds += time.perf_counter() - started
                found = [tuple(map(float, p.split(","))) for p in found_text.split("; ")]
                feats = [features.ExtractUNetFeatures.execute(model=model, latent=latent, positive=p, timestep=261,
                                                              decoder_level="auto (DIFT)", ensemble_size=8,
                                                              seed=seed).args[0]
                         for latent, p in zip(latents, (prompt, reference_prompt))]
            dift = dift_points(feats[0], feats[1], torch.from_numpy(r.labels > 0), queries)
            keep = [i for i, p in enumerate(truth) if p is not None]
            row = {"seed": seed, "size": size, "queries": queries, "truth": truth, "found": found, "dift": dift,
                   "confidences": [float(c) for c in confidence_text.split("; ")],
                   "found_pck": pck([found[i] for i in keep], [truth[i] for i in keep], size),
                   "dift_pck": pck([dift[i] for i in keep], [truth[i] for i in keep], size)}
            rows.append(row)
            if n < args.examples:
                canvas = preview[0].clone()
                height, width = t.image.shape[:2]
                for p in truth:
                    if p is not None:
                        ring = _ring(height, canvas.shape[1], width + p[0] * width, p[1] * height, 3.0, 1.5)
                        canvas[ring] = 1.0
                examples.append((category, seed, canvas.numpy()))
            print(f"  {category} {n + 1}/{args.pairs}: found {row['found_pck']:.2f} dift {row['dift_pck']:.2f}",
                  file=sys.stderr, flush=True)
        report["pairs"][category] = rows
        report["pck"][category] = {m: float(np.nanmean([row[f"{m}_pck"] for row in rows])) for m in ("found", "dift")}
        report["seconds_per_point"][category] = seconds / (args.pairs * args.points)
        print(f"== {category}: PCK@0.1 found {100 * report['pck'][category]['found']:.1f} %, dift "
              f"{100 * report['pck'][category]['dift']:.1f} %, {report['seconds_per_point'][category]:.2f} s per point",
              flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    bars(report["pck"], RESULTS / f"{args.name}-bars.png",
         f"PCK@0.1, {args.pairs} pairs x {args.points} points; found: {args.embeddings} x {args.steps} steps, "
         f"{args.crops} crops, {args.layers} layers")
    if examples:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(examples), 1, figsize=(5, 2.6 * len(examples)))
        for ax, (category, seed, image) in zip(np.atleast_1d(axes), examples):
            ax.imshow(image)
            ax.set_title(f"{category} {seed} (white rings: the truth)", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.name}-examples.png", dpi=110)
        plt.close(fig)
    print(f"wrote {RESULTS / (args.name + '.json')}, -bars.png, -examples.png")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
