"""The study's one approach vocabulary, for transfer and segmentation alike, and the one check of a run's parameters.

An approach is three choices (paper Section 4; the numbers are the paper's):

=========================  ===================================  ==============  =========
approach                   prior over the backbone               initialisation  inference
=========================  ===================================  ==============  =========
bayes_learned (1)          learned N(mu, lambda Sigma + eps I)   SWA mean        sampler
map_learned (2)            learned                               SWA mean        map
sgd_transfer (3)           none (ordinary weight decay)          SWA mean        map
bayes_nonlearned (4)       N(0, alpha I) over all parameters     random          sampler
map_nonlearned (5)         N(0, alpha I) over all parameters     random          map
bayes_isotropic (7)        N(mu, alpha I)                        SWA mean        sampler
map_isotropic              N(mu, alpha I)                        SWA mean        map
vi_learned                 learned                               SWA mean        variational
vi_isotropic               N(mu, alpha I)                        SWA mean        variational
vi_nonlearned              N(0, alpha I) over all parameters     random          variational
=========================  ===================================  ==============  =========

Learned-mean priors put N(0, head_var I) on the new head. The deep ensemble (6) is ``sgd_transfer`` runs that differ
only in ``member``. A run adds the **prior kind** (``ssl``, ``supervised``, ``supervised_matched``: which source prior
and backbone; ``none`` for a random initialisation) and the **temperature** T: ``map`` optimises (T = 0, SGD with
momentum, one prediction); ``sampler`` runs SGLD/SGHMC targeting p(theta | data)^(1/T) and predicts with a BMA
(T = 0 is the cyclical schedule without noise); ``variational`` (an extension, not the paper's: notebook 10) fits
q = N(m, sigma^2 I) on the data-emphasized (``de_elbo``) or plain (``elbo``) ELBO, learning the prior's widths
(lambda, alpha, head variance) as it goes (:mod:`repro.method.variational`), and predicts once, with m; its learned
widths then feed MAP and sampler runs. The temperature a run records is the one its sampler holds (0 for the others).

Segmentation starts every approach from a pre-trained backbone, as the paper fine-tunes ImageNet-initialised networks
throughout: its ``bayes_nonlearned`` is N(0, alpha I) around a supervised initialisation (:data:`TASKS`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..compute import check_precision
from ..method.samplers import check_temperature
from ..method.variational import OBJECTIVES
from ..profiles import Profile
from .pretrain import KINDS

PRIORS = ("learned", "isotropic", "isotropic_mean", "weight_decay")
INFERENCES = {"map": ("sgd",), "sampler": ("sgld", "sghmc"), "variational": OBJECTIVES}  # inference -> its algorithms
# where a run is evaluated: "val" holds out val_fraction of its n images (tuning); "test" trains on all n and scores
# the test split; "holdout" trains on all n and scores a fixed set of training-split images kept out of the holdout
# runs' training subsets (notebook 09's learning curves: precise, and never the test split)
SPLITS = ("val", "test", "holdout")


@dataclass(frozen=True)
class Approach:
    prior: str       # one of PRIORS: "isotropic" is zero-mean over all parameters, "isotropic_mean" centred on mu
    init: str        # "pretrained" (the SWA mean of the prior kind's source model) | "random"
    inference: str   # "map" (optimise at T = 0, predict once) | "sampler" (SG-MCMC at temperature T, BMA)
                     # | "variational" (fit q and the prior's widths on an ELBO, predict once with q's mean)

    @property
    def bayes(self) -> bool:
        return self.inference == "sampler"


APPROACHES: dict[str, Approach] = {
    "bayes_learned": Approach("learned", "pretrained", "sampler"),
    "map_learned": Approach("learned", "pretrained", "map"),
    "sgd_transfer": Approach("weight_decay", "pretrained", "map"),
    "bayes_nonlearned": Approach("isotropic", "random", "sampler"),
    "map_nonlearned": Approach("isotropic", "random", "map"),
    "bayes_isotropic": Approach("isotropic_mean", "pretrained", "sampler"),
    "map_isotropic": Approach("isotropic_mean", "pretrained", "map"),
    "vi_learned": Approach("learned", "pretrained", "variational"),
    "vi_isotropic": Approach("isotropic_mean", "pretrained", "variational"),
    "vi_nonlearned": Approach("isotropic", "random", "variational"),
}

FIVE_WAY = ("bayes_learned", "map_learned", "sgd_transfer", "bayes_nonlearned", "map_nonlearned")   # the paper's (1)-(5)
LABELS = {"bayes_learned": "(1) Bayes + learned", "map_learned": "(2) MAP + learned", "sgd_transfer": "(3) SGD transfer",
          "bayes_nonlearned": "(4) Bayes + non-learned", "map_nonlearned": "(5) MAP + non-learned",
          "bayes_isotropic": "(7) Bayes + isotropic N(μ, αI)", "map_isotropic": "MAP + isotropic N(μ, αI)",
          "deep_ensemble": "(6) deep ensemble", "vi_learned": "VI + learned", "vi_isotropic": "VI + isotropic N(μ, αI)",
          "vi_nonlearned": "VI + non-learned"}                            # as tables and figures name them
SHORT = {k: v.split(" ")[0] for k, v in LABELS.items()}

# How a segmentation run counts the observations N of its posterior (issue #19, amended 2026-11-29); the loss is always
# the mean over a minibatch's labelled pixels. "pixel": N is the labelled pixels, the likelihood the model's pixel-wise
# softmax states (pixels conditionally independent), so that T = 1 is its posterior. "image": N is the images; that is
# the pixel likelihood to the power 1/P (P ~ 1e4 labelled pixels per CamVid image at the cpu profile's size), a
# posterior far hotter than its T says; the first protocol ran so, and its runs, recorded before this parameter existed,
# carry none (:func:`likelihood_of`). Only runs whose objective has a prior term carry "pixel": SGD transfer's weight
# decay does not depend on N, so its runs keep their keys.
LIKELIHOODS = ("pixel", "image")


def check_likelihood(name: str) -> str:
    """One clear error for an unknown likelihood count (:data:`LIKELIHOODS`); returns ``name``."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {name!r}")
    return name


