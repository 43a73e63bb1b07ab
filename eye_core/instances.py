"""Several objects at once: numbered instances, their pairing, and the label maps matching obeys.

Multi-object transfer reduces to one rule the matcher enforces (matching.match's
``target_labels`` / ``reference_labels``): a target token may only match reference tokens
carrying the label it is allowed. Everything here builds those label maps:

* **Instances**: a stack of instance masks -> a label map (0, 1, ... ; -1 = no instance).
  Numbering for users starts at 1 ("instance 1" is label 0).
* **Pairing**: which reference instance each target instance takes its appearance from,
  given as text (``"1>2, 2>1"``) or found automatically from the instances' mean
  descriptors by an optimal assignment (a reference instance may serve several targets
  when there are more targets than references). Unpaired target instances stay as they are.
* **Proxy parts**: both images' features clustered jointly into K parts (spherical k-means
  inside the masks, seeded): the same cluster in both images is the same proxy part, so
  "match within matched parts" is "match within the same label".
* **Label constraints**: given label maps (say, segmentation classes) for both images.
* Constraints combine: instance pairing and proxy parts together allow a target token only
  the reference tokens of its paired instance *and* its part (:func:`combine_labels`).

Plain torch; no ComfyUI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NONE = -1  # label of a token that matches nothing / may not be matched


# ----------------------------------------------------------------------------- instances


def instance_labels(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(H, W) long map of instance numbers 0..n-1 (-1 outside every mask) from masks (n, H, W).

    Where instances overlap, the one with the higher mask value wins, then the later one
    (a mask listed after another is drawn on top, as a user stacking boxes would expect).
    """
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise ValueError(f"instance masks must be (n, H, W) with n >= 1, got shape {tuple(masks.shape)}")
    values = masks.float()
    # later instances win ties: add a tiny, increasing bonus before the argmax
    bonus = torch.arange(values.shape[0], dtype=values.dtype, device=values.device).view(-1, 1, 1) * 1e-6
    best = (values + bonus).argmax(dim=0)
    inside = values.amax(dim=0) > threshold
    return torch.where(inside, best, torch.full_like(best, NONE))


def resize_labels(labels: torch.Tensor, grid) -> torch.Tensor:
    """A label map (H, W) or (B, H, W) at the token ``grid``: each token takes the label at its centre."""
    squeeze = labels.ndim == 2
    batch = labels[None] if squeeze else labels
    if batch.ndim != 3:
        raise ValueError(f"a label map must be (H, W) or (B, H, W), got shape {tuple(labels.shape)}")
    h, w = (int(v) for v in grid)
    if tuple(batch.shape[-2:]) == (h, w):
        out = batch.long()
    else:
        out = F.interpolate(batch[:, None].double(), size=(h, w), mode="nearest-exact")[:, 0].round().long()
    return out[0] if squeeze else out


def count(labels: torch.Tensor) -> int:
    """Number of labels used (highest label + 1; 0 when nothing is labelled)."""
    return int(labels.max().item()) + 1 if labels.numel() else 0


@dataclass(frozen=True)
class Instances:
    """The numbered objects of one image (type ``EYE_INSTANCES``): a label map at image size and their count."""

    labels: torch.Tensor  # (H, W) long, 0..count-1, -1 outside every instance
    count: int

    @staticmethod
    def from_masks(masks: torch.Tensor, size=None) -> "Instances":
        """Instances of masks (n, H, W) (resized bilinearly to ``size`` (H, W) first, if given)."""
        if masks.ndim == 2:
            masks = masks[None]
        if size is not None and tuple(masks.shape[-2:]) != tuple(size):
            masks = F.interpolate(masks[:, None].float(), size=tuple(size), mode="bilinear",
                                  align_corners=False)[:, 0]
        labels = instance_labels(masks)
        return Instances(labels, int(masks.shape[0]))

    def empty(self) -> list[int]:
        """Instance numbers (from 1) with no pixel."""
        present = set(torch.unique(self.labels).tolist())
        return [i + 1 for i in range(self.count) if i not in present]


# ----------------------------------------------------------------------------- pairing


class PairingError(ValueError):
    """Pairing text a user typed that cannot be read; the message says what and how to fix it."""

    __module__ = "eye_for_an_eye"  # ComfyUI shows module.Class: not the install path of the pack


