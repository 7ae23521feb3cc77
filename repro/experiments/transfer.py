"""Downstream transfer (paper steps ii-iii): the five approaches of the paper plus the extra baselines.

One run = one dict of hyperparameters (see :func:`run_transfer`), so that the resumable runner can record
every setting in its CSV row. Approaches (paper Section 4, DESIGN.md section 1):

=========================  ==================================  ==============  ======================
approach                   prior over the backbone              initialisation  inference
=========================  ==================================  ==============  ======================
bayes_learned (1)          learned N(mu, lambda Sigma + eps I)  SWA mean        SGHMC/SGLD + BMA
map_learned (2)            learned                              SWA mean        SGD (MAP)
sgd_transfer (3)           none (ordinary weight decay)         SWA mean        SGD
bayes_nonlearned (4)       N(0, alpha I) over all parameters    random          SGHMC/SGLD + BMA
map_nonlearned (5)         N(0, alpha I) over all parameters    random          SGD (MAP)
bayes_isotropic (7)        N(mu, alpha I)                       SWA mean        SGHMC/SGLD + BMA
map_isotropic              N(mu, alpha I)                       SWA mean        SGD (MAP)
=========================  ==================================  ==============  ======================

Learned-mean approaches put N(0, head_var I) on the new head. The deep ensemble (6) combines
``sgd_transfer`` runs that differ only in ``member``.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .. import data
from ..analysis.metrics import classification_metrics
from ..models import Classifier, build_backbone
from .pretrain import check_protocol, load_source_model, load_source_prior
from ..method.priors import ComposedPrior, IsotropicGaussianPrior, Prior
from ..profiles import Profile, get_profile
from ..method.samplers import SGHMC, SGLD, CyclicalSchedule, bma_probs
from ..data.shift import ShiftSet, shift_set
from ..train import DivergenceError, check_finite, seed_everything


@dataclass(frozen=True)
class Approach:
    prior: str      # "learned" | "isotropic" (zero mean, all parameters) | "isotropic_mean" | "weight_decay"
    init: str       # "pretrained" (the SWA mean) | "random"
    bayes: bool     # sample with SG-MCMC and predict with a BMA; else optimise (T = 0) and predict once


APPROACHES: dict[str, Approach] = {
    "bayes_learned": Approach("learned", "pretrained", True),
    "map_learned": Approach("learned", "pretrained", False),
    "sgd_transfer": Approach("weight_decay", "pretrained", False),
    "bayes_nonlearned": Approach("isotropic", "random", True),
    "map_nonlearned": Approach("isotropic", "random", False),
    "bayes_isotropic": Approach("isotropic_mean", "pretrained", True),
    "map_isotropic": Approach("isotropic_mean", "pretrained", False),
}

DOWNSTREAM = {"cifar10": "test", "fashion-mnist": "test"}


def check_approach(name: str) -> Approach:
    if name not in APPROACHES:
        raise ValueError(f"unknown approach {name!r}; valid approaches: {', '.join(APPROACHES)}")
    return APPROACHES[name]


def default_params(profile: Profile, approach: str, **overrides) -> dict:
    """Every hyperparameter of a run, with the profile's defaults; ``overrides`` win."""
    a = check_approach(approach)
    p = dict(approach=approach, prior_kind="ssl" if a.init == "pretrained" else "none",
             rank=profile.swag_max_rank, scale=1e3, head_var=1.0, alpha=1e-2 if a.prior == "isotropic_mean" else 1.0,
             weight_decay=5e-4,
             dataset="cifar10", n_train=profile.train_sizes[0], seed=0, split="test",
             sampler="sghmc" if a.bayes else "sgd", temperature=1.0 if a.bayes else 0.0,
             lr=0.03, momentum=0.9, steps=profile.downstream_steps, batch_size=profile.downstream_batch_size,
             cycles=profile.cycles if a.bayes else 1, bma_samples=profile.bma_samples if a.bayes else 1,
             explore_fraction=0.5, member=0)
    unknown = sorted(set(overrides) - set(p))
    if unknown:
        raise ValueError(f"unknown run parameter(s) {unknown}; valid: {', '.join(p)}")
    return p | overrides


