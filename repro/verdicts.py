"""Pre-registered decision rules of claims C2-C6 and C10, applied to the transfer grid's rows.

Each ``*_verdict`` returns ``(table, verdict, finding)``: the comparisons behind the verdict, one of
``repro.report.VERDICTS``, and the finding sentence REPORT.md shows (means ± SE over seeds, p-values of
paired one-sided t-tests across seeds, or across (size, seed) pairs where a claim spans sizes). The rules
were written, in this module and in the notebooks, before the ``cpu`` grid was run. A test at level
``ALPHA`` with 3 seeds has little power: "not significant" is reported as such, never as "equal".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import paired_test, summarize

ALPHA = 0.05
LABELS = {"bayes_learned": "(1) Bayes + learned", "map_learned": "(2) MAP + learned", "sgd_transfer": "(3) SGD transfer",
          "bayes_nonlearned": "(4) Bayes + non-learned", "map_nonlearned": "(5) MAP + non-learned",
          "bayes_isotropic": "(7) Bayes + isotropic N(μ, αI)", "deep_ensemble": "(6) deep ensemble"}
SHORT = {k: v.split(" ")[0] for k, v in LABELS.items()}


def ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.status == "ok"] if "status" in df else df


def select(df: pd.DataFrame, **query) -> pd.DataFrame:
    """Finished rows whose columns equal ``query``."""
    df = ok(df)
    mask = np.ones(len(df), dtype=bool)
    for k, v in query.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def compare(df: pd.DataFrame, a: dict, b: dict, on: tuple[str, ...] = ("seed",), metric: str = "accuracy",
            alternative: str = "greater") -> dict:
    """Paired test of the rows matching ``a`` against those matching ``b``, paired on the ``on`` columns."""
    m = select(df, **a)[list(on) + [metric]].merge(select(df, **b)[list(on) + [metric]], on=list(on), suffixes=("_a", "_b"))
    t = paired_test(m[f"{metric}_a"].to_numpy(), m[f"{metric}_b"].to_numpy(), alternative=alternative)
    return {"metric": metric, "mean_a": float(m[f"{metric}_a"].mean()), "mean_b": float(m[f"{metric}_b"].mean()),
            **{k: t[k] for k in ("mean_diff", "se_diff", "p", "n")}}


def significant(c: dict) -> bool:
    return bool(c["mean_diff"] > 0 and c["p"] < ALPHA)


def _pm(mean: float, se: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _diff(c: dict) -> str:
    return f"Δ = {c['mean_diff']:+.3f} ± {c['se_diff']:.3f} (p = {c['p']:.2g}, n = {c['n']})"


# ---------------------------------------------------------------------------------------------- C2: rank

def rank_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C2 rule: reproduced if Bayes + learned at the largest rank beats rank 0 (diagonal only), paired over seeds,
    p < ALPHA; partially if some other rank k > 0 does; otherwise not reproduced. Secondary (Harvey et al.):
    the largest rank against the isotropic learned-mean prior N(μ, αI)."""
    learned = select(df, approach="bayes_learned")
    ranks = sorted(learned["rank"].unique())
    top = ranks[-1]
    rows = [{"comparison": f"rank {k} vs rank 0", **compare(df, {"approach": "bayes_learned", "rank": k},
                                                             {"approach": "bayes_learned", "rank": 0})} for k in ranks[1:]]
    iso = compare(df, {"approach": "bayes_learned", "rank": top}, {"approach": "bayes_isotropic"})
    rows.append({"comparison": f"rank {top} vs isotropic N(μ, αI)", **iso})
    table = pd.DataFrame(rows)
    top_c = rows[len(ranks) - 2]
    verdict = ("reproduced" if significant(top_c) else
               "partially reproduced" if any(significant(r) for r in rows[:-1]) else "not reproduced")
    s = summarize(learned, ["rank"], ["accuracy"]).set_index("rank")
    curve = ", ".join(f"k={k}: {_pm(s.accuracy_mean[k], s.accuracy_se[k])}" for k in ranks)
    finding = (f"Bayes + SSL learned prior, CIFAR-10 test accuracy by rank ({curve}); rank {top} vs 0: {_diff(top_c)}; "
               f"rank {top} vs isotropic N(μ, αI): {_diff(iso)}; {int(s['n'].iloc[0])} seeds")
    return table, verdict, finding


