"""The tuning protocol (repro.experiments.tuning) and the scale-grid extension, on a fake grid whose answers are known."""
import math

import numpy as np
import pandas as pd
import pytest

import functools

from fakes import Scripted
from repro.experiments.grid import MissingRuns
from repro.experiments.spec import RunSpec
from repro.experiments import costs, studies, tuning, workers
from repro.profiles import get_profile


class FakeGrid:
    """The rows of a scripted grid (:class:`fakes.Scripted`): accuracy is a known function of the settings; records every setting asked for."""

    def __init__(self, accuracy):
        self.accuracy, self.asked = accuracy, []

    def __call__(self, profile, task, settings, desc=None):
        rows = []
        for s in settings:
            p = RunSpec.default(profile, task, **s).record()
            self.asked.append(p)
            rows.append({**p, "accuracy": self.accuracy(p), "nll": 1.0, "status": "ok"})
        return pd.DataFrame(rows)


P = get_profile("cpu")


def peaked(at: float, width: float = 1.0):
    return lambda p: 0.9 - 0.05 * (math.log10(p["scale"]) - math.log10(at)) ** 2 / width


@pytest.mark.parametrize("best, expected_grid", [
    (1e3, P.scales),                                            # interior: no extension
    (1e9, P.scales + (1e8, 1e9, 1e10)),                         # at the top edge: a decade at a time, until interior
    (1e20, P.scales + (1e8, 1e9, 1e10)),                        # ... at most MAX_EXTENSIONS decades
    (1e-2, (1e-3, 1e-2, 1e-1) + P.scales),                      # the same at the bottom
])
def test_sweep_extends_until_the_best_is_interior(monkeypatch, best, expected_grid):
    fake = FakeGrid(peaked(best))
    rows, grid = tuning.sweep(Scripted(P, fake), {"approach": "map_learned", "seed": 0}, "scale", P.scales, "test")
    assert grid == pytest.approx(sorted(expected_grid))
    assert sorted(rows.scale.unique()) == pytest.approx(sorted(expected_grid))


def test_a_plateau_at_the_edge_is_not_extended_on_float_noise(monkeypatch):
    # equal accuracies from 1e6 up, the edge value higher by float32 noise only: a tie, whose smallest value is interior
    fake = FakeGrid(lambda p: 0.3 if p["scale"] < 1e6 else 0.45 + (1e-8 if p["scale"] == max(P.scales) else 0.0))
    rows, grid = tuning.sweep(Scripted(P, fake), {"approach": "map_learned", "seed": 0}, "scale", P.scales, "test")
    assert grid == pytest.approx(sorted(P.scales))


@pytest.mark.parametrize("recorded, next_values", [
    (P.scales + (1e8, 1e9), (1e10,)),              # extensions recorded: followed as the workers did, to the next one
    (P.scales[:-1], P.scales[-1:]),                # a run still to do: only it, no extension before its score
])
def test_a_sweep_lacks_exactly_its_next_runs(recorded, next_values):
    """A sweep reads what is recorded and decides on it as the workers did; what it lacks is the next runs it needs
    (:class:`MissingRuns`): never a run at a value the workers would not choose."""
    rec = Scripted(P, FakeGrid(peaked(1e9)), recorded=lambda s: s["scale"] in recorded)
    with pytest.raises(MissingRuns) as missing:
        tuning.sweep(rec, {"approach": "map_learned", "seed": 0}, "scale", P.scales, "test")
    assert sorted({s.scale for s in missing.value.specs}) == pytest.approx(sorted(next_values))


def test_best_breaks_accuracy_ties_by_nll():
    df = pd.DataFrame({"accuracy": [0.5, 0.7, 0.7], "nll": [0.1, 0.9, 0.8], "lr": [1, 2, 3], "status": "ok"})
    assert tuning.best_row(df).lr == 3
    with pytest.raises(RuntimeError, match="every tuning run failed"):
        tuning.best_row(df.assign(status="failed: X"))


