"""What the demo model is trained on: scenes drawn from the synthetic world, with captions.

Each training example is one seed: ``training_example(seed)`` draws a scene (one creature
on 88 % of them, two on the rest), renders it at 128 x 128 and captions it with its
species ("a photo of a bird", "a photo of a bird and a fish", ...). Datasets are
rendered once, in parallel, and cached as uint8 arrays outside the repository.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..render import render
from ..scene import random_scene

IMAGE_SIZE = 128
TWO_CREATURE_SHARE = 0.12
TWO_CREATURE_SCALE = (0.42, 0.55)
CACHE = Path(os.environ.get("EYE_DEMO_CACHE", Path.home() / ".cache" / "eye_for_an_eye" / "demo"))


def caption(species: list[str]) -> str:
    """"a photo of a bird", "a photo of two fish", "a photo of a bird and a fish"."""
    if len(species) == 1:
        return f"a photo of a {species[0]}"
    if len(set(species)) == 1:
        plural = {"bird": "birds", "fish": "fish"}[species[0]]
        return f"a photo of two {plural}"
    return f"a photo of a {species[0]} and a {species[1]}"


def training_scene(seed: int):
    """The scene of training example ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 7])
    if rng.random() < TWO_CREATURE_SHARE:
        return random_scene(seed, size=(IMAGE_SIZE, IMAGE_SIZE), creatures=2, scale_range=TWO_CREATURE_SCALE)
    return random_scene(seed, size=(IMAGE_SIZE, IMAGE_SIZE))


def training_example(seed: int) -> tuple[np.ndarray, str]:
    """(image uint8 (H, W, 3), caption) of training example ``seed``."""
    scene = training_scene(seed)
    image = render(scene).image
    return (np.clip(image * 255 + 0.5, 0, 255)).astype(np.uint8), caption([c.species for c in scene.creatures])


def _render_chunk(seeds):
    images, captions = zip(*(training_example(int(s)) for s in seeds))
    return np.stack(images), list(captions)


def render_dataset(first_seed: int, count: int, workers: int = 2, cache: bool = True):
    """(images uint8 (N, H, W, 3), captions) for seeds first_seed .. first_seed + count - 1, cached."""
    path = CACHE / f"renders-{first_seed}-{count}.npz"
    if cache and path.is_file():
        data = np.load(path, allow_pickle=False)
        return data["images"], list(data["captions"])
    seeds = np.arange(first_seed, first_seed + count)
    chunks = np.array_split(seeds, max(1, count // 256))
    images, captions = [], []
    with ProcessPoolExecutor(workers) as pool:
        for chunk_images, chunk_captions in pool.map(_render_chunk, chunks):
            images.append(chunk_images)
            captions.extend(chunk_captions)
    images = np.concatenate(images)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images, captions=np.array(captions))
    return images, captions
