"""Notebook 09: how many steps a downstream run needs, chosen by a rule fixed before the results (pre-registered).

**Learning curves.** At each size n of ``budget_sizes``, every arm of :data:`ARMS` is trained for a doubling grid of
total steps (``budget_grid``, then doubled again while the rule is not yet met, up to ``budget_max_steps``),
each budget a separate run with its own schedule (a 400-step run is not the first half of an 800-step one). Runs use
``split="holdout"``: they train on all n images and are scored on a fixed set of ``downstream_test_n`` CIFAR-10
training images outside their training subsets, as precise as the test subset and never it.

**Hyperparameters** are fixed before the curves exist: the values the version-1 tuning chose at n = 1 000 with 200
steps (``results/cpu/transfer/first_protocol_tuning.csv``, SSL prior; :data:`ARMS`), the only tuned values there
were. The budget is a property of the optimisation; every approach is re-tuned per size at the chosen budgets.

**The rule.** For a rule arm (:data:`RULE_ARMS`: SGD transfer and MAP + learned, the optimisers that start from the
pre-trained backbone; amended 2026-11-28, see notebook 09) the budget at n is the smallest B on the grid at which
doubling gains less than :data:`THRESHOLD` (1 accuracy point) in mean holdout accuracy over seeds:
acc(2B) - acc(B) < 0.01. The budget of size n is the largest over the rule arms. A curve still unmet at
``budget_max_steps`` takes it as its budget and is marked not converged (second amendment, 2026-11-28: on ``cpu`` no
curve goes past 800 steps). MAP + non-learned (random initialisation) is measured and reported
(:data:`REPORTED_ARMS`: its last doubling's gain at the chosen budget), not followed. The sampler arms are not part
of the rule: they get the same total steps as MAP, in ``cycles`` cycles, the first of them burn-in. Their curves, the
accuracy of each sample by the cycle it ends, and BatchNorm statistics re-estimated per sample (``bn_refresh``) are
measured here to show whether each cycle ends at a trained model (rule 3) and whether the refresh helps (rule 5).

**Every sampler arm's own budget** (third amendment, 2026-12-05; :data:`SAMPLER_ARMS`): Bayes + learned (SSL prior)
and Bayes + non-learned, each at T = 1 and cold, at every size of ``sampler_budget_sizes``, 2 seeds, at the values
the studies ran them with (tuned per size on validation, :func:`.tuning.setting`), in bf16 and with the SGHMC step
that does not resonate (``sampler_version`` 2). Each curve starts at the size's MAP budget and doubles while the same
rule is unmet for that arm, up to ``sampler_budget_max_steps``; each arm keeps its own budget
(:func:`sampler_curves`, :func:`sampler_budgets`).

**Segmentation** (one size, CamVid): the same rule on mean validation mIoU of SGD transfer and MAP + learned
(:data:`SEGMENTATION_ARMS`, supervised backbone), which sets ``segmentation_steps``.
"""
from __future__ import annotations

import pandas as pd

from ..analysis.stats import finished
from ..profiles import Profile, results_dir
from ..runner import MissingPrerequisite
from .approaches import LABELS, REGIMES, arm_name, lookup, with_regime
from .grid import Recorded
from .tuning import setting

