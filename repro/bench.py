"""Benchmarks (not timed tests): ``python -m repro.bench [all|prior|step|loader|bma|eval|grid]``.

* ``step``: one training step of the ``cpu`` profile's model for SGD, SGD + learned rank-20 prior (MAP),
  SGLD + prior and SGHMC + prior, the last also in bf16 and compiled (:mod:`repro.compute`) (median over interleaved
  steps after warm-up), and the ratio to SGD;
* ``prior``: the learned prior's log-prob + gradient versus ``torch.distributions.LowRankMultivariateNormal``
  + autograd on the same covariance, at ResNet-20/18/50 sizes;
* ``loader``: images/s the in-memory pipeline (augmentation included) delivers, versus the model's
  training throughput;
* ``bma``: evaluation throughput of a 10-sample Bayesian model average;
* ``eval``: where a Bayes run's evaluation time goes (BatchNorm refresh, test and shifted-set forward passes, C2's
  displacement), per phase;
* ``grid`` (not part of ``all``; an hour or more): re-time a stratified sample of a profile's *recorded* downstream
  grids with the current code in each training precision, two single-thread workers as in ``make studies`` on two
  cores, and project what the whole grid would cost now; ``grid --all`` re-times every run (hours, resumable) and so
  measures it.

Results go to ``results/bench/bench.csv`` (one row per measurement; ``grid``: ``results/bench/retime_<profile>.csv``
per group, ``retime_<profile>_runs.csv`` per re-timed run, and the resumable re-time grid ``retime_<profile>_grid.csv``)
and are printed as a table.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch.distributions import LowRankMultivariateNormal

from . import data
from .models import EVAL_BATCH_SIZE, build_classifier, channels_last
from .method.priors import ComposedPrior, IsotropicGaussianPrior, LowRankGaussianPrior
from .cli import add_profile_argument, run_main
from .compute import PRECISIONS, can_compile, training_loss
from .profiles import Profile, get_profile, results_root
from .runner import MissingPrerequisite, Run, load_results, run_grid
from .method.samplers import SGHMC, SGLD, bma_probs

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
    phase of :func:`.transfer.run_transfer`'s one pass: each sample's BatchNorm refresh, BN fold, forward pass over the
    test subset and the C8 shifted set, and C2 displacement. Random weights: the cost does not depend on them."""
    from .models import for_evaluation
    from .train import flat_params, update_bn
    P, model, _, _ = _cpu_model_and_batch(profile)
    model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    bn_images, images = (torch.randint(0, 256, (n, 3, P.image_size, P.image_size), dtype=torch.uint8, generator=g)
                         for n in (n_train, 2 * P.downstream_test_n))      # the test subset, then the shifted set
    d = sum(p.numel() for p in model.backbone.parameters())
    learned = LowRankGaussianPrior(flat_params(model)[:d].clone(), torch.rand(d, generator=g) + 0.1,
                                   torch.randn(d, rank, generator=g), scale=1.0, rank=rank)
    states = [{k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in model.state_dict().items()} for _ in range(samples)]
    phases = dict.fromkeys(("BatchNorm refresh", "BN fold", "test forward", "shifted-set forward", "C2 displacement"), 0.)
    share = 0.5                                      # one pass over both sets: its time split by their sizes
    with torch.inference_mode():
        for state in states:
            model.load_state_dict(state)
            t = [time.perf_counter()]
            update_bn(model, bn_images)
            t.append(time.perf_counter())
            net = for_evaluation(model)
            t.append(time.perf_counter())
            torch.cat([net(images[i:i + EVAL_BATCH_SIZE]).softmax(1) for i in range(0, len(images), EVAL_BATCH_SIZE)])
            t.append(time.perf_counter())
            theta = flat_params(model)[:d].double()
            float((theta - learned.mean.double()).norm()), learned.low_rank_displacement(theta)
            t.append(time.perf_counter())
            for k, dt in zip(phases, (t[1] - t[0], t[2] - t[1], share * (t[3] - t[2]), (1 - share) * (t[3] - t[2]),
                                      t[4] - t[3])):
                phases[k] += dt
    total = sum(phases.values())
    return pd.DataFrame([dict(benchmark="eval", variant=k, value=v, unit=f"s per {samples} samples",
                              share=v / total) for k, v in phases.items()])


