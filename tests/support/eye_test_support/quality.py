"""Run every transfer method on pairs of the synthetic world with the demo model, and score them.

Shared by the quality benchmark (tests/benchmarks/bench_quality.py) and the quality tests
(tests/comfy/test_transfer_quality.py). Everything goes through the pack's own nodes, as a
user's graph would: Invert Latent for both images, then per method

- ``official``: Apply Appearance Transfer with per-step matching inside the masks + Transfer
  Sampler (masked AdaIN), the official preset;
- ``fixed-dift``: the same with one correspondence from Extract UNet Features + Match
  Correspondence (DIFT);
- ``ground-truth``: the same with the renderer's oracle correspondence (eye_demo.oracle);
- ``implicit``: Apply Appearance Transfer in implicit (Cross-Image Attention) mode, the same
  AdaIN and guidance;
- ``adain``: no attention patch, only the Transfer Sampler's masked AdaIN;
- ``none``: the target's own replay (Trajectory Sampler).

Pairs are run in batches (one UNet call carries every pair of a batch) grouped by the
species of target and reference, so their prompts are one conditioning each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from eye_for_an_eye.eye_core.rearrange import IMPLICIT, OFFICIAL, TWO_FINEST, TransferSchedule
from eye_for_an_eye.eye_core.trajectory import EF_DDPM
from eye_for_an_eye.eye_demo.metrics import score_transfer
from eye_for_an_eye.eye_demo.oracle import oracle_correspondence
from eye_for_an_eye.eye_demo.pairs import ideal_transfer
from eye_for_an_eye.eye_demo.render import background_only, render
from eye_for_an_eye.eye_demo.training.data import caption

METHODS = ("official", "fixed-dift", "ground-truth", "implicit", "adain", "none")
OFFICIAL_SCHEDULE = TransferSchedule()


def run_node(node, **inputs):
    return tuple(node.execute(**inputs).args)


@dataclass
class Settings:
    """The official preset by default; ``steps``/``skip`` scale together for the speed study."""

    steps: int = 100
    skip: int = 32
    inversion_cfg: float = 3.5
    cfg: float = 2.5
    dift_timestep: int = 261
    dift_level: str = "auto (DIFT)"
    ensemble: int = 8
    seed: int = 0
    schedule: TransferSchedule = field(default_factory=TransferSchedule)


@dataclass
class PairResult:
    target: object
    reference: object
    renders: tuple  # (target render, reference render)
    ideal: np.ndarray
    images: dict  # method -> (H, W, 3) result
    scores: dict  # method -> metrics


class QualityRunner:
    def __init__(self, model, clip, vae, settings: Settings | None = None):
        self.model, self.clip, self.vae = model, clip, vae
        self.settings = settings or Settings()
        self._conds = {}

    def conditioning(self, text: str):
        if text not in self._conds:
            tokens = self.clip.tokenize(text)
            self._conds[text] = [[self.clip.encode_from_tokens(tokens), {}]]
        return self._conds[text]

    # ------------------------------------------------------------------ one batch

    def _invert(self, latents, positive, negative, seed):
        from eye_for_an_eye.nodes import inversion

        s = self.settings
        return run_node(inversion.InvertLatent, model=self.model, latent={"samples": latents}, positive=positive,
                        negative=negative, steps=s.steps, cfg=s.inversion_cfg, method=EF_DDPM, seed=seed,
                        skip_steps=s.skip)

    def _apply(self, reference, structure, target_mask, reference_mask, **settings):
        from eye_for_an_eye.nodes import transfer

        sched = self.settings.schedule
        inputs = dict(model=self.model, reference=reference, structure=structure, injection="feature",
                      layers=TWO_FINEST, rearrange_start=sched.rearrange_start, rearrange_end=sched.rearrange_end,
                      structure_end=sched.structure_end, structure_interval=sched.structure_interval,
                      guidance=OFFICIAL, strength=1.0, target_mask=target_mask, reference_mask=reference_mask)
        inputs.update(settings)
        return run_node(transfer.ApplyAppearanceTransfer, **inputs)[0]

    def _sample(self, model, sampler, positive, negative, sigmas, start):
        import comfy_extras.nodes_custom_sampler as custom

        (guider,) = custom.CFGGuider().get_guider(model, positive, negative, self.settings.cfg)
        (noise,) = custom.DisableNoise().get_noise()
        out, _ = custom.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, start)
        return self.vae.decode(out["samples"]).float().clamp(0, 1).numpy()

    def _dift(self, latents, positive):
        from eye_for_an_eye.nodes import features

        s = self.settings
        return run_node(features.ExtractUNetFeatures, model=self.model, latent={"samples": latents},
                        positive=positive, timestep=s.dift_timestep, decoder_level=s.dift_level,
                        ensemble_size=s.ensemble, seed=s.seed)[0]

    @staticmethod
    def point_constraint(point_sets, method):
        """The batch's point pairs for a ``points-...`` method as one constraint (hard; ``-soft`` in the name: soft)."""
        from eye_for_an_eye.eye_core.instances import points_only
        from eye_for_an_eye.eye_core.point_constraint import HARD, SOFT, PointConstraint

        key = method.removesuffix("-soft")
        target = torch.tensor([sets[key][0] for sets in point_sets], dtype=torch.float32)
        reference = torch.tensor([sets[key][1] for sets in point_sets], dtype=torch.float32)
        return points_only(PointConstraint(target, reference, 0.1, SOFT if method.endswith("-soft") else HARD))

    @torch.inference_mode()
    def run_batch(self, pairs, methods=METHODS, seed: int = 0, point_sets=None) -> list[PairResult]:
        """All ``methods`` on ``pairs`` (list of (target scene, reference scene), one prompt each side),
        under inference mode as ComfyUI's executor runs nodes. ``point_sets``: per pair, {name: (target
        points, reference points)} for the ``points-<name>`` methods (the official preset with a point
        constraint; ``points-<name>-soft`` with a soft one)."""
        from eye_for_an_eye.nodes import correspondence, inversion, transfer

        renders = [(render(t), render(r)) for t, r in pairs]
        target_prompt = caption([c.species for c in pairs[0][0].creatures])
        reference_prompt = caption([c.species for c in pairs[0][1].creatures])
        positive, negative = self.conditioning(target_prompt), self.conditioning("")
        reference_positive = self.conditioning(reference_prompt)
        images = {side: torch.from_numpy(np.stack([pair[i].image for pair in renders])) for i, side in
                  enumerate(("target", "reference"))}
        masks = {side: torch.from_numpy(np.stack([pair[i].object_mask for pair in renders]).astype(np.float32))
                 for i, side in enumerate(("target", "reference"))}
        latents = {side: self.vae.encode(image) for side, image in images.items()}
        # independent noise for the two inversions (the reference's seed derived from the target's)
        target_trajectory, start, sigmas = self._invert(latents["target"], positive, negative, seed)
        reference_trajectory, _, _ = self._invert(latents["reference"], reference_positive, negative, seed + 1)
        adain = run_node(transfer.TransferSampler, structure=target_trajectory, reference=reference_trajectory,
                         adain_start=self.settings.schedule.adain_start, adain_end=self.settings.schedule.adain_end,
                         target_mask=masks["target"], reference_mask=masks["reference"])[0]
        results = {}
        for method in methods:
            if method == "none":
                replay = run_node(inversion.TrajectorySampler, trajectory=target_trajectory)[0]
                results[method] = self._sample(self.model, replay, positive, negative, sigmas, start)
                continue
            if method == "adain":
                results[method] = self._sample(self.model, adain, positive, negative, sigmas, start)
                continue
            extra = {}
            if method == "implicit":
                extra["injection"] = IMPLICIT
            elif method == "fixed-dift":
                target_features = self._dift(latents["target"], positive)
                reference_features = self._dift(latents["reference"], reference_positive)
                extra["correspondence"] = run_node(
                    correspondence.MatchCorrespondence, target_features=target_features,
                    reference_features=reference_features, target_mask=masks["target"],
                    reference_mask=masks["reference"])[0]
            elif method == "ground-truth":
                extra["correspondence"] = self.oracle(renders, tuple(latents["target"].shape[-2:]))
            elif method.startswith("points-"):
                extra["constraint"] = self.point_constraint(point_sets, method)
            elif method == "shuffled":  # deliberately wrong: the oracle's matches dealt out at random
                extra["correspondence"] = self.oracle(renders, tuple(latents["target"].shape[-2:]), shuffle=seed)
            patched = self._apply(reference_trajectory, target_trajectory, masks["target"], masks["reference"],
                                  **extra)
            results[method] = self._sample(patched, adain, positive, negative, sigmas, start)
        out = []
        for i, ((target, reference), (t, r)) in enumerate(zip(pairs, renders)):
            ideal = render(ideal_transfer(target, reference)).image
            background = background_only(target)
            scores = {m: score_transfer(results[m][i], t, r, ideal, background) for m in methods}
            out.append(PairResult(target, reference, (t, r), ideal, {m: results[m][i] for m in methods}, scores))
        return out

    @staticmethod
    def oracle(renders, grid, shuffle=None):
        """The ground-truth correspondences of a batch at the finest attention grid (the latent's);
        with ``shuffle`` (a seed) each target token gets a random reference object token instead."""
        import dataclasses

        from eye_for_an_eye.eye_core.correspondence import Correspondence

        parts = [oracle_correspondence(t.labels, t.uv, r.labels, r.uv, grid) for t, r in renders]
        if shuffle is not None:
            generator = torch.Generator().manual_seed(shuffle)
            for i, part in enumerate(parts):
                objects = torch.nonzero(part.reference_mask.flatten()).flatten()
                picks = objects[torch.randint(0, len(objects), part.index.shape, generator=generator)]
                parts[i] = dataclasses.replace(part, index=torch.where(part.index >= 0, picks, part.index))
        return Correspondence(index=torch.cat([p.index for p in parts]), score=torch.cat([p.score for p in parts]),
                              mutual=None, target_grid=grid, reference_grid=grid,
                              target_mask=torch.cat([p.target_mask for p in parts]),
                              reference_mask=torch.cat([p.reference_mask for p in parts]))

    # ------------------------------------------------------------------ many pairs

    def run(self, pairs, methods=METHODS, batch: int = 8, seed: int = 0, progress=None,
            point_sets=None) -> list[PairResult]:
        """All methods on all pairs, batched by (target species, reference species), in input order."""
        groups = {}
        for index, (target, reference) in enumerate(pairs):
            key = (caption([c.species for c in target.creatures]), caption([c.species for c in reference.creatures]))
            groups.setdefault(key, []).append(index)
        results = [None] * len(pairs)
        for indices in groups.values():
            for start in range(0, len(indices), batch):
                chunk = indices[start:start + batch]
                sets = None if point_sets is None else [point_sets[i] for i in chunk]
                for index, result in zip(chunk, self.run_batch([pairs[i] for i in chunk], methods, seed, sets)):
                    results[index] = result
                if progress is not None:
                    progress(len(chunk))
        return results


def summarise(results: list[PairResult], methods=METHODS) -> dict:
    """Mean of every metric per method."""
    summary = {}
    for method in methods:
        rows = [r.scores[method] for r in results if method in r.scores]
        summary[method] = {k: float(np.nanmean([row[k] for row in rows])) for k in rows[0]} if rows else {}
    return summary
