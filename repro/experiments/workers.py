"""The workers that make the downstream grids' runs: ``python -m repro.studies --profile cpu`` (``make studies``).

The only code that trains a downstream run. A worker takes the jobs of its stages (:func:`.studies.jobs`) one by one
and *completes* each (:func:`complete`): it calls the job on a fresh snapshot of the grids (:class:`.grid.Recorded`),
makes the runs the job lacks (:class:`.grid.MissingRuns`) through the resumable grid (:func:`repro.runner.run_grid`,
shared: several workers lease its runs one by one), and calls it again, until the job returns. A failed run found at
the worker's start is retried once. ``python -m repro.studies --profile cpu --worker 1`` is one such process;
``--launcher slurm`` submits many to a cluster (:mod:`.launch`).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable, Iterable, Sequence

import torch

from ..analysis.predictions import predictions_dir
from ..cli import add_profile_argument, run_main
from ..profiles import Profile, get_profile, results_dir
from ..runner import MissingPrerequisite, run_grid
from .approaches import TASKS
from .budget import require_budgets
from .grid import MissingRuns, Recorded, as_run, failed_keys, grid_csv
from .launch import cores, default_workers, launch, launch_local, slurm_executor, slurm_parameters, wait_all
from .pretrain import require_priors
from .segmentation import run_segmentation
from .spec import RunSpec
from .studies import DEFAULT_ORDER, STAGES, UNTUNED, jobs
from .transfer import run_transfer
from .tuning import TUNE_ORDERS

log = logging.getLogger(__name__)

RUN: dict[str, Callable[[Profile, RunSpec], dict]] = {"transfer": run_transfer, "segmentation": run_segmentation}
assert set(RUN) == set(TASKS)


def run_specs(profile: Profile, task: str, specs: Sequence[RunSpec], desc: str | None = None,
              retry: Iterable[str] = ()) -> None:
    """Make every run of ``specs`` on ``task``'s grid that has no row, or a failed one whose key is in ``retry``,
    shared with the other workers (each run leased by one)."""
    run_grid([as_run(s) for s in specs], lambda r: RUN[task](profile, RunSpec.from_record(task, r.params).current()),
             grid_csv(profile, task), predictions_dir=predictions_dir(profile, task), desc=desc, shared=True,
             retry_failed=set(retry))


class Worker:
    """Completes jobs on one profile's grids; retries, once, the failed runs recorded when it started."""

    def __init__(self, profile: Profile):
        self.profile, self.retry = profile, failed_keys(profile)

    def complete(self, job: Callable[[Recorded], object]) -> object:
        """``job``'s answer, once every run it needs is made."""
        while True:
            try:
                return job(Recorded(self.profile, retry=self.retry))
            except MissingRuns as missing:
                run_specs(self.profile, missing.task, missing.specs, missing.desc, retry=self.retry)
                self.retry -= {s.key for s in missing.specs}


def run_profile(profile: Profile, worker: int = 0, stages: Iterable[str] = DEFAULT_ORDER,
                any_budget: bool = False) -> None:
    """Complete every job of ``stages`` (:func:`.studies.jobs`: each tuned stage's tuning families first, in
    ``worker``'s order): a profile's downstream grids. Stops at once, before any run, when a prior is missing
    (:func:`.pretrain.require_priors` names the command that builds it), and before the first stage after the budget
    curves while the profile does not hold the budgets they chose (unless ``any_budget``)."""
    require_priors(profile)
    w, checked = Worker(profile), any_budget
    for stage, job in jobs(profile, stages, worker):
        if stage not in UNTUNED and not checked:      # trained at the budgets notebook 09's curves chose
            require_budgets(profile)
            checked = True
        w.complete(job)
    log.info("stages %s: every run recorded", ",".join(stages))


def run_worker(profile_name: str, index: int, stages: Iterable[str] = DEFAULT_ORDER, any_budget: bool = False) -> None:
    """One worker of a launched job array (:mod:`.launch`): worker ``index`` starts on tuning order
    ``index % len(TUNE_ORDERS)`` and, like every worker, leases runs from the shared grids until all are done."""
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
    submitted = launch(slurm_executor(folder, **params), args.workers,
                       functools.partial(run_worker, profile.name, stages=stages, any_budget=args.any_budget))
    print(f"submitted {len(submitted)} workers (job array {submitted[0].job_id.split('_')[0]}); logs in {folder}; follow them "
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
    parser.add_argument("--stages", default=",".join(DEFAULT_ORDER), help=f"comma-separated, from {', '.join(STAGES)}")
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