THRESHOLD = 0.01          # a doubling that gains less than this (accuracy, mIoU) is not worth its cost
RULE_ARMS = ("sgd_transfer", "map_learned")
REPORTED_ARMS = ("map_nonlearned",)   # measured at every budget; its gain at the chosen budget is reported
RULE_SEEDS = 2            # seeds of the rule arms (their mean decides); the sampler arms run the first seed only
# arm -> (approach, prior kind, temperature, hyperparameters). The version-1 tuned values (n = 1 000, 200 steps;
# results/cpu/transfer/first_protocol_tuning.csv). The cold arm is the T -> 0 end of the authors' regime (T ~ 4e-8)
# at the MAP width, as the cold regime of the studies runs it; the T = 1 arm at the width tuned for T = 1.
ARMS = {"sgd_transfer": ("sgd_transfer", "ssl", 0.0, dict(lr=0.03, weight_decay=5e-4)),
        "map_learned": ("map_learned", "ssl", 0.0, dict(lr=0.03, scale=1e6, head_var=0.1)),
        "map_nonlearned": ("map_nonlearned", "none", 0.0, dict(lr=0.03, alpha=1.0)),
        "bayes_learned (T1)": ("bayes_learned", "ssl", 1.0, dict(lr=0.03, scale=1e2, head_var=0.1)),
        "bayes_learned (cold)": ("bayes_learned", "ssl", 0.0, dict(lr=0.03, scale=1e6, head_var=0.1))}
# segmentation (CamVid val, mIoU): the version-1 tuned values of its two optimisers, supervised backbone
SEGMENTATION_ARMS = {"sgd_transfer": ("sgd_transfer", "supervised", 0.0, dict(lr=0.1)),
                     # run before segmentation counted pixels (LIKELIHOODS), and kept as the budget's proxy: at T = 0
                     # the image likelihood at (lambda, head_var) is the pixel likelihood at (lambda, head_var) / P
                     # (P ~ 1e4 labelled pixels per image; up to the prior's fixed jitter), so the curve is MAP's at
                     # lambda ~ 1e2, head_var ~ 1e-4 in pixel units, where the study's MAP keeps head_var = 1
                     "map_learned": ("map_learned", "supervised", 0.0, dict(lr=0.1, scale=1e6, likelihood="image"))}


def settings(profile: Profile, n: int, steps: int) -> list[dict]:
    """Every arm's runs of ``steps`` steps on ``n`` images."""
    out = []
    for approach, kind, temperature, hyper in ARMS.values():
        bayes = lookup(approach).bayes
        seeds = profile.seeds[:1] if bayes else profile.seeds[:RULE_SEEDS]
        extra = dict(temperature=temperature, bn_refresh=True) if bayes else {}
        out += [dict(approach=approach, prior_kind=kind, dataset="cifar10", n_train=n, split="holdout", seed=s,
                     steps=steps, **hyper, **extra) for s in seeds]
    return out


# third amendment (2026-12-05): the sampler arms, each with its own budget: arm -> (approach, prior kind, regime)
SAMPLER_ARMS = {arm_name(a, r): (a, k, r) for a, k in (("bayes_learned", "ssl"), ("bayes_nonlearned", "none"))
                for r in REGIMES}
SAMPLER_RUN = dict(split="holdout", dataset="cifar10", precision="bf16", sampler_version=2, bn_refresh=True)


def sampler_settings(rec: Recorded, arm: str, n: int, steps: int) -> list[dict]:
    """``arm``'s runs of ``steps`` steps on ``n`` images (:data:`SAMPLER_ARMS`), at the values the studies tuned."""
    approach, kind, regime = SAMPLER_ARMS[arm]
    tuned = setting(rec, approach, kind, regime, n_train=n, dataset="cifar10")
    return [tuned | SAMPLER_RUN | dict(steps=steps, seed=s) for s in rec.profile.seeds[:RULE_SEEDS]]


def sampler_curves(rec: Recorded) -> pd.DataFrame:
    """Every sampler arm's curve at every size of ``sampler_budget_sizes``, each extended while the rule is unmet for
    that arm, up to ``sampler_budget_max_steps``; all rows (``arm`` names the sampler arm)."""
    profile = rec.profile
    grids = {(arm, n): [profile.steps_for(n) * 2 ** k for k in range(3)]
             for n in profile.sampler_budget_sizes for arm in SAMPLER_ARMS}
    grids = {key: [b for b in g if b <= profile.sampler_budget_max_steps] for key, g in grids.items()}
    while True:
        todo = [s for (arm, n), g in grids.items() for b in g for s in sampler_settings(rec, arm, n, b)]
        todo.sort(key=lambda s: -s["steps"] * (1 + s["n_train"] / 1e4))  # long runs first: less idle at the end
        rows = with_arms(rec.rows("transfer", todo, "09 sampler budgets"))
        table = curves(rows)
        extend = [key for key, g in grids.items()
                  if chosen_budget(_curve(table, *key), cap=profile.sampler_budget_max_steps) is None
                  and 2 * g[-1] <= profile.sampler_budget_max_steps]
        if not extend:
            return rows
        for key in extend:
            grids[key].append(2 * grids[key][-1])


