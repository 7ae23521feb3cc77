"""The benchmarks run and measure what they say (tiny sizes; timings themselves are not asserted)."""
import numpy as np
import pandas as pd
import pytest

from repro import bench, retime
from repro.runner import MissingPrerequisite, Run, load_results
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


def test_prior_benchmark_agrees_with_lowrank_mvn():
    df = bench.bench_prior(ranks=(3,), repeats=1, dims={"tiny": 500})
    assert df.logp_rel_diff.iloc[0] < 1e-5 and df.grad_max_abs_diff.iloc[0] < 1e-4


def test_step_benchmark_covers_every_optimiser():
    df = bench.bench_step(SMOKE, steps=1, warmup=0, rank=2)
    compiled = ["sghmc+prior, compiled", "sghmc+prior, bf16 compiled"] if bench.can_compile() else []
    assert list(df.variant) == ["sgd, default layout", "sgd", "sgd+prior (MAP)", "sgld+prior", "sghmc+prior",
                                "sghmc+prior, bf16", "de_elbo (variational)"] + compiled
    assert (df.value > 0).all() and df.set_index("variant").ratio_to_sgd["sgd"] == 1.0


RECORDED = ([("test", "bayes_learned", f"b{i}", t, 0.5) for i, t in enumerate((100.0, 110.0, 120.0))]
            + [("val", "map_learned", f"m{i}", t, 0.6) for i, t in enumerate((40.0, 50.0))]
            + [("test", "map_learned", "old", 999.0, 0.7)])                  # recorded, read by no stage
RETIMED = {"b0": (60.0, 58.0, 0.52), "b1": (62.0, 60.0, 0.5), "b2": (64.0, 61.0, 0.5),   # wall s, CPU s, accuracy
           "m0": (20.0, 19.0, 0.6), "m1": (22.0, 21.0, 0.6)}


