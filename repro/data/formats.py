"""The datasets of the study as stored on disk: the registry, the readers of each stored format, the packer.

Owns the dataset registry (:data:`DATASETS` of :class:`DatasetInfo`, the class-name lists), the in-memory
:class:`Split`, where the data lives (:func:`data_dir`) and how each stored format is read into uint8
N x C x H x W tensors by :func:`load` (repeated loads in a process are served from memory):

* ``cifar10/{train,test}.npz``, ``tinyimagenet32/{train,val}.npz``, ``camvid/{train,val,test}.npz``:
  encoded images concatenated in ``jpeg`` (uint8; JPEG or PNG files), ``offsets`` (int64, N+1),
  ``labels`` (int64, N) or, for CamVid, ``masks`` (uint8 N x H x W, 11 = ignore) and
  ``ignore_index``; plus ``classes`` and ``names`` (and ``class_names`` for Tiny-ImageNet).
  Written by :func:`pack_npz` (or :func:`pack_encoded`, from encoded files); the decoded images are cached on disk
  by :mod:`repro.data.cache`.
* ``fashion-mnist/*-idx?-ubyte.gz``: the original IDX files.
* ``cifar10.1/cifar10.1_v6_{data,labels}.npy``: the official CIFAR-10.1 v6 files.
"""
from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch import Tensor

from ..errors import DataMissing
from ..files import atomic_file
from .cache import _decoded_images

__all__ = [
    "DATASETS", "DatasetInfo", "Split", "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "CAMVID_CLASSES",
    "CAMVID_IGNORE", "data_dir", "load", "available", "clear_memory_cache", "pack_npz", "pack_encoded",
]


# --------------------------------------------------------------------------- settings

def data_dir() -> Path:
    """Where the datasets live: ``$REPRO_DATA_DIR`` if set, else ``<project root>/data``."""
    env = os.environ.get("REPRO_DATA_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"
    return path.absolute()


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
                    description="CIFAR-10 as a JPEG q75 re-encoding (the bytes of the study's source, see download)"),
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


def _missing(path: Path, name: str, root: Path) -> DataMissing:
    where = (f"data directory {root} does not exist" if not root.is_dir()
             else f"file not found: {path}")
    return DataMissing(
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


# --------------------------------------------------------------------------- packing

def pack_npz(path: str | Path, images: np.ndarray, targets: np.ndarray, classes: Sequence[str],
             names: Sequence[str], fmt: str = "PNG", quality: int | None = None,
             subsampling: int | None = None, **extra) -> Path:
    """Encode images (uint8 N x H x W x 3) and write them in the packed format read by :func:`load`.

    ``targets`` of shape (N,) are stored as ``labels`` (int64), of shape (N, H, W) as ``masks``
    (uint8, file compressed). ``fmt`` is a Pillow format ("PNG" lossless, "JPEG" with ``quality``
    and ``subsampling``); ``extra`` arrays (e.g. ``class_names``, ``ignore_index``) are stored too.
    """
    images, targets = np.asarray(images), np.asarray(targets)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 N x H x W x 3, got {images.dtype} {images.shape}")
    if not (targets.shape == (len(images),) or targets.shape == images.shape[:3]):
        raise ValueError(f"targets of shape {targets.shape} match neither labels ({len(images)},) "
                         f"nor masks {images.shape[:3]}")
    opts = {k: v for k, v in (("quality", quality), ("subsampling", subsampling)) if v is not None}
    encoded = []
    for img in images:
        b = io.BytesIO()
        PIL.Image.fromarray(img, "RGB").save(b, format=fmt, **opts)
        encoded.append(b.getvalue())
    return pack_encoded(path, encoded, targets, classes, names, **extra)


def pack_encoded(path: str | Path, encoded: Sequence[bytes], targets: np.ndarray, classes: Sequence[str],
                 names: Sequence[str], **extra) -> Path:
    """Write images already encoded (JPEG or PNG file bytes, kept as they are) in the packed format of :func:`load`.

    The arrays are written in the order of the study's files, since a zip's entry order is part of its bytes: with
    labels ``jpeg, offsets, labels, classes, <extra>, names`` (``np.savez``); with masks ``jpeg, offsets, masks,
    names, classes, <extra>`` (``np.savez_compressed``). So the same inputs give the study's files byte for byte.
    """
    targets, n = np.asarray(targets), len(encoded)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    chunks = [np.frombuffer(b, np.uint8) for b in encoded]
    head = {"jpeg": np.concatenate(chunks) if chunks else np.zeros(0, np.uint8),
            "offsets": np.cumsum([0] + [len(c) for c in chunks], dtype=np.int64)}
    tail = {k: np.asarray(v) for k, v in extra.items()}
    classes_, names_ = np.asarray(list(classes)), np.asarray(list(names))
    if targets.shape == (n,):
        arrays = {**head, "labels": targets.astype(np.int64), "classes": classes_, **tail, "names": names_}
    elif targets.ndim == 3 and len(targets) == n:
        arrays = {**head, "masks": targets.astype(np.uint8), "names": names_, "classes": classes_, **tail}
    else:
        raise ValueError(f"targets of shape {targets.shape} are neither labels ({n},) nor masks ({n}, H, W)")
    path = Path(path)
    with atomic_file(path) as f:  # a file object, so numpy does not append ".npz"
        (np.savez_compressed if "masks" in arrays else np.savez)(f, **arrays)
    return path
