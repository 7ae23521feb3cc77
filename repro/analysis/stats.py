"""Statistics behind the claim verdicts (repro.analysis.verdicts): a paired bootstrap over seeds x test images, Holm, TOST.

Every comparison of two arms is made on per-image outcomes (correct or not, per-image NLL, ...) of runs paired by seed
(and training-set size) and evaluated on the *same* test images. ``d[k, s, i]`` is the difference of the two arms for
size ``k``, seed ``s`` and image ``i``. The effect is the mean of ``d``: the mean over sizes of the per-size mean
differences (each size weighs the same; sizes are a fixed factor, never pooled as if they were more seeds).

Its standard error counts both sources of noise with a paired bootstrap over seeds and test images: seeds are
resampled within each size (a seed's runs at different sizes are different runs) and images once for all sizes and
seeds (they share the test images). The seed part (per-size means of resampled seeds; the (S - 1)/S shrinkage of
resampling S seeds undone) and the image part (means over resampled images) each contain the seed x image
interaction once, so a plain crossed ("pigeonhole") bootstrap counts it twice (Owen 2007): the interaction is estimated
by the two-way ANOVA residual mean square and counted once, and the seed and image components net of it are floored at
zero (so identical per-seed results cannot make the SE smaller than the test set's own noise). The reference distribution is Student's t with Welch-Satterthwaite degrees of
freedom of these parts (S - 1 per size, N - 1, (S - 1)(N - 1)): with a seed-dominated variance it is the paired t-test
on per-seed means (2 df per size at 3 seeds), with an image-dominated one it tends to the normal. With N = 1
(run-level metrics only, e.g. mIoU) the procedure reduces to the paired t-test over seeds; with one seed, to the
binomial standard error of the test set.

A comparison's ``outcome`` is ``effect`` (Holm-adjusted one-sided p < ALPHA in the claimed direction), ``reversed``
(the same in the opposite direction), ``equivalent`` (two one-sided tests against +-``MARGINS[metric]``, fixed before
the results: 1 accuracy point) or ``unclear``; :func:`repro.analysis.wording.word` turns outcomes into the verdict words.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from torch import Tensor

ALPHA = 0.05
#: Equivalence margin of the "no effect" findings, fixed before the results: +-1 accuracy point (NLL: +-0.05 nats).
MARGINS = {"accuracy": 0.01, "shift_accuracy": 0.01, "miou": 0.01, "gain": 0.01, "nll": 0.05, "shift_nll": 0.05,
           "overconfidence": 0.01}
N_BOOT = 1000
#: How a comparison's degrees of freedom are set. "satterthwaite", the registered rule: Welch-Satterthwaite over the
#: variance parts. "seeds": at most the seeds' own K(S - 1), as if the whole SE were seed noise (Satterthwaite's where
#: that is fewer: unequal seed variances across sizes), a conservative reading; only the sensitivity analysis uses it
#: (``python -m repro.sensitivity``), through $REPRO_DF_RULE, so that a batch of notebooks can be re-read under it.
DF_RULES = ("satterthwaite", "seeds")
Outcomes = Mapping[str, Mapping[str, np.ndarray]]     # run key -> metric -> per-image values



@functools.lru_cache(maxsize=16)
def _weights(n_sizes: int, n_seeds: int, n_images: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap counts (K, B, S) over seeds, drawn per size, and (B, N) over images; fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=(n_sizes, n_boot)).astype(np.float64)
    wi = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot).astype(np.float64)
    return ws, wi


def df_rule() -> str:
    """The degrees-of-freedom rule in force (:data:`DF_RULES`): $REPRO_DF_RULE, read at call time, else the
    registered one."""
    rule = os.environ.get("REPRO_DF_RULE", DF_RULES[0])
    if rule not in DF_RULES:
        raise ValueError(f"REPRO_DF_RULE={rule!r} is not a degrees-of-freedom rule; valid: {', '.join(DF_RULES)}")
    return rule


def satterthwaite(parts: Sequence[float], dfs: Sequence[float]) -> float:
    """Welch-Satterthwaite degrees of freedom of a signed sum of independent variance estimates."""
    num = sum(parts) ** 2
    den = sum(v * v / f for v, f in zip(parts, dfs) if f > 0 and v != 0)
    return float(num / den) if den > 0 else math.inf


def t_test(mean: float, se: float, df: float, alternative: str = "greater") -> float:
    """p-value of ``mean`` against 0 with standard error ``se`` under Student's t(df) (normal for df = inf)."""
    if not se > 0:
        if mean == 0 or not math.isfinite(mean):
            return float("nan")
        return 0.0 if alternative == "two-sided" else float((mean > 0) != (alternative == "greater"))
    z = mean / se
    if alternative == "greater":
        return float(stats.t.sf(z, df))
    if alternative == "less":
        return float(stats.t.cdf(z, df))
    return float(2 * stats.t.sf(abs(z), df))


