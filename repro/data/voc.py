"""Pascal VOC 2012 segmentation, the ``paper`` profile's downstream segmentation task.

Owns the dataset's constants (:data:`VOC_CLASSES` classes including background, :data:`VOC_IGNORE` for void
pixels) and :func:`voc_split`, which reads a split through torchvision and resizes it to uint8 tensors.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

VOC_CLASSES = 21
VOC_IGNORE = 255


def voc_split(root: str | os.PathLike, split: str, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Pascal VOC 2012 segmentation ``split`` ('train' or 'val') from ``root`` (the folder holding ``VOCdevkit``),
    resized to ``size``: uint8 images N x 3 x H x W (antialiased) and masks N x H x W (nearest; 255 = void).

    Read with ``torchvision.datasets.VOCSegmentation(download=False)``; get the data with ``download=True`` there or
    from the official ``VOCtrainval_11-May-2012.tar``.
    """
    import numpy as np
    import torchvision
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if split not in ("train", "val"):
        raise ValueError(f"VOC 2012 segmentation splits are 'train' and 'val', got {split!r}")
    try:
        ds = torchvision.datasets.VOCSegmentation(str(root), year="2012", image_set=split, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(f"Pascal VOC 2012 not found under {root} ({e}); download it with "
                                f"torchvision.datasets.VOCSegmentation({str(root)!r}, download=True) or from "
                                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/") from None
    images, masks = [], []
    for img, mask in ds:
        x = torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1)
        y = torch.from_numpy(np.asarray(mask, dtype=np.uint8))[None]
        images.append(F.resize(x, list(size), antialias=True))
        masks.append(F.resize(y, list(size), interpolation=InterpolationMode.NEAREST)[0])
    return torch.stack(images), torch.stack(masks).long()
