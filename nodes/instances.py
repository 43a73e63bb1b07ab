"""Several objects at once: number instances, pair them, split them into proxy parts, constrain matching.

Every node here ends in a MATCH_CONSTRAINT (or feeds one): Match Correspondence and Apply
Appearance Transfer take it as an optional input, and a target token then matches only the
reference tokens it is allowed (its paired instance, its proxy part, its label).
"""

from __future__ import annotations

import logging

import torch
from comfy_api.v0_0_2 import io

from ..eye_core.instances import (NONE, Instances, MatchConstraint, PairingError, count, format_pairs,
                                  instance_descriptors, pair_automatically, pairing_constraint, parse_pairs,
                                  proxy_parts, rank_exemplars, resize_labels, similarity)
from ..eye_core.mask_grid import mask_at_grid
from ..eye_core.visualize import instance_preview, label_colours, pairs_preview, stamp_number
from .common import CATEGORY, CONSTRAINT, FEATURES, INSTANCES, named, node_id
from .correspondence import check_feature_models

SUBCATEGORY = f"{CATEGORY}/several objects"
NUMBER = "Number Instances"
PAIR = "Pair Instances"
PARTS = "Proxy Parts"
LABELS = "Label Constraint"
RANK = "Rank Exemplars"
LOG = logging.getLogger("eye_for_an_eye")


def _grey(height: int, width: int) -> torch.Tensor:
    return torch.full((height, width, 3), 0.5)


def number_instances(image, masks, node=NUMBER):
    """(Instances, preview) of one image and its instance masks (one per object)."""
    if image.shape[0] != 1:
        raise ValueError(f"{node}: the image is a batch of {image.shape[0]}; number the instances of one image "
                         "at a time (one node per image).")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise ValueError(f"{node}: masks must hold one mask per object (a MASK batch), got shape "
                         f"{tuple(masks.shape)}.")
    instances = Instances.from_masks(masks.to("cpu", torch.float32), tuple(image.shape[1:3]))
    empty = instances.empty()
    if empty:
        raise ValueError(f"{node}: instance(s) {empty} cover no pixel (their masks are empty or hidden under later "
                         "masks); remove them or check the boxes that made them.")
    preview = instance_preview(image[0].to("cpu", torch.float32), instances.labels, instances.count)
    return instances, preview


