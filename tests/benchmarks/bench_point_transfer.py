"""Benchmark (not a test): the transfer steered by point pairs, against the same transfer without points.

On the pairs of a bench_points.py run (its JSON names categories and seeds), the official
preset runs with the demo model (tests/support/eye_test_support/quality.py) and

  official          no points
  points-ideal3     a hard Point Pairs constraint from 3 ideal points (the first 3 of the run's
                    points on the target's parts, placed on the reference by the exact
                    correspondence, as a careful user would place them)
  points-ideal5     the same from 5 ideal points (and points-ideal5-soft: a soft pull instead)
  points-found      from the run's 5 points as Find Corresponding Points placed them

scored by part accuracy, IoU and the rest of eye_demo.metrics against the ideal transfer.

    python tests/benchmarks/bench_point_transfer.py [--points-run points-fast] [--threads 2] [--name point-transfer]

Writes tests/benchmarks/results/<name>.json and prints a table per category.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests" / "support"))
METHODS = ("official", "points-ideal3", "points-ideal5", "points-ideal5-soft", "points-found")


def point_sets(row) -> dict:
    """{name: (target points, reference points)} of one pair of the points run; pairs without a truth are left out."""
    valid = [i for i, truth in enumerate(row["truth"]) if truth is not None]
    valid = valid + [valid[-1]] * (len(row["truth"]) - len(valid))  # a repeated pair changes nothing
    ideal = [(row["queries"][i], row["truth"][i]) for i in valid]
    return {"points-ideal3": tuple(map(list, zip(*ideal[:3]))), "points-ideal5": tuple(map(list, zip(*ideal[:5]))),
            "points-found": (row["queries"], row["found"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points-run", default="points-fast")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="point-transfer")
    args = parser.parse_args(argv)

    from eye_test_support import comfy_env
    from eye_test_support.pack import load_pack

    load_pack(REPO)
    comfy_env.import_comfy_or_exit()
    import torch

    torch.set_num_threads(args.threads)
    from eye_test_support.quality import QualityRunner, summarise

    from eye_for_an_eye.comfy_adapter.demo_model import load_demo
    from eye_for_an_eye.eye_demo.model import WEIGHTS
    from eye_for_an_eye.eye_demo.pairs import make_pair

    run = json.loads((RESULTS / f"{args.points_run}.json").read_text())
    methods = tuple(args.methods.split(","))
    model, clip, vae, metadata = load_demo(run["settings"].get("weights") or WEIGHTS)
    runner = QualityRunner(model, clip, vae)
    report = {"settings": {**vars(args), "methods": list(methods), "model_step": metadata.get("step")},
              "per_category": {}, "pairs": {}}
    for category, rows in run["pairs"].items():
        pairs = [make_pair(row["seed"], category) for row in rows]
        sets = [point_sets(row) for row in rows]
        results = runner.run(pairs, methods, batch=10, point_sets=sets)
        report["per_category"][category] = summarise(results, methods)
        report["pairs"][category] = [{"seed": row["seed"], **{m: r.scores[m] for m in methods}}
                                     for row, r in zip(rows, results)]
        print(f"== {category} ({len(pairs)} pairs)")
        for method in methods:
            scores = report["per_category"][category][method]
            print(f"  {method:20s} part acc {100 * scores['part_accuracy']:5.1f} %  IoU {scores['silhouette_iou']:.3f}"
                  f"  dE obj {scores['delta_e_object']:.1f}  dE bg {scores['delta_e_background']:.1f}", flush=True)
    report["overall"] = {m: {k: float(np.mean([report["per_category"][c][m][k] for c in report["per_category"]]))
                             for k in ("part_accuracy", "silhouette_iou", "delta_e_object", "delta_e_background")}
                         for m in methods}
    print("== all categories")
    for method, scores in report["overall"].items():
        print(f"  {method:20s} part acc {100 * scores['part_accuracy']:5.1f} %  IoU {scores['silhouette_iou']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