# --------------------------------------------------------------------------------------------- C3: scale

def scale_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C3 rule, per approach (MAP and Bayes with the learned prior): the best mean test accuracy is at an interior
    lambda, and beats the smallest and the largest lambda of the grid (paired over seeds, p < ALPHA each).
    Reproduced if this holds for both MAP and Bayes; partially if for one of them, or if only one side is
    significant; otherwise not reproduced."""
    rows, parts = [], []
    for approach in ("map_learned", "bayes_learned"):
        sub = select(df, approach=approach)
        s = summarize(sub, ["scale"], ["accuracy"]).set_index("scale")
        grid = sorted(s.index)
        best = s.accuracy_mean.idxmax()
        low = compare(df, {"approach": approach, "scale": best}, {"approach": approach, "scale": grid[0]})
        high = compare(df, {"approach": approach, "scale": best}, {"approach": approach, "scale": grid[-1]})
        interior = grid[0] < best < grid[-1]
        sides = int(interior and significant(low)) + int(interior and significant(high))
        rows.append({"approach": approach, "best_scale": best, "best_accuracy": s.accuracy_mean[best],
                     "best_se": s.accuracy_se[best], "grid_min": grid[0], "grid_max": grid[-1], "interior": interior,
                     "vs_min_diff": low["mean_diff"], "vs_min_p": low["p"], "vs_max_diff": high["mean_diff"],
                     "vs_max_p": high["p"], "sides_significant": sides})
        parts.append(f"{LABELS[approach]}: best λ = {best:.0e} ({_pm(s.accuracy_mean[best], s.accuracy_se[best])}), "
                     f"vs λ = {grid[0]:.0e}: {_diff(low)}, vs λ = {grid[-1]:.0e}: {_diff(high)}")
    table = pd.DataFrame(rows)
    both = table.sides_significant == 2
    verdict = ("reproduced" if both.all() else
               "partially reproduced" if (table.sides_significant > 0).any() else "not reproduced")
    return table, verdict, "; ".join(parts) + f"; {ok(df).seed.nunique()} seeds"


# ----------------------------------------------------------------------------------------- C4-C6: five-way

ORDER = ("bayes_learned", "map_learned", "sgd_transfer", "bayes_nonlearned", "map_nonlearned")


def _with_kind(approach: str, kind: str) -> dict:
    return {"approach": approach, "prior_kind": kind if approach in ORDER[:3] else "none"}


def ordering(df: pd.DataFrame, dataset: str, kind: str) -> pd.DataFrame:
    """Adjacent comparisons (1)>(2)>(3)>(4)>(5), plus learned vs non-learned, paired over (size, seed)."""
    d = df[df.dataset == dataset]
    pairs = list(zip(ORDER, ORDER[1:])) + [("bayes_learned", "bayes_nonlearned"), ("map_learned", "map_nonlearned")]
    return pd.DataFrame([{"dataset": dataset, "kind": kind, "comparison": f"{SHORT[a]}>{SHORT[b]}",
                          **compare(d, _with_kind(a, kind), _with_kind(b, kind), on=("n_train", "seed"))}
                         for a, b in pairs])


def ordering_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C4 rule (primary: SSL prior, CIFAR-10): reproduced if each of the four adjacent comparisons
    (1)>(2), (2)>(3), (3)>(4), (4)>(5) is significant (paired over training-set size x seed, p < ALPHA);
    partially if learned beats non-learned ((1)>(4) and (2)>(5) significant) but the full order does not hold;
    otherwise not reproduced. The supervised prior and Fashion-MNIST are reported alongside."""
    tables = [ordering(df, ds, kind) for ds in sorted(df.dataset.unique()) for kind in sorted(df.prior_kind.unique())
              if kind != "none" and not select(df, dataset=ds, prior_kind=kind).empty]
    table = pd.concat(tables, ignore_index=True)
    prim = table[(table.dataset == "cifar10") & (table.kind == "ssl")].reset_index(drop=True)
    adjacent, learned = prim.iloc[:4], prim.iloc[4:]
    verdict = ("reproduced" if all(significant(r) for _, r in adjacent.iterrows()) else
               "partially reproduced" if all(significant(r) for _, r in learned.iterrows()) else "not reproduced")
    parts = [f"{ds}/{kind}: significant adjacent steps "
             f"{', '.join(r.comparison for _, r in t.iloc[:4].iterrows() if significant(r)) or 'none'}"
             for (ds, kind), t in table.groupby(["dataset", "kind"], sort=False)]
    s = summarize(select(df, dataset="cifar10"), ["approach", "prior_kind"], ["accuracy"]).set_index(["approach", "prior_kind"])
    avg = ", ".join(f"{SHORT[a]} {s.accuracy_mean.get(tuple(_with_kind(a, 'ssl').values()), float('nan')):.3f}" for a in ORDER)
    finding = (f"CIFAR-10/SSL mean accuracy over sizes: {avg}; "
               + "; ".join(f"{r.comparison}: {_diff(r)}" for _, r in prim.iterrows()) + "; " + "; ".join(parts))
    return table, verdict, finding


