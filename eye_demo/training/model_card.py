"""Write the demo model's card: its figures (PNG) and MODEL_CARD.md, from the runs and the shipped file.

    python -m eye_demo.training.model_card [--vae-run ...] [--unet-run ...]

Pictures: the training curves (VAE PSNR, UNet loss, the correspondence probe against chance
and a positional match), 16 text-to-image samples (8 birds, 8 fish) drawn by ComfyUI's own
KSampler code, and VAE round trips of held-out renders with their PSNR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ...comfy_adapter.bootstrap import import_comfyui
from .common import RUNS

CARD = Path(__file__).resolve().parents[1] / "card"
MODEL_CARD = Path(__file__).resolve().parents[1] / "MODEL_CARD.md"


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def curves(vae_log, unet_log, probe_log, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    axes[0].plot([r["step"] for r in vae_log], [r["psnr"] for r in vae_log])
    axes[0].axhline(30, color="grey", linestyle="--", linewidth=0.8)
    axes[0].set(title="VAE: held-out PSNR (dB)", xlabel="step (8 crops of 64 px)")
    axes[1].plot([r["step"] for r in unet_log], [r["loss"] for r in unet_log])
    axes[1].set(title="UNet: epsilon MSE (running mean)", xlabel="step (64 latents)", yscale="log")
    if probe_log:
        keys = sorted({k for r in probe_log for k in r if "@" in k and (k.startswith("attn") or k.startswith("out"))})
        finest = [k for k in keys if k.startswith("attn4") or k.startswith("attn5") or k.startswith("out3")
                  or k.startswith("out1")]
        for key in finest:
            axes[2].plot([r["step"] for r in probe_log], [r[key] for r in probe_log], label=key)
        axes[2].plot([r["step"] for r in probe_log], [r["chance"] for r in probe_log], "k--", label="chance")
        axes[2].plot([r["step"] for r in probe_log], [r["positional"] for r in probe_log], "k:", label="positional")
        axes[2].set(title="probe: same-part matches, flipped pairs", xlabel="step", ylim=(0, 1))
        axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(model, clip, vae, path: Path, per_species: int = 8, seed: int = 1, steps: int = 30, cfg: float = 4.0):
    from PIL import Image

    from ...comfy_adapter.demo_model import text_to_image

    rows = []
    for species in ("bird", "fish"):
        samples = text_to_image(model, clip, f"a photo of a {species}", per_species, seed, steps, cfg)
        images = vae.decode(samples).float().clamp(0, 1).numpy()
        rows.append(np.concatenate(list(images), axis=1))
    grid = (np.concatenate(rows, axis=0) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(grid).save(path)
    return grid


def round_trips(vae, path: Path, count: int = 6):
    from PIL import Image

    from ..render import render
    from ..scene import random_scene

    images = np.stack([render(random_scene(900_000 + i)).image for i in range(24)])
    pixels = torch.from_numpy(images)
    rebuilt = vae.decode(vae.encode(pixels)).float().clamp(0, 1).numpy()
    psnr = 10 * np.log10(1.0 / ((rebuilt - images) ** 2).mean())
    top = np.concatenate(list(images[:count]), axis=1)
    bottom = np.concatenate(list(rebuilt[:count]), axis=1)
    Image.fromarray((np.concatenate([top, bottom]) * 255 + 0.5).astype(np.uint8)).save(path)
    return float(psnr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae-run", default=str(RUNS / "vae"))
    parser.add_argument("--unet-run", default=str(RUNS / "unet"))
    args = parser.parse_args(argv)
    import_comfyui()
    torch.set_num_threads(2)
    from ...comfy_adapter.demo_model import load_demo
    from ..model import WEIGHTS

    CARD.mkdir(parents=True, exist_ok=True)
    vae_log = read_log(Path(args.vae_run) / "loss.jsonl")
    unet_log = read_log(Path(args.unet_run) / "loss.jsonl")
    probe_log = read_log(Path(args.unet_run) / "probe.jsonl")
    curves(vae_log, unet_log, probe_log, CARD / "training.png")
    model, clip, vae, metadata = load_demo(WEIGHTS)
    with torch.inference_mode():
        sample_grid(model, clip, vae, CARD / "samples.png")
        psnr = round_trips(vae, CARD / "vae_round_trip.png")
    figures = {"metadata": metadata, "vae_round_trip_psnr_24_renders": psnr,
               "probe_last": probe_log[-1] if probe_log else None,
               "unet_last": unet_log[-1] if unet_log else None, "vae_last": vae_log[-1] if vae_log else None,
               "weights_bytes": WEIGHTS.stat().st_size}
    (CARD / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
