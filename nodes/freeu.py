"""FreeU (authors' variant): the backbone the official preset runs, as a model patch."""

from __future__ import annotations

import logging

from comfy_api.v0_0_2 import io

from ..eye_core.freeu import AUTHORS_B1, AUTHORS_B2, AUTHORS_S1, AUTHORS_S2
from ..comfy_adapter.checks import require_unet
from ..comfy_adapter.patches import has_output_block_patch, with_authors_freeu
from .common import CATEGORY, node_id

NODE = "FreeU (authors' variant)"
LOG = logging.getLogger("eye_for_an_eye")


def authors_freeu(model, b1=AUTHORS_B1, b2=AUTHORS_B2, s1=AUTHORS_S1, s2=AUTHORS_S2, node=NODE):
    """A clone of ``model`` with the authors' FreeU; warns when ComfyUI's FreeU is already on it."""
    require_unet(model, node)
    if has_output_block_patch(model):
        LOG.warning("%s: the model already carries an output-block patch (ComfyUI's FreeU, or the authors' FreeU "
                    "twice?); both will act. Use one FreeU: remove the other, or on Eye-for-an-eye Appearance "
                    "Transfer set freeu to 'none (the model as connected)'.", node)
    return with_authors_freeu(model, b1, b2, s1, s2)


class AuthorsFreeU(io.ComfyNode):
    """MODEL -> clone with FreeU applied where the authors' UNet applies it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("AuthorsFreeU"),
            display_name=NODE,
            category=CATEGORY,
            description=(
                "FreeU as the authors' code runs it, part of the official preset: at the entry of each decoder "
                "up-block the first half of the main path's channels is scaled (b1 at the 4x-width levels, b2 at the "
                "2x-width level) and its lowest frequencies damped (s1, s2). ComfyUI's FreeU node is another "
                "operation (it scales every decoder block and filters the skip connections). Put it before Invert "
                "Latent and Apply Appearance Transfer, on the same model for both."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A UNet SD model (SD1.x, SD2.x, SDXL); the authors use SD1.5."),
                io.Float.Input("b1", default=AUTHORS_B1, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Backbone scale at the up-blocks 4x as wide as the model's first level (SD1.5: up-blocks 0-2, "
                    "1280 channels). Authors: 1.2.")),
                io.Float.Input("b2", default=AUTHORS_B2, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Backbone scale at the up-block 2x as wide (SD1.5: up-block 3, 640 channels). Authors: 1.4.")),
                io.Float.Input("s1", default=AUTHORS_S1, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Scale of the lowest frequencies of the main path where b1 applies. Authors: 0.9.")),
                io.Float.Input("s2", default=AUTHORS_S2, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Scale of the lowest frequencies of the main path where b2 applies. Authors: 0.2.")),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="A patched clone; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, b1, b2, s1, s2) -> io.NodeOutput:
        return io.NodeOutput(authors_freeu(model, b1, b2, s1, s2))


NODES = [AuthorsFreeU]
