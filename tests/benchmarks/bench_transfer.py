"""Benchmark (not a test): the cost of an appearance transfer against plain ComfyUI sampling.

(About 500 lines: one script that measures every row in one process, side by side.)

One sampling run per row, each over the same sigmas (the target's Invert Latent schedule),
through ComfyUI's own SamplerCustomAdvanced + CFGGuider (cfg 2.5, CFG on: cond and uncond
rows) + DisableNoise, batch 1. A row's time is everything after inversion: building the
patch / sampler nodes, any feature preparation, and the whole sampling.

  plain      the unpatched model and the Trajectory Sampler of the target: what a plain
             ComfyUI sampling over these sigmas costs (one batched UNet pass per step).
  captured   Apply Appearance Transfer (schema defaults: feature injection, two finest decoder
             levels, per-step matching, official guidance) + Transfer Sampler (masked AdaIN at
             its defaults), on trajectories inverted with capture_features=True: reference and
             structure features come from the inversions' feature banks (no extra UNet pass).
  recompute  the same on trajectories inverted with capture_features=False: on every active
             step the patch runs the UNet on the stored reference/structure latent, only on the
             rows of the kind the official guidance edits (cond for rearrangement, uncond for
             structure injection), i.e. one extra single-row pass per active step.
  authors    an emulation of the released code's cost: every step (active or not) ONE UNet pass
             on three latents per CFG row - output, plus the reference's and the structure's
             latents of that step (taken from the stored trajectories, standing in for the
             authors' re-denoised ones, which cost the same) - 6 rows with CFG on. The edit is
             done inside that same pass from the reference/structure rows' own attention inputs
             (as the authors do), with the pack's rearrangement code (one matmul + argmax; the
             authors' per-pixel Python loop and stored softmax maps are NOT emulated, so this is
             a lower bound on their cost). Same Transfer Sampler (AdaIN) as the other rows.

Plus the inversions each row needs (target, and reference for the transfer rows), timed with
capture on (captured row) and off (the other rows): Invert Latent, edit-friendly DDPM, cfg 3.5,
same steps and skip. Their time is not part of the rows' time.

Every row runs in a fresh subprocess (this script with --row NAME) that builds the model, makes
one untimed CFG UNet call (warm-up), inverts what it needs and samples (--inner times each);
the output latents of the transfer rows are compared at the end (captured, recompute and
authors compute the same transfer). Memory is the process's resident-set high-water mark
(ru_maxrss; on CUDA torch.cuda.max_memory_allocated) reset (/proc/self/clear_refs) before the
inversions and again before the sampling, so each phase's peak is its own. "baseline" is the
RSS right after the model was built; "above baseline" = peak - baseline. The captured row's
peak includes both feature banks, which it keeps while sampling. With --repeats N the four
subprocesses run N times, interleaved, and with --inner K each subprocess inverts and samples K
times; the table's seconds are the minimum over all runs of a row (the least disturbed one on a
shared machine; ratios and goals use them), medians beside them; peaks are maxima.

    python tests/benchmarks/bench_transfer.py [--model tiny|sd15] [--size 256] [--steps 20] [--skip 6]
        [--threads N] [--repeats R] [--inner K] [--out PATH]

`--model sd15` is a full-size SD1.5-architecture UNet (860M random weights, 768-d context,
conditioning made without a text encoder); `tiny` the test suite's tiny model. The official
preset is 100 steps skipping 32 (68 sampled); the default 20/6 (14 sampled) keeps a CPU run
short, and the transfer schedule is given as fractions, so it scales. Writes
tests/benchmarks/results/transfer-<model>-<size>.json unless --out says otherwise.

Goals (the issue): captured <= 1.25 x plain; capture adds <= 10 % to inversion.
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROWS = ("plain", "captured", "recompute", "authors")
INVERSION_CFG = 3.5
GENERATION_CFG = 2.5
EF_DDPM = "edit-friendly DDPM"
GOAL_TRANSFER = 1.25
GOAL_CAPTURE = 1.10
AUTHORS_KEY = "eye_for_an_eye_bench_authors"


def load_pack():
    """This checkout as the package eye_for_an_eye (tests/support/eye_test_support/pack.py)."""
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support.pack import load_pack as load

    return load(REPO)


# ---------------------------------------------------------------- memory

def _trim():
    """Collect garbage and hand freed heap pages back to the OS, so RSS is what is alive."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMeter:
    """Peak memory of a phase: RSS high-water mark on CPU, max_memory_allocated on CUDA."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.resettable = True

    def current_mib(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20
        return _rss_mib()

    def reset(self):
        _trim()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # peak RSS := current RSS (Linux >= 4.0); ru_maxrss follows it
        except OSError:
            self.resettable = False  # peaks are then whole-process peaks so far

    def peak_mib(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- the authors' approach (emulated)

def authors_model(model, plan):
    """A clone of ``model`` that runs every UNet call on [output, reference, structure] per CFG row.

    APPLY_MODEL wrapper: each chunk of the batch (cond / uncond) becomes three chunks - the
    output rows, the reference's stored latent and the structure's stored latent at this
    sigma - with the chunk's timestep and conditioning; only the output rows are returned.
    An attn1 patch edits the output rows at the plan's layers from the reference/structure
    rows' attention inputs of the same pass (TransferPlan.edit, the pack's own edit).
    """
    import torch
    import comfy.patcher_extension
    from eye_for_an_eye.eye_core.rearrange import NOTHING, REARRANGE
    from eye_for_an_eye.eye_core.transfer import REFERENCE, STRUCTURE_ROLE
    from eye_for_an_eye.comfy_adapter import unet_layout

    def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = float(t.flatten()[0])
        ref_index, struct_index = plan.reference.index_of_sigma(sigma), plan.structure.index_of_sigma(sigma)
        if ref_index is None or struct_index is None:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        info = plan.step(sigma)
        kinds = transformer_options["cond_or_uncond"]
        rows = x.shape[0] // len(kinds)
        reference = plan.reference.rows(plan.reference.latents[ref_index], rows).to(x.device, x.dtype)
        structure = plan.structure.rows(plan.structure.latents[struct_index], rows).to(x.device, x.dtype)
        pieces, source = [], []
        for chunk in range(len(kinds)):
            own = list(range(chunk * rows, (chunk + 1) * rows))
            pieces += [x[own[0]:own[-1] + 1], reference, structure]
            source += own * 3
        index = torch.as_tensor(source, device=x.device)

        def take(value):
            return value[index] if torch.is_tensor(value) and value.ndim and value.shape[0] == x.shape[0] else value

        options = transformer_options.copy()
        options["cond_or_uncond"] = [kind for kind in kinds for _ in range(3)]
        if "uuids" in options:
            options["uuids"] = [uuid for uuid in options["uuids"] for _ in range(3)]
        options[AUTHORS_KEY] = info
        out = executor(torch.cat(pieces), take(t), take(c_concat), take(c_crossattn), control, options,
                       **{k: take(v) for k, v in kwargs.items()})
        return torch.cat([out[3 * chunk * rows:(3 * chunk + 1) * rows] for chunk in range(len(kinds))])

    class Attention:
        def __deepcopy__(self, memo):
            return self

        def __call__(self, n, context, value, extra_options):
            info = extra_options.get(AUTHORS_KEY)
            if info is None or info.action == NOTHING or unet_layout.layer_key(extra_options) not in plan.layers:
                return n, context, value
            kinds = extra_options["cond_or_uncond"]  # [k, k, k, k', k', k']: output, reference, structure
            groups, rows = len(kinds) // 3, n.shape[0] // len(kinds)
            grid = unet_layout.token_grid(extra_options, n.shape[1])
            role, offset = (REFERENCE, 1) if info.action == REARRANGE else (STRUCTURE_ROLE, 2)
            out_kinds = [kinds[3 * g] for g in range(groups)]
            sources = {(role, int(kind)): (n[(3 * g + offset) * rows:(3 * g + offset + 1) * rows], grid)
                       for g, kind in enumerate(out_kinds)}
            out_rows = torch.as_tensor([3 * g * rows + r for g in range(groups) for r in range(rows)],
                                       device=n.device)
            edited = plan.edit(n[out_rows], context[out_rows], value[out_rows], info, out_kinds, grid, sources)
            result = []
            for full, part in zip((n, context, value), edited):
                full = full.clone()
                full.index_copy_(0, out_rows, part.to(full.dtype))
                result.append(full)
            return tuple(result)

    clone = model.clone()
    clone.set_model_attn1_patch(Attention())
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, AUTHORS_KEY, wrapper)
    return clone


# ---------------------------------------------------------------- one row (subprocess)

def schema_defaults(node) -> dict:
    return {i.id: i.default for i in node.define_schema().inputs if getattr(i, "default", None) is not None}


def run_row(args) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from eye_test_support import comfy_env, tiny_models

    comfy_env.import_comfy_or_exit()
    load_pack()
    import torch
    import comfy.model_management
    import comfy_extras.nodes_custom_sampler as custom
    from eye_for_an_eye.eye_core.transfer import TransferPlan
    from eye_for_an_eye.eye_core.rearrange import TransferSchedule, choose_layers
    from eye_for_an_eye.comfy_adapter import sampling, unet_layout
    from eye_for_an_eye.nodes import inversion, transfer

    if args.threads:
        torch.set_num_threads(args.threads)
    meter = PeakMeter(comfy.model_management.get_torch_device())
    model, context = tiny_models.benchmark_model(args.model)
    pos, neg = tiny_models.conditioning(context, 0), tiny_models.conditioning(context, 1)
    side = args.size // 8
    latents = {"target": tiny_models.vae_like_latent(1, side, side, seed=1),
               "reference": tiny_models.vae_like_latent(1, side, side, seed=2)}
    _trim()
    baseline = meter.current_mib()
    meter.reset()
    row = args.row
    capture = row == "captured"
    images = ("target",) if row == "plain" else ("target", "reference")
    result = {"row": row, "baseline_mib": baseline, "inversions": []}

    def sample(patched, sampler, sigmas, start):
        (guider,) = custom.CFGGuider().get_guider(patched, pos, neg, GENERATION_CFG)
        (noise,) = custom.DisableNoise().get_noise()
        out, _ = custom.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
        return out["samples"]

    with torch.inference_mode():
        # warm-up: one CFG UNet call at this size (model load, allocator, kernels); not timed
        def one_call(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
            return model_fn(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

        grid = sampling.sigma_grid(model)
        sample(model, sampling.make_sampler(one_call), torch.stack([grid[-1], grid[0]]), {"samples": latents["target"]})

        for _ in range(args.inner):
            trajectories, start, sigmas = {}, None, None  # the previous repetition's are freed first
            gc.collect()
            for name in images:
                began = time.perf_counter()
                trajectory, out, out_sigmas = inversion.InvertLatent.execute(
                    model=model, latent={"samples": latents[name]}, positive=pos, negative=neg, steps=args.steps,
                    cfg=INVERSION_CFG, method=EF_DDPM, seed=0, skip_steps=args.skip, capture_features=capture).args
                result["inversions"].append({"image": name, "capture": capture,
                                             "seconds": time.perf_counter() - began})
                trajectories[name] = trajectory
                if name == "target":
                    start, sigmas = out, out_sigmas
        result["inversion_peak_mib"] = meter.peak_mib()
        result["feature_bank_bytes"] = {name: (t.features.nbytes if t.features is not None else 0)
                                        for name, t in trajectories.items()}
        meter.reset()
        apply_defaults = schema_defaults(transfer.ApplyAppearanceTransfer)
        sampler_defaults = schema_defaults(transfer.TransferSampler)
        result["seconds"] = []
        for _ in range(args.inner):
            patched = sampler = samples = None
            began = time.perf_counter()
            if row == "plain":
                (sampler,) = inversion.TrajectorySampler.execute(trajectory=trajectories["target"]).args
                patched = model
            else:
                target, reference = trajectories["target"], trajectories["reference"]
                if row == "authors":
                    schedule = TransferSchedule(**{k: apply_defaults[k] for k in (
                        "rearrange_start", "rearrange_end", "structure_end", "structure_interval")})
                    plan = TransferPlan(reference=reference, structure=target, schedule=schedule,
                                        layers=choose_layers(unet_layout.decoder_attention_levels(model),
                                                             apply_defaults["layers"]),
                                        injection=apply_defaults["injection"], guidance=apply_defaults["guidance"],
                                        strength=float(apply_defaults["strength"]))
                    patched = authors_model(model, plan)
                else:
                    (patched,) = transfer.ApplyAppearanceTransfer.execute(
                        model=model, reference=reference, structure=target, **apply_defaults).args
                (sampler,) = transfer.TransferSampler.execute(structure=target, reference=reference,
                                                              **sampler_defaults).args
            samples = sample(patched, sampler, sigmas, start)
            result["seconds"].append(time.perf_counter() - began)
        result["sampling_peak_mib"] = meter.peak_mib()
    result["peak_resettable"] = meter.resettable
    result["torch_threads"] = torch.get_num_threads()
    result["device"] = str(comfy.model_management.get_torch_device())
    result["apply_appearance_transfer"] = apply_defaults
    result["transfer_sampler"] = sampler_defaults
    result["sampled_steps"] = len(sigmas) - 1
    torch.save(samples.cpu(), args.row_out + ".pt")
    return result


# ---------------------------------------------------------------- the whole benchmark (parent)

def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run_all(args):
    import torch

    repeats = args.repeats or (1 if args.model == "sd15" else 3)
    args.inner = args.inner or (1 if args.model == "sd15" else 3)
    forwarded = ["--model", args.model, "--size", str(args.size), "--steps", str(args.steps), "--skip",
                 str(args.skip), "--threads", str(args.threads), "--inner", str(args.inner)]
    command = " ".join(["python", str(Path(__file__).relative_to(REPO))] + forwarded
                       + ["--repeats", str(repeats)] + (["--out", args.out] if args.out else []))
    print(f"model {args.model}, {args.size} px (latent {args.size // 8}x{args.size // 8}), batch 1, schedule "
          f"{args.steps} steps skipping {args.skip} ({args.steps - args.skip} sampled; the official preset is 100 "
          f"skipping 32: 68 sampled), cfg {INVERSION_CFG} inversion / {GENERATION_CFG} generation, "
          f"{repeats} interleaved repeat(s) x {args.inner} run(s) per subprocess; load average at start {_load()}",
          flush=True)
    runs = {row: [] for row in ROWS}
    outputs = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for row in ROWS:
                out = os.path.join(tmp, f"{row}-{repeat}.json")
                t0 = time.perf_counter()
                subprocess.run([sys.executable, __file__, *forwarded, "--row", row, "--row-out", out], check=True)
                data = json.loads(Path(out).read_text())
                runs[row].append(data)
                if repeat == 0:
                    outputs[row] = torch.load(out + ".pt")
                print(f"  [{repeat + 1}/{repeats}] {row}: sampling " + ", ".join(f"{x:.2f}" for x in data["seconds"])
                      + " s; inversions " + ", ".join(f"{i['seconds']:.2f}" for i in data["inversions"]) + " s; "
                      f"{time.perf_counter() - t0:.0f} s subprocess", flush=True)
    wall = time.perf_counter() - began

    # times: the minimum over all runs is the least disturbed one on a shared machine (the
    # headline, ratios and goals use it); medians are kept too
    table = {}
    for row in ROWS:
        seconds = [x for r in runs[row] for x in r["seconds"]]
        table[row] = {"seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
                      "seconds_all": seconds,
                      "peak_mib": max(r["sampling_peak_mib"] for r in runs[row]),
                      "baseline_mib": max(r["baseline_mib"] for r in runs[row]),
                      "above_baseline_mib": max(r["sampling_peak_mib"] - r["baseline_mib"] for r in runs[row]),
                      "inversion_peak_mib": max(r["inversion_peak_mib"] for r in runs[row])}
    for row in ROWS:
        table[row]["ratio_vs_plain"] = table[row]["seconds_min"] / table["plain"]["seconds_min"]
        table[row]["ratio_of_medians_vs_plain"] = table[row]["seconds_median"] / table["plain"]["seconds_median"]

    # inversions: capture on (captured row) vs off (the other rows), per image, same latents and schedule
    images = ("target", "reference")
    inversion = {}
    for capture in (False, True):
        times = {image: [i["seconds"] for row in ROWS for r in runs[row] for i in r["inversions"]
                         if i["capture"] == capture and i["image"] == image] for image in images}
        phases = [r for row in ROWS for r in runs[row] if (row == "captured") == capture]
        inversion["capture on" if capture else "capture off"] = {
            "seconds_min_per_image": {image: min(times[image]) for image in images},
            "seconds_median_per_image": {image: statistics.median(times[image]) for image in images},
            "seconds_all": times,
            "seconds_min": statistics.mean(min(times[image]) for image in images),
            "seconds_median": statistics.mean(statistics.median(times[image]) for image in images),
            "peak_mib": max(r["inversion_peak_mib"] for r in phases),
            "peak_above_baseline_mib": max(r["inversion_peak_mib"] - r["baseline_mib"] for r in phases)}
    off, on = inversion["capture off"], inversion["capture on"]
    for entry in (off, on):
        entry["ratio_vs_capture_off"] = entry["seconds_min"] / off["seconds_min"]
        entry["ratio_of_medians_vs_capture_off"] = entry["seconds_median"] / off["seconds_median"]
    capture_ratio = on["ratio_vs_capture_off"]
    banks = runs["captured"][0]["feature_bank_bytes"]

    # sanity: the three transfer rows compute the same transfer (fp16 features, batch rounding aside)
    recomputed = outputs["recompute"]
    scale = recomputed.abs().max().item()
    agreement = {row: {"max_abs_diff_vs_recompute": (outputs[row] - recomputed).abs().max().item(),
                       "mean_abs_diff_vs_recompute": (outputs[row] - recomputed).abs().mean().item()}
                 for row in ("captured", "authors", "plain")}

    goals = {
        "captured_vs_plain": {"value": table["captured"]["ratio_vs_plain"], "goal": f"<= {GOAL_TRANSFER}",
                              "pass": table["captured"]["ratio_vs_plain"] <= GOAL_TRANSFER},
        "inversion_capture_on_vs_off": {"value": capture_ratio, "goal": f"<= {GOAL_CAPTURE}",
                                        "pass": capture_ratio <= GOAL_CAPTURE},
    }
    first = runs["plain"][0]
    print(f"\n{'row':<38}{'seconds':>9}{'median':>9}{'x plain':>9}{'peak RSS MiB':>14}{'above base MiB':>16}")
    names = {"plain": "plain sampling (Trajectory Sampler)", "captured": "transfer, captured features",
             "recompute": "transfer, recomputing features", "authors": "authors' approach (3 latents)"}
    for row in ROWS:
        t = table[row]
        print(f"{names[row]:<38}{t['seconds_min']:>9.2f}{t['seconds_median']:>9.2f}{t['ratio_vs_plain']:>9.2f}"
              f"{t['peak_mib']:>14.0f}{t['above_baseline_mib']:>16.0f}")
    for label, entry in (("capture off", off), ("capture on", on)):
        print(f"{'inversion, ' + label + ' (per image)':<38}{entry['seconds_min']:>9.2f}{entry['seconds_median']:>9.2f}"
              f"{entry['ratio_vs_capture_off']:>9.2f}{entry['peak_mib']:>14.0f}"
              f"{entry['peak_above_baseline_mib']:>16.0f}")
    runs_per_row = repeats * args.inner
    print(f"(seconds: minimum of {runs_per_row} run(s) per row, ratios from minima; median beside it; inversion "
          f"ratio: x capture off; baseline = RSS after model build, {first['baseline_mib']:.0f} MiB; peaks per "
          f"phase, {'reset before each phase' if first['peak_resettable'] else 'NOT resettable here'})")
    print(f"feature banks (fp16): target {banks['target'] / 2**20:.1f} MiB, reference "
          f"{banks['reference'] / 2**20:.1f} MiB ({first['sampled_steps']} steps)")
    print("agreement with the recompute row's output latent (max / mean abs diff; latent max "
          f"{scale:.3g}): " + ", ".join(f"{row} {a['max_abs_diff_vs_recompute']:.3g} / "
                                       f"{a['mean_abs_diff_vs_recompute']:.3g}"
                                       for row, a in agreement.items()))
    for name, goal in goals.items():
        print(f"GOAL {name}: {goal['value']:.3f} {goal['goal']}: {'PASS' if goal['pass'] else 'FAIL'}")
    print(f"load average at end {_load()}; total {wall:.0f} s; command: {command}")

    result = {
        "command": command, "model": args.model, "image_px": args.size, "batch": 1, "steps": args.steps,
        "skip_steps": args.skip, "sampled_steps": first["sampled_steps"], "official_preset": "100 steps, skip 32",
        "inversion_cfg": INVERSION_CFG, "generation_cfg": GENERATION_CFG, "repeats": repeats,
        "runs_per_subprocess": args.inner,
        "torch_threads": first["torch_threads"], "device": first["device"], "cpu": _cpu(),
        "load_average_end": _load(), "total_wall_s": wall,
        "apply_appearance_transfer": runs["captured"][0]["apply_appearance_transfer"],
        "transfer_sampler": runs["captured"][0]["transfer_sampler"],
        "rows": table, "inversion": inversion, "inversion_capture_ratio": capture_ratio,
        "feature_bank_bytes": banks, "agreement": agreement, "goals": goals,
        "notes": {
            "time": "wall seconds of node set-up + SamplerCustomAdvanced (CFGGuider, DisableNoise) over the "
                    "target's sigmas; inversion not included; headline = minimum over runs (shared machine), "
                    "medians kept",
            "memory": "RSS high-water mark (ru_maxrss) per phase, reset via /proc/self/clear_refs; baseline = RSS "
                      "after model build; each row in a fresh subprocess",
            "captured": "trajectories from Invert Latent with capture_features=True (default budget); features "
                        "read from the banks",
            "recompute": "trajectories inverted with capture_features=False; the patch reruns the UNet on stored "
                         "latents (rows of the edited kind only)",
            "authors": "emulated: each UNet call on [output, reference latent, structure latent] x (uncond, cond) "
                       "= 6 rows every step; edits from the same pass's reference/structure rows with the pack's "
                       "TransferPlan.edit; stored trajectory latents stand in for re-denoised ones; the authors' "
                       "per-pixel matching loop and stored attention maps are not emulated (lower bound)",
            "inversions": "capture on: the captured row's two inversions; capture off: the other rows' "
                          "(same latents, seed, steps, skip)",
        },
    }
    out = Path(args.out) if args.out else HERE / "results" / f"transfer-{args.model}-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="sd15")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the whole schedule (official: 100)")
    parser.add_argument("--skip", type=int, default=6, help="steps skipped at the noisy end (official: 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=0, help="interleaved runs of every row (0: 1 for sd15, "
                        "3 for tiny)")
    parser.add_argument("--inner", type=int, default=0, help="inversions + sampling runs inside each subprocess "
                        "(0: 1 for sd15, 3 for tiny); the first run's memory peaks count like the others")
    parser.add_argument("--out", default=None, help="JSON path (default results/transfer-<model>-<size>.json)")
    parser.add_argument("--row", choices=ROWS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        result = run_row(args)
        Path(args.row_out).write_text(json.dumps(result))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
