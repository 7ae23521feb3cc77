"""The third protocol's test-split runs: every arm at its own budget and tuning (notebook 05's amendment of 2026-12-05).

Each arm's values and budget come from notebook 09's third amendment: rule 5 (:mod:`.retune`) chooses the values on
the shared holdout set at the arm's budget, and :func:`checked_budget` then doubles that budget at the chosen values
while a doubling still gains :data:`.budget.THRESHOLD` or more (mean over ``tuning_seeds`` seeds). The studies here
re-run C4, C6, C7 and C8 (the five-way arms, SSL and non-learned priors, CIFAR-10, every size), C10 (both ensembles)
and C4's T = 1 ablation with them; the second protocol's runs stay as the equal-compute comparison.
"""
from __future__ import annotations

import pandas as pd

from ..profiles import Profile
from .budget import THRESHOLD
from .grid import is_planning, run_settings
from .retune import ARMS, retuned

ABLATION_ARMS = ("bayes_learned (T1)", "bayes_learned (cold)")   # C4's T = 1 ablation, augmentation off


def _mean_accuracy(profile: Profile, s: dict, steps: int) -> float | None:
    seeds = profile.seeds[:profile.tuning_seeds]
    rows = run_settings(profile, "transfer", [s | {"steps": steps, "seed": k} for k in seeds],
                        desc=f"budget check {s['approach']} (n = {s['n_train']}): {steps} steps")
    if is_planning() and "planned" in rows and rows.planned.eq(True).any():
        return None
    ok = rows[rows.status == "ok"]
    return float(ok.accuracy.mean()) if len(ok) == len(rows) else float("-inf")   # a failed doubling gains nothing


def checked_budget(profile: Profile, arm: str, n: int) -> int:
    """The arm's budget at n at its chosen values: rule 5's budget, doubled while the doubling gains at least
    ``THRESHOLD`` mean holdout accuracy (``tuning_seeds`` seeds), up to ``sampler_budget_max_steps``."""
    s = retuned(profile, arm, n)
    steps, accuracy = s["steps"], _mean_accuracy(profile, s, s["steps"])
    while 2 * steps <= profile.sampler_budget_max_steps and accuracy is not None:
        doubled = _mean_accuracy(profile, s, 2 * steps)
        if doubled is None or doubled - accuracy < THRESHOLD:
            return steps
        steps, accuracy = 2 * steps, doubled
    return steps


def own_setting(profile: Profile, arm: str, n: int, **kw) -> dict:
    """A test-split setting of ``arm`` at n with its own values and checked budget; ``kw`` win."""
    return retuned(profile, arm, n) | {"split": "test", "steps": checked_budget(profile, arm, n)} | kw


def seeds_of(profile: Profile, arm: str) -> tuple[int, ...]:
    """The seeds of an arm's test runs: 5 for a sampler at T = 1 (its spread over seeds is large), else 3."""
    return profile.t1_seeds if arm.endswith("(T1)") else profile.seeds


def five_way_own(profile: Profile) -> pd.DataFrame:
    """C4, C6, C7, C8: every arm of :data:`.retune.ARMS` at every size of ``sampler_budget_sizes``, its own budget
    and values, on the test split (and, with it, the shifted set); ``arm`` names each row's arm."""
    frames = []
    for n in profile.sampler_budget_sizes:
        for arm in ARMS:
            rows = run_settings(profile, "transfer", [own_setting(profile, arm, n, seed=k) for k in seeds_of(profile, arm)],
                                desc=f"own budget: {arm} (n = {n})")
            frames.append(rows.assign(arm=arm))
    return pd.concat(frames, ignore_index=True)


def t1_ablation(profile: Profile) -> pd.DataFrame:
    """C4's T = 1 ablation at ``study_n``: the sampler at T = 1 and cold with augmentation off, beside the same arms
    with it (their five-way runs) and MAP + learned; 3 seeds each; ``arm`` and ``augment`` name each row."""
    n, frames = profile.study_n, []
    for arm in ("map_learned", *ABLATION_ARMS):
        for augment in ((True, False) if arm in ABLATION_ARMS else (True,)):
            rows = run_settings(profile, "transfer", [own_setting(profile, arm, n, seed=k, augment=augment)
                                                      for k in profile.seeds], desc=f"T = 1 ablation: {arm}")
            frames.append(rows.assign(arm=arm, augment=augment))
    return pd.concat(frames, ignore_index=True)


def ensemble_own(profile: Profile, regime: str | None = None) -> pd.DataFrame:
    """C10 at ``study_n``: ``bma_samples`` SGD-transfer members per seed at SGD transfer's own budget and values; with
    ``regime``, at equal compute with that regime's Bayes + learned arm: one member per kept cycle of it, each
    trained for its own budget divided by the members."""
    n = profile.study_n
    s = own_setting(profile, "sgd_transfer", n)
    if regime is None:
        members = profile.bma_samples
    else:
        sampler = own_setting(profile, f"bayes_learned ({regime})", n)
        members = sampler["cycles"] - 1
        s |= {"steps": sampler["steps"] // members}
    return run_settings(profile, "transfer", [s | {"seed": k, "member": m} for k in profile.seeds
                                              for m in range(members)],
                        desc=f"C10 own budget{'' if regime is None else f', equal compute ({regime})'}")


def own_budget_runs(profile: Profile) -> None:
    """Every test-split run of the third protocol (the stage ``own_budget``)."""
    five_way_own(profile)
    t1_ablation(profile)
    for regime in (None, "T1", "cold"):
        ensemble_own(profile, regime)
