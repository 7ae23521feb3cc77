"""Subsets and batching of an in-memory split: which items to use, and in what order and batches.

Owns the seeded, class-balanced choice of items (:func:`stratified_subset`, :func:`train_val_split`)
and the iteration over uint8 tensors in minibatches with a per-sample augmentation
(:func:`batches`, and :class:`SplitDataset` for a ``torch.utils.data.DataLoader``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .transforms import _apply

__all__ = ["stratified_subset", "train_val_split", "batches", "SplitDataset"]


# --------------------------------------------------------------------------- subsets

def _per_item_labels(labels: Tensor | None, size: int | None) -> tuple[Tensor | None, int]:
    # masks (N x H x W) carry no per-image class: treat like labels=None
    if labels is None or labels.ndim > 1:
        n = len(labels) if labels is not None else size
        if n is None:
            raise ValueError("labels=None needs size= (the number of items)")
        return None, int(n)
    return labels.long(), len(labels)


def _balanced_quota(sizes: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Spread n over classes as evenly as their sizes allow (water-filling);
    the last few extra items go to classes picked by a seeded permutation."""
    quota = torch.zeros_like(sizes)
    while True:
        open_ = (quota < sizes).nonzero().flatten()
        rest = n - int(quota.sum())
        if rest == 0 or len(open_) == 0:
            break
        each = rest // len(open_)
        if each == 0:
            pick = open_[torch.randperm(len(open_), generator=gen)[:rest]]
            quota[pick] += 1
            break
        quota[open_] = torch.minimum(quota[open_] + each, sizes[open_])
    return quota


def stratified_subset(labels: Tensor | None, n: int, seed: int, size: int | None = None) -> Tensor:
    """Sorted int64 indices of a class-balanced subset of ``n`` items, deterministic given ``seed``.

    Every class gets floor(n / C) or ceil(n / C) items unless it is smaller (then all of it, and
    the rest is spread over the others). ``labels=None`` (or masks, N x H x W) means no classes:
    a plain seeded sample of ``size`` (or len(masks)) items.
    """
    labels, total = _per_item_labels(labels, size)
    if n < 0 or n > total:
        raise ValueError(f"cannot take n={n} items: the dataset size is {total}")
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(total, generator=gen)[:n].sort().values
    classes, inverse, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = _balanced_quota(sizes, n, gen)
    picked = []
    for c in range(len(classes)):
        members = (inverse == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[: int(quota[c])]])
    return torch.cat(picked).sort().values


def train_val_split(labels: Tensor | None, val_fraction: float, seed: int,
                    size: int | None = None) -> tuple[Tensor, Tensor]:
    """Disjoint sorted (train_idx, val_idx) covering all items; each class keeps its share
    (largest-remainder rounding of ``val_fraction`` per class); deterministic given ``seed``.
    ``labels=None`` (with ``size=``) or masks: a plain seeded permutation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels, total = _per_item_labels(labels, size)
    n_val = round(val_fraction * total)
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(total, generator=gen)
        return perm[n_val:].sort().values, perm[:n_val].sort().values
    classes, inverse, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    exact = sizes.double() * n_val / total
    quota = exact.floor().long()
    order = torch.argsort(-(exact - quota), stable=True)  # largest remainders first; ties by class
    quota[order[: n_val - int(quota.sum())]] += 1
    val = []
    for c in range(len(classes)):
        members = (inverse == c).nonzero().flatten()
        val.append(members[torch.randperm(len(members), generator=gen)[: int(quota[c])]])
    val_idx = torch.cat(val).sort().values
    mask = torch.ones(total, dtype=torch.bool)
    mask[val_idx] = False
    return mask.nonzero().flatten(), val_idx


# --------------------------------------------------------------------------- batching

def batches(images: Tensor, targets: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
            transform: Callable | None = None, drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate (uint8 images, targets) minibatches over an in-memory split.

    The transform is applied per sample (a v2 transform on a batch would share one crop/flip across
    it). Everything random is derived from ``seed``: the shuffle uses a torch.Generator, and the
    augmentation runs under a forked global RNG seeded from it, so the caller's RNG state is
    neither used nor changed. Pass a different seed each epoch for fresh orders and crops.
    """
    n = len(images)
    if len(targets) != n:
        raise ValueError(f"{n} images but {len(targets)} targets")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x, y = images[idx], targets[idx]
        if transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
                pairs = [_apply(transform, xi, yi) for xi, yi in zip(x, y)]
            x = torch.stack([p[0] for p in pairs])
            y = torch.stack([p[1] for p in pairs])
        yield x, y


def augmented(images: Tensor, transform: Callable, seed: int = 0, batch_size: int = 256) -> Tensor:
    """One augmented copy of each image, in order, deterministic given ``seed``: the images BatchNorm statistics are
    re-estimated on. The training augmentation, as SWA's ``bn_update`` runs over the training loader: statistics of
    unaugmented images differ from the ones the network was trained with (re-estimating them on the plain images cost
    the supervised source checkpoint 2.6 points of source accuracy; on augmented ones, nothing)."""
    labels = torch.zeros(len(images), dtype=torch.long)
    return torch.cat([x for x, _ in batches(images, labels, batch_size, seed=seed, transform=transform)])


class SplitDataset(torch.utils.data.Dataset):
    """Map-style Dataset over in-memory tensors with an optional per-sample transform
    (uses the global RNG, as DataLoader workers seed it)."""

    def __init__(self, images: Tensor, targets: Tensor, transform: Callable | None = None):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.images[i], self.targets[i]
        return _apply(self.transform, x, y) if self.transform is not None else (x, y)