def tost(mean: float, se: float, df: float, margin: float) -> float:
    """Two one-sided tests of equivalence |effect| < ``margin``: the larger of the two one-sided p-values."""
    if not se > 0:
        return float(abs(mean) >= margin)
    return float(max(stats.t.sf((mean + margin) / se, df), stats.t.cdf((mean - margin) / se, df)))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_bootstrap(d: np.ndarray, n_boot: int | None = None, seed: int = 0, level: float = 0.95,
                     margin: float = MARGINS["accuracy"], alternative: str = "greater") -> dict:
    """Effect, SE, CI and tests of the per-image differences ``d`` of shape (K sizes, S seeds, N images) or (S, N).

    Returns ``mean_diff``, ``se_diff``, ``df``, ``ci_low``/``ci_high`` (two-sided ``level``), ``p`` (one-sided in
    the ``alternative`` direction), ``p_reverse`` (the opposite direction), ``p_tost`` (equivalence within
    ``margin``), ``se_seed``/``se_image`` (the two parts), ``n_seeds``, ``n_images``, ``n_sizes``.
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[None] if d.ndim == 2 else d
    if d.ndim != 3 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"d must be a finite (K, S, N) array, got shape {d.shape}")
    k, s, n = d.shape
    n_boot = n_boot or N_BOOT                                 # read at call time (the simulator tests lower it)
    mean = float(d.mean())
    ws, wi = _weights(k, s, n, n_boot, seed)
    seed_means = d.mean(2)                                    # (K, S)
    v_seed = (np.einsum("kbs,ks->kb", ws, seed_means) / s).var(axis=1, ddof=1) * (s / (s - 1) if s > 1 else 0.0)
    v_image = float((wi @ d.mean((0, 1)) / n).var(ddof=1)) if n > 1 else 0.0
    if s > 1 and n > 1:                                       # seed x image interaction, counted in both parts
        resid = d - seed_means[:, :, None] - d.mean(1, keepdims=True) + d.mean((1, 2), keepdims=True)
        twice = (resid ** 2).sum((1, 2)) / ((s - 1) * (n - 1)) / (s * n)
    else:
        twice = np.zeros(k)
    # variance components, each floored at zero (a negative estimate, e.g. seeds that agree more closely than the
    # images' own noise allows, must not shrink the SE below the test set's sampling noise)
    r_df, both = (s - 1) * (n - 1), float(twice.sum() / k ** 2)
    parts, dfs = [float(t / k ** 2) for t in twice], [r_df] * k            # interaction, counted once
    for vs, t in zip(v_seed, twice):
        if vs > t:                                                         # seed component
            parts += [float(vs / k ** 2), float(-t / k ** 2)]
            dfs += [s - 1, r_df]
    if v_image > both:                                                     # image component
        parts += [v_image] + [float(-t / k ** 2) for t in twice]
        dfs += [n - 1] + [r_df] * k
    var = max(float(sum(parts)), 0.0)
    se = math.sqrt(var)
    df = satterthwaite(parts, dfs)
    if df_rule() == "seeds" and s > 1:
        df = min(df, float(k * (s - 1)))
    var_seed = float(v_seed.sum() / k ** 2)
    se = 0.0 if se < 1e-12 else se                           # rounding of an exactly constant difference
    if s < 2 and n < 2:
        se, df = float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, df) * se if se > 0 else 0.0
    flip = {"greater": "less", "less": "greater", "two-sided": "two-sided"}[alternative]
    return {"mean_diff": mean, "se_diff": se, "df": df, "ci_low": mean - half, "ci_high": mean + half,
            "p": t_test(mean, se, df, alternative), "p_reverse": t_test(mean, se, df, flip),
            "p_tost": tost(mean, se, df, margin), "se_seed": math.sqrt(var_seed), "se_image": math.sqrt(v_image),
            "n_seeds": s, "n_images": n, "n_sizes": k}


def outcome(c: dict, alpha: float = ALPHA) -> str:
    """One comparison's result: ``effect`` (claimed direction, Holm-adjusted ``p_holm`` < alpha), ``reversed``
    (``p_reverse_holm`` < alpha), ``equivalent`` (TOST ``p_tost`` < alpha) or ``unclear``."""
    if c.get("p_holm", c["p"]) < alpha:
        return "effect"
    if c.get("p_reverse_holm", c["p_reverse"]) < alpha:
        return "reversed"
    if c.get("p_tost", 1.0) < alpha:
        return "equivalent"
    return "unclear"


def adjust(rows: list[dict]) -> list[dict]:
    """Add Holm-adjusted ``p_holm`` and ``p_reverse_holm`` over one claim's family of comparisons, and ``outcome``."""
    ph, pr = holm([r["p"] for r in rows]), holm([r["p_reverse"] for r in rows])
    out = [{**r, "p_holm": float(a), "p_reverse_holm": float(b)} for r, a, b in zip(rows, ph, pr)]
    return [{**r, "outcome": outcome(r)} for r in out]