def required_runs(profile: Profile) -> dict[str, tuple[str, dict]]:
    """``key -> (study, params)`` of every run the profile's notebooks read, tuning included.

    The study stages are replayed inside :func:`repro.experiments.grid.recording`: the grids must already be recorded
    (nothing runs).
    """
    from .experiments import grid, studies
    with grid.recording() as needed:
        studies.run_profile(profile)
    return needed


# The downstream grids, each with the metric compared between a recorded run and its re-run.
GRID_METRIC = {"transfer": "accuracy", "segmentation": "miou"}
RETIME_STUDY = "retime"      # the re-time grid: one row per (recorded run, precision), keyed by the recorded run's key


def retime_csv(profile: Profile) -> Path:
    """``results/bench/retime_<profile>_grid.csv``: the re-time grid (a ``run_grid`` CSV, so resumable)."""
    return results_root() / "bench" / f"retime_{profile.name}_grid.csv"


def _retime(profile: Profile, study: str, params: dict, precision: str) -> dict:
    """The headline metric and the process CPU time of one recorded run re-run with the current code in
    ``precision`` (:mod:`repro.compute`); nothing of the run is saved (the runner records the wall time)."""
    from .experiments.approaches import UNRECORDED
    from .experiments.grid import RUN
    params = {k: v for k, v in (params | {"precision": precision}).items() if UNRECORDED.get(k, ...) != v}
    c0 = time.process_time()
    out = RUN[study](profile, params)
    return {"retimed_metric": out[GRID_METRIC[study]], "cpu_time_s": time.process_time() - c0}


def _retime_worker(job: tuple[Profile, dict[str, tuple[str, dict]], list[Run]]) -> None:
    """One worker of the re-time grid, single-threaded like a ``make studies`` worker; workers share the CSV."""
    profile, needed, runs = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(runs, lambda r: _retime(profile, *needed[r["run_key"]], r["precision"]), retime_csv(profile),
                 desc="re-time", shared=True)
    finally:
        torch.set_num_threads(threads)


