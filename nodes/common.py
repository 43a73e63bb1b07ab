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
