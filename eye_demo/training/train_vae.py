"""Train the demo model's KL VAE on renders of the synthetic world (resumable).

    python -m eye_demo.training.train_vae --steps 6000

Reconstruction (L1 + MSE) with a very small KL term, as Stable Diffusion's VAE, on 64 px
crops of 128 px renders (the network is convolutional), mostly where the creatures are
(``busy_crops``; the first 1000 steps of the shipped VAE took uniformly random crops); Adam at a constant rate
after a warm-up, and an exponential moving average of the weights (what is kept), so a
run stopped at any step equals a run asked for that many steps.

Initialisation matters on a CPU budget (measured: 21.7 dB after 200 steps against 17-18 dB
with ComfyUI's layers initialised as torch does): convolutions variance-preserving
(std 1/sqrt(fan_in)), every residual branch ending at zero (each block starts as the
identity), and the posterior nearly deterministic (log-variance -8; with unit variance the
latents drown in sampling noise). Every ``--every`` steps it writes a resumable state, a line of the loss log
(with the PSNR of full held-out renders) and prints progress. At the end the latents are
rescaled so that, times SD1.5's 0.18215, they have unit variance, and the VAE is written
to ``vae.pt`` in the run folder for ``train_unet``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ...comfy_adapter.bootstrap import import_comfyui
from .common import RUNS, LossLog, Progress, cpu_seconds, load_state, save_state, setup_threads
from .data import render_dataset

TRAIN_SEEDS = (0, 8192)
HELD_OUT_SEEDS = (10_000_000, 64)
KL_WEIGHT = 1e-6  # on the per-image KL sum, against the per-image L1 sum (Stable Diffusion's balance)
INITIAL_LOGVAR = -8.0
EMA_DECAY = 0.998


def init_for_training(vae: torch.nn.Module) -> torch.nn.Module:
    """Variance-preserving convolutions, residual branches ending at zero, a near-deterministic posterior."""
    with torch.no_grad():
        for name, module in vae.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5)
                module.bias.zero_()
            if name.endswith(("conv2", "proj_out")):  # the last layer of a ResnetBlock / AttnBlock branch
                module.weight.zero_()
                module.bias.zero_()
        vae.quant_conv.bias[vae.quant_conv.out_channels // 2:] = INITIAL_LOGVAR
    return vae


def busy_crops(images: np.ndarray, crop: int, generator, candidates: int = 4, busy_share: float = 0.8):
    """One crop per image: on ``busy_share`` of them the busiest of ``candidates`` random crops
    (most edges, i.e. the creature), else a random one. Flat background is learnt in a few
    hundred steps; the creatures' edges and markings are what is left to learn."""
    size = images.shape[1]
    x = to_tensor(images)
    edges = (x[:, :, 1:, :-1] - x[:, :, :-1, :-1]).abs().sum(1) + (x[:, :, :-1, 1:] - x[:, :, :-1, :-1]).abs().sum(1)
    crops = []
    for i in range(len(images)):
        offsets = torch.randint(0, size - crop + 1, (candidates, 2), generator=generator)
        if torch.rand((), generator=generator) < busy_share:
            energy = [edges[i, y:y + crop - 1, x0:x0 + crop - 1].sum() for y, x0 in offsets.tolist()]
            y, x0 = offsets[int(torch.stack(energy).argmax())].tolist()
        else:
            y, x0 = offsets[0].tolist()
        crops.append(x[i, :, y:y + crop, x0:x0 + crop])
    return torch.stack(crops)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in -1..1 (ComfyUI's VAE input range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in -1..1 measured on the 0..1 scale, over the whole batch."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean()
    return float(10 * torch.log10(1.0 / mse))


def reconstruct(vae, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Encode to the posterior mean and decode, as ComfyUI's VAEEncode + VAEDecode do."""
    out = []
    with torch.no_grad():
        for chunk in images.split(batch):
            moments = vae.quant_conv(vae.encoder(chunk))
            mean = moments.chunk(2, dim=1)[0]
            out.append(vae.decoder(vae.post_quant_conv(mean)))
    return torch.cat(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(RUNS / "vae"), help="run folder (state, loss log, result)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--every", type=int, default=250, help="steps between checkpoints and evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import_comfyui()
    from ...comfy_adapter.demo_model import build_vae_module
    from ..model import latent_scale_for, rescale_vae_latents

    threads = setup_threads(args.threads)
    from pathlib import Path

    run = Path(args.run)
    log = LossLog(run / "loss.jsonl")
    images, _ = render_dataset(*TRAIN_SEEDS)
    held_out = to_tensor(render_dataset(*HELD_OUT_SEEDS)[0])

    vae = init_for_training(build_vae_module())
    ema = build_vae_module().requires_grad_(False)
    ema.load_state_dict(vae.state_dict())
    optimiser = torch.optim.Adam(vae.parameters(), lr=args.lr, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(args.seed)
    step, wall, cpu = 0, 0.0, 0.0
    state = load_state(run / "state.pt")
    if state is not None:
        vae.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step, wall, cpu = state["step"], state["wall"], state["cpu"]
        print(f"resuming the VAE at step {step} ({wall / 60:.1f} min so far)")
    print(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters, {threads} threads, "
          f"{len(images)} renders, batch {args.batch} crops of {args.crop} px")

    progress = Progress(args.steps, step, "VAE")
    started, cpu_started, running = time.time(), cpu_seconds(), []
    while step < args.steps:
        index = torch.randint(0, len(images), (args.batch,), generator=generator)
        batch = busy_crops(images[index.numpy()], args.crop, generator)
        if torch.rand((), generator=generator) < 0.5:
            batch = batch.flip(-1)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 200)
        moments = vae.quant_conv(vae.encoder(batch))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        out = vae.decoder(vae.post_quant_conv(z))
        l1 = (out - batch).abs().mean()
        mse = (out - batch).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = l1 + mse + KL_WEIGHT * kl / batch[0].numel()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        with torch.no_grad():
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), vae.parameters()):
                e.lerp_(p, 1 - decay)
        running.append(l1.item())
        progress.update(1, l1=running[-1])
        if step % args.every == 0 or step == args.steps:
            wall_now = wall + time.time() - started
            cpu_now = cpu + cpu_seconds() - cpu_started
            score = psnr(reconstruct(ema.eval(), held_out), held_out)
            log.write(step=step, l1=float(np.mean(running)), kl=float(kl), psnr=score, lr=optimiser.param_groups[0]["lr"],
                      wall=wall_now, cpu=cpu_now, samples=step * args.batch)
            progress.bar and progress.bar.write(f"step {step}: held-out PSNR {score:.2f} dB, L1 {np.mean(running):.4f}")
            running = []
            save_state(run / "state.pt", model=vae.state_dict(), ema=ema.state_dict(), optimiser=optimiser.state_dict(),
                       generator=generator.get_state(), step=step, wall=wall_now, cpu=cpu_now)
    progress.close()

    # Latent scale: k * raw latents have SD1.5's spread, so 0.18215 brings them to unit variance.
    vae = ema.eval()
    with torch.no_grad():
        sample = to_tensor(images[:512])
        raw = torch.cat([vae.quant_conv(vae.encoder(c)).chunk(2, dim=1)[0] for c in sample.split(32)])
    k = latent_scale_for(raw)
    rescale_vae_latents(vae, k)
    final_psnr = psnr(reconstruct(vae, held_out), held_out)
    state = load_state(run / "state.pt")
    torch.save({"model": vae.state_dict(), "latent_rescale": k, "psnr": final_psnr, "step": step,
                "wall": state["wall"], "cpu": state["cpu"]}, run / "vae.pt")
    print(f"VAE done: {step} steps, held-out PSNR {final_psnr:.2f} dB, latents rescaled by {k:.3f}; "
          f"{state['wall'] / 60:.1f} min wall, {state['cpu'] / 60:.1f} min CPU -> {run / 'vae.pt'}")


if __name__ == "__main__":
    main()