_PAIR = re.compile(r"^\s*(\d+)\s*(?:>|->|:)\s*(\d+)\s*$")


def parse_pairs(text: str, n_target: int, n_reference: int) -> list[int]:
    """Pairs typed as ``"1>2, 2>1, 3>1"`` (target > reference, numbered from 1) -> per target instance
    the reference instance (0-based) or -1 when the text leaves it unpaired.

    Separators: commas, semicolons or new lines; ``->`` and ``:`` work as ``>``.
    """
    pairs = [NONE] * n_target
    items = [item for item in re.split(r"[,;\n]", text or "") if item.strip()]
    if not items:
        raise PairingError("the pairs are empty: write one pair per target instance, e.g. '1>1, 2>2' "
                           "(target instance > reference instance, numbered from 1 as in the previews).")
    for item in items:
        found = _PAIR.match(item)
        if not found:
            raise PairingError(f"cannot read the pair '{item.strip()}': write target > reference with instance "
                               "numbers from 1, e.g. '1>2', and separate pairs with commas.")
        target, reference = int(found.group(1)), int(found.group(2))
        if not 1 <= target <= n_target:
            raise PairingError(f"the pair '{item.strip()}' names target instance {target}, but the target has "
                               f"{n_target} instance(s) (1-{n_target}); see the target's instance preview.")
        if not 1 <= reference <= n_reference:
            raise PairingError(f"the pair '{item.strip()}' names reference instance {reference}, but the reference "
                               f"has {n_reference} instance(s) (1-{n_reference}); see the reference's instance preview.")
        if pairs[target - 1] != NONE:
            raise PairingError(f"target instance {target} is paired twice ('{target}>{pairs[target - 1] + 1}' and "
                               f"'{item.strip()}'); give each target instance one reference instance.")
        pairs[target - 1] = reference - 1
    return pairs


def format_pairs(pairs) -> str:
    """The text form of a pairing (numbered from 1), unpaired instances left out."""
    return ", ".join(f"{t + 1}>{r + 1}" for t, r in enumerate(pairs) if r != NONE)


def instance_descriptors(features: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """(n, C) mean of the L2-normalised features (C, h, w) over each instance's tokens (labels at (h, w)).

    An instance with no token at this grid gets a zero descriptor (similar to nothing).
    """
    c = features.shape[0]
    tokens = F.normalize(features.detach().reshape(c, -1).t().double(), dim=1)  # (N, C)
    flat = labels.reshape(-1)
    if flat.numel() != tokens.shape[0]:
        raise ValueError(f"labels {tuple(labels.shape)} do not cover the {tuple(features.shape[-2:])} feature grid")
    inside = flat >= 0
    one_hot = F.one_hot(flat.clamp(min=0), n).double() * inside[:, None]  # (N, n)
    sums = one_hot.t() @ tokens
    counts = one_hot.sum(0)[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums)).float()