def test_tuning_finds_the_known_optimum_and_never_touches_the_test_split(monkeypatch):
    optimum = {"lr": 0.1, "weight_decay": 5e-5, "alpha": 10.0, "head_var": 0.1, "scale": 1e5}

    def accuracy(p):   # separable, maximal at `optimum`; other widths for the isotropic-mean prior and for Bayes
        target = dict(optimum, alpha=1e-3 if p["approach"].endswith("isotropic") else optimum["alpha"])
        if p["approach"].startswith("bayes"):
            target |= {"scale": 1e3, "alpha": target["alpha"] / 100}
        cold = abs(math.log10(p["temperature"] + 1e-6) - math.log10(1e-2)) if 0 < p["temperature"] < 1 or \
            p["temperature"] == 0 else 0.0                       # the cold regime is best at T = 1e-2
        return 1 - sum(abs(math.log10(p[k]) - math.log10(v)) for k, v in target.items()) - 0.01 * cold

    fake = FakeGrid(accuracy)
    rec = Scripted(P, fake)
    assert tuning.tuned(rec, "sgd_transfer", "ssl") == {"lr": 0.1, "weight_decay": pytest.approx(5e-5)}
    assert tuning.tuned(rec, "map_nonlearned", "none") == {"lr": 0.1, "alpha": 10.0}
    assert tuning.tuned(rec, "map_learned", "ssl") == {"lr": 0.1, "scale": 1e5, "head_var": pytest.approx(0.1)}
    assert tuning.tuned(rec, "map_isotropic", "ssl") == {"lr": 0.1, "alpha": pytest.approx(1e-3)}
    # Bayes at T = 1: the MAP winners, then its own prior width (alpha grid extended below MAP's factor grid)
    t1 = {"temperature": 1.0}
    assert tuning.tuned(rec, "bayes_nonlearned", "none") == {"lr": 0.1, "alpha": pytest.approx(0.1)} | t1
    assert tuning.tuned(rec, "bayes_isotropic", "ssl") == {"lr": 0.1, "alpha": pytest.approx(1e-5)} | t1
    assert tuning.tuned(rec, "bayes_learned", "ssl") == {"lr": 0.1, "scale": 1e3, "head_var": pytest.approx(0.1)} | t1
    # cold: the MAP winners, then T from the profile's cold temperatures
    assert tuning.tuned(rec, "bayes_learned", "ssl", regime="cold") == {"lr": 0.1, "scale": 1e5,
                                                                      "head_var": pytest.approx(0.1), "temperature": 1e-2}
    assert {p["split"] for p in fake.asked} == {"val"}
    assert {p["approach"] for p in fake.asked} == {"sgd_transfer", "map_nonlearned", "map_learned", "map_isotropic",
                                                   "bayes_nonlearned", "bayes_isotropic", "bayes_learned"}
    # every stage ran every tuning seed, at study_n by default
    assert {(p["n_train"], p["dataset"], p["seed"]) for p in fake.asked} == {(P.study_n, "cifar10", s)
                                                                            for s in P.seeds[:P.tuning_seeds]}
    assert P.tuning_seeds == 2
    s = tuning.setting(rec, "bayes_learned", "ssl", n_train=P.study_n, seed=2)
    assert s == {"approach": "bayes_learned", "prior_kind": "ssl", "lr": 0.1, "scale": 1e3,
                 "head_var": pytest.approx(0.1), "temperature": 1.0, "n_train": P.study_n, "seed": 2}
    p = RunSpec.default(P, "transfer", **s)
    assert p.split == "test" and p.temperature == 1.0 and p.bma_samples == P.bma_samples


def test_each_size_and_dataset_is_tuned_on_its_own_validation_split(monkeypatch):
    # the best lr moves with n and differs on Fashion-MNIST: each CIFAR-10 size finds its own; Fashion-MNIST is tuned
    # on its own split at study_n, and its other sizes take those values without runs of their own
    best_lr = {(100, "cifar10"): 0.01, (P.study_n, "cifar10"): 0.03, (5000, "cifar10"): 0.1,
               (P.study_n, "fashion-mnist"): 0.3}
    fake = FakeGrid(lambda p: 1 - abs(math.log10(p["lr"]) - math.log10(best_lr[p["n_train"], p["dataset"]]))
                    - abs(math.log10(p["weight_decay"]) - math.log10(5e-4)))
    rec = Scripted(get_profile("cpu", lr_grid=(0.01, 0.03, 0.1, 0.3)), fake)
    for (n, ds), lr in best_lr.items():
        assert tuning.tuned(rec, "sgd_transfer", "ssl", n, ds)["lr"] == lr
    assert tuning.tuned(rec, "sgd_transfer", "ssl", 100, "fashion-mnist")["lr"] == 0.3
    assert {(p["n_train"], p["dataset"]) for p in fake.asked} == set(best_lr)
    with pytest.raises(ValueError, match="unknown temperature regime 'warm'"):
        tuning.tuned(rec, "bayes_learned", "ssl", regime="warm")


