"""Benchmarks (not timed tests): ``python -m repro.bench [all|prior|step|loader|bma|eval|grid]``.

* ``step``: one training step of the ``cpu`` profile's model for SGD, SGD + learned rank-20 prior (MAP),
  SGLD + prior and SGHMC + prior, the last also in bf16 and compiled (:mod:`repro.compute`), and the DE-ELBO fit of
  the prior's widths (median over interleaved steps after warm-up), and the ratio to SGD;
* ``prior``: the learned prior's log-prob + gradient versus ``torch.distributions.LowRankMultivariateNormal``
  + autograd on the same covariance, at ResNet-20/18/50 sizes;
* ``loader``: images/s the in-memory pipeline (augmentation included) delivers, versus the model's
  training throughput;
* ``bma``: evaluation throughput of a 10-sample Bayesian model average;
* ``eval``: where a Bayes run's evaluation time goes (BatchNorm refresh, test and shifted-set forward passes, C2's
  displacement), per phase;
* ``grid`` (not part of ``all``; an hour or more): re-time a stratified sample of a profile's *recorded* downstream
  grids with the current code in each training precision, by two single-thread workers, and project what the whole
  grid would cost now (:mod:`repro.retime`); ``grid --all`` re-times every run (hours, resumable) and so measures it.

Results go to ``results/bench/bench.csv`` (one row per measurement; ``grid``: ``results/bench/retime_<profile>.csv``
per group, ``retime_<profile>_runs.csv`` per re-timed run, and the resumable re-time grid ``retime_<profile>_grid.csv``)
and are printed as a table.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Callable

import pandas as pd
import torch
from torch.distributions import LowRankMultivariateNormal

from . import data
from .models import EVAL_BATCH_SIZE, build_classifier, channels_last
from .method.priors import ComposedPrior, IsotropicGaussianPrior, LowRankGaussianPrior
from .cli import add_profile_argument, run_main
from .compute import PRECISIONS, can_compile, training_loss
from .profiles import Profile, get_profile, results_root
from .retime import precision_rule, retime, retime_csv
from .runner import MissingPrerequisite
from .method.samplers import SGHMC, SGLD, bma_probs
from .method.variational import DataEmphasizedVI

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
    """Log-prob + gradient time of repro.method.priors vs LowRankMultivariateNormal, per (d, k)."""
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


def _cpu_model_and_batch(P: Profile):
    torch.manual_seed(0)
    model = build_classifier(P.model, 10, width=P.width)
    # the downstream batch: the priors and samplers only ever run in downstream training
    x = torch.randint(0, 256, (P.downstream_batch_size, 3, P.image_size, P.image_size), dtype=torch.uint8)
    y = torch.randint(0, 10, (P.downstream_batch_size,))
    return P, model, x, y


def bench_step(profile: Profile, steps: int = 80, warmup: int = 3, rank: int = 20) -> pd.DataFrame:
    """Median time of one training step per variant, steps interleaved so drift hits all alike; in the channels-last
    layout downstream training uses, and plain SGD also in the default layout of the first protocol. The SGHMC step
    with a prior (every sampler and MAP run) is also timed in bf16 and compiled (:mod:`repro.compute`); a compiled
    variant's first step, which compiles it, is reported as ``first_step_s``."""
    P, model, x, y = _cpu_model_and_batch(profile)
    contiguous, x_contiguous = copy.deepcopy(model), x
    model.to(memory_format=torch.channels_last)
    x = channels_last(x)
    params = list(model.parameters())
    d_backbone = sum(p.numel() for p in model.backbone.parameters())
    g = torch.Generator().manual_seed(1)
    mean = torch.cat([p.detach().reshape(-1) for p in model.backbone.parameters()])
    learned = LowRankGaussianPrior(mean, torch.rand(d_backbone, generator=g) * 1e-5 + 1e-7,
                                   torch.randn(d_backbone, rank, generator=g) * 1e-2, scale=1e3, rank=rank)
    prior = ComposedPrior([learned, IsotropicGaussianPrior(sum(p.numel() for p in model.head.parameters()), 1.0)])
    N = 5000
    ce = torch.nn.functional.cross_entropy
    sghmc = SGHMC(params, lr=1e-3, num_data=N, momentum=0.9, temperature=1.0, prior=prior)
    # variant -> (model, batch, optimiser, loss(model, x, y))
    variants = {
        "sgd, default layout": (contiguous, x_contiguous, torch.optim.SGD(contiguous.parameters(), lr=1e-3, momentum=0.9,
                                                                          weight_decay=5e-4), training_loss(ce)),
        "sgd": (model, x, torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4), training_loss(ce)),
        "sgd+prior (MAP)": (model, x, SGHMC(params, lr=1e-3, num_data=N, momentum=0.9, temperature=0.0, prior=prior),
                            training_loss(ce)),
        "sgld+prior": (model, x, SGLD(params, lr=1e-3, num_data=N, temperature=1.0, prior=prior), training_loss(ce)),
        "sghmc+prior": (model, x, sghmc, training_loss(ce)),
        "sghmc+prior, bf16": (model, x, sghmc, training_loss(ce, "bf16")),
        # E1's fit: the MAP step plus the widths' and sigma's updates (fp32: repro.method.variational)
        "de_elbo (variational)": (model, x, DataEmphasizedVI(params, lr=1e-3, num_data=N, blocks=[
            ("scale", learned), ("head_var", prior.parts[1])]), training_loss(ce)),
    }
    if can_compile():
        variants |= {"sghmc+prior, compiled": (model, x, sghmc, training_loss(ce, "fp32", compile=True)),
                     "sghmc+prior, bf16 compiled": (model, x, sghmc, training_loss(ce, "bf16", compile=True))}
    times: dict[str, list[float]] = {k: [] for k in variants}
    first: dict[str, float] = {}
    model.train()
    contiguous.train()
    for i in range(warmup + steps):
        for name, (net, xb, opt, loss) in variants.items():
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            loss(net, xb, y).backward()
            opt.step()
            if i == 0:
                first[name] = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    # the ratio is the median of per-round ratios: each round's steps ran back to back, so machine drift cancels
    return pd.DataFrame([dict(benchmark="step", variant=k, value=1e3 * statistics.median(v), unit="ms/step",
                              ratio_to_sgd=statistics.median(t / b for t, b in zip(v, times["sgd"])), batch_size=len(x),
                              images_per_s=len(x) / statistics.median(v),
                              first_step_s=first[k] if "compiled" in k else float("nan")) for k, v in times.items()])