def ssl_vs_supervised_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C5 rule (CIFAR-10): reproduced if the SSL prior beats the supervised prior for both (1) Bayes and (2) MAP
    (paired over size x seed, p < ALPHA); partially if for one; otherwise not reproduced (the reverse direction is
    tested and reported too)."""
    d = df[df.dataset == "cifar10"]
    rows = []
    for approach in ("bayes_learned", "map_learned", "sgd_transfer"):
        for alt in ("greater", "less"):
            rows.append({"approach": approach, "alternative": f"ssl {'>' if alt == 'greater' else '<'} supervised",
                         **compare(d, {"approach": approach, "prior_kind": "ssl"},
                                   {"approach": approach, "prior_kind": "supervised"}, on=("n_train", "seed"),
                                   alternative=alt)})
    table = pd.DataFrame(rows)
    greater = table[table.alternative.str.contains(">")]
    hits = [significant(r) for _, r in greater.iloc[:2].iterrows()]
    verdict = "reproduced" if all(hits) else "partially reproduced" if any(hits) else "not reproduced"
    finding = "; ".join(f"{LABELS[r.approach]}: SSL {r.mean_a:.3f} vs supervised {r.mean_b:.3f}, {_diff(r)}"
                        for _, r in greater.iterrows())
    less = table[table.alternative.str.contains("<")]
    rev = [r.approach for _, r in less.iterrows() if r["mean_diff"] < 0 and r["p"] < ALPHA]
    if rev:
        finding += f"; supervised significantly better for {', '.join(LABELS[a] for a in rev)}"
    return table, verdict, finding + " (CIFAR-10, paired over size x seed)"


def data_efficiency_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C6 rule (SSL prior, CIFAR-10): gain(n) = accuracy of (1) Bayes + learned minus (3) SGD transfer, per seed.
    Reproduced if the largest mean gain is at an interior size and exceeds the gain at the smallest and at the
    largest size (paired over seeds, p < ALPHA each); partially if the largest gain is interior without both
    tests significant; otherwise not reproduced. The gain over (4) Bayes + non-learned is reported too."""
    d = df[df.dataset == "cifar10"]
    rows = []
    for ref in ("sgd_transfer", "bayes_nonlearned"):
        a = select(d, **_with_kind("bayes_learned", "ssl"))[["n_train", "seed", "accuracy"]]
        b = select(d, **_with_kind(ref, "ssl"))[["n_train", "seed", "accuracy"]]
        g = a.merge(b, on=["n_train", "seed"], suffixes=("", "_ref"))
        g = g.assign(gain=g.accuracy - g.accuracy_ref, reference=ref)
        rows.append(g)
    gains = pd.concat(rows, ignore_index=True)
    table = summarize(gains, ["reference", "n_train"], ["gain"])
    main = gains[gains.reference == "sgd_transfer"]
    s = table[table.reference == "sgd_transfer"].set_index("n_train")
    sizes = sorted(s.index)
    best = s.gain_mean.idxmax()
    interior = sizes[0] < best < sizes[-1]
    ends = [end for end in (sizes[0], sizes[-1]) if end != best]       # no comparison of a size with itself
    tests = [compare(main.assign(which=main.n_train), {"which": best}, {"which": end}, metric="gain") for end in ends]
    verdict = ("reproduced" if interior and all(significant(t) for t in tests) else
               "partially reproduced" if interior else "not reproduced")
    curve = ", ".join(f"n={n}: {s.gain_mean[n]:+.3f} ± {s.gain_se[n]:.3f}" for n in sizes)
    s4 = table[table.reference == "bayes_nonlearned"]
    curve4 = ", ".join(f"n={r.n_train}: {r.gain_mean:+.3f}" for r in s4.itertuples())
    against = "; ".join(f"vs n = {end}: {_diff(t)}" for end, t in zip(ends, tests))
    finding = (f"gain of (1) Bayes + SSL learned over (3) SGD transfer, CIFAR-10: {curve}; largest at n = {best}"
               f" ({against}); gain over (4) Bayes + non-learned: {curve4}")
    return table, verdict, finding


