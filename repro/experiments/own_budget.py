"""The third protocol's test-split runs: every arm at its own budget and tuning (notebook 05's amendment of 2026-12-05).

Each arm's values and budget come from notebook 09's third amendment: rule 5 (:mod:`.retune`) chooses the values on
the shared holdout set at the arm's budget, and :func:`checked_budget` then doubles that budget at the chosen values
while a doubling still gains :data:`.budget.THRESHOLD` or more (mean over ``tuning_seeds`` seeds). The studies here
re-run C4, C6, C7 and C8 (the five-way arms, SSL and non-learned priors, CIFAR-10, every size), C10 (both ensembles)
and C4's T = 1 ablation with them; the second protocol's runs stay as the equal-compute comparison.
"""
from __future__ import annotations

import functools
from typing import Callable

import pandas as pd

from ..analysis.stats import finished
from ..profiles import Profile

from .approaches import arm_name, arm_parts
from .budget import CAVEATED, THRESHOLD, steps_differ
from .grid import Recorded
from .retune import ARMS, COORDINATES, coordinate, retune_runs, retuned
from .tuning import setting, sweep, widened

ALPHA_SPACING = dict(COORDINATES["bayes_nonlearned (T1)"])["alpha"]     # an isotropic width's grid spacing

ABLATION_ARMS = ("bayes_learned (T1)", "bayes_learned (cold)")   # C4's T = 1 ablation, augmentation off
SCALE_ARMS = ("map_learned", "bayes_learned (T1)")                # C3's λ sweep (the sampler at T = 1)
# The order the workers run the third protocol in, so that each few CPU-hours end with usable runs: the optimisers and
# the cold sampler arms (tuned, budget-checked, then their test runs and C10's cold ensembles: the cold verdicts),
# then the T = 1 arms (and with them C4's ablation and C10's T = 1 ensemble).
PHASES = {"cold": tuple(a for a in ARMS if arm_parts(a)[1] != "T1"), "T1": tuple(a for a in ARMS if arm_parts(a)[1] == "T1")}


def _mean_accuracy(rec: Recorded, s: dict, steps: int) -> float:
    seeds = rec.profile.seeds[:rec.profile.tuning_seeds]
    rows = rec.rows("transfer", [s | {"steps": steps, "seed": k} for k in seeds],
                    f"budget check {s['approach']} (n = {s['n_train']}): {steps} steps")
    ok = finished(rows)
    return float(ok.accuracy.mean()) if len(ok) == len(rows) else float("-inf")   # a failed doubling gains nothing


def checked_budget(rec: Recorded, arm: str, n: int) -> int:
    """The arm's budget at n at its chosen values: rule 5's budget, doubled while the doubling gains at least
    ``THRESHOLD`` mean holdout accuracy (``tuning_seeds`` seeds), up to ``sampler_budget_max_steps``."""
    return rec.memo(_checked_budget, arm, n)


def _checked_budget(rec: Recorded, arm: str, n: int) -> int:
    s = retuned(rec, arm, n)
    steps, accuracy = s["steps"], _mean_accuracy(rec, s, s["steps"])
    while 2 * steps <= rec.profile.sampler_budget_max_steps:
        doubled = _mean_accuracy(rec, s, 2 * steps)
        if doubled - accuracy < THRESHOLD:
            return steps
        steps, accuracy = 2 * steps, doubled
    return steps


def own_setting(rec: Recorded, arm: str, n: int, **kw) -> dict:
    """A test-split setting of ``arm`` at n with its own values and checked budget; ``kw`` win."""
    return retuned(rec, arm, n) | {"split": "test", "steps": checked_budget(rec, arm, n)} | kw


def seeds_of(rec: Recorded, arm: str) -> tuple[int, ...]:
    """The seeds of an arm's test runs: 5 for a sampler at T = 1 (its spread over seeds is large), else 3."""
    return rec.profile.t1_seeds if arm_parts(arm)[1] == "T1" else rec.profile.seeds


def five_way_own(rec: Recorded, arms: tuple[str, ...] = tuple(ARMS)) -> pd.DataFrame:
    """C4, C6, C7, C8: every arm of ``arms`` (default: :data:`.retune.ARMS`) at every size of
    ``sampler_budget_sizes``, its own budget and values, on the test split (and, with it, the shifted set); ``arm``
    names each row's arm."""
    return pd.concat([own_runs(rec, arm, n) for arm in arms for n in rec.profile.sampler_budget_sizes],
                     ignore_index=True)