# ------------------------------------------------------------------------- comparisons on run tables

def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose run finished (``status == "ok"``); every row of a table without a status."""
    return df[df.status == "ok"] if "status" in df else df


def select(df: pd.DataFrame, **query) -> pd.DataFrame:
    """Finished rows whose columns equal ``query``."""
    mask = (df.status == "ok").to_numpy(copy=True) if "status" in df else np.ones(len(df), dtype=bool)
    for k, v in query.items():
        mask &= df[k].to_numpy() == v
    return df[mask]


def stacked(df: pd.DataFrame, specs: Sequence[dict], on: Sequence[str] = ("seed",), metric: str = "accuracy",
            outcomes: Outcomes | None = None) -> tuple[list[np.ndarray], list[float], list]:
    """Per spec, a (K, S, N) array of ``metric`` over the (size, seed) cells every spec has (N = 1 without per-image
    outcomes for every run), the specs' mean run-level metric, and the K levels (sizes; ``[None]`` if ``on`` is seeds)."""
    on = list(on)
    tables = []
    for spec in specs:                        # plain dicts: this runs thousands of times in the simulator tests
        sub = select(df, **spec)
        cols = [sub[c].to_numpy() for c in on] + [sub[metric].to_numpy(dtype=float),
                                                  sub["key"].to_numpy() if "key" in sub else np.full(len(sub), None)]
        recs: dict = {}
        for row in zip(*cols):
            cell = row[0] if len(on) == 1 else tuple(row[:len(on)])
            if cell in recs:   # e.g. a sampler's two temperature regimes: pairing would silently take one of them
                raise ValueError(f"{spec} selects more than one run for {dict(zip(on, np.atleast_1d(cell)))}; "
                                 f"narrow it (one temperature regime: repro.experiments.approaches.in_regime)")
            recs[cell] = row[len(on):]
        tables.append(recs)
    common = set(tables[0]).intersection(*tables[1:])
    if len(on) == 1:
        levels, seeds = [None], sorted(common)
    else:
        levels = sorted({c[0] for c in common})
        seeds = sorted(s for s in {c[1] for c in common} if all((lv, s) in common for lv in levels))
    if not seeds:
        raise ValueError(f"no runs common to {specs}")
    idx = [s if lv is None else (lv, s) for lv in levels for s in seeds]
    sets = [[t[i] for i in idx] for t in tables]           # per spec: (metric, key) per cell
    keys = [k for r in sets for _, k in r]
    missing = [k for k in keys if outcomes is None or metric not in outcomes.get(k, {})]
    if missing and len(missing) < len(keys):   # never quietly fall back to run-level statistics for a whole comparison
        raise ValueError(f"per-image {metric!r} is missing for {len(missing)} of {len(keys)} runs (e.g. {missing[0]}): "
                         "their saved predictions lack it")
    per_image = not missing
    arrays = []
    for r in sets:
        vals = [np.asarray(outcomes[k][metric], dtype=float) for _, k in r] if per_image else [[m] for m, _ in r]
        arrays.append(np.asarray(vals, dtype=float).reshape(len(levels), len(seeds), -1))
    return arrays, [float(np.mean([m for m, _ in r])) for r in sets], levels


