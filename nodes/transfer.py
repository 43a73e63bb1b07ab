"""Appearance transfer: the attention patch, the Transfer Sampler and the all-in-one node.

The three share their input checks (trajectories, masks, correspondence, models), which is
why they live in one module of a little over 500 lines; the work itself is in
eye_core.transfer and comfy_adapter.patches.
"""

from __future__ import annotations

import logging

from comfy_api.v0_0_2 import io

from ..eye_core.mask_grid import empty_rows, no_token_message
from ..eye_core.features import DIFT_ENSEMBLE, DIFT_TIMESTEP
from ..eye_core.mask_grid import mask_at_grid, mask_batch
from ..eye_core.fingerprint import images_of, model_of
from ..eye_core.rearrange import (GUIDANCE_MODES, IMPLICIT, INJECTION_MODES, LAYER_CHOICES, OFFICIAL, TWO_FINEST,
                                  TransferSchedule, choose_layers, guidance_problem)
from ..eye_core.transfer import TransferPlan, adain_after_step, check_pair
from ..comfy_adapter.checks import require_unet
from ..comfy_adapter.fingerprints import model_print
from ..comfy_adapter.memory import storage_device
from ..comfy_adapter.patches import check_token_patches, has_output_block_patch, with_transfer_patch
from ..comfy_adapter.progress import progress_callback
from ..comfy_adapter.sampling import make_sampler, sample_with_cfg
from ..comfy_adapter.unet_layout import attention_grids, decoder_attention_levels
from .common import (CATEGORY, CONSTRAINT, CORRESPONDENCE, TRAJECTORY, check_choices, check_same_model, named, node_id,
                     require_finite, step_counts_problem)
from .correspondence import match_correspondence
from .features import AUTO_LEVEL, extract_features
from .freeu import authors_freeu
from ..eye_core.trajectory import EF_DDPM, reference_noise_seed, share_noise
from .instances import number_instances, pair_instances, proxy_parts_node, rank_exemplars_node
from .inversion import _replay, invert_latent

OFFICIAL_SCHEDULE = TransferSchedule()
PER_STEP = "per-step matching (official)"
FIXED_DIFT = "fixed DIFT correspondence"
AUTHORS_FREEU = "authors' FreeU (official)"
MODEL_AS_CONNECTED = "none (the model as connected)"
# The names users see on the nodes: every error starts with the one of the node that raised it.
APPLY = "Apply Appearance Transfer"
SAMPLER = "Transfer Sampler"
ALL_IN_ONE = "Eye-for-an-eye Appearance Transfer"
LOG = logging.getLogger("eye_for_an_eye")


def _fraction(name, default, tooltip):
    return io.Float.Input(name, default=round(default, 4), min=0.0, max=1.0, step=0.001, tooltip=tooltip)


def _check_mask(mask, name, batch, node):
    """A connected mask as (B|1, H, W) float, refused when its shape, batch or content cannot serve."""
    if mask is None:
        return None
    with named(node):
        mask = mask_batch(mask, name=name, batch=batch)[:, 0]
    if not bool((mask.flatten(1) > 0).any(dim=1).all()):
        raise ValueError(f"{node}: {name} is empty (all zero) for at least one image: SAM-HQ found nothing in the "
                         "box, or it is LoadImage's MASK of an image without alpha. Redraw the box, or leave the "
                         "input unconnected to use the whole image.")
    return mask


def _check_models(first, second, first_what, second_what, node, fix):
    check_same_model(first, second, first_what, second_what, node, fix,
                     "The transfer runs, but the features and the replay do not quite agree; " + fix[0].lower() + fix[1:])


def check_trajectories(reference, structure, node, model=None):
    """The two trajectories (and the model, if given) must belong together: one schedule, one model."""
    try:
        check_pair(reference, structure)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from None
    _check_models(model_of(structure), model_of(reference), "the structure trajectory", "the reference trajectory",
                  node, "Invert the target and the reference with the same model (and the same patches).")
    if model is not None:
        _check_models(model_of(structure), model_print(model), "the structure trajectory", "the model", node,
                      "Connect the model both images were inverted with (the same checkpoint and patches), or invert "
                      "them again with this one.")


