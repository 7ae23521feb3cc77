"""Tests of repro.data: the loaders on the real data (when present), subsets, errors, packing, augmentation."""
from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from repro import data
from repro.data import cache, formats
from repro.data import (DATASETS, as_rgb, batches, load, pack_npz, resize_segmentation, stratified_subset,
                        train_transform, train_val_split)

# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_dir() -> Path:
    """The shared data directory (REPRO_DATA_DIR, else <project>/data); skip when absent."""
    d = data.data_dir()
    if not (d / "cifar10").is_dir():
        pytest.skip(f"data directory {d} absent (set REPRO_DATA_DIR to the shared data to run these tests)")
    return d


REAL = [  # name, split, count, per-class count
    ("cifar10", "train", 50_000, 5_000), ("cifar10", "test", 10_000, 1_000),
    ("tinyimagenet32", "train", 60_000, 300), ("tinyimagenet32", "val", 10_000, 50),
    ("fashion-mnist", "train", 60_000, 6_000), ("fashion-mnist", "test", 10_000, 1_000),
]


def test_registry():
    assert {n: list(d.splits) for n, d in DATASETS.items()} == {
        "cifar10": ["train", "test"], "tinyimagenet32": ["train", "val"], "camvid": ["train", "val", "test"],
        "fashion-mnist": ["train", "test"], "cifar10.1": ["test"]}
    assert DATASETS["camvid"].ignore_index == 11 and DATASETS["cifar10.1"].splits["test"] == 2000


@pytest.mark.parametrize("name,split,count,per_class", REAL)
def test_classification_loaders(real_dir, name, split, count, per_class):
    s = load(name, split)
    info = DATASETS[name]
    assert (s.name, s.split, s.ignore_index) == (name, split, None)
    assert s.images.dtype == torch.uint8 and s.targets.dtype == torch.int64
    assert tuple(s.images.shape) == (count, *info.image_shape) == (info.splits[split], *info.image_shape)
    assert s.targets.shape == (count,)
    assert len(s.classes) == info.num_classes
    assert int(s.targets.min()) == 0 and int(s.targets.max()) == info.num_classes - 1
    assert torch.bincount(s.targets, minlength=info.num_classes).tolist() == [per_class] * info.num_classes
    assert s.images.float().std() > 10  # not blank
    assert load(name, split) is s  # in-process cache


def test_class_names(real_dir):
    assert load("cifar10", "test").classes == data.CIFAR10_CLASSES
    t = load("tinyimagenet32", "val")
    assert t.classes[0] == "Egyptian cat" and t.class_ids[0] == "n02124075"
    assert load("fashion-mnist", "test").classes[9] == "Ankle boot"


@pytest.mark.parametrize("split,count", [("train", 367), ("val", 101), ("test", 233)])
def test_camvid_loader(real_dir, split, count):
    s = load("camvid", split)
    assert s.images.dtype == torch.uint8 and s.images.shape == (count, 3, 180, 240)
    assert s.targets.dtype == torch.int64 and s.targets.shape == (count, 180, 240)
    assert s.ignore_index == 11 and len(s.classes) == 11
    assert torch.unique(s.targets).tolist() == list(range(12))  # 0..10 classes + 11 void, all present


@pytest.mark.parametrize("name,split,i", [("cifar10", "test", 1234), ("tinyimagenet32", "val", 4321),
                                          ("camvid", "val", 7)])
def test_decode_matches_pillow(real_dir, name, split, i):
    z = np.load(real_dir / name / f"{split}.npz")
    o = z["offsets"]
    ref = np.asarray(PIL.Image.open(io.BytesIO(z["jpeg"][o[i]:o[i + 1]].tobytes())).convert("RGB"))
    s = load(name, split)
    assert np.array_equal(s.images[i].permute(1, 2, 0).numpy(), ref)
    if name == "camvid":
        assert np.array_equal(s.targets[i].numpy(), z["masks"][i])
    else:
        assert int(s.targets[i]) == int(z["labels"][i])


