"""Training of the demo model: the data it sees, the scripts, the model card figures.

The scripts build the model from ComfyUI's own classes (``eye_demo.model``), so they need
a ComfyUI tree (``COMFYUI_PATH`` or ``~/comfy/ComfyUI``) like the pack's integration tests.
"""
