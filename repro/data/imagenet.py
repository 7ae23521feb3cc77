"""ImageNet-1k itself, the ``paper`` profile's source data: the folder dataset and its transforms.

:func:`imagenet_split` reads ImageNet-1k from its official archives through torchvision as
(uint8 image, label) pairs, with the standard transforms (:func:`imagenet_transform`) or SimCLR's two views
(:class:`SimCLRViews`). SWAG is fitted on it around the released ImageNet weights of
:mod:`repro.models.pretrained`; the pipeline is :func:`repro.experiments.pretrain.prepare`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

NUM_CLASSES = 1000


def imagenet_transform(train: bool, image_size: int = 224):
    """Standard ImageNet transforms producing uint8 tensors (models normalise themselves).

    train: RandomResizedCrop(image_size) + horizontal flip; eval: resize to image_size * 256/224, centre crop.
    """
    from torchvision.transforms import v2
    if train:
        ops = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose([*ops, v2.ToImage(), v2.ToDtype(torch.uint8), v2.ToPureTensor()])


class SimCLRViews:
    """SimCLR's two views of ONE image (PIL or uint8 tensor) at ``size`` px: a uint8 2 x 3 x size x size tensor.

    Each view is :func:`repro.experiments.ssl.simclr_augment`'s pipeline at ``size`` px (the same function the 32 px
    CPU profiles use: random resized crop with scale 0.2-1, flip, colour jitter 0.4 with p = 0.8, grayscale
    with p = 0.2), followed, when ``blur``, by SimCLR's ImageNet Gaussian blur (kernel 10 % of the side,
    odd; sigma uniform in [0.1, 2.0]; p = 0.5), which comes last in SimCLR's ImageNet pipeline too. The
    rest is kept from the CPU pipeline and differs from SimCLR's ImageNet recipe: crop scale from 0.2
    (SimCLR: 0.08) and CIFAR-strength colour jitter without hue (SimCLR on ImageNet: 0.8/0.8/0.8/0.2).

    A class (not a closure) so DataLoader workers can pickle it under any start method.
    """

    def __init__(self, size: int = 224, blur: bool = True):
        self.size, self.blur = size, blur
        self._built = None

    def _build(self):
        from torchvision.transforms import v2
        from ..experiments.ssl import simclr_augment
        to_uint8 = v2.Compose([v2.ToImage(), v2.ToDtype(torch.uint8), v2.ToPureTensor()])
        kernel = int(0.1 * self.size) // 2 * 2 + 1
        blur = v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5) if self.blur else None
        return to_uint8, simclr_augment(self.size), blur

    def __call__(self, image) -> Tensor:
        if self._built is None:
            self._built = self._build()
        to_uint8, two_views, blur = self._built
        views = two_views(to_uint8(image))
        return torch.stack([blur(v) for v in views]) if blur is not None else views

    def __getstate__(self) -> dict:
        return {"size": self.size, "blur": self.blur, "_built": None}

    def __repr__(self) -> str:
        return f"SimCLRViews(size={self.size}, blur={self.blur})"


def imagenet_split(root: str | os.PathLike, split: str, image_size: int = 224, train_transform: bool | None = None,
                   transform=None):
    """ImageNet-1k ``split`` ('train' or 'val') via torchvision.datasets.ImageNet, as (uint8 image, label).

    ``root`` must hold the official ``ILSVRC2012_devkit_t12.tar.gz`` and ``ILSVRC2012_img_{split}.tar``
    (or the ``meta.bin`` and ``{split}/`` folder torchvision extracts from them on first use).
    The train split gets the RandomResizedCrop transform unless ``train_transform=False``; a ``transform``
    (a callable on one PIL image, e.g. :class:`SimCLRViews`) replaces the standard one.
    """
    from torchvision.datasets import ImageNet
    from torchvision.datasets.imagenet import ARCHIVE_META, META_FILE
    if split not in ("train", "val"):
        raise ValueError(f"unknown ImageNet split {split!r}; valid splits: train, val")
    root = Path(root).expanduser()
    needed = [ARCHIVE_META["devkit"][0], ARCHIVE_META[split][0]]
    extracted = (root / META_FILE).is_file() and (root / split).is_dir()
    if not extracted and not all((root / f).is_file() for f in needed):
        raise FileNotFoundError(f"ImageNet {split} split not found in {root}: it needs the official files "
                                f"{' and '.join(needed)} (from image-net.org) in that folder")
    if transform is None:
        transform = imagenet_transform(split == "train" if train_transform is None else train_transform, image_size)
    try:
        return ImageNet(str(root), split=split, transform=transform)
    except RuntimeError as e:  # torchvision's message for a corrupted archive or meta file
        raise FileNotFoundError(f"ImageNet {split} split in {root} is incomplete or corrupted: {e}") from e
