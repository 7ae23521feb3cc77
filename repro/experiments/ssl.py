"""Self-supervised pre-training with SimCLR (Chen et al. 2020): augmentations, projection head, NT-Xent.

The paper's SSL prior is fitted to the SimCLR loss around a SimCLR solution, so the same loss is used
both for pre-training and for SWAG collection.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def simclr_augment(size: int = 32) -> Callable[[Tensor], Tensor]:
    """SimCLR's CIFAR-scale augmentation for ONE uint8 image, returning two views stacked (2 x C x H x W).

    Random resized crop (scale 0.2-1), flip, colour jitter (brightness, contrast, saturation 0.4) with
    p = 0.8, grayscale with p = 0.2; no blur at 32 px, as in SimCLR's CIFAR experiments. Hue jitter (0.1
    in SimCLR) is left out: torchvision's per-image hue shift costs ~5 ms per 32 px image on CPU, 40x the
    rest of the pipeline, and would make augmentation, not the network, the bottleneck here.
    """
    from torchvision.transforms import v2

    view = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])
    return lambda image: torch.stack([view(image), view(image)])


class SimCLR(nn.Module):
    """backbone -> 2-layer MLP projection (dropped after pre-training; the prior covers the backbone)."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 128):
        super().__init__()
        d = backbone.out_features
        self.backbone = backbone
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """Normalised-temperature cross entropy over the 2N views: each view's positive is its twin."""
    n = len(z1)
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))                      # a view is not its own candidate
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return nn.functional.cross_entropy(sim, target)


def simclr_loss(model: nn.Module, batch: tuple, temperature: float = 0.5) -> Tensor:
    """NT-Xent on a batch of paired views (N x 2 x C x H x W, labels ignored)."""
    views, _ = batch
    z = model(views.flatten(0, 1)).unflatten(0, (len(views), 2))
    return nt_xent(z[:, 0], z[:, 1], temperature)
