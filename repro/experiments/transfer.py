"""Downstream transfer (paper steps ii-iii): one classification run of any approach of :mod:`.approaches`.

One run = one typed spec (:class:`.spec.RunSpec`), whose every field the resumable runner records in its CSV row. :func:`fit_or_sample` and :func:`build_model_and_prior` are shared with
segmentation (:mod:`.segmentation`), which only swaps the model and the loss.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from .. import data
from ..analysis.metrics import classification_metrics
from ..models import Classifier, build_backbone, channels_last
from .pretrain import check_protocol, load_source_model
from ..method.priors import Prior
from ..profiles import Profile
from .algorithms import algorithm
from .approaches import SPLITS, Approach
from .evaluations import hooks
from .families import family
from .spec import RunSpec
from ..method.samplers import CyclicalSchedule, sample_probs
from ..method.variational import DataEmphasizedVI
from ..compute import training_loss
from ..train import DivergenceError, check_finite, seed_everything


DOWNSTREAM = {"cifar10": "test", "fashion-mnist": "test"}
PROGRESS_LINES = 10     # a long run logs its step, loss and elapsed time this many times (every 10 % of its steps)

log = logging.getLogger(__name__)


def progress_steps(steps: int, lines: int = PROGRESS_LINES) -> set[int]:
    """The (1-based) steps after which a run of ``steps`` steps logs its progress: evenly spread, the last included."""
    return {math.ceil(k * steps / lines) for k in range(1, lines + 1)} - {0}


HOLDOUT_SEED = 99_991   # the holdout images: one fixed draw per training split, kept out of holdout runs' subsets


def downstream_indices(profile: Profile, dataset: str, n_train: int, seed: int, split: str,
                       val_fraction: float) -> tuple[Tensor, Tensor]:
    """(training indices, evaluation indices) of a run; both index the training split, except for ``split='test'``,
    whose evaluation indices index the test split.

    ``split='val'``: the run trains on part of the n_train images and is evaluated on the rest (for tuning);
    ``split='test'``: it trains on all n_train images and is evaluated on the profile's test subset;
    ``split='holdout'``: it trains on n_train images drawn from the training split less a fixed stratified set of
    ``downstream_test_n`` images, and is evaluated on that set (notebook 09: as precise as the test subset, and not it).
    """
    if dataset not in DOWNSTREAM:
        raise ValueError(f"unknown downstream dataset {dataset!r}; valid: {', '.join(DOWNSTREAM)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    train, test = data.load(dataset, "train"), data.load(dataset, DOWNSTREAM[dataset])
    n_eval = min(profile.downstream_test_n or len(test), len(test))
    pool = torch.arange(len(train))
    if split == "holdout":
        held = data.stratified_subset(train.targets, n_eval, seed=HOLDOUT_SEED)
        pool = pool[~torch.isin(pool, held)]
    if not 1 <= n_train <= len(pool):
        raise ValueError(f"n_train must be in 1..{len(pool)} (size of {dataset} train"
                         f"{' less the holdout' if split == 'holdout' else ''}), got {n_train}")
    idx = pool[data.stratified_subset(train.targets[pool], n_train, seed=seed)]
    if split == "val":
        tr, va = data.train_val_split(train.targets[idx], val_fraction, seed=seed)
        return idx[tr], idx[va]
    return idx, (held if split == "holdout" else data.stratified_subset(test.targets, n_eval, seed=0))


def downstream_data(profile: Profile, dataset: str, n_train: int, seed: int, split: str,
                    val_fraction: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, eval images, eval labels) of :func:`downstream_indices`; grey images as RGB."""
    tr, ev = downstream_indices(profile, dataset, n_train, seed, split, val_fraction)
    train = data.load(dataset, "train")
    evaluated = data.load(dataset, DOWNSTREAM[dataset]) if split == "test" else train
    rgb = (lambda x: data.as_rgb(x, profile.image_size)) if train.images.shape[1] == 1 else (lambda x: x)
    return rgb(train.images[tr]), train.targets[tr], rgb(evaluated.images[ev]), evaluated.targets[ev]


