"""Semantic segmentation with a learned backbone prior (paper Table 1, claim C9; notebook 08).

DeepLabv3+ (:class:`repro.models.DeepLabV3Plus`) on the profile's backbone, trained on CamVid (11 classes, void = 11
ignored; our stand-in for Cityscapes / Pascal VOC) at ``segmentation_size``. Every approach starts from a pre-trained
backbone (the paper fine-tunes ImageNet-initialised networks throughout) with a new decoder:

====================  ========================================  =====================================
approach              prior                                     inference
====================  ========================================  =====================================
sgd_transfer          none (weight decay), supervised backbone  SGD
bayes_nonlearned      N(0, alpha I) on everything, supervised   SGLD + BMA
bayes_learned         learned N(mu, lambda Sigma) on backbone   SGLD + BMA (supervised or SSL prior)
map_learned           learned                                   SGD with the prior (paper App C.2)
====================  ========================================  =====================================

The decoder (ASPP and all new layers) has a zero-mean isotropic prior N(0, head_var I) under the learned prior.
Tuning (CamVid's validation split, best mIoU): the learning rate for SGD transfer (reused by all), then the prior width
per approach (lambda for the learned priors, alpha for the non-learned one) on a coarse log grid, extended a decade at a
time while the best value is at an edge.
"""
from __future__ import annotations

import argparse
import functools
from typing import Iterable

import pandas as pd
import torch
from torch import Tensor, nn

from .. import data
from ..data import voc
from ..analysis.metrics import iou_per_class
from ..models import DeepLabV3Plus
from ..profiles import Profile, get_profile
from ..method.samplers import bma_probs
from .studies import best_row, run_study, sweep
from ..train import seed_everything
from .transfer import Approach, build_model_and_prior, check_params, fit_or_sample

APPROACHES: dict[str, Approach] = {
    "sgd_transfer": Approach("weight_decay", "pretrained", False),
    "bayes_nonlearned": Approach("isotropic", "pretrained", True),
    "bayes_learned": Approach("learned", "pretrained", True),
    "map_learned": Approach("learned", "pretrained", False),
}
STUDY = "segmentation"
# Paper Table 1, mIoU (%), ResNet-50: SGD transfer / non-learned prior / supervised learned / SSL learned
PAPER_TABLE1 = pd.DataFrame({
    "setting": ["sgd_transfer", "bayes_nonlearned", "bayes_learned (supervised)", "bayes_learned (ssl)"],
    "paper_voc_r50": [73.17, 73.16, 73.72, 74.15], "paper_cityscapes_r50": [73.17, 75.52, 76.09, 76.52]})
WIDTH_GRID = (1e2, 1e4, 1e6)      # coarse lambda grid; alpha starts from (1e-2, 1e-1, 1)
EXAMPLES = 4                      # test images whose predicted maps are saved for the figure


def check_approach(name: str) -> Approach:
    if name not in APPROACHES:
        raise ValueError(f"unknown segmentation approach {name!r}; valid: {', '.join(APPROACHES)}")
    return APPROACHES[name]


def default_params(profile: Profile, approach: str, **overrides) -> dict:
    """Every hyperparameter of a segmentation run, with the profile's defaults; ``overrides`` win."""
    a = check_approach(approach)
    p = dict(approach=approach, prior_kind="supervised", rank=profile.swag_max_rank, scale=1e4, head_var=1.0,
             alpha=0.1, weight_decay=5e-4, seed=0, split="test", sampler="sgld" if a.bayes else "sgd",
             temperature=1.0 if a.bayes else 0.0, lr=0.03, momentum=0.9, steps=profile.segmentation_steps,
             batch_size=profile.segmentation_batch_size, cycles=profile.cycles if a.bayes else 1,
             bma_samples=profile.bma_samples if a.bayes else 1, explore_fraction=0.5, member=0)
    unknown = sorted(set(overrides) - set(p))
    if unknown:
        raise ValueError(f"unknown segmentation parameter(s) {unknown}; valid: {', '.join(p)}")
    return p | overrides


# dataset -> (classes, ignore index, class names)
DATASETS = {"camvid": (11, data.CAMVID_IGNORE, data.CAMVID_CLASSES),
            "voc": (voc.VOC_CLASSES, voc.VOC_IGNORE, [f"class{i}" for i in range(voc.VOC_CLASSES)])}


