"""Train the demo model's UNet on pre-encoded latents of the synthetic world (resumable).

    python -m eye_demo.training.train_unet --vae <vae run>/vae.pt --steps 6000

Epsilon prediction on SD1.5's scaled-linear schedule, exactly as ComfyUI samples it;
min-SNR-5 loss weights (faster convergence at equal cost); AdamW with warm-up and a
cosine schedule; an EMA of the weights (what ships); 15 % of the captions replaced by the
empty prompt so classifier-free guidance has an unconditional model. Renders are encoded
once by the trained VAE and cached. Every ``--every`` steps: a resumable state, a line of
the loss log, and the shipped file (EMA UNet + VAE + text encoder, fp16) with its step
count; every ``--probe-every`` steps the correspondence probe (``probe.py``) is logged.

Resuming: from the run's state when present; otherwise ``--init`` starts from a shipped
file (optimizer-free weights and their step count), e.g. to continue on another machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..comfy_env import import_comfyui
from .common import RUNS, LossLog, Progress, cosine_lr, cpu_seconds, load_state, save_state, setup_threads
from .data import render_dataset

TRAIN_SEEDS = (100_000, 65_536)
DROP_PROMPT = 0.15
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.995


def encode_dataset(vae, images: np.ndarray, cache: Path, batch: int = 64) -> torch.Tensor:
    """Model-space latents of all images (cached next to the VAE they came from)."""
    from .probe import encode_images

    if cache.is_file():
        return torch.load(cache)
    chunks = []
    progress = Progress(len(images), 0, "encoding")
    for start in range(0, len(images), batch):
        chunks.append(encode_images(vae, images[start:start + batch]).half())
        progress.update(min(batch, len(images) - start))
    progress.close()
    latents = torch.cat(chunks)
    torch.save(latents, cache)
    return latents


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(RUNS / "unet"), help="run folder (state, loss log, probe log)")
    parser.add_argument("--vae", default=str(RUNS / "vae" / "vae.pt"), help="the VAE written by train_vae")
    parser.add_argument("--out", default=None, help="the shipped file (default: the pack's eye_demo/weights/)")
    parser.add_argument("--init", default=None, help="start from a shipped file when the run has no state")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=24_576, help="how many of the rendered examples to encode "
                        "and train on (encoding costs about 1/86 s an image on 2 CPU cores)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--probe-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast for the forward pass (fp32 weights and optimiser; 1.25x on a CPU "
                             "with avx512_bf16)")
    args = parser.parse_args(argv)

    import_comfyui()
    from ..model import WEIGHTS, build_clip, build_unet, build_vae_module, encode_prompts, read_checkpoint, \
        save_checkpoint
    from .data import caption
    from .probe import alphas_cumprod, probe

    threads = setup_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else WEIGHTS
    log, probe_log = LossLog(run / "loss.jsonl"), LossLog(run / "probe.jsonl")

    vae_file = torch.load(args.vae, map_location="cpu", weights_only=False)
    vae = build_vae_module()
    vae.load_state_dict(vae_file["model"])
    vae.eval().requires_grad_(False)
    clip = build_clip()
    images, captions = render_dataset(*TRAIN_SEEDS)
    images, captions = images[:args.images], captions[:args.images]
    latents = encode_dataset(vae, images, run / f"latents-{TRAIN_SEEDS[0]}-{args.images}.pt").float()
    del images
    names = sorted(set(captions)) + [""]
    with torch.no_grad():
        table = encode_prompts(clip, names)  # (P, 77, C): every caption once, the empty prompt last
    caption_index = torch.tensor([names.index(c) for c in captions])

    def encode_prompt(prompts):
        with torch.no_grad():
            return encode_prompts(clip, prompts)

    unet = build_unet()
    ema = build_unet().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    optimiser = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    step, wall, cpu = 0, 0.0, 0.0
    state = load_state(run / "state.pt")
    if state is not None:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step, wall, cpu = state["step"], state["wall"], state["cpu"]
        print(f"resuming the UNet at step {step} ({wall / 60:.1f} min so far)")
    elif args.init:
        unet_state, _, _, metadata = read_checkpoint(args.init)
        unet.load_state_dict({k: v.float() for k, v in unet_state.items()})
        ema.load_state_dict(unet.state_dict())
        step, wall, cpu = metadata.get("step", 0), metadata.get("wall", 0.0), metadata.get("cpu", 0.0)
        print(f"starting from {args.init} at step {step} (weights only; a fresh optimiser)")
    parameters = sum(p.numel() for p in unet.parameters())
    print(f"UNet: {parameters / 1e6:.2f}M parameters, {threads} threads, {len(latents)} latents "
          f"{tuple(latents.shape[1:])}, batch {args.batch}, captions {names}")

    abar = alphas_cumprod()
    snr = abar / (1 - abar)
    weight_of_t = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr  # min-SNR-gamma for epsilon prediction

    def export():
        metadata = {
            "step": step, "samples": step * args.batch, "wall": wall_now, "cpu": cpu_now, "batch": args.batch,
            "parameters": parameters, "vae_psnr": vae_file.get("psnr"), "vae_steps": vae_file.get("step"),
            "vae_wall": vae_file.get("wall"), "vae_cpu": vae_file.get("cpu"), "prompts": names[:-1],
            "image_size": 128, "drop_prompt": DROP_PROMPT, "lr": args.lr, "ema": EMA_DECAY, "bf16": args.bf16,
        }
        save_checkpoint(out, ema.state_dict(), vae.state_dict(), clip.cond_stage_model.state_dict(), metadata)
        (run / "exported.json").write_text(json.dumps(metadata, indent=1))

    progress = Progress(args.steps, step, "UNet")
    started, cpu_started, running = time.time(), cpu_seconds(), []
    unet.train()
    while step < args.steps:
        index = torch.randint(0, len(latents), (args.batch,), generator=generator)
        x0 = latents[index]
        prompts = caption_index[index].clone()
        prompts[torch.rand(args.batch, generator=generator) < DROP_PROMPT] = len(names) - 1
        context = table[prompts]
        t = torch.randint(0, 1000, (args.batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in optimiser.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=150)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            predicted = unet(noisy, t.float(), context=context)
        per_sample = (predicted.float() - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * weight_of_t[t]).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        step += 1
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        running.append(float(per_sample.mean().detach()))
        progress.update(1, loss=running[-1])
        if step % args.every == 0 or step == args.steps:
            wall_now = wall + time.time() - started
            cpu_now = cpu + cpu_seconds() - cpu_started
            log.write(step=step, loss=float(np.mean(running)), lr=optimiser.param_groups[0]["lr"], wall=wall_now,
                      cpu=cpu_now, samples=step * args.batch)
            running = []
            save_state(run / "state.pt", model=unet.state_dict(), ema=ema.state_dict(),
                       optimiser=optimiser.state_dict(), generator=generator.get_state(), step=step, wall=wall_now,
                       cpu=cpu_now)
            export()
        if step % args.probe_every == 0 or step == args.steps:
            ema.eval()
            scores = probe(ema, vae, encode_prompt, timesteps=(261, 501))
            best = max((k for k in scores if "@" in k), key=scores.get)
            probe_log.write(step=step, wall=wall + time.time() - started, **scores)
            message = (f"step {step}: probe best {best} {scores[best]:.3f} (chance {scores['chance']:.3f}, "
                       f"positional {scores['positional']:.3f})")
            progress.bar.write(message) if progress.bar else print(message)
    progress.close()
    print(f"UNet done: {step} steps; shipped file {out}")


if __name__ == "__main__":
    main()
