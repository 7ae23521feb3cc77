"""Hyperparameters chosen on validation splits, never on test: the tuning protocol of every downstream approach.

The protocol (the test split is never looked at; earlier versions: ``docs/history.md``):
  * data: the validation split (``val_fraction``) of the run's own n-image training subset, at **every training-set
    size** n of CIFAR-10; runs take the size's step budget (``Profile.steps_for``);
  * criterion: the highest **mean** validation accuracy over the first ``tuning_seeds`` seeds, ties (equal to
    ``SCORE_DECIMALS`` decimals) broken by the lower mean validation NLL;
  * order (coordinate-wise, each stage at the winners of the earlier ones); a "sweep" extends its log grid by its
    own spacing at a time while the best value is at an edge (at most 3 times per side):
      - an optimiser (SGD transfer, MAP), per prior kind: its prior family's recipe (:mod:`.families`): SGD
        transfer lr over ``lr_grid``, weight decay x ``factor_grid`` (at ``study_n``, see below); MAP + non-learned
        lr over ``lr_grid`` (alpha = 1), alpha x ``factor_grid``; MAP + learned SGD transfer's lr (same
        initialisation), a sweep of lambda over ``tuning_scales``, head variance x ``factor_grid``; MAP + isotropic
        learned-mean prior SGD transfer's lr, alpha = 1e-2 x ``factor_grid``;
      - Bayes at T = 1 (regime ``"T1"``), each prior: the MAP winners, then a sweep of the prior's width again (lambda
        over ``tuning_scales``; alpha from the MAP alpha x ``factor_grid``), because the posterior's spread, unlike the
        MAP point, depends on it directly;
      - Bayes, cold (regime ``"cold"``), each prior: the MAP winners (the tempered posterior concentrates on the MAP
        point as T -> 0), then T from ``cold_temperatures`` (the authors' code ran at T ~ 4e-8).
  * reuse, fixed before any of its runs existed so that the whole ``cpu`` study fits its compute (:data:`REUSED_KINDS`,
    :func:`tuning_point`):
      - the quality-matched supervised prior takes the supervised prior's values at each size (same network and
        pre-training procedure, stopped earlier: the control of C5, not a method of its own);
      - Fashion-MNIST is tuned on its own validation split at ``study_n`` only, and those values are used at its
        other sizes;
      - SGD transfer's weight decay and the cold regime's T are chosen at ``study_n`` only (per approach and prior
        kind) and used at every size, each with the size's own tuned lr and widths.
  * MAP + learned is also reported at a **mid-slope lambda** (:func:`mid_slope_scale`): where the validation curve
    is half-way up from the tightest prior to the best lambda, so the prior still pulls.

Segmentation (CamVid's validation split, best mIoU): the learning rate for SGD transfer (reused by all), then the
prior width per approach (lambda for the learned priors, alpha for the non-learned one) on a coarse log grid
(``SEGMENTATION_WIDTHS``, ``SEGMENTATION_ALPHAS``), extended by its spacing while the best value is at an edge. The
grids are in the units of the pixel likelihood (:data:`.approaches.LIKELIHOODS`): the image likelihood's grids
(lambda 1e2, 1e4, 1e6; alpha 1e-2, 1e-1, 1) divided by ~1e4 labelled pixels per image. The
cold regime takes its MAP counterpart's width and the T the same approach and prior chose on the transfer task at
``study_n`` (fixed before its runs, for compute). That is an approximation, stated as one: the transfer task samples
with SGHMC and segmentation with SGLD, and the transfer task's non-learned arm starts from a random initialisation,
segmentation's from the supervised backbone.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from ..analysis.stats import finished
from ..profiles import Profile
from .approaches import REGIMES, TASKS, counterpart, lookup
from .families import family
from .grid import Recorded
from .spec import RunSpec

MAX_EXTENSIONS = 3
REUSED_KINDS = {"supervised_matched": "supervised"}   # a prior kind -> the kind whose tuned values it takes
SEGMENTATION_WIDTHS = (1e-2, 1.0, 1e2)    # coarse lambda grid of the segmentation sweep (pixel likelihood)
SEGMENTATION_ALPHAS = (1e-6, 1e-5, 1e-4)  # coarse alpha grid of its non-learned prior (pixel likelihood)
# Scores equal to this many decimals are a tie. An accuracy is a count over a few hundred validation images, recorded
# from float32, so equal counts averaged over seeds can differ in the 8th digit (0.445 + 0.425 against 0.42 + 0.45
# over 2 seeds): without rounding, that noise, not the NLL, would break the tie.
SCORE_DECIMALS = 6


def _finished(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose run finished; an error naming the statuses when none did."""
    ok = finished(df)
    if ok.empty:
        raise RuntimeError(f"every tuning run failed: {sorted(set(df.status))}")
    return ok


