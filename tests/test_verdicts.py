"""The decision rules on hand-built results whose statistics are computed here by hand (statistics: test_stats.py;\nthe rules' error rates on simulated results: test_verdict_simulator.py)."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repro.analysis import stats as rstats
from repro.analysis import verdicts

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
    table, verdict, finding = verdicts.rank_verdict(df)          # run-level accuracies only: seeds, no images
    d = np.array([0.05, 0.05 + 0.002, 0.05])                      # rank 20 - rank 0, per seed
    row = table[table.comparison == "rank 20 vs rank 0"].iloc[0]
    assert row.mean_diff == pytest.approx(d.mean()) and row.se_diff == pytest.approx(stats.sem(d), rel=0.05)
    assert row.p == pytest.approx(stats.t.sf(d.mean() / stats.sem(d), df=2), rel=0.2)
    assert table.p_holm.iloc[:2].tolist() == pytest.approx(list(rstats.holm(table.p.iloc[:2])))   # family: ranks 1, 20
    assert verdict == "reproduced" and "3 seeds" in finding and finding.startswith("Regime:")
    assert verdicts.rank_verdict(rank_rows({0: 0.50, 1: 0.50, 20: 0.50}))[1] == "not reproduced"   # equivalent
    assert verdicts.rank_verdict(rank_rows({0: 0.50, 1: 0.56, 20: 0.44}))[1] == "partially reproduced"


def test_rank_verdict_names_each_sampler_arms_temperature():
    df = rank_rows({0: 0.50, 20: 0.50}).assign(prior_kind="ssl", n_train=1000,
                                               temperature=lambda d: np.where(d.approach == "bayes_isotropic", 1e-3, 1e-2))
    finding = verdicts.rank_verdict(df)[2]
    assert finding.startswith("Regime: Bayes at T = 0.001, 0.01 ((7) ssl: 0.001, (1) ssl: 0.01); n = 1000;")


def test_rank_verdict_is_inconclusive_when_underpowered():
    df = rank_rows({0: 0.50, 1: 0.50, 20: 0.51})
    df.loc[(df.approach == "bayes_learned") & (df["rank"] == 20), "accuracy"] += np.array([0.02, -0.03, 0.025])   # noisy, +1 point on average
    assert verdicts.rank_verdict(df)[1] == "inconclusive"


def scale_rows(curves, val=None):
    test = pd.DataFrame([dict(approach=a, scale=10.0 ** e, seed=s, split="test", accuracy=acc + NOISE[s] * (1 + e / 10),
                              nll=1.0) for a, curve in curves.items() for e, acc in enumerate(curve) for s in SEEDS])
    val = pd.DataFrame([dict(approach=a, scale=10.0 ** e, seed=0, split="val", accuracy=acc, nll=1.0)
                        for a, curve in (val or curves).items() for e, acc in enumerate(curve)])
    return pd.concat([test, val], ignore_index=True).assign(status="ok")


def test_scale_verdict_needs_an_interior_optimum_with_both_sides_shown():
    hump, rising = [0.4, 0.5, 0.6, 0.5, 0.3], [0.3, 0.4, 0.5, 0.55, 0.6]
    assert verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": hump}))[1] == "reproduced"
    table, verdict, _ = verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": rising}))
    assert verdict == "partially reproduced"
    assert table.groupby("approach", sort=False).best_scale.first().tolist() == [1e2, 1e4]
    assert verdicts.scale_verdict(scale_rows({"map_learned": rising, "bayes_learned": rising}))[1] == "not reproduced"


def test_scale_verdict_picks_lambda_on_validation_not_on_test():
    hump = [0.4, 0.5, 0.6, 0.5, 0.3]
    val = {"map_learned": [0.4, 0.6, 0.5, 0.45, 0.3], "bayes_learned": hump}
    table, _, finding = verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": hump}, val))
    assert table[table.approach == "map_learned"].best_scale.iloc[0] == 10.0     # test's best would be 100
    assert "(validation)" in finding
    with pytest.raises(ValueError, match="validation"):
        verdicts.scale_verdict(scale_rows({"map_learned": hump, "bayes_learned": hump}).query("split == 'test'"))


def test_scale_verdict_takes_a_given_lambda_star_instead_of_validation():
    hump = [0.4, 0.5, 0.6, 0.5, 0.3]
    test = scale_rows({"map_learned": hump, "bayes_learned": hump}).query("split == 'test'")
    table, verdict, finding = verdicts.scale_verdict(test, chosen={"map_learned": 1e2, "bayes_learned": 1e1})
    assert table.groupby("approach", sort=False).best_scale.first().tolist() == [1e2, 1e1] and "(holdout)" in finding
    assert verdict == "reproduced"                        # 0.5 at λ* = 10 beats 0.4 at λ = 1 and 0.3 at λ = 1e4
    at_edge = verdicts.scale_verdict(test, chosen={"map_learned": 1.0, "bayes_learned": 1e4})
    assert at_edge[1] == "not reproduced" and set(at_edge[0].groupby("approach").size()) == {1}   # one side only
    with pytest.raises(ValueError, match="not on its test grid"):
        verdicts.scale_verdict(test, chosen={"map_learned": 3.0, "bayes_learned": 1e2})


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
    first = table.iloc[0]
    assert first.comparison == "(1)>(2)" and first.n_train == "all"
    assert first.mean_diff == pytest.approx(-0.0275, abs=1e-9)   # mean of per-size effects (-.03 -.03 -.03 -.02) / 4
    assert first.n_sizes == 4 and first.n_seeds == 3              # sizes kept apart, not 12 "pairs"
    per_size = table[(table.comparison == "(1)>(2)") & (table.n_train != "all") & (table.kind == "ssl")]
    assert sorted(per_size.n_train) == [100, 300, 1000, 5000]
    assert "TOST" in finding and finding.startswith("Regime:")


def test_data_efficiency_verdict_wants_a_positive_gain_peaking_in_the_middle():
    assert verdicts.data_efficiency_verdict(five_way_rows(ORDERED))[1] == "reproduced"   # gains .05 .07 .05 .03
    flat_end = dict(ORDERED)
    flat_end[("bayes_learned", "ssl")] = [0.50, 0.55, 0.62, 0.67]                    # gains .15 .07 .02 0
    table, verdict, finding = verdicts.data_efficiency_verdict(five_way_rows(flat_end))
    assert verdict == "partially reproduced"              # n = 1000: gain > 0 and above n = 5000, not above n = 100
    g = table[(table.reference == "sgd_transfer") & (table.comparison == "gain(n=100) > 0")].iloc[0]
    assert g.mean_diff == pytest.approx(0.15)
    negative = dict(ORDERED)
    negative[("bayes_learned", "ssl")] = [x - 0.1 for x in ORDERED[("sgd_transfer", "ssl")]]   # every gain -0.1
    assert verdicts.data_efficiency_verdict(five_way_rows(negative))[1] == "not reproduced"
    two_sizes = five_way_rows(ORDERED).query("n_train <= 300")                        # no intermediate size
    assert verdicts.data_efficiency_verdict(two_sizes)[1] == "inconclusive"


def test_ordering_lists_only_adjacent_steps_as_adjacent():
    swapped = dict(ORDERED)     # (1) < (2): the adjacent steps shown are (2)>(3), (3)>(4), (4)>(5), never (1)>(4)
    swapped[("bayes_learned", "ssl")], swapped[("map_learned", "ssl")] = ORDERED[("map_learned", "ssl")], ORDERED[("bayes_learned", "ssl")]
    finding = verdicts.ordering_verdict(five_way_rows(swapped))[2]
    assert finding.endswith("cifar10/ssl: adjacent steps shown (2)>(3), (3)>(4), (4)>(5)")


def noisy(df, sd=0.01, seed=3):
    """``df`` with independent noise per run, so that p-values are neither 0 nor 1 and a Holm family's size shows."""
    return df.assign(accuracy=df.accuracy + np.random.default_rng(seed).normal(0, sd, len(df)))