def check_correspondence(correspondence, structure, reference, batch, node):
    """A fixed correspondence must hold matches, and come from the images the trajectories were inverted from."""
    if correspondence.batch_size not in (1, batch):
        raise ValueError(f"{node}: the correspondence holds {correspondence.batch_size} targets but the structure "
                         f"trajectory {batch}; match the same target images.")
    unmatched = empty_rows(correspondence.matched[:, None])
    if unmatched:
        raise ValueError(f"{node}: the correspondence matches no target token for image row(s) {unmatched} (its "
                         "target mask selected nothing at its grid): redo Match Correspondence with a larger "
                         "target mask, or leave correspondence unconnected to match per step.")
    for origin, trajectory, role in ((correspondence.target_origin, structure, "target"),
                                     (correspondence.reference_origin, reference, "reference")):
        matched_on, inverted_from = images_of(origin), images_of(getattr(trajectory, "origin", None))
        if matched_on is None or inverted_from is None:
            continue
        models = (getattr(origin, "model", None), model_of(trajectory))
        if None not in models and models[0].latent != models[1].latent:
            continue  # features of a model with another latent format (another VAE): not comparable here
        rows = matched_on.differing_rows(inverted_from)
        if rows:
            trajectory_name = "structure" if role == "target" else "reference"
            raise ValueError(
                f"{node}: the correspondence was matched on another {role} image than the {trajectory_name} "
                f"trajectory was inverted from (image row(s) {rows}). Connect the Match Correspondence made from the "
                f"features of these very images (Extract UNet Features on the LATENT you inverted), or leave "
                "correspondence unconnected to match per step.")


def _check_mask_tokens(mask, name, role, grids, node):
    """A mask with pixels but no token at the attention grids the patch edits makes the patch a silent no-op.

    No token at any edited grid (for some image): an error. No token at some of the grids
    only (the coarser ones, usually): the layers there do nothing for that image, a warning.
    """
    if mask is None:
        return
    grids = sorted(grids, reverse=True)  # finest first
    empty = {grid: set(empty_rows(mask_at_grid(mask, grid, name=name))) for grid in grids}
    nowhere = sorted(set.intersection(*empty.values()))
    if nowhere:
        fix = f"draw a larger mask (a larger SAM box), or leave {name} unconnected to use the whole {role} image"
        raise ValueError(f"{node}: {no_token_message(name, role, grids, nowhere, fix)}")
    for grid in grids:
        if empty[grid]:
            other = (", or choose layers 'finest decoder level' to edit only the finest grid "
                     f"({grids[0][0]}x{grids[0][1]})" if grid != grids[0] else "")
            LOG.warning("%s: %s", node, no_token_message(
                name, role, grid, sorted(empty[grid]),
                f"the layers at that grid leave those images as they are; draw a larger mask{other}"))


def warn_shared_noise(reference, structure, node):
    """Two inversions from one seed share their noise maps: say so (the transfer still runs)."""
    if share_noise(reference, structure):
        LOG.warning(
            "%s: the target and the reference were inverted with the same seed (%d), so their noise is the same at "
            "every step; per-step matching then leans toward matching each part to the same position rather than "
            "to the same part. Give the reference's Invert Latent another seed (e.g. %d).",
            node, structure.seed, reference_noise_seed(structure.seed))