def bench_loader(P: Profile, n: int = 5000) -> pd.DataFrame:
    """Images/s of data.batches with the training augmentation, over an in-memory CIFAR-10 subset."""
    train = data.load("cifar10", "train")
    x, y = train.images[:n], train.targets[:n]
    transform = data.train_transform("cifar10", P.image_size)
    t0 = time.perf_counter()
    count = sum(len(xb) for xb, _ in data.batches(x, y, P.downstream_batch_size, shuffle=True, seed=0, transform=transform))
    return pd.DataFrame([dict(benchmark="loader", variant="batches + RandomCrop/Flip (v2)", value=count / (time.perf_counter() - t0),
                              unit="images/s")])


def bench_bma(profile: Profile, samples: int = 10, n: int = 2000) -> pd.DataFrame:
    """Images/s of a BMA over ``samples`` state dicts (each image evaluated by every sample)."""
    P, model, _, _ = _cpu_model_and_batch(profile)
    states = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(samples)]
    images = torch.randint(0, 256, (n, 3, P.image_size, P.image_size), dtype=torch.uint8)
    t = median_time(lambda: bma_probs(model, states, images), repeats=3)
    return pd.DataFrame([dict(benchmark="bma", variant=f"{samples} samples", value=samples * n / t,
                              unit="image-evaluations/s")])


