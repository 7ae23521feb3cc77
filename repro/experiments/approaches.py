"""The study's one approach vocabulary, for transfer and segmentation alike (a run's parameters: :mod:`.spec`).

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
from dataclasses import dataclass

from .algorithms import INFERENCES
from .families import family

# where a run is evaluated: "val" holds out val_fraction of its n images (tuning); "test" trains on all n and scores
# the test split; "holdout" trains on all n and scores a fixed set of training-split images kept out of the holdout
# runs' training subsets (notebook 09's learning curves: precise, and never the test split)
SPLITS = ("val", "test", "holdout")


@dataclass(frozen=True)
class Approach:
    prior: str       # its prior family (.families): "isotropic" is zero-mean over all parameters, "isotropic_mean"
                     # centred on mu
    init: str        # "pretrained" (the SWA mean of the prior kind's source model) | "random"
    inference: str   # "map" (optimise at T = 0, predict once) | "sampler" (SG-MCMC at temperature T, BMA)
                     # | "variational" (fit q and the prior's widths on an ELBO, predict once with q's mean)

    def __post_init__(self) -> None:
        family(self.prior)                        # one clear error for an unknown family
        if self.inference not in INFERENCES:
            raise ValueError(f"unknown inference {self.inference!r}; valid: {', '.join(INFERENCES)}")
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {self.init!r}")

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

# How a segmentation run counts the observations N of its posterior; the loss is always the mean over a minibatch's
# labelled pixels. "pixel": N is the labelled pixels, the likelihood the model's pixel-wise softmax states (pixels
# conditionally independent), so that T = 1 is its posterior. "image": N is the images; that is the pixel likelihood to
# the power 1/P (P ~ 1e4 labelled pixels per CamVid image at the cpu profile's size), a posterior far hotter than its T
# says (runs recorded before the parameter existed carry none: docs/history.md). Only runs whose objective has a prior
# term carry "pixel": SGD transfer's weight decay does not depend on N.
LIKELIHOODS = ("pixel", "image")


# A sampler runs in two temperature regimes: the posterior the paper states (T = 1) and the authors'
# regime (cold: T chosen on validation from the profile's cold_temperatures; their code ran at T ~ 4e-8).
REGIMES = {"T1": "T = 1", "cold": "cold T"}


def counterpart(approach: str, inference: str = "map") -> str:
    """The approach with ``approach``'s prior family and initialisation and the other ``inference`` (a sampler's MAP
    arm: ``bayes_learned`` -> ``map_learned``)."""
    a = APPROACHES[approach]
    for name, b in APPROACHES.items():
        if (b.prior, b.init, b.inference) == (a.prior, a.init, inference):
            return name
    raise ValueError(f"approach {approach!r} has no {inference} counterpart")


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


def arm_name(approach: str, regime: str = "map") -> str:
    """How tables and figures name an arm: the approach and, for a sampler, its temperature regime in brackets
    (``bayes_learned (cold)``); an optimiser's arm (regime ``"map"``) is its approach."""
    return approach if regime == "map" else f"{approach} ({regime})"


def arm_parts(arm: str) -> tuple[str, str]:
    """(approach, regime) of an arm's name (:func:`arm_name`)."""
    approach, _, regime = arm.partition(" (")
    return approach, regime.rstrip(")") or "map"


def with_regime(df):
    """``df`` with each row's regime (:func:`regime_of`) in a column ``regime``, and an ``arm`` column naming the
    approach and, for a sampler, its regime (``bayes_learned (cold)``): how tables and figures tell the arms apart."""
    regime = [regime_of(a, t) for a, t in zip(df.approach, df.temperature)] if len(df) else []
    df = df.assign(regime=regime)
    return df.assign(arm=[arm_name(a, r) for a, r in zip(df.approach, df.regime)])


ARM_LABELS = LABELS | {arm_name(a, r): f"{LABELS[a]}, {label}" for a in APPROACHES if APPROACHES[a].bayes
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