# ------------------------------------------------------------------------------------------ C10: ensemble

def ensemble_verdict(bma: pd.DataFrame, ensemble: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C10 rule: reproduced if the BMA of (1) Bayes + learned beats the deep ensemble of as many SGD-transfer
    members in test accuracy (paired over seeds, p < ALPHA); partially if better on average but not significantly,
    or better only in NLL; otherwise not reproduced."""
    both = pd.concat([ok(bma).assign(approach="bayes_learned", status="ok"),
                      ok(ensemble).assign(approach="deep_ensemble", status="ok")], ignore_index=True)
    acc = compare(both, {"approach": "bayes_learned"}, {"approach": "deep_ensemble"})
    nll = compare(both, {"approach": "bayes_learned"}, {"approach": "deep_ensemble"}, metric="nll", alternative="less")
    table = pd.DataFrame([acc, nll]).assign(comparison="BMA vs deep ensemble")
    nll_better = nll["mean_diff"] < 0 and nll["p"] < ALPHA
    verdict = ("reproduced" if significant(acc) else
               "partially reproduced" if acc["mean_diff"] > 0 or nll_better else "not reproduced")
    finding = (f"accuracy: BMA {acc['mean_a']:.3f} vs ensemble {acc['mean_b']:.3f}, {_diff(acc)}; "
               f"NLL: BMA {nll['mean_a']:.3f} vs ensemble {nll['mean_b']:.3f} (Δ = {nll['mean_diff']:+.3f} ± "
               f"{nll['se_diff']:.3f}, p = {nll['p']:.2g})")
    return table, verdict, finding


# ---------------------------------------------------------------------------------- C7, C8: calibration, shift

def _versus_one(df: pd.DataFrame, metric: str, alternative: str) -> pd.DataFrame:
    """(1) Bayes + SSL learned against each of (2)-(5) on CIFAR-10, paired over (size, seed)."""
    d = df[df.dataset == "cifar10"]
    return pd.DataFrame([{"comparison": f"(1) vs {SHORT[b]}", **compare(d, _with_kind("bayes_learned", "ssl"),
                                                                        _with_kind(b, "ssl"), on=("n_train", "seed"),
                                                                        metric=metric, alternative=alternative)}
                         for b in ORDER[1:]])


def lower(c: dict) -> bool:
    return bool(c["mean_diff"] < 0 and c["p"] < ALPHA)


def calibration_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C7 rule (SSL prior, CIFAR-10, pairs = size x seed; ``df`` has ``overconfidence`` per run). Three checks:
    (a) (1) Bayes + learned has lower NLL than each of (2)-(5); (b) (4) Bayes + non-learned has lower NLL than
    (3) SGD transfer; (c) (3) SGD transfer is over-confident: mean confidence - accuracy > 0 (one-sample t-test).
    Reproduced if all three hold (p < ALPHA); partially if one or two; otherwise not reproduced."""
    from scipy import stats

    d = df[df.dataset == "cifar10"]
    a = _versus_one(d, "nll", "less").assign(check="(a) (1) lowest NLL")
    b = pd.DataFrame([{"comparison": "(4) vs (3)", "check": "(b) (4) NLL < (3)",
                       **compare(d, _with_kind("bayes_nonlearned", "ssl"), _with_kind("sgd_transfer", "ssl"),
                                 on=("n_train", "seed"), metric="nll", alternative="less")}])
    gap = select(d, **_with_kind("sgd_transfer", "ssl")).overconfidence.to_numpy()
    t = stats.ttest_1samp(gap, 0.0, alternative="greater")
    c = pd.DataFrame([{"comparison": "(3) confidence - accuracy > 0", "check": "(c) (3) over-confident",
                       "metric": "overconfidence", "mean_diff": float(gap.mean()),
                       "se_diff": float(gap.std(ddof=1) / np.sqrt(len(gap))), "p": float(t.pvalue), "n": len(gap)}])
    table = pd.concat([a, b, c], ignore_index=True)
    held = [all(lower(r) for _, r in a.iterrows()), lower(b.iloc[0]), significant(c.iloc[0])]
    verdict = "reproduced" if all(held) else "partially reproduced" if any(held) else "not reproduced"
    s = summarize(d, ["approach", "prior_kind"], ["nll"]).set_index(["approach", "prior_kind"])
    nlls = ", ".join(f"{SHORT[x]} {s.nll_mean.get(tuple(_with_kind(x, 'ssl').values()), float('nan')):.3f}" for x in ORDER)
    finding = (f"CIFAR-10/SSL mean test NLL over sizes: {nlls}; (a) {'holds' if held[0] else 'fails'} ("
               + ", ".join(f"{r.comparison}: Δ = {r.mean_diff:+.3f}, p = {r.p:.2g}" for _, r in a.iterrows())
               + f"); (b) (4) − (3): Δ NLL = {b.iloc[0].mean_diff:+.3f} ± {b.iloc[0].se_diff:.3f}, p = {b.iloc[0].p:.2g}"
               f"; (c) SGD transfer confidence − accuracy = {gap.mean():+.3f} ± {c.iloc[0].se_diff:.3f} (p = {t.pvalue:.2g},"
               f" n = {len(gap)} runs)")
    return table, verdict, finding


def shift_verdict(df: pd.DataFrame, shift_name: str) -> tuple[pd.DataFrame, str, str]:
    """C8 rule (SSL prior, CIFAR-10 runs evaluated on the shift set, pairs = size x seed): reproduced if (1) Bayes +
    learned beats each of (2)-(5) in shift accuracy (p < ALPHA); partially if it beats the non-learned (4) and (5)
    but not all; otherwise not reproduced. Shift NLL is reported alongside."""
    acc = _versus_one(df, "shift_accuracy", "greater")
    nll_ = _versus_one(df, "shift_nll", "less")
    table = pd.concat([acc, nll_], ignore_index=True)
    hits = [significant(r) for _, r in acc.iterrows()]
    verdict = "reproduced" if all(hits) else "partially reproduced" if all(hits[2:]) else "not reproduced"
    finding = (f"on {shift_name}: shift accuracy " + "; ".join(f"{r.comparison}: {r.mean_a:.3f} vs {r.mean_b:.3f}, {_diff(r)}"
                                                            for _, r in acc.iterrows())
               + "; shift NLL " + ", ".join(f"{r.comparison}: Δ = {r.mean_diff:+.3f} (p = {r.p:.2g})" for _, r in nll_.iterrows()))
    return table, verdict, finding


# ----------------------------------------------------------------------------------------- C9: segmentation

def segmentation_verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """C9 rule (CamVid test mIoU, pairs = seeds): reproduced if SGLD with the supervised learned prior beats both SGD
    transfer and SGLD with the non-learned prior (p < ALPHA each); partially if it beats one of them, or if only the
    SSL learned prior beats both; otherwise not reproduced."""
    rows = []
    for kind in ("supervised", "ssl"):
        for ref in ("sgd_transfer", "bayes_nonlearned"):
            rows.append({"prior": kind, "comparison": f"SGLD + {kind} learned > {ref}",
                         **compare(df, {"approach": "bayes_learned", "prior_kind": kind},
                                   {"approach": ref, "prior_kind": "supervised"}, metric="miou")})
    table = pd.DataFrame(rows)
    sup, ssl = [significant(r) for _, r in table.iloc[:2].iterrows()], [significant(r) for _, r in table.iloc[2:].iterrows()]
    verdict = ("reproduced" if all(sup) else
               "partially reproduced" if any(sup) or all(ssl) else "not reproduced")
    s = summarize(ok(df), ["approach", "prior_kind"], ["miou"])
    means = "; ".join(f"{r.approach} ({r.prior_kind}) {r.miou_mean:.3f} ± {r.miou_se:.3f}" for r in s.itertuples())
    finding = (f"CamVid test mIoU: {means}; " + "; ".join(f"{r.comparison}: {_diff(r)}" for _, r in table.iterrows())
               + f"; {ok(df).seed.nunique()} seeds")
    return table, verdict, finding
