"""Names shared by every node of the pack: the category, node id prefix and custom types."""

import contextlib

CATEGORY = "Eye-for-an-eye"
NODE_PREFIX = "EyeForAnEye_"

TRAJECTORY = "EYE_TRAJECTORY"
FEATURES = "EYE_FEATURES"
CORRESPONDENCE = "EYE_CORRESPONDENCE"
INSTANCES = "EYE_INSTANCES"
CONSTRAINT = "EYE_MATCH_CONSTRAINT"


def node_id(name: str) -> str:
    """The stable, prefixed node id saved in workflows (never rename one: saved graphs use it)."""
    return NODE_PREFIX + name


@contextlib.contextmanager
def named(node: str):
    """Errors of eye_core (which knows no node) raised inside come out starting with ``node``'s name."""
    try:
        yield
    except ValueError as error:
        if str(error).startswith(f"{node}:"):
            raise
        raise ValueError(f"{node}: {error}") from None


def check_choices(node_class, node: str, **values):
    """Refuse a combo value that is not among the input's options, listing them.

    ComfyUI's server does not check every combo of a V3 node against its options (an API
    prompt with ``matching="fixed"`` reaches the node), so each node checks its own before
    any work, and the message names the node, the input and every option.
    """
    from comfy_api.v0_0_2 import io

    for entry in node_class.define_schema().inputs:
        if not isinstance(entry, io.Combo.Input) or entry.id not in values or values[entry.id] is None:
            continue
        value = values[entry.id]
        if value not in entry.options:
            listed = ", ".join(repr(o) for o in entry.options)
            raise ValueError(f"{node}: {entry.id} is {value!r}, which is not one of its options: {listed}. Pick one "
                             "in the node (an API prompt must give one of these exact strings).")


def require_finite(tensor, what: str, node: str):
    """Refuse NaN or infinite values at the first node that sees them (they would end in a black image)."""
    import torch

    if tensor is None or not torch.is_tensor(tensor) or not tensor.is_floating_point():
        return tensor
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        nans = int(torch.isnan(tensor).sum())
        infinite = int((~finite).sum()) - nans
        raise ValueError(f"{node}: the {what} holds {nans} NaN and {infinite} infinite values (of "
                         f"{tensor.numel()}); every result computed from it would be NaN (a black image). Fix the "
                         "node that produced it (a VAE in fp16 can overflow: try --fp32-vae or a tiled decode) "
                         "or load the image again.")
    return tensor


def step_counts_problem(node_class, node: str, steps, skip_steps) -> str | None:
    """Why ``steps`` / ``skip_steps`` cannot run (None when they can), for the prompt's validation.

    A node that declares these two inputs in ``validate_inputs`` takes over ComfyUI's own
    min/max check of them, so the schema's ranges are checked here as well. Either value is
    None when it comes from a link: only the run itself can check it then.
    """
    if steps is None or skip_steps is None:
        return None
    ranges = {entry.id: entry for entry in node_class.define_schema().inputs if entry.id in ("steps", "skip_steps")}
    for name, value in (("steps", steps), ("skip_steps", skip_steps)):
        low, high = getattr(ranges[name], "min", None), getattr(ranges[name], "max", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{node}: {name} is {value}, outside its range {low} to {high}."
    if skip_steps >= steps:
        return (f"{node}: skip_steps ({skip_steps}) must be smaller than steps ({steps}); lower skip_steps or raise "
                "steps.")
    return None


def check_same_model(first, second, first_what: str, second_what: str, node: str, fix: str,
                     patches_note: str) -> None:
    """The pack's one policy for two things made with different models (fingerprint.ModelPrint each).

    Another model family or other weights: an error, ``fix`` saying what to connect (the
    result would be wrong without a word). The same weights with other patches: a warning
    with ``patches_note``, since editing with another patch on purpose is legitimate.
    Nothing when either print is unknown or they agree.
    """
    import logging

    from ..eye_core.fingerprint import FAMILY, PATCHES, WEIGHTS, describe_difference

    kind = None if first is None else first.difference(second)
    if kind is None:
        return
    text = describe_difference(kind, first, second, first_what, second_what)
    if kind in (FAMILY, WEIGHTS):
        raise ValueError(f"{node}: {text}. {fix}")
    if kind == PATCHES:
        logging.getLogger("eye_for_an_eye").warning("%s: %s. %s", node, text, patches_note)