class NumberInstances(io.ComfyNode):
    """Masks of one image, one per object, as numbered instances."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("NumberInstances"),
            display_name="Number Instances (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=("Numbers the objects of one image from their masks (one mask per object: SAM-HQ Segment's "
                         "masks with one box per object, or any MASK batch). Where masks overlap the later one wins. "
                         "The preview shows each instance's number, as Pair Instances uses them."),
            inputs=[
                io.Image.Input("image", tooltip="The image the masks belong to (one image)."),
                io.Mask.Input("masks", tooltip="One mask per object, as a batch: instance 1 is the first mask. "
                              "Any size (resized to the image)."),
            ],
            outputs=[
                io.Custom(INSTANCES).Output(display_name="instances", tooltip="The numbered instances of the image."),
                io.Image.Output(display_name="preview", tooltip="The image with each instance tinted and numbered."),
            ],
        )

    @classmethod
    def execute(cls, image, masks) -> io.NodeOutput:
        return io.NodeOutput(*number_instances(image, masks))


def _instance_tokens(instances: Instances, features, role: str, node: str):
    grid = tuple(features.features.shape[-2:])
    labels = resize_labels(instances.labels, grid)
    missing = [i + 1 for i in range(instances.count) if not bool((labels == i).any())]
    if missing:
        raise ValueError(f"{node}: {role} instance(s) {missing} cover no token of the features' {grid[0]}x{grid[1]} "
                         "grid (too small at this decoder level). Pair by text (pairs), or extract the features at "
                         "a finer decoder_level.")
    return labels


def pair_instances(target_instances, reference_instances, pairs="", target_features=None, reference_features=None,
                   target_image=None, reference_image=None, node=PAIR):
    """(constraint, pairs text, preview): pairs typed by the user, or found from the instances' features."""
    n_t, n_r = target_instances.count, reference_instances.count
    if pairs and pairs.strip():
        try:
            chosen = parse_pairs(pairs, n_t, n_r)
        except PairingError as error:
            raise ValueError(f"{node}: {error}") from None
        how = "as typed"
    else:
        if target_features is None or reference_features is None:
            raise ValueError(f"{node}: pairs is empty, so the instances are paired automatically, which needs "
                             "target_features and reference_features (Extract UNet Features of both images). "
                             "Connect them, or type the pairs, e.g. '1>2, 2>1'.")
        check_feature_models(target_features, reference_features, node)
        if target_features.features.shape[0] != 1 or reference_features.features.shape[0] != 1:
            raise ValueError(f"{node}: the features hold batches; pair the instances of one target and one "
                             "reference image.")
        target_labels = _instance_tokens(target_instances, target_features, "target", node)
        reference_labels = _instance_tokens(reference_instances, reference_features, "reference", node)
        scores = similarity(instance_descriptors(target_features.features[0].cpu(), target_labels, n_t),
                            instance_descriptors(reference_features.features[0].cpu(), reference_labels, n_r))
        chosen = pair_automatically(scores)
        how = "automatically: " + ", ".join(f"{t + 1}>{r + 1} ({float(scores[t, r]):.2f})"
                                            for t, r in enumerate(chosen))
    LOG.info("%s: %s (%s)", node, format_pairs(chosen), how)
    constraint = pairing_constraint(target_instances.labels, reference_instances.labels, chosen)
    t_image = target_image[0].cpu().float() if target_image is not None else _grey(*target_instances.labels.shape)
    r_image = (reference_image[0].cpu().float() if reference_image is not None
               else _grey(*reference_instances.labels.shape))
    preview = pairs_preview(t_image, target_instances.labels, n_t, r_image, reference_instances.labels, n_r, chosen)
    return constraint, format_pairs(chosen), preview


