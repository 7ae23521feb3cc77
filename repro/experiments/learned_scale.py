"""Notebook 10 (an extension, not a claim of the paper): the prior's widths learned by the data-emphasized
ELBO (:mod:`repro.method.variational`) on the whole training set, against the validation grid of :mod:`.tuning`.

Pre-registered (fixed before any of its results existed):

* **Fits.** At each size n of ``elbo_sizes`` and each seed, one variational fit per prior family of :data:`FAMILIES`
  (the learned prior of the notebook's kind: lambda and the head variance; the non-learned isotropic prior: alpha)
  on all n images, at the size's step budget and the learning rate the grid chose for that family's MAP arm (the
  optimiser's step size is not a prior width: both protocols share it). The plain ELBO (kappa = 1) is fitted for the
  learned prior as an ablation.
* **Arms.** With the fitted widths: MAP, and the sampler at T = 1 and in the cold regime (its T as the grid chose it:
  a temperature is not a width), every other hyperparameter as the grid chose it; the plain ELBO's widths feed MAP
  only. Each is paired, per size and seed, with the same arm at the grid's widths (the five-way runs of notebook 05).
* **Rule** (:func:`verdict`): per family, arm and size, a paired bootstrap over seeds x test images of test accuracy,
  DE-ELBO minus grid. The target is met where the DE-ELBO arm is better (p < 0.05) or equivalent within
  :data:`MARGIN` (TOST, p < 0.05), missed where it is worse (p < 0.05), unclear otherwise; Holm over the family of
  comparisons. **CPU time of choosing the widths**: the grid's is the training time of the validation runs that
  chose them at that size (MAP's lambda / alpha and head-variance stages and the sampler's T = 1 width sweep, every
  tuning seed); the DE-ELBO's is one fit's. Verdict: ``reproduced`` (target met) if every comparison is met and each
  size's time ratio is at most :data:`TIME_RATIO`; ``not reproduced`` if a comparison is missed; ``partially
  reproduced`` if the MAP arms are met at every size but not every sampler arm; else ``inconclusive``.

**Amendment (2026-11-29, post hoc: after the pre-registered arms' first results, before these runs).** The DE-ELBO
weighs its KL by 1 / (kappa N), MAP its prior by 1 / N: q's mean m minimises the Gaussian-smoothed data loss
E_q[loss] plus -log p_w(m) / (kappa N), and the second term is MAP's prior term at kappa times the learned widths
(for a Gaussian block, p_w^(1/kappa) is N(mu, kappa w Sigma) up to a constant). So m is the MAP under the prior at
kappa w, up to the smoothing (exact for a quadratic loss), and the pre-registered MAP arm got a prior kappa = d / N
times (270 to 2 700 on ``cpu``) narrower than the one the fit used. For the samplers, q targets p(D | theta)^kappa
p_w, the posterior at prior kappa w and T = 1 / kappa: kappa w is the prior under which the fit's target is a
tempered posterior of the samplers' kind, which the sampler arms then run at their own T. Two comparisons are added,
each paired with the grid's arm and Holm-adjusted as a family of its own, and reported beside the pre-registered
one, which stays the verdict: every arm at ``kappa x`` the learned widths (``widths`` :data:`MATCHED`; the plain
ELBO has kappa = 1, its prior term is MAP's already), and q's mean itself against the grid's MAP (``widths``
:data:`Q_MEAN`: how the method's authors predict, and what isolates the smoothing).

**Confirmatory test (registered 2026-12-05, before its runs; :func:`confirm`).** The kappa-corrected arms, MAP and the
cold sampler (:data:`CONFIRM_ARMS`), against the same arms at the third protocol's values and budgets
(:func:`.own_budget.own_setting`), at every size of ``sampler_budget_sizes`` on the fresh ``confirm_seeds``; each
fit doubled until its widths settle and sigma has left its start (:func:`converged_fit`); selection CPU against rule
5's width coordinates (:func:`confirm_selection_time`); the same rule (:func:`verdict` with ``primary`` MATCHED).
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from ..analysis.stats import Outcomes, adjust, compare, finished
from ..analysis.wording import Verdict, word
from ..data import DATASETS
from ..models import Classifier, build_backbone
from ..profiles import Profile
from .approaches import REGIMES, arm_parts, lookup
from ..method.variational import SIGMA_INIT
from .grid import Recorded
from .own_budget import own_setting
from .retune import retune_runs, retuned
from .tuning import setting, tuned

MARGIN = 0.01        # "within 1 accuracy point"
TIME_RATIO = 0.2     # "at no more than one fifth of the grid's selection CPU time"
# family -> (variational approach, MAP approach, sampler approach, the widths it learns)
FAMILIES = {"learned": ("vi_learned", "map_learned", "bayes_learned", ("scale", "head_var")),
            "non-learned": ("vi_nonlearned", "map_nonlearned", "bayes_nonlearned", ("alpha",))}
ARMS = ("map", "T1", "cold")          # MAP, and the sampler in each temperature regime
KIND = "ssl"                          # the learned prior's kind: the paper's headline (SimCLR) prior
MATCHED, Q_MEAN = "de_elbo_matched", "q_mean"     # the amendment's arms (module docstring)
#: How figures name the widths' sources and the arms.
WIDTH_LABELS = {"grid": "validation grid", "de_elbo": "DE-ELBO (registered)", MATCHED: "κ × DE-ELBO",
                "elbo": "plain ELBO", Q_MEAN: "q's own mean"}
ARM_NAMES = {"map": "MAP", **REGIMES}
WIDTH_HUES = list(WIDTH_LABELS.values())    # their colour order: a source keeps its colour in both of E1's figures


def figure_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` as E1's figures show them: a panel per prior and arm (``setting``), each source of widths by its name
    in :data:`WIDTH_LABELS` (``widths``)."""
    return rows.assign(setting=[f"{f} prior, {ARM_NAMES[a]}" for f, a in zip(rows.family, rows.arm)],
                       widths=rows.widths.map(WIDTH_LABELS).fillna(rows.widths))


