"""Notebook 10's decision rule (:func:`repro.experiments.learned_scale.verdict`) on simulated tables with known
effects: the pre-registered comparison sets the verdict, the amendment's comparisons are tested beside it."""
import numpy as np
import pandas as pd
import pytest

from fakes import Scripted
from repro.profiles import get_profile

from repro.analysis.stats import holm
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
    assert "worst difference -15" in finding and "Amendment (post hoc), kappa x the learned widths: target met in 12 of 12" in finding
    # each family of comparisons is Holm-adjusted on its own (12, 12 and 4 p-values), not pooled over all 28
    for _, family in tests.groupby("widths"):
        np.testing.assert_allclose(family.p_reverse_holm, holm(family.p_reverse.to_numpy()))
        np.testing.assert_allclose(family.p_holm, holm(family.p.to_numpy()))


def test_the_amendments_comparisons_do_not_change_the_verdict():
    assert ls.verdict(table({"de_elbo": 0.0, ls.MATCHED: -0.15, ls.Q_MEAN: -0.15}), times(0.1))[1] == "reproduced"


@pytest.mark.parametrize("ratio, expected", [(0.1, "reproduced"), (0.5, "partially reproduced")])
def test_equivalent_widths_meet_the_target_and_time_decides_the_rest(ratio, expected):
    assert ls.verdict(table({"de_elbo": 0.0}), times(ratio))[1] == expected


def test_map_met_but_a_sampler_arm_missed_is_partial_only_without_a_reversal():
    t = table({"de_elbo": 0.0})
    hit = (t.widths == "de_elbo") & (t.arm == "T1")
    assert ls.verdict(t.assign(accuracy=np.where(hit, t.accuracy - 0.1, t.accuracy)), times(0.1))[1] == "not reproduced"
    noisy = t.assign(accuracy=np.where(hit, t.accuracy + np.resize([0.03, -0.03, 0.0], len(t)), t.accuracy))
    assert ls.verdict(noisy, times(0.1))[1] == "partially reproduced"      # T = 1 unclear, MAP and cold met
    # MAP's target must be met at every (family, size): with one of them missing, MAP cannot carry a partial verdict
    gone = (noisy.arm == "map") & (noisy.family == "learned") & (noisy.n_train == 1000)
    assert ls.verdict(noisy[~gone], times(0.1))[1] != "partially reproduced"


def test_a_failed_run_counts_the_time_it_ran_until_it_failed():
    assert ls._spent({"train_time_s": float("nan"), "wall_time_s": 5.0}) == 5.0
    assert ls._spent({"train_time_s": 3.0, "wall_time_s": 5.0}) == 3.0
    runs = pd.DataFrame({"train_time_s": [3.0, np.nan], "wall_time_s": [5.0, 7.0]})
    assert ls._spent(runs).sum() == 10.0


def test_arms_pairs_each_fit_with_the_grid_at_its_widths_times_kappa_and_adds_q_mean(monkeypatch):
    """arms() without training: the grid's setting and the runner are stubbed; each planned run echoes its widths."""
    grid = {"map": dict(scale=1e7, head_var=1.0, alpha=1.0), "T1": dict(scale=1e3, head_var=1.0, alpha=10.0),
            "cold": dict(scale=1e7, head_var=1.0, alpha=1.0)}
    monkeypatch.setattr(ls, "setting", lambda profile, approach, kind, regime, n_train, seed: dict(
        approach=approach, n_train=n_train, seed=seed, **grid["map" if approach.startswith("map") else regime]))
    rec = Scripted(get_profile("cpu"), lambda profile, task, settings, desc: pd.DataFrame(settings).assign(
        status="ok", key=[f"k{i}" for i in range(len(settings))], accuracy=0.5))
    fitted = pd.DataFrame([
        dict(family="learned", objective="de_elbo", n_train=100, seed=0, status="ok", kappa=2000.0, key="fit0",
             accuracy=0.3, learned_scale=0.1, learned_head_var=0.01, learned_alpha=np.nan),
        dict(family="learned", objective="elbo", n_train=100, seed=0, status="ok", kappa=1.0, key="fit1",
             accuracy=0.1, learned_scale=0.09, learned_head_var=1e-4, learned_alpha=np.nan),
        dict(family="non-learned", objective="de_elbo", n_train=100, seed=0, status="ok", kappa=2000.0, key="fit2",
             accuracy=0.2, learned_scale=np.nan, learned_head_var=np.nan, learned_alpha=0.02)])
    rows = ls.arms(rec, "ssl", fitted)
    at = rows.set_index(["family", "arm", "widths"])
    assert at.loc[("learned", "map", ls.MATCHED), "scale"] == pytest.approx(200.0)
    assert at.loc[("learned", "cold", ls.MATCHED), "head_var"] == pytest.approx(20.0)
    assert at.loc[("learned", "T1", "de_elbo"), "scale"] == pytest.approx(0.1)
    assert at.loc[("learned", "T1", "grid"), "scale"] == 1e3
    assert at.loc[("non-learned", "map", ls.MATCHED), "alpha"] == pytest.approx(40.0)
    assert at.loc[("learned", "map", "elbo"), "scale"] == pytest.approx(0.09)          # kappa = 1: as learned
    assert not (rows.widths == "elbo").groupby(rows.arm).any()[["T1", "cold"]].any()   # the plain ELBO: MAP only
    own = rows[rows.widths == ls.Q_MEAN]
    assert sorted(own.key) == ["fit0", "fit2"] and set(own.arm) == {"map"} and own.accuracy.tolist() == [0.3, 0.2]
    assert len(rows) == 2 * 3 * 3 + 1 + 2            # 2 DE-ELBO fits x 3 arms x (grid, de_elbo, matched), elbo, q_mean