@pytest.fixture
def recorded_grid(tmp_path, monkeypatch):
    """A recorded transfer grid of 6 runs (5 read by the studies) and the re-time grid's CSV path."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    grid = tmp_path / "smoke" / "transfer" / "runs.csv"
    grid.parent.mkdir(parents=True)
    pd.DataFrame(RECORDED, columns=["split", "approach", "key", "wall_time_s", "accuracy"]).assign(
        study="transfer", status="ok").to_csv(grid, index=False)
    monkeypatch.setattr(retime, "required_runs", lambda p: {k: ("transfer", {"key": k}) for _, _, k, *_ in RECORDED[:5]})
    return retime.retime_csv(SMOKE)


def write_retimed(path, keys, precision="fp32", speedup=1.0, metric_shift=0.0):
    """Re-time rows as ``run_grid`` writes them, with the times of RETIMED (divided by ``speedup``)."""
    rows = pd.DataFrame([dict(study=retime.RETIME_STUDY, run_key=k, precision=precision, status="ok",
                              retimed_metric=RETIMED[k][2] + metric_shift, cpu_time_s=RETIMED[k][1] / speedup,
                              key=Run(retime.RETIME_STUDY, {"run_key": k, "precision": precision}).key,
                              wall_time_s=RETIMED[k][0] / speedup) for k in keys])
    if path.exists():
        rows = pd.concat([pd.read_csv(path), rows], ignore_index=True)
    rows.to_csv(path, index=False)


def test_grid_projection_is_run_count_times_mean_retimed_time(recorded_grid, monkeypatch):
    recorded_grid.parent.mkdir(parents=True)
    write_retimed(recorded_grid, RETIMED)
    write_retimed(recorded_grid, RETIMED, "bf16", speedup=2.0, metric_shift=0.001)
    monkeypatch.setattr(retime, "_retime", lambda *a: pytest.fail("a re-timed run was re-run"))
    df, runs = retime.retime(SMOKE, per_group=2, workers=1, precisions=("fp32", "bf16"))
    # the sample is 2 runs per group, but every run re-timed so far counts
    assert len(runs) == 5 and np.allclose(runs.metric_abs_diff, (runs.metric_fp32 - runs.recorded_metric).abs())
    df = df.set_index("group")
    bayes, val, old = df.loc["transfer · test · bayes_learned"], df.loc["transfer · val · map_learned"], df.loc[
        "transfer · superseded"]
    assert (bayes.runs, bayes.retimed_fp32, bayes.retimed_bf16) == (3, 3, 3) and np.isclose(bayes.recorded_h, 330 / 3600)
    assert np.isclose(bayes.max_metric_diff, 0.02) and val.max_metric_diff == 0
    assert np.isclose(bayes.projected_h_fp32, 186 / 3600) and np.isclose(val.projected_h_fp32, 42 / 3600)
    assert np.isclose(bayes.projected_h_bf16, 93 / 3600) and np.isclose(val.cpu_projected_h_bf16, 20 / 3600)
    assert np.isclose(bayes.cpu_projected_h_fp32, 179 / 3600) and np.isclose(val.cpu_projected_h_fp32, 40 / 3600)
    assert old.runs == 1 and np.isclose(old.recorded_h, 999 / 3600) and np.isnan(old.projected_h_fp32)
    total = df.loc["total (read by the notebooks)"]
    assert total.runs == 5 and np.isclose(total.recorded_h, 420 / 3600) and np.isclose(total.projected_h_fp32, 228 / 3600)
    assert np.isclose(total.projected_h_bf16, 114 / 3600)
    rule = retime.precision_rule(df.reset_index(), runs)
    assert rule["pairs"] == 5 and np.isclose(rule["mean_diff"], 0.001) and rule["equivalent"]
    assert np.isclose(rule["saving"], 0.5) and rule["adopt"] and np.isclose(rule["mean_abs_rerun_diff"], 0.02 / 5)


def test_the_precision_rule_refuses_a_shift_a_spread_or_a_small_saving():
    rng = np.random.default_rng(0)
    fp32 = rng.uniform(0.4, 0.6, 30)
    runs = lambda d: pd.DataFrame({"metric_fp32": fp32, "metric_bf16": fp32 + d, "recorded_metric": fp32})  # noqa
    hours = lambda bf16: pd.DataFrame([{"projected_h_fp32": 10.0, "projected_h_bf16": bf16}])  # noqa: E731
    assert retime.precision_rule(hours(6.0), runs(rng.normal(0.0, 0.005, 30)))["adopt"]
    assert not retime.precision_rule(hours(6.0), runs(rng.normal(0.015, 0.005, 30)))["equivalent"]  # 1.5 points off
    assert not retime.precision_rule(hours(6.0), runs(rng.normal(0.0, 0.05, 30)))["equivalent"]     # too noisy
    small = retime.precision_rule(hours(9.0), runs(rng.normal(0.0, 0.005, 30)))                      # 10 % saved
    assert small["equivalent"] and not small["adopt"]
    with pytest.raises(ValueError, match="needs runs re-timed in fp32 and bf16; 1 of 2 are"):
        retime.precision_rule(hours(6.0), pd.DataFrame({"metric_fp32": [0.5, np.nan], "metric_bf16": [0.5, 0.5],
                                                        "recorded_metric": [0.5, 0.5]}))


def test_a_run_retimed_in_one_precision_only_keeps_its_group_and_recorded_values(recorded_grid, monkeypatch):
    recorded_grid.parent.mkdir(parents=True)
    write_retimed(recorded_grid, ["b0"], "bf16")                            # a resumed re-time: b0 in bf16 only
    monkeypatch.setattr(retime, "_retime", lambda *a: pytest.fail("nothing is left to re-time"))
    df, runs = retime.retime(SMOKE, per_group=0, workers=1, precisions=("fp32", "bf16"))
    (row,) = runs.to_dict("records")
    assert row["group"] == "transfer · test · bayes_learned" and row["recorded_metric"] == 0.5
    assert row["recorded_s"] == 100.0 and np.isnan(row["metric_fp32"]) and row["metric_bf16"] == 0.52


def test_grid_retime_resumes_and_projects_from_a_partial_sample(recorded_grid, monkeypatch):
    recorded_grid.parent.mkdir(parents=True)
    write_retimed(recorded_grid, ["b0", "b1"])                               # a re-time killed after two runs
    calls = []
    monkeypatch.setattr(retime, "_retime", lambda profile, study, p, precision: calls.append(p["key"]) or
                        {"retimed_metric": RETIMED[p["key"]][2], "cpu_time_s": RETIMED[p["key"]][1]})
    df, runs = retime.retime(SMOKE, per_group=1, workers=1, precisions=("fp32",))
    assert calls == ["m0"] or calls == ["m1"]                                # only the group with no re-timed run
    df = df.set_index("group")
    assert df.loc["transfer · test · bayes_learned"].retimed_fp32 == 2      # both earlier ones count
    assert np.isclose(df.loc["transfer · test · bayes_learned"].projected_h_fp32, 3 * 61 / 3600)
    assert df.loc["transfer · val · map_learned"].retimed_fp32 == 1
    assert set(load_results(recorded_grid).run_key) == {"b0", "b1", calls[0]}


def test_grid_benchmark_needs_the_recorded_grid(tmp_path, monkeypatch, smoke_priors_dir):
    import shutil
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run notebook 01"):     # runs are keyed on the priors: none yet
        retime.required_runs(SMOKE)
    shutil.copytree(smoke_priors_dir / "smoke" / "priors", tmp_path / "smoke" / "priors")
    with pytest.raises(MissingPrerequisite, match="not recorded.*build it with `make studies PROFILE=smoke`"):
        retime.required_runs(SMOKE)
    assert not list(tmp_path.rglob("runs.csv"))                              # and it ran nothing


def test_eval_benchmark_splits_the_evaluation_into_its_phases():
    df = bench.bench_eval(SMOKE, samples=2, n_train=64)
    assert list(df.variant) == ["BatchNorm refresh", "BN fold", "test forward", "shifted-set forward", "C2 displacement"]
    assert (df.value > 0).all() and abs(df.share.sum() - 1) < 1e-9 and (df.unit == "s per 2 samples").all()