@functools.lru_cache(maxsize=4)
def _parameter_count(profile: Profile) -> int:
    """d, the parameters of the downstream CIFAR-10 model (one build per profile, not one per fit)."""
    model = Classifier(build_backbone(profile.model, width=profile.width), int(DATASETS["cifar10"].num_classes))
    return sum(q.numel() for q in model.parameters())


def kappa(profile: Profile, objective: str, n_train: int) -> float:
    """How much more the fit weighs the data than its KL, relative to MAP's weighting: d / N for the DE-ELBO (d
    parameters of the downstream model), 1 for the plain ELBO (:mod:`repro.method.variational`)."""
    return 1.0 if objective == "elbo" else _parameter_count(profile) / n_train


def _kind(approach: str, kind: str) -> str:
    return kind if lookup(approach).init == "pretrained" else "none"


def learned_scale_study(rec: Recorded, kind: str = KIND) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notebook 10's runs: the fits, then every arm at the grid's and the fits' widths."""
    fitted = fits(rec, kind)
    return fitted, arms(rec, kind, fitted)


def fits(rec: Recorded, kind: str = KIND, families=tuple(FAMILIES)) -> pd.DataFrame:
    """The variational fits (``objective`` de_elbo for every family, elbo for the learned prior), one row each with
    ``family``, ``objective`` and the widths learned in ``learned_*`` columns."""
    profile, settings, labels = rec.profile, [], []
    for family in families:
        vi, map_, _, _ = FAMILIES[family]
        for objective in ("de_elbo", "elbo") if family == "learned" else ("de_elbo",):
            for n in profile.elbo_sizes:
                lr = tuned(rec, map_, _kind(map_, kind), n)["lr"]
                for seed in profile.seeds:
                    settings.append(dict(approach=vi, prior_kind=_kind(vi, kind), n_train=n, seed=seed, lr=lr,
                                         sampler=objective, dataset="cifar10"))
                    labels.append(dict(family=family, objective=objective))
    rows = rec.rows("transfer", settings, "DE-ELBO fits")
    out = pd.concat([pd.DataFrame(labels), rows.reset_index(drop=True)], axis=1)
    return out.assign(kappa=[kappa(profile, o, n) for o, n in zip(out.objective, out.n_train)])


