"""The benchmarks run and measure what they say (tiny sizes; timings themselves are not asserted)."""
import numpy as np
import pandas as pd
import pytest

from repro import bench


def test_prior_benchmark_agrees_with_lowrank_mvn():
    df = bench.bench_prior(ranks=(3,), repeats=1, dims={"tiny": 500})
    assert df.logp_rel_diff.iloc[0] < 1e-5 and df.grad_max_abs_diff.iloc[0] < 1e-4


def test_step_benchmark_covers_every_optimiser():
    df = bench.bench_step(profile="smoke", steps=1, warmup=0, rank=2)
    assert list(df.variant) == ["sgd", "sgd+prior (MAP)", "sgld+prior", "sghmc+prior"]
    assert (df.value > 0).all() and df.ratio_to_sgd.iloc[0] == 1.0


def test_grid_projection_is_run_count_times_mean_retimed_time(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    grid = tmp_path / "smoke" / "transfer" / "runs.csv"
    grid.parent.mkdir(parents=True)
    rows = ([("test", "bayes_learned", f"b{i}", t, 0.5) for i, t in enumerate((100.0, 110.0, 120.0))]
            + [("val", "map_learned", f"m{i}", t, 0.6) for i, t in enumerate((40.0, 50.0))]
            + [("test", "map_learned", "old", 999.0, 0.7)])                  # recorded, read by no stage
    pd.DataFrame(rows, columns=["split", "approach", "key", "wall_time_s", "accuracy"]).assign(
        study="transfer", status="ok").to_csv(grid, index=False)
    monkeypatch.setattr(bench, "required_runs", lambda p: {k: ("transfer", {"approach": a}) for _, a, k, *_ in rows[:5]})
    monkeypatch.setattr(bench, "_retime", lambda task: {"bayes_learned": (60.0, 0.52),
                                                        "map_learned": (20.0, 0.6)}[task[2]["approach"]])
    df, runs = bench.bench_grid("smoke", per_group=2, workers=1)
    df = df.set_index("group")
    assert len(runs) == 4 and set(runs.key) <= {"b0", "b1", "b2", "m0", "m1"}
    assert np.allclose(runs.metric_abs_diff, (runs.retimed_metric - runs.recorded_metric).abs())
    bayes, val, old = df.loc["transfer · test · bayes_learned"], df.loc["transfer · val · map_learned"], df.loc[
        "transfer · superseded"]
    assert (bayes.runs, bayes.sampled) == (3, 2) and np.isclose(bayes.recorded_h, 330 / 3600)
    assert np.isclose(bayes.max_metric_diff, 0.02) and val.max_metric_diff == 0
    assert np.isclose(bayes.projected_h, 3 * 60 / 3600) and np.isclose(val.projected_h, 2 * 20 / 3600)
    assert old.runs == 1 and np.isclose(old.recorded_h, 999 / 3600) and np.isnan(old.projected_h)
    total = df.loc["total (read by the notebooks)"]
    assert total.runs == 5 and np.isclose(total.recorded_h, 420 / 3600) and np.isclose(total.projected_h, 220 / 3600)


def test_grid_benchmark_needs_the_recorded_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="not recorded.*make studies PROFILE=smoke"):
        bench.required_runs("smoke")
    assert not list(tmp_path.rglob("runs.csv"))                              # and it ran nothing