def bench_eval(profile: Profile, samples: int = 10, n_train: int = 1000, rank: int = 20) -> pd.DataFrame:
    """Where a Bayes run's evaluation time goes over ``samples`` samples (a CIFAR-10 run on ``n_train`` images), per
    phase of :func:`.transfer.run_transfer`'s evaluation: each sample's BatchNorm refresh, BN fold, forward passes over
    the test subset and over the C8 shifted set (the run scores both in one pass; timed apart here), and C2
    displacement. Random weights and images: the cost does not depend on them."""
    from .experiments.evaluations import displacement
    from .models import for_evaluation
    from .train import flat_params, update_bn
    P, model, _, _ = _cpu_model_and_batch(profile)
    model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    bn_images, test, shifted = (torch.randint(0, 256, (n, 3, P.image_size, P.image_size), dtype=torch.uint8,
                                              generator=g) for n in (n_train, P.downstream_test_n, P.downstream_test_n))
    d = sum(p.numel() for p in model.backbone.parameters())
    learned = LowRankGaussianPrior(flat_params(model)[:d].clone(), torch.rand(d, generator=g) + 0.1,
                                   torch.randn(d, rank, generator=g), scale=1.0, rank=rank)
    states = [{k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in model.state_dict().items()} for _ in range(samples)]
    forward = lambda net, x: [net(x[i:i + EVAL_BATCH_SIZE]).softmax(1) for i in range(0, len(x), EVAL_BATCH_SIZE)]  # noqa
    phases = dict.fromkeys(("BatchNorm refresh", "BN fold", "test forward", "shifted-set forward", "C2 displacement"), 0.)
    with torch.inference_mode():
        for state in states:
            model.load_state_dict(state)
            t = [time.perf_counter()]
            update_bn(model, bn_images)
            t.append(time.perf_counter())
            net = for_evaluation(model)
            t.append(time.perf_counter())
            forward(net, test)
            t.append(time.perf_counter())
            forward(net, shifted)
            t.append(time.perf_counter())
            displacement(model, learned)
            t.append(time.perf_counter())
            for k, t0, t1 in zip(phases, t, t[1:]):
                phases[k] += t1 - t0
    total = sum(phases.values())
    return pd.DataFrame([dict(benchmark="eval", variant=k, value=v, unit=f"s per {samples} samples",
                              share=v / total) for k, v in phases.items()])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "prior", "step", "loader", "bma", "eval", "grid"],
                        help="which benchmark (default: all but grid; results in results/bench/)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[5, 20], help="prior: the ranks k to time")
    parser.add_argument("--repeats", type=int, default=5, help="prior: timed repetitions per case (median kept)")
    add_profile_argument(parser, default="cpu", help="grid: whose recorded grids to re-time (default: cpu)")
    parser.add_argument("--per-group", type=int, default=1, help="grid: runs re-timed per (study, split, approach)")
    parser.add_argument("--all", action="store_true", help="grid: re-time every run (hours; resumes where it stopped)")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                        help="grid: re-time each sampled run in each of these training precisions (default: all)")
    args = parser.parse_args(argv)
    return run_main(lambda: _bench(args), errors=(ValueError, MissingPrerequisite))


def _bench(args: argparse.Namespace) -> None:
    """The benchmarks ``args`` ask for, printed and written to ``results/bench/``."""
    profile = get_profile(args.profile)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.what == "grid":
        summary, runs = retime(profile, None if args.all else args.per_group, precisions=args.precisions)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        folder = results_root() / "bench"
        summary.to_csv(folder / f"retime_{profile.name}.csv", index=False)
        runs.to_csv(folder / f"retime_{profile.name}_runs.csv", index=False)
        total = summary.iloc[-1]
        print(f"the profile's recorded downstream runs: {total.recorded_h:.1f} h as recorded; re-timed now: " +
              ", ".join(f"{total[f'projected_h_{q}']:.1f} h in {q}" for q in args.precisions))
        for q in set(args.precisions) - {"fp32"} if "fp32" in args.precisions else ():
            print(f"the rule for {q} (README, Performance):", precision_rule(summary, runs, q))
        print(f"wrote {folder}/retime_{profile.name}{{,_runs}}.csv (re-time grid: {retime_csv(profile)})")
        return
    cpu = get_profile("cpu")     # the micro-benchmarks measure the reported study's model and batch
    parts = {"step": lambda: bench_step(cpu), "loader": lambda: bench_loader(cpu), "bma": lambda: bench_bma(cpu),
             "eval": lambda: bench_eval(cpu),
             "prior": lambda: bench_prior(ranks=tuple(args.ranks), repeats=args.repeats).assign(benchmark="prior")}
    frames = []
    for name, fn in parts.items():
        if args.what in ("all", name):
            frames.append(fn())
            print(frames[-1].to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
    df = pd.concat(frames, ignore_index=True)
    if args.what == "all":
        step = df[df.benchmark == "step"].set_index("variant")
        loader = df.loc[df.benchmark == "loader", "value"].iloc[0]
        print(f"loader / model training throughput: {loader / step.loc['sgd', 'images_per_s']:.1f}x")
    out = results_root() / "bench" / "bench.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
