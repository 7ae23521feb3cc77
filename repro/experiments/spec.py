"""A downstream run, typed: :class:`RunSpec`, every parameter of one transfer or segmentation run, checked in one place,
and the key the resumable grid records it under.

**What a key covers.** A run's key is the first 12 hex digits of the sha1 of the canonical JSON of its task and its
keyed fields (:func:`repro.runner.Run`). Every field is keyed, with three exceptions, each declared on the field:

* a field that does not apply to the task is None and is not keyed (segmentation has no ``dataset`` or ``n_train``);
* a field **added** after runs were recorded without it (``added=``) is keyed only where it differs from its default,
  the value those runs had: adding a field with a default therefore leaves every recorded key unchanged;
* the fields the second protocol introduced (``since=2``: the burn-in cycle and BatchNorm refresh) are not keyed on
  runs of the first ``protocol``, which had neither; ``protocol`` itself is never keyed (those fields say it).

**Versions.** Code changes that change what a run computes are fields with a version number, so that a run made by
older code is never read back as one of newer code, and stays readable as what it was: ``protocol`` (1: the first
protocol, 200 steps, every cycle kept and no BatchNorm refresh; 2: the protocol of notebook 09, per-size budgets, a
burn-in cycle, samples recorded by cycle; the code re-makes protocol-2 runs only), ``sampler_version``
(each algorithm's ``versions``: :mod:`.algorithms`), ``evaluation_version`` (:data:`EVALUATION_VERSIONS`), the source prior's
``prior_protocol`` (its protocol hash, :mod:`.pretrain`) and ``key_version`` (this scheme). A new version is a new
number with a default of the old one, so no recorded key moves.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..compute import check_precision
from ..method.samplers import check_temperature
from ..profiles import Profile
from . import algorithms
from .approaches import LIKELIHOODS, SPLITS, TASKS, Approach, lookup
from .families import family
from .pretrain import KINDS
# What each version of the evaluation computes: 1, the BMA of the kept samples' softmax outputs on the run's evaluation
# split (and, for a CIFAR-10 test run, on the shifted set), BatchNorm statistics re-estimated per sample where
# ``bn_refresh``; metrics of repro.analysis.metrics.
EVALUATION_VERSIONS = (1,)
PROTOCOLS = (1, 2)
PROTOCOL = 2                 # the protocol this code runs
KEY_VERSION = 1              # the key scheme of this module


def _added(default: Any) -> Any:
    """A field added after runs were recorded without it: keyed only where it differs from ``default``."""
    return field(default=default, metadata={"added": True})


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Every parameter of one downstream run (:mod:`.approaches` for the vocabulary; :meth:`default` fills in a
    profile's defaults). Construction checks every field: one clear ``ValueError`` for a value out of range."""

    task: str                        # "transfer" | "segmentation" (the grid the run belongs to)
    approach: str
    prior_kind: str                  # the source prior and backbone (pretrain.KINDS), "none" for a random init
    rank: int                        # the learned prior's low-rank part: deviations kept
    scale: float                     # lambda: the learned prior's covariance multiplier
    head_var: float                  # variance of the new head's N(0, head_var I) (learned-mean priors)
    alpha: float                     # variance of an isotropic prior
    weight_decay: float              # SGD transfer's
    dataset: str | None              # transfer: the downstream dataset; segmentation: None (the profile's)
    n_train: int | None              # transfer: training-set size; segmentation: None (the whole split)
    seed: int                        # the training subset, batch order and initialisation
    split: str                       # where the run is evaluated (approaches.SPLITS)
    sampler: str                     # the inference's algorithm (.algorithms; the name predates the optimisers')
    temperature: float               # T of a sampler (0 for an optimiser)
    lr: float
    momentum: float
    steps: int
    batch_size: int
    cycles: int
    burnin_cycles: int = field(metadata={"since": 2})       # cycles kept out of the BMA (first protocol: none)
    bma_samples: int
    explore_fraction: float          # share of a sampler's cycle run with noise
    member: int                      # deep-ensemble member
    bn_refresh: bool = field(metadata={"since": 2})         # BatchNorm re-estimated per sample (first protocol: no)
    likelihood: str = _added("image")                       # segmentation: what N counts (approaches.LIKELIHOODS)
    precision: str = _added("fp32")                         # training precision (repro.compute)
    augment: bool = _added(True)      # crop and flip the training images (False: the likelihood of the n stored images)
    prior_protocol: str | None = _added(None)               # the source prior's protocol hash (None: none, or unhashed)
    sampler_version: int = _added(1)
    evaluation_version: int = _added(1)
    key_version: int = _added(KEY_VERSION)
    protocol: int = field(default=PROTOCOL, metadata={"keyed": False})

    def __post_init__(self) -> None:
        for f in fields(self):      # types first: a key hashes JSON, where 1, 1.0 and True differ
            object.__setattr__(self, f.name, _typed(f, getattr(self, f.name)))
        self._check()

    # ------------------------------------------------------------------------------------------------ checks
    def _check(self) -> None:
        task = TASKS.get(self.task)
        if task is None:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        a = self.approach_
        for name in ("scale", "head_var", "alpha", "lr"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        check_temperature(self.temperature)
        if not a.bayes and self.temperature != 0:
            raise ValueError(f"approach {self.approach!r} runs no sampler: its temperature is 0, got {self.temperature}")
        algorithm = algorithms.algorithm(self.sampler)
        if algorithm.inference != a.inference:
            raise ValueError(f"approach {self.approach!r} takes sampler {' or '.join(algorithms.of(a.inference))}, "
                             f"got {self.sampler!r}")
        if task.datasets != (self.dataset is not None) or task.datasets != (self.n_train is not None):
            raise ValueError(f"a {self.task} run {'names' if task.datasets else 'takes no'} dataset and n_train")
        if self.likelihood not in LIKELIHOODS or (task.datasets and self.likelihood != "image"):
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)} (a transfer run counts images), "
                             f"got {self.likelihood!r}")
        check_precision(self.precision)
        if self.sampler_version not in algorithm.versions:
            raise ValueError(f"sampler_version of a {self.sampler!r} run must be one of "
                             f"{', '.join(map(str, algorithm.versions))}, got {self.sampler_version}")
        for name, valid in (("evaluation_version", EVALUATION_VERSIONS), ("protocol", PROTOCOLS),
                            ("key_version", (KEY_VERSION,))):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(map(str, valid))}, got {getattr(self, name)}")
        splits = SPLITS if task.datasets else SPLITS[:2]     # segmentation has its own val and test splits
        if (self.bn_refresh or not self.augment) and not task.datasets:
            raise ValueError("bn_refresh (BatchNorm re-estimated per sample) and augment=False are measured on transfer "
                             "runs only")
        if self.split not in splits:
            raise ValueError(f"a {self.task} run's split must be one of {', '.join(splits)}, got {self.split!r}")
        if not 0 <= self.burnin_cycles < self.cycles:
            raise ValueError(f"burnin_cycles must be in 0..cycles - 1 = {self.cycles - 1}, got {self.burnin_cycles}")
        valid_kinds = KINDS if a.init == "pretrained" else ("none",)
        if self.prior_kind not in valid_kinds:
            raise ValueError(f"approach {self.approach!r} ({a.init} initialisation) takes prior_kind "
                             f"{' or '.join(valid_kinds)}, got {self.prior_kind!r}")
        for name in ("steps", "batch_size", "cycles", "bma_samples", "rank", "seed", "member"):
            if getattr(self, name) < (1 if name in ("batch_size", "cycles", "bma_samples") else 0):
                raise ValueError(f"{name} must be >= {1 if name in ('batch_size', 'cycles', 'bma_samples') else 0}, "
                                 f"got {getattr(self, name)}")

    @property
    def approach_(self) -> Approach:
        """The approach as this run's task runs it (:func:`.approaches.lookup`)."""
        return lookup(self.approach, self.task)

    def current(self) -> "RunSpec":
        """This spec, if this code can make its run; else a ``ValueError`` (a first-protocol run is readable, not
        re-made: its code is gone)."""
        if self.protocol != PROTOCOL:
            raise ValueError(f"this run belongs to protocol {self.protocol}; this code makes protocol-{PROTOCOL} runs "
                             f"only")
        return self

    # ------------------------------------------------------------------------------------------------ keys
    def keyed(self) -> dict[str, Any]:
        """The fields the key hashes (see the module docstring), by name."""
        out = {}
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.name == "task" or meta.get("keyed", True) is False or value is None:
                continue
            if meta.get("added") and _same(value, f.default):
                continue
            if self.protocol < meta.get("since", 1):
                continue
            out[f.name] = value
        return out

    @property
    def key(self) -> str:
        """The run's key: as :class:`repro.runner.Run` computes it from :meth:`keyed` (the grid's CSV and prediction
        files are named by it)."""
        canonical = json.dumps({"study": self.task, "params": self.keyed()}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True)
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    def record(self) -> dict[str, Any]:
        """Every field that applies to the run (None ones left out), by name: the columns its CSV row holds."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "task" and getattr(self, f.name) is not None}

    @classmethod
    def from_record(cls, task: str, row: Mapping[str, Any]) -> "RunSpec":
        """The spec of a recorded row (a CSV row's cells, or :meth:`record`): a field the row lacks (absent, empty or
        NaN) takes its default, and the first protocol's fields, their first-protocol values."""
        present = {f.name: _parsed(f, row[f.name]) for f in fields(cls)
                   if f.name != "task" and not _missing(row.get(f.name))}
        protocol = int(float(present.get("protocol", PROTOCOL)))
        if protocol == 1:
            present = {"burnin_cycles": 0, "bn_refresh": False} | present
        if not TASKS.get(task, TASKS["transfer"]).datasets:
            present |= {"dataset": None, "n_train": None}
        return cls(task=task, **present)

    @classmethod
    def default(cls, profile: Profile, task: str, approach: str, **overrides) -> "RunSpec":
        """A ``task`` run of ``approach`` with the profile's defaults; ``overrides`` win (one clear error for an
        unknown name). The step budget is the profile's for the run's size (notebook 09's rule) and a sampler's first
        cycle is burn-in, unless overridden."""
        a, t = lookup(approach, task), TASKS[task]
        valid = {f.name for f in fields(cls)} - {"task", "approach", "key_version", "protocol"} - (
            set() if t.datasets else {"dataset", "n_train"})
        if unknown := sorted(set(overrides) - valid):
            raise ValueError(f"unknown {task} run parameter(s) {unknown}; valid: {', '.join(sorted(valid))}")
        bayes, prior = a.bayes, family(a.prior)
        p = dict(approach=approach, prior_kind=t.default_kind if a.init == "pretrained" else "none",
                 rank=profile.swag_max_rank, scale=t.scale, head_var=1.0,
                 alpha=prior.alpha if t.datasets else 0.1, weight_decay=5e-4,
                 dataset="cifar10" if t.datasets else None, n_train=profile.train_sizes[0] if t.datasets else None,
                 seed=0, split="test", sampler=t.sampler if bayes else algorithms.of(a.inference)[0],
                 temperature=1.0 if bayes else 0.0, lr=0.03, momentum=0.9, batch_size=getattr(profile, t.batch_size),
                 cycles=profile.cycles if bayes else 1, bma_samples=profile.bma_samples if bayes else 1,
                 explore_fraction=0.5, member=0, bn_refresh=profile.bn_refresh and bayes and t.datasets,
                 likelihood="pixel" if not t.datasets and prior.width is not None else "image")
        p |= overrides
        p.setdefault("steps", profile.steps_for(p["n_train"]) if t.datasets else profile.segmentation_steps)
        p.setdefault("burnin_cycles", int(bayes and p["cycles"] > 1))
        return cls(task=task, **p)