def test_data_efficiency_family_is_the_rules_three_per_interior_size():
    table = verdicts.data_efficiency_verdict(noisy(five_way_rows(ORDERED).query("n_train <= 1000")))[0]
    t = table[table.reference == "sgd_transfer"].set_index("comparison")
    rule = ["gain(n=300) > 0", "gain(n=300) > gain(n=100)", "gain(n=300) > gain(n=1000)"]
    ends = ["gain(n=100) > 0", "gain(n=1000) > 0"]                  # reported, adjusted apart
    assert not np.allclose(rstats.holm(t.loc[rule, "p"]), rstats.holm(t.loc[rule + ends, "p"])[:3])  # it can tell
    assert t.loc[rule, "p_holm"].to_numpy() == pytest.approx(rstats.holm(t.loc[rule, "p"].to_numpy()))
    assert t.loc[ends, "p_holm"].to_numpy() == pytest.approx(rstats.holm(t.loc[ends, "p"].to_numpy()))


def test_ssl_vs_supervised_holm_family_is_the_two_primary_comparisons():
    acc = dict(ORDERED)
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):
        acc[(a, "supervised")] = [x + 0.02 for x in ORDERED[(a, "ssl")]]
        acc[(a, "supervised_matched")] = [x - 0.01 for x in ORDERED[(a, "ssl")]]
    table = verdicts.ssl_vs_supervised_verdict(noisy(five_way_rows(acc)))[0]
    prim = (table.reference == "supervised_matched") & table.comparison.str.startswith("ssl") & (table.approach != "sgd_transfer")
    assert prim.sum() == 2 and not np.allclose(rstats.holm(table.p[prim]), rstats.holm(table.p)[prim.to_numpy()])
    assert table.p_holm[prim].to_numpy() == pytest.approx(rstats.holm(table.p[prim].to_numpy()))


