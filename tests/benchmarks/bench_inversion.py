"""Benchmark (not a test): Invert Latent's cost per step against plain ComfyUI sampling.

Runs, side by side and interleaved, (a) Invert Latent (edit-friendly DDPM) and (b) plain
SamplerCustomAdvanced with euler and a CFGGuider over the same sigmas, on the same model
and latent size, and reports the median seconds per step of each and their ratio. Also
reports the memory a stored trajectory takes per step at 512 px (a 64x64 latent).

    python tests/benchmarks/bench_inversion.py [--model tiny|sd15] [--size 512] [--steps 4] [--repeats 3]

`--model sd15` builds the full SD1.5 architecture (860M random weights); `tiny` is the
test suite's tiny model. Writes tests/benchmarks/results/inversion-<model>-<size>.json.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def load_pack():
    """This checkout as the package eye_for_an_eye (tests/support/eye_test_support/pack.py)."""
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support.pack import load_pack as load

    return load(REPO)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=4, help="steps timed per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support import comfy_env, tiny_models

    comfy_env.import_comfy_or_exit()
    load_pack()
    import torch
    import comfy_extras.nodes_custom_sampler as custom
    from eye_for_an_eye.nodes import inversion

    if args.threads:
        torch.set_num_threads(args.threads)
    model, context = tiny_models.benchmark_model(args.model)
    pos, neg = tiny_models.conditioning(context, 0), tiny_models.conditioning(context, 1)
    latent = {"samples": tiny_models.vae_like_latent(1, args.size // 8, args.size // 8)}
    total_steps = 100
    skip = total_steps - args.steps

    def run_inversion():
        start = time.perf_counter()
        out = inversion.InvertLatent.execute(model=model, latent=latent, positive=pos, negative=neg,
                                             steps=total_steps, cfg=3.5, method="edit-friendly DDPM", seed=0,
                                             skip_steps=skip, capture_features=False).args
        return (time.perf_counter() - start) / args.steps, out

    def run_plain(sigmas):
        (guider,) = custom.CFGGuider().get_guider(model, pos, neg, 3.5)
        (noise,) = custom.RandomNoise().get_noise(0)
        (sampler,) = custom.KSamplerSelect().get_sampler("euler")
        start = time.perf_counter()
        custom.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)
        return (time.perf_counter() - start) / args.steps

    with torch.inference_mode():
        _, (trajectory, _, sigmas) = run_inversion()  # warm-up (model load, allocator)
        run_plain(sigmas)
        inv, plain = [], []
        for _ in range(args.repeats):
            inv.append(run_inversion()[0])
            plain.append(run_plain(sigmas))

    # one stored latent and one noise map per step and image (the start latent adds one latent per run)
    per_step_bytes = (trajectory.latents[0].nbytes + trajectory.noise[0].nbytes) / trajectory.latent_shape[0]
    latent_512 = 4 * 64 * 64 * 4  # one fp32 latent of a 512 px image
    result = {
        "model": args.model, "image_px": args.size, "timed_steps": args.steps, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "inversion_s_per_step_median": statistics.median(inv),
        "plain_sampling_s_per_step_median": statistics.median(plain),
        "ratio_inversion_over_plain": statistics.median(inv) / statistics.median(plain),
        "inversion_s_per_step_all": inv, "plain_sampling_s_per_step_all": plain,
        "trajectory_bytes_per_step_per_image": per_step_bytes,
        "trajectory_bytes_per_step_at_512px": 2 * latent_512,
        "trajectory_bytes_68_steps_at_512px": 68 * 2 * latent_512,
    }
    print(f"model {args.model}, {args.size} px, {args.steps} steps timed, {args.repeats} interleaved repeats, "
          f"{torch.get_num_threads()} threads")
    print(f"  Invert Latent (edit-friendly DDPM): {result['inversion_s_per_step_median']:.3f} s/step (median)")
    print(f"  plain SamplerCustomAdvanced euler: {result['plain_sampling_s_per_step_median']:.3f} s/step (median)")
    print(f"  ratio inversion / plain: {result['ratio_inversion_over_plain']:.3f}")
    print(f"  stored trajectory at this size: {per_step_bytes / 1024:.0f} KiB per step per image "
          f"(latent + noise map, fp32); at 512 px: {2 * latent_512 / 1024:.0f} KiB per step, "
          f"{68 * 2 * latent_512 / 2**20:.1f} MiB for the official 68 steps")
    out = HERE / "results" / f"inversion-{args.model}-{args.size}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"  written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
