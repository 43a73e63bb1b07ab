"""Paired training data: the same creatures, palette and background in two poses.

Cross-image attention training (``attention_hooks.py``) needs, for every example, a
partner image whose parts wear the same colours somewhere else, and (for feature
injection) the ground-truth token correspondence between the two. ``training_pair(seed)``
draws a training scene (``data.training_scene``) and re-poses each creature inside its
own strip; both are rendered, and the oracle correspondence (same creature, same part,
nearest canonical (u, v)) is computed both ways at each decoder attention grid.

Datasets are rendered once, in parallel, and cached as arrays outside the repository
under a name that carries the world's version, the seeds and the count.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np

from ..render import render
from ..scene import random_pose
from .data import CACHE, caption, training_scene

PAIR_SEEDS = (300_000, 8192)
GRIDS = ((16, 16), (8, 8))  # the demo UNet's two finest decoder attention grids at 128 px
VERSION = 1  # bump when the pair recipe changes: the cache name carries it


def partner_scene(scene, seed: int):
    """``scene`` with every creature re-posed inside its own strip (same species, appearance, background)."""
    rng = np.random.default_rng([seed, 31])
    strip = scene.width / len(scene.creatures)
    creatures = []
    for index, creature in enumerate(scene.creatures):
        region = (index * strip, 0, (index + 1) * strip, scene.height)
        scale_range = (0.42, 0.55) if len(scene.creatures) > 1 else (0.6, 1.0)
        pose = random_pose(rng, creature.species, scene.height, scene.width, region=region, scale_range=scale_range)
        creatures.append(replace(creature, pose=pose))
    return replace(scene, creatures=tuple(creatures))


def instance_part_labels(rendered) -> np.ndarray:
    """Labels that tell creatures apart: instance * 32 + part (0 stays the background)."""
    return np.where(rendered.instances > 0, rendered.instances.astype(np.int64) * 32 + rendered.labels, 0)


def oracle_index(source, partner, grid) -> np.ndarray:
    """For each token of ``source`` (row-major over ``grid``) its partner token, or -1 (background, unmatched)."""
    from ..oracle import oracle_correspondence

    correspondence = oracle_correspondence(instance_part_labels(source), source.uv, instance_part_labels(partner),
                                           partner.uv, grid)
    return correspondence.index[0].numpy().astype(np.int16)


def training_pair(seed: int) -> dict:
    """Images (2, H, W, 3) uint8, caption, and oracle indices both ways at each grid of GRIDS."""
    scene = training_scene(seed)
    partner = partner_scene(scene, seed)
    renders = [render(scene), render(partner)]
    images = np.stack([np.clip(r.image * 255 + 0.5, 0, 255).astype(np.uint8) for r in renders])
    indices = {}
    for grid in GRIDS:
        key = f"{grid[0]}x{grid[1]}"
        indices[key] = np.stack([oracle_index(renders[0], renders[1], grid), oracle_index(renders[1], renders[0], grid)])
    return {"images": images, "caption": caption([c.species for c in scene.creatures]), "indices": indices}


def _render_chunk(seeds):
    return [training_pair(int(s)) for s in seeds]


def render_pairs(first_seed: int, count: int, workers: int = 2) -> dict:
    """{"images": (N, 2, H, W, 3) uint8, "captions": [N], "index_<h>x<w>": (N, 2, h*w) int16}, cached."""
    path = CACHE / f"pairs-v{VERSION}-{first_seed}-{count}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return {k: (list(data[k]) if k == "captions" else data[k]) for k in data.files}
    seeds = np.arange(first_seed, first_seed + count)
    chunks = np.array_split(seeds, max(1, count // 128))
    pairs = []
    with ProcessPoolExecutor(workers) as pool:
        for chunk in pool.map(_render_chunk, chunks):
            pairs.extend(chunk)
    result = {"images": np.stack([p["images"] for p in pairs]), "captions": [p["caption"] for p in pairs]}
    for grid in GRIDS:
        key = f"{grid[0]}x{grid[1]}"
        result[f"index_{key}"] = np.stack([p["indices"][key] for p in pairs])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=result["images"], captions=np.array(result["captions"]),
             **{k: v for k, v in result.items() if k.startswith("index_")})
    return result
