"""Rule 5 of notebook 09's third amendment (every arm's own tuning on the holdout set), on simulated grids whose best
values are known."""
import math

import pandas as pd
import pytest

from fakes import Scripted
from repro.experiments import retune
from repro.profiles import get_profile
from repro.runner import MissingPrerequisite

P = get_profile("cpu", sampler_steps=(("bayes_learned (cold)", 1000, 1600), ("bayes_nonlearned (T1)", 100, 3200)))
INCUMBENT = dict(lr=0.03, scale=1e5, head_var=1.0, alpha=1.0, weight_decay=5e-4, temperature=0.01)   # cycles: default


@pytest.fixture(autouse=True)
def second_protocol_values(monkeypatch):
    monkeypatch.setattr(retune, "setting", lambda rec, approach, kind, regime, n_train: {
        "approach": approach, "prior_kind": kind, "n_train": n_train,
        **{k: v for k, v in INCUMBENT.items() if k != "temperature" or regime == "cold"}})


class FakeGrid:
    """The rows of a scripted grid (:class:`fakes.Scripted`): accuracy is a known function of the setting (plus a per-seed offset that the
    mean over seeds cancels); records every setting asked for; ``fail`` names settings whose runs fail."""

    def __init__(self, accuracy, fail=lambda s: False):
        self.accuracy, self.fail, self.asked = accuracy, fail, []

    def __call__(self, profile, task, settings, desc=None):
        self.asked += settings
        return pd.DataFrame([s | {"accuracy": self.accuracy(s) + (0.003 if s["seed"] else -0.003),
                                  "status": "failed: DivergenceError" if self.fail(s) else "ok"} for s in settings])


def peak(**best):
    """Accuracy 0.6 at ``best``, falling 2 points per grid step (decade for widths, factor 3 for lr) away from it."""
    def accuracy(s):
        loss = 0.0
        for name, b in best.items():
            if name == "temperature":
                loss += 0.02 * abs(retune.COLD_TEMPERATURES.index(s[name]) - retune.COLD_TEMPERATURES.index(b))
            elif name == "cycles":
                loss += 0.02 * abs(math.log2(s[name] / b))
            else:
                loss += 0.02 * abs(math.log(s[name] / b)) / math.log(3 if name == "lr" else 10)
        return 0.6 - loss
    return accuracy


def test_choose_keeps_the_incumbent_within_the_resolution_and_else_the_nearest_tie():
    scores = pd.Series({0.01: 0.50, 0.03: 0.545, 0.1: 0.55})
    assert retune.choose(scores, 0.03) == 0.03                           # 0.5 point behind the best: a tie
    assert retune.choose(scores, 0.01) == 0.03                           # out of the ties: the nearest tie
    assert retune.choose(pd.Series({0.0: 0.6, 1e-3: 0.5, 1e-2: 0.5, 1e-1: 0.6}), 1e-2) == 1e-1   # nearer than 0
    assert retune.choose(pd.Series({1.0: 0.6, 10.0: 0.5, 100.0: 0.605}), 10.0) == 100.0     # equally near: the better
    assert retune.choose(scores, 0.02) == 0.03                           # an incumbent between grid values
    # a failed value (3) still counts in the distance: 27 is one step from the incumbent 9, 1 is two
    assert retune.choose(pd.Series({1.0: 0.6, 9.0: 0.5, 27.0: 0.6, 81.0: 0.4}), 9.0, grid=[1, 3, 9, 27, 81]) == 27.0
    # a gap of exactly 1 point is a tie, whatever float32 rounding made of the scores
    assert retune.choose(pd.Series({0.01: 0.30149999260902405, 0.03: 0.31150001287460327}), 0.01) == 0.01


def test_every_coordinate_finds_a_known_optimum_extending_past_an_edge(monkeypatch):
    fake = FakeGrid(peak(lr=0.3, scale=1e9, head_var=0.1, temperature=1e-4, cycles=12))
    rec = Scripted(P, fake)
    chosen = retune.retuned(rec, "bayes_learned (cold)", 1000)
    assert {k: chosen[k] for k in ("lr", "scale", "head_var", "temperature", "cycles")} == pytest.approx(
        dict(lr=0.27, scale=1e9, head_var=0.1, temperature=1e-4, cycles=12))      # 0.03 x 3 x 3: the lr grid's point
    assert chosen["steps"] == 1600 and chosen["split"] == "holdout" and chosen["sampler_version"] == 2
    assert {s["seed"] for s in fake.asked} == {0, 1} and {s["precision"] for s in fake.asked} == {"bf16"}
    rows = retune.retune_runs(rec, "bayes_learned (cold)", 1000)
    assert list(dict.fromkeys(rows.coordinate)) == ["lr", "scale", "head_var", "temperature", "cycles"]


