"""Notebook 10's decision rule (:func:`repro.experiments.learned_scale.verdict`) on simulated tables with known
effects: the pre-registered comparison sets the verdict, the amendment's comparisons are tested beside it."""
import numpy as np
import pandas as pd
import pytest

from repro.experiments import learned_scale as ls

SEEDS, SIZES = (0, 1, 2), (100, 1000)


def table(shift: dict[str, float], jitter: float = 0.001) -> pd.DataFrame:
    """Run rows: every family x arm x size x seed at the grid's widths (accuracy 0.5 + a seed effect) and at each
    ``widths`` of ``shift``, whose accuracy is the grid's plus that shift (plus a small per-seed jitter)."""
    rng, recs = np.random.default_rng(0), []
    for family in ls.FAMILIES:
        for arm in ls.ARMS:
            for n in SIZES:
                for seed in SEEDS:
                    base = 0.5 + 0.01 * seed + (0.1 if n == 1000 else 0.0)
                    recs.append(dict(family=family, arm=arm, widths="grid", n_train=n, seed=seed, accuracy=base))
                    for widths, d in shift.items():
                        if widths != ls.Q_MEAN or arm == "map":
                            recs.append(dict(family=family, arm=arm, widths=widths, n_train=n, seed=seed,
                                             accuracy=base + d + jitter * rng.standard_normal()))
    return pd.DataFrame(recs).assign(status="ok")


def times(ratio: float) -> pd.DataFrame:
    return pd.DataFrame([dict(family=f, n_train=n, ratio=ratio) for f in ls.FAMILIES for n in SIZES])


def test_the_pre_registered_comparison_sets_the_verdict():
    tests, word, finding = ls.verdict(table({"de_elbo": -0.15, ls.MATCHED: 0.0, ls.Q_MEAN: -0.04}), times(0.1))
    assert word == "not reproduced"
    by = tests.groupby("widths").target.agg(lambda t: sorted(set(t)))
    assert by["de_elbo"] == ["missed"] and by[ls.MATCHED] == ["met"] and by[ls.Q_MEAN] == ["missed"]
    assert len(tests[tests.widths == "de_elbo"]) == len(ls.FAMILIES) * len(ls.ARMS) * len(SIZES)
    assert len(tests[tests.widths == ls.Q_MEAN]) == len(ls.FAMILIES) * len(SIZES)       # MAP arm only
    assert "largest shortfall -15" in finding and "Amendment (post hoc), kappa x the learned widths: target met in 12 of 12" in finding
    # each family of comparisons is Holm-adjusted on its own: three families of 12, 12 and 4 p-values
    pre = tests[tests.widths == "de_elbo"]
    assert (pre.p_holm >= pre.p - 1e-12).all() and (pre.p_holm <= np.minimum(1, 12 * pre.p) + 1e-12).all()


@pytest.mark.parametrize("ratio, expected", [(0.1, "reproduced"), (0.5, "partially reproduced")])
def test_equivalent_widths_meet_the_target_and_time_decides_the_rest(ratio, expected):
    assert ls.verdict(table({"de_elbo": 0.0}), times(ratio))[1] == expected


def test_map_met_but_a_sampler_arm_missed_is_partial_only_without_a_reversal():
    t = table({"de_elbo": 0.0})
    hit = (t.widths == "de_elbo") & (t.arm == "T1")
    assert ls.verdict(t.assign(accuracy=np.where(hit, t.accuracy - 0.1, t.accuracy)), times(0.1))[1] == "not reproduced"
    noisy = t.assign(accuracy=np.where(hit, t.accuracy + np.resize([0.03, -0.03, 0.0], len(t)), t.accuracy))
    assert ls.verdict(noisy, times(0.1))[1] == "partially reproduced"      # T = 1 unclear, MAP and cold met
