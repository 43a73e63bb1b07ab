"""Point pairs that steer the dense matching: near each target point, match near its reference point.

A user (or the point finder, eye_core/points.py) gives pairs of points: target point k lies
where reference point k lies. Matching then treats the target tokens within ``radius`` of
target point k specially, in one of two ways:

* ``hard``: they may only match reference tokens within ``radius`` of reference point k
  (every other pair is excluded as a masked-out token is);
* ``soft``: every pair gains ``strength`` x w_k(i) x g_k(j) of similarity, Gaussians of
  std ``radius`` around the two points, so matches are pulled toward the reference point
  without being forbidden elsewhere.

A target token near several target points belongs to the nearest one (hard) or shares the
pull (soft, weights summing to at most 1). The token holding a point always counts as
within the radius, so a point has an effect at any token grid. Both forms are bias
channels of the matcher (matching.nearest_neighbours): ``target`` (B, N_t, P) against
``reference`` (B, N_r, P), their product summed over P is added to the cosine.

Points are (x, y) fractions of the image, in tensors (1 or B, P, 2): one list shared by a
batch, or one per image. Plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .matching import _EXCLUDED  # the matcher's exclusion value: a pair carrying it can never win

HARD = "hard"
SOFT = "soft"
MODES = (HARD, SOFT)


def token_centres(grid, device=None) -> torch.Tensor:
    """(N, 2) centres (x, y) of a (h, w) token grid in fractions of the image, row-major."""
    h, w = (int(v) for v in grid)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1).reshape(-1, 2)


def _distances(points: torch.Tensor, grid) -> torch.Tensor:
    """(B, N, P) distances from every token centre to every point, in units of the longer image side."""
    h, w = (int(v) for v in grid)
    scale = torch.tensor([w / max(h, w), h / max(h, w)], device=points.device)
    centres = token_centres(grid, points.device) * scale
    return torch.cdist(centres[None].expand(points.shape[0], -1, -1), points.float() * scale)


def _holding(points: torch.Tensor, grid) -> torch.Tensor:
    """(B, N, P) bool: the token that holds each point."""
    h, w = (int(v) for v in grid)
    col = (points[..., 0] * w).floor().clamp(0, w - 1).long()
    row = (points[..., 1] * h).floor().clamp(0, h - 1).long()
    flat = row * w + col  # (B, P)
    held = torch.zeros(points.shape[0], h * w, points.shape[1], dtype=torch.bool, device=points.device)
    held.scatter_(1, flat[:, None, :], True)
    return held


def regions(points: torch.Tensor, grid, radius: float, distances: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, P) bool: tokens within ``radius`` of each point, and always the token holding it.

    ``distances``: the points' :func:`_distances` at ``grid`` when the caller has them already.
    """
    distances = _distances(points, grid) if distances is None else distances
    return (distances <= radius) | _holding(points, grid)


@dataclass(frozen=True)
class PointConstraint:
    """Pairs of points (target k lies where reference k lies) and how they steer matching.

    ``target`` / ``reference``: (1 or B, P, 2) float (x, y) fractions of each image;
    ``radius``: a fraction of the longer image side; ``mode``: ``hard`` or ``soft``;
    ``strength``: the soft pull's largest added similarity (0..1).
    """

    target: torch.Tensor
    reference: torch.Tensor
    radius: float = 0.1
    mode: str = HARD
    strength: float = 1.0

    def __post_init__(self):
        for name in ("target", "reference"):
            points = getattr(self, name)
            if points.ndim != 3 or points.shape[-1] != 2 or not points.is_floating_point():
                raise ValueError(f"a point constraint's {name} points must be a (B, P, 2) float tensor, got "
                                 f"{tuple(points.shape)} {points.dtype}")
        if self.target.shape[1] != self.reference.shape[1]:
            raise ValueError(f"{self.target.shape[1]} target points but {self.reference.shape[1]} reference points: "
                             "give every target point its reference point")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 < self.radius <= 1.0:
            raise ValueError(f"radius must be a fraction of the image side in (0, 1], got {self.radius}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in 0..1, got {self.strength}")

    @property
    def count(self) -> int:
        return int(self.target.shape[1])

    def target_regions(self, grid, device=None) -> torch.Tensor:
        """(B, N_t, P) bool: the target tokens each point steers (hard: each token to its nearest point only)."""
        points = self.target.to(device)
        distances = _distances(points, grid)
        inside = regions(points, grid, self.radius, distances)
        distance = torch.where(inside, distances, torch.full_like(distances, 1e9))
        nearest = torch.nn.functional.one_hot(distance.argmin(dim=-1), self.count).bool()
        return inside & nearest

    def channels(self, target_grid, reference_grid, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(target (B, N_t, P), reference (B_r, N_r, P)) bias channels for the matcher at these grids."""
        if self.mode == HARD:
            steered = self.target_regions(target_grid, device).float()
            allowed = regions(self.reference.to(device), reference_grid, self.radius).float()
            return _EXCLUDED * steered, 1.0 - allowed
        sigma = max(self.radius, 1e-6)
        target = torch.exp(-_distances(self.target.to(device), target_grid) ** 2 / (2 * sigma ** 2))
        target = target / target.sum(dim=-1, keepdim=True).clamp(min=1.0)
        reference = torch.exp(-_distances(self.reference.to(device), reference_grid) ** 2 / (2 * sigma ** 2))
        return self.strength * target, reference

    def keeps(self, index: torch.Tensor, target_grid, reference_grid) -> torch.Tensor:
        """(B, N_t) bool: which matches ``index`` (B, N_t; -1 unmatched) a hard constraint allows (soft: all)."""
        if self.mode != HARD:
            return torch.ones_like(index, dtype=torch.bool)
        steered = self.target_regions(target_grid, index.device)  # (B_t, N_t, P)
        allowed = regions(self.reference.to(index.device), reference_grid, self.radius)  # (B_r, N_r, P)
        rows = max(index.shape[0], steered.shape[0], allowed.shape[0])
        steered = steered.expand(rows, -1, -1)
        allowed = allowed.expand(rows, -1, -1)
        taken = torch.gather(allowed, 1, index.clamp(min=0).expand(rows, -1)[..., None].expand(-1, -1, self.count))
        return ~(steered & ~taken).any(dim=-1)

    def describe(self) -> str:
        return f"{self.count} point pairs ({self.mode}, radius {self.radius:g})"


def combined_channels(constraints, target_grid, reference_grid, device=None):
    """Every point constraint's channels side by side: (target (B, N_t, K), reference (B_r, N_r, K)), or None."""
    if not constraints:
        return None
    parts = [c.channels(target_grid, reference_grid, device) for c in constraints]
    rows_t = max(t.shape[0] for t, _ in parts)
    rows_r = max(r.shape[0] for _, r in parts)
    return (torch.cat([t.expand(rows_t, -1, -1) for t, _ in parts], dim=-1),
            torch.cat([r.expand(rows_r, -1, -1) for _, r in parts], dim=-1))
