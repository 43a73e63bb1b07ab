"""The one package that touches ComfyUI's internals.

Every import of ``comfy.*``, ``comfy_extras``, ``execution``, ``folder_paths``,
``latent_preview``, ``server``, ComfyUI's ``nodes`` and the ``comfy_api`` internals lives
here (the node schema's public ``comfy_api.<version>.io`` aside, which the node modules
use); tests/core/test_layering.py fails when any other module of the pack imports them.
A change in ComfyUI is mended here and nowhere else.

- ``bootstrap``: find a ComfyUI tree and import it, for scripts run outside ComfyUI
  (the headless demo, the training scripts, the tests). Imports nothing of ComfyUI itself.
- ``sampling``: the sigma grid, custom samplers, ComfyUI's CFG guider.
- ``progress``: progress bars, latent previews, Cancel, warnings under a node.
- ``memory``: where tensors that outlive a node are kept.
- ``unet_layout``: decoder blocks, self-attention layers, token grids, one block's output.
- ``patches``: the feature recorder, the transfer patch, the implicit baseline, FreeU.
- ``fingerprints``: which model and which image a result came from.
- ``checks``: models, prompts and latents the method can work with, checked early.
- ``sam_models``: SAM-HQ checkpoints in ComfyUI's model folders, loaded as ComfyUI loads models.
- ``demo_model``: the demo checkpoint's UNet, VAE and text encoder on ComfyUI's classes.
- ``headless``: a workflow run by ComfyUI's own executor, without the server.

The package itself imports nothing, so ``bootstrap`` can run before ComfyUI is on the path;
every other module imports ComfyUI at its top and is imported only inside ComfyUI (or
after ``bootstrap.import_comfyui``).
"""