def test_ssl_vs_supervised_is_inconclusive_without_a_quality_matched_prior():
    acc = dict(ORDERED)
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):
        acc[(a, "supervised")] = [x + 0.02 for x in ORDERED[(a, "ssl")]]
    table, verdict, finding = verdicts.ssl_vs_supervised_verdict(five_way_rows(acc))
    assert verdict == "inconclusive" and "confounded" in finding
    did = table[table.comparison.str.startswith("difference")]
    assert did.mean_diff.to_numpy() == pytest.approx([0.0, 0.0]) and (did.outcome == "equivalent").all()
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):
        acc[(a, "supervised_matched")] = [x - 0.03 for x in ORDERED[(a, "ssl")]]
    assert verdicts.ssl_vs_supervised_verdict(five_way_rows(acc))[1] == "reproduced"


def test_ensemble_verdict():
    bma = rows(seed=list(SEEDS), accuracy=[0.62, 0.63, 0.61], nll=[1.0, 1.1, 1.05])
    ens = rows(seed=list(SEEDS), accuracy=[0.58, 0.59, 0.58], nll=[1.2, 1.2, 1.2])
    table, verdict, finding = verdicts.ensemble_verdict(bma.drop(columns="status"), ens.drop(columns="status"))
    d = np.array([0.04, 0.04, 0.03])
    assert table.iloc[0].p == pytest.approx(stats.t.sf(d.mean() / stats.sem(d), df=2), rel=0.3)
    assert verdict == "reproduced"
    assert verdicts.ensemble_verdict(ens.drop(columns="status"), bma.drop(columns="status"))[1] == "not reproduced"


def test_per_image_outcomes_count_the_test_set_noise():
    rng = np.random.default_rng(7)
    n = 2000
    bma = rows(seed=list(SEEDS), key=[f"b{s}" for s in SEEDS], accuracy=[0.6] * 3, nll=[1.0] * 3)
    ens = rows(seed=list(SEEDS), key=[f"e{s}" for s in SEEDS], accuracy=[0.59] * 3, nll=[1.0] * 3)
    base = rng.random(n) < 0.6
    outcomes = {}
    for s in SEEDS:                       # the ensemble differs from the BMA on 10 % of the images, at random
        flip = rng.random(n) < 0.1
        outcomes[f"b{s}"] = {"accuracy": base.astype(float), "nll": np.ones(n)}
        outcomes[f"e{s}"] = {"accuracy": np.where(flip, ~base, base).astype(float), "nll": np.ones(n)}
    run_level = verdicts.ensemble_verdict(bma, ens)[0].iloc[0]
    per_img = verdicts.ensemble_verdict(bma, ens, outcomes)[0].iloc[0]
    assert run_level.se_diff == 0 and per_img.se_diff > 0.004 and per_img.n_images == n


def test_calibration_verdict_checks_nll_order_and_overconfidence():
    df = five_way_rows(ORDERED)
    nll_of = {"bayes_learned": 1.0, "map_learned": 1.2, "sgd_transfer": 1.5, "bayes_nonlearned": 1.4, "map_nonlearned": 1.8}
    df = df.assign(nll=df.approach.map(nll_of) + df.seed.map(NOISE) + 0.001 * df.n_train / 1000 * (df.seed == 1),
                   overconfidence=np.where(df.approach == "sgd_transfer", 0.1 + df.seed.map(NOISE), 0.0))
    table, verdict, finding = verdicts.calibration_verdict(df)
    assert verdict == "reproduced" and len(table) == 6
    assert table.iloc[4].mean_diff == pytest.approx(-0.1)          # (4) - (3) in NLL
    per_seed = df[df.approach == "sgd_transfer"].groupby("seed").overconfidence.mean().to_numpy()
    # seeds are nested in sizes: the mean of 4 per-size means, each with the SE of its 3 seeds
    assert table.iloc[5].se_diff == pytest.approx(stats.sem(per_seed) / 2, rel=0.05)
    flipped = df.assign(overconfidence=-df.overconfidence, nll=np.where(df.approach == "bayes_nonlearned", 2.0, df.nll))
    assert verdicts.calibration_verdict(flipped)[1] == "partially reproduced"    # only (a) holds