def bench_grid(P: Profile, per_group: int | None = 2, workers: int = 2,
               precisions: Sequence[str] = ("fp32",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, re-timed runs): recorded versus re-timed CPU-hours of the profile's downstream grids, per (study,
    split, approach) and per training precision, and each re-timed run's recorded and new time and metric.

    ``per_group`` recorded runs of each group (``None``: every run) are re-run with the current code in each of
    ``precisions``, back to back (so that machine drift hits every precision alike), in the re-time grid
    (:func:`retime_csv`), which resumes: a run re-timed before is not re-run, so a killed re-time picks up where it
    stopped (delete the CSV after changing the code). Runs go in a random order, so a partial re-time is a random
    sample of every group. Projected hours = the group's run count x the mean re-timed wall time (with every run
    re-timed: their sum), in columns ``projected_h_<precision>``; ``cpu_projected_h_<precision>`` likewise from
    process CPU time. ``max_metric_diff``: the largest |accuracy (mIoU for segmentation) of a recorded run - that of
    its fp32 re-run|, the size of a re-run's rounding alone. Recorded runs no stage reads any more are listed as
    ``superseded``. ``workers`` > 1 re-times in that many spawned processes, else in this one.
    """
    from .experiments.grid import grid_csv
    needed = required_runs(P)
    rows = pd.concat([load_results(grid_csv(P, s)) for s in GRID_METRIC if grid_csv(P, s).exists()], ignore_index=True)
    read = rows.key.isin(needed)
    rows["group"] = (rows.study + " · " + rows.split + " · " + rows.approach).where(read, rows.study + " · superseded")
    retimed = load_results(retime_csv(P))
    have = set(retimed.run_key[retimed.status == "ok"]) if not retimed.empty else set()
    live = rows[read].sample(frac=1.0, random_state=0)
    live = pd.concat([live[live.key.isin(have)], live[~live.key.isin(have)]])   # runs re-timed before count first
    sample = live if per_group is None else live.groupby("group").head(per_group)
    runs = [Run(RETIME_STUDY, {"run_key": k, "precision": q}) for k in sample.key for q in precisions]
    job = (P, {k: needed[k] for k in sample.key}, runs)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_retime_worker, [job] * workers)
    else:
        _retime_worker(job)
    retimed = load_results(retime_csv(P))
    retimed = retimed[(retimed.status == "ok") & retimed.precision.isin(precisions)]
    out = rows.groupby("group").agg(runs=("key", "size"), recorded_h=("wall_time_s", "sum"))
    out["recorded_h"] /= 3600
    is_live = ~out.index.str.endswith("superseded")
    total = {"runs": len(live), "recorded_h": live.wall_time_s.sum() / 3600}
    done = {}
    for q in precisions:
        mine = retimed[retimed.precision == q].rename(columns={"wall_time_s": f"retimed_s_{q}", "cpu_time_s":
                                                               f"retimed_cpu_s_{q}", "retimed_metric": f"metric_{q}"})
        done[q] = live.merge(mine[["run_key", f"retimed_s_{q}", f"retimed_cpu_s_{q}", f"metric_{q}"]],
                             left_on="key", right_on="run_key").drop(columns="run_key")
        per = done[q].groupby("group").agg(**{f"retimed_{q}": ("key", "size"),
                                              f"retimed_sample_s_{q}": (f"retimed_s_{q}", "mean"),
                                              f"retimed_cpu_s_{q}": (f"retimed_cpu_s_{q}", "mean")})
        out = out.join(per)
        out[f"projected_h_{q}"] = out.runs * out[f"retimed_sample_s_{q}"] / 3600   # NaN for superseded: not re-run
        out[f"cpu_projected_h_{q}"] = out.runs * out[f"retimed_cpu_s_{q}"] / 3600
        # NaN until every group has a re-timed run
        total |= {f"retimed_{q}": len(done[q]), f"projected_h_{q}": out[f"projected_h_{q}"][is_live].sum(skipna=False),
                  f"cpu_projected_h_{q}": out[f"cpu_projected_h_{q}"][is_live].sum(skipna=False)}
    table = done[precisions[0]][["group", "key", "study", "wall_time_s"]].copy()
    table["recorded_metric"] = [row[GRID_METRIC[row.study]] for _, row in done[precisions[0]].iterrows()]
    for q in precisions:
        table = table.merge(done[q][["key", f"retimed_s_{q}", f"retimed_cpu_s_{q}", f"metric_{q}"]], on="key",
                            how="outer")
    if "fp32" in precisions:                 # a re-run's rounding alone: fp32 here against fp32 when recorded
        table["metric_abs_diff"] = (table.metric_fp32 - table.recorded_metric).abs()
        out = out.join(table.groupby("group").agg(max_metric_diff=("metric_abs_diff", "max")))
        total["max_metric_diff"] = table.metric_abs_diff.max()
    summary = pd.concat([out.reset_index(), pd.DataFrame([{"group": "total (read by the notebooks)", **total}])],
                        ignore_index=True)
    return summary, table.drop(columns="study").rename(columns={"wall_time_s": "recorded_s"}).sort_values(
        ["group", "key"], ignore_index=True)


def precision_check(runs: pd.DataFrame, other: str = "bf16", margin: float = 0.01,
                    alpha: float = 0.05) -> dict:
    """The paired difference metric(``other``) - metric(fp32) over re-timed runs (:func:`bench_grid`'s second table),
    its (1 - 2 alpha) t interval, and whether it lies inside +-``margin`` (TOST at level ``alpha``): the registered
    rule by which a training precision is adopted (README, Performance). Beside it, |fp32 re-run - recorded|: the
    difference a re-run's rounding alone makes."""
    from scipy import stats
    both = runs.dropna(subset=["metric_fp32", f"metric_{other}"])
    d = both[f"metric_{other}"] - both.metric_fp32
    half = stats.t.ppf(1 - alpha, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    return {"pairs": len(d), "mean_diff": d.mean(), "ci_low": d.mean() - half, "ci_high": d.mean() + half,
            "equivalent": bool(-margin < d.mean() - half and d.mean() + half < margin),
            "mean_abs_diff": d.abs().mean(), "mean_abs_rerun_diff": (both.metric_fp32 - both.recorded_metric).abs().mean()}


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
        summary, runs = bench_grid(profile, None if args.all else args.per_group, precisions=args.precisions)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        folder = results_root() / "bench"
        summary.to_csv(folder / f"retime_{profile.name}.csv", index=False)
        runs.to_csv(folder / f"retime_{profile.name}_runs.csv", index=False)
        total = summary.iloc[-1]
        print(f"the profile's recorded downstream runs: {total.recorded_h:.1f} h as recorded; re-timed now: " +
              ", ".join(f"{total[f'projected_h_{q}']:.1f} h in {q}" for q in args.precisions))
        for q in args.precisions:
            if q != "fp32" and "fp32" in args.precisions:
                print(f"{q} - fp32 (paired, accuracy or mIoU):", precision_check(runs, q))
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
