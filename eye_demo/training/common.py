"""Pieces both training scripts share: threads, progress, the loss log, checkpoints, timing."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

import torch

from .data import CACHE

RUNS = CACHE / "runs"


def setup_threads(threads: int | None) -> int:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cosine_lr(step: int, total: int, peak: float, warmup: int = 200, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class LossLog:
    """Appends one JSON object a line (step, losses, wall and CPU seconds) to ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record):
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class Progress:
    """A terminal progress bar (tqdm when present) with the running loss."""

    def __init__(self, total: int, initial: int, description: str):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
            self.bar = None
        self.total, self.done, self.description = total, initial, description
        self.started = time.time()

    def update(self, n: int = 1, **values):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        elif self.done % 50 == 0:
            print(f"{self.description} {self.done}/{self.total} " + " ".join(f"{k}={v:.4g}" for k, v in values.items()),
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def save_state(path: Path, **state):
    """Atomically write a training state (model, optimiser, step, times) with torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False) if Path(path).is_file() else None
