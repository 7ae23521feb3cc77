"""repro.analysis.stats checked against mathematics: binomial SE, the paired t-test, scipy's TOST pieces, Holm by hand."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from repro.analysis import stats, wording
from repro.analysis.stats import standard_error, summarize


def test_bootstrap_se_of_one_seed_is_the_binomial_se():
    rng = np.random.default_rng(123)           # not the bootstrap's own seed (0)
    n, p = 2000, 0.37
    correct = (rng.random(n) < p).astype(float)
    r = stats.paired_bootstrap(correct[None, :], n_boot=4000)      # one seed, one arm against 0
    phat = correct.mean()
    assert r["mean_diff"] == pytest.approx(phat)
    assert r["se_diff"] == pytest.approx(np.sqrt(phat * (1 - phat) / n), rel=0.05)
    assert r["se_seed"] == 0 and r["df"] == pytest.approx(n - 1)


def test_bootstrap_se_of_two_independent_arms_adds_the_binomial_variances():
    rng = np.random.default_rng(321)
    n = 2000
    a, b = (rng.random(n) < 0.6).astype(float), (rng.random(n) < 0.5).astype(float)
    r = stats.paired_bootstrap((a - b)[None, :], n_boot=4000)
    pa, pb = a.mean(), b.mean()
    expected = np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)          # independent arms: no covariance
    assert r["se_diff"] == pytest.approx(expected, rel=0.06)


def test_run_level_values_reduce_to_the_paired_t_test_over_seeds():
    d = np.array([0.02, 0.035, 0.01])
    r = stats.paired_bootstrap(d[:, None], n_boot=20000)             # N = 1 image: seeds only
    t = sps.ttest_1samp(d, 0.0, alternative="greater")
    assert r["se_diff"] == pytest.approx(sps.sem(d), rel=0.03)
    assert r["df"] == pytest.approx(2)
    assert r["p"] == pytest.approx(t.pvalue, rel=0.1)
    half = sps.t.ppf(0.975, 2) * r["se_diff"]
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_the_seeds_df_rule_keeps_the_se_and_reads_it_on_the_seeds_own_degrees_of_freedom(monkeypatch):
    # seeds that agree within the images' noise: the registered rule floors the seed part and gives ~N - 1 df; the
    # sensitivity rule reads the same SE on K(S - 1) = 2 x 2 df, so its p-values, TOST and CI are those of t(4)
    rng = np.random.default_rng(5)
    images = 0.02 + (rng.random(1000) < 0.5) * 0.2 - 0.1             # each image's difference, shared by the seeds
    d = images + (rng.random((2, 3, 1000)) < 0.05) * rng.choice([-0.2, 0.2], (2, 3, 1000))    # a few flip per seed
    registered = stats.paired_bootstrap(d)
    assert registered["df"] > 500
    monkeypatch.setenv("REPRO_DF_RULE", "seeds")
    r = stats.paired_bootstrap(d)
    assert r["df"] == 4 and r["se_diff"] == registered["se_diff"]
    t = r["mean_diff"] / r["se_diff"]
    assert r["p"] == pytest.approx(sps.t.sf(t, 4)) and r["p_reverse"] == pytest.approx(sps.t.cdf(t, 4))
    assert r["p_tost"] == pytest.approx(max(sps.t.sf(t + 0.01 / r["se_diff"], 4), sps.t.cdf(t - 0.01 / r["se_diff"], 4)))
    assert r["ci_high"] - r["mean_diff"] == pytest.approx(sps.t.ppf(0.975, 4) * r["se_diff"])
    one_seed = stats.paired_bootstrap(d[:, :1])["df"]            # one seed has no seed df: the binomial SE's stays
    monkeypatch.delenv("REPRO_DF_RULE")
    assert one_seed == pytest.approx(stats.paired_bootstrap(d[:, :1])["df"]) and one_seed > 500
    monkeypatch.setenv("REPRO_DF_RULE", "seeds")     # seed-dominated sizes of unequal spread: Satterthwaite gives
    spread = np.stack([np.array([0.0, 0.1, -0.1])[:, None] + 0 * d[0], np.array([0.0, 0.01, -0.01])[:, None] + 0 * d[0]])
    monkeypatch.delenv("REPRO_DF_RULE")                # fewer df than K(S - 1) = 4, and the rule never gives more
    fewer = stats.paired_bootstrap(spread + 0.05)["df"]
    monkeypatch.setenv("REPRO_DF_RULE", "seeds")
    assert fewer < 3 and stats.paired_bootstrap(spread + 0.05)["df"] == pytest.approx(fewer)
    monkeypatch.setenv("REPRO_DF_RULE", "loose")
    with pytest.raises(ValueError, match="valid: satterthwaite, seeds"):
        stats.paired_bootstrap(d)


def test_sizes_are_averaged_not_pooled_as_seeds():
    # per-size effects 0.1 and 0.3 with no seed noise: the effect is their mean, and the spread between sizes is
    # not noise (size is a fixed factor), so the SE is 0 instead of the SE of six "pairs"
    d = np.stack([np.full((3, 1), 0.1), np.full((3, 1), 0.3)])
    r = stats.paired_bootstrap(d)
    assert r["mean_diff"] == pytest.approx(0.2) and r["se_diff"] == pytest.approx(0.0, abs=1e-12)
    assert r["n_sizes"] == 2 and r["p"] == 0.0


def test_se_matches_the_spread_of_the_effect_over_repeated_experiments():
    # crossed design with known components: seed (per size), image (shared), interaction; the SE must match the
    # standard deviation of the estimated effect across independent experiments, and the 95% CI must cover
    rng = np.random.default_rng(11)
    k, s, n, reps = 2, 3, 400, 300
    means, ses, cover = [], [], 0
    for _ in range(reps):
        d = (0.02 + rng.normal(0, 0.01, (k, s, 1)) + rng.normal(0, 0.2, (1, 1, n))
             + rng.normal(0, 0.5, (k, s, n)))
        r = stats.paired_bootstrap(d, n_boot=300)
        means.append(r["mean_diff"]), ses.append(r["se_diff"])
        cover += r["ci_low"] <= 0.02 <= r["ci_high"]
    truth = np.sqrt(0.01 ** 2 / (k * s) + 0.2 ** 2 / n + 0.5 ** 2 / (k * s * n))
    assert np.std(means) == pytest.approx(truth, rel=0.12)
    assert np.sqrt(np.mean(np.square(ses))) == pytest.approx(truth, rel=0.1)
    assert 0.92 <= cover / reps <= 0.99


def test_tost_is_the_larger_of_two_one_sided_t_tests():
    x = np.array([0.003, -0.002, 0.004, 0.001, 0.0, 0.002])
    m = 0.01
    lower = sps.ttest_1samp(x, -m, alternative="greater").pvalue
    upper = sps.ttest_1samp(x, m, alternative="less").pvalue
    assert stats.tost(x.mean(), sps.sem(x), len(x) - 1, m) == pytest.approx(max(lower, upper))
    assert stats.tost(0.02, 0.001, 5, m) > 0.5                        # clearly outside the margin


def test_holm_matches_a_hand_computed_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.02, np.nan, 0.5])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.5)
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_outcome_and_word():
    base = {"p": 0.5, "p_reverse": 0.5, "p_tost": 0.5}
    assert stats.outcome({**base, "p": 0.01}) == "effect"
    assert stats.outcome({**base, "p": 0.01, "p_holm": 0.08}) == "unclear"
    assert stats.outcome({**base, "p_reverse": 0.001}) == "reversed"
    assert stats.outcome({**base, "p_tost": 0.01}) == "equivalent"
    assert wording.word(["effect", "effect"]) == "reproduced"
    assert wording.word(["effect", "unclear"], partial=True) == "partially reproduced"
    assert wording.word(["unclear", "equivalent"]) == "not reproduced"
    assert wording.word(["unclear"]) == "inconclusive"
    assert wording.word(["effect"], confounded=True) == "inconclusive"
    assert wording.word([stats.outcome({**base, "p_reverse": 0.001})]) == "not reproduced"
    assert set(wording.VERDICTS) == {"reproduced", "partially reproduced", "not reproduced", "inconclusive"}


def test_two_runs_in_one_pairing_cell_are_refused():
    """Two temperature regimes of one arm and seed must not be paired silently (one of them would be dropped)."""
    import pandas as pd

    df = pd.DataFrame({"approach": ["a", "a", "b"], "seed": [0, 0, 0], "accuracy": [0.5, 0.6, 0.4], "status": "ok"})
    with pytest.raises(ValueError, match="selects more than one run for"):
        stats.compare(df, {"approach": "a"}, {"approach": "b"})


def test_a_seed_missing_at_one_size_costs_only_that_sizes_row():
    """Sizes 100 and 300, seeds 0-2, arm a's seed 2 failed at n = 300: the pooled test pairs the two seeds every size
    has, each size's own test every seed that size has (by hand: the per-seed differences' means)."""
    acc = {("a", 100): [0.50, 0.60, 0.70], ("b", 100): [0.40, 0.45, 0.50], ("a", 300): [0.80, 0.90],
           ("b", 300): [0.70, 0.70, 0.60]}
    df = pd.DataFrame([dict(approach=arm, n_train=n, seed=s, accuracy=v, status="ok")
                       for (arm, n), vals in acc.items() for s, v in enumerate(vals)])
    pooled, at100, at300 = stats.compare(df, {"approach": "a"}, {"approach": "b"}, ("n_train", "seed"), by_size=True)
    assert pooled["mean_diff"] == pytest.approx(np.mean([0.10, 0.15, 0.10, 0.20]))     # seeds 0 and 1 only
    assert at100["mean_diff"] == pytest.approx(np.mean([0.10, 0.15, 0.20]))            # all three seeds
    assert at100["mean_a"] == pytest.approx(0.60)
    assert at300["mean_diff"] == pytest.approx(0.15) and at300["mean_b"] == pytest.approx(0.70)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        stats.paired_bootstrap(np.array([[np.nan, 1.0]]))


def test_standard_error_by_hand():
    # [2,4,4,4,5,5,7,9]: mean 5, squared deviations 9+1+1+1+0+0+4+16 = 32, sample var 32/7,
    # se = sqrt(32/7 / 8) = sqrt(4/7) = 0.7559289
    assert standard_error([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(4 / 7), abs=1e-12)
    assert standard_error(torch.tensor([1.0, 3.0])) == pytest.approx(1.0)  # sd sqrt(2), /sqrt(2)
    assert math.isnan(standard_error([3.0]))
    assert math.isnan(standard_error([]))


def test_summarize_by_hand():
    df = pd.DataFrame(
        {
            "method": ["A", "A", "A", "B", "B"],
            "data": ["c10"] * 5,
            "acc": [1.0, 2.0, 4.0, 3.0, 5.0],
            "nll": [0.5, 0.5, 0.5, 1.0, 2.0],
            "seed": [0, 1, 2, 0, 1],
        }
    )
    out = summarize(df, by=["method", "data"], metrics=["acc", "nll"])
    assert list(out.columns) == ["method", "data", "acc_mean", "acc_se", "nll_mean", "nll_se", "n"]
    assert out["method"].tolist() == ["A", "B"]
    assert out["n"].tolist() == [3, 2]
    # A acc: mean 7/3; deviations -4/3, -1/3, 5/3 -> SS 42/9, var 7/3, se = sqrt(7/3 / 3) = sqrt(7)/3
    # B acc: mean 4; deviations -1, 1 -> var 2, se = sqrt(2/2) = 1
    np.testing.assert_allclose(out["acc_mean"], [7 / 3, 4.0])
    np.testing.assert_allclose(out["acc_se"], [math.sqrt(7) / 3, 1.0])
    # A nll constant -> se 0; B nll: mean 1.5, var .5, se = sqrt(.5/2) = .5
    np.testing.assert_allclose(out["nll_mean"], [0.5, 1.5])
    np.testing.assert_allclose(out["nll_se"], [0.0, 0.5], atol=1e-12)

    # single-row group -> se NaN, n = 1; empty `by` -> one overall row
    one = summarize(df[df.seed == 0], by=["method"], metrics=["acc"])
    assert one["n"].tolist() == [1, 1] and one["acc_se"].isna().all()
    overall = summarize(df, by=[], metrics=["acc"])
    assert overall["n"].tolist() == [5] and overall["acc_mean"].iloc[0] == pytest.approx(3.0)


def test_summarize_missing_column():
    df = pd.DataFrame({"method": ["A"], "acc": [1.0]})
    with pytest.raises(ValueError, match=r"columns not in DataFrame: \['ece'\]"):
        summarize(df, by=["method"], metrics=["ece"])