def likelihood_of(p: dict) -> str:
    """A segmentation run's likelihood count; ``"image"`` where none is recorded (the first convention)."""
    return check_likelihood(p.get("likelihood", UNRECORDED["likelihood"]))


def precision_of(p: dict) -> str:
    """A run's training precision (:mod:`repro.compute`); ``"fp32"`` where none is recorded."""
    return check_precision(p.get("precision", UNRECORDED["precision"]))


# The versions of the samplers' code that change a run's result, and what each runs: version 1, SGHMC's exact
# rotation at a fixed step (coordinates whose angle is k pi never mix: repro.method.samplers); version 2, each SGHMC
# step's length drawn from U(0.5, 1.5) x the step (``jitter`` 0.5), which breaks that resonance and keeps the target.
# SGLD and the optimisers are the same in every version; a run of them stays at version 1.
SGHMC_JITTER = {1: 0.0, 2: 0.5}


def sampler_version_of(p: dict) -> int:
    """A run's sampler version (:data:`SGHMC_JITTER`); 1 where none is recorded. One clear error for an unknown
    version, or a version other than 1 on a run that takes no SGHMC sampler."""
    version = p.get("sampler_version", UNRECORDED["sampler_version"])
    if version not in SGHMC_JITTER:
        raise ValueError(f"sampler_version must be one of {', '.join(map(str, SGHMC_JITTER))}, got {version!r}")
    if version != 1 and p.get("sampler") != "sghmc":
        raise ValueError(f"sampler_version {version} changes SGHMC only; a {p.get('sampler')!r} run is version 1")
    return version