def test_fashion_mnist_matches_recipe(real_dir):
    x = np.frombuffer(gzip.open(real_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").read(),
                      np.uint8, offset=16).reshape(-1, 28, 28)
    assert np.array_equal(load("fashion-mnist", "test").images[:, 0].numpy(), x)


def test_real_cache_file_written(real_dir):
    load("cifar10", "test")
    src = real_dir / "cifar10" / "test.npz"
    cached = cache._cache_path("cifar10", "test", src)
    assert cached.is_file() and np.load(cached, mmap_mode="r").shape == (10_000, 3, 32, 32)


# ----------------------------------------------------------------------------- synthetic data


@pytest.fixture
def tmp_dirs(tmp_path, monkeypatch):
    """A private data dir and cache dir, and an empty in-process cache."""
    d, c = tmp_path / "data", tmp_path / "cache"
    d.mkdir()
    monkeypatch.setenv("REPRO_DATA_DIR", str(d))
    monkeypatch.setenv("REPRO_CACHE_DIR", str(c))
    saved = dict(formats._MEMORY)
    data.clear_memory_cache()
    yield d, c
    formats._MEMORY.clear()
    formats._MEMORY.update(saved)


def _images(n, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "c"))
    assert data.data_dir() == tmp_path / "d" and data.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("REPRO_DATA_DIR")
    monkeypatch.delenv("REPRO_CACHE_DIR")
    assert data.data_dir() == Path(data.__file__).resolve().parents[2] / "data"   # the project root's data/
    assert data.cache_dir() == Path.home() / ".cache" / "repro"


def test_pack_npz_png_round_trip(tmp_dirs):
    d, c = tmp_dirs
    x, y = _images(6), np.arange(6) % 3
    pack_npz(d / "cifar10" / "train.npz", x, y, ["a", "b", "c"], [f"img{i}" for i in range(6)], fmt="PNG")
    s = load("cifar10", "train")
    assert s.images.dtype == torch.uint8 and s.images.shape == (6, 3, 32, 32)
    assert np.array_equal(s.images.permute(0, 2, 3, 1).numpy(), x)
    assert s.targets.tolist() == y.tolist() and s.classes == ["a", "b", "c"]
    assert len(list(c.glob("cifar10-train-*.npy"))) == 1


def test_disk_cache_used_and_invalidated(tmp_dirs, monkeypatch):
    d, c = tmp_dirs
    path = d / "cifar10" / "test.npz"
    pack_npz(path, _images(4, seed=1), np.arange(4), ["a"] * 4, list("abcd"))
    first = load("cifar10", "test").images.clone()
    data.clear_memory_cache()

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite the cache")
    monkeypatch.setattr(PIL.Image, "open", no_decode)
    assert torch.equal(load("cifar10", "test").images, first)  # served from the .npy cache
    monkeypatch.undo()
    monkeypatch.setenv("REPRO_DATA_DIR", str(d))
    monkeypatch.setenv("REPRO_CACHE_DIR", str(c))

    x2 = _images(4, seed=2)  # a changed source must invalidate the cache
    pack_npz(path, x2, np.arange(4), ["a"] * 4, list("abcd"))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert np.array_equal(load("cifar10", "test").images.permute(0, 2, 3, 1).numpy(), x2)
    assert len(list(c.glob("cifar10-test-*.npy"))) == 1  # the stale file was removed


def test_pack_npz_jpeg_and_masks(tmp_dirs):
    d, _ = tmp_dirs
    x = _images(3, 12, 16)
    m = np.random.default_rng(0).integers(0, 12, (3, 12, 16)).astype(np.uint8)
    pack_npz(d / "camvid" / "val.npz", x, m, data.CAMVID_CLASSES, list("abc"), fmt="JPEG", quality=95,
             subsampling=0, ignore_index=np.int64(11))
    s = load("camvid", "val")
    assert s.images.shape == (3, 3, 12, 16) and s.ignore_index == 11
    assert torch.equal(s.targets, torch.from_numpy(m).long())
    assert (s.images.permute(0, 2, 3, 1).int() - torch.from_numpy(x).int()).abs().float().mean() < 20
    with pytest.raises(ValueError, match=r"match neither"):
        pack_npz(d / "x.npz", x, m[:, :5], [], list("abc"))


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'.*cifar10, tinyimagenet32, camvid"):
        load("cifar11", "train")
    with pytest.raises(ValueError, match=r"unknown split 'val' of dataset 'cifar10'.*train, test"):
        load("cifar10", "val")
    with pytest.raises(ValueError, match=r"unknown dataset"):
        train_transform("mnist", 32)


