"""Workers of the downstream grids: on this machine, one process per group of cores (:func:`launch_local`), or on a
cluster through submitit (SLURM job arrays), not a scheduler of our own.

``python -m repro.studies --profile cpu`` starts :func:`default_workers` processes, each single-threaded by default, so
that every core works (``--workers`` and ``--threads`` override; ``make studies`` passes ``WORKERS=`` and
``THREADS=``); each leases runs from the shared grids (:mod:`repro.leases`), so every run is made once.

``python -m repro.studies --profile paper --launcher slurm --workers 32 --partition gpu --gpus-per-worker 1`` submits
32 workers as one job array; each is :func:`repro.experiments.workers.run_worker`, which leases runs from the shared
grid exactly as the local workers of ``make studies`` do (:mod:`repro.leases`: safe on a network filesystem; the runs
of a job that was killed are taken over once their lease expires). Resubmitting the same command resumes: finished runs
are read back, not trained again.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def cores() -> int:
    """The CPU cores this process may use: its affinity mask (``taskset``, cpusets), capped by a container's CPU
    quota (cgroup v2 ``cpu.max``, e.g. ``docker --cpus=2`` on a larger host)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass                                # no cgroup v2 quota here
    return n


def default_workers(threads: int = 1) -> int:
    """How many local workers keep every core busy: the cores divided by the threads of each (at least one)."""
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    return max(1, cores() // threads)


def launch_local(workers: int, threads: int, command: Callable[[int], list[str]],
                 log: Callable[[int], Path]) -> list[subprocess.Popen]:
    """Start ``command(0)``, ..., ``command(workers - 1)`` as processes of ``threads`` threads each (OpenMP and MKL
    pools sized by their environment), each appending its output to ``log(i)`` (a log is never overwritten, so the
    last error of an earlier start stays readable). Returns the processes: :func:`wait_all` waits for them and stops
    them when this process is told to stop; only a SIGKILL to it leaves them running (``kill`` the pids it prints)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs: list[subprocess.Popen] = []
    try:
        for i in range(workers):
            path = log(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as out:        # the child holds its own descriptor
                procs.append(subprocess.Popen(command(i), stdout=out, stderr=subprocess.STDOUT, env=env,
                                              stdin=subprocess.DEVNULL))
    except BaseException:
        stop(procs)                             # no worker left running untracked
        raise
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the workers still running (each finishes nothing more; its leased run is taken over later)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait()


def wait_all(procs: list[subprocess.Popen], on_failure: Callable[[int, int], None]) -> list[int]:
    """Wait for every worker; ``on_failure(index, exit code)`` as soon as one fails (not after the others end).
    Returns the indices that failed. SIGTERM or SIGINT to this process stops the workers first."""
    def forward(signum, frame):
        stop(procs)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    failed, running = [], dict(enumerate(procs))
    try:
        while running:
            for i, p in list(running.items()):
                if (code := p.poll()) is not None:
                    del running[i]
                    if code:
                        failed.append(i)
                        on_failure(i, code)
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return failed


def slurm_parameters(workers: int, partition: str | None, gpus_per_worker: int, cpus_per_worker: int,
                     mem_gb: int, timeout_min: int, name: str = "repro") -> dict[str, Any]:
    """submitit's parameters for a job array of ``workers`` single-task workers (all of them running at once)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    params = dict(name=name, timeout_min=timeout_min, nodes=1, tasks_per_node=1, cpus_per_task=cpus_per_worker,
                  gpus_per_node=gpus_per_worker, mem_gb=mem_gb, slurm_array_parallelism=workers)
    if partition:
        params["slurm_partition"] = partition
    return params


def slurm_executor(folder: Path, **params: Any):
    """A submitit executor for SLURM with ``params``; one clear error where SLURM is not installed."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as e:              # submitit looks for srun / sbatch
        raise RuntimeError(f"cannot submit to SLURM from this machine ({e}); run it on the cluster's login node, "
                           f"or use --launcher local") from None
    executor.update_parameters(**params)
    return executor


def launch(executor, workers: int, worker: Callable[[int], Any]) -> Sequence:
    """Submit ``worker(0)``, ..., ``worker(workers - 1)`` as one job array on a submitit ``executor``; the jobs."""
    return executor.map_array(worker, range(workers))