# ------------------------------------------------------------------------------------ the confirmatory test

class FitGrid:
    """The rows of a scripted grid (:class:`fakes.Scripted`): a fit's widths and sigma follow ``trace`` (steps -> (scale, sigma)); every other run
    scores 0.5. Records what it was asked for."""

    def __init__(self, trace):
        self.trace, self.asked = trace, []

    def __call__(self, profile, task, settings, desc=None):
        self.asked += settings
        out = []
        for s in settings:
            scale, sigma = self.trace.get(s.get("steps"), (1.0, 1e-4))
            out.append(s | dict(status="ok", accuracy=0.5, train_time_s=s.get("steps", 0) / 10,
                                wall_time_s=s.get("steps", 0) / 10 + 1, learned_scale=scale,
                                learned_head_var=1.0, learned_alpha=scale, learned_sigma=sigma, key=str(len(self.asked))))
        return pd.DataFrame(out)


@pytest.fixture
def fit_grid(monkeypatch):
    def install(trace, profile=get_profile("cpu")):
        grid = FitGrid(trace)
        monkeypatch.setattr(ls, "retuned", lambda rec, arm, n: {"lr": 0.03})
        return Scripted(profile, grid), grid
    return install


def test_a_fit_doubles_until_its_widths_settle_and_sigma_has_left_its_start(fit_grid):
    # n = 1000 starts at MAP's 400 steps; the scale moves 50 %, then 20 %, then 5 % (< 10 %): the fit of 3 200 steps
    rec, grid = fit_grid({400: (1.0, 1e-4), 800: (1.5, 1e-3), 1600: (1.8, 2e-3), 3200: (1.89, 3e-3)})
    fit = ls.converged_fit(rec, "learned", 1000, 5)
    assert fit["steps"] == 3200 and fit["converged"] and fit["learned_scale"] == 1.89
    assert fit["fit_cpu_s"] == pytest.approx((400 + 800 + 1600 + 3200) / 10)      # the whole doubling sequence
    assert {s["seed"] for s in grid.asked} == {5} and {s["lr"] for s in grid.asked} == {0.03}
    assert {s.get("precision", "fp32") for s in grid.asked} == {"fp32"}             # sigma * eps must survive


def test_a_fit_whose_sigma_stays_at_its_start_is_not_converged_however_still_its_widths(fit_grid):
    rec, grid = fit_grid({s: (1.0, 1.05e-4) for s in (400, 800, 1600, 3200, 6400)})   # widths flat, sigma stuck
    fit = ls.converged_fit(rec, "learned", 1000, 5)
    assert fit["steps"] == 6400 and not fit["converged"]


def test_confirm_pairs_each_arm_at_rule_5_with_kappa_times_the_fits_widths(fit_grid, monkeypatch):
    P = get_profile("cpu", sampler_budget_sizes=(1000,), sampler_budget_max_steps=800)
    rec, _ = fit_grid({}, P)                       # every fit: widths 1, sigma 1e-4 (never converges: the cap, 800)
    monkeypatch.setattr(ls, "own_setting", lambda p, arm, n, seed: dict(arm_=arm, n_train=n, seed=seed, split="test",
                                                                         scale=1e7, head_var=1.0, alpha=10.0))
    # a coordinate starts from the run the previous one chose (the scale's second run is head_var's first: one run,
    # counted once); a failed run took its CPU time too: the time it ran until it failed
    monkeypatch.setattr(ls, "retune_runs", lambda p, arm, n: pd.DataFrame(dict(
        coordinate=["lr", "scale", "scale", "head_var", "head_var", "alpha"],
        key=[f"{arm}:{k}" for k in ("l", "s1", "s2", "s2", "h1", "a")],
        status=["ok", "ok", "ok", "ok", "failed", "ok"], train_time_s=[100.0, 200.0, 250.0, 250.0, np.nan, 400.0],
        wall_time_s=[110.0, 210.0, 260.0, 260.0, 300.0, 410.0])))     # the failed run: only its wall time
    fitted, rows, times = ls.confirm(rec)
    assert set(fitted.seed) == set(P.confirm_seeds) and len(fitted) == 2 * len(P.confirm_seeds)
    k = ls.kappa(P, "de_elbo", 1000)
    learned = rows[(rows.family == "learned") & (rows.widths == ls.MATCHED)]
    assert set(learned.arm) == {"map", "cold"} and learned.scale.tolist() == pytest.approx([k * 1.0] * len(learned))
    grid_rows = rows[rows.widths == "grid"]
    assert set(grid_rows.scale) == {1e7} and len(grid_rows) == len(rows) / 2
    t = times.set_index("family")
    assert t.loc["learned", "grid_cpu_s"] == 2 * (200 + 250 + 300) and t.loc["non-learned", "grid_cpu_s"] == 2 * 400
    assert t.loc["learned", "grid_runs"] == 2 * 3
