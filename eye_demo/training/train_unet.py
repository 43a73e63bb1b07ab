"""Train the demo model's UNet on pre-encoded latents of the synthetic world (resumable).

    python -m eye_for_an_eye.eye_demo.training.train_unet --init <shipped file> --paired --minutes 60

Epsilon prediction on SD1.5's scaled-linear schedule, exactly as ComfyUI samples it;
min-SNR-5 loss weights; AdamW; an EMA of the weights (what ships); 15 % of the captions
replaced by the empty prompt so classifier-free guidance has an unconditional model.
Renders are encoded once by the VAE and cached under a name that carries the VAE's
fingerprint (a retrained VAE never reuses stale latents).

``--paired`` trains on pairs of renders of the same creatures and palette in two poses
(``paired.py``): in the two finest decoder attention levels (what the method edits) each
target also attends to its partner's keys and values (``cross``), or has its attention
input replaced by the partner's along the exact correspondence (``inject``, the method's
own pathway), or attends to itself alone (``plain``), in the shares given. Targets are
often drawn at high noise and partners nearly clean, so the target's colours can only come
through attention. The shipped weights stay a stock UNet: the rewiring exists only here.

Every ``--every`` steps: a resumable state, a line of the loss log, and the run's model
file (EMA UNet + VAE + text encoder, fp16) with its step count; every ``--probe-minutes``
the probes (``probe.py``: P1 injection gain, P2 correspondence) are logged.

Resuming: from the run's state when present; otherwise ``--init`` starts from a model
file (weights and their step count; a fresh optimiser, warmed up again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...comfy_adapter.bootstrap import import_comfyui
from .common import RUNS, LossLog, Progress, cosine_lr, cpu_seconds, load_state, save_state, setup_threads
from .data import render_dataset

TRAIN_SEEDS = (100_000, 65_536)
DROP_PROMPT = 0.15
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.995


def vae_fingerprint(vae) -> str:
    """A short hash of the VAE's weights: the latent cache's name carries it."""
    digest = hashlib.sha1()
    for key, value in sorted(vae.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def encode_dataset(vae, images: np.ndarray, cache: Path, batch: int = 64) -> torch.Tensor:
    """Model-space latents (fp16) of all images (N, ..., H, W, 3), cached at ``cache``."""
    from .probe import encode_images

    if cache.is_file():
        return torch.load(cache)
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    chunks = []
    progress = Progress(len(flat), 0, "encoding")
    for start in range(0, len(flat), batch):
        chunks.append(encode_images(vae, flat[start:start + batch]).half())
        progress.update(min(batch, len(flat) - start))
    progress.close()
    latents = torch.cat(chunks)
    latents = latents.reshape(*lead, *latents.shape[1:])
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(latents, cache)
    return latents


def learning_rate(step: int, args, first_step: int) -> float:
    """Cosine (the first model's recipe) or constant after a warm-up counted from this run's first step."""
    if args.schedule == "cosine":
        return cosine_lr(step, args.steps, args.lr, warmup=150)
    return args.lr * min(1.0, (step - first_step + 1) / args.warmup)


def load_vae(args):
    """The frozen VAE: a train_vae result (``vae.pt``) or the VAE inside a model file."""
    from ...comfy_adapter.demo_model import build_vae_module
    from ..model import WEIGHTS, read_checkpoint

    vae = build_vae_module()
    source = Path(args.vae) if args.vae else None
    if source is not None and source.suffix == ".pt":
        file = torch.load(source, map_location="cpu", weights_only=False)
        vae.load_state_dict(file["model"])
        info = {k: file.get(k) for k in ("psnr", "step", "wall", "cpu")}
    else:
        _, state, _, metadata = read_checkpoint(source or args.init or WEIGHTS)
        vae.load_state_dict({k: v.float() for k, v in state.items()})
        info = {"psnr": metadata.get("vae_psnr"), "step": metadata.get("vae_steps"),
                "wall": metadata.get("vae_wall"), "cpu": metadata.get("vae_cpu")}
    return vae.eval().requires_grad_(False), info


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(RUNS / "unet"), help="run folder (state, logs, the run's model file)")
    parser.add_argument("--vae", default=None, help="a train_vae result (vae.pt) or a model file whose VAE to use "
                        "(default: the --init file, else the shipped weights)")
    parser.add_argument("--out", default=None, help="the model file written (default: <run>/eye_demo_model.safetensors; "
                        "the shipped file is replaced by hand, once a run beats it)")
    parser.add_argument("--init", default=None, help="start from a model file when the run has no state")
    parser.add_argument("--steps", type=int, default=6000, help="stop after this many steps in all")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this many minutes of this process")
    parser.add_argument("--batch", type=int, default=64, help="images (or pairs, with --paired) per step")
    parser.add_argument("--images", type=int, default=24_576, help="how many rendered examples to encode and train on "
                        "(single images; encoding costs about 1/86 s an image on 2 CPU cores)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps of the constant schedule")
    parser.add_argument("--flip", type=float, default=0.5, help="share of latents mirrored left-right (single images)")
    parser.add_argument("--paired", action="store_true", help="cross-image attention training on paired renders")
    parser.add_argument("--inject-share", type=float, default=0.0, help="share of targets trained with the partner's "
                        "features injected along the exact correspondence (--paired)")
    parser.add_argument("--plain-share", type=float, default=0.25, help="share of targets that attend to themselves "
                        "alone, at any noise (--paired); the rest attend to their partner's keys and values too")
    parser.add_argument("--high-noise", type=float, default=0.5, help="share of cross/inject targets drawn at "
                        "t in [600, 999] (--paired; the rest uniform)")
    parser.add_argument("--partner-noise", type=float, default=1 / 3, help="partners are noised at t' ~ U[0, this x t]")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--probe-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast for the forward pass (fp32 weights and optimiser)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    import_comfyui()
    from ...comfy_adapter.demo_model import build_clip, build_unet, encode_prompts
    from ..model import read_checkpoint, save_checkpoint
    from .attention_hooks import PairedAttention
    from .probe import METHOD_BLOCKS, alphas_cumprod, injection_probe, probe

    threads = setup_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else run / "eye_demo_model.safetensors"
    log, probe_log = LossLog(run / "loss.jsonl"), LossLog(run / "probe.jsonl")
    (run / "args.json").write_text(json.dumps(vars(args), indent=1))

    vae, vae_info = load_vae(args)
    fingerprint = vae_fingerprint(vae)
    clip = build_clip()
    if args.paired:
        from .paired import PAIR_SEEDS, VERSION, render_pairs

        data = render_pairs(*PAIR_SEEDS)
        captions = data["captions"]
        latents = encode_dataset(vae, data["images"], run.parent / f"pair-latents-v{VERSION}-{PAIR_SEEDS[0]}-"
                                 f"{PAIR_SEEDS[1]}-{fingerprint}.pt").float()  # (N, 2, 4, h, w)
        pair_index = {k: torch.from_numpy(v.astype(np.int64)) for k, v in data.items() if k.startswith("index_")}
        del data
    else:
        images, captions = render_dataset(*TRAIN_SEEDS)
        images, captions = images[:args.images], captions[:args.images]
        latents = encode_dataset(vae, images, run.parent / f"latents-{TRAIN_SEEDS[0]}-{args.images}-{fingerprint}.pt")
        latents = latents.float()
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
        first_step = state.get("first_step", 0)
        print(f"resuming the UNet at step {step} ({wall / 60:.1f} min so far)")
    elif args.init:
        unet_state, _, _, metadata = read_checkpoint(args.init)
        unet.load_state_dict({k: v.float() for k, v in unet_state.items()})
        ema.load_state_dict(unet.state_dict())
        step, wall, cpu = metadata.get("step", 0), metadata.get("wall", 0.0), metadata.get("cpu", 0.0)
        first_step = step
        print(f"starting from {args.init} at step {step} (weights only; a fresh optimiser, warmed up again)")
    else:
        first_step = 0
    parameters = sum(p.numel() for p in unet.parameters())
    print(f"UNet: {parameters / 1e6:.2f}M parameters, {threads} threads, {len(latents)} "
          f"{'pairs' if args.paired else 'latents'} {tuple(latents.shape[1:])}, batch {args.batch}, captions {names}")

    abar = alphas_cumprod()
    snr = abar / (1 - abar)
    weight_of_t = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr  # min-SNR-gamma for epsilon prediction
    samples_done = [step * args.batch]

    def export():
        metadata = {
            "step": step, "samples": samples_done[0], "wall": wall_now, "cpu": cpu_now, "batch": args.batch,
            "parameters": parameters, "vae_psnr": vae_info.get("psnr"), "vae_steps": vae_info.get("step"),
            "vae_wall": vae_info.get("wall"), "vae_cpu": vae_info.get("cpu"), "prompts": names[:-1],
            "image_size": 128, "drop_prompt": DROP_PROMPT, "lr": args.lr, "ema": EMA_DECAY, "bf16": args.bf16,
            "recipe": recipe,
        }
        save_checkpoint(out, ema.state_dict(), vae.state_dict(), clip.cond_stage_model.state_dict(), metadata)
        (run / "exported.json").write_text(json.dumps(metadata, indent=1))

    recipe = ("paired: cross-image attention in output blocks "
              f"{list(METHOD_BLOCKS)}, inject {args.inject_share}, plain {args.plain_share}, high noise "
              f"{args.high_noise}, partner t' <= {args.partner_noise:.2f} t" if args.paired else "single images")

    def run_probes():
        ema.eval()
        started_probe = time.time()
        scores = injection_probe(ema, vae, encode_prompt)
        scores.update(probe(ema, vae, encode_prompt, timesteps=(261, 501)))
        probe_log.write(step=step, wall=wall + time.time() - started, samples=samples_done[0], **scores)
        message = (f"step {step} ({(wall + time.time() - started) / 60:.1f} min): P1 oracle "
                   f"{scores['p1_oracle@300']:.3f}/{scores['p1_oracle@500']:.3f}, implicit "
                   f"{scores['p1_implicit@300']:.3f}/{scores['p1_implicit@500']:.3f}; P2 16x16 "
                   f"{scores['attn4.0@261']:.2f}/{scores['attn5.0@261']:.2f}, 8x8 {scores['attn2.0@261']:.2f}/"
                   f"{scores['attn3.0@261']:.2f} ({time.time() - started_probe:.0f} s)")
        progress.bar.write(message) if progress.bar else print(message, flush=True)
        return time.time() - started_probe

    def draw_t(count, high):
        t = torch.randint(0, 1000, (count,), generator=generator)
        lifted = torch.randint(600, 1000, (count,), generator=generator)
        return torch.where(high, lifted, t)

    paired = PairedAttention(unet, METHOD_BLOCKS) if args.paired else None
    if paired is not None:
        paired.__enter__()
    progress = Progress(args.steps, step, "UNet")
    started, cpu_started, running = time.time(), cpu_seconds(), []
    last_probe = time.time()
    if state is None:
        run_probes()
    unet.train()
    while step < args.steps and (args.minutes is None or time.time() - started < args.minutes * 60):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, args, first_step)
        index = torch.randint(0, len(latents), (args.batch,), generator=generator)
        b = args.batch
        if args.paired:
            swap = torch.rand(b, generator=generator) < 0.5  # which of the two renders is the target
            x_target = latents[index, swap.long()]
            x_partner = latents[index, 1 - swap.long()]
            roll = torch.rand(b, generator=generator)
            modes = ["plain" if r < args.plain_share else "inject" if r < args.plain_share + args.inject_share
                     else "cross" for r in roll.tolist()]
            attending = torch.tensor([m != "plain" for m in modes])
            t = draw_t(b, attending & (torch.rand(b, generator=generator) < args.high_noise))
            t_partner = (torch.rand(b, generator=generator) * args.partner_noise * t).long()
            correspondence = {}
            for key, table_of_index in pair_index.items():
                h, w = (int(x) for x in key.split("_")[1].split("x"))
                correspondence[h * w] = table_of_index[index, swap.long()]  # target -> partner tokens
            paired.configure(b, modes, correspondence)
            x0 = torch.cat([x_target, x_partner])
            t_all = torch.cat([t, t_partner])
            prompts = caption_index[index].repeat(2)
        else:
            x0 = latents[index]
            flip = torch.rand(b, generator=generator) < args.flip
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            t_all = draw_t(b, torch.zeros(b, dtype=torch.bool))
            prompts = caption_index[index].clone()
        prompts[torch.rand(len(prompts), generator=generator) < DROP_PROMPT] = len(names) - 1
        context = table[prompts]
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t_all].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            predicted = unet(noisy, t_all.float(), context=context)
        per_sample = (predicted.float() - noise).pow(2).mean(dim=(1, 2, 3))
        weighted = per_sample * weight_of_t[t_all]
        loss = weighted[:b].mean()  # with --paired: the targets only (partners are context)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        step += 1
        samples_done[0] += b
        decay = min(EMA_DECAY, (1 + step - first_step) / (10 + step - first_step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        running.append(float(per_sample[:b].mean().detach()))
        progress.update(1, loss=running[-1])
        if step % args.every == 0 or step == args.steps:
            wall_now = wall + time.time() - started
            cpu_now = cpu + cpu_seconds() - cpu_started
            log.write(step=step, loss=float(np.mean(running)), lr=optimiser.param_groups[0]["lr"], wall=wall_now,
                      cpu=cpu_now, samples=samples_done[0])
            running = []
            save_state(run / "state.pt", model=unet.state_dict(), ema=ema.state_dict(),
                       optimiser=optimiser.state_dict(), generator=generator.get_state(), step=step, wall=wall_now,
                       cpu=cpu_now, first_step=first_step)
            export()
        if time.time() - last_probe > args.probe_minutes * 60:
            started += run_probes()  # probe time is not training time
            last_probe = time.time()
            unet.train()
    if paired is not None:
        paired.__exit__(None, None, None)
    wall_now = wall + time.time() - started
    cpu_now = cpu + cpu_seconds() - cpu_started
    save_state(run / "state.pt", model=unet.state_dict(), ema=ema.state_dict(), optimiser=optimiser.state_dict(),
               generator=generator.get_state(), step=step, wall=wall_now, cpu=cpu_now, first_step=first_step)
    export()
    run_probes()
    progress.close()
    print(f"UNet done: {step} steps; model file {out}")


if __name__ == "__main__":
    main()