def apply_transfer(model, reference, structure, injection, layers, rearrange_start, rearrange_end, structure_end,
                   structure_interval, guidance, strength, correspondence=None, target_mask=None, reference_mask=None,
                   constraint=None, node=APPLY):
    """Apply Appearance Transfer's work: the patched MODEL clone; errors name ``node``."""
    require_unet(model, node)
    check_token_patches(model, node)
    check_trajectories(reference, structure, node, model)
    warn_shared_noise(reference, structure, node)
    with named(node):
        chosen = choose_layers(decoder_attention_levels(model), layers)
        schedule = TransferSchedule(rearrange_start=rearrange_start, rearrange_end=rearrange_end,
                                    structure_end=structure_end, structure_interval=structure_interval,
                                    adain_start=OFFICIAL_SCHEDULE.adain_start, adain_end=OFFICIAL_SCHEDULE.adain_end)
    if not chosen:
        raise ValueError(f"{node}: this model has no decoder self-attention at '{layers}'; "
                         f"choose '{TWO_FINEST}' or 'all decoder levels'.")
    batch = structure.latent_shape[0]
    if correspondence is not None and injection == IMPLICIT:
        raise ValueError(f"{node}: injection 'implicit' uses no correspondence (the attention "
                         "itself finds where to look); disconnect the correspondence input, or choose 'feature'.")
    if correspondence is not None:
        check_correspondence(correspondence, structure, reference, batch, node)
    if constraint is not None and injection == IMPLICIT:
        raise ValueError(f"{node}: injection 'implicit' has no correspondence to constrain (the attention itself "
                         "decides where to look); disconnect the constraint, or choose 'feature'.")
    target_mask = _check_mask(target_mask, "target_mask", batch, node)
    reference_mask = _check_mask(reference_mask, "reference_mask", reference.latent_shape[0], node)
    _check_mask_tokens(target_mask, "target_mask", "target",
                       attention_grids(model, chosen, structure.latent_shape[-2:]), node)
    _check_mask_tokens(reference_mask, "reference_mask", "reference",
                       attention_grids(model, chosen, reference.latent_shape[-2:]), node)
    plan = TransferPlan(reference=reference, structure=structure, layers=chosen, schedule=schedule,
                        injection=injection, guidance=guidance, strength=float(strength),
                        correspondence=correspondence, target_mask=target_mask, reference_mask=reference_mask,
                        constraint=constraint, node=node)
    return with_transfer_patch(model, plan)