def _kind(f: dataclasses.Field) -> str:
    """The field's type without ``| None``: ``"int"``, ``"float"``, ``"bool"`` or ``"str"``."""
    return (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))).split(" | ")[0]


def _parsed(f: dataclasses.Field, value: Any) -> Any:
    """A recorded cell as field ``f``'s type: CSV text is parsed ("400", "400.0", "0.03", "True")."""
    if not isinstance(value, str) or _kind(f) == "str":
        return value
    if _kind(f) == "bool":
        return {"True": True, "False": False}.get(value, value)
    try:
        return float(value)
    except ValueError:
        return value                    # refused, with the field's name, by _typed


def _typed(f: dataclasses.Field, value: Any) -> Any:
    """``value`` as field ``f``'s type: integers stay exact (2.0 -> 2, 2.5 refused), floats are floats, booleans
    are True/False, text is text (a number is never read from text here: :func:`_parsed`); None only where the
    field allows it."""
    kind = _kind(f)
    if value is None:
        if "None" not in str(f.type):
            raise ValueError(f"{f.name} is required")
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:   # numpy scalar, 0-d tensor
        value = value.item()
    try:
        if kind == "bool":
            if type(value) is bool or (isinstance(value, (int, float)) and value in (0, 1)):
                return bool(value)
            raise ValueError
        if isinstance(value, str) or type(value) is bool:
            if kind in ("int", "float"):
                raise ValueError
        if kind == "int":
            if value != int(value):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if not isinstance(value, str) or not value:
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ValueError(f"{f.name} must be {'a' if kind != 'int' else 'an'} {kind}, got {value!r}") from None


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "") or (isinstance(value, float) and math.isnan(value))