def downstream_data(profile: Profile, dataset: str, n_train: int, seed: int, split: str,
                    val_fraction: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, eval images, eval labels).

    ``split='val'``: the run trains on part of the n_train images and is evaluated on the rest (for tuning);
    ``split='test'``: it trains on all n_train images and is evaluated on the profile's test subset.
    """
    if dataset not in DOWNSTREAM:
        raise ValueError(f"unknown downstream dataset {dataset!r}; valid: {', '.join(DOWNSTREAM)}")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    train, test = data.load(dataset, "train"), data.load(dataset, DOWNSTREAM[dataset])
    if not 1 <= n_train <= len(train):
        raise ValueError(f"n_train must be in 1..{len(train)} (size of {dataset} train), got {n_train}")
    rgb = (lambda x: data.as_rgb(x, profile.image_size)) if train.images.shape[1] == 1 else (lambda x: x)
    idx = data.stratified_subset(train.targets, n_train, seed=seed)
    if split == "val":
        tr, va = data.train_val_split(train.targets[idx], val_fraction, seed=seed)
        return rgb(train.images[idx[tr]]), train.targets[idx[tr]], rgb(train.images[idx[va]]), train.targets[idx[va]]
    te = data.stratified_subset(test.targets, min(profile.downstream_test_n or len(test), len(test)), seed=0)
    return rgb(train.images[idx]), train.targets[idx], rgb(test.images[te]), test.targets[te]


def build_model_and_prior(profile: Profile, p: dict, num_classes: int, approach: Approach | None = None,
                          wrap: Callable[[nn.Module, int], nn.Module] = Classifier) -> tuple[nn.Module, Prior | None]:
    """The downstream model ``wrap(backbone, num_classes)`` (a backbone initialised per the approach, then a new
    ``head``) and the prior over all its parameters (backbone first, then head)."""
    a = approach or check_approach(p["approach"])
    if "prior_protocol" in p:                 # keyed on a prior (repro.studies.keyed_on_prior): it must be this one
        check_protocol(profile, p["prior_kind"], p["prior_protocol"])
    if a.init == "pretrained":
        backbone = load_source_model(profile, p["prior_kind"], "swa").backbone
    else:
        backbone = build_backbone(profile.model, width=profile.width)
    model = wrap(backbone, num_classes)
    d_backbone = sum(q.numel() for q in backbone.parameters())
    d_head = sum(q.numel() for q in model.head.parameters())
    head = IsotropicGaussianPrior(d_head, p["head_var"])
    if a.prior == "learned":
        learned = load_source_prior(profile, p["prior_kind"], scale=p["scale"], rank=p["rank"], module=backbone)
        return model, ComposedPrior([learned, head])
    if a.prior == "isotropic_mean":
        mean = load_source_prior(profile, p["prior_kind"], rank=0, module=backbone).mean
        return model, ComposedPrior([IsotropicGaussianPrior(d_backbone, p["alpha"], mean=mean), head])
    if a.prior == "isotropic":
        return model, IsotropicGaussianPrior(d_backbone + d_head, p["alpha"])
    return model, None                                          # weight decay in the optimiser


def check_params(p: dict, a: Approach) -> None:
    """One clear error for an out-of-range run parameter."""
    for key, lo in (("scale", 0), ("head_var", 0), ("alpha", 0)):
        if not p[key] > lo:
            raise ValueError(f"{key} must be > {lo}, got {p[key]}")
    if p["temperature"] < 0:
        raise ValueError(f"temperature must be >= 0, got {p['temperature']}")
    valid_samplers = ("sgld", "sghmc") if a.bayes else ("sgd",)
    if p["sampler"] not in valid_samplers:
        raise ValueError(f"approach {p['approach']!r} takes sampler {' or '.join(valid_samplers)}, got {p['sampler']!r}")


def fit_or_sample(model: nn.Module, prior: Prior | None, a: Approach, p: dict, x: Tensor, y: Tensor,
                  transform, loss_fn) -> tuple[list[dict], float]:
    """Optimise (MAP, SGD transfer) or sample (SGLD/SGHMC with a cyclical schedule) on (x, y).

    The loss is ``loss_fn(model(xb), yb)`` (a mean over the minibatch) plus -log p(theta)/N, the temperature
    convention of :mod:`repro.samplers`; MAP runs use T = 0 (SGD with momentum). Returns the states to predict
    with (the collected samples, or the final state) and the training wall time.
    """
    N = len(x)
    params = [q for q in model.parameters() if q.requires_grad]
    if a.prior == "weight_decay":
        opt = torch.optim.SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
    else:
        gen = torch.Generator().manual_seed(p["seed"] * 7919 + p["member"])
        if a.bayes and p["sampler"] == "sgld":
            opt = SGLD(params, lr=p["lr"], num_data=N, temperature=p["temperature"], generator=gen, prior=prior)
        else:                                                   # MAP: SGHMC at T = 0, i.e. SGD with momentum
            opt = SGHMC(params, lr=p["lr"], num_data=N, momentum=p["momentum"],
                        temperature=p["temperature"] if a.bayes else 0.0, generator=gen, prior=prior)
    schedule = CyclicalSchedule(p["steps"], p["cycles"], p["lr"], p["explore_fraction"] if a.bayes else 0.0,
                                samples_per_cycle=max(1, p["bma_samples"] // p["cycles"]))
    batch_size = min(p["batch_size"], N)
    samples: list[dict] = []
    t0 = time.perf_counter()
    step, epoch = 0, 0
    model.train()
    while step < p["steps"]:
        # ensemble members share the data subset (seed) but not the batch order or initialisation (member)
        for xb, yb in data.batches(x, y, batch_size, shuffle=True, seed=(p["seed"] * 1000 + p["member"]) * 100_003 + epoch,
                                   transform=transform, drop_last=True):
            if step >= p["steps"]:
                break
            schedule.apply(opt, step)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            check_finite(loss, "training loss")
            loss.backward()
            opt.step()                                          # adds the prior (stiff diagonal: implicit)
            if prior is not None:
                check_finite(opt.log_prior, "prior log-density")
            if a.bayes and schedule.collect_at(step):
                samples.append({k: v.clone() for k, v in model.state_dict().items()})
            step += 1
        epoch += 1
    if not all(torch.isfinite(q).all() for q in params):
        raise DivergenceError("parameters became non-finite")
    return (samples if a.bayes else [model.state_dict()]), time.perf_counter() - t0


def run_transfer(profile: str | Profile, params: dict) -> dict:
    """Train one downstream run and evaluate it. Returns metrics and ``predictions`` (eval probabilities)."""
    profile = get_profile(profile)
    p = dict(params)
    a = check_approach(p["approach"])
    check_params(p, a)
    seed_everything(p["seed"] * 1000 + p["member"])
    x, y, ex, ey = downstream_data(profile, p["dataset"], p["n_train"], p["seed"], p["split"], profile.val_fraction)
    model, prior = build_model_and_prior(profile, p, num_classes=int(data.DATASETS[p["dataset"]].num_classes))
    transform = data.train_transform(p["dataset"] if p["dataset"] != "fashion-mnist" else "cifar10", profile.image_size)
    states, train_time = fit_or_sample(model, prior, a, p, x, y, transform, nn.functional.cross_entropy)
    probs = bma_probs(model, states, ex)
    out = {**classification_metrics(probs, ey), "n_train_used": len(x), "n_eval": len(ey),
           "samples_collected": len(states), "train_time_s": train_time}
    predictions = {"probs": probs.half(), "labels": ey}
    if p["dataset"] == "cifar10" and p["split"] == "test":     # C8: the same models on the shifted test set
        shifted = _shift_set(profile.name)
        shift_probs = bma_probs(model, states, shifted.images)
        out |= {f"shift_{k}": v for k, v in classification_metrics(shift_probs, shifted.labels).items()}
        out["shift_set"] = shifted.name
        predictions |= {"shift_probs": shift_probs.half(), "shift_labels": shifted.labels, "shift_cell": shifted.cell}
    return out | {"predictions": predictions}


@functools.lru_cache(maxsize=2)
def _shift_set(profile_name: str) -> ShiftSet:
    return shift_set(profile_name)