def arms(rec: Recorded, kind: str, fitted: pd.DataFrame) -> pd.DataFrame:
    """Every arm at the grid's widths and at each fit's (``widths`` column: "grid", "de_elbo", "elbo", or the
    amendment's :data:`MATCHED`), one row per run with ``family`` and ``arm`` (map, T1, cold); then each DE-ELBO fit's
    own row as the MAP arm of widths :data:`Q_MEAN`."""
    settings, labels = [], []
    ok = finished(fitted)
    for fit in ok.itertuples():
        _, map_, sampler, names = FAMILIES[fit.family]
        learned = {name: float(getattr(fit, f"learned_{name}")) for name in names}
        matched = {name: fit.kappa * w for name, w in learned.items()}
        for arm in ARMS if fit.objective == "de_elbo" else ("map",):
            approach, regime = (map_, "T1") if arm == "map" else (sampler, arm)
            grid = setting(rec, approach, _kind(approach, kind), regime, n_train=fit.n_train, seed=fit.seed)
            pairs = ([("grid", grid), ("de_elbo", grid | learned), (MATCHED, grid | matched)]
                     if fit.objective == "de_elbo" else [(fit.objective, grid | learned)])
            for widths, s in pairs:       # the grid's arm once, beside the DE-ELBO fit's
                settings.append(s)
                labels.append(dict(family=fit.family, arm=arm, widths=widths))
    rows = rec.rows("transfer", settings, "DE-ELBO arms")
    rows = pd.concat([pd.DataFrame(labels), rows.reset_index(drop=True)], axis=1)
    own = ok[ok.objective == "de_elbo"].drop(columns="objective").assign(arm="map", widths=Q_MEAN)
    return pd.concat([rows, own[[c for c in rows.columns if c in own.columns]]], ignore_index=True)


def grid_widths(rec: Recorded, kind: str = KIND) -> pd.DataFrame:
    """The widths the validation grid chose per family and size: MAP's (which the cold sampler keeps) and the T = 1
    sampler's own."""
    rows = []
    for family, (_, map_, sampler, names) in FAMILIES.items():
        for n in rec.profile.elbo_sizes:
            for arm, approach in (("map", map_), ("T1", sampler)):
                t = tuned(rec, approach, _kind(approach, kind), n, "cifar10", "T1")
                rows.append(dict(family=family, n_train=n, arm=arm, **{name: t[name] for name in names}))
    return pd.DataFrame(rows)


def selection_time(rec: Recorded, kind: str, fitted: pd.DataFrame) -> pd.DataFrame:
    """Per family and size: the grid's CPU time of choosing the widths (see the module docstring) and one DE-ELBO
    fit's (mean over seeds), in seconds, and their ratio."""
    runs = rec.table("transfer")
    val = finished(runs)[lambda d: (d.split == "val") & (d.dataset == "cifar10")]
    out = []
    for family in fitted.family.unique():
        _, map_, sampler, _ = FAMILIES[family]
        for n in rec.profile.elbo_sizes:
            lr = tuned(rec, map_, _kind(map_, kind), n)["lr"]
            at = val[(val.n_train == n) & (val.prior_kind == _kind(map_, kind))]
            grid = at[((at.approach == map_) & (at.lr == lr)) | ((at.approach == sampler) & (at.temperature == 1.0))]
            de = fitted[(fitted.family == family) & (fitted.objective == "de_elbo") & (fitted.n_train == n)
                        & (fitted.status == "ok")]
            out.append(dict(family=family, n_train=n, grid_runs=len(grid), grid_cpu_s=grid.train_time_s.sum(),
                            de_elbo_cpu_s=de.train_time_s.mean()))
    return pd.DataFrame(out).assign(ratio=lambda d: d.de_elbo_cpu_s / d.grid_cpu_s)


def verdict(table: pd.DataFrame, times: pd.DataFrame, outcomes: Outcomes | None = None, primary: str = "de_elbo",
            reported: tuple[str, ...] = (MATCHED, Q_MEAN), against: str = "the validation grid's",
            expected: int | None = None) -> Verdict:
    """The pre-registered rule (module docstring) on the rows of :func:`arms` and :func:`selection_time`; the verdict
    is the ``primary`` comparison's (the pre-registered ``de_elbo``; :func:`confirm`'s :data:`MATCHED`), the
    ``reported`` ones (the amendment's) are tested and reported beside it, each its own Holm family. ``expected``:
    the registered number of pairs (family, arm, size, seed); fewer finished ones cannot make the claim reproduced."""
    families = []
    for widths in (primary, *reported):
        rows = []
        for (family, arm), g in table[table.widths.isin([widths, "grid"])].groupby(["family", "arm"], sort=False):
            if (g.widths == widths).any():
                for c in compare(g, dict(widths=widths), dict(widths="grid"), on=("n_train", "seed"),
                                 outcomes=outcomes, by_size=True)[1:]:
                    rows.append(dict(widths=widths, family=family, arm=arm, **c))
        families += adjust(rows) if rows else []
    tests = pd.DataFrame(families)
    tests["target"] = tests.outcome.map({"effect": "met", "equivalent": "met", "reversed": "missed"}).fillna("unclear")
    pre = tests[tests.widths == primary]
    fast = bool((times.ratio <= TIME_RATIO).all())
    outcomes_ = ["effect" if t == "met" else "reversed" if t == "missed" else "unclear" for t in pre.target]
    maps = pre[pre.arm == "map"]       # met at every (family, size) the table holds, none of them missing
    map_met = len(maps) == len(table[["family", "n_train"]].drop_duplicates()) and bool((maps.target == "met").all())
    w = word(outcomes_, partial=map_met and "reversed" not in outcomes_)
    if w == "reproduced" and not fast:
        w = "partially reproduced"
    what = "kappa x the DE-ELBO widths" if primary == MATCHED else "DE-ELBO widths"
    finding = (f"Regime: n = {', '.join(str(int(n)) for n in sorted(pre.n_train.unique()))}. {what} vs {against}: "
               f"{_tally(pre)}; selection CPU time {times.ratio.min():.2f}-{times.ratio.max():.2f}"
               f" x the grid's (target <= {TIME_RATIO:g}).")
    if expected is not None and (made := _pairs(table, primary)) < expected:
        finding += f" Only {made} of the {expected} registered pairs (family, arm, size, seed) finished."
        w = "inconclusive" if w == "reproduced" else w
    for widths, what in ((MATCHED, "kappa x the learned widths"), (Q_MEAN, "q's own mean vs the grid's MAP")):
        if widths in reported and (tests.widths == widths).any():
            finding += f" Amendment (post hoc), {what}: {_tally(tests[tests.widths == widths])}."
    return Verdict(tests, w, finding)