class ApplyAppearanceTransfer(io.ComfyNode):
    """MODEL -> patched MODEL clone whose decoder self-attention takes the reference's appearance."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ApplyAppearanceTransfer"),
            display_name="Apply Appearance Transfer (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "Patches a clone of the model so that, while the target is regenerated from its trajectory, the "
                "decoder self-attention features are rearranged from the reference along semantic correspondences "
                "(and, on a few early steps, replaced by the target's own structure features). Sample it with the "
                "Transfer Sampler over the target's Invert Latent sigmas. The input MODEL is never modified."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The same UNet SD model (and patches, e.g. FreeU) used to invert both "
                               "images."),
                io.Custom(TRAJECTORY).Input("reference", tooltip="Trajectory of the reference (appearance) image "
                                            "from Invert Latent."),
                io.Custom(TRAJECTORY).Input("structure", tooltip="Trajectory of the target (structure) image from "
                                            "Invert Latent, with the same steps and skip_steps."),
                io.Custom(CORRESPONDENCE).Input("correspondence", optional=True, tooltip="Optional fixed "
                                                "correspondence (Match Correspondence on DIFT features), resampled to "
                                                "every attention grid. Without it, matching runs per step on the "
                                                "attention features, as the authors do."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask (any size). Outside it "
                              "nothing is rearranged, so the background is kept."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask (any size): only "
                              "features inside it are used."),
                io.Combo.Input("injection", options=list(INJECTION_MODES), default="feature", tooltip="feature: Q, K "
                               "and V all come from the rearranged features (the paper's choice). value: only V. "
                               "key-value: K and V. implicit: no correspondence at all, the output's queries attend "
                               "to the reference's keys and values (Cross-Image Attention, contrast 1.67), the "
                               "baseline the paper compares against; per-step, no correspondence input."),
                io.Combo.Input("layers", options=list(LAYER_CHOICES), default=TWO_FINEST, tooltip="Decoder "
                               "self-attention levels edited. Two finest: SD1.5 output blocks 6-11, SDXL 0-5."),
                _fraction("rearrange_start", OFFICIAL_SCHEDULE.rearrange_start, "Fraction of the generation steps "
                          "after which rearrangement starts (official: 11 of 68 = 0.162). Earlier: more appearance, "
                          "less structure."),
                _fraction("rearrange_end", OFFICIAL_SCHEDULE.rearrange_end, "Fraction of the steps where "
                          "rearrangement stops (official: 1.0, to the end). rearrange_end <= rearrange_start "
                          "disables the patch."),
                _fraction("structure_end", OFFICIAL_SCHEDULE.structure_end, "Structure injection happens on steps "
                          "before this fraction (official: 40 of 68 = 0.588). 0 turns it off."),
                _fraction("structure_interval", OFFICIAL_SCHEDULE.structure_interval, "Structure injection every "
                          "this fraction of the steps, from rearrange_start (official: every 5 of 68 = 0.074)."),
                io.Combo.Input("guidance", options=list(GUIDANCE_MODES), default=OFFICIAL, tooltip="official: as the "
                               "released code, rearrange only the cond row and inject structure only into the uncond "
                               "row (CFG then pushes toward the rearranged result). symmetric: both rows alike."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="How far the features "
                               "move toward the rearranged ones (0: off, the model samples exactly as without the "
                               "patch)."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Several objects: which reference "
                                            "tokens each target token may match in per-step matching (and which "
                                            "matches of a fixed correspondence are kept): Pair Instances, Proxy "
                                            "Parts, Label Constraint, Point Pairs."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A patched clone of the model; connect it to the "
                                     "CFGGuider of the sampling.")],
        )

    @classmethod
    def execute(cls, model, reference, structure, injection, layers, rearrange_start, rearrange_end, structure_end,
                structure_interval, guidance, strength, correspondence=None, target_mask=None,
                reference_mask=None, constraint=None) -> io.NodeOutput:
        check_choices(cls, APPLY, injection=injection, layers=layers, guidance=guidance)
        return io.NodeOutput(apply_transfer(model, reference, structure, injection, layers, rearrange_start,
                                            rearrange_end, structure_end, structure_interval, guidance, strength,
                                            correspondence, target_mask, reference_mask, constraint))


def transfer_sampler(structure, reference, adain_start, adain_end, target_mask=None, reference_mask=None,
                     constraint=None, node=SAMPLER):
    """The Transfer Sampler's SAMPLER; errors (here and while it samples) name ``node``.

    With a ``constraint`` (several objects) AdaIN runs region by region: each target object or
    part takes the statistics of the reference region it may match.
    """
    check_trajectories(reference, structure, node)
    with named(node):
        schedule = TransferSchedule(adain_start=adain_start, adain_end=adain_end)
    batch = structure.latent_shape[0]
    hook = adain_after_step(reference, schedule, _check_mask(target_mask, "target_mask", batch, node),
                       _check_mask(reference_mask, "reference_mask", reference.latent_shape[0], node), constraint)
    return make_sampler(_replay, trajectory=structure, after_step=hook, node=node,
                               what="the structure trajectory", adain_schedule=schedule)


class TransferSampler(io.ComfyNode):
    """The Trajectory Sampler of the target plus masked AdaIN toward the reference's latents."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TransferSampler"),
            display_name="Transfer Sampler (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "A SAMPLER for SamplerCustomAdvanced: replays the target (structure) trajectory's noise maps and, "
                "after the last steps, renormalises the latent's colour statistics to the reference's inside the "
                "masks (masked AdaIN; plain AdaIN without masks). Use DisableNoise and the target's start_latent "
                "and sigmas."
            ),
            inputs=[
                io.Custom(TRAJECTORY).Input("structure", tooltip="Trajectory of the target image (its noise maps are "
                                            "replayed)."),
                io.Custom(TRAJECTORY).Input("reference", tooltip="Trajectory of the reference image (AdaIN target)."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask: AdaIN statistics and "
                              "blending inside it only."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask: AdaIN statistics "
                              "inside it only."),
                _fraction("adain_start", OFFICIAL_SCHEDULE.adain_start, "Masked AdaIN after each step from this "
                          "fraction of the schedule (official: 49 of 68 = 0.721)."),
                _fraction("adain_end", OFFICIAL_SCHEDULE.adain_end, "... up to this fraction (official: 1.0). "
                          "adain_end <= adain_start turns AdaIN off."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Several objects: the constraint "
                                            "given to Apply Appearance Transfer. AdaIN then runs object by object "
                                            "(or part by part): each takes its own counterpart's colour statistics, "
                                            "unpaired objects stay as they are."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler", tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, structure, reference, adain_start, adain_end, target_mask=None,
                reference_mask=None, constraint=None) -> io.NodeOutput:
        return io.NodeOutput(transfer_sampler(structure, reference, adain_start, adain_end, target_mask,
                                              reference_mask, constraint))


def _dift(model, latent, positive, seed):
    """The all-in-one's DIFT features of one latent (the Extract UNet Features defaults)."""
    return extract_features(model=model, latent=latent, positive=positive, timestep=DIFT_TIMESTEP,
                            decoder_level=AUTO_LEVEL, ensemble_size=DIFT_ENSEMBLE, seed=seed, node=ALL_IN_ONE)[0]


def _best_reference(model, latents, positive, seed, candidates, target_mask, reference_mask, target_instances,
                    reference_instances):
    """The candidate most similar to the target's object: (its image, its mask, the target's features)."""
    if reference_instances is not None:
        raise ValueError(f"{ALL_IN_ONE}: best_reference picks one of {candidates.shape[0]} candidate references, "
                         "but reference_instances number the objects of one reference image. Pick the reference "
                         "first (Rank Exemplars), then number its instances; or turn best_reference off.")
    if reference_mask is not None and reference_mask.ndim == 3 and reference_mask.shape[0] not in (
            1, candidates.shape[0]):
        raise ValueError(f"{ALL_IN_ONE}: reference_mask holds {reference_mask.shape[0]} masks for "
                         f"{candidates.shape[0]} candidate references; give one mask per candidate, or one for all.")
    if target_mask is None and target_instances is not None:
        target_mask = target_instances.amax(0, keepdim=True)
    target_features = _dift(model, latents["target"], positive, seed)
    candidate_features = _dift(model, latents["reference"], positive, seed)
    _, best, _, _ = rank_exemplars_node(target_features, candidate_features, candidates, target_mask=target_mask,
                                        candidate_masks=reference_mask, node=ALL_IN_ONE)
    if reference_mask is not None and reference_mask.ndim == 3 and reference_mask.shape[0] > 1:
        reference_mask = reference_mask[best:best + 1]
    return candidates[best:best + 1], reference_mask, target_features


def check_all_in_one(node_class, target, reference, steps, skip_steps, cfg, matching, freeu, target_mask,
                     reference_mask, target_instances, reference_instances, best_reference):
    """What the all-in-one can tell is wrong before it inverts anything."""
    check_choices(node_class, ALL_IN_ONE, matching=matching, freeu=freeu)
    for what, value in (("target image", target), ("reference image", reference), ("target_mask", target_mask),
                        ("reference_mask", reference_mask), ("target_instances", target_instances),
                        ("reference_instances", reference_instances)):
        require_finite(value, what, ALL_IN_ONE)
    problem = step_counts_problem(node_class, ALL_IN_ONE, steps, skip_steps)
    if problem:
        raise ValueError(problem)
    if (target_instances is None) != (reference_instances is None):
        raise ValueError(f"{ALL_IN_ONE}: connect instance masks for both images (target_instances and "
                         "reference_instances), or neither.")
    if not best_reference and reference.shape[0] not in (1, target.shape[0]):
        raise ValueError(f"{ALL_IN_ONE}: the reference input holds {reference.shape[0]} images and the target "
                         f"{target.shape[0]}: connect one reference (or one per target image), or turn best_reference "
                         "on to use the most similar of several candidate references.")
    problem = guidance_problem(OFFICIAL, cfg)  # a refusal now, before two inversions; the sampler warns itself
    if problem is not None and problem[0] == "refuse":
        raise ValueError(f"{ALL_IN_ONE}: {problem[1]}")


class AppearanceTransfer(io.ComfyNode):
    """All-in-one: target and reference images in, the transferred image out.

    It calls the very functions the modular nodes run (invert_latent, extract_features,
    match_correspondence, apply_transfer, transfer_sampler), so the two give the same result
    (tests/comfy/test_transfer_nodes.py). ComfyUI's node expansion (returning a subgraph)
    would run the nodes themselves, but every error would then name an inner node the user
    never placed, and the executor would cache the two trajectories (gigabytes at 512 px) per
    inner node; a plain call keeps errors on this node and memory to one prompt.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("AppearanceTransfer"),
            display_name="Eye-for-an-eye Appearance Transfer",
            category=CATEGORY,
            description=(
                "Keeps the structure of the target image and takes colours and textures from the reference, part "
                "by part. Runs the whole method with the official preset: inverts both images, patches the model "
                "and samples. For control over every stage, use the separate nodes."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A UNet SD model (SD1.x, SD2.x, SDXL). The authors' FreeU is "
                               "applied inside (see freeu): connect the model without FreeU."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE."),
                io.Conditioning.Input("positive", tooltip="'a photo of a <domain>', e.g. 'a photo of a bird'."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (the authors use an empty one)."),
                io.Image.Input("target", tooltip="The image whose structure is kept."),
                io.Image.Input("reference", tooltip="The image whose appearance is transferred."),
                io.Mask.Input("target_mask", optional=True, tooltip="Target object mask (SAM-HQ Segment); keeps "
                              "the background."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Reference object mask."),
                io.Int.Input("steps", default=100, min=2, max=999, tooltip="Steps of the whole schedule."),
                io.Int.Input("skip_steps", default=32, min=0, max=998, tooltip="Steps skipped at the noisy end."),
                io.Float.Input("inversion_cfg", default=3.5, min=0.0, max=30.0, step=0.1, tooltip="Guidance while "
                               "inverting (official 3.5)."),
                io.Float.Input("cfg", default=2.5, min=0.0, max=30.0, step=0.1, tooltip="Guidance while generating "
                               "(official 2.5): lower keeps the structure more faithfully, higher looks nicer."),
                io.Combo.Input("matching", options=[PER_STEP, FIXED_DIFT], default=PER_STEP, tooltip="Per-step "
                               "matching on attention features (official) or one DIFT correspondence for all steps "
                               "(steadier, cheaper)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the target's inversion noise; the reference's is seed + 1, so the "
                             "two images get independent noise (one noise for both pulls matching toward "
                             "same-position matches)."),
                io.Combo.Input("freeu", options=[AUTHORS_FREEU, MODEL_AS_CONNECTED], default=AUTHORS_FREEU,
                               optional=True, tooltip=(
                                   "The backbone: the authors' FreeU (b1 1.2, b2 1.4, s1 0.9, s2 0.2 at each decoder "
                                   "up-block entry, as in their code), or the model exactly as connected (choose "
                                   "this if you put ComfyUI's FreeU or FreeU (authors' variant) before this node).")),
                io.Mask.Input("target_instances", optional=True, tooltip="Several objects: one mask per target "
                              "object (SAM-HQ Segment's masks, one box per object). Each takes the appearance of its "
                              "paired reference object; without target_mask their union is the target mask."),
                io.Mask.Input("reference_instances", optional=True, tooltip="One mask per reference object, for "
                              "pairing with target_instances; without reference_mask their union is the reference "
                              "mask."),
                io.String.Input("pairs", default="", optional=True, tooltip="With instances: empty pairs them "
                                "automatically (most similar DIFT features); or type target>reference pairs, e.g. "
                                "'1>2, 2>1' (numbered in the order of the masks, from 1)."),
                io.Int.Input("proxy_parts", default=0, min=0, max=12, optional=True, tooltip="Match only within the "
                             "same proxy part: both images' DIFT features clustered jointly into this many parts "
                             "(0: off)."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="A constraint built with the "
                                            "several-objects nodes (Pair Instances, Proxy Parts, Label Constraint), "
                                            "combined with the above."),
                io.Boolean.Input("best_reference", default=False, optional=True, tooltip="With a batch of candidate "
                                 "reference images: use the one whose object is most similar to the target's (DIFT "
                                 "features inside the masks, as Rank Exemplars; the ranking is logged). "
                                 "reference_mask may hold one mask per candidate. Off: the reference batch must pair "
                                 "with the target batch."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The target with the reference's appearance."),
                io.Latent.Output(display_name="latent", tooltip="The result's latent."),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None, skip_steps=None):
        """Refuses skip_steps >= steps when the prompt is queued, before any node runs."""
        return step_counts_problem(cls, ALL_IN_ONE, steps, skip_steps) or True

    @classmethod
    def execute(cls, model, vae, positive, negative, target, reference, steps, skip_steps, inversion_cfg, cfg,
                matching, seed, target_mask=None, reference_mask=None, freeu=AUTHORS_FREEU, target_instances=None,
                reference_instances=None, pairs="", proxy_parts=0, constraint=None,
                best_reference=False) -> io.NodeOutput:
        check_all_in_one(cls, target, reference, steps, skip_steps, cfg, matching, freeu, target_mask, reference_mask,
                         target_instances, reference_instances, best_reference)
        if freeu == AUTHORS_FREEU and has_output_block_patch(model):
            LOG.warning("%s: the model already carries FreeU (an output-block patch); it is used as connected and "
                        "the authors' FreeU is not added a second time. Set freeu to %r to silence this.", ALL_IN_ONE,
                        MODEL_AS_CONNECTED)
        elif freeu == AUTHORS_FREEU:
            model = authors_freeu(model, node=ALL_IN_ONE)  # a clone: the connected model stays as it is
        automatic = target_instances is not None and not (pairs or "").strip()
        numbered = typed = None
        if target_instances is not None and not best_reference:  # typed pairs are checked before any UNet pass
            numbered = {name: number_instances(image, masks, node=ALL_IN_ONE)[0] for name, image, masks in
                        (("target", target, target_instances), ("reference", reference, reference_instances))}
            if not automatic:
                typed = pair_instances(numbered["target"], numbered["reference"], pairs, None, None,
                                       node=ALL_IN_ONE)[0]
        latents = {name: {"samples": vae.encode(image[:, :, :, :3])} for name, image in
                   (("target", target), ("reference", reference))}
        target_features = None
        if best_reference and reference.shape[0] > 1:
            reference, reference_mask, target_features = _best_reference(
                model, latents, positive, seed, reference, target_mask, reference_mask, target_instances,
                reference_instances)
            latents["reference"] = {"samples": vae.encode(reference[:, :, :, :3])}
        trajectories, starts, sigmas = {}, {}, None
        for name, latent in latents.items():
            trajectory, start, sigmas = invert_latent(
                model=model, latent=latent, positive=positive, negative=negative, steps=steps, cfg=inversion_cfg,
                method=EF_DDPM, seed=seed if name == "target" else reference_noise_seed(seed), skip_steps=skip_steps,
                node=ALL_IN_ONE)
            trajectories[name], starts[name] = trajectory, start
        features = None
        if matching == FIXED_DIFT or automatic or proxy_parts > 0:
            features = {name: target_features if name == "target" and target_features is not None else
                        _dift(model, latent, positive, seed) for name, latent in latents.items()}
        if target_instances is not None:
            if numbered is None:
                numbered = {name: number_instances(image, masks, node=ALL_IN_ONE)[0] for name, image, masks in
                            (("target", target, target_instances), ("reference", reference, reference_instances))}
            target_mask = target_instances.amax(0, keepdim=True) if target_mask is None else target_mask
            reference_mask = reference_instances.amax(0, keepdim=True) if reference_mask is None else reference_mask
            paired = typed if typed is not None else pair_instances(
                numbered["target"], numbered["reference"], pairs, features["target"], features["reference"],
                node=ALL_IN_ONE)[0]
            constraint = paired if constraint is None else constraint.and_(paired)
        if proxy_parts > 0:
            constraint = proxy_parts_node(features["target"], features["reference"], proxy_parts, seed, target_mask,
                                          reference_mask, constraint, node=ALL_IN_ONE)[0]
        correspondence = None
        if matching == FIXED_DIFT:
            correspondence = match_correspondence(
                target_features=features["target"], reference_features=features["reference"],
                target_mask=target_mask, reference_mask=reference_mask, constraint=constraint, node=ALL_IN_ONE)[0]
        patched = apply_transfer(
            model=model, reference=trajectories["reference"], structure=trajectories["target"], injection="feature",
            layers=TWO_FINEST, rearrange_start=OFFICIAL_SCHEDULE.rearrange_start,
            rearrange_end=OFFICIAL_SCHEDULE.rearrange_end, structure_end=OFFICIAL_SCHEDULE.structure_end,
            structure_interval=OFFICIAL_SCHEDULE.structure_interval, guidance=OFFICIAL, strength=1.0,
            correspondence=correspondence, target_mask=target_mask, reference_mask=reference_mask,
            constraint=constraint, node=ALL_IN_ONE)
        sampler = transfer_sampler(
            structure=trajectories["target"], reference=trajectories["reference"],
            adain_start=OFFICIAL_SCHEDULE.adain_start, adain_end=OFFICIAL_SCHEDULE.adain_end,
            target_mask=target_mask, reference_mask=reference_mask, constraint=constraint, node=ALL_IN_ONE)
        callback = progress_callback(patched, len(sigmas) - 1)
        samples = sample_with_cfg(patched, positive, negative, cfg, starts["target"]["samples"], sampler,
                                         sigmas, seed, callback)
        out = starts["target"].copy()
        out["samples"] = samples.to(storage_device())
        image = vae.decode(out["samples"])
        return io.NodeOutput(image.to(storage_device()), out)


NODES = [ApplyAppearanceTransfer, TransferSampler, AppearanceTransfer]