# Run parameters added after runs were recorded without them, and the value those runs had: a run at that value
# leaves the parameter out (:func:`recorded`), so that its key (a hash of its parameters) is the key it was recorded
# under.
UNRECORDED = {"likelihood": "image", "precision": "fp32", "sampler_version": 1}


def recorded(p: dict) -> dict:
    """``p`` without the parameters at their :data:`UNRECORDED` value: the parameters a run is keyed on."""
    return {k: v for k, v in p.items() if UNRECORDED.get(k, ...) != v}

# A sampler runs in two temperature regimes (issue #19): the posterior the paper states (T = 1) and the authors'
# regime (cold: T chosen on validation from the profile's cold_temperatures; their code ran at T ~ 4e-8).
REGIMES = {"T1": "T = 1", "cold": "cold T"}


def regime_of(approach: str, temperature: float) -> str:
    """A run's temperature regime: ``"map"`` for an optimiser (MAP, SGD, a variational fit), else ``"T1"`` (T = 1) or
    ``"cold"`` (T < 1)."""
    if not APPROACHES[approach].bayes:
        return "map"
    if temperature > 1:
        raise ValueError(f"T = {temperature} > 1 belongs to no temperature regime of the study")
    return "T1" if temperature == 1 else "cold"


def in_regime(df, regime: str):
    """The rows of every optimiser and the sampler rows of temperature ``regime`` (a verdict's data in that regime);
    the row's regime in a column ``regime``."""
    if regime not in REGIMES:
        raise ValueError(f"unknown temperature regime {regime!r}; valid: {', '.join(REGIMES)}")
    df = with_regime(df)
    return df[df.regime.isin(["map", regime])]


def with_regime(df):
    """``df`` with each row's regime (:func:`regime_of`) in a column ``regime``, and an ``arm`` column naming the
    approach and, for a sampler, its regime (``bayes_learned (cold)``): how tables and figures tell the arms apart."""
    regime = [regime_of(a, t) for a, t in zip(df.approach, df.temperature)] if len(df) else []
    df = df.assign(regime=regime)
    return df.assign(arm=[a if r == "map" else f"{a} ({r})" for a, r in zip(df.approach, df.regime)])


ARM_LABELS = LABELS | {f"{a} ({r})": f"{LABELS[a]}, {label}" for a in APPROACHES if APPROACHES[a].bayes
                       for r, label in REGIMES.items()}


@dataclass(frozen=True)
class Task:
    """What differs between the downstream tasks: which approaches they run and their defaults."""
    approaches: tuple[str, ...]
    all_pretrained: bool       # every approach starts from a pre-trained backbone (segmentation)
    default_kind: str          # prior kind of a pre-trained approach unless a run says otherwise
    scale: float               # default lambda of the learned prior
    sampler: str               # default sampler of the Bayes approaches
    batch_size: str            # the profile knob holding its batch size
    datasets: bool             # a run names its dataset and training-set size (transfer) or uses the profile's


TASKS: dict[str, Task] = {
    "transfer": Task(tuple(APPROACHES), False, "ssl", 1e3, "sghmc", "downstream_batch_size", True),
    "segmentation": Task(("sgd_transfer", "bayes_nonlearned", "bayes_learned", "map_learned"), True, "supervised", 1e4,
                         "sgld", "segmentation_batch_size", False),
}


def lookup(name: str, task: str = "transfer") -> Approach:
    """The approach called ``name`` as ``task`` runs it; one clear error for an unknown name."""
    t = _task(task)
    if name not in t.approaches:
        raise ValueError(f"unknown {task} approach {name!r}; valid: {', '.join(t.approaches)}")
    a = APPROACHES[name]
    return dataclasses.replace(a, init="pretrained") if t.all_pretrained else a


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return TASKS[task]


