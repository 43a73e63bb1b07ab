"""The Eye-for-an-eye method in plain torch.

Nothing in this package imports ComfyUI: it receives tensors and small callables
(for example ``denoise(x, sigma) -> x0``) and returns tensors, so every part can be
tested with torch alone.
"""
