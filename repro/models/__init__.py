"""Models with a backbone/head split, so a learned prior can cover the backbone only.

* CIFAR-style ResNets (He et al. 2016, 6n+2 layers, three stages of width w, 2w, 4w) for ``smoke``/``cpu``;
* torchvision ResNet-50/101 for the ``paper`` profile.

Every model takes uint8 images (N x 3 x H x W) and normalises them itself, so data stays uint8 in
memory and checkpoints are self-contained.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

MEAN = (0.485, 0.456, 0.406)   # ImageNet statistics: one normalisation for source and downstream tasks
STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """uint8 or [0, 1] float images -> standardised float."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        # In place on fresh BN/conv outputs (BN's backward needs its input, not its output): the same numbers without
        # two activation-sized allocations per block (relu and add are memory-bound: ~20 % of the CPU time).
        out = torch.relu_(self.bn1(self.conv1(x)))
        return torch.relu_(self.bn2(self.conv2(out)).add_(self.shortcut(x)))


class CifarResNet(nn.Module):
    """Feature extractor of a CIFAR ResNet: ``depth`` = 6n + 2, widths (w, 2w, 4w); features = 4w.

    ``forward_features`` also returns the stride-1 feature map (the low-level skip for DeepLabv3+).
    """

    def __init__(self, depth: int = 20, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.normalize = Normalize()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, c = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(c, w, 1 if i == 0 else 2)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.out_features = c
        self.low_level_features = width
        self.pool = nn.AdaptiveAvgPool2d(1)

    def feature_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(low-level map after stage 1, final map)."""
        x = self.stem(self.normalize(x))
        low = self.stages[0](x)
        return low, self.stages[2](self.stages[1](low))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.feature_maps(x)[1]).flatten(1)


class TorchvisionBackbone(nn.Module):
    """torchvision ResNet-50/101 without its ``fc``, taking uint8 images."""

    def __init__(self, arch: str, weights: str | None = None):
        super().__init__()
        import torchvision
        net = getattr(torchvision.models, arch)(weights=weights)
        self.out_features = net.fc.in_features
        self.low_level_features = 256
        net.fc = nn.Identity()
        self.normalize = Normalize()
        self.net = net

    def feature_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(self.normalize(x)))))
        low = n.layer1(x)
        return low, n.layer4(n.layer3(n.layer2(low)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


class Classifier(nn.Module):
    """backbone -> linear head. Parameters are ordered backbone first, then head (the flat-vector order)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017): 1x1, three dilated 3x3 and an image-pooling branch."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(c_in, c_out)] + [_conv_bn_relu(c_in, c_out, 3, r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False), nn.ReLU(inplace=True))
        self.project = _conv_bn_relu(c_out * (len(rates) + 2), c_out)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabDecoder(nn.Module):
    """The new parameters of DeepLabv3+ (Chen et al. 2018): ASPP on the final map, a decoder that upsamples it to the
    low-level skip (reduced by a 1x1 conv), two 3x3 convs and a 1x1 classifier."""

    def __init__(self, c_high: int, c_low: int, num_classes: int, channels: int, rates: tuple[int, int, int]):
        super().__init__()
        self.aspp = ASPP(c_high, channels, rates)
        self.reduce = _conv_bn_relu(c_low, max(8, channels // 4))
        self.fuse = nn.Sequential(_conv_bn_relu(channels + max(8, channels // 4), channels, 3),
                                  _conv_bn_relu(channels, channels, 3))
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        high = nn.functional.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify(self.fuse(torch.cat([high, self.reduce(low)], dim=1)))


class DeepLabV3Plus(nn.Module):
    """backbone (with ``feature_maps``) -> :class:`DeepLabDecoder` -> logits at the input resolution.

    Like :class:`Classifier`, parameters are ordered backbone first, then ``head`` (the decoder and ASPP): the learned
    prior covers the backbone, a zero-mean isotropic prior the head.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 64, rates: tuple[int, int, int] = (2, 4, 6)):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabDecoder(backbone.out_features, backbone.low_level_features, num_classes, channels, rates)

    def forward(self, x: Tensor) -> Tensor:
        low, high = self.backbone.feature_maps(x)
        return nn.functional.interpolate(self.head(low, high), size=x.shape[-2:], mode="bilinear", align_corners=False)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet8": lambda width=16, **_: CifarResNet(8, width),
    "resnet14": lambda width=16, **_: CifarResNet(14, width),
    "resnet20": lambda width=16, **_: CifarResNet(20, width),
    "resnet32": lambda width=16, **_: CifarResNet(32, width),
    "resnet50": lambda weights=None, **_: TorchvisionBackbone("resnet50", weights),
    "resnet101": lambda weights=None, **_: TorchvisionBackbone("resnet101", weights),
}


# Evaluation batch: at 128 CIFAR-sized images a ResNet-20's activations stay in cache; at 512 they spill and a
# single-thread forward pass costs 1.7x more per image (measured on the project's machine; see README, Performance).
EVAL_BATCH_SIZE = 128


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm2d folded into the convolution it follows.

    The same function in eval mode up to float rounding (BN is then a per-channel affine map of the conv's output,
    absorbed into its weight and bias by ``torch.nn.utils.fusion.fuse_conv_bn_eval``), and 2-11 % faster to evaluate
    on CPU (one or two threads). Pairs are found by structure: consecutive (Conv2d, BatchNorm2d) in an ``nn.Sequential`` and
    ``conv<i>``/``bn<i>`` attributes of one module — in every model here (CIFAR and torchvision ResNets, the
    segmentation head) such a BN is applied directly to that conv's output. ``model`` itself is left untouched.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(module[i], module[i + 1]), nn.Identity()
        for name, conv in list(module.named_children()):
            bn = getattr(module, "bn" + name[4:], None) if name.startswith("conv") else None
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, "bn" + name[4:], nn.Identity())
    return folded


def channels_last(x: Tensor) -> Tensor:
    """Images (N x C x H x W) in channels-last memory layout; anything else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class _ChannelsLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return channels_last(x)


def for_evaluation(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` computing the same function, faster: BatchNorm folded into the convolutions
    (:func:`fold_batchnorm`) and channels-last input, which makes oneDNN's CPU convolutions 15-30 % faster here.

    Downstream training runs channels-last too; pre-training keeps the default layout, so the committed priors
    reproduce bit for bit (the layout changes the rounding: docs/history.md says how much that moved a chain at T = 1).
    """
    return nn.Sequential(_ChannelsLast(), fold_batchnorm(model))


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A backbone by name (``width`` for CIFAR ResNets; ``weights`` for torchvision ones)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def build_classifier(name: str, num_classes: int, **kwargs) -> Classifier:
    return Classifier(build_backbone(name, **kwargs), num_classes)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