def _curve(table: pd.DataFrame, arm: str, n: int) -> pd.Series:
    return table[(table.arm == arm) & (table.n_train == n)].set_index("steps").accuracy


def sampler_budgets(table: pd.DataFrame, cap: int) -> pd.DataFrame:
    """Per size and sampler arm: its own budget by the rule (at most ``cap``; None while its curve climbs below the
    cap), whether it flattened below the cap, its accuracy there and its last doubling's gain."""
    out = []
    for (n, arm), g in table[table.arm.isin(list(SAMPLER_ARMS))].groupby(["n_train", "arm"]):
        curve = g.set_index("steps").accuracy.sort_index()
        b = chosen_budget(curve, cap=cap)
        out.append({"n_train": int(n), "arm": arm, "budget": b, "converged": chosen_budget(curve) is not None,
                    "accuracy": curve.get(b, float("nan")) if b else float("nan"),
                    "gain": curve[2 * b] - curve[b] if b and 2 * b in curve.index else float("nan")})
    return pd.DataFrame(out, columns=["n_train", "arm", "budget", "converged", "accuracy", "gain"]).astype(
        {"budget": "Int64"})


def as_sampler_steps(table: pd.DataFrame) -> tuple[tuple[str, int, int], ...]:
    """:func:`sampler_budgets`' choices as ``Profile.sampler_steps`` holds them: (arm, n, steps) where chosen."""
    return tuple((r.arm, int(r.n_train), int(r.budget)) for r in table.itertuples() if pd.notna(r.budget))


def chosen_budget(curve: pd.Series, threshold: float = THRESHOLD, cap: int | None = None) -> int | None:
    """The rule on one arm's curve (steps -> mean accuracy): the smallest B with curve[2B] - curve[B] < ``threshold``;
    where no doubling on the curve gains less, ``cap`` once the curve has reached it (the most steps the study
    spends: notebook 09's second amendment), else None (the curve has not flattened yet)."""
    curve = curve.sort_index()
    for b in curve.index:
        if 2 * b in curve.index and curve[2 * b] - curve[b] < threshold:
            return int(b)
    return int(cap) if cap is not None and cap in curve.index else None


def size_budget(curves: list[pd.Series], threshold: float = THRESHOLD,
                cap: int | None = None) -> tuple[list[int | None], int | None, bool]:
    """The rule over the curves of a size's rule arms: each arm's :func:`chosen_budget` (at most ``cap``), the
    size's budget (the largest; None until every arm has one), and whether every arm flattened below the cap."""
    chosen = [chosen_budget(c, threshold, cap) for c in curves]
    budget = max(chosen) if all(b is not None for b in chosen) else None
    return chosen, budget, all(chosen_budget(c, threshold) is not None for c in curves)


def with_arms(rows: pd.DataFrame) -> pd.DataFrame:
    """The finished runs, each named by its arm in a column ``arm`` (the keys of :data:`ARMS`: the study's arm names,
    :func:`.approaches.with_regime`)."""
    return with_regime(finished(rows))


def curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean holdout accuracy and NLL (and their spread over seeds) per size, arm and budget, from finished runs."""
    ok = with_arms(rows)
    return (ok.groupby(["n_train", "arm", "steps"]).agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
                                                         nll=("nll", "mean"), seeds=("seed", "nunique"))
            .reset_index())


def budgets(table: pd.DataFrame, threshold: float = THRESHOLD, cap: int | None = None) -> pd.DataFrame:
    """Per size: each rule arm's chosen budget (:func:`chosen_budget`, at most ``cap``), the size's budget (the
    largest; None until every arm has one), whether every rule arm flattened below the cap (``converged``), and for
    each of :data:`REPORTED_ARMS` its accuracy gain from the budget to twice it (``<arm>_gain``; NaN where either run
    is missing): how far from flat that arm's curve still is at the budget the others chose."""
    out = []
    for n, g in table.groupby("n_train"):
        chosen, budget, converged = size_budget([g[g.arm == arm].set_index("steps").accuracy for arm in RULE_ARMS],
                                                threshold, cap)
        row = {"n_train": int(n), **dict(zip(RULE_ARMS, chosen)), "budget": budget, "converged": converged}
        for arm in REPORTED_ARMS:
            curve, b = g[g.arm == arm].set_index("steps").accuracy, row["budget"]
            row[f"{arm}_gain"] = curve[2 * b] - curve[b] if b is not None and {b, 2 * b} <= set(curve.index) \
                else float("nan")
        out.append(row)
    gains = [f"{a}_gain" for a in REPORTED_ARMS]
    return pd.DataFrame(out, columns=["n_train", *RULE_ARMS, "budget", "converged", *gains]).astype(
        {c: "Int64" for c in (*RULE_ARMS, "budget")})     # integers, <NA> where the rule has not chosen yet


def dropped_sizes(rec: Recorded) -> pd.DataFrame:
    """The curves (:func:`curves`) of sizes measured here that are no longer among ``budget_sizes`` (the evidence
    for dropping them; notebook 09's amendment). Rule 1's curves only: the third amendment's holdout runs (sampler
    curves, rule 5), the only ones in bf16, are at sizes of their own."""
    rows = rec.table("transfer")
    held = rows[(rows.split == "holdout") & ~rows.n_train.isin(rec.profile.budget_sizes) & (rows.precision == "fp32")
                ] if len(rows) else rows
    return curves(held) if len(held) else pd.DataFrame(columns=["n_train", "arm", "steps", "accuracy"])


def learning_curves(rec: Recorded) -> pd.DataFrame:
    """The learning curves of every size, each size's grid extended until the rule is met; all rows."""
    profile = rec.profile
    grids = {n: list(profile.budget_grid) for n in profile.budget_sizes}
    while True:
        todo = [s for n, g in grids.items() for steps in g for s in settings(profile, n, steps)]
        todo.sort(key=lambda s: -s["steps"] * (1 + s["n_train"] / 1e4))  # long runs first: less idle at the end
        rows = rec.rows("transfer", todo, "09 training budget")
        chosen = budgets(curves(rows), cap=profile.budget_max_steps).set_index("n_train").budget
        extend = [n for n, g in grids.items() if pd.isna(chosen.get(n)) and 2 * g[-1] <= profile.budget_max_steps]
        if not extend:
            return rows
        for n in extend:
            grids[n].append(2 * grids[n][-1])


def segmentation_curves(rec: Recorded) -> tuple[pd.DataFrame, pd.DataFrame, int | None, bool]:
    """The same rule for segmentation (CamVid's validation split, mIoU, one size): every arm of
    :data:`SEGMENTATION_ARMS` over the doubling grid, extended while unmet up to ``budget_max_steps``. Returns the
    runs, the curves (mean mIoU per arm and budget), the budget (the largest arm's, at most the cap; None while
    unmet below it) and whether every arm flattened below the cap."""
    profile = rec.profile
    grid = list(profile.budget_grid)
    while True:
        todo = [dict(approach=a, prior_kind=k, split="val", seed=s, steps=steps, **hyper)
                for steps in grid for a, k, _, hyper in SEGMENTATION_ARMS.values() for s in profile.seeds[:RULE_SEEDS]]
        todo.sort(key=lambda s: -s["steps"])
        rows = rec.rows("segmentation", todo, "09 training budget (segmentation)")
        ok = finished(rows)
        table = ok.groupby(["approach", "steps"]).agg(miou=("miou", "mean"), miou_sd=("miou", "std"),
                                                      seeds=("seed", "nunique")).reset_index()
        _, budget, converged = size_budget([table[table.approach == a].set_index("steps").miou
                                            for a in SEGMENTATION_ARMS], cap=profile.budget_max_steps)
        if budget is not None or 2 * grid[-1] > profile.budget_max_steps:
            return rows, table, budget, converged
        grid.append(2 * grid[-1])