def own_runs(rec: Recorded, arm: str, n: int) -> pd.DataFrame:
    """``arm``'s test runs at n, at its own budget and values (after its tuning and budget check)."""
    rows = rec.rows("transfer", [own_setting(rec, arm, n, seed=k) for k in seeds_of(rec, arm)],
                    f"own budget: {arm} (n = {n})")
    return rows.assign(arm=arm)


def t1_ablation(rec: Recorded) -> pd.DataFrame:
    """C4's T = 1 ablation at ``study_n``: the sampler at T = 1 and cold with augmentation off, beside the same arms
    with it (their five-way runs) and MAP + learned; 3 seeds each; ``arm`` and ``augment`` name each row."""
    n, frames = rec.profile.study_n, []
    for arm in ("map_learned", *ABLATION_ARMS):
        for augment in ((True, False) if arm in ABLATION_ARMS else (True,)):
            rows = rec.rows("transfer", [own_setting(rec, arm, n, seed=k, augment=augment)
                                         for k in rec.profile.seeds], f"T = 1 ablation: {arm}")
            frames.append(rows.assign(arm=arm, augment=augment))
    return pd.concat(frames, ignore_index=True)


def rank_own(rec: Recorded) -> pd.DataFrame:
    """C2 at ``study_n`` (notebook 03's amendment of 2026-12-06): Bayes + learned at every rank of ``ranks`` and the
    isotropic learned-mean prior (:func:`isotropic_own`), in both regimes, each at the learned sampler's own budget
    and values, on the test split (3 seeds cold, 5 at T = 1); ``arm`` names each row's arm."""
    n, frames = rec.profile.study_n, []
    for regime in ("cold", "T1"):
        arm = arm_name("bayes_learned", regime)
        seeds = seeds_of(rec, arm)
        rows = rec.rows("transfer", [own_setting(rec, arm, n, rank=r, seed=k) for r in rec.profile.ranks
                                     for k in seeds], f"C2 own budget: {arm}")
        iso = rec.rows("transfer", [isotropic_own(rec, regime) | {"split": "test", "seed": k} for k in seeds],
                       f"C2 own budget: isotropic prior ({regime})")
        frames += [rows.assign(arm=arm), iso.assign(arm=arm_name("bayes_isotropic", regime))]
    return pd.concat(frames, ignore_index=True)


def isotropic_own(rec: Recorded, regime: str) -> dict:
    """The isotropic learned-mean prior N(μ, αI) at ``study_n`` in ``regime``, on the holdout set: the learned
    sampler's own budget and values (lr, head variance, T, cycles), its α chosen again at that budget by rule 5's
    coordinate rule (:func:`.retune.coordinate`), starting from its second-protocol choice."""
    return dict(rec.memo(_isotropic_own, regime))


def _isotropic_own(rec: Recorded, regime: str) -> dict:
    n, learned = rec.profile.study_n, arm_name("bayes_learned", regime)
    base = retuned(rec, learned, n) | {"steps": checked_budget(rec, learned, n)}
    base = {k: v for k, v in base.items() if k not in ("scale", "rank")} | {
        "approach": "bayes_isotropic", "alpha": setting(rec, "bayes_isotropic", "ssl", regime, n_train=n)["alpha"]}
    return coordinate(rec, base, "alpha", ALPHA_SPACING, f"C2 own budget: isotropic α ({regime})")[1]


def scale_tried(rec: Recorded, arm: str) -> pd.DataFrame:
    """The holdout runs of ``arm``'s λ coordinate at ``study_n`` (rule 5), each once: its first value's run is also
    the previous coordinate's choice."""
    tried = retune_runs(rec, arm, rec.profile.study_n)
    return tried[tried.coordinate == "scale"].drop_duplicates("key")


def scale_own(rec: Recorded) -> pd.DataFrame:
    """C3 at ``study_n`` (notebook 04's amendment of 2026-12-06): MAP + learned and the T = 1 sampler over λ on the
    test split, each at its own budget and values (the sampler's 5 seeds), on ``scales`` widened to cover the λ its
    holdout tuning tried and extended while the best λ is at an edge, as the second protocol's sweep was; ``arm``
    names each row's arm. Each arm's λ* is its holdout choice (:func:`scale_chosen`)."""
    n, frames = rec.profile.study_n, []
    for arm in SCALE_ARMS:
        tried = scale_tried(rec, arm).scale
        grid = widened(rec.profile.scales, tried.min(), tried.max())
        rows, _ = sweep(rec, own_setting(rec, arm, n), "scale", grid, f"C3 own budget: {arm}", seeds=seeds_of(rec, arm))
        frames.append(rows.assign(arm=arm))
    return pd.concat(frames, ignore_index=True)