class PairInstances(io.ComfyNode):
    """Which reference object each target object takes its appearance from."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("PairInstances"),
            display_name="Pair Instances (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=("Pairs each target instance with a reference instance: as you type them ('1>2, 2>1, 3>1': "
                         "target > reference, numbers from the Number Instances previews), or, with pairs empty, "
                         "automatically from the instances' mean features (the most similar overall, one reference "
                         "may serve several targets). Target instances left out keep their own appearance. The "
                         "constraint makes matching follow the pairs."),
            inputs=[
                io.Custom(INSTANCES).Input("target_instances", tooltip="Numbered instances of the target image."),
                io.Custom(INSTANCES).Input("reference_instances", tooltip="Numbered instances of the reference."),
                io.String.Input("pairs", default="", tooltip="Empty: pair automatically (needs both features). Or "
                                "target>reference pairs separated by commas, e.g. '1>2, 2>1'; unlisted target "
                                "instances are left as they are."),
                io.Custom(FEATURES).Input("target_features", optional=True, tooltip="Target features (Extract UNet "
                                          "Features) for automatic pairing."),
                io.Custom(FEATURES).Input("reference_features", optional=True, tooltip="Reference features, same "
                                          "model and decoder level."),
                io.Image.Input("target_image", optional=True, tooltip="For the preview."),
                io.Image.Input("reference_image", optional=True, tooltip="For the preview."),
            ],
            outputs=[
                io.Custom(CONSTRAINT).Output(display_name="constraint", tooltip="Target instance i matches only its "
                                             "paired reference instance: connect to Match Correspondence or Apply "
                                             "Appearance Transfer."),
                io.String.Output(display_name="pairs", tooltip="The pairs used, as text (copy it into pairs to fix "
                                 "them)."),
                io.Image.Output(display_name="preview", tooltip="Target beside reference, instances numbered, a line per pair."),
            ],
        )

    @classmethod
    def execute(cls, target_instances, reference_instances, pairs="", target_features=None, reference_features=None,
                target_image=None, reference_image=None) -> io.NodeOutput:
        return io.NodeOutput(*pair_instances(target_instances, reference_instances, pairs, target_features,
                                             reference_features, target_image, reference_image))


def _mask_at(mask, grid, node, name):
    if mask is None:
        return None
    with named(node):
        inside = mask_at_grid(mask, grid, name=name)
    if inside.shape[0] != 1:
        raise ValueError(f"{node}: {name} is a batch of {inside.shape[0]}; give one mask.")
    return inside[0]


def proxy_parts_node(target_features, reference_features, parts, seed, target_mask=None, reference_mask=None,
                     constraint=None, node=PARTS):
    """(constraint, target parts preview, reference parts preview)."""
    check_feature_models(target_features, reference_features, node)
    if target_features.features.shape[0] != 1 or reference_features.features.shape[0] != 1:
        raise ValueError(f"{node}: the features hold batches; split one target and one reference image.")
    t_grid = tuple(target_features.features.shape[-2:])
    r_grid = tuple(reference_features.features.shape[-2:])
    t_mask = _mask_at(target_mask, t_grid, node, "target_mask")
    r_mask = _mask_at(reference_mask, r_grid, node, "reference_mask")
    with named(node):
        t_parts, r_parts = proxy_parts(target_features.features[0].cpu(), reference_features.features[0].cpu(),
                                       int(parts), t_mask, r_mask, seed=int(seed))
    result = MatchConstraint(t_parts, r_parts, int(parts), f"{int(parts)} proxy parts (seed {int(seed)})")
    if constraint is not None:
        result = constraint.and_(result)
    t_size, r_size = target_features.image_size, reference_features.image_size
    return result, label_colours(t_parts, t_size), label_colours(r_parts, r_size)


class ProxyParts(io.ComfyNode):
    """Both images' features clustered jointly into K parts; matching then stays within the same part."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ProxyParts"),
            display_name="Proxy Parts (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=("Clusters the target's and the reference's features together into K proxy parts (k-means "
                         "on normalised features, inside the masks); a part has the same colour in both previews. "
                         "With the constraint, a target token matches only reference tokens of its own part (and, "
                         "when a constraint is connected, of its paired instance too)."),
            inputs=[
                io.Custom(FEATURES).Input("target_features", tooltip="Target features (Extract UNet Features)."),
                io.Custom(FEATURES).Input("reference_features", tooltip="Reference features, same model and level."),
                io.Int.Input("parts", default=4, min=1, max=12, tooltip="How many proxy parts (K)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the k-means start: the same "
                             "seed gives the same parts."),
                io.Mask.Input("target_mask", optional=True, tooltip="Only the target's object is split (outside: no "
                              "part, nothing matched)."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Only the reference's object is split."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Another constraint (Pair "
                                            "Instances) to combine with: both must hold."),
            ],
            outputs=[
                io.Custom(CONSTRAINT).Output(display_name="constraint", tooltip="Match within the same proxy part."),
                io.Image.Output(display_name="target_parts", tooltip="The target's proxy parts as colours."),
                io.Image.Output(display_name="reference_parts", tooltip="The reference's proxy parts, same colours."),
            ],
        )

    @classmethod
    def execute(cls, target_features, reference_features, parts, seed, target_mask=None, reference_mask=None,
                constraint=None) -> io.NodeOutput:
        return io.NodeOutput(*proxy_parts_node(target_features, reference_features, parts, seed, target_mask,
                                               reference_mask, constraint))


