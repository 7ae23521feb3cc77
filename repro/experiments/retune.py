"""Every arm's own tuning on one shared holdout set, at the arm's own budget (notebook 09's third amendment, rule 5).

The second protocol tuned every arm on the validation split of its own n images (20 / 60 / 200 images at n = 100 /
300 / 1 000) at MAP's budget, and gave the sampler MAP's lr and widths. Here every arm at a size is tuned on the same
2 000 holdout images (``split="holdout"``: CIFAR-10 training images outside every holdout run's training subset,
:func:`.transfer.downstream_indices`), each at its own budget (SGD transfer and MAP: notebook 09's rule 1; a sampler:
its own curve's, ``Profile.sampler_steps``), ``tuning_seeds`` seeds (``cpu``: 2), in bf16 and, for SGHMC, at
sampler version 2.

**Rule.** Coordinate-wise, from the value the arm had (its second-protocol choice at that size, the *incumbent*), in
the order of :data:`COORDINATES`. A coordinate tries the incumbent and its neighbours on a log grid of the
coordinate's spacing (or a fixed grid: T, cycles); a value's score is its mean holdout accuracy over the seeds.
Every value within :data:`RESOLUTION` of the best is a tie; the incumbent wins a tie it is in, else the tied value
nearest to it on the grid (:func:`choose`). A spaced grid whose choice is at its edge is extended by its spacing
(at most :data:`MAX_EXTENSIONS` per side). Later coordinates run at the earlier ones' choices. A cycle count that
would leave a cycle no sampling step at the arm's budget is not tried (:func:`runnable`; only smoke's budgets are
that short).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..analysis.stats import finished, paired_bootstrap
from ..profiles import Profile
from ..runner import MissingPrerequisite
from .approaches import arm_parts, lookup
from .budget import SAMPLER_ARMS, notebook_09_command
from .grid import Recorded
from .spec import RunSpec
from .transfer import cyclical_schedule
from .tuning import SCORE_DECIMALS, setting

log = logging.getLogger(__name__)

RESOLUTION = 0.01          # candidates closer than this in mean holdout accuracy are ties
MAX_EXTENSIONS = 3
COLD_TEMPERATURES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)    # T = 0 stays: the noise-free reference
CYCLES = (3, 6, 12)
# arm -> (approach, prior kind, regime), in the order the workers tune them: the optimisers (their budgets are known
# first), then the cold sampler arms (the authors' regime, whose verdicts the second protocol left most in doubt),
# then those at T = 1 (see :data:`.own_budget.PHASES`)
ARMS = {"sgd_transfer": ("sgd_transfer", "ssl", "T1"), "map_learned": ("map_learned", "ssl", "T1"),
        "map_nonlearned": ("map_nonlearned", "none", "T1"),
        **{arm: SAMPLER_ARMS[arm] for regime in ("cold", "T1") for arm in SAMPLER_ARMS if arm_parts(arm)[1] == regime}}
# arm -> its coordinates in order: (name, log spacing) or (name, fixed grid)
_LR, _SCALE, _HEAD, _ALPHA = ("lr", 3.0), ("scale", 100.0), ("head_var", 10.0), ("alpha", 10.0)
COORDINATES: dict[str, tuple[tuple[str, float | tuple], ...]] = {
    "sgd_transfer": (_LR, ("weight_decay", 10.0)),
    "map_learned": (_LR, _SCALE, _HEAD),
    "map_nonlearned": (_LR, _ALPHA),
    "bayes_learned (T1)": (_LR, _SCALE, _HEAD, ("cycles", CYCLES)),
    "bayes_learned (cold)": (_LR, _SCALE, _HEAD, ("temperature", COLD_TEMPERATURES), ("cycles", CYCLES)),
    "bayes_nonlearned (T1)": (_LR, _ALPHA, ("cycles", CYCLES)),
    "bayes_nonlearned (cold)": (_LR, _ALPHA, ("temperature", COLD_TEMPERATURES), ("cycles", CYCLES)),
}
HOLDOUT = dict(split="holdout", dataset="cifar10", precision="bf16")


def choose(scores: pd.Series, incumbent: float, resolution: float = RESOLUTION, grid: list[float] | None = None) -> float:
    """The rule's choice among ``scores`` (value -> mean holdout accuracy): the incumbent if it is within
    ``resolution`` of the best, else the value within it nearest the incumbent on the sorted ``grid`` of every value
    tried (default: the scored ones; a value that failed still counts in the distance), the better one of two equally
    near. Scores are compared to ``SCORE_DECIMALS`` decimals, so that a tie at exactly ``resolution`` does not turn on
    float32 rounding."""
    scores = scores.sort_index().round(SCORE_DECIMALS)
    ties = scores[scores >= round(scores.max() - resolution, SCORE_DECIMALS)]
    if incumbent in ties.index:
        return incumbent
    grid = sorted(grid if grid is not None else scores.index)
    where = _position(grid, incumbent)
    return min(ties.index, key=lambda v: (abs(grid.index(v) - where), -ties[v]))


def _position(grid: list[float], value: float) -> float:
    """Where ``value`` sits on the sorted ``grid`` (fractional between two points; 0 is below every positive one)."""
    if value in grid:
        return float(grid.index(value))
    below = [i for i, v in enumerate(grid) if v < value]
    return below[-1] + 0.5 if below else -0.5


def budget(profile: Profile, arm: str, n: int) -> int:
    """The arm's own budget at n: notebook 09's rule 1 for SGD transfer and MAP, its own curve's for a sampler."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    if not lookup(ARMS[arm][0]).bayes or not profile.budget_rule:     # smoke: the profile's budgets stand
        return profile.steps_for(n)
    steps = dict(((a, size), s) for a, size, s in profile.sampler_steps).get((arm, n))
    if steps is None:
        raise MissingPrerequisite(f"notebook 09 has not chosen the budget of {arm} at n = {n} (once it has, copy its "
                                  f"sampler_budgets table into sampler_steps in repro/profiles.py)",
                                  notebook_09_command(profile))
    return steps