def contrast(df: pd.DataFrame, terms: Sequence[tuple[dict, float]], on: Sequence[str] = ("seed",),
             metric: str = "accuracy", alternative: str = "greater", outcomes: Outcomes | None = None,
             by_size: bool = False) -> list[dict]:
    """Bootstrap test of sum_j w_j * arm_j (``terms`` = (spec, w_j)), paired on ``on``: the pooled row (``n_train`` =
    "all", on the seeds every size has), then, if ``by_size``, one row per size (on every seed that size has)."""
    arrays, means, levels = stacked(df, [t[0] for t in terms], on, metric, outcomes)
    d = sum(w * a for a, (_, w) in zip(arrays, terms))
    base = {"metric": metric, **{f"mean_{'ab'[j]}": m for j, m in enumerate(means[:2])}}
    kw = dict(margin=MARGINS.get(metric, 0.01), alternative=alternative)
    rows = [{"n_train": "all" if levels[0] is not None else None, **base, **paired_bootstrap(d, **kw)}]
    if by_size and levels[0] is not None:
        for lv in levels:     # each size on every seed it has: the pooled row keeps only the seeds common to all sizes
            at, _, _ = stacked(df[df[on[0]] == lv], [t[0] for t in terms], on[1:], metric, outcomes)
            rows.append({"n_train": lv, "metric": metric, "mean_a": float(at[0].mean()),
                         "mean_b": float(at[1].mean()) if len(at) > 1 else np.nan,
                         **paired_bootstrap(sum(w * a[0] for a, (_, w) in zip(at, terms)), **kw)})
    return rows


def compare(df: pd.DataFrame, a: dict, b: dict, on: Sequence[str] = ("seed",), metric: str = "accuracy",
            alternative: str = "greater", outcomes: Outcomes | None = None, by_size: bool = False) -> list[dict]:
    """Arm ``a`` against arm ``b`` (see :func:`contrast`)."""
    return contrast(df, [(a, 1.0), (b, -1.0)], on, metric, alternative, outcomes, by_size)


# ------------------------------------------------------------------------------------------ summaries over seeds

def _as_1d_float(values: Sequence[float] | np.ndarray | Tensor, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def standard_error(values: Sequence[float] | np.ndarray | Tensor) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``; NaN if n < 2 (NaN values propagate)."""
    arr = _as_1d_float(values, "values")
    if arr.size < 2:
        return float("nan")
    return float(stats.sem(arr, ddof=1))


def summarize(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, standard error and group size per group.

    Columns: the ``by`` columns, then ``<metric>_mean`` and ``<metric>_se`` for each metric, then ``n``
    (rows in the group). NaN metric values propagate (a failed run should not be silently averaged away).
    An empty ``by`` summarises the whole frame in one row.
    """
    by, metrics = list(by), list(metrics)
    missing = [c for c in by + metrics if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in DataFrame: {missing}; available: {list(df.columns)}")

    def one(group: pd.DataFrame) -> dict[str, float]:
        row: dict[str, float] = {}
        for m in metrics:
            vals = group[m].to_numpy(dtype=np.float64)
            row[f"{m}_mean"] = float(np.mean(vals)) if vals.size else float("nan")
            row[f"{m}_se"] = standard_error(vals)
        row["n"] = len(group)
        return row

    if not by:
        return pd.DataFrame([one(df)])
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **one(group)})
    cols = by + [f"{m}_{s}" for m in metrics for s in ("mean", "se")] + ["n"]
    return pd.DataFrame(rows, columns=cols)


def on_grid(value: float, grid: Sequence[float]) -> float:
    """``value`` as the test ``grid`` spells it (a grid widened by division rounds its values); one clear error where
    it is not on the grid."""
    if (spelled := next((g for g in grid if math.isclose(g, value, rel_tol=1e-6)), None)) is None:
        raise ValueError(f"{value:g} is not on its test grid {list(grid)}")
    return spelled


def best_on_validation(df: pd.DataFrame, approach: str, grid: Sequence[float]) -> float | None:
    """lambda* of ``approach``: the highest mean validation accuracy (ties: lower NLL) among the ``split == "val"``
    rows with the test rows' other settings, restricted to the test ``grid``; None without validation rows."""
    if "split" not in df:
        return None
    test = select(df, approach=approach, split="test")
    # the validation rows of the test rows' protocol: the same settings, step budget and schedule (not the runs of an
    # earlier protocol that share the hyperparameters)
    query = {c: test[c].iloc[0] for c in ("lr", "head_var", "rank", "temperature", "n_train", "prior_kind", "dataset",
                                          "steps", "cycles", "burnin_cycles", "bma_samples", "prior_protocol",
                                          "bn_refresh", "protocol") if c in test and test[c].nunique() == 1}
    val = select(df, approach=approach, split="val", **query)
    val = val[val.scale.isin(list(grid))]
    if val.empty:
        return None
    s = val.groupby("scale")[["accuracy", "nll"]].mean().reset_index()
    return float(s.sort_values(["accuracy", "nll"], ascending=[False, True], kind="stable").scale.iloc[0])