def test_missing_data_dir(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("REPRO_DATA_DIR", str(missing))
    with pytest.raises(FileNotFoundError) as e:
        load("cifar10", "train")
    msg = str(e.value)
    assert str(missing / "cifar10" / "train.npz") in msg and "does not exist" in msg
    assert "REPRO_DATA_DIR" in msg and "python -m repro.data download cifar10" in msg
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "fashion-mnist" / "t10k-images"))):
        load("fashion-mnist", "test")


def test_missing_file(tmp_dirs):
    d, _ = tmp_dirs
    (d / "camvid").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"file not found: {d / 'camvid' / 'test.npz'}")
                       + r".*REPRO_DATA_DIR.*repro\.data\.download\('camvid'\)"):
        load("camvid", "test")


def test_corrupt_entry(tmp_dirs):
    d, _ = tmp_dirs
    path = d / "tinyimagenet32" / "val.npz"
    pack_npz(path, _images(4), np.arange(4), list("abcd"), [f"val/{i}.png" for i in range(4)])
    z = dict(np.load(path))
    o = z["offsets"]
    z["jpeg"][o[2]:o[3]] = 7  # garbage instead of the PNG of entry 2
    with open(path, "wb") as f:
        np.savez(f, **z)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": image entry 2 \(val/2\.png\) could not be decoded"):
        load("tinyimagenet32", "val")


def test_camvid_mask_shape_mismatch(tmp_dirs):
    d, _ = tmp_dirs
    path = d / "camvid" / "train.npz"
    pack_npz(path, _images(2, 8, 10), np.zeros((2, 8, 10), np.uint8), data.CAMVID_CLASSES, list("ab"))
    z = dict(np.load(path))
    z["masks"] = np.zeros((2, 9, 10), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **z)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": masks have shape \(2, 9, 10\) but the images "
                       r"are \(2, 3, 8, 10\)"):
        load("camvid", "train")


def test_cifar101_loader(tmp_dirs):
    d, _ = tmp_dirs
    (d / "cifar10.1").mkdir()
    x, y = _images(5), np.array([0, 3, 9, 1, 1])
    np.save(d / "cifar10.1" / "cifar10.1_v6_data.npy", x)
    np.save(d / "cifar10.1" / "cifar10.1_v6_labels.npy", y)
    s = load("cifar10.1", "test")
    assert s.images.dtype == torch.uint8 and s.images.shape == (5, 3, 32, 32)
    assert np.array_equal(s.images.permute(0, 2, 3, 1).numpy(), x)
    assert s.targets.dtype == torch.int64 and s.targets.tolist() == y.tolist()
    assert s.classes == data.CIFAR10_CLASSES


def test_fashion_mnist_bad_magic(tmp_dirs):
    d, _ = tmp_dirs
    (d / "fashion-mnist").mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(d / "fashion-mnist" / f"t10k-{kind}-ubyte.gz", "wb") as f:
            f.write((1234).to_bytes(4, "big") + bytes(20))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: IDX magic number 1234, expected 2051"):
        load("fashion-mnist", "test")


# ----------------------------------------------------------------------------- subsets