def build_model_and_prior(profile: Profile, p: RunSpec, num_classes: int, a: Approach,
                          wrap: Callable[[nn.Module, int], nn.Module] = Classifier) -> tuple[nn.Module, Prior | None]:
    """The downstream model ``wrap(backbone, num_classes)`` (a backbone initialised per the approach ``a``, then a new
    ``head``) and the prior over all its parameters (backbone first, then head; None where the approach's family puts
    weight decay in the optimiser instead: :mod:`.families`)."""
    if p.prior_protocol is not None:          # keyed on a prior (grid.keyed_on_prior): it must be this one
        check_protocol(profile, p.prior_kind, p.prior_protocol)
    if a.init == "pretrained":
        backbone = load_source_model(profile, p.prior_kind, "swa").backbone
    else:
        backbone = build_backbone(profile.model, width=profile.width)
    model = wrap(backbone, num_classes)
    return model, family(a.prior).build(profile, p, backbone, sum(q.numel() for q in model.head.parameters()))


def cyclical_schedule(a: Approach, p: RunSpec) -> CyclicalSchedule:
    """The run's learning-rate schedule: ``cycles`` cosine cycles, the first ``burnin_cycles`` kept out of the BMA
    and ``bma_samples`` spread over the rest. A noise-free optimiser has no exploration phase: MAP runs take the
    cosine schedule alone (one cycle)."""
    per_cycle = max(1, p.bma_samples // (p.cycles - p.burnin_cycles))
    return CyclicalSchedule(p.steps, p.cycles, p.lr, p.explore_fraction if a.bayes else 0.0,
                            samples_per_cycle=per_cycle, burnin_cycles=p.burnin_cycles)


class Fit(NamedTuple):
    """What :func:`fit_or_sample` returns: the states to predict with, the cycle each ended (a sampler's collected
    samples; the final state of an optimiser, in its only cycle), the training wall time, and what a variational fit
    learned (its prior widths by run-parameter name, and q's sigma)."""
    states: list[dict]
    cycles: list[int]
    train_time_s: float
    learned: dict | None = None


# Set (to anything non-empty) where nothing may train a downstream run: `make test` executes the notebooks so, after
# the workers made their runs, to show that reading results never trains.
READ_ONLY = "REPRO_READ_ONLY"


def fit_or_sample(model: nn.Module, prior: Prior | None, a: Approach, p: RunSpec, x: Tensor, y: Tensor,
                  transform, loss_fn, num_data: int | None = None, compile: bool = False) -> Fit:
    """Optimise (MAP, SGD transfer) or sample (SGLD/SGHMC with a cyclical schedule) on (x, y): the downstream loop,
    counted in steps with a per-step schedule and samples kept mid-run (pre-training's :func:`repro.train.fit` counts
    epochs and checkpoints each one, for hours-long runs that must resume).

    The loss is ``loss_fn(model(xb), yb)`` (a mean over the minibatch's observations) plus -log p(theta)/N, the
    temperature convention of :mod:`repro.method.samplers`, at the run's ``temperature`` (0 for MAP, checked by
    :class:`.spec.RunSpec`). N is ``num_data``, the observations in (x, y) (segmentation: its labelled
    pixels), by default one per example. The model's forward pass runs in the run's ``precision`` and is compiled if
    ``compile`` (:func:`repro.compute.training_loss`). Returns a :class:`Fit`. Refused while ``REPRO_READ_ONLY`` is
    set (:data:`READ_ONLY`).
    """
    if os.environ.get(READ_ONLY):
        raise RuntimeError(f"a downstream run was about to train with {READ_ONLY} set: reading results must not train")
    N = len(x) if num_data is None else num_data
    # channels-last: oneDNN's CPU convolutions are faster in it (python -m repro.bench step); the parameters' flat
    # order, which the priors use, is their logical order and does not change
    model.to(memory_format=torch.channels_last)
    params = [q for q in model.parameters() if q.requires_grad]
    gen = torch.Generator().manual_seed(p.seed * 7919 + p.member)
    opt = algorithm(p.sampler).build(params, p, N, prior, gen)      # its own class: .algorithms
    schedule = cyclical_schedule(a, p)
    batch_loss = training_loss(loss_fn, p.precision, compile)
    batch_size = min(p.batch_size, len(x))
    samples: list[dict] = []
    cycles: list[int] = []
    report_at = progress_steps(p.steps)
    t0 = time.perf_counter()
    step, epoch = 0, 0
    model.train()
    while step < p.steps:
        # ensemble members share the data subset (seed) but not the batch order or initialisation (member)
        for xb, yb in data.batches(x, y, batch_size, shuffle=True, seed=(p.seed * 1000 + p.member) * 100_003 + epoch,
                                   transform=transform, drop_last=True):
            if step >= p.steps:
                break
            schedule.apply(opt, step)
            opt.zero_grad(set_to_none=True)
            loss = batch_loss(model, channels_last(xb), yb)
            check_finite(loss, "training loss")
            loss.backward()
            opt.step()                                          # adds the prior (its stiff diagonal part exactly)
            if prior is not None:
                check_finite(opt.log_prior, "prior log-density")
            if a.bayes and schedule.collect_at(step):
                samples.append({k: v.clone() for k, v in model.state_dict().items()})
                cycles.append(schedule.cycle_of(step))
            step += 1
            if step in report_at:   # through logging, so a worker's log shows it and a notebook stays quiet
                log.info("%s seed %s: step %d/%d (%d %%), loss %.4g, %.0f s elapsed%s", p.approach, p.seed, step,
                         p.steps, 100 * step // p.steps, loss.item(), time.perf_counter() - t0,
                         f"; sigma {opt.sigma:.3g}, widths {opt.widths}" if isinstance(opt, DataEmphasizedVI) else "")
        epoch += 1
    learned = None
    if isinstance(opt, DataEmphasizedVI):
        opt.finish()                                            # the parameters back at q's mean
        learned = opt.learned
    if not all(torch.isfinite(q).all() for q in params):
        raise DivergenceError("parameters became non-finite")
    if a.bayes:
        return Fit(samples, cycles, time.perf_counter() - t0)
    return Fit([model.state_dict()], [schedule.cycles - 1], time.perf_counter() - t0, learned)


def run_transfer(profile: Profile, p: RunSpec) -> dict:
    """Train one downstream run and evaluate it. Returns metrics and ``predictions`` (eval probabilities)."""
    a = p.approach_
    seed_everything(p.seed * 1000 + p.member)
    x, y, ex, ey = downstream_data(profile, p.dataset, p.n_train, p.seed, p.split, profile.val_fraction)
    model, prior = build_model_and_prior(profile, p, int(data.DATASETS[p.dataset].num_classes), a)
    # without augmentation the likelihood is that of the n stored images (notebook 05's T = 1 ablation)
    transform = data.train_transform(p.dataset if p.dataset != "fashion-mnist" else "cifar10",
                                     profile.image_size) if p.augment else None
    states, cycles, train_time, learned = fit_or_sample(model, prior, a, p, x, y, transform, nn.functional.cross_entropy,
                                                        compile=profile.compile)
    # BN refresh: each sample's BatchNorm statistics re-estimated on its augmented training images (else its running
    # ones), as SWA's bn_update over the training loader
    bn_images = data.augmented(x, transform, seed=p.seed) if p.bn_refresh else None
    extra = hooks(profile, p, prior)              # what the studies measure besides the BMA (.evaluations)
    added = [h.images() for h in extra]
    bounds = list(itertools.accumulate((0 if i is None else len(i) for i in added), initial=len(ey)))
    images = torch.cat([ex, *(i for i in added if i is not None)]) if any(i is not None for i in added) else ex
    each = []
    for q in sample_probs(model, states, images, bn_images=bn_images):     # the model holds each state in turn
        each.append(q[:len(ey)])
        for h, start, end in zip(extra, bounds, bounds[1:]):
            h.sample(model, q[start:end])
    probs = torch.stack(each).mean(0)
    out = {**classification_metrics(probs, ey), "n_train_used": len(x), "n_eval": len(ey),
           "samples_collected": len(states), "train_time_s": train_time}
    if learned:                                   # a variational fit: the widths it learned, and q's sigma
        out |= {f"learned_{k}": v for k, v in learned.items()}
    predictions = {"probs": probs.half(), "labels": ey}
    for h in extra:
        metrics, saved = h.finish(model, states, cycles, each, ex, ey)
        out, predictions = out | metrics, predictions | saved
    return out | {"predictions": predictions}
