"""Semantic segmentation with a learned backbone prior (paper Table 1, claim C9; notebook 08): one run.

DeepLabv3+ (:class:`repro.models.DeepLabV3Plus`) on the profile's backbone, trained on CamVid (11 classes, void = 11
ignored; our stand-in for Cityscapes / Pascal VOC) at ``segmentation_size``. The approaches are those of
:mod:`.approaches` (task ``segmentation``: every one starts from a pre-trained backbone, as the paper fine-tunes
ImageNet-initialised networks throughout), with a new decoder; under a learned prior the decoder (ASPP and all new
layers) has a zero-mean isotropic prior N(0, head_var I). Training and prediction are transfer's
(:func:`.transfer.fit_or_sample`); tuning is in :mod:`.tuning`, the study in :mod:`.studies`.

The posterior counts every labelled pixel as an observation (``likelihood="pixel"``, :data:`.approaches.LIKELIHOODS`):
the loss is the minibatch's mean over its labelled pixels, and N is the training set's labelled pixels, so T = 1 is
the posterior of the model's pixel-wise likelihood. Counting images instead (``"image"``, the first protocol) gives
the same runs as the pixel likelihood at temperature T * P with the prior's widths divided by P (P: labelled pixels
per image, ~1e4; exactly for N(0, alpha I), up to the learned prior's fixed jitter eps otherwise): a far hotter
posterior than its T says. The pixel likelihood treats pixels as conditionally independent, which they are not, so
its posterior is over-concentrated, and N grows with the resolution; it is still the posterior of the model's own
likelihood, the one "T = 1" names.
"""
from __future__ import annotations

import functools
from typing import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from .. import data
from ..data import voc
from ..analysis.metrics import iou_per_class
from ..models import DeepLabV3Plus
from ..profiles import Profile
from ..method.samplers import bma_probs
from ..train import seed_everything
from .approaches import LIKELIHOODS
from .spec import RunSpec
from .transfer import build_model_and_prior, fit_or_sample

# Paper Table 1, mIoU (%), ResNet-50: SGD transfer / non-learned prior / supervised learned / SSL learned
PAPER_TABLE1 = pd.DataFrame({
    "setting": ["sgd_transfer", "bayes_nonlearned", "bayes_learned (supervised)", "bayes_learned (ssl)"],
    "paper_voc_r50": [73.17, 73.16, 73.72, 74.15], "paper_cityscapes_r50": [73.17, 75.52, 76.09, 76.52]})
EXAMPLES = 4                      # test images whose predicted maps are saved for the figure


# dataset -> (classes, ignore index, class names)
DATASETS = {"camvid": (11, data.CAMVID_IGNORE, data.CAMVID_CLASSES),
            "voc": (voc.VOC_CLASSES, voc.VOC_IGNORE, [f"class{i}" for i in range(voc.VOC_CLASSES)])}


@functools.lru_cache(maxsize=4)
def load_split(profile: Profile, split: str) -> tuple[Tensor, Tensor]:
    """The profile's segmentation ``split`` resized to ``segmentation_size`` (images antialiased, masks nearest).

    CamVid has train / val / test. VOC 2012 has no public test masks: its 'val' is the test split and the last
    20 % of 'train' (``split='val'``) is held out for tuning.
    """
    if profile.segmentation_dataset == "camvid":
        s = data.load("camvid", split)
        return data.resize_segmentation(s.images, s.targets, profile.segmentation_size)
    if profile.segmentation_dataset == "voc":
        root = data.data_dir() / "voc"
        if split == "test":
            return voc.voc_split(root, "val", profile.segmentation_size)
        x, y = voc.voc_split(root, "train", profile.segmentation_size)
        cut = int(len(x) * (1 - profile.val_fraction))
        return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
    raise ValueError(f"unknown segmentation dataset {profile.segmentation_dataset!r}; valid: {', '.join(DATASETS)}")


def _model(profile: Profile):
    return lambda backbone, num_classes: DeepLabV3Plus(backbone, num_classes, channels=profile.decoder_channels,
                                                       rates=profile.aspp_rates)


def evaluate(probs: Tensor, masks: Tensor, dataset: str = "camvid") -> dict:
    """Pixel accuracy, mIoU and per-class IoU (void pixels ignored; classes absent from a split are NaN)."""
    num_classes, ignore, names = DATASETS[dataset]
    pred = probs.argmax(1)
    valid = masks != ignore
    ious = iou_per_class(pred, masks, num_classes, ignore_index=ignore)
    out = {"pixel_accuracy": float((pred[valid] == masks[valid]).double().mean()),
           "miou": float(torch.nanmean(ious))}
    return out | {f"iou_{name.lower()}": float(v) for name, v in zip(names, ious)}


def num_observations(masks: Tensor, ignore_index: int, likelihood: str) -> int:
    """N of a segmentation posterior on ``masks``: its labelled pixels (``"pixel"``) or its images (``"image"``)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    return int((masks != ignore_index).sum()) if likelihood == "pixel" else len(masks)


@functools.lru_cache(maxsize=None)
def pixel_loss(ignore_index: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy over the labelled pixels: one function per ignore index, so that a compiled training loss
    (:func:`repro.compute.training_loss`) is built once per process, not once per run."""
    return functools.partial(nn.functional.cross_entropy, ignore_index=ignore_index)


def run_segmentation(profile: Profile, p: RunSpec) -> dict:
    """Train one segmentation run (``split='val'``: evaluated on CamVid val, for tuning) and evaluate it."""
    a = p.approach_
    seed_everything(p.seed * 1000 + p.member)
    x, y = load_split(profile, "train")
    ex, ey = load_split(profile, p.split)
    num_classes, ignore, _ = DATASETS[profile.segmentation_dataset]
    model, prior = build_model_and_prior(profile, p, num_classes, a, wrap=_model(profile))
    transform = data.segmentation_transform(profile.segmentation_size, ignore)
    # SGD transfer carries no likelihood: its weight decay does not depend on N
    n = num_observations(y, ignore, p.likelihood)
    states, _, train_time, _ = fit_or_sample(model, prior, a, p, x, y, transform, pixel_loss(ignore), num_data=n,
                                            compile=profile.compile)
    probs = bma_probs(model, states, ex, batch_size=16)
    return {**evaluate(probs, ey, profile.segmentation_dataset), "samples_collected": len(states), "train_time_s": train_time,
            "predictions": {"pred": probs[:EXAMPLES].argmax(1).to(torch.uint8), "images": ex[:EXAMPLES],
                            "masks": ey[:EXAMPLES]}}
