"""Past one machine: leases, workers launched through submitit, and the dry run's cost table."""
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from repro import leases
from repro.experiments import launch
from repro.runner import Run, load_results, run_grid

REPO = Path(__file__).resolve().parents[1]


def write_lease(folder: Path, key: str, attempt: int, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = folder / f"{key}.{attempt}"
    path.write_text(json.dumps({"host": host, "pid": pid}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_lease_on_another_host_is_taken_over_only_after_it_expires(tmp_path):
    write_lease(tmp_path, "k", 0, "node-17", 4242, age_s=10)
    assert leases.lease(tmp_path, "k", lease_s=60) is None               # heartbeat 10 s ago: still held
    write_lease(tmp_path, "k", 0, "node-17", 4242, age_s=120)
    held = leases.lease(tmp_path, "k", lease_s=60)                        # silent for 2 min: stale
    assert held is not None and held.path.name == "k.1"
    assert leases.lease(tmp_path, "k", lease_s=60) is None               # now ours: nobody else gets it
    held.release()
    assert list(tmp_path.iterdir()) == []                                 # every attempt file removed


def test_a_lease_of_a_dead_local_process_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lease(tmp_path, "k", 3, socket.gethostname(), dead.pid, age_s=0)
    held = leases.lease(tmp_path, "k", lease_s=3600)
    assert held is not None and held.path.name == "k.4"
    held.release()


def test_the_heartbeat_keeps_a_lease_fresh(tmp_path):
    held = leases.lease(tmp_path, "k", heartbeat_s=0.05)
    then = time.time() - 1000
    os.utime(held.path, (then, then))
    time.sleep(0.3)
    assert time.time() - held.path.stat().st_mtime < 5
    held.release()


TAKEOVER = r"""
import sys, time
from pathlib import Path
from repro import leases
folder, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
held = leases.lease(folder, "k", lease_s=60)
print("won" if held else "lost")
time.sleep(0.5)
"""


def test_only_one_of_many_processes_takes_over_a_stale_lease(tmp_path):
    folder, go = tmp_path / "leases", tmp_path / "go"
    folder.mkdir()
    write_lease(folder, "k", 0, "node-17", 4242, age_s=3600)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", TAKEOVER, str(folder), str(go)], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    time.sleep(1.0)
    go.touch()
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["lost"] * 7 + ["won"]


def _grid_worker(csv: str, log: str, n: int, index: int) -> None:
    """A worker of the test grid: each run logs its start and its end with the worker's pid."""
    def fn(run):
        with open(log, "a") as f:
            f.write(f"start {run['i']} {os.getpid()}\n")
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write(f"done {run['i']} {os.getpid()}\n")
        return {"acc": run["i"] / n}
    run_grid([Run("cluster", {"i": i}) for i in range(n)], fn, csv, shared=True, poll_s=0.05)


def test_submitit_workers_finish_a_grid_exactly_once_when_one_is_killed(tmp_path):
    submitit = pytest.importorskip("submitit")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])      # the jobs unpickle this module's worker
    csv, log, n = tmp_path / "grid.csv", tmp_path / "calls.log", 40
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=5)
    jobs = launch.launch(executor, 4, functools.partial(_grid_worker, str(csv), str(log), n))
    deadline = time.time() + 120
    while not (log.exists() and "start" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    victim = int(log.read_text().split()[2])                           # the pid that started the first run
    os.kill(victim, signal.SIGKILL)                                      # mid-run
    while not all(j.done() for j in jobs) and time.time() < deadline:
        time.sleep(0.2)
    assert all(j.done() for j in jobs), "the workers did not finish"
    lines = [line.split() for line in log.read_text().splitlines()]
    finished = sorted(int(i) for what, i, _ in lines if what == "done")
    assert finished == list(range(n))                                   # every run completed exactly once
    mine = {what: {i for w, i, pid in lines if w == what and int(pid) == victim} for what in ("start", "done")}
    (killed_in,) = mine["start"] - mine["done"]                         # the run the victim was killed in ...
    assert [int(pid) != victim for w, i, pid in lines if w == "done" and i == killed_in] == [True]   # ... done elsewhere
    df = load_results(csv)
    assert len(df) == n and df.key.is_unique and (df.status == "ok").all()
    assert len({pid for what, _, pid in lines if what == "done"}) >= 3  # the survivors shared the work


def test_local_workers_of_one_thread_each_make_every_run_exactly_once(tmp_path):
    csv, log, n, workers = tmp_path / "grid.csv", tmp_path / "calls.log", 30, 3
    script = (f"import os, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_cluster as t; "
              f"print('threads', os.environ['OMP_NUM_THREADS']); t._grid_worker({str(csv)!r}, {str(log)!r}, {n}, 0)")
    logs = lambda i: tmp_path / "logs" / f"worker_{i}.log"                 # noqa: E731
    for start in range(2):                  # the second start finds every run done, and appends to the same logs
        procs = launch.launch_local(workers, 1, lambda i: [sys.executable, "-c", script], logs)
        assert [p.wait(timeout=120) for p in procs] == [0] * workers
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for what, i, _ in lines if what == "done") == list(range(n))     # each run exactly once
    assert len({pid for what, _, pid in lines if what == "done"}) >= 2                  # and the workers shared them
    assert all(logs(i).read_text().count("threads 1\n") == 2 for i in range(workers))
    df = load_results(csv)
    assert len(df) == n and df.key.is_unique and (df.status == "ok").all()