def sample_accuracy_by_cycle(rows: pd.DataFrame) -> pd.DataFrame:
    """The sampler runs' per-sample holdout accuracy, one row per sample, with the cycle whose end it belongs to."""
    ok = with_arms(rows)
    out = []
    for _, r in ok[ok.regime != "map"].iterrows():
        for acc, cycle in zip(str(r.sample_accuracy).split(";"), str(r.sample_cycle).split(";")):
            out.append({"n_train": r.n_train, "arm": r.arm, "steps": r.steps, "cycles": r.cycles, "seed": r.seed,
                        "cycle": int(cycle), "accuracy": float(acc)})
    return pd.DataFrame(out)


CYCLE_TOLERANCE = 0.02    # rule 3: a kept cycle may end at most this far below the first kept one
BN_GAIN = 0.005           # rule 5: re-estimated BatchNorm statistics are adopted for at least this accuracy gain
# notebook 09's tables in results/<profile>/training_budget/ that the profile must agree with (:func:`mismatches`)
DECISIONS = ("budgets.csv", "segmentation_budget.csv", "cycle_check.csv", "bn_refresh_decision.csv")


def cycle_check(samples: pd.DataFrame, budgets: pd.DataFrame) -> pd.DataFrame:
    """Rule 3 at the chosen budgets: per size, sampler arm and number of cycles the runs had, the mean accuracy of
    the first kept cycle's samples, the worst later cycle's, and whether the worst stays within
    :data:`CYCLE_TOLERANCE` of the first."""
    at = samples.merge(budgets[["n_train", "budget"]], left_on=["n_train", "steps"], right_on=["n_train", "budget"])
    out = []
    for (n, arm, cycles), g in at.groupby(["n_train", "arm", "cycles"]):
        by_cycle = g.groupby("cycle").accuracy.mean().sort_index()
        first, worst = by_cycle.iloc[0], by_cycle.iloc[1:].min() if len(by_cycle) > 1 else by_cycle.iloc[0]
        out.append({"n_train": n, "arm": arm, "cycles": int(cycles), "first_kept_cycle": first,
                    "worst_later_cycle": worst, "trained_every_cycle": bool(worst >= first - CYCLE_TOLERANCE)})
    return pd.DataFrame(out)


def bn_refresh_table(rows: pd.DataFrame, budgets: pd.DataFrame) -> pd.DataFrame:
    """Rule 5's data: the sampler runs at each size's chosen budget, BMA accuracy and NLL with BatchNorm statistics
    re-estimated per sample (``accuracy``, ``nll``) and with the chain's running ones (``bn_running_*``)."""
    ok = with_arms(rows)
    ok = ok[ok.regime != "map"].merge(budgets[["n_train", "budget"]], left_on=["n_train", "steps"],
                                                       right_on=["n_train", "budget"])
    cols = ["n_train", "arm", "seed", "steps", "accuracy", "bn_running_accuracy", "nll", "bn_running_nll"]
    return ok[cols].assign(gain=ok.accuracy - ok.bn_running_accuracy, nll_change=ok.nll - ok.bn_running_nll)


