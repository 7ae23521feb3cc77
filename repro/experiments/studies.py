"""The downstream studies of notebooks 03-10, each a list of settings on a task's grid (:mod:`.grid`).

Training budget (notebook 09, :mod:`.budget`), rank ablation (C2), scale sweep (C3), five-way comparison (C4-C6, C8 on
its shifted test set), temperature ablation, deep ensemble (C10), Fashion-MNIST five-way, segmentation (C9), and notebook 10's extension (E1: widths learned by the
data-emphasized ELBO, :mod:`.learned_scale`). Every setting takes the hyperparameters its approach
was tuned to on validation (:mod:`.tuning`). ``python -m repro.studies --profile cpu --worker 1`` runs
the whole downstream grid as one of several processes sharing it (``make studies``); ``--launcher slurm`` submits
many such workers to a cluster (:mod:`.launch`).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable, Iterable

import pandas as pd
import torch

from ..analysis.metrics import classification_metrics
from ..analysis.predictions import ensemble_predictions
from ..cli import add_profile_argument, run_main
from ..profiles import Profile, get_profile, results_dir
from ..runner import MissingPrerequisite
from .approaches import FIVE_WAY, LABELS, REGIMES, lookup
from .budget import learning_curves, require_budgets, sampler_curves, segmentation_curves
from .grid import run_settings
from .launch import cores, default_workers, launch, launch_local, slurm_executor, slurm_parameters, wait_all
from .pretrain import require_priors
from .learned_scale import confirm, learned_scale_study
from .own_budget import own_budget_runs
from .retune import retune_all
from .tuning import (TUNE_ORDERS, bayes_width_sweep, mid_slope, scale_sweep, segmentation_sweep, setting, sweep,
                     tuned, tuned_segmentation, tuning_point)

log = logging.getLogger(__name__)

KINDS = ("ssl", "supervised", "supervised_matched")   # the last for C5 at equal backbone quality


def tuned_families(profile: Profile, worker: int = 0,
                   only: str | None = None) -> list[tuple[str, str, int, str, str]]:
    """(approach, kind, n, dataset, regime) of every tuned setting the studies use (on dataset ``only``, if given), in
    ``worker``'s order: the five-way approaches at every size (Fashion-MNIST: the SSL prior's), the isotropic
    learned-mean prior at ``study_n`` only (C2, C7)."""
    out = []
    for dataset, kinds in (("cifar10", KINDS), ("fashion-mnist", ("ssl",))):
        if only not in (None, dataset):
            continue
        for n in sizes(profile, dataset):
            for a, k in TUNE_ORDERS[worker]:
                used = a in FIVE_WAY or (dataset == "cifar10" and n == profile.study_n)
                if used and k in kinds + ("none",):
                    out += [(a, k, n, dataset, r) for r in (REGIMES if lookup(a).bayes else ("T1",))]
    return out


def sizes(profile: Profile, dataset: str) -> tuple[int, ...]:
    """The training-set sizes of the five-way study on ``dataset``."""
    return profile.train_sizes if dataset == "cifar10" else profile.fashion_sizes


def tuning_table(profile: Profile) -> pd.DataFrame:
    """The tuned hyperparameters of every approach, prior kind, size, dataset and (samplers) temperature regime, with
    the (prior kind, size) whose validation runs chose them (``tuned_kind``, ``tuned_n``: :func:`.tuning.tuning_point`;
    SGD's weight decay and the cold temperature are chosen at ``study_n`` at every size)."""
    rows = [{"dataset": ds, "n_train": n, "approach": a, "prior_kind": k, "regime": r if lookup(a).bayes else "map",
             **dict(zip(("tuned_kind", "tuned_n"), tuning_point(profile, k, n, ds))), **tuned(profile, a, k, n, ds, r)}
            for a, k, n, ds, r in tuned_families(profile)]
    return pd.DataFrame(rows)


def arms(profile: Profile, approach: str, task: str = "transfer") -> list[tuple[str, tuple[int, ...]]]:
    """(regime, seeds) of every arm of ``approach``: a sampler runs in both temperature regimes, at T = 1 with
    ``t1_seeds``; MAP runs once, with ``seeds``."""
    if not lookup(approach, task).bayes:
        return [("T1", profile.seeds)]
    return [("T1", profile.t1_seeds), ("cold", profile.seeds)]


# ------------------------------------------------------------------------------------------------ studies

def rank_ablation(profile: Profile, kind: str = "ssl") -> pd.DataFrame:
    """C2 at ``study_n``: Bayes + learned prior at every rank and the isotropic learned-mean prior, both in both
    temperature regimes, and MAP + learned at every rank at its mid-slope lambda (where the prior still pulls)."""
    base = dict(n_train=profile.study_n, dataset="cifar10")
    settings = [setting(profile, "bayes_learned", kind, regime, rank=r, seed=s, **base)
                for regime, seeds in arms(profile, "bayes_learned") for r in profile.ranks for s in seeds]
    mid = mid_slope(profile, kind, profile.study_n)
    settings += [{"approach": "map_learned", "prior_kind": kind, **mid, "rank": r, "seed": s, **base}
                 for r in profile.ranks for s in profile.seeds]
    settings += [setting(profile, "bayes_isotropic", kind, regime, seed=s, **base)
                 for regime, seeds in arms(profile, "bayes_isotropic") for s in seeds]
    return run_settings(profile, "transfer", settings, desc="C2 rank ablation")


def scale_study(profile: Profile, kind: str = "ssl") -> pd.DataFrame:
    """C3 at ``study_n``: MAP and Bayes (T = 1) with the learned prior over lambda on the test split, every seed of
    the arm (:func:`arms`: 5 for the sampler at T = 1), on
    ``scales`` (finer than the validation sweeps' ``tuning_scales``) widened at its spacing to cover the range each
    approach's validation sweep ended with, and extended until the best lambda is interior."""
    rows = []
    for approach in ("map_learned", "bayes_learned"):
        s = setting(profile, approach, kind, n_train=profile.study_n)
        if approach == "map_learned":
            _, searched = scale_sweep(profile, kind, profile.study_n)
        else:
            _, searched, _ = bayes_width_sweep(profile, approach, kind, profile.study_n)
        grid = widened(profile.scales, min(searched), max(searched))
        rows.append(sweep(profile, s, "scale", grid, f"C3 scale sweep ({approach})",
                          seeds=dict(arms(profile, approach))["T1"])[0])     # 5 seeds for the T = 1 sampler
    return pd.concat(rows, ignore_index=True)


def widened(scales: Iterable[float], low: float, high: float) -> list[float]:
    """The log grid ``scales`` extended at its own spacing until it covers [low, high]."""
    grid = sorted(scales)
    step = grid[1] / grid[0]
    if step <= 1.01:
        raise ValueError(f"scales must be a log grid of distinct values, got {tuple(scales)}")
    while grid[0] > low * 1.01:
        grid.insert(0, grid[0] / step)
    while grid[-1] < high / 1.01:
        grid.append(grid[-1] * step)
    return grid


def five_way(profile: Profile, dataset: str = "cifar10", kinds: Iterable[str] = KINDS) -> pd.DataFrame:
    """C4-C6: the five approaches (learned ones per prior kind; samplers in both temperature regimes) at every
    training-set size of ``dataset`` (:func:`sizes`), with the hyperparameters tuned for that size."""
    settings = []
    for n in sizes(profile, dataset):
        for approach in FIVE_WAY:
            for kind in (kinds if lookup(approach).init == "pretrained" else ("none",)):
                for regime, seeds in arms(profile, approach):
                    settings += [setting(profile, approach, kind, regime, n_train=n, seed=seed, dataset=dataset)
                                 for seed in seeds]
    return run_settings(profile, "transfer", settings, desc=f"C4-C6 five-way ({dataset})")


def map_mid_slope(profile: Profile, dataset: str = "cifar10", kinds: Iterable[str] = KINDS) -> pd.DataFrame:
    """MAP + learned prior at its mid-slope lambda (:func:`.tuning.mid_slope`: where the prior still pulls) at every
    training-set size, beside the five-way study's MAP at the validation-best lambda."""
    settings = [{"approach": "map_learned", "prior_kind": kind, **mid_slope(profile, kind, n, dataset), "n_train": n,
                 "seed": seed, "dataset": dataset} for n in profile.train_sizes for kind in kinds for seed in profile.seeds]
    return run_settings(profile, "transfer", settings, desc=f"MAP at mid-slope lambda ({dataset})")


def temperature_ablation(profile: Profile, kind: str = "ssl") -> pd.DataFrame:
    """Bayes + learned prior at ``study_n`` over the profile's temperatures (the authors' code ran at T ~ 0), at the
    prior width tuned for Bayes at T = 1 and at the (wider) one tuned for MAP. The authors' code runs one
    cosine-annealed SGLD pass at T ~ 4e-8 (its ``cyclic_lr`` cannot be set from its arguments and its SGLD step has no
    noise switch), closest to MAP at a MAP-like width; the T ~ 0 rows here are the cyclical sampler without noise."""
    widths = {"T1": setting(profile, "bayes_learned", kind, "T1"), "cold": setting(profile, "bayes_learned", kind, "cold")}
    settings = [w | dict(n_train=profile.study_n, seed=s, temperature=t)
                for w in widths.values() for t in profile.temperatures for s in profile.seeds]
    return run_settings(profile, "transfer", settings, desc="temperature ablation")


def deep_ensemble(profile: Profile, kind: str = "ssl", equal_compute: bool = False) -> pd.DataFrame:
    """C10 at ``study_n``: ``bma_samples`` SGD-transfer members per seed (member 0 is the five-way run), each trained
    for the full budget as the paper does; ``equal_compute``: one member per kept sampler cycle, each trained for
    1/m of the budget, so the m members together take the sampler's steps (m = the sampler's kept cycles)."""
    s = setting(profile, "sgd_transfer", kind, n_train=profile.study_n)
    if equal_compute:
        members = profile.cycles - (1 if profile.cycles > 1 else 0)
        s |= {"steps": profile.steps_for(profile.study_n) // members}
    else:
        members = profile.bma_samples
    settings = [s | {"seed": seed, "member": m} for seed in profile.seeds for m in range(members)]
    return run_settings(profile, "transfer", settings,
                        desc=f"C10 deep ensemble{' at equal compute' if equal_compute else ''}")


def ensemble_metrics(profile: Profile, kind: str = "ssl", equal_compute: bool = False) -> pd.DataFrame:
    """C10: per seed, the metrics of a deep ensemble (the mean of its members' test probabilities)."""
    return metrics_of_ensembles(profile, deep_ensemble(profile, kind, equal_compute))


def metrics_of_ensembles(profile: Profile, members: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the metrics of the ensemble of its ``members`` (runs; the mean of their test probabilities)."""
    return pd.DataFrame([{"seed": seed, "members": int((members.seed == seed).sum()),
                          "steps_per_member": int(members.steps.iloc[0]), **classification_metrics(probs, labels)}
                         for seed, (probs, labels) in ensemble_predictions(profile, members).items()])


SEGMENTATION = (("sgd_transfer", "supervised"), ("bayes_nonlearned", "supervised"), ("bayes_learned", "supervised"),
                ("bayes_learned", "ssl"), ("map_learned", "supervised"), ("map_learned", "ssl"))


def segmentation_study(profile: Profile) -> pd.DataFrame:
    """C9: every approach and prior of ``SEGMENTATION`` with its tuned values (samplers in both temperature regimes,
    at T = 1 with ``t1_seeds``), on CamVid test."""
    settings = [dict(approach=a, prior_kind=k, seed=s, **tuned_segmentation(profile, a, k, regime))
                for a, k in SEGMENTATION for regime, seeds in arms(profile, a, "segmentation") for s in seeds]
    return run_settings(profile, "segmentation", settings, desc="C9 segmentation")


def segmentation_sweeps(profile: Profile) -> pd.DataFrame:
    """The validation runs behind every segmentation approach's tuned values (:func:`.tuning.segmentation_sweep`), with
    ``setting`` (the approach and, for a learned prior, its kind), ``swept`` (the hyperparameter the runs chose) and
    ``value`` (its value in the run): how notebook 08 shows the tuning."""
    frames = []
    for a, k in SEGMENTATION:
        rows, name = segmentation_sweep(profile, a, k)
        label = LABELS[a] + (f" ({k})" if lookup(a, "segmentation").prior == "learned" else "")
        frames.append(rows.assign(setting=label, swept=name, value=rows[name]))
    return pd.concat(frames, ignore_index=True)


# In the order a worker runs them by default: notebook 09's learning curves first (they choose the budgets the others
# run at, once profiles.py holds them), its sampler budgets, the third protocol (each arm's retuning on the holdout set,
# notebook 09's third amendment, as its test runs first need it: cold regime first; `retune` then finds every arm
# tuned), then all of notebook 05's grids (the headline: the five-way comparison, C4-C8,
# the ensembles of C10 built on its runs, Fashion-MNIST), so that every session of a grid that spans several ends with
# the claims most read; notebook 08's grid, the costliest per claim, last.
STAGES: dict[str, Callable[[Profile], object]] = {
    "budget": lambda p: (learning_curves(p), segmentation_curves(p)), "sampler_budget": sampler_curves,
    "own_budget": own_budget_runs, "retune": retune_all,
    "five_way": five_way, "C10": deep_ensemble,
    "C10_equal": lambda p: deep_ensemble(p, equal_compute=True), "mid_slope": map_mid_slope,
    "temperature": temperature_ablation, "fashion": lambda p: five_way(p, "fashion-mnist", kinds=("ssl",)),
    "C3": scale_study, "C2": rank_ablation, "E1": learned_scale_study, "E1_confirm": confirm,
    "segmentation": segmentation_study,
}


def stage_dataset(stage: str) -> str:
    """The transfer dataset whose tuned values ``stage`` reads (segmentation reads CIFAR-10's cold temperatures)."""
    return "fashion-mnist" if stage == "fashion" else "cifar10"


def run_profile(profile: Profile, worker: int = 0, stages: Iterable[str] = tuple(STAGES),
                any_budget: bool = False) -> None:
    """Each of ``stages``, every tuning family (in ``worker``'s order) before the first stage that is not notebook
    09's budget curves: a profile's downstream grids. Stops at once, before any run, when a prior is missing
    (:func:`.pretrain.require_priors` names the command that builds it), and before the first stage after the budget
    curves while the profile does not hold the budgets they chose (unless ``any_budget``)."""
    require_priors(profile)
    tuned_yet: set[str] = set()                     # datasets whose families are tuned
    for stage in stages:
        if stage != "budget":                       # the budget curves have fixed hyperparameters; the rest are tuned
            if not tuned_yet and not any_budget:    # ... and trained at the budgets the curves chose
                require_budgets(profile)
            if (dataset := stage_dataset(stage)) not in tuned_yet:   # Fashion-MNIST's just before its own stage
                for a, k, n, ds, r in tuned_families(profile, worker, dataset):
                    print(ds, n, a, k, r, tuned(profile, a, k, n, ds, r), flush=True)
                tuned_yet.add(dataset)
        STAGES[stage](profile)


def run_worker(profile_name: str, index: int, stages: Iterable[str] = tuple(STAGES), any_budget: bool = False) -> None:
    """One worker of a launched job array (:mod:`.launch`): worker ``index`` starts on tuning order
    ``index % len(TUNE_ORDERS)`` and, like every worker, claims runs from the shared grids until all are done."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_profile(get_profile(profile_name), index % len(TUNE_ORDERS), stages, any_budget)


def _submit(args, stages: list[str]) -> None:
    """Submit ``args.workers`` workers (default 1) as a SLURM job array and say how to follow them."""
    args.workers = args.workers or 1
    profile = get_profile(args.profile)
    require_priors(profile)                 # before queueing 32 jobs that would each stop at once
    folder = results_dir(profile) / "slurm"
    params = slurm_parameters(args.workers, args.partition, args.gpus_per_worker, args.cpus_per_worker, args.mem_gb,
                              args.timeout_min)
    jobs = launch(slurm_executor(folder, **params), args.workers,
                  functools.partial(run_worker, profile.name, stages=stages, any_budget=args.any_budget))
    print(f"submitted {len(jobs)} workers (job array {jobs[0].job_id.split('_')[0]}); logs in {folder}; follow them "
          f"with `squeue -u $USER` and `tail -f {folder}/*_log.err`; resubmit the same command to resume")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.studies", description=__doc__.splitlines()[0])
    add_profile_argument(parser)
    parser.add_argument("--worker", type=int, default=None,
                        help="run as this one worker, in this process (its tuning order: the index modulo "
                             f"{len(TUNE_ORDERS)}); without it, start --workers worker processes")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local (default): --workers processes on this machine (logs in "
                             "results/<profile>/studies_<i>.log); slurm: a SLURM job array through submitit (README)")
    parser.add_argument("--workers", type=_positive, default=None,
                        help="how many workers (local default: the cores divided by --threads, here "
                             f"{default_workers()}; slurm default: 1)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="threads of each local worker (default: 1; a SLURM worker sets its own)")
    parser.add_argument("--partition", default=None, help="with --launcher slurm: the SLURM partition")
    parser.add_argument("--gpus-per-worker", type=int, default=0, help="with --launcher slurm: GPUs of each worker")
    parser.add_argument("--cpus-per-worker", type=int, default=4, help="with --launcher slurm: CPU cores of each")
    parser.add_argument("--mem-gb", type=int, default=32, help="with --launcher slurm: memory of each worker")
    parser.add_argument("--timeout-min", type=int, default=24 * 60,
                        help="with --launcher slurm: wall-time limit of each worker (resubmit to resume after it)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    parser.add_argument("--any-budget", action="store_true",
                        help="run the stages after notebook 09's curves at the profile's step budgets even where "
                             "notebook 09 has not chosen them (smoke tests, exploration)")
    parser.add_argument("--check", action="store_true",
                        help="only check that the grids can start (notebook 01's priors exist), then exit")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    if args.worker is not None and args.worker < 0:
        parser.error(f"--worker must be >= 0, got {args.worker}")
    # the workers' logs show each long run's progress (repro.experiments.transfer logs it every 10 % of its steps)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.check:
        body = lambda: require_priors(get_profile(args.profile))          # noqa: E731
    elif args.launcher == "slurm":
        body = lambda: _submit(args, stages)                               # noqa: E731
    elif args.worker is None:
        body = lambda: _start_local(args, stages)                          # noqa: E731
    else:
        body = lambda: _work(args, stages)                                 # noqa: E731
    return run_main(body, errors=(ValueError, RuntimeError, MissingPrerequisite))


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _work(args, stages: list[str]) -> None:
    """One local worker, in this process, until no run of ``stages`` is left to it."""
    if args.threads:
        torch.set_num_threads(args.threads)
    run_worker(args.profile, args.worker, stages, args.any_budget)
    log.info("worker %d: done, no run of %s left", args.worker, ",".join(stages))


def _start_local(args, stages: list[str]) -> None:
    """Start the local workers, say where their logs are and how to stop them, and wait for them; an error naming
    the workers that failed (each reported as it fails)."""
    profile = get_profile(args.profile)
    require_priors(profile)                 # before starting workers that would each stop at once
    threads = args.threads or 1
    workers = args.workers or default_workers(threads)
    folder = results_dir(profile)

    def command(i: int) -> list[str]:
        return [sys.executable, "-m", "repro.studies", "--profile", profile.name, "--worker", str(i),
                "--threads", str(threads), "--stages", ",".join(stages)] + (["--any-budget"] if args.any_budget else [])

    procs = launch_local(workers, threads, command, lambda i: folder / f"studies_{i}.log")
    print(f"started {workers} worker(s) of {threads} thread(s) on {cores()} core(s) (pids "
          f"{' '.join(str(p.pid) for p in procs)}); follow them with: tail -f {folder}/studies_*.log; stop them with: "
          f"kill {os.getpid()}", flush=True)
    failed = wait_all(procs, lambda i, code: print(f"worker {i} stopped with exit code {code}: see the end of "
                                                   f"{folder}/studies_{i}.log", flush=True))
    if failed:
        raise RuntimeError(f"worker(s) {failed} stopped with an error: see the end of {folder}/studies_<i>.log")
    print(f"all {workers} workers done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