def similarity(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (n_t, n_r) of descriptors; zero descriptors score -1 (never preferred)."""
    target, reference = target.detach(), reference.detach()
    t, r = F.normalize(target.double(), dim=1), F.normalize(reference.double(), dim=1)
    scores = t @ r.t()
    empty = (target.abs().sum(1) == 0)[:, None] | (reference.abs().sum(1) == 0)[None, :]
    return torch.where(empty, torch.full_like(scores, -1.0), scores).float()


def assignment(cost: torch.Tensor) -> list[int]:
    """Minimum-cost assignment of rows to distinct columns (rows <= columns): column per row.

    scipy's linear_sum_assignment (exact; scipy is a requirement of the pack, and of ComfyUI),
    with the pack's checks in front so a bad cost says what is wrong instead of scipy's generic
    error.
    """
    from scipy.optimize import linear_sum_assignment

    n, m = cost.shape
    if n > m:
        raise ValueError(f"assignment needs rows <= columns, got {n} x {m}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("assignment needs finite costs; the similarities hold NaN or infinity (features with NaN?)")
    rows, columns = linear_sum_assignment(cost.detach().double().cpu().numpy())
    by_row = dict(zip(rows.tolist(), columns.tolist()))
    return [by_row[i] for i in range(n)]


def pair_automatically(scores: torch.Tensor) -> list[int]:
    """Per target instance, its reference instance: the assignment with the highest total similarity.

    ``scores`` (n_t, n_r). With more target instances than reference instances each
    reference is offered several times, so one reference can serve several targets while
    every reference is still used as evenly as the similarities allow.
    """
    n_t, n_r = scores.shape
    if n_t == 0:
        return []
    if n_r == 0:
        raise ValueError("the reference has no instance to pair with")
    copies = -(-n_t // n_r)
    offered = scores.repeat(1, copies)  # column k is reference k % n_r
    return [column % n_r for column in assignment(-offered)]


def allowed_labels(target_instances: torch.Tensor, pairs) -> torch.Tensor:
    """The reference instance each target token may match: ``pairs`` looked up per token (-1 stays -1)."""
    table = torch.tensor(list(pairs) + [NONE], dtype=torch.long, device=target_instances.device)
    return table[torch.where(target_instances >= 0, target_instances, torch.full_like(target_instances, len(pairs)))]


def combine_labels(first: torch.Tensor, second: torch.Tensor, second_count: int) -> torch.Tensor:
    """One label per (first, second) pair of labels (-1 where either is -1): both constraints at once."""
    both = (first >= 0) & (second >= 0)
    return torch.where(both, first * int(second_count) + second, torch.full_like(first, NONE))


@dataclass(frozen=True)
class MatchConstraint:
    """Which reference tokens each target token may match, as two label maps at image (or any) resolution.

    ``target`` (H_t, W_t) long: the label each target pixel may match (-1: it matches nothing
    and keeps its own features); ``reference`` (H_r, W_r) long: each reference pixel's label
    (-1: never matched). ``count``: labels in use. ``what`` says in words what it enforces
    (shown in previews and logs), e.g. "instances 1>2, 2>1". ``points``: point pairs
    (eye_core.point_constraint.PointConstraint) that steer matching near each point as well;
    a constraint of points alone has one label everywhere (``labelled`` False).
    """

    target: torch.Tensor
    reference: torch.Tensor
    count: int
    what: str
    points: tuple = ()
    labelled: bool = True

    def __post_init__(self):
        for name in ("target", "reference"):
            labels = getattr(self, name)
            if labels.ndim != 2 or labels.dtype != torch.long:
                raise ValueError(f"a constraint's {name} labels must be a (H, W) long tensor, got "
                                 f"{tuple(labels.shape)} {labels.dtype}")

    def at(self, target_grid, reference_grid, device=None):
        """(target labels (1, h_t, w_t), reference labels (1, h_r, w_r), count) at these token grids."""
        t = resize_labels(self.target, target_grid)[None]
        r = resize_labels(self.reference, reference_grid)[None]
        if device is not None:
            t, r = t.to(device), r.to(device)
        return t, r, self.count

    def matching_arguments(self, target_grid, reference_grid, device=None) -> dict:
        """The keyword arguments of matching.match that enforce this constraint at these token grids."""
        from .point_constraint import combined_channels

        t, r, count = self.at(target_grid, reference_grid, device)
        arguments = {"target_labels": t, "reference_labels": r, "label_count": count}
        bias = combined_channels(self.points, target_grid, reference_grid, device)
        if bias is not None:
            arguments["target_bias"], arguments["reference_bias"] = bias
        return arguments

    def keeps(self, index: torch.Tensor, target_grid, reference_grid) -> torch.Tensor:
        """(B, N_t) bool: which matches ``index`` (B, N_t at ``target_grid``) the constraint allows."""
        allowed, labels, _ = self.at(target_grid, reference_grid, index.device)
        allowed, labels = allowed.flatten(1), labels.flatten(1)
        rows = max(index.shape[0], allowed.shape[0], labels.shape[0])
        index = index.expand(rows, -1)
        taken = torch.gather(labels.expand(rows, -1), 1, index.clamp(min=0))
        keep = (allowed.expand(rows, -1) >= 0) & (taken == allowed.expand(rows, -1))
        for points in self.points:
            keep = keep & points.keeps(index, target_grid, reference_grid)
        return keep

    def and_(self, other: "MatchConstraint") -> "MatchConstraint":
        """Both constraints at once (a token pair must satisfy each); label maps at the finer of the two sizes."""
        target = _finer(self.target, other.target)
        reference = _finer(self.reference, other.reference)
        first_t, second_t = (resize_labels(m, target.shape) for m in (self.target, other.target))
        first_r, second_r = (resize_labels(m, reference.shape) for m in (self.reference, other.reference))
        return MatchConstraint(combine_labels(first_t, second_t, other.count),
                               combine_labels(first_r, second_r, other.count),
                               self.count * other.count, f"{self.what}; {other.what}", self.points + other.points,
                               self.labelled or other.labelled)


def _finer(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return first if first.numel() >= second.numel() else second


def points_only(points) -> MatchConstraint:
    """A constraint of point pairs alone (eye_core.point_constraint.PointConstraint): one label everywhere."""
    everywhere = torch.zeros(1, 1, dtype=torch.long)
    return MatchConstraint(everywhere, everywhere.clone(), 1, points.describe(), (points,), labelled=False)


def pairing_constraint(target_instances: torch.Tensor, reference_instances: torch.Tensor, pairs) -> MatchConstraint:
    """The constraint of an instance pairing: target instance i matches only reference instance pairs[i]."""
    n_reference = max(count(reference_instances), 1)
    return MatchConstraint(allowed_labels(target_instances, pairs), reference_instances.long(), n_reference,
                           f"instances {format_pairs(pairs) or 'none paired'}")


# ----------------------------------------------------------------------------- proxy parts


def proxy_parts(target: torch.Tensor, reference: torch.Tensor, k: int, target_mask=None, reference_mask=None,
                seed: int = 0, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images' tokens clustered jointly into ``k`` proxy parts: label maps (h_t, w_t), (h_r, w_r).

    ``target`` / ``reference``: feature maps (C, h, w) of one layer (DIFT features, say);
    masks: bool (h, w) at the same grids or None (every token). Spherical k-means on the
    L2-normalised features (cosine, as the matcher), k-means++ seeding from ``seed``: the
    same inputs and seed always give the same parts. Tokens outside the masks get -1.
    """
    if k < 1:
        raise ValueError(f"the number of proxy parts must be at least 1, got {k}")
    maps = []
    pools = []
    for features, mask in ((target, target_mask), (reference, reference_mask)):
        c, h, w = features.shape
        tokens = F.normalize(features.detach().reshape(c, -1).t().double(), dim=1)
        inside = torch.ones(h * w, dtype=torch.bool) if mask is None else mask.reshape(-1).bool().cpu()
        maps.append((h, w, inside))
        pools.append(tokens.cpu()[inside])
    data = torch.cat(pools)
    if data.shape[0] < k:
        raise ValueError(f"{k} proxy parts need at least {k} tokens inside the masks; there are {data.shape[0]}. "
                         "Use fewer parts or larger masks.")
    generator = torch.Generator().manual_seed(int(seed))
    centres = data[torch.randint(data.shape[0], (1,), generator=generator)]
    while centres.shape[0] < k:  # k-means++: far points (in cosine) are likelier picks
        distance = (1.0 - (data @ centres.t()).amax(1)).clamp(min=0)
        if float(distance.sum()) <= 0:
            pick = torch.randint(data.shape[0], (1,), generator=generator)
        else:
            pick = torch.multinomial(distance, 1, generator=generator)
        centres = torch.cat([centres, data[pick]])
    assigned = (data @ centres.t()).argmax(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, assigned, data)
        empty = sums.norm(dim=1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=1))
        updated = (data @ centres.t()).argmax(1)
        if torch.equal(updated, assigned):
            break
        assigned = updated
    labels = []
    start = 0
    for h, w, inside in maps:
        size = int(inside.sum())
        full = torch.full((h * w,), NONE, dtype=torch.long)
        full[inside] = assigned[start:start + size]
        start += size
        labels.append(full.view(h, w).to(target.device))
    return labels[0], labels[1]


# ----------------------------------------------------------------------------- exemplars


def rank_exemplars(target: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target instance, the candidates from most to least similar: (order (n_t, M), scores (n_t, M)).

    ``target`` (n_t, C) instance descriptors; ``candidates`` (M, C), one descriptor per
    candidate reference (its object's mean feature). Ties keep the candidates' order.
    """
    scores = similarity(target, candidates)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order, torch.gather(scores, 1, order)