def adopt_bn_refresh(bn: pd.DataFrame) -> bool:
    """Rule 5: re-estimate BatchNorm per sample iff it gains at least :data:`BN_GAIN` mean accuracy without a
    higher mean NLL."""
    return bool(len(bn) and bn.gain.mean() >= BN_GAIN and bn.nll_change.mean() <= 0)


def profile_check(profile: Profile, budgets: pd.DataFrame, segmentation: int | None = None) -> pd.DataFrame:
    """Per size (and segmentation): the budget this notebook chose and the one the profile gives."""
    rows = [{"n_train": str(n), "budget": b, "profile_steps": profile.steps_for(int(n))}
            for n, b in zip(budgets.n_train, budgets.budget)]
    rows.append({"n_train": "segmentation", "budget": segmentation, "profile_steps": profile.segmentation_steps})
    out = pd.DataFrame(rows)
    return out.assign(agree=[pd.notna(b) and int(b) == s for b, s in zip(out.budget, out.profile_steps)])


def steps_differ(held: tuple[tuple[str, int, int], ...], chosen: list[tuple[str, int, int | None]],
                 none_is_missing: bool = False) -> list[tuple[str, int, int | None, int | None]]:
    """Where a profile's per-arm budgets (``held``: ``(arm, n, steps)``, e.g. ``Profile.sampler_steps``) disagree with
    the ``chosen`` ones (``(arm, n, steps)``), each as ``(arm, n, chosen, held)``. A chosen None means "the profile
    must not list this arm" (``Profile.checked_steps``: its budget was not doubled), or, with ``none_is_missing``,
    "no budget chosen yet", which always counts (``Profile.sampler_steps``: a curve still rising)."""
    have = {(arm, n): steps for arm, n, steps in held}
    return [(arm, n, want, have.get((arm, n))) for arm, n, want in chosen
            if have.get((arm, n)) != want or (none_is_missing and want is None)]


def mismatches(profile: Profile) -> list[str]:
    """What stands between the profile and notebook 09's choices: a missing table, a budget not chosen yet, a profile
    budget that differs from the chosen one, a sampler cycle that ends untrained (rule 3), or a ``bn_refresh`` other
    than rule 5's decision (empty when the profile holds notebook 09's choices)."""
    folder = results_dir(profile) / "training_budget"
    missing = [f for f in DECISIONS if not (folder / f).exists()]
    if missing:
        return [f"notebook 09 has not chosen the budgets yet ({folder} has no {', '.join(missing)})"]
    budgets = pd.read_csv(folder / "budgets.csv")
    segmentation = pd.read_csv(folder / "segmentation_budget.csv").budget.iloc[0]
    check = profile_check(profile, budgets, None if pd.isna(segmentation) else int(segmentation))
    out = [f"n = {r.n_train}: notebook 09 " + ("has not chosen a budget (its curves have not flattened)"
                                              if pd.isna(r.budget) else f"chose {int(r.budget)} steps, the profile "
                                              f"gives {r.profile_steps}") for r in check.itertuples() if not r.agree]
    cycles = pd.read_csv(folder / "cycle_check.csv")
    out += [f"notebook 09's sampler runs had {c} cycles, the profile gives {profile.cycles}"
            for c in sorted(set(cycles.cycles)) if c != profile.cycles]
    out += [f"n = {r.n_train}, {r.arm}: a later cycle ends {r.first_kept_cycle - r.worst_later_cycle:.3f} below the "
            f"first kept one (rule 3: fewer than {r.cycles} cycles)" for r in cycles.itertuples()
            if not r.trained_every_cycle]
    if (folder / "sampler_budgets.csv").exists():             # the third amendment's, once notebook 09 has run it
        chosen = [(r.arm, r.n_train, None if pd.isna(r.budget) else int(r.budget))
                  for r in pd.read_csv(folder / "sampler_budgets.csv").itertuples()]
        out += [f"n = {n}, {arm}: notebook 09 " + ("has not chosen its budget (its curve is still rising)" if want is None
                else f"chose {want} steps, the profile's sampler_steps give {have}")
                for arm, n, want, have in steps_differ(profile.sampler_steps, chosen, none_is_missing=True)]
    adopt = bool(pd.read_csv(folder / "bn_refresh_decision.csv").adopt.iloc[0])
    if adopt != profile.bn_refresh:
        out.append(f"rule 5 {'adopted' if adopt else 'kept the running'} BatchNorm statistics"
                   f"{' re-estimated per sample' if adopt else ''}, the profile's bn_refresh is {profile.bn_refresh}")
    return out