def best_row(df: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """The finished row with the highest ``metric`` (ties, to ``SCORE_DECIMALS``: lower NLL where there is one)."""
    ok = _finished(df)
    ranked = ok.assign(_score=ok[metric].round(SCORE_DECIMALS))
    keys = ["_score"] + (["nll"] if "nll" in ok else [])
    return ranked.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1), kind="stable").iloc[0].drop("_score")


def _scored(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The finished rows of the values of ``name`` whose every run (seed) finished: a value where a seed failed (e.g.
    diverged) is not scored on its survivors, which would favour unstable settings; unless every value lost one."""
    ok = _finished(df)
    complete = ok[~ok[name].isin(set(df.loc[df.status != "ok", name]))]
    return complete if not complete.empty else ok


def best_value(df: pd.DataFrame, name: str, metric: str = "accuracy") -> float:
    """The value of ``name`` with the highest mean ``metric`` over its runs (seeds), every one of them finished;
    ties: lower mean NLL."""
    ok = _scored(df, name)
    means = ok.groupby(name)[[c for c in (metric, "nll") if c in ok]].mean().reset_index()
    return float(best_row(means.assign(status="ok"), metric)[name])


def mean_curve(df: pd.DataFrame, name: str, metric: str = "accuracy") -> pd.Series:
    """Mean ``metric`` over the runs (seeds) of each value of ``name`` whose every run finished, sorted by value."""
    return _scored(df, name).groupby(name)[metric].mean().sort_index()


def tuning_seeds(profile: Profile) -> list[int]:
    return list(profile.seeds[:profile.tuning_seeds])


def validation_setting(profile: Profile, approach: str, kind: str, n: int | None = None, dataset: str = "cifar10",
                       **kw) -> dict:
    """A setting of ``approach`` on the tuning data: the validation split of an n-image subset (``study_n`` by
    default) of ``dataset``, at the first seed (stages run every tuning seed)."""
    return dict(approach=approach, prior_kind=kind, split="val", n_train=n or profile.study_n,
                seed=profile.seeds[0], dataset=dataset, **kw)


def _stage(rec: Recorded, base: dict, name: str, values: Iterable[float] | None, desc: str) -> dict:
    """Try ``name`` over ``values`` (default: its default value x ``factor_grid``) at ``base``, every tuning seed;
    return ``base`` with the winner."""
    profile = rec.profile
    if values is None:
        default = base.get(name, getattr(RunSpec.default(profile, "transfer", base["approach"]), name))
        values = [default * f for f in profile.factor_grid]
    rows = rec.rows("transfer", [base | {name: v, "seed": s} for v in values for s in tuning_seeds(profile)], desc)
    return base | {name: best_value(rows, name)}


def sweep(rec: Recorded, base: dict, name: str, grid: Iterable[float], desc: str, seeds: Iterable[int] | None = None,
          task: str = "transfer", metric: str = "accuracy") -> tuple[pd.DataFrame, list[float]]:
    """Runs of ``base`` on ``task``'s grid over ``name`` (every seed per value), the grid extended by its own spacing
    at a time while the best mean ``metric`` (the smallest value of a tie) is at an edge (at most ``MAX_EXTENSIONS``
    per side). Returns all rows and the final grid."""
    seeds = list(seeds or [base.get("seed", rec.profile.seeds[0])])
    grid = sorted(grid)
    step = grid[1] / grid[0] if len(grid) > 1 else 10.0      # the grid's own spacing (a decade on ``scales``)
    added = {"low": 0, "high": 0}
    while True:
        rows = rec.rows(task, [base | {name: v, "seed": seed} for v in grid for seed in seeds], desc)
        # the smallest value with the best mean, ties to SCORE_DECIMALS: on a plateau that reaches an edge, where only
        # the NLL (noise there) would tell the values apart, the grid is not extended
        score = mean_curve(rows, name, metric).round(SCORE_DECIMALS)
        best = score.idxmax() if not score.empty else None
        if best == grid[-1] and added["high"] < MAX_EXTENSIONS:
            grid.append(grid[-1] * step)
            added["high"] += 1
        elif best == grid[0] and added["low"] < MAX_EXTENSIONS:
            grid.insert(0, grid[0] / step)
            added["low"] += 1
        else:
            return rows, grid


def mid_slope_scale(curve: pd.Series) -> float:
    """The mid-slope lambda of a MAP validation curve (lambda -> mean accuracy): the smallest lambda, up to the best
    one, whose accuracy reaches half-way from the tightest prior's (the smallest lambda) to the best. There the prior
    still pulls the solution towards the source; at the best lambda of a wide sweep it often no longer does."""
    curve = curve.sort_index()
    best = curve.idxmax()
    target = curve.iloc[0] + 0.5 * (curve.max() - curve.iloc[0])
    rising = curve[curve.index <= best]
    return float(rising[rising >= target].index[0])


def widened(scales: Iterable[float], low: float, high: float) -> list[float]:
    """The log grid ``scales`` extended at its own spacing until it covers [low, high]."""
    grid = sorted(scales)
    step = grid[1] / grid[0]
    if step <= 1.01:
        raise ValueError(f"scales must be a log grid of distinct values, got {tuple(scales)}")
    while grid[0] > low * 1.01:
        grid.insert(0, grid[0] / step)
    while grid[-1] < high / 1.01:
        grid.append(grid[-1] * step)
    return grid


def setting(rec: Recorded, approach: str, kind: str = "ssl", regime: str = "T1", **kw) -> dict:
    """A test-split setting of ``approach`` with the hyperparameters tuned at its size and dataset (``n_train``,
    ``dataset`` in ``kw``; ``study_n`` and CIFAR-10 by default), a sampler's in temperature ``regime``; ``kw`` win."""
    kind = kind if lookup(approach).init == "pretrained" else "none"
    n, dataset = kw.get("n_train", rec.profile.study_n), kw.get("dataset", "cifar10")
    return {"approach": approach, "prior_kind": kind, **tuned(rec, approach, kind, n, dataset, regime), **kw}


def tuned(rec: Recorded, approach: str, kind: str = "ssl", n: int | None = None, dataset: str = "cifar10",
          regime: str = "T1") -> dict:
    """The hyperparameters of ``approach`` chosen on the validation split of an n-image ``dataset`` subset
    (``study_n`` by default); for a sampler, in the temperature ``regime`` (see the module docstring). A sampler's
    answer includes its ``temperature``. Chosen once per snapshot of the grids (:meth:`.grid.Recorded.memo`)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown temperature regime {regime!r}; valid: {', '.join(REGIMES)}")
    a = lookup(approach)
    kind = kind if a.init == "pretrained" else "none"           # a random initialisation has no prior kind
    kind, n = tuning_point(rec.profile, kind, n or rec.profile.study_n, dataset)
    return dict(rec.memo(_tune, approach, kind, n, dataset, regime if a.bayes else "T1"))


def tuning_point(profile: Profile, kind: str, n: int, dataset: str) -> tuple[str, int]:
    """The (prior kind, size) whose validation runs choose the values of ``kind`` at n on ``dataset`` (the module
    docstring's reuse): the matched prior takes the supervised prior's; Fashion-MNIST is tuned at ``study_n``."""
    return REUSED_KINDS.get(kind, kind), (n if dataset == "cifar10" else profile.study_n)


def _where(kind: str, n: int, dataset: str) -> str:
    """Where a tuning stage runs, as its progress bar names it."""
    return f"{kind}, n = {n}" + (f", {dataset}" if dataset != "cifar10" else "")


def _tune(rec: Recorded, approach: str, kind: str, n: int, dataset: str, regime: str) -> dict:
    profile, a = rec.profile, lookup(approach)
    if a.inference == "variational":      # a fit learns its widths: its other values are its MAP counterpart's
        return tuned(rec, counterpart(approach, "map"), kind, n, dataset)
    if not a.bayes:
        return _tune_map(rec, approach, kind, n, dataset)
    # a sampler: the MAP winners, then the prior's width again (T = 1) or the temperature (cold)
    winners = tuned(rec, counterpart(approach, "map"), kind, n, dataset)
    if regime == "cold":
        if n != profile.study_n:  # the MAP winners at this size, at the T chosen at study_n
            chosen = tuned(rec, approach, kind, profile.study_n, dataset, "cold")
            return winners | {"temperature": chosen["temperature"]}
        s = _stage(rec, validation_setting(profile, approach, kind, n=n, dataset=dataset, **winners), "temperature",
                   profile.cold_temperatures, f"tune {approach} cold ({_where(kind, n, dataset)}): T")
        return winners | {"temperature": s["temperature"]}
    rows, _, name = bayes_width_sweep(rec, approach, kind, n, dataset)
    return winners | {name: best_value(rows, name), "temperature": 1.0}


def _tune_map(rec: Recorded, approach: str, kind: str, n: int, dataset: str) -> dict:
    """An optimiser's values by its prior family's recipe (:class:`.families.PriorFamily`): SGD transfer's lr where
    the family takes it, then each stage at the earlier ones' winners; a stage chosen at ``study_n`` only takes that
    choice at every other size, before the others run."""
    profile, recipe = rec.profile, family(lookup(approach).prior)
    s = validation_setting(profile, approach, kind, n=n, dataset=dataset)
    if recipe.lr_from_sgd:
        s["lr"] = tuned(rec, "sgd_transfer", kind, n, dataset)["lr"]
    stages = [st for st in recipe.stages if not (st.at_study_n and n != profile.study_n)]
    s |= {st.name: tuned(rec, approach, kind, profile.study_n, dataset)[st.name] for st in recipe.stages
          if st not in stages}
    for st in stages:
        desc = f"tune {approach} ({_where(kind, n, dataset)}): {st.name}"
        if st.grid == "scales":
            rows, _ = sweep(rec, s, st.name, profile.tuning_scales, desc, seeds=tuning_seeds(profile))
            s = s | {st.name: best_value(rows, st.name)}
        else:
            s = _stage(rec, s, st.name, profile.lr_grid if st.grid == "lr" else None, desc)
    return {k: s[k] for k in ["lr"] * recipe.lr_from_sgd + [st.name for st in recipe.stages]}


def scale_sweep(rec: Recorded, kind: str, n: int | None = None, dataset: str = "cifar10") -> tuple[pd.DataFrame, list[float]]:
    """MAP + learned prior over lambda on validation (every tuning seed; the grid extended while its best is at an
    edge), at SGD transfer's tuned lr, at :func:`tuning_point`: the rows and the final grid."""
    profile = rec.profile
    kind, n = tuning_point(profile, kind, n or profile.study_n, dataset)
    lr = tuned(rec, "sgd_transfer", kind, n, dataset)["lr"]
    base = validation_setting(profile, "map_learned", kind, n=n, dataset=dataset, lr=lr)
    return sweep(rec, base, "scale", profile.tuning_scales, f"tune map_learned ({kind}, n = {n}): scale",
                 seeds=tuning_seeds(profile))


def bayes_width_sweep(rec: Recorded, approach: str, kind: str, n: int | None = None,
                      dataset: str = "cifar10") -> tuple[pd.DataFrame, list[float], str]:
    """A sampler's T = 1 sweep of its prior's width on validation (lambda for the learned prior over
    ``tuning_scales``, alpha for an isotropic one over the MAP alpha x ``factor_grid``), at the MAP winners, every
    tuning seed, at :func:`tuning_point`: the rows, the final grid and the swept name."""
    profile = rec.profile
    kind, n = tuning_point(profile, kind, n or profile.study_n, dataset)
    winners = tuned(rec, counterpart(approach, "map"), kind, n, dataset)
    base = validation_setting(profile, approach, kind, n=n, dataset=dataset, **winners)
    recipe = family(lookup(approach).prior)
    name = recipe.width
    grid = profile.tuning_scales if recipe.sampler_grid == "scales" else [winners[name] * f for f in profile.factor_grid]
    rows, grid = sweep(rec, base, name, grid, f"tune {approach} T = 1 ({_where(kind, n, dataset)}): {name}",
                       seeds=tuning_seeds(profile))
    return rows, grid, name


def mid_slope(rec: Recorded, kind: str = "ssl", n: int | None = None, dataset: str = "cifar10") -> dict:
    """MAP + learned's tuned hyperparameters with lambda at the validation curve's mid-slope (:func:`mid_slope_scale`)."""
    rows, _ = scale_sweep(rec, kind, n, dataset)
    return tuned(rec, "map_learned", kind, n, dataset) | {"scale": mid_slope_scale(mean_curve(rows, "scale"))}


# Worker orders for the tuning families: two processes start on independent families.
FAMILIES = [("sgd_transfer", "ssl"), ("map_learned", "ssl"), ("bayes_learned", "ssl"), ("map_isotropic", "ssl"),
            ("bayes_isotropic", "ssl"), ("map_nonlearned", "none"), ("bayes_nonlearned", "none"),
            ("sgd_transfer", "supervised"), ("map_learned", "supervised"), ("bayes_learned", "supervised"),
            ("sgd_transfer", "supervised_matched"), ("map_learned", "supervised_matched"),
            ("bayes_learned", "supervised_matched")]
TUNE_ORDERS = (FAMILIES, [f for kind in ("supervised_matched", "supervised", "none", "ssl") for f in FAMILIES
                          if f[1] == kind])


# ----------------------------------------------------------------------------------------------- segmentation

def tuned_segmentation(rec: Recorded, approach: str, kind: str = "supervised", regime: str = "T1") -> dict:
    """The validation-tuned hyperparameters of a segmentation approach (see the module docstring); a sampler's in
    temperature ``regime``, its answer with its ``temperature``: at T = 1 its own width sweep, cold the width of its
    MAP counterpart (its own T = 1 width where there is none) and the cold T the same approach chose on the transfer
    task (an approximation: see the module docstring)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown temperature regime {regime!r}; valid: {', '.join(REGIMES)}")
    a = lookup(approach, "segmentation")
    return dict(rec.memo(_tune_segmentation, approach, kind if family(a.prior).learned else "supervised",
                         regime if a.bayes else "T1"))


def _tune_segmentation(rec: Recorded, approach: str, kind: str, regime: str) -> dict:
    a = lookup(approach, "segmentation")
    if regime == "cold":   # its MAP counterpart's width (its own T = 1 width where there is none), and the T that
        name = _width_name(approach)                        # the same approach chose on the transfer task at study_n
        optimiser = counterpart(approach, "map")
        width = (tuned_segmentation(rec, optimiser, kind) if optimiser in TASKS["segmentation"].approaches
                 else tuned_segmentation(rec, approach, kind, "T1"))[name]
        transfer = tuned(rec, approach, kind if lookup(approach).init == "pretrained" else "none", regime="cold")
        return {"lr": tuned_segmentation(rec, "sgd_transfer")["lr"], name: width,
                "temperature": transfer["temperature"]}
    rows, name = segmentation_sweep(rec, approach, kind)
    chosen = {"lr": float(rows.lr.iloc[0])} | {name: best_value(rows, name, "miou")}   # a width's sweep runs at one lr
    return chosen | ({"temperature": 1.0} if a.bayes else {})


def _width_name(approach: str) -> str:
    """The prior width a segmentation approach tunes (its family's: lambda, "scale", or alpha)."""
    return family(lookup(approach, "segmentation").prior).width


def segmentation_sweep(rec: Recorded, approach: str, kind: str = "supervised") -> tuple[pd.DataFrame, str]:
    """The validation runs that choose a segmentation approach's own hyperparameter (at T = 1 for a sampler), and its
    name: SGD transfer's learning rate (every approach reuses it), else the prior's width at that learning rate, on its
    coarse grid as extended (:func:`sweep`)."""
    profile = rec.profile
    seeds = tuning_seeds(profile)
    lr_rows = rec.rows("segmentation", [dict(approach="sgd_transfer", lr=lr, split="val", seed=s)
                                        for lr in profile.lr_grid for s in seeds], "tune segmentation: lr")
    if approach == "sgd_transfer":
        return lr_rows, "lr"
    name = _width_name(approach)
    base = dict(approach=approach, prior_kind=kind, lr=best_value(lr_rows, "lr", "miou"), seed=seeds[0], split="val")
    rows, _ = sweep(rec, base, name, SEGMENTATION_ALPHAS if name == "alpha" else SEGMENTATION_WIDTHS,
                    f"tune segmentation {approach}/{kind}: {name}", seeds=seeds, task="segmentation", metric="miou")
    return rows, name
