"""Benchmarks (not timed tests). ``python -m repro.bench prior`` times the prior's log-prob + gradient.

The learned prior is evaluated once per Bayes step, so it must cost little next to the network:
closed-form Woodbury gradient versus ``torch.distributions.LowRankMultivariateNormal`` + autograd on
the same covariance.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import pandas as pd
import torch
from torch.distributions import LowRankMultivariateNormal

from .priors import LowRankGaussianPrior

PRIOR_DIMS = {"ResNet-20 (0.27 M)": 271_824, "ResNet-18 (11 M)": 11_176_512, "ResNet-50 (23.5 M)": 23_508_032}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_prior(ranks=(20,), repeats: int = 5, dims: dict[str, int] = PRIOR_DIMS) -> pd.DataFrame:
    """Log-prob + gradient time of repro.priors vs LowRankMultivariateNormal, per (d, k)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for label, d in dims.items():
        for k in ranks:
            mean = torch.randn(d, generator=g)
            diag = torch.rand(d, generator=g) + 0.1
            factor = torch.randn(d, k, generator=g)
            theta = mean + torch.randn(d, generator=g)
            ours = LowRankGaussianPrior(mean, diag, factor, scale=1.0, rank=k)
            # the same covariance, in LowRankMultivariateNormal's parametrisation
            mvn = LowRankMultivariateNormal(mean, ours._U.contiguous(), ours.a)

            def torch_step():
                x = theta.detach().requires_grad_()
                mvn.log_prob(x).backward()
                return x.grad

            lp_ours, g_ours = ours.log_prob_and_grad(theta)
            x = theta.detach().requires_grad_()
            lp_ref = mvn.log_prob(x)
            lp_ref.backward()
            rel = abs(lp_ours.item() - lp_ref.item()) / abs(lp_ref.item())
            t_ours = median_time(lambda: ours.log_prob_and_grad(theta), repeats)
            t_ref = median_time(torch_step, repeats)
            rows.append(dict(model=label, d=d, k=k, repro_ms=1e3 * t_ours, lowrank_mvn_ms=1e3 * t_ref,
                             speedup=t_ref / t_ours, logp_rel_diff=rel,
                             grad_max_abs_diff=(g_ours - x.grad).abs().max().item()))
            del ours, mvn, factor
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["prior"], help="which benchmark")
    parser.add_argument("--ranks", type=int, nargs="+", default=[20])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.what == "prior":
        df = bench_prior(ranks=tuple(args.ranks), repeats=args.repeats)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
