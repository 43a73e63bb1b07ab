"""Probe curves of training runs side by side (P1 injection gains, P2 per decoder level), as a PNG and JSON.

    python -m eye_for_an_eye.eye_demo.training.compare_runs <run folder> <run folder> ... --out card/stage1.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = (("p1_oracle@500", "P1 oracle gain, t 500"), ("p1_oracle@300", "P1 oracle gain, t 300"),
          ("p1_implicit@500", "P1 implicit gain, t 500"), ("attn5.0@261", "P2 16x16 (output block 5, finest)"), ("attn4.0@261", "P2 16x16 (output block 4)"),
          ("attn2.0@261", "P2 8x8 (output block 2)"))


def read(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "probe.jsonl").read_text().splitlines() if line.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders of train_unet (each with a probe.jsonl)")
    parser.add_argument("--out", required=True, help="the PNG; a JSON of the same curves is written beside it")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for run in map(Path, args.runs):
        records = read(run)
        start = records[0]["wall"]
        curves[run.name] = [{"minutes": round((r["wall"] - start) / 60, 1), "step": r["step"],
                             **{k: round(r[k], 4) for k, _ in PANELS}} for r in records]
    figure, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for axis, (key, title) in zip(axes, PANELS):
        for name, points in curves.items():
            axis.plot([p["minutes"] for p in points], [p[key] for p in points], marker="o", ms=3, label=name)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("training minutes (1 CPU thread)")
        axis.grid(alpha=0.3)
    axes[0].axhline(0.15, color="grey", ls="--", lw=1)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