def label_constraint(target_labels, reference_labels, constraint=None, node=LABELS):
    """A constraint from two stacks of label masks: label i of the target matches only label i of the reference."""
    stacks = []
    for name, masks in (("target_labels", target_labels), ("reference_labels", reference_labels)):
        masks = masks[None] if masks.ndim == 2 else masks
        if masks.ndim != 3:
            raise ValueError(f"{node}: {name} must be one mask per label (a MASK batch), got shape "
                             f"{tuple(masks.shape)}.")
        stacks.append(masks.to("cpu", torch.float32))
    if stacks[0].shape[0] != stacks[1].shape[0]:
        raise ValueError(f"{node}: the target has {stacks[0].shape[0]} label masks and the reference "
                         f"{stacks[1].shape[0]}; give both images the same labels in the same order (an empty mask "
                         "for a label an image lacks).")
    target = Instances.from_masks(stacks[0]).labels
    reference = Instances.from_masks(stacks[1]).labels
    result = MatchConstraint(target, reference, stacks[0].shape[0], f"{stacks[0].shape[0]} labels")
    return result if constraint is None else constraint.and_(result)


class LabelConstraint(io.ComfyNode):
    """Given labels (segmentation classes) for both images: tokens match only tokens of the same label."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LabelConstraint"),
            display_name="Label Constraint (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=("Labels of both images (one mask per label, in the same order for both: say head, body, "
                         "wings): a target token matches only reference tokens of its own label. Pixels outside "
                         "every label match nothing."),
            inputs=[
                io.Mask.Input("target_labels", tooltip="One mask per label for the target (a MASK batch)."),
                io.Mask.Input("reference_labels", tooltip="One mask per label for the reference, same labels, same "
                              "order."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Another constraint to combine "
                                            "with: both must hold."),
            ],
            outputs=[io.Custom(CONSTRAINT).Output(display_name="constraint", tooltip="Match within the same label.")],
        )

    @classmethod
    def execute(cls, target_labels, reference_labels, constraint=None) -> io.NodeOutput:
        return io.NodeOutput(label_constraint(target_labels, reference_labels, constraint))


def _object_descriptors(features, masks, node, name):
    """(B, C) mean normalised feature of each image's object (its mask, or the whole image)."""
    maps = features.features.cpu()
    grid = tuple(maps.shape[-2:])
    labels = torch.zeros(maps.shape[0], *grid, dtype=torch.long)
    if masks is not None:
        with named(node):
            inside = mask_at_grid(masks, grid, name=name)
        if inside.shape[0] not in (1, maps.shape[0]):
            raise ValueError(f"{node}: {name} holds {inside.shape[0]} masks for {maps.shape[0]} images; give one "
                             "mask per image (or one for all).")
        labels = torch.where(inside.expand(maps.shape[0], *grid), labels, torch.full_like(labels, NONE))
    empty = [i + 1 for i in range(maps.shape[0]) if not bool((labels[i] >= 0).any())]
    if empty:
        raise ValueError(f"{node}: image(s) {empty} of {name.replace('_masks', '').replace('_mask', '')} have no "
                         f"token inside their mask at the features' {grid[0]}x{grid[1]} grid; draw larger masks.")
    return torch.cat([instance_descriptors(maps[i], labels[i], 1) for i in range(maps.shape[0])])


