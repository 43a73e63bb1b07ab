"""Eye-for-an-eye for ComfyUI: appearance transfer with semantic correspondence.

ComfyUI loads this folder as a custom node package and calls ``comfy_entrypoint``.
Nothing heavy is imported here: the node modules (and torch) are imported only when
ComfyUI asks for the node list, so importing the package costs nothing.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (ComfyUI's V3 node registration)."""
    from .nodes import EyeForAnEyeExtension

    return EyeForAnEyeExtension()
