"""The on-disk cache of decoded images, so each packed ``.npz`` is decoded with Pillow only once.

Owns :func:`cache_dir` and the cache files in it: the uint8 N x C x H x W array decoded from a packed
``.npz`` (see :mod:`repro.data.formats`) is saved atomically as ``.npy``, named after the dataset, split,
source path, size, mtime and :data:`_CACHE_VERSION`, so a rewritten source or a new decode recipe gets a
new file (and stale ones are removed); every later load of that split reads the ``.npy``.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm import tqdm

from ..files import atomic_file

__all__ = ["cache_dir"]

_CACHE_VERSION = 1  # bump when the decode recipe changes, so old cache files are ignored


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$REPRO_CACHE_DIR`` if set, else ``~/.cache/repro``."""
    env = os.environ.get("REPRO_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "repro").absolute()


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