def test_a_flat_coordinate_keeps_the_incumbent_and_is_not_extended(monkeypatch):
    fake = FakeGrid(lambda s: 0.5 + 0.004 * math.log10(s["lr"] / 0.03))   # < 1 point over the grid: all ties
    assert retune.retuned(Scripted(P, fake), "sgd_transfer", 300)["lr"] == 0.03
    assert sorted({s["lr"] for s in fake.asked}) == pytest.approx([0.01, 0.03, 0.09])
    assert fake.asked[0]["steps"] == P.steps_for(300) and "sampler_version" not in fake.asked[0]


def test_a_coordinate_whose_every_value_failed_keeps_the_incumbent(monkeypatch):
    fake = FakeGrid(peak(lr=0.09, alpha=1.0), fail=lambda s: True)
    rec = Scripted(P, fake)
    assert retune.retuned(rec, "map_nonlearned", 1000) == retune.incumbent(rec, "map_nonlearned", 1000)


def test_a_value_whose_run_failed_on_one_seed_is_out(monkeypatch):
    fake = FakeGrid(peak(lr=0.09, alpha=1.0), fail=lambda s: s["lr"] > 0.05 and s["seed"] == 1)   # the best diverges
    assert retune.retuned(Scripted(P, fake), "map_nonlearned", 100)["lr"] == 0.03


def test_a_sampler_waits_for_the_budget_notebook_09_chose(monkeypatch):
    with pytest.raises(MissingPrerequisite, match="budget of bayes_learned \\(T1\\) at n = 300"):
        retune.retuned(Scripted(P, FakeGrid(peak(lr=0.03))), "bayes_learned (T1)", 300)
    with pytest.raises(ValueError, match="unknown arm 'bayes'"):
        retune.budget(P, "bayes", 300)
    assert retune.budget(P, "bayes_nonlearned (T1)", 100) == 3200


def test_the_resolution_counts_the_images_and_the_seeds():
    """Two candidates scored on the same 2 000 images, 2 seeds. Same images each seed, so the image part of the SE
    is that of the per-image mean over seeds; the seeds' part comes from how far the per-seed differences spread.
    When both seeds agree (+2 points each, on different images) the SE is the images' alone, by hand; when they
    disagree (+5 and -3 points) it is at least the seeds' spread, SD/sqrt(2) = 4 points."""
    import numpy as np

    N = 2000

    def outcomes_of(wins):           # per seed: (images the first candidate wins, images the second wins)
        out = {}
        for seed, (first, second) in enumerate(wins):
            a, b = np.zeros(N), np.zeros(N)
            a[seed * 500:seed * 500 + first] = 1
            b[1500:1500 + second] = 1
            out |= {f"a{seed}": {"accuracy": a}, f"b{seed}": {"accuracy": b}}
        return out

    rows = pd.DataFrame({"arm": "map_learned", "n_train": 1000, "coordinate": "lr", "lr": [0.01, 0.03, 0.01, 0.03],
                         "seed": [0, 0, 1, 1], "key": ["a0", "b0", "a1", "b1"], "status": "ok"})
    agree = retune.resolution(rows, outcomes_of([(100, 60), (100, 60)])).iloc[0]
    assert (agree.value_a, agree.value_b, agree.seeds) == (0.01, 0.03, 2)
    assert agree.difference == pytest.approx(0.02)
    mean_d = np.zeros(N)                                     # per-image difference, mean over the two seeds
    mean_d[0:100] += 0.5
    mean_d[500:600] += 0.5
    mean_d[1500:1560] -= 1
    assert agree.se_image == pytest.approx(mean_d.std(ddof=1) / math.sqrt(N), rel=0.1)   # a bootstrap estimate
    assert agree.se == pytest.approx(agree.se_image, rel=0.15)
    disagree = retune.resolution(rows, outcomes_of([(160, 60), (40, 100)])).iloc[0]   # +5 and -3 points
    assert disagree.difference == pytest.approx(0.01) and disagree.se >= 0.04 * 0.9
    assert disagree.se > 3 * agree.se


def test_a_cycle_count_too_fine_for_the_budget_is_not_tried(monkeypatch):
    fake = FakeGrid(peak(lr=0.03, alpha=1.0, cycles=6))
    short = get_profile("cpu", budget_rule=False, downstream_steps=((1000, 12),), bma_samples=2)   # 12 cycles of 1 step
    retune.retuned(Scripted(short, fake), "bayes_nonlearned (T1)", 1000)
    assert {s["cycles"] for s in fake.asked if "cycles" in s} <= {3, 6}
    assert retune.runnable(P, {"approach": "bayes_learned", "steps": 1600, "cycles": 12})