def _pairs(table: pd.DataFrame, widths: str) -> int:
    """How many (family, arm, size, seed) cells of ``table`` have both ``widths``' run and the grid's finished."""
    have = finished(table).groupby(["family", "arm", "n_train", "seed"]).widths.agg(set)
    return int(have.map(lambda w: {widths, "grid"} <= w).sum())


def _tally(tests: pd.DataFrame) -> str:
    """'target met in a of b comparisons, missed in c; worst difference ... pt (family, arm, n)'."""
    worst = tests.loc[tests.mean_diff.idxmin()]
    return (f"target met in {int((tests.target == 'met').sum())} of {len(tests)} comparisons, missed in "
            f"{int((tests.target == 'missed').sum())}; worst difference {100 * worst.mean_diff:+.2f} pt "
            f"({worst.family}, {worst.arm}, n = {int(worst.n_train)})")


# ------------------------------------------------------------------ the confirmatory test (registered 2026-12-05)

# family -> the arms it is tested on (:data:`.retune.ARMS` names): MAP and the cold sampler
CONFIRM_ARMS = {"learned": ("map_learned", "bayes_learned (cold)"),
                "non-learned": ("map_nonlearned", "bayes_nonlearned (cold)")}
WIDTH_TOLERANCE = math.log(1.1)     # a doubling that moves every learned width by less than 10 % ends the fit's budget
LEFT_INIT = 2.0                     # ... once sigma is at least twice its initial value (it left its initialisation)


def _spent(runs: pd.DataFrame | dict) -> pd.Series | float:
    """A run's training time in seconds; a failed run's, which recorded none, is the time it ran until it failed."""
    if isinstance(runs, dict):
        return runs["train_time_s"] if pd.notna(runs.get("train_time_s")) else runs["wall_time_s"]
    return runs.train_time_s.fillna(runs.wall_time_s)


def converged_fit(rec: Recorded, family: str, n: int, seed: int) -> dict:
    """The registered fit of ``family`` at n and ``seed``: the DE-ELBO at MAP's rule-5 lr, from MAP's budget, doubled
    (each budget its own fit) until the last doubling moves every width by less than :data:`WIDTH_TOLERANCE` (log)
    and sigma is at least :data:`LEFT_INIT` x its start, up to ``sampler_budget_max_steps``. The fit's row with
    ``converged`` and ``fit_cpu_s``, the training time of every fit of the sequence. Fits train in fp32: a bf16 cast
    would round away the perturbation sigma * eps (sigma ~ 1e-4 against weights ~ 1e-2) the fit learns sigma from."""
    profile, (vi, map_, _, names) = rec.profile, FAMILIES[family]
    lr = retuned(rec, map_, n)["lr"]
    base = dict(approach=vi, prior_kind=_kind(vi, KIND), n_train=n, seed=seed, lr=lr, sampler="de_elbo",
                dataset="cifar10")

    def fit(steps: int) -> dict:
        return rec.rows("transfer", [base | {"steps": steps}], f"E1 fit ({family}, n = {n})").iloc[0].to_dict()

    steps, prev = profile.steps_for(n), None
    row = fit(steps)
    cpu = _spent(row)
    while True:
        done = prev is not None and row["status"] == prev["status"] == "ok" and all(
            abs(math.log(row[f"learned_{w}"] / prev[f"learned_{w}"])) < WIDTH_TOLERANCE for w in names
        ) and row["learned_sigma"] >= LEFT_INIT * SIGMA_INIT
        if done or 2 * steps > profile.sampler_budget_max_steps:
            return row | {"family": family, "converged": bool(done), "fit_cpu_s": cpu}
        prev, steps = row, 2 * steps
        row = fit(steps)
        cpu += _spent(row)


