"""Synthetic run tables with a known effect, to check the claim rules' error rates (tests/test_verdict_simulator.py).

Noise model, set to what the ``cpu`` grid shows (3 seeds, 2 000 test images): a run's accuracy is the arm's true
accuracy plus a seed effect shared by every arm of that seed and size (SD ``sigma_seed``, the pairing) plus an
arm x seed effect (SD ``sigma_arm``); which images it gets right follows a Gaussian copula: a per-image difficulty
shared by all runs (weight ``rho``), a per-(seed, image) part shared by the arms of that seed (a seed fixes the
training subset, initialisation and batch order; share ``kappa`` of the rest), and the run's own part. Two seeds of
one approach then disagree on ~20 % of the images and two approaches of one seed on ~10 % (measured here: 19-23 %
across seeds; 3 % between MAP + learned and SGD transfer of one seed, which are nearly the same model).

Other metrics (C7-C9) follow the same 0/1 outcomes and draw no extra random numbers: per-image NLL is
``1.5 - correct + nll`` (the arm's true NLL offset in nats; per-image SD ~0.5 from the 0/1 part); per-image
``overconfidence`` is the run's confidence ``p + overconfidence`` (``p`` its true accuracy, the arm's gap added)
minus ``correct``; the shift set is the test set (``shift_accuracy``/``shift_nll`` equal ``accuracy``/``nll``); a
run's ``miou`` is run-level only, its ``p`` (true value + seed effect + arm x seed effect, so C9 uses the paired
t-test over seeds). Each claim's scenario is its truth table (``*_truth``); the claims registry (:mod:`repro.claims`,
``python -m repro.claims``) pairs them with the rules and prints each rule's rate of each word.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..experiments.approaches import FIVE_WAY
from . import stats, wording

SIZES = (100, 300, 1000, 5000)


def simulate(truth: dict[tuple, float], rng: np.random.Generator, seeds: int = 3, n_images: int = 2000,
             sigma_seed: float = 0.01, sigma_arm: float = 0.006, rho: float = 0.75, kappa: float = 0.8, val: bool = False,
             n_val: int = 200) -> tuple[pd.DataFrame, dict]:
    """Rows and per-image outcomes for ``truth[(column values...)] = true accuracy`` (or a dict with ``accuracy`` and
    optional ``nll``/``overconfidence`` offsets, see the module's noise model); keys of ``truth`` are dicts frozen as
    tuples of (column, value) pairs and must include ``n_train``. ``val`` adds one-seed validation rows."""
    z = rng.standard_normal(n_images)
    zv = rng.standard_normal(n_val)
    shared, paired = {}, {}
    rows, outcomes = [], {}
    for i, (spec, acc) in enumerate(truth.items()):
        spec, arm = dict(spec), (acc if isinstance(acc, dict) else {"accuracy": acc})
        acc, dn, gap = arm["accuracy"], arm.get("nll", 0.0), arm.get("overconfidence", 0.0)
        n = spec["n_train"]
        if n not in shared:
            shared[n] = rng.normal(0, sigma_seed, seeds)
            paired[n] = rng.standard_normal((seeds, n_images))
        p = np.clip(acc + shared[n] + rng.normal(0, sigma_arm, seeds), 0.01, 0.99)
        own = np.sqrt(kappa) * paired[n] + np.sqrt(1 - kappa) * rng.standard_normal((seeds, n_images))
        latent = np.sqrt(rho) * z + np.sqrt(1 - rho) * own
        correct = (latent < sps.norm.ppf(p)[:, None]).astype(float)
        for s in range(seeds):
            key = f"r{i}-{s}"
            c = correct[s]
            out = {"accuracy": c, "nll": 1.5 - c + dn, "overconfidence": p[s] + gap - c}
            outcomes[key] = out | {"shift_accuracy": c, "shift_nll": out["nll"]}
            rows.append({**spec, "seed": s, "split": "test", "key": key, **{m: v.mean() for m, v in outcomes[key].items()},
                         "miou": p[s], "status": "ok"})
        if val:
            lat = np.sqrt(rho) * zv + np.sqrt(1 - rho) * rng.standard_normal(n_val)
            c = (lat < sps.norm.ppf(p[0])).astype(float)
            rows.append({**spec, "seed": 0, "split": "val", "key": f"v{i}", "accuracy": c.mean(),
                         "nll": 1.5 - c.mean() + dn, "status": "ok"})
    return pd.DataFrame(rows), outcomes


def _t(**kw) -> tuple:
    return tuple(sorted(kw.items()))


# ------------------------------------------------------------------------------------- scenarios per claim
# Each returns the truth table for an effect of size ``delta`` (negative: the claimed effect reversed; 0: a null).

def rank_truth(delta: float) -> dict:
    t = {_t(approach="bayes_learned", rank=k, n_train=1000, dataset="cifar10"): 0.40 + (delta if k == 20 else 0.0)
         for k in (0, 1, 5, 20)}
    t[_t(approach="bayes_isotropic", rank=20, n_train=1000, dataset="cifar10")] = 0.40
    return t


def _five_way(value: Callable[[str, int], float | dict]) -> dict:
    """The five approaches of :data:`repro.experiments.approaches.FIVE_WAY` on CIFAR-10 at every size (SSL prior for (1)-(3))."""
    return {_t(approach=a, prior_kind="ssl" if a in FIVE_WAY[:3] else "none", n_train=n, dataset="cifar10"):
            value(a, j) for j, n in enumerate(SIZES) for a in FIVE_WAY}


def ordering_truth(delta: float) -> dict:
    return _five_way(lambda a, j: 0.30 + 0.05 * j + delta * (4 - FIVE_WAY.index(a)))


def efficiency_truth(delta: float) -> dict:
    """gain(n) of (1) over (3): ``delta`` at the interior sizes, 0 at the ends; a reversal makes every gain negative."""
    t = {}
    for j, n in enumerate(SIZES):
        g = delta if (0 < j < len(SIZES) - 1 or delta < 0) else 0.0
        t[_t(approach="sgd_transfer", prior_kind="ssl", n_train=n, dataset="cifar10")] = 0.35 + 0.05 * j
        t[_t(approach="bayes_learned", prior_kind="ssl", n_train=n, dataset="cifar10")] = 0.35 + 0.05 * j + g
    return t


def ssl_truth(delta: float) -> dict:
    t = {}
    for j, n in enumerate(SIZES):
        for a in ("bayes_learned", "map_learned", "sgd_transfer"):
            base = 0.35 + 0.05 * j
            t[_t(approach=a, prior_kind="ssl", n_train=n, dataset="cifar10")] = base + delta
            t[_t(approach=a, prior_kind="supervised_matched", n_train=n, dataset="cifar10")] = base
            t[_t(approach=a, prior_kind="supervised", n_train=n, dataset="cifar10")] = base + 0.1
    return t


def ensemble_truth(delta: float) -> dict:
    return {_t(approach="bayes_learned", n_train=1000, dataset="cifar10"): 0.50 + delta,
            _t(approach="deep_ensemble", n_train=1000, dataset="cifar10"): 0.50}


def scale_truth(delta: float) -> dict:
    """An interior optimum at lambda = 1e2 that beats both ends by ``delta`` (a reversal: both ends better)."""
    return {_t(approach=a, scale=lam, rank=20, n_train=1000, dataset="cifar10", prior_kind="ssl"):
            0.45 + (delta if lam == 1e2 else 0.0) for a in ("map_learned", "bayes_learned") for lam in (1.0, 1e2, 1e4)}


def calibration_truth(delta: float) -> dict:
    """Equal accuracy; (1) has ``delta`` nats lower NLL than (2)-(5) (twice that below (2), (3), (5), since (4) is
    ``delta`` below (3)); (3) is over-confident by ``delta``."""
    nll = {"bayes_learned": -2 * delta, "bayes_nonlearned": -delta}
    return _five_way(lambda a, j: {"accuracy": 0.35 + 0.05 * j, "nll": nll.get(a, 0.0),
                                   "overconfidence": delta if a == "sgd_transfer" else 0.0})


def shift_truth(delta: float) -> dict:
    """(1) beats each of (2)-(5) by ``delta`` in (shift) accuracy."""
    return _five_way(lambda a, j: 0.30 + 0.05 * j + (delta if a == "bayes_learned" else 0.0))


def segmentation_truth(delta: float) -> dict:
    """CamVid mIoU: SGLD + supervised learned prior ``delta`` above SGD transfer and SGLD + non-learned prior; the SSL
    learned prior half as far."""
    arms = {("bayes_learned", "supervised"): delta, ("bayes_learned", "ssl"): delta / 2,
            ("sgd_transfer", "supervised"): 0.0, ("bayes_nonlearned", "supervised"): 0.0}
    return {_t(approach=a, prior_kind=k, n_train=367, dataset="camvid"): 0.55 + d for (a, k), d in arms.items()}


def rates(simulation, delta: float, n_sims: int = 100, seed: int = 0, n_boot: int = 200) -> pd.Series:
    """Fraction of ``n_sims`` simulations of an effect ``delta`` under ``simulation`` (:class:`repro.claims.Simulation`:
    its truth table and rule) that get each verdict word."""
    rng = np.random.default_rng(seed)
    old, stats.N_BOOT = stats.N_BOOT, n_boot
    try:
        words = [simulation.rule(*simulate(simulation.truth(delta), rng, val=simulation.val)).word
                 for _ in range(n_sims)]
    finally:
        stats.N_BOOT = old
    return pd.Series(words).value_counts(normalize=True).reindex(wording.VERDICTS, fill_value=0.0)