def test_shift_verdict_uses_the_shift_columns():
    df = five_way_rows(ORDERED)
    df = df.assign(shift_accuracy=df.accuracy - 0.1, shift_nll=2 - df.accuracy)
    assert verdicts.shift_verdict(df, "cifar10-corrupted")[1] == "reproduced"
    worse = df.assign(shift_accuracy=np.where(df.approach == "bayes_learned", df.shift_accuracy - 0.06, df.shift_accuracy))
    table, verdict, finding = verdicts.shift_verdict(worse, "cifar10-corrupted")
    assert verdict == "partially reproduced" and "cifar10-corrupted" in finding


def test_segmentation_verdict():
    recs = [dict(approach=a, prior_kind=k, seed=s, miou=m + NOISE[s] + 0.002 * (s == 1) * (a == "bayes_learned"))
            for (a, k, m) in [("bayes_learned", "supervised", 0.5), ("bayes_learned", "ssl", 0.45),
                              ("sgd_transfer", "supervised", 0.4), ("bayes_nonlearned", "supervised", 0.3)]
            for s in SEEDS]
    table, verdict, _ = verdicts.segmentation_verdict(pd.DataFrame(recs).assign(status="ok"))
    assert verdict == "reproduced" and len(table) == 4


def test_a_finding_names_each_sampler_arms_cold_temperature():
    df = five_way_rows(ORDERED).assign(temperature=lambda d: d.approach.map({"bayes_learned": 0.0, "bayes_nonlearned": 0.01}))
    assert verdicts.ordering_verdict(df)[2].startswith("Regime: Bayes at T = 0, 0.01 ((1) ssl: 0, (4) none: 0.01); ")
    one_t = df.assign(temperature=1.0)
    assert verdicts.ordering_verdict(one_t)[2].startswith("Regime: Bayes at T = 1; n = ")


def test_a_comparison_never_quietly_drops_to_run_level_statistics():
    bma = rows(seed=list(SEEDS), key=[f"b{s}" for s in SEEDS], accuracy=[0.6] * 3, nll=[1.0] * 3)
    ens = rows(seed=list(SEEDS), key=[f"e{s}" for s in SEEDS], accuracy=[0.59] * 3, nll=[1.0] * 3)
    outcomes = {k: {"accuracy": np.ones(10), "nll": np.ones(10)} for k in ("b0", "b1", "b2", "e0", "e1")}   # e2 lacks its
    with pytest.raises(ValueError, match=r"per-image 'accuracy' is missing for 1 of 6 runs \(e\.g\. e2\)"):
        verdicts.ensemble_verdict(bma, ens, outcomes)


def test_ssl_vs_supervised_is_confounded_when_the_matched_centre_is_still_better():
    acc = dict(ORDERED)
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):
        acc[(a, "supervised")] = [x + 0.05 for x in ORDERED[(a, "ssl")]]
        acc[(a, "supervised_matched")] = [x + 0.03 for x in ORDERED[(a, "ssl")]]     # SSL reversed
    rows_ = five_way_rows(acc)
    assert verdicts.ssl_vs_supervised_verdict(rows_)[1] == "not reproduced"
    close = {"ssl": 0.529, "supervised_matched": 0.535}                  # within the 1-point margin: a fair control
    assert verdicts.ssl_vs_supervised_verdict(rows_, quality=close)[1] == "not reproduced"
    far = {"ssl": 0.529, "supervised_matched": 0.583}
    _, verdict, finding = verdicts.ssl_vs_supervised_verdict(rows_, quality=far)
    assert verdict == "inconclusive" and "+5.4 pt" in finding
    for a in ("bayes_learned", "map_learned", "sgd_transfer"):          # SSL wins against the stronger backbone: counts
        acc[(a, "supervised_matched")] = [x - 0.03 for x in ORDERED[(a, "ssl")]]
    assert verdicts.ssl_vs_supervised_verdict(five_way_rows(acc), quality=far)[1] == "reproduced"
    stronger_ssl = {"ssl": 0.583, "supervised_matched": 0.529}        # the same win, SSL's centre the stronger one
    assert verdicts.ssl_vs_supervised_verdict(five_way_rows(acc), quality=stronger_ssl)[1] == "inconclusive"
    assert verdicts.ssl_vs_supervised_verdict(five_way_rows(acc), quality={"ssl": 0.529})[1] == "reproduced"  # no gap


@pytest.mark.parametrize("verdict, gap, confounded", [
    ("not reproduced", 0.054, True), ("inconclusive", 0.054, True), ("partially reproduced", 0.054, False),
    ("reproduced", 0.054, False), ("not reproduced", 0.01, False), ("reproduced", -0.02, True),
    ("partially reproduced", -0.02, True), ("not reproduced", -0.02, False), ("reproduced", float("nan"), False)])
def test_c5_is_confounded_only_by_what_the_stronger_backbone_could_explain(verdict, gap, confounded):
    assert verdicts.quality_confounded(verdict, gap) is confounded