def incumbent(rec: Recorded, arm: str, n: int) -> dict:
    """The arm's setting before this tuning: its second-protocol values at n, on the holdout set at its own budget."""
    profile = rec.profile
    approach, kind, regime = ARMS[arm]
    s = setting(rec, approach, kind, regime, n_train=n) | HOLDOUT | {"steps": budget(profile, arm, n)}
    default = RunSpec.default(profile, "transfer", approach)          # a coordinate never tuned before: its default
    s = {name: getattr(default, name) for name, _ in COORDINATES[arm]} | s
    return s | ({"sampler_version": 2} if lookup(approach).bayes else {})


def coordinate(rec: Recorded, base: dict, name: str, grid: float | tuple, desc: str) -> tuple[pd.DataFrame, dict]:
    """One coordinate of the rule from ``base`` (its incumbent value ``base[name]``): all its rows and ``base`` with
    the choice."""
    profile, start = rec.profile, base[name]
    if isinstance(grid, tuple):      # a cycle count that leaves a cycle no sampling step at this budget is not tried
        values, spacing = sorted(v for v in set(grid) | {start} if runnable(profile, base | {name: v})), None
        if not values:
            return pd.DataFrame(), base
    else:
        values, spacing = [start / grid, start, start * grid], grid
    added = {"low": 0, "high": 0}
    while True:
        rows = rec.rows("transfer", [base | {name: v, "seed": s} for v in values
                                     for s in profile.seeds[:profile.tuning_seeds]], desc)
        failed = set(rows.loc[rows.status != "ok", name])          # a value where a seed failed (diverged) is out
        scores = rows[(rows.status == "ok") & ~rows[name].isin(failed)].groupby(name).accuracy.mean()
        if scores.empty:                                            # every value failed: nothing to move to
            log.warning("retune %s: every value of %s failed; it keeps %s", desc, name, start)
            return rows, base
        chosen = choose(scores, start, grid=values)
        side = "high" if chosen == values[-1] else "low" if chosen == values[0] else None
        if spacing is None or side is None or added[side] == MAX_EXTENSIONS:
            return rows, base | {name: chosen}
        values = values + [values[-1] * spacing] if side == "high" else [values[0] / spacing] + values
        added[side] += 1