def default_params(profile: Profile, task: str, approach: str, **overrides) -> dict:
    """Every hyperparameter of a ``task`` run of ``approach``, with the profile's defaults; ``overrides`` win."""
    t, a = _task(task), lookup(approach, task)
    bayes = a.bayes
    if task == "transfer":
        alpha = 1e-2 if a.prior == "isotropic_mean" else 1.0
    else:
        alpha = 0.1
    p = dict(approach=approach, prior_kind=t.default_kind if a.init == "pretrained" else "none",
             rank=profile.swag_max_rank, scale=t.scale, head_var=1.0, alpha=alpha, weight_decay=5e-4)
    if t.datasets:
        p |= dict(dataset="cifar10", n_train=profile.train_sizes[0])
    algorithm = {"map": "sgd", "sampler": t.sampler, "variational": OBJECTIVES[0]}[a.inference]
    p |= dict(seed=0, split="test", sampler=algorithm, temperature=1.0 if bayes else 0.0,
              lr=0.03, momentum=0.9, steps=0, batch_size=getattr(profile, t.batch_size),
              cycles=profile.cycles if bayes else 1, burnin_cycles=0,
              bma_samples=profile.bma_samples if bayes else 1, explore_fraction=0.5, member=0,
              bn_refresh=profile.bn_refresh and bayes and bool(t.datasets), precision="fp32",
              sampler_version=1)
    if not t.datasets and a.prior != "weight_decay":
        p["likelihood"] = LIKELIHOODS[0]
    unknown = sorted(set(overrides) - set(p))
    if unknown:
        raise ValueError(f"unknown {task} run parameter(s) {unknown}; valid: {', '.join(p)}")
    p |= overrides
    p = recorded(p)
    if "steps" not in overrides:      # the budget of the run's training-set size (notebook 09's rule)
        p["steps"] = profile.steps_for(p["n_train"]) if t.datasets else profile.segmentation_steps
    if "burnin_cycles" not in overrides:   # a sampler's first cycle is burn-in, kept out of the BMA
        p["burnin_cycles"] = int(bayes and p["cycles"] > 1)
    return p


def check_params(p: dict, task: str = "transfer") -> Approach:
    """One clear error for a run parameter out of range; returns the run's approach. The only place they are checked."""
    a = lookup(p["approach"], task)
    for key in ("scale", "head_var", "alpha", "lr"):
        if not p[key] > 0 or not math.isfinite(p[key]):
            raise ValueError(f"{key} must be a finite number > 0, got {p[key]}")
    check_temperature(p["temperature"])
    if not a.bayes and p["temperature"] != 0:
        raise ValueError(f"approach {p['approach']!r} runs no sampler: its temperature is 0, got {p['temperature']}")
    if p["sampler"] not in INFERENCES[a.inference]:
        raise ValueError(f"approach {p['approach']!r} takes sampler {' or '.join(INFERENCES[a.inference])}, "
                         f"got {p['sampler']!r}")
    likelihood_of(p)
    precision_of(p)
    sampler_version_of(p)
    splits = SPLITS if _task(task).datasets else SPLITS[:2]     # segmentation has its own val and test splits
    if p["bn_refresh"] and not _task(task).datasets:
        raise ValueError("bn_refresh (BatchNorm re-estimated per sample) is measured on transfer runs only")
    if p["split"] not in splits:
        raise ValueError(f"a {task} run's split must be one of {', '.join(splits)}, got {p['split']!r}")
    if not 0 <= p["burnin_cycles"] < p["cycles"]:
        raise ValueError(f"burnin_cycles must be in 0..cycles - 1 = {p['cycles'] - 1}, got {p['burnin_cycles']}")
    valid_kinds = KINDS if a.init == "pretrained" else ("none",)
    if p["prior_kind"] not in valid_kinds:
        raise ValueError(f"approach {p['approach']!r} ({a.init} initialisation) takes prior_kind "
                         f"{' or '.join(valid_kinds)}, got {p['prior_kind']!r}")
    return a