def _labels():
    # 10 classes of 100, except class 0 with 3 and class 1 with 40 items; shuffled order
    y = torch.cat([torch.full((k,), c) for c, k in enumerate([3, 40] + [100] * 8)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


def test_stratified_subset_balanced():
    y = torch.arange(1000) % 10
    idx = stratified_subset(y, 100, seed=0)
    assert torch.bincount(y[idx]).tolist() == [10] * 10
    idx = stratified_subset(y, 105, seed=0)
    counts = torch.bincount(y[idx])
    assert counts.sum() == 105 and set(counts.tolist()) == {10, 11}
    assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values) and len(idx.unique()) == 105


def test_stratified_subset_small_classes():
    y = _labels()
    counts = torch.bincount(y[stratified_subset(y, 400, seed=3)], minlength=10)
    assert counts[0] == 3 and counts[1] == 40 and counts.sum() == 400
    assert counts[2:].max() - counts[2:].min() <= 1  # the rest spread evenly
    assert len(stratified_subset(y, len(y), seed=0)) == len(y)


def test_stratified_subset_seeds_and_errors():
    y = _labels()
    a, b, c = (stratified_subset(y, 50, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"n=844 .*dataset size is 843"):
        stratified_subset(y, 844, seed=0)
    assert len(stratified_subset(None, 7, seed=0, size=20).unique()) == 7
    masks = torch.zeros(20, 4, 4, dtype=torch.long)  # segmentation: no per-image class
    assert torch.equal(stratified_subset(masks, 7, seed=0), stratified_subset(None, 7, seed=0, size=20))


def test_train_val_split():
    y = _labels()
    tr, va = train_val_split(y, 0.2, seed=0)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(len(y)))
    assert len(va) == round(0.2 * len(y))
    per_class = torch.bincount(y[va], minlength=10)
    assert torch.all((per_class - 0.2 * torch.bincount(y)).abs() <= 1)
    tr2, va2 = train_val_split(y, 0.2, seed=0)
    assert torch.equal(va, va2) and not torch.equal(va, train_val_split(y, 0.2, seed=1)[1])
    tr, va = train_val_split(None, 0.25, seed=0, size=12)
    assert len(va) == 3 and sorted(tr.tolist() + va.tolist()) == list(range(12))
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(y, 1.0, seed=0)


# ----------------------------------------------------------------------------- augmentation


def test_train_transform_per_sample():
    x = torch.from_numpy(_images(64)).permute(0, 3, 1, 2).contiguous()
    y = torch.arange(64)
    tf = train_transform("cifar10", 32)
    (out, _), = batches(x, y, 64, shuffle=False, seed=0, transform=tf)  # one batch
    assert out.dtype == torch.uint8 and out.shape == x.shape
    changed = (out != x).flatten(1).any(1)
    assert changed.sum() > 32  # most samples are cropped or flipped
    # per-sample parameters: the zero padding shows up in different places within the batch
    borders = {(bool((o[:, 0] == 0).all()), bool((o[:, -1] == 0).all()),
                bool((o[:, :, 0] == 0).all()), bool((o[:, :, -1] == 0).all())) for o in out}
    assert len(borders) > 2
    (again, _), = batches(x, y, 64, shuffle=False, seed=0, transform=tf)
    assert torch.equal(out, again)  # deterministic given the seed


def test_batches_shuffle():
    x, y = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10)
    ys = [b for _, b in batches(x, y, 4, shuffle=True, seed=5)]
    assert [len(b) for b in ys] == [4, 4, 2] and sorted(torch.cat(ys).tolist()) == list(range(10))
    assert torch.cat(ys).tolist() != list(range(10))
    assert torch.equal(torch.cat(ys), torch.cat([b for _, b in batches(x, y, 4, shuffle=True, seed=5)]))
    assert [len(b) for _, b in batches(x, y, 4, drop_last=True)] == [4, 4]


def test_segmentation_transform_is_joint():
    masks = torch.randint(0, 11, (4, 20, 30))
    images = masks.to(torch.uint8).unsqueeze(1).repeat(1, 3, 1, 1)  # image encodes its own mask
    tf = train_transform("camvid", (16, 24))
    for seed in range(3):
        for xb, mb in batches(images, masks, 4, seed=seed, transform=tf):
            assert xb.shape == (4, 3, 16, 24) and mb.shape == (4, 16, 24) and mb.dtype == torch.int64
            assert torch.equal(xb[:, 0].long(), mb)
    xs, ms = resize_segmentation(images, masks, (10, 15))
    assert xs.shape == (4, 3, 10, 15) and torch.equal(ms, masks[:, ::2, ::2])


def test_as_rgb():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    out = as_rgb(x, 32)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out[:, 1, 2:30, 2:30], x[:, 0]) and out[:, :, :2].sum() == 0
    assert torch.equal(out[:, 0], out[:, 2])
    assert as_rgb(x[0], 16).shape == (3, 16, 16)


def test_augmented_copies_are_deterministic_and_augmented():
    """The images BatchNorm statistics are re-estimated on: one crop + flip of each image, in order, fixed by seed."""
    from repro import data

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    tf = data.train_transform("cifar10", 32)
    a, b = data.augmented(images, tf, seed=3), data.augmented(images, tf, seed=3)
    assert a.shape == images.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, data.augmented(images, tf, seed=4))
    changed = (a != images).flatten(1).any(1).float().mean().item()
    assert changed > 0.9                                   # almost every image is cropped or flipped
    assert torch.equal(data.augmented(images, None), images)   # no transform: the images themselves