def test_a_failed_worker_is_reported_at_once_and_the_others_are_awaited(tmp_path):
    fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    slow = [sys.executable, "-c", f"import time; time.sleep(2); open({str(tmp_path / 'slow')!r}, 'w')"]
    procs = launch.launch_local(2, 1, lambda i: fail if i == 0 else slow, lambda i: tmp_path / f"{i}.log")
    reported = []
    failed = launch.wait_all(procs, lambda i, code: reported.append((i, code, (tmp_path / "slow").exists())))
    assert failed == [0] and reported == [(0, 3, False)] and (tmp_path / "slow").exists()


@pytest.mark.parametrize("flag", ["--workers", "--threads"])
def test_worker_and_thread_counts_must_be_positive(flag, capsys):
    from repro.experiments import workers
    with pytest.raises(SystemExit):
        workers.main(["--profile", "smoke", flag, "0"])
    assert "must be an integer >= 1, got '0'" in capsys.readouterr().err


def test_the_default_worker_count_fills_the_cores(monkeypatch, tmp_path):
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(launch, "Path", lambda p: tmp_path / "cpu.max")     # no quota
    assert launch.cores() == 16
    (tmp_path / "cpu.max").write_text("400000 100000\n")                    # a container of 4 CPUs
    assert launch.cores() == 4
    monkeypatch.setattr(launch, "cores", lambda: 16)
    assert [launch.default_workers(t) for t in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        launch.default_workers(0)
    with pytest.raises(ValueError, match="--workers must be >= 1, got 0"):
        launch.launch_local(0, 1, lambda i: ["true"], lambda i: Path("log"))


@pytest.mark.parametrize("argv, workers", [([], 4), (["--workers", "3"], 3), (["--threads", "2"], 2)])
def test_the_studies_command_starts_its_workers_and_waits_for_them(monkeypatch, tmp_path, argv, workers, capsys):
    from repro.experiments import workers as command
    started = []

    class Done:
        pid = 12345

        def poll(self):
            return 0

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(command, "require_priors", lambda p: None)
    monkeypatch.setattr(command, "default_workers", lambda threads=1: 4 // threads)
    monkeypatch.setattr(command, "launch_local", lambda n, t, command, log: started.append(
        (t, [command(i) for i in range(n)], [log(i).name for i in range(n)])) or [Done()] * n)
    assert command.main(["--profile", "smoke", "--stages", "C2"] + argv) == 0
    ((threads, commands, logs),) = started
    assert len(commands) == workers and threads == (2 if "--threads" in argv else 1)
    assert [c[c.index("--worker") + 1] for c in commands] == [str(i) for i in range(workers)]
    assert all(c[c.index("--stages") + 1] == "C2" and c[c.index("--threads") + 1] == str(threads) for c in commands)
    assert logs == [f"studies_{i}.log" for i in range(workers)]
    assert f"started {workers} worker(s) of {threads} thread(s)" in capsys.readouterr().out


def test_slurm_parameters_and_a_clear_error_without_slurm(tmp_path, capsys):
    params = launch.slurm_parameters(32, "gpu", 1, 8, 64, 720)
    assert params == dict(name="repro", timeout_min=720, nodes=1, tasks_per_node=1, cpus_per_task=8,
                          gpus_per_node=1, mem_gb=64, slurm_array_parallelism=32, slurm_partition="gpu")
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        launch.slurm_parameters(0, None, 0, 1, 1, 1)
    if not any((Path(p) / "srun").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        with pytest.raises(RuntimeError, match="cannot submit to SLURM from this machine"):
            launch.slurm_executor(tmp_path, **params)


def test_the_dry_run_lists_runs_the_workers_then_record_and_trains_nothing(smoke_priors_dir, tmp_path, monkeypatch):
    """Planning deep_ensemble's grid (its tuning first) trains nothing; every run it lists is among those a worker
    then records, and afterwards nothing is left; rates come from those recorded runs."""
    import shutil

    from repro.experiments import costs, grid, studies, workers
    from repro.profiles import get_profile

    shutil.copytree(smoke_priors_dir, tmp_path / "results")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    P = get_profile("smoke")
    monkeypatch.setattr(costs, "jobs", lambda profile, stages: [("C10", studies.deep_ensemble)])
    planned, waiting = costs.plan(P, ["05_five_way"])
    assert len(planned) > 0 and set(planned.basis) == {"none"}          # a CPU profile without runs: not priced
    assert waiting.jobs_waiting.tolist() == [1]
    assert not grid.grid_csv(P).exists()                                 # nothing trained
    workers.Worker(P).complete(studies.deep_ensemble)
    recorded = load_results(grid.grid_csv(P))
    assert set(planned.key) < set(recorded.key) and (recorded.status == "ok").all()
    planned, waiting = costs.plan(P, ["05_five_way"])
    assert planned.empty and waiting.jobs_waiting.tolist() == [0]        # now nothing is left to do
    check = costs.timing_check(P).iloc[0]                 # the last runs predicted from the others' rates
    assert check.fitted_on + check.predicted_runs == len(recorded) and abs(check.error) < 0.5


def test_a_dry_run_plans_a_stage_several_notebooks_read_once(monkeypatch):
    """05, 06 and 07 read the five-way grid: the dry run asks for its jobs once, as 05's, and 06 adds only C2's."""
    from repro.experiments import costs
    from repro.profiles import get_profile

    asked = []
    monkeypatch.setattr(costs, "jobs", lambda profile, stages: asked.append(stages) or [])
    monkeypatch.setattr(costs, "rates", lambda profile: None)
    costs.plan(get_profile("smoke"), ["05_five_way", "06_calibration", "07_ood_shift"])
    assert asked[0] == costs.NOTEBOOK_STAGES["05_five_way"] and asked[1:] == [("C2",)]


def test_a_worker_retries_each_failure_it_finds_at_its_start_once(tmp_path, monkeypatch):
    """A failed run is missing to a worker that found it failed at its start, until it has tried it once; then it is
    read as what it is (a study decides without it), and the next worker tries it again."""
    from repro.experiments import grid, workers
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    P = get_profile("smoke")
    spec = grid.spec_of(P, "transfer", dict(approach="map_nonlearned"))          # a random init: no prior needed
    grid.grid_csv(P).parent.mkdir(parents=True)
    pd.DataFrame([{"study": "transfer", **spec.record(), "key": spec.key, "status": "failed: DivergenceError: nan"}]
                 ).to_csv(grid.grid_csv(P), index=False)
    made = []
    monkeypatch.setattr(workers, "run_specs", lambda profile, task, specs, desc=None, retry=(): made.append(
        [s.key for s in specs if s.key in retry]))
    job = lambda rec: rec.rows("transfer", [dict(approach="map_nonlearned")])   # noqa: E731
    worker = workers.Worker(P)
    assert worker.complete(job).status.iloc[0].startswith("failed") and made == [[spec.key]]
    worker.complete(job)
    assert made == [[spec.key]]                                   # not again by this worker ...
    assert workers.Worker(P).retry == {spec.key}                  # ... but by the next


def test_each_asks_for_the_next_run_of_every_chain_at_once(tmp_path, monkeypatch):
    """Chains that are sequential each (a fit's doubling per seed) must not make a worker wait on one another: one
    MissingRuns holds every call's missing runs (asked for twice: once); once recorded, each call's answer in order."""
    from repro.experiments.grid import MissingRuns, Recorded
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    rec = Recorded(get_profile("smoke"))

    def chain(rec, seed):
        return rec.rows("transfer", [dict(approach="map_nonlearned", prior_kind="none", seed=seed, n_train=100)])

    def chains(*seeds):
        return [functools.partial(chain, seed=s) for s in seeds]

    with pytest.raises(MissingRuns) as missing:
        rec.each(chains(0, 1, 0))
    assert [s.seed for s in missing.value.specs] == [0, 1]
    monkeypatch.setattr(Recorded, "rows", lambda self, task, settings, desc=None: pd.DataFrame(settings))
    assert [r.seed.iloc[0] for r in rec.each(chains(1, 0))] == [1, 0]


def test_a_phase_asks_for_the_first_runs_of_every_arm_at_once(smoke_priors_dir, tmp_path, monkeypatch):
    """The third protocol's phase is one job over every arm's chain (tuning, budget check, test runs): a worker is
    offered every arm's first tuning runs together, not one arm's while the others wait."""
    import shutil

    from repro.experiments.grid import MissingRuns, Recorded
    from repro.experiments.own_budget import PHASES, phase_jobs
    from repro.profiles import get_profile

    shutil.copytree(smoke_priors_dir, tmp_path / "results")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    P = get_profile("smoke")
    (job,) = phase_jobs(P, "cold")
    with pytest.raises(MissingRuns) as missing:
        job(Recorded(P))
    asked = {(s.approach, s.n_train) for s in missing.value.specs}
    # the chains that start from nothing (the others start from an optimiser's choice): at every size at once
    assert asked == {(a, n) for a in ("sgd_transfer", "map_nonlearned") for n in P.sampler_budget_sizes}
    assert set(PHASES["cold"]) >= {"sgd_transfer", "map_nonlearned"}