def confirm_pairs(profile: Profile) -> int:
    """The confirmatory test's registered pairs: family x arm x size x seed."""
    return sum(map(len, CONFIRM_ARMS.values())) * len(profile.sampler_budget_sizes) * len(profile.confirm_seeds)


def fit_note(fits: pd.DataFrame) -> str:
    """How many of the confirmatory fits met the registered budget rule, which were used at the cap and which failed."""
    def cells(d: pd.DataFrame) -> str:
        return ", ".join(f"{r.family} n = {int(r.n_train)} seed {int(r.seed)}" for r in d.itertuples())

    ok = fits.status == "ok"
    stuck, failed = fits[ok & ~fits.converged.astype(bool)], fits[~ok]
    note = f"Fits converged by the registered rule: {len(fits) - len(stuck) - len(failed)} of {len(fits)}"
    note += f"; used at the cap, not converged: {cells(stuck)}" if len(stuck) else ""
    note += f"; failed: {cells(failed)}" if len(failed) else ""
    return note + "."


def confirm_ready(rec: Recorded) -> bool:
    """Whether notebook 10 can conclude the confirmatory test: once every run of it is recorded."""
    return rec.complete(confirm)


def confirm(rec: Recorded) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Notebook 10's confirmatory runs: every fit (:func:`converged_fit`), then per family, arm of
    :data:`CONFIRM_ARMS`, size of ``sampler_budget_sizes`` and seed of ``confirm_seeds``, the arm at rule 5's values
    and its own budget (``widths`` grid) and the same with kappa x the fit's widths (:data:`MATCHED`); and the
    selection CPU time per family and size (:func:`confirm_selection_time`)."""
    profile = rec.profile
    fitted = pd.DataFrame(rec.each(functools.partial(converged_fit, family=f, n=n, seed=s) for f in CONFIRM_ARMS
                                   for n in profile.sampler_budget_sizes for s in profile.confirm_seeds))
    fitted = fitted.assign(kappa=[kappa(profile, "de_elbo", n) for n in fitted.n_train])
    settings, labels = [], []
    for fit in finished(fitted).itertuples():
        names = FAMILIES[fit.family][3]
        matched = {w: fit.kappa * float(getattr(fit, f"learned_{w}")) for w in names}
        for arm in CONFIRM_ARMS[fit.family]:
            grid = own_setting(rec, arm, fit.n_train, seed=fit.seed)
            for widths, s in (("grid", grid), (MATCHED, grid | matched)):
                settings.append(s)
                labels.append(dict(family=fit.family, arm=arm_parts(arm)[1], widths=widths))
    rows = rec.rows("transfer", settings, "E1 confirmatory arms")
    rows = pd.concat([pd.DataFrame(labels), rows.reset_index(drop=True)], axis=1)
    return fitted, rows, confirm_selection_time(rec, fitted)


def confirm_selection_time(rec: Recorded, fitted: pd.DataFrame) -> pd.DataFrame:
    """Per family and size: rule 5's CPU time of choosing the widths (the training time of its holdout runs of the
    coordinates that set them, for MAP and the cold sampler, both tuning seeds) and the DE-ELBO's (every fit of its
    doubling sequence, mean over seeds), in seconds, and their ratio. A run counts once (a coordinate starts from the
    run the previous one chose) and a failed one counts too: it took its CPU time."""
    out = []
    for family, arms_ in CONFIRM_ARMS.items():
        names = FAMILIES[family][3]
        for n in rec.profile.sampler_budget_sizes:
            tried = pd.concat([retune_runs(rec, arm, n) for arm in arms_], ignore_index=True)
            grid = tried[tried.coordinate.isin(names)].drop_duplicates("key")
            de = fitted[(fitted.family == family) & (fitted.n_train == n)]
            out.append(dict(family=family, n_train=n, grid_runs=len(grid), grid_cpu_s=_spent(grid).sum(),
                            de_elbo_cpu_s=de.fit_cpu_s.mean()))
    return pd.DataFrame(out).assign(ratio=lambda d: d.de_elbo_cpu_s / d.grid_cpu_s)
