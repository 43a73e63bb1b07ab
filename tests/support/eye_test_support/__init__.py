"""Helpers shared by the pack's tests, benchmarks and the test-only custom node.

Nothing here is part of the pack: it builds tiny random-weight models through
ComfyUI's own classes and finds the ComfyUI tree the integration tests run against.
"""
