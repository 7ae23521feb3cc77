"""Augmentation and resizing of uint8 image tensors (torchvision.transforms.v2); normalisation is the model's job.

Owns the per-sample training augmentation of each dataset (:func:`train_transform`,
:func:`segmentation_transform`, which crops and flips an image and its mask jointly), the fitting of
images to the models' input (:func:`as_rgb`, :func:`resize_segmentation`) and the helper that applies a
transform to one (image, target) pair, used by :mod:`repro.data.subsets`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .formats import DATASETS

__all__ = ["train_transform", "segmentation_transform", "as_rgb", "resize_segmentation"]


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