@functools.lru_cache(maxsize=4)
def load_split(profile_name: str, split: str) -> tuple[Tensor, Tensor]:
    """The profile's segmentation ``split`` resized to ``segmentation_size`` (images antialiased, masks nearest).

    CamVid has train / val / test. VOC 2012 has no public test masks: its 'val' is the test split and the last
    20 % of 'train' (``split='val'``) is held out for tuning.
    """
    profile = get_profile(profile_name)
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


def run_segmentation(profile: str | Profile, params: dict) -> dict:
    """Train one segmentation run (``split='val'``: evaluated on CamVid val, for tuning) and evaluate it."""
    profile = get_profile(profile)
    p = dict(params)
    a = check_approach(p["approach"])
    check_params(p, a)
    if p["split"] not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {p['split']!r}")
    seed_everything(p["seed"] * 1000 + p["member"])
    x, y = load_split(profile.name, "train")
    ex, ey = load_split(profile.name, p["split"])
    num_classes, ignore, _ = DATASETS[profile.segmentation_dataset]
    model, prior = build_model_and_prior(profile, p, num_classes, approach=a, wrap=_model(profile))
    loss = functools.partial(nn.functional.cross_entropy, ignore_index=ignore)
    transform = data.segmentation_transform(profile.segmentation_size, ignore)
    states, train_time = fit_or_sample(model, prior, a, p, x, y, transform, loss)
    probs = bma_probs(model, states, ex, batch_size=16)
    return {**evaluate(probs, ey, profile.segmentation_dataset), "samples_collected": len(states), "train_time_s": train_time,
            "predictions": {"pred": probs[:EXAMPLES].argmax(1).to(torch.uint8), "images": ex[:EXAMPLES],
                            "masks": ey[:EXAMPLES]}}


def run_settings(profile: str | Profile, settings: Iterable[dict], desc: str | None = None) -> pd.DataFrame:
    """Run (or read back) segmentation settings (``default_params`` overrides); one row per setting, in order."""
    return run_study(profile, STUDY, settings, default_params, run_segmentation, desc)


@functools.lru_cache(maxsize=None)
def _tuned(profile_name: str, approach: str, kind: str) -> tuple[tuple[str, float], ...]:
    profile = get_profile(profile_name)
    val = dict(split="val", seed=profile.seeds[0])
    lr_rows = run_settings(profile, [dict(approach="sgd_transfer", lr=lr, **val) for lr in profile.lr_grid],
                           desc="tune segmentation: lr")
    lr = float(best_row(lr_rows, "miou").lr)
    if approach == "sgd_transfer":
        return (("lr", lr),)
    name, grid = ("alpha", (1e-2, 1e-1, 1.0)) if approach == "bayes_nonlearned" else ("scale", WIDTH_GRID)
    base = dict(approach=approach, prior_kind=kind, lr=lr, **val)
    rows, _ = sweep(profile, base, name, grid, f"tune segmentation {approach}/{kind}: {name}", run=run_settings,
                    metric="miou")
    return (("lr", lr), (name, float(best_row(rows, "miou")[name])))


def tuned(profile: str | Profile, approach: str, kind: str = "supervised") -> dict:
    """The validation-tuned hyperparameters of a segmentation approach (see the module docstring)."""
    check_approach(approach)
    return dict(_tuned(get_profile(profile).name, approach, kind if approach in ("bayes_learned", "map_learned")
                       else "supervised"))


SETTINGS = (("sgd_transfer", "supervised"), ("bayes_nonlearned", "supervised"), ("bayes_learned", "supervised"),
            ("bayes_learned", "ssl"), ("map_learned", "supervised"), ("map_learned", "ssl"))


def segmentation_study(profile: str | Profile) -> pd.DataFrame:
    """C9: every approach and prior of ``SETTINGS`` with its tuned values, every seed, on CamVid test."""
    profile = get_profile(profile)
    settings = [dict(approach=a, prior_kind=k, seed=s, **tuned(profile, a, k)) for a, k in SETTINGS for s in profile.seeds]
    return run_settings(profile, settings, desc="C9 segmentation")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.segmentation", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    print(segmentation_study(args.profile)[["approach", "prior_kind", "seed", "miou", "status"]].to_string())


if __name__ == "__main__":
    main()
