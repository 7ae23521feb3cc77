"""The benchmarks run and measure what they say (tiny sizes; timings themselves are not asserted)."""
from repro import bench


def test_prior_benchmark_agrees_with_lowrank_mvn():
    df = bench.bench_prior(ranks=(3,), repeats=1, dims={"tiny": 500})
    assert df.logp_rel_diff.iloc[0] < 1e-5 and df.grad_max_abs_diff.iloc[0] < 1e-4


def test_step_benchmark_covers_every_optimiser():
    df = bench.bench_step(profile="smoke", steps=1, warmup=0, rank=2)
    assert list(df.variant) == ["sgd", "sgd+prior (MAP)", "sgld+prior", "sghmc+prior"]
    assert (df.value > 0).all() and df.ratio_to_sgd.iloc[0] == 1.0
