"""Match Correspondence: dense semantic matching of two feature maps, with previews."""

from __future__ import annotations

import dataclasses

from comfy_api.v0_0_2 import io

from ..eye_core.matching import match
from ..eye_core.fingerprint import model_of
from ..eye_core.visualize import correspondence_colours, warp_image
from ..comfy_adapter.memory import storage_device
from .common import CATEGORY, CONSTRAINT, CORRESPONDENCE, FEATURES, check_same_model, named, node_id



def _image_size(features, image):
    if image is not None:
        return tuple(image.shape[1:3])
    return features.image_size


def check_feature_models(target_features, reference_features, node: str,
                         reference_what: str = "the reference features") -> None:
    """Two FeatureMaps that are to be compared: the same model (fingerprints) and the same decoder level."""
    check_same_model(
        model_of(target_features), model_of(reference_features), "the target features", reference_what, node,
        "Features of different models cannot be matched, whatever their decoder level: connect the same MODEL to both "
        "Extract UNet Features nodes.",
        "The features are comparable but not alike; connect the same MODEL to both Extract UNet Features nodes unless "
        "you mean it.")
    if target_features.layer != reference_features.layer:
        raise ValueError(f"{node}: the target features come from {target_features.layer} but {reference_what} from "
                         f"{reference_features.layer}. Set the same decoder_level on both Extract UNet Features nodes.")


def match_correspondence(target_features, reference_features, target_mask=None, reference_mask=None,
                         reference_image=None, target_image=None, constraint=None, node="Match Correspondence"):
    """Match Correspondence's work: (correspondence, rearranged reference, colour map); errors name ``node``."""
    check_feature_models(target_features, reference_features, node)
    with named(node):
        labels = {} if constraint is None else constraint.matching_arguments(target_features.features.shape[-2:],
                                                                            reference_features.features.shape[-2:])
        correspondence = match(target_features.features, reference_features.features, target_mask, reference_mask,
                               **labels)
        if constraint is not None and not bool(correspondence.matched.any()):
            raise ValueError(f"the constraint ({constraint.what}) leaves no target token a reference token to match "
                             f"at the features' {correspondence.target_grid[0]}x{correspondence.target_grid[1]} grid; "
                             "check the instances and pairs in their previews.")
        correspondence = dataclasses.replace(correspondence, target_origin=getattr(target_features, "origin", None),
                                             reference_origin=getattr(reference_features, "origin", None))
        size = _image_size(target_features, target_image)
        colours = correspondence_colours(correspondence, size)
        if reference_image is not None:
            rearranged = warp_image(correspondence, reference_image, size, target_image)
        else:
            rearranged = colours
    device = storage_device()
    return correspondence.to(device), rearranged.to(device), colours.to(device)


class MatchCorrespondence(io.ComfyNode):
    """Cosine nearest-neighbour matching of target tokens to reference tokens, mask-aware."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("MatchCorrespondence"),
            display_name="Match Correspondence (Eye-for-an-eye)",
            category=CATEGORY,
            description=(
                "For every target token, the reference token with the most similar features (cosine). Reference "
                "tokens outside the reference mask are never chosen; target tokens outside the target mask stay "
                "unmatched (they keep their own appearance). Previews: the reference rearranged into the target's "
                "layout, and a colour code of where each target pixel matched."
            ),
            inputs=[
                io.Custom(FEATURES).Input("target_features", tooltip="Features of the target (structure) image "
                                          "from Extract UNet Features."),
                io.Custom(FEATURES).Input("reference_features", tooltip="Features of the reference (appearance) "
                                          "image, from the same model and decoder level."),
                io.Mask.Input("target_mask", optional=True, tooltip="Where the target's object is (SAM-HQ "
                              "Segment). Outside it nothing is matched, so the background is kept. Any size."),
                io.Mask.Input("reference_mask", optional=True, tooltip="Where the reference's object is. Only "
                              "tokens inside it can be matched. Any size."),
                io.Image.Input("reference_image", optional=True, tooltip="The reference image, for the "
                               "rearranged-reference preview. Without it that preview shows the colour code."),
                io.Image.Input("target_image", optional=True, tooltip="The target image: sets the preview size and "
                               "shows (darkened) where nothing was matched."),
                io.Custom(CONSTRAINT).Input("constraint", optional=True, tooltip="Several objects: which reference "
                                            "tokens each target token may match (Pair Instances, Proxy Parts, "
                                            "Label Constraint, Point Pairs)."),
            ],
            outputs=[
                io.Custom(CORRESPONDENCE).Output(display_name="correspondence", tooltip="For every target token "
                                                 "its reference token, a confidence (cosine, mutual), both grids and "
                                                 "the masks; resampled to each attention grid by the transfer patch."),
                io.Image.Output(display_name="rearranged_reference", tooltip="The reference image rearranged into "
                                "the target's layout by the correspondence."),
                io.Image.Output(display_name="correspondence_map", tooltip="Each target pixel coloured by the "
                                "reference position it matched (red: left to right, green: top to bottom); dark "
                                "grey: unmatched."),
            ],
        )

    @classmethod
    def execute(cls, target_features, reference_features, target_mask=None, reference_mask=None,
                reference_image=None, target_image=None, constraint=None) -> io.NodeOutput:
        return io.NodeOutput(*match_correspondence(target_features, reference_features, target_mask, reference_mask,
                                                   reference_image, target_image, constraint))


NODES = [MatchCorrespondence]