# claims whose arms notebook 09 may find unconverged at the budgets they run at: those comparing an arm that trains
# from a random initialisation (transfer), and segmentation, whose curves may stop at the cap
CAVEATED = {"C4": "transfer", "C6": "transfer", "C7": "transfer", "C8": "transfer", "C9": "segmentation"}


def unconverged(profile: Profile, task: str = "transfer") -> list[str]:
    """Where notebook 09's curves had not flattened at the budgets ``task``'s runs take, one phrase each (empty
    when they all had, or before notebook 09 has run): a size or segmentation at the cap, and a reported arm
    (:data:`REPORTED_ARMS`) still gaining a point or more per doubling."""
    folder = results_dir(profile) / "training_budget"
    if task == "segmentation":
        if not (folder / "segmentation_budget.csv").exists():
            return []
        seg = pd.read_csv(folder / "segmentation_budget.csv").iloc[0]
        if seg.get("converged", True) or pd.isna(seg.budget):
            return []
        b, miou = int(seg.budget), pd.read_csv(folder / "segmentation_curves.csv").set_index(["approach", "steps"]).miou
        gains = ", ".join(f"{miou[a, b] - miou[a, b // 2]:+.3f} ({LABELS[a]})" for a in SEGMENTATION_ARMS
                          if {(a, b), (a, b // 2)} <= set(miou.index))
        return [f"segmentation trains {b} steps, the cap, where the validation mIoU of the last doubling still "
                f"gained {gains}"]
    if not (folder / "budgets.csv").exists():
        return []
    out = []
    for r in pd.read_csv(folder / "budgets.csv").to_dict("records"):
        if pd.isna(r["budget"]):           # no budget yet: mismatches() says so, and no run takes one
            continue
        b = int(r["budget"])
        if not r.get("converged", True):
            out.append(f"at n = {r['n_train']} the rule arms had not flattened by the cap of {b} steps")
        out += [f"at n = {r['n_train']} {LABELS[arm]} still gained {r[f'{arm}_gain']:+.3f} from {b} to {2 * b} steps"
                for arm in REPORTED_ARMS if r.get(f"{arm}_gain", 0) >= THRESHOLD]
    return out


def convergence_note(profile: Profile, claim: str) -> str:
    """The sentence a verdict's finding ends with where ``claim`` compares arms notebook 09 found unconverged at
    their budgets (:data:`CAVEATED`); empty otherwise."""
    notes = unconverged(profile, CAVEATED[claim]) if claim in CAVEATED else []
    return f" Not converged (notebook 09): {'; '.join(notes)}." if notes else ""


def notebook_09_command(profile: Profile) -> str:
    """What builds notebook 09's tables on ``profile`` (its choices then go into ``repro/profiles.py``)."""
    return f"python -m repro.reproduce --profile {profile.name} --notebooks 09"


def require_budgets(profile: Profile) -> None:
    """Raise :class:`MissingPrerequisite` unless the profile trains at notebook 09's budgets (where its rule sets them:
    ``Profile.budget_rule``)."""
    problems = mismatches(profile) if profile.budget_rule else []
    if problems:
        raise MissingPrerequisite("the step budgets are not settled: " + "; ".join(problems) + " (once notebook 09 has "
                                  "chosen them, set downstream_steps, segmentation_steps, cycles, bn_refresh and "
                                  "sampler_steps in repro/profiles.py to its tables)", notebook_09_command(profile))