def test_what_is_chosen_once_is_reused_without_runs_of_its_own(monkeypatch):
    # weight decay and the cold T are chosen at study_n; the matched prior takes the supervised prior's values
    best = {"ssl": {"weight_decay": 5e-5, "temperature": 1e-2}, "supervised": {"weight_decay": 5e-3, "temperature": 0.0}}

    def accuracy(p):
        b = best["ssl" if p["prior_kind"] == "ssl" else "supervised"]
        t = 0.0 if p["temperature"] in (0.0, 1.0) else p["temperature"]
        return (1 - abs(math.log10(p["weight_decay"]) - math.log10(b["weight_decay"]))
                - abs(math.log10(t + 1e-6) - math.log10(b["temperature"] + 1e-6)))

    fake = FakeGrid(accuracy)
    rec = Scripted(P, fake)
    for kind, b in best.items():
        for n in P.train_sizes:
            assert tuning.tuned(rec, "sgd_transfer", kind, n)["weight_decay"] == pytest.approx(b["weight_decay"])
            assert tuning.tuned(rec, "bayes_learned", kind, n, regime="cold")["temperature"] == b["temperature"]
    asked = pd.DataFrame(fake.asked)
    sgd = asked[asked.approach == "sgd_transfer"].groupby(["prior_kind", "n_train"]).weight_decay.nunique()
    assert set(sgd[sgd > 1].index.get_level_values("n_train")) == {P.study_n}   # the wd stage ran at study_n only
    assert set(asked[asked.temperature < 1].query("approach == 'bayes_learned'").n_train) == {P.study_n}
    families = [(a, n, r) for n in P.train_sizes for a, r in (("sgd_transfer", "T1"), ("map_learned", "T1"),
                                                              ("bayes_learned", "T1"), ("bayes_learned", "cold"))]
    supervised = [tuning.tuned(rec, a, "supervised", n, regime=r) for a, n, r in families]
    before = len(fake.asked)
    assert [tuning.tuned(rec, a, "supervised_matched", n, regime=r) for a, n, r in families] == supervised
    assert len(fake.asked) == before                                              # no run of its own


def test_the_best_value_is_the_best_mean_over_seeds():
    # seed 0 alone would pick lr 0.3; the mean over both seeds picks 0.1
    df = pd.DataFrame({"lr": [0.1, 0.1, 0.3, 0.3], "seed": [0, 1, 0, 1], "accuracy": [0.60, 0.60, 0.62, 0.50],
                       "nll": 1.0, "status": "ok"})
    assert tuning.best_value(df, "lr") == 0.1
    tie = pd.DataFrame({"lr": [0.1, 0.3], "accuracy": [0.6, 0.6], "nll": [0.9, 0.8], "status": "ok"})
    assert tuning.best_value(tie, "lr") == 0.3                   # ties: the lower mean NLL
    # the recorded case (non-learned prior, cold T at n = 1 000): equal counts of 200 validation images over 2 seeds,
    # recorded from float32, whose means differ in the 8th digit; the tie is the NLL's to break, not that noise's
    acc = np.float32([0.425, 0.445, 0.420, 0.450]).astype(float)
    noisy = pd.DataFrame({"temperature": [0.0, 0.0, 1e-3, 1e-3], "seed": [0, 1, 0, 1], "accuracy": acc,
                          "nll": [1.636, 1.798, 1.605, 1.795], "status": "ok"})
    assert acc[:2].mean() != acc[2:].mean()
    assert tuning.best_value(noisy, "temperature") == 1e-3
    # lr 1.0 diverged on one seed: its surviving seed (0.9) does not make it the winner
    failed = pd.DataFrame({"lr": [0.1, 0.1, 1.0, 1.0], "seed": [0, 1, 0, 1], "accuracy": [0.6, 0.6, 0.9, float("nan")],
                           "nll": 1.0, "status": ["ok", "ok", "ok", "failed: DivergenceError: loss became nan"]})
    assert tuning.best_value(failed, "lr") == 0.1
    assert list(tuning.mean_curve(failed, "lr").index) == [0.1]