def rank_exemplars_node(target_features, candidate_features, candidates, target_instances=None, target_mask=None,
                        candidate_masks=None, instance=1, node=RANK):
    """(best candidate image, its index, the ranking as text, a preview with the scores)."""
    check_feature_models(target_features, candidate_features, node, "the candidates' features")
    if target_features.features.shape[0] != 1:
        raise ValueError(f"{node}: the target features hold {target_features.features.shape[0]} images; rank "
                         "exemplars for one target image.")
    count_candidates = candidate_features.features.shape[0]
    if candidates.shape[0] != count_candidates:
        raise ValueError(f"{node}: {candidates.shape[0]} candidate images but features of {count_candidates}; "
                         "extract the features of the same batch of candidates.")
    if target_instances is not None:
        labels = _instance_tokens(target_instances, target_features, "target", node)
        target = instance_descriptors(target_features.features[0].cpu(), labels, target_instances.count)
        names = [f"instance {i + 1}" for i in range(target_instances.count)]
    else:
        target = _object_descriptors(target_features, target_mask, node, "target_mask")
        names = ["the target"]
    if not 1 <= int(instance) <= len(names):
        raise ValueError(f"{node}: instance is {instance} but the target has {len(names)} instance(s); choose "
                         f"1-{len(names)}.")
    candidate = _object_descriptors(candidate_features, candidate_masks, node, "candidate_masks")
    order, scores = rank_exemplars(target, candidate)
    lines = [f"{name}: " + ", ".join(f"#{int(c) + 1} {float(v):.3f}" for c, v in zip(order[i], scores[i]))
             for i, name in enumerate(names)]
    chosen = int(instance) - 1
    best = int(order[chosen, 0])
    LOG.info("%s: %s", node, "; ".join(lines))
    preview = candidates.cpu().float().clone()
    scale = max(1, min(preview.shape[1:3]) // 40)
    for rank, (index, value) in enumerate(zip(order[chosen].tolist(), scores[chosen].tolist())):
        preview[index] = stamp_number(preview[index], rank + 1, 4 * scale, 8 * scale, scale)
        preview[index] = stamp_number(preview[index], max(0, round(value * 100)), 4 * scale, 24 * scale, scale)
    return candidates[best:best + 1], best, "\n".join(lines), preview


class RankExemplars(io.ComfyNode):
    """From a batch of candidate references, the most similar to the target (or to one of its instances)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("RankExemplars"),
            display_name="Rank Exemplars (Eye-for-an-eye)",
            category=SUBCATEGORY,
            description=("Ranks a batch of candidate reference images by how similar their object is to the target's "
                         "object, or to each target instance (mean of normalised features inside the masks, cosine). "
                         "Outputs the best candidate for the chosen instance, ready to be the reference."),
            inputs=[
                io.Custom(FEATURES).Input("target_features", tooltip="Features of the target (Extract UNet "
                                          "Features), one image."),
                io.Custom(FEATURES).Input("candidate_features", tooltip="Features of the candidate references (one "
                                          "Extract UNet Features on the batch of candidates), same model and level."),
                io.Image.Input("candidates", tooltip="The candidate reference images (a batch), in the order of "
                               "their features."),
                io.Custom(INSTANCES).Input("target_instances", optional=True, tooltip="Rank per target instance "
                                           "(Number Instances); without it the target's object is ranked for."),
                io.Mask.Input("target_mask", optional=True, tooltip="The target's object (without instances); "
                              "without it the whole image."),
                io.Mask.Input("candidate_masks", optional=True, tooltip="One mask per candidate (or one for all): "
                              "their objects; without it the whole images."),
                io.Int.Input("instance", default=1, min=1, max=64, tooltip="Which target instance the best candidate "
                             "is chosen for (1 without instances)."),
            ],
            outputs=[
                io.Image.Output(display_name="best", tooltip="The most similar candidate: connect it as the "
                                "reference."),
                io.Int.Output(display_name="best_index", tooltip="Its position in the batch, from 0."),
                io.String.Output(display_name="ranking", tooltip="Per target instance, the candidates from most to "
                                 "least similar (#position from 1, cosine)."),
                io.Image.Output(display_name="preview", tooltip="The candidates, each stamped with its rank and its "
                                "score x100 for the chosen instance."),
            ],
        )

    @classmethod
    def execute(cls, target_features, candidate_features, candidates, target_instances=None, target_mask=None,
                candidate_masks=None, instance=1) -> io.NodeOutput:
        return io.NodeOutput(*rank_exemplars_node(target_features, candidate_features, candidates, target_instances,
                                                  target_mask, candidate_masks, instance))


NODES = [NumberInstances, PairInstances, ProxyParts, LabelConstraint, RankExemplars]

__all__ = ["NODES", "number_instances", "pair_instances", "proxy_parts_node", "label_constraint", "NONE", "count"]