def scale_chosen(rec: Recorded) -> dict[str, float]:
    """Approach -> λ* of C3's own-budget reading: each arm's λ chosen on the holdout set at its own budget."""
    return {arm_parts(arm)[0]: float(retuned(rec, arm, rec.profile.study_n)["scale"]) for arm in SCALE_ARMS}


def scale_holdout(rec: Recorded) -> pd.DataFrame:
    """C3's λ on the holdout set: per arm of :data:`SCALE_ARMS`, the mean holdout accuracy and NLL at each λ its
    tuning tried (the tuning seeds), and whether rule 5 chose it (:func:`scale_chosen`)."""
    picked, frames = scale_chosen(rec), []
    for arm in SCALE_ARMS:
        means = finished(scale_tried(rec, arm)).groupby("scale")[["accuracy", "nll"]].mean().reset_index()
        frames.append(means.assign(arm=arm, chosen=means.scale == picked[arm_parts(arm)[0]]))
    return pd.concat(frames, ignore_index=True)


def ensemble_own(rec: Recorded, regime: str | None = None) -> pd.DataFrame:
    """C10 at ``study_n``: ``bma_samples`` SGD-transfer members per seed at SGD transfer's own budget and values; with
    ``regime``, at equal compute with that regime's Bayes + learned arm: one member per kept cycle of it, each
    trained for its own budget divided by the members."""
    profile = rec.profile
    n = profile.study_n
    s = own_setting(rec, "sgd_transfer", n)
    if regime is None:
        members = profile.bma_samples
    else:
        sampler = own_setting(rec, arm_name("bayes_learned", regime), n)
        members = sampler["cycles"] - 1
        s |= {"steps": sampler["steps"] // members}
    return rec.rows("transfer", [s | {"seed": k, "member": m} for k in profile.seeds for m in range(members)],
                    f"C10 own budget{'' if regime is None else f', equal compute ({regime})'}")


def phase_jobs(profile: Profile, phase: str) -> list[Callable[[Recorded], object]]:
    """The one job of a phase of :data:`PHASES`: each arm's test runs at each size (each a chain: its tuning and
    budget check first) and the phase's ensembles (cold: C10's paper ensemble and the cold one; T = 1: C4's ablation
    and C10's T = 1 ensemble), their next runs asked for all at once (:meth:`.grid.Recorded.each`)."""
    jobs = [functools.partial(own_runs, arm=arm, n=n) for arm in PHASES[phase] for n in profile.sampler_budget_sizes]
    if phase == "cold":
        jobs += [ensemble_own, functools.partial(ensemble_own, regime="cold")]
    else:
        jobs += [t1_ablation, functools.partial(ensemble_own, regime="T1")]
    return [functools.partial(Recorded.each, jobs=jobs)]


def run_phase(rec: Recorded, phase: str) -> None:
    """Read every run of one phase (:func:`phase_jobs`)."""
    for job in phase_jobs(rec.profile, phase):
        job(rec)


def ready(rec: Recorded) -> tuple[str, ...]:
    """The temperature regimes whose own-budget verdicts can be concluded now: those whose phase's runs are all
    recorded (T = 1 also needs the cold phase: its optimisers)."""
    done = {phase: rec.complete(lambda r, phase=phase: run_phase(r, phase)) for phase in PHASES}
    return tuple(phase for phase in PHASES if done[phase] and done["cold"])


def arms_of(regimes: tuple[str, ...]) -> tuple[str, ...]:
    """The arms of :data:`.retune.ARMS` that the verdicts of ``regimes`` read (none for none): the optimisers and
    those regimes' samplers (``"bayes_learned (cold)"``)."""
    if not regimes:
        return ()
    return tuple(arm for arm in ARMS if arm_parts(arm)[1] in ("map", *regimes))


def chosen(rec: Recorded, arms: tuple[str, ...] = tuple(ARMS)) -> pd.DataFrame:
    """Per arm of ``arms`` (default: :data:`.retune.ARMS`) and size: the values rule 5 chose, the budget it chose them
    at (``tuned_steps``) and the checked budget its test runs take (``steps``)."""
    names = ("lr", "weight_decay", "scale", "head_var", "alpha", "temperature", "cycles")
    rows = []
    for arm in arms:
        for n in rec.profile.sampler_budget_sizes:
            s = retuned(rec, arm, n)
            rows.append({"arm": arm, "n_train": n, **{k: s.get(k) for k in names}, "tuned_steps": s["steps"],
                         "steps": checked_budget(rec, arm, n)})
    return pd.DataFrame(rows)


def ablation_table(rows: pd.DataFrame, second_gap: float) -> pd.DataFrame:
    """C4's T = 1 ablation read: per sampler arm and augmentation (rows of :func:`t1_ablation`), the mean accuracy
    minus MAP + learned's, paired by seed (mean and standard error over seeds), and the share of ``second_gap`` (the
    second protocol's T = 1 minus MAP, negative) it removes: 1 - (its gap) / ``second_gap``."""
    ok = finished(rows)
    map_acc = ok[ok.arm == "map_learned"].set_index("seed").accuracy
    out = []
    for (arm, augment), g in ok[ok.arm != "map_learned"].groupby(["arm", "augment"], sort=False):
        acc = g.set_index("seed").accuracy
        gap = (acc - map_acc).dropna()                   # the seeds both ran
        out.append({"arm": arm, "augment": bool(augment), "accuracy": acc[gap.index].mean(), "minus_map": gap.mean(),
                    "minus_map_se": gap.std(ddof=1) / len(gap) ** 0.5 if len(gap) > 1 else float("nan"),
                    "seeds": len(gap),     # a share of a gap only where there was one
                    "share_of_second_gap_removed": 1 - gap.mean() / second_gap if second_gap < 0 else float("nan")})
    return pd.DataFrame(out)


def checked_mismatches(profile: Profile, choices: pd.DataFrame) -> list[str]:
    """Where ``Profile.checked_steps`` disagrees with the budgets the checks chose (:func:`chosen`'s table): an arm whose
    test budget differs from its tuning budget must be listed with it, and no other arm of the table may be."""
    steps = {(r.arm, int(r.n_train)): (int(r.steps), int(r.tuned_steps)) for r in choices.itertuples()}
    chosen = [(arm, n, test if test != tuned else None) for (arm, n), (test, tuned) in steps.items()]
    return [f"{arm} at n = {n}: the budget check chose {steps[arm, n][0]} steps (tuned at {steps[arm, n][1]}), the "
            f"profile's checked_steps give {have}" for arm, n, _, have in steps_differ(profile.checked_steps, chosen)]


def unconverged_note(rec: Recorded, arms: tuple[str, ...] = tuple(ARMS), sizes: tuple[int, ...] | None = None) -> str:
    """The sentence an own-budget verdict ends with where one of ``arms`` trains at the cap
    (``sampler_budget_max_steps``) at one of ``sizes`` (default: every size): its curve or its budget check was still
    gaining a point per doubling there; empty otherwise."""
    table = chosen(rec, arms)
    capped = table[(table.steps >= rec.profile.sampler_budget_max_steps)
                   & table.n_train.isin(sizes or rec.profile.sampler_budget_sizes)]
    notes = [f"{r.arm} at n = {r.n_train} trains the cap of {r.steps} steps" for r in capped.itertuples()]
    return f" Not converged (notebook 09): {'; '.join(notes)}." if notes else ""


# The arms C2's and C3's own-budget re-runs read, all at ``study_n`` (a regime's verdict reads those of its regime)
AT_STUDY_N = {"C2": ("bayes_learned (cold)", "bayes_learned (T1)"), "C3": SCALE_ARMS}


def cap_note(rec: Recorded, claim: str, regime: str | None) -> str:
    """:func:`unconverged_note` for an own-budget verdict of ``claim`` in ``regime``: a five-way claim's optimisers and
    the regime's samplers at every size (:data:`.budget.CAVEATED`), C2's or C3's arms at ``study_n``
    (:data:`AT_STUDY_N`); empty for any other claim."""
    arms = arms_of((regime,))
    if claim in CAVEATED:
        return unconverged_note(rec, arms)
    if claim in AT_STUDY_N:
        return unconverged_note(rec, tuple(a for a in AT_STUDY_N[claim] if a in arms), (rec.profile.study_n,))
    return ""


def sample_mean(rows: pd.DataFrame) -> pd.Series:
    """Per run, the mean test accuracy of its kept samples, each alone (NaN for an optimiser): reported beside a
    sampler's BMA, to show whether its cycles end at trained models."""
    def mean(cell) -> float:
        return float(pd.Series(str(cell).split(";"), dtype=float).mean()) if pd.notna(cell) and cell != "" else float("nan")
    return rows.get("sample_accuracy", pd.Series(index=rows.index, dtype=object)).map(mean)
