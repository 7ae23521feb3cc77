"""The distribution-shift test set of claim C8: CIFAR-10.1 when its files are present, else corrupted CIFAR-10.

CIFAR-10.1 v6 (Recht et al. 2019) is read from ``<data dir>/cifar10.1/``. Without it, the stated substitute is
CIFAR-10-C style corruptions of the CIFAR-10 test images (Hendrycks & Dietterich 2019), made with torchvision
transforms: Gaussian noise, Gaussian blur, contrast and JPEG compression, at severities 1, 3 and 5 of CIFAR-10-C's
parameter tables. Each image of a stratified test subset gets one (corruption, severity) cell, assigned in
turn along the subset, so every cell has about the same number of images of every class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .. import data
from ..profiles import Profile

# CIFAR-10-C parameters at severities 1, 3, 5 (noise sigma, blur sigma, contrast factor, JPEG quality).
SEVERITIES = (1, 3, 5)
CORRUPTIONS = {
    "gaussian_noise": {1: 0.04, 3: 0.08, 5: 0.10},
    "gaussian_blur": {1: 0.4, 3: 0.7, 5: 1.0},
    "contrast": {1: 0.75, 3: 0.4, 5: 0.15},
    "jpeg": {1: 80, 3: 58, 5: 40},
}


def corrupt(images: Tensor, corruption: str, severity: int, seed: int = 0) -> Tensor:
    """``images`` (uint8 N x 3 x H x W) under one corruption at one CIFAR-10-C severity, as uint8."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; valid: {', '.join(CORRUPTIONS)}")
    if severity not in CORRUPTIONS[corruption]:
        raise ValueError(f"severity must be one of {sorted(CORRUPTIONS[corruption])}, got {severity}")
    level = CORRUPTIONS[corruption][severity]
    if corruption == "jpeg":
        return v2.JPEG(quality=level)(images)
    x = images.float() / 255
    if corruption == "gaussian_noise":
        gen = torch.Generator().manual_seed(seed)
        x = x + level * torch.randn(x.shape, generator=gen)
    elif corruption == "gaussian_blur":
        x = F.gaussian_blur(x, kernel_size=[2 * int(3 * level + 0.5) + 1] * 2, sigma=[level, level])
    else:  # contrast: blend each image with its own mean, as CIFAR-10-C
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * level + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


CELLS = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]   # the substitute's (corruption, severity) cells


@dataclass(frozen=True)
class ShiftSet:
    name: str       # "cifar10.1" or "cifar10-corrupted"
    images: Tensor  # uint8 N x 3 x 32 x 32
    labels: Tensor
    cell: Tensor    # per image: index into CELLS (-1 for CIFAR-10.1)


def cifar101_available() -> bool:
    return data.available("cifar10.1", "test")


def shift_set(profile: Profile) -> ShiftSet:
    """The profile's shift test set: all of CIFAR-10.1 if present, else the clean test subset of the transfer runs
    (``downstream_test_n`` stratified CIFAR-10 test images) with one corruption cell per image."""
    if cifar101_available():
        s = data.load("cifar10.1", "test")
        return ShiftSet("cifar10.1", s.images, s.targets, torch.full((len(s),), -1, dtype=torch.long))
    test = data.load("cifar10", "test")
    idx = data.stratified_subset(test.targets, min(profile.downstream_test_n or len(test), len(test)), seed=0)
    images = test.images[idx].clone()
    cell = torch.arange(len(idx)) % len(CELLS)
    for i, (c, s) in enumerate(CELLS):
        images[cell == i] = corrupt(images[cell == i], c, s, seed=i)
    return ShiftSet("cifar10-corrupted", images, test.targets[idx], cell)
