"""The downstream studies of notebooks 03-10, each a list of settings on a task's grid, read from a snapshot of the
grids (:class:`.grid.Recorded`; the workers of :mod:`.workers` make what is missing).

Training budget (notebook 09, :mod:`.budget`), rank ablation (C2), scale sweep (C3), five-way comparison (C4-C6, C8 on
its shifted test set), temperature ablation, deep ensemble (C10), Fashion-MNIST five-way, segmentation (C9), and
notebook 10's extension (E1: widths learned by the data-emphasized ELBO, :mod:`.learned_scale`). Every setting takes
the hyperparameters its approach was tuned to on validation (:mod:`.tuning`). :data:`STAGES` names the studies the
workers make, each as a list of jobs.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import pandas as pd

from ..analysis.metrics import classification_metrics
from ..analysis.predictions import ensemble_predictions
from ..profiles import Profile
from .approaches import FIVE_WAY, LABELS, REGIMES, lookup
from .budget import learning_curves, sampler_curves, segmentation_curves
from .families import family
from .grid import Recorded
from .learned_scale import confirm, learned_scale_study
from .own_budget import PHASES, phase_jobs, rank_own, scale_own
from .pretrain import PRIMARY, STUDIED_KINDS
from .retune import retune_all
from .tuning import (TUNE_ORDERS, bayes_width_sweep, mid_slope, scale_sweep, segmentation_sweep, setting, sweep,
                     tuned, tuning_point, tuned_segmentation, widened)




def tuned_families(profile: Profile, worker: int = 0,
                   only: str | None = None) -> list[tuple[str, str, int, str, str]]:
    """(approach, kind, n, dataset, regime) of every tuned setting the studies use (on dataset ``only``, if given), in
    ``worker``'s order: the five-way approaches at every size (Fashion-MNIST: the SSL prior's), the isotropic
    learned-mean prior at ``study_n`` only (C2, C7)."""
    out = []
    for dataset, kinds in (("cifar10", STUDIED_KINDS), ("fashion-mnist", (PRIMARY,))):
        if only not in (None, dataset):
            continue
        for n in sizes(profile, dataset):
            for a, k in TUNE_ORDERS[worker]:
                used = a in FIVE_WAY or (dataset == "cifar10" and n == profile.study_n)
                if used and k in kinds + ("none",):
                    out += [(a, k, n, dataset, r) for r in (REGIMES if lookup(a).bayes else ("T1",))]
    return out


def sizes(profile: Profile, dataset: str) -> tuple[int, ...]:
    """The training-set sizes of the five-way study on ``dataset``."""
    return profile.train_sizes if dataset == "cifar10" else profile.fashion_sizes


def tuning_table(rec: Recorded) -> pd.DataFrame:
    """The tuned hyperparameters of every approach, prior kind, size, dataset and (samplers) temperature regime, with
    the (prior kind, size) whose validation runs chose them (``tuned_kind``, ``tuned_n``: :func:`.tuning.tuning_point`;
    SGD's weight decay and the cold temperature are chosen at ``study_n`` at every size)."""
    rows = [{"dataset": ds, "n_train": n, "approach": a, "prior_kind": k, "regime": r if lookup(a).bayes else "map",
             **dict(zip(("tuned_kind", "tuned_n"), tuning_point(rec.profile, k, n, ds))), **tuned(rec, a, k, n, ds, r)}
            for a, k, n, ds, r in tuned_families(rec.profile)]
    return pd.DataFrame(rows)


def arms(profile: Profile, approach: str, task: str = "transfer") -> list[tuple[str, tuple[int, ...]]]:
    """(regime, seeds) of every arm of ``approach``: a sampler runs in both temperature regimes, at T = 1 with
    ``t1_seeds``; MAP runs once, with ``seeds``."""
    if not lookup(approach, task).bayes:
        return [("T1", profile.seeds)]
    return [("T1", profile.t1_seeds), ("cold", profile.seeds)]


# ------------------------------------------------------------------------------------------------ studies

def rank_ablation(rec: Recorded, kind: str = "ssl") -> pd.DataFrame:
    """C2 at ``study_n``: Bayes + learned prior at every rank and the isotropic learned-mean prior, both in both
    temperature regimes, and MAP + learned at every rank at its mid-slope lambda (where the prior still pulls)."""
    profile = rec.profile
    base = dict(n_train=profile.study_n, dataset="cifar10")
    settings = [setting(rec, "bayes_learned", kind, regime, rank=r, seed=s, **base)
                for regime, seeds in arms(profile, "bayes_learned") for r in profile.ranks for s in seeds]
    mid = mid_slope(rec, kind, profile.study_n)
    settings += [{"approach": "map_learned", "prior_kind": kind, **mid, "rank": r, "seed": s, **base}
                 for r in profile.ranks for s in profile.seeds]
    settings += [setting(rec, "bayes_isotropic", kind, regime, seed=s, **base)
                 for regime, seeds in arms(profile, "bayes_isotropic") for s in seeds]
    return rec.rows("transfer", settings, "C2 rank ablation")


def scale_study(rec: Recorded, kind: str = "ssl") -> pd.DataFrame:
    """C3 at ``study_n``: MAP and Bayes (T = 1) with the learned prior over lambda on the test split, every seed of
    the arm (:func:`arms`: 5 for the sampler at T = 1), on
    ``scales`` (finer than the validation sweeps' ``tuning_scales``) widened at its spacing to cover the range each
    approach's validation sweep ended with, and extended until the best lambda is interior."""
    profile, rows = rec.profile, []
    for approach in ("map_learned", "bayes_learned"):
        s = setting(rec, approach, kind, n_train=profile.study_n)
        if approach == "map_learned":
            _, searched = scale_sweep(rec, kind, profile.study_n)
        else:
            _, searched, _ = bayes_width_sweep(rec, approach, kind, profile.study_n)
        grid = widened(profile.scales, min(searched), max(searched))
        rows.append(sweep(rec, s, "scale", grid, f"C3 scale sweep ({approach})",
                          seeds=dict(arms(profile, approach))["T1"])[0])     # 5 seeds for the T = 1 sampler
    return pd.concat(rows, ignore_index=True)


def five_way(rec: Recorded, dataset: str = "cifar10", kinds: Iterable[str] = STUDIED_KINDS) -> pd.DataFrame:
    """C4-C6: the five approaches (learned ones per prior kind; samplers in both temperature regimes) at every
    training-set size of ``dataset`` (:func:`sizes`), with the hyperparameters tuned for that size."""
    profile, settings = rec.profile, []
    for n in sizes(profile, dataset):
        for approach in FIVE_WAY:
            for kind in (kinds if lookup(approach).init == "pretrained" else ("none",)):
                for regime, seeds in arms(profile, approach):
                    settings += [setting(rec, approach, kind, regime, n_train=n, seed=seed, dataset=dataset)
                                 for seed in seeds]
    return rec.rows("transfer", settings, f"C4-C6 five-way ({dataset})")


def map_mid_slope(rec: Recorded, dataset: str = "cifar10", kinds: Iterable[str] = STUDIED_KINDS) -> pd.DataFrame:
    """MAP + learned prior at its mid-slope lambda (:func:`.tuning.mid_slope`: where the prior still pulls) at every
    training-set size, beside the five-way study's MAP at the validation-best lambda."""
    profile = rec.profile
    settings = [{"approach": "map_learned", "prior_kind": kind, **mid_slope(rec, kind, n, dataset), "n_train": n,
                 "seed": seed, "dataset": dataset} for n in profile.train_sizes for kind in kinds for seed in profile.seeds]
    return rec.rows("transfer", settings, f"MAP at mid-slope lambda ({dataset})")


def temperature_ablation(rec: Recorded, kind: str = "ssl") -> pd.DataFrame:
    """Bayes + learned prior at ``study_n`` over the profile's temperatures (the authors' code ran at T ~ 0), at the
    prior width tuned for Bayes at T = 1 and at the (wider) one tuned for MAP. The authors' code runs one
    cosine-annealed SGLD pass at T ~ 4e-8 (its ``cyclic_lr`` cannot be set from its arguments and its SGLD step has no
    noise switch), closest to MAP at a MAP-like width; the T ~ 0 rows here are the cyclical sampler without noise."""
    profile = rec.profile
    widths = {"T1": setting(rec, "bayes_learned", kind, "T1"), "cold": setting(rec, "bayes_learned", kind, "cold")}
    settings = [w | dict(n_train=profile.study_n, seed=s, temperature=t)
                for w in widths.values() for t in profile.temperatures for s in profile.seeds]
    return rec.rows("transfer", settings, "temperature ablation")


def deep_ensemble(rec: Recorded, kind: str = "ssl", equal_compute: bool = False) -> pd.DataFrame:
    """C10 at ``study_n``: ``bma_samples`` SGD-transfer members per seed (member 0 is the five-way run), each trained
    for the full budget as the paper does; ``equal_compute``: one member per kept sampler cycle, each trained for
    1/m of the budget, so the m members together take the sampler's steps (m = the sampler's kept cycles)."""
    profile = rec.profile
    s = setting(rec, "sgd_transfer", kind, n_train=profile.study_n)
    if equal_compute:
        members = profile.cycles - (1 if profile.cycles > 1 else 0)
        s |= {"steps": profile.steps_for(profile.study_n) // members}
    else:
        members = profile.bma_samples
    settings = [s | {"seed": seed, "member": m} for seed in profile.seeds for m in range(members)]
    return rec.rows("transfer", settings, f"C10 deep ensemble{' at equal compute' if equal_compute else ''}")


def ensemble_metrics(rec: Recorded, kind: str = "ssl", equal_compute: bool = False) -> pd.DataFrame:
    """C10: per seed, the metrics of a deep ensemble (the mean of its members' test probabilities)."""
    return metrics_of_ensembles(rec.profile, deep_ensemble(rec, kind, equal_compute))


def metrics_of_ensembles(profile: Profile, members: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the metrics of the ensemble of its ``members`` (runs; the mean of their test probabilities)."""
    return pd.DataFrame([{"seed": seed, "members": int((members.seed == seed).sum()),
                          "steps_per_member": int(members.steps.iloc[0]), **classification_metrics(probs, labels)}
                         for seed, (probs, labels) in ensemble_predictions(profile, members).items()])


SEGMENTATION = (("sgd_transfer", "supervised"), ("bayes_nonlearned", "supervised"), ("bayes_learned", "supervised"),
                ("bayes_learned", "ssl"), ("map_learned", "supervised"), ("map_learned", "ssl"))


def segmentation_study(rec: Recorded) -> pd.DataFrame:
    """C9: every approach and prior of ``SEGMENTATION`` with its tuned values (samplers in both temperature regimes,
    at T = 1 with ``t1_seeds``), on CamVid test."""
    settings = [dict(approach=a, prior_kind=k, seed=s, **tuned_segmentation(rec, a, k, regime))
                for a, k in SEGMENTATION for regime, seeds in arms(rec.profile, a, "segmentation") for s in seeds]
    return rec.rows("segmentation", settings, "C9 segmentation")


def segmentation_sweeps(rec: Recorded) -> pd.DataFrame:
    """The validation runs behind every segmentation approach's tuned values (:func:`.tuning.segmentation_sweep`), with
    ``setting`` (the approach and, for a learned prior, its kind), ``swept`` (the hyperparameter the runs chose) and
    ``value`` (its value in the run): how notebook 08 shows the tuning."""
    frames = []
    for a, k in SEGMENTATION:
        rows, name = segmentation_sweep(rec, a, k)
        label = LABELS[a] + (f" ({k})" if family(lookup(a, "segmentation").prior).learned else "")
        frames.append(rows.assign(setting=label, swept=name, value=rows[name]))
    return pd.concat(frames, ignore_index=True)


Job = Callable[[Recorded], object]     # a study, or a part of one whose runs can start before the rest's


def _budget(profile: Profile) -> list[Job]:
    return [learning_curves, segmentation_curves]


def _own_budget(profile: Profile) -> list[Job]:
    """Phase by phase (:data:`.own_budget.PHASES`), each arm's test runs at each size (its own chain of tuning and
    budget check), then the phase's ensembles: workers and a dry run see each chain's next runs."""
    return [job for phase in PHASES for job in phase_jobs(profile, phase)]


# In the order a worker runs them by default: notebook 09's learning curves first (they choose the budgets the others
# run at, once profiles.py holds them), its sampler budgets, the third protocol (each arm's retuning on the holdout set,
# notebook 09's third amendment, as its test runs first need it: cold regime first; `retune` then finds every arm
# tuned), then all of notebook 05's grids (the headline: the five-way comparison, C4-C8, the ensembles of C10 built on
# its runs, Fashion-MNIST), so that every session of a grid that spans several ends with the claims most read;
# notebook 08's grid, the costliest per claim, last. Each stage is a list of jobs (:data:`Job`).
STAGES: dict[str, Callable[[Profile], list[Job]]] = {
    "budget": _budget, "sampler_budget": lambda p: [sampler_curves], "own_budget": _own_budget,
    "retune": lambda p: [retune_all], "five_way": lambda p: [five_way], "C10": lambda p: [deep_ensemble],
    "C10_equal": lambda p: [functools.partial(deep_ensemble, equal_compute=True)],
    "mid_slope": lambda p: [map_mid_slope], "temperature": lambda p: [temperature_ablation],
    "fashion": lambda p: [functools.partial(five_way, dataset="fashion-mnist", kinds=("ssl",))],
    "C3": lambda p: [scale_study], "C2": lambda p: [rank_ablation], "E1": lambda p: [learned_scale_study],
    "E1_confirm": lambda p: [confirm], "segmentation": lambda p: [segmentation_study],
    # C2's and C3's sampler arms at their own budget (notebooks 03 and 04, amended 2026-12-06): they need both phases
    "own_budget_C2C3": lambda p: [functools.partial(Recorded.each, jobs=[rank_own, scale_own])],
    # the third protocol's phases one at a time, to put another stage between them (E1's confirmatory runs need
    # only the cold phase's arms: STAGES=own_budget_cold,E1_confirm,own_budget_T1)
    **{f"own_budget_{phase}": functools.partial(phase_jobs, phase=phase) for phase in PHASES},
}
# what a worker runs unless told otherwise: every stage once (the phases are own_budget's, named only to split it)
DEFAULT_ORDER = tuple(s for s in STAGES if s not in {f"own_budget_{phase}" for phase in PHASES})
UNTUNED = ("budget",)          # stages whose runs have fixed hyperparameters: no tuning family runs before them
# notebook -> the stages whose runs it reads (06 and 07 read 05's runs; 01 and 02 read no grid)
NOTEBOOK_STAGES = {"03_rank_ablation": ("C2", "own_budget_C2C3"), "04_scale_sweep": ("C3", "own_budget_C2C3"),
                   "05_five_way": ("five_way", "temperature", "mid_slope", "C10", "C10_equal", "fashion", "own_budget"),
                   "06_calibration": ("five_way", "C2", "C10", "own_budget"), "07_ood_shift": ("five_way", "own_budget"),
                   "08_segmentation": ("segmentation",), "09_training_budget": ("budget", "sampler_budget", "retune"),
                   "10_learned_scale": ("E1", "E1_confirm")}


def recorded(profile: Profile, notebook: str) -> Recorded:
    """A snapshot of ``profile``'s grids for ``notebook``: what it reads, and, for what is missing, the command that
    makes its stages' runs."""
    return Recorded(profile, stages=NOTEBOOK_STAGES.get(notebook, ()))


def stage_dataset(stage: str) -> str:
    """The transfer dataset whose tuned values ``stage`` reads (segmentation reads CIFAR-10's cold temperatures)."""
    return "fashion-mnist" if stage == "fashion" else "cifar10"


def tuning_jobs(profile: Profile, dataset: str, worker: int = 0) -> list[Job]:
    """One job per tuned family the studies read on ``dataset`` (:func:`tuned_families`), in ``worker``'s order."""
    return [functools.partial(tuned, approach=a, kind=k, n=n, dataset=ds, regime=r)
            for a, k, n, ds, r in tuned_families(profile, worker, dataset)]


def jobs(profile: Profile, stages: Iterable[str], worker: int = 0) -> list[tuple[str, Job]]:
    """(stage, job) of every job of ``stages``, in order, each tuned stage's families first (once per dataset):
    what a worker completes one by one and a dry run prices."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    out, tuned_yet = [], set()
    for stage in stages:
        if stage not in UNTUNED and (dataset := stage_dataset(stage)) not in tuned_yet:
            out += [(stage, job) for job in tuning_jobs(profile, dataset, worker)]
            tuned_yet.add(dataset)
        out += [(stage, job) for job in STAGES[stage](profile)]
    return out