@pytest.mark.parametrize("tightest, best, centre, expected", [(0.30, 0.70, 2.9, 1e3), (0.60, 0.70, 4.8, 1e5),
                                                              (0.70, 0.70, 3.0, 1.0)])
def test_mid_slope_is_half_way_up_from_the_tightest_prior(tightest, best, centre, expected):
    # a logistic rise in log10(lambda) from `tightest` to `best`, half-way at lambda = 10^centre (just below the
    # grid point the rule must pick), flat at the widest prior
    scales = [10.0 ** e for e in range(8)]
    curve = pd.Series({lam: tightest + (best - tightest) / (1 + math.exp(-3 * (math.log10(lam) - centre)))
                       for lam in scales})
    curve[1e7] = best                                            # the best lambda is the widest
    assert tuning.mid_slope_scale(curve) == expected


def test_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit):
        workers.main(["--profile", "smoke", "--stages", "C2,nope"])
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def test_studies_before_notebook_01_stop_at_once_naming_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    assert workers.main(["--profile", "smoke", "--check"]) == 1            # make studies' check, before the workers
    assert capsys.readouterr().err.strip().endswith("`python -m repro.reproduce --profile smoke --claims C1`")
    assert workers.main(["--profile", "smoke"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "(run notebook 01)" in err
    assert err.endswith("build it with `python -m repro.reproduce --profile smoke --claims C1`")
    assert not list(tmp_path.rglob("*.csv"))                 # nothing recorded


def test_studies_bad_profile_is_one_line(capsys):
    assert workers.main(["--profile", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "error: unknown profile 'nope'; valid profiles: smoke, cpu, paper"


def test_segmentation_cold_takes_the_T_its_sampler_chose_on_the_transfer_task(monkeypatch):
    class BothTasks(FakeGrid):     # segmentation rows score mIoU; every setting remembers its task
        def __call__(self, profile, task, settings, desc=None):
            rows = super().__call__(profile, task, settings, desc)
            self.asked[-len(rows):] = [p | {"task": task} for p in self.asked[-len(rows):]]
            return rows.assign(miou=rows.accuracy)

    fake = BothTasks(lambda p: 1 - abs(math.log10(p["temperature"] + 1e-6) - math.log10(1e-3 + 1e-6)))
    rec = Scripted(P, fake)
    for approach, kind in (("bayes_learned", "supervised"), ("bayes_learned", "ssl"), ("bayes_nonlearned", "supervised")):
        assert tuning.tuned_segmentation(rec, approach, kind, "cold")["temperature"] == 1e-3
    asked = pd.DataFrame(fake.asked)
    assert (asked[asked.task == "segmentation"].temperature.isin([0.0, 1.0])).all()   # no T grid of its own
    assert set(asked[(asked.task == "transfer") & (asked.temperature < 1)].n_train) == {P.study_n}


def test_the_c3_test_grid_covers_the_validation_sweep_at_its_own_spacing():
    decades = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)
    assert studies.widened(decades, 1e1, 1e7) == list(decades)                    # already covered
    assert studies.widened(decades, 1e-1, 1e9) == pytest.approx([10.0 ** e for e in range(-1, 10)])
    assert studies.widened((1e4, 1.0, 1e2), 1e-2, 1e4) == pytest.approx([1e-2, 1.0, 1e2, 1e4])   # unsorted input
    with pytest.raises(ValueError, match="log grid of distinct values"):
        studies.widened((1.0, 1.0), 1.0, 10.0)


def _label(stage: str, job) -> str:
    """A job as the test names it: a tuning family by its dataset, any other by its stage."""
    return job.keywords["dataset"] if isinstance(job, functools.partial) and job.func is tuning.tuned else stage


def test_a_worker_tunes_each_dataset_just_before_the_first_stage_that_reads_it(monkeypatch):
    stages = ("budget", "five_way", "C10", "fashion", "segmentation")
    cifar, fashion = (len(studies.tuned_families(P, only=d)) for d in ("cifar10", "fashion-mnist"))
    assert cifar and fashion and cifar + fashion == len(studies.tuned_families(P))
    expected = (["budget"] * 2 + ["cifar10"] * cifar + ["five_way", "C10"] + ["fashion-mnist"] * fashion
                + ["fashion", "segmentation"])
    assert [_label(*j) for j in studies.jobs(P, stages)] == expected
    events = []                              # a worker completes them in that order, checking the budgets once
    monkeypatch.setattr(workers, "require_priors", lambda p: None)
    monkeypatch.setattr(workers, "require_budgets", lambda p: events.append("budgets checked"))
    monkeypatch.setattr(workers.Worker, "__init__", lambda self, profile: None)
    monkeypatch.setattr(workers.Worker, "complete", lambda self, job: events.append(job))
    workers.run_profile(P, stages=stages)
    assert events[:2] == [j for _, j in studies.jobs(P, stages)][:2] and events[2] == "budgets checked"
    assert len(events) == len(expected) + 1
    with pytest.raises(ValueError, match="unknown stage"):
        studies.jobs(P, ("nope",))
    order, headline = list(studies.STAGES), set(costs.NOTEBOOK_STAGES["05_five_way"])
    assert order[:5] == ["budget", "sampler_budget", "own_budget", "retune", "five_way"]   # the headline ...
    assert set(order[2:2 + len(headline) + 1]) == headline | {"retune"}   # ... and all of notebook 05's before the rest


def test_segmentation_sweeps_are_the_runs_that_chose_each_tuned_value(monkeypatch):
    best = {"lr": 0.03, "scale": 1.0, "alpha": 1e-5}                  # interior points of their grids: no extension
    width = {"sgd_transfer": "lr", "bayes_nonlearned": "alpha"}       # every other approach tunes lambda

    class Segmentation(FakeGrid):                                     # scores mIoU, peaked at ``best`` in log space
        def __call__(self, profile, task, settings, desc=None):
            return super().__call__(profile, task, settings, desc).assign(miou=lambda d: d.accuracy)

    def score(p):
        name = width.get(p["approach"], "scale")
        return 0.5 - abs(math.log10(p[name] / best[name])) - (p["lr"] != best["lr"])   # the lr counts for everyone
    rec = Scripted(P, Segmentation(score))
    sweeps = studies.segmentation_sweeps(rec)
    assert len(sweeps.setting.unique()) == len(studies.SEGMENTATION)
    for (a, k), (setting, g) in zip(studies.SEGMENTATION, sweeps.groupby("setting", sort=False)):
        name = width.get(a, "scale")
        assert (g.swept == name).all() and (g.value == g[name]).all()
        assert g.groupby("value").miou.mean().idxmax() == pytest.approx(best[name])
        assert tuning.tuned_segmentation(rec, a, k)[name] == pytest.approx(best[name])
        assert set(g.seed) == set(tuning.tuning_seeds(P)) and (g.split == "val").all()
        if name != "lr":
            assert (g.lr == best["lr"]).all() and set(g.prior_kind) == {k}     # each width swept at the chosen lr


def test_the_third_protocols_phases_can_run_apart_with_a_stage_between():
    def parts(phase_jobs):          # each phase is one job over its chains and ensembles (Recorded.each)
        return [(j.func, j.keywords) if hasattr(j, "func") else j for job in phase_jobs for j in job.keywords["jobs"]]

    whole = studies.STAGES["own_budget"](P)
    cold, t1 = (studies.STAGES[stage](P) for stage in ("own_budget_cold", "own_budget_T1"))
    assert len(whole) == len(cold) + len(t1) == 2 and parts(whole) == parts(cold + t1)
    assert list(studies.STAGES)[-2:] == ["own_budget_cold", "own_budget_T1"]      # not in the default order's way
