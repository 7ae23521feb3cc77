"""The pre-registered decision rules on hand-built results whose statistics are computed here by hand."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repro import verdicts

SEEDS = (0, 1, 2)
NOISE = {0: 0.0, 1: 0.004, 2: -0.003}   # per-seed offsets, shared by every approach (the pairing)


def rows(**columns):
    return pd.DataFrame([dict(zip(columns, values)) for values in zip(*columns.values())]).assign(status="ok")


def rank_rows(acc_by_rank, iso=0.5):
    recs = [dict(approach="bayes_learned", rank=k, seed=s, accuracy=a + NOISE[s] + 0.002 * (s == 1) * k / 20)
            for k, a in acc_by_rank.items() for s in SEEDS]
    recs += [dict(approach="bayes_isotropic", rank=20, seed=s, accuracy=iso + NOISE[s]) for s in SEEDS]
    return pd.DataFrame(recs).assign(status="ok")


def test_rank_verdict_matches_a_hand_computed_paired_t_test():
    df = rank_rows({0: 0.50, 1: 0.50, 20: 0.55})
    table, verdict, finding = verdicts.rank_verdict(df)
    d = np.array([0.05, 0.05 + 0.002, 0.05])                      # rank 20 - rank 0, per seed
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    row = table[table.comparison == "rank 20 vs rank 0"].iloc[0]
    assert row.mean_diff == pytest.approx(d.mean()) and row.p == pytest.approx(stats.t.sf(t, df=2))
    assert verdict == "reproduced" and "3 seeds" in finding
    assert verdicts.rank_verdict(rank_rows({0: 0.50, 1: 0.50, 20: 0.50}))[1] == "not reproduced"
    assert verdicts.rank_verdict(rank_rows({0: 0.50, 1: 0.56, 20: 0.44}))[1] == "partially reproduced"


def scale_rows(curves):
    return pd.DataFrame([dict(approach=a, scale=10.0 ** e, seed=s, accuracy=acc + NOISE[s] * (1 + e / 10))
                         for a, curve in curves.items() for e, acc in enumerate(curve) for s in SEEDS]).assign(status="ok")


def test_scale_verdict_needs_an_interior_optimum_with_both_sides_significant():
    hump, rising = [0.4, 0.5, 0.6, 0.5, 0.3], [0.3, 0.4, 0.5, 0.55, 0.6]
    assert verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": hump}))[1] == "reproduced"
    table, verdict, _ = verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": rising}))
    assert verdict == "partially reproduced"
    assert list(table.interior) == [True, False] and table.best_scale.tolist() == [1e2, 1e4]
    assert verdicts.scale_verdict(scale_rows({"map_learned": rising, "bayes_learned": rising}))[1] == "not reproduced"


def five_way_rows(acc):
    """acc[(approach, kind)] = list of accuracies per training-set size."""
    recs = []
    for (approach, kind), curve in acc.items():
        for (i, a), s in itertools.product(enumerate(curve), SEEDS):
            recs.append(dict(dataset="cifar10", approach=approach, prior_kind=kind, n_train=[100, 300, 1000, 5000][i],
                             seed=s, accuracy=a + NOISE[s] + 0.001 * i * (s == 2)))
    return pd.DataFrame(recs).assign(status="ok")


ORDERED = {("bayes_learned", "ssl"): [0.40, 0.55, 0.65, 0.70], ("map_learned", "ssl"): [0.37, 0.52, 0.62, 0.68],
           ("sgd_transfer", "ssl"): [0.35, 0.48, 0.60, 0.67], ("bayes_nonlearned", "none"): [0.20, 0.30, 0.45, 0.60],
           ("map_nonlearned", "none"): [0.18, 0.27, 0.42, 0.58]}


def test_ordering_verdict():
    assert verdicts.ordering_verdict(five_way_rows(ORDERED))[1] == "reproduced"
    swapped = dict(ORDERED)
    swapped[("bayes_learned", "ssl")], swapped[("map_learned", "ssl")] = ORDERED[("map_learned", "ssl")], ORDERED[("bayes_learned", "ssl")]
    table, verdict, finding = verdicts.ordering_verdict(five_way_rows(swapped))
    assert verdict == "partially reproduced"                     # learned still beats non-learned
    assert table.iloc[0].comparison == "(1)>(2)" and table.iloc[0].mean_diff == pytest.approx(-0.0275, abs=1e-9)  # (-.03 -.03 -.03 -.02) / 4
    assert table.iloc[0].n == 12                                  # paired over 4 sizes x 3 seeds


def test_data_efficiency_verdict_wants_the_largest_gain_in_the_middle():
    assert verdicts.data_efficiency_verdict(five_way_rows(ORDERED))[1] == "reproduced"   # gains .05 .07 .05 .03
    flat_end = dict(ORDERED)
    flat_end[("bayes_learned", "ssl")] = [0.50, 0.55, 0.62, 0.67]                    # gains .15 .07 .02 0
    table, verdict, finding = verdicts.data_efficiency_verdict(five_way_rows(flat_end))
    assert verdict == "not reproduced" and "largest at n = 100" in finding
    assert "vs n = 100:" not in finding and "vs n = 5000:" in finding        # never compared with itself
    g = table[(table.reference == "sgd_transfer") & (table.n_train == 100)].iloc[0]
    assert g.gain_mean == pytest.approx(0.15)


def test_ssl_vs_supervised_and_ensemble_verdicts():
    acc = dict(ORDERED)
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):
        acc[(a, "supervised")] = [x + 0.02 for x in ORDERED[(a, "ssl")]]
    table, verdict, finding = verdicts.ssl_vs_supervised_verdict(five_way_rows(acc))
    assert verdict == "not reproduced" and "supervised significantly better" in finding
    bma = rows(seed=list(SEEDS), accuracy=[0.60, 0.62, 0.61], nll=[1.0, 1.1, 1.05])
    ens = rows(seed=list(SEEDS), accuracy=[0.58, 0.59, 0.60], nll=[1.2, 1.2, 1.2])
    table, verdict, finding = verdicts.ensemble_verdict(bma.drop(columns="status"), ens.drop(columns="status"))
    d = np.array([0.02, 0.03, 0.01])
    assert table.iloc[0].p == pytest.approx(stats.t.sf(d.mean() / (d.std(ddof=1) / np.sqrt(3)), df=2))
    assert verdict == "reproduced"
    assert verdicts.ensemble_verdict(ens.drop(columns="status"), bma.drop(columns="status"))[1] == "not reproduced"


def test_calibration_verdict_checks_nll_order_and_overconfidence():
    df = five_way_rows(ORDERED)
    nll_of = {"bayes_learned": 1.0, "map_learned": 1.2, "sgd_transfer": 1.5, "bayes_nonlearned": 1.4, "map_nonlearned": 1.8}
    df = df.assign(nll=df.approach.map(nll_of) + df.seed.map(NOISE) + 0.001 * df.n_train / 1000 * (df.seed == 1),
                   overconfidence=np.where(df.approach == "sgd_transfer", 0.1 + df.seed.map(NOISE), 0.0))
    table, verdict, finding = verdicts.calibration_verdict(df)
    assert verdict == "reproduced" and len(table) == 6
    assert table.iloc[4].mean_diff == pytest.approx(-0.1)          # (4) - (3) in NLL
    gap = df[df.approach == "sgd_transfer"].overconfidence.to_numpy()
    assert table.iloc[5].p == pytest.approx(stats.ttest_1samp(gap, 0, alternative="greater").pvalue)
    flipped = df.assign(overconfidence=-df.overconfidence, nll=np.where(df.approach == "bayes_nonlearned", 2.0, df.nll))
    assert verdicts.calibration_verdict(flipped)[1] == "partially reproduced"    # only (a) holds


def test_shift_verdict_uses_the_shift_columns():
    df = five_way_rows(ORDERED)
    df = df.assign(shift_accuracy=df.accuracy - 0.1, shift_nll=2 - df.accuracy)
    assert verdicts.shift_verdict(df, "cifar10-corrupted")[1] == "reproduced"
    worse = df.assign(shift_accuracy=np.where(df.approach == "bayes_learned", df.shift_accuracy - 0.06, df.shift_accuracy))
    table, verdict, finding = verdicts.shift_verdict(worse, "cifar10-corrupted")
    assert verdict == "partially reproduced" and finding.startswith("on cifar10-corrupted")