def runnable(profile: Profile, setting: dict) -> bool:
    """Whether ``setting``'s cyclical schedule can run (too many cycles for a short budget leave none a sampling
    step: smoke's 12-step runs; never at the ``cpu`` budgets)."""
    spec = RunSpec.default(profile, "transfer", **setting)
    try:
        cyclical_schedule(spec.approach_, spec)
    except ValueError:
        return False
    return True


def _retune(rec: Recorded, arm: str, n: int) -> tuple[dict, pd.DataFrame]:
    base, frames = incumbent(rec, arm, n), []
    for name, grid in COORDINATES[arm]:
        rows, base = coordinate(rec, base, name, grid, f"retune {arm} (n = {n}): {name}")
        frames.append(rows.assign(arm=arm, coordinate=name))
    return base, pd.concat(frames, ignore_index=True)


def retuned(rec: Recorded, arm: str, n: int) -> dict:
    """The arm's setting at n after the rule (its holdout setting at its own budget)."""
    return dict(rec.memo(_retune, arm, n)[0])


def retune_runs(rec: Recorded, arm: str, n: int) -> pd.DataFrame:
    """Every holdout run behind the arm's choice at n, each with the ``coordinate`` it tried."""
    return rec.memo(_retune, arm, n)[1].copy()


def retune_all(rec: Recorded, arms: tuple[str, ...] = tuple(ARMS)) -> pd.DataFrame:
    """Every arm of ``arms`` (default: :data:`ARMS`, in its order) at every size of ``sampler_budget_sizes``: one row
    per arm and size, its chosen values."""
    return pd.DataFrame([{"arm": arm, "n_train": n, **retuned(rec, arm, n)}
                         for arm in arms for n in rec.profile.sampler_budget_sizes])


def resolution(rows: pd.DataFrame, outcomes: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """How finely the holdout set tells two candidates apart: for each pair of neighbouring values a coordinate tried
    (rows of :func:`retune_runs`: ``arm``, ``coordinate``), the mean accuracy difference over the seeds both ran and
    its standard error, both parts counted: the images' (every seed is scored on the same images) and the seeds'
    (training noise), as the verdicts count them (:func:`repro.analysis.stats.paired_bootstrap`, over seeds x
    images). ``outcomes``: per run key, per-image ``accuracy`` (:func:`repro.analysis.predictions.per_image_outcomes`)."""
    out = []
    ok = finished(rows)
    for (arm, n, name), g in ok.groupby(["arm", "n_train", "coordinate"], sort=False):
        values = sorted(g[name].unique())
        for a, b in zip(values, values[1:]):
            key = {v: dict(zip(g[g[name] == v].seed, g[g[name] == v].key)) for v in (a, b)}
            seeds = sorted(set(key[a]) & set(key[b]))
            if not seeds:
                continue
            d = np.stack([outcomes[key[a][s]]["accuracy"] - outcomes[key[b][s]]["accuracy"] for s in seeds])
            test = paired_bootstrap(d, alternative="two-sided")
            out.append({"arm": arm, "n_train": n, "coordinate": name, "value_a": a, "value_b": b,
                        "difference": test["mean_diff"], "se": test["se_diff"], "se_seed": test["se_seed"],
                        "se_image": test["se_image"], "seeds": len(seeds)})
    return pd.DataFrame(out, columns=["arm", "n_train", "coordinate", "value_a", "value_b", "difference", "se",
                                      "se_seed", "se_image", "seeds"])
