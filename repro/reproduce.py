"""Run the study's notebooks headlessly through papermill: ``python -m repro.reproduce --profile cpu``.

Executed notebooks go to ``results/<profile>/notebooks/``. Each is executed into ``results/<profile>/tmp/`` (git
ignores it) and moved over the one in ``notebooks/`` only when every cell succeeded, so a failed or interrupted run
never overwrites a committed notebook. A failing notebook stops the batch with a non-zero exit naming the notebook,
the cell and where its partial copy is. The notebooks read the downstream runs and train none: once notebook 01's
priors exist, the batch first has the workers (``python -m repro.studies``) make every run its notebooks' stages lack
(``--no-runs``: it reads what is recorded). Finished work (priors, runs, notebook 01's tables) is kept, so re-running
is cheap. ``--claims`` runs only the claims' notebooks, and notebook 01 only when
one of its outputs is missing. Every execution appends its wall and CPU time (the kernel's, all threads and loader
workers included) to ``notebooks/timings.csv``; the last successful one of each notebook gives the batch's ETA.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .cli import add_profile_argument, run_main
from .profiles import Profile, get_profile, results_dir
from .claims import CLAIMS

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PRIORS_NOTEBOOK = "01_prior_fitting"        # builds the priors every claim uses
TIMING_FIELDS = ["notebook", "profile", "started_at", "wall_s", "cpu_s", "ok"]
PROJECT_KERNEL = "repro"                    # what the notebooks name; `make setup` installs it in .venv


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children: the papermill kernels once they are shut down."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _log_timing(path: Path, row: dict) -> None:
    """Append one execution's row; the log keeps every run, so a cheap cached re-run never hides a full one."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TIMING_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def last_wall_s(path: Path, profile: Profile) -> dict[str, float]:
    """Notebook -> wall seconds of its last successful execution on ``profile`` (from ``timings.csv``)."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {r["notebook"]: float(r["wall_s"]) for r in csv.DictReader(f)
                if r.get("profile") == profile.name and r.get("ok") == "True"}


def parse_claims(text: str | None) -> list[str] | None:
    """``"C3,c4,,"`` -> ``["C3", "C4"]`` (case and empty items ignored); None or blank: every notebook."""
    claims = [c.strip().upper() for c in (text or "").split(",") if c.strip()]
    return claims or None


def notebooks_for(claims: list[str] | None, numbers: list[str] | None = None) -> list[str]:
    """Notebooks to run for ``claims`` and the notebooks ``numbers`` ("09"; all present notebooks when both are
    None), without repeats, in order."""
    present = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if numbers:
        by_number = {p[:2]: p for p in present}
        wanted = [f"{int(n):02d}" if n.isdigit() else n for n in numbers]
        unknown = [n for n, w in zip(numbers, wanted) if w not in by_number]
        if unknown:
            raise ValueError(f"unknown notebook(s) {unknown}; valid: {', '.join(by_number)}")
        return sorted({by_number[w] for w in wanted} | set(notebooks_for(claims) if claims else ()))
    if not claims:
        return present
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claim id(s) {unknown}; valid: {', '.join(CLAIMS)}")
    missing = [c for c in claims if CLAIMS[c].notebook not in present]
    if missing:
        raise ValueError(f"claim(s) {missing} have no notebook yet; implemented: "
                         f"{', '.join(c for c, v in CLAIMS.items() if v.notebook in present)}")
    return sorted({PRIORS_NOTEBOOK} | {CLAIMS[c].notebook for c in claims})


def priors_missing(profile: Profile) -> list[Path]:
    """Notebook 01's outputs that are not on disk, or (a prior) do not load: priors of every kind the profile fits,
    and its tables."""
    from .experiments.source_quality import outputs   # lazy: torch is needed only once a batch runs
    from .method.prior_files import unusable

    return [p for p in outputs(profile) if not p.exists() or (p.name.endswith("_prior.pt") and unusable(p))]


def kernel_name() -> str:
    """The project's kernel when it runs this interpreter's environment, else ``python3``, which jupyter_client
    starts with this interpreter: the batch runs in its own environment, with or without ``make setup``'s kernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(PROJECT_KERNEL).argv
    except NoSuchKernel:
        return "python3"
    python = shutil.which(argv[0]) if argv else None
    # compare the environments, not the interpreters: a venv's python is a symlink to the base one
    same = python is not None and Path(python).parent.resolve().parent == Path(sys.prefix).resolve()
    return PROJECT_KERNEL if same else "python3"


def _when(seconds: float) -> str:
    return (datetime.datetime.now() + datetime.timedelta(seconds=seconds)).strftime("%H:%M")


def _plan(names: list[str], expected: dict[str, float], timings: Path) -> str:
    """One line: how many notebooks, and when the batch should end by the recorded timings."""
    known = [expected[n] for n in names if n in expected]
    if not known:
        return f"{len(names)} notebook(s); no ETA: none has a successful run in {timings} yet"
    unknown = f", {len(names) - len(known)} never timed" if len(known) < len(names) else ""
    return (f"{len(names)} notebook(s); their last runs took {sum(known) / 60:.1f} min{unknown}: "
            f"ETA {_when(sum(known))}")


def _execute(profile: Profile, name: str, scratch: Path, kernel: str) -> Exception | None:
    """Execute ``name`` into ``scratch`` with papermill's cell progress bar; the execution error, if any."""
    import tempfile

    import papermill as pm
    from traitlets.config import Config

    # the kernel talks over local IPC sockets, not TCP: nothing leaves the machine (and ipykernel has no plain-text
    # TCP to warn about); the sockets live in a temporary folder, removed after the run
    with tempfile.TemporaryDirectory(prefix="repro-kernel-") as sockets:
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        try:
            pm.execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", scratch, parameters={"profile": profile.name},
                                cwd=str(NOTEBOOK_DIR), progress_bar=True, kernel_name=kernel, config=ipc)
        except pm.PapermillExecutionError as e:
            return e
    return None


def stages_of(names: list[str]) -> list[str]:
    """The stages of the downstream grids whose runs the notebooks ``names`` read, in the workers' order."""
    from .experiments.studies import NOTEBOOK_STAGES, STAGES      # lazy: --help needs no torch
    return [s for s in STAGES if any(s in NOTEBOOK_STAGES.get(n, ()) for n in names)]


BUDGET_NOTEBOOK = "09_training_budget"      # chooses the step budgets every later grid trains at


def make_runs(profile: Profile, names: list[str]) -> tuple[int, list[str]]:
    """Have the local workers make every run the stages of ``names`` lack (none: nothing starts): their exit code, and
    the notebooks that can run now. While notebook 09 has not settled the step budgets (a profile whose budgets its
    rule sets), only its learning curves are made, and only it and the notebooks without a grid run."""
    from .experiments.budget import mismatches
    from .experiments.grid import Recorded
    from .experiments.studies import NOTEBOOK_STAGES, UNTUNED, jobs
    from .runner import MissingPrerequisite

    stages = stages_of(names)
    if stages and profile.budget_rule and mismatches(profile):
        stages = [s for s in stages if s in UNTUNED]
        names = [n for n in names if n == BUDGET_NOTEBOOK or not NOTEBOOK_STAGES.get(n)]
        print(f"the step budgets are not settled yet: making notebook 09's learning curves only and running "
              f"{', '.join(names) or 'no notebook'}; once notebook 09 has chosen the budgets, set them in "
              f"repro/profiles.py and run this again", flush=True)
    rec = Recorded(profile)

    def complete(job) -> bool:
        try:
            job(rec)
        except MissingPrerequisite:        # runs missing (MissingRuns is one), or what the workers say how to make
            return False
        return True

    if not stages or all(complete(job) for _, job in jobs(profile, stages)):
        return 0, names
    print(f"making the runs of {', '.join(stages)} with the workers (logs: {results_dir(profile)}/studies_<i>.log) ...",
          flush=True)
    return subprocess.call([sys.executable, "-m", "repro.studies", "--profile", profile.name, "--stages",
                            ",".join(stages)]), names


def run(profile: Profile, claims: list[str] | None = None, numbers: list[str] | None = None,
        runs: bool = True) -> int:
    """Execute the notebooks of ``claims`` and ``numbers`` (every notebook when both are None) on ``profile``, the
    workers first making the runs they read (unless not ``runs``); 0 when all succeeded."""
    out_dir, scratch_dir = results_dir(profile) / "notebooks", results_dir(profile) / "tmp" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    names = notebooks_for(claims, numbers)
    if claims and PRIORS_NOTEBOOK in names and not priors_missing(profile):
        names.remove(PRIORS_NOTEBOOK)
        print(f"{PRIORS_NOTEBOOK}: skipped, its priors and tables exist (run without --claims to re-execute it)")
    expected, kernel = last_wall_s(out_dir / "timings.csv", profile), kernel_name()
    print(_plan(names, expected, out_dir / "timings.csv"), flush=True)
    i, pending = 0, runs
    while i < len(names):
        name, i = names[i], i + 1
        if pending and name != PRIORS_NOTEBOOK:      # the workers need notebook 01's priors, the others their runs
            pending = False
            code, runnable = make_runs(profile, names[i - 1:])
            if code:
                print(f"FAILED: the workers stopped with exit code {code}; no notebook after {PRIORS_NOTEBOOK} ran",
                      file=sys.stderr)
                return 1
            names = names[:i - 1] + runnable
            if i > len(names):
                break
            name = names[i - 1]
        out, scratch = out_dir / f"{name}.ipynb", scratch_dir / f"{name}.ipynb"
        eta = f"; last run {expected[name]:.0f} s, ETA {_when(expected[name])}" if name in expected else ""
        print(f"[{i}/{len(names)}] {name} (profile {profile.name}, kernel {kernel}{eta}) ...", flush=True)
        started, t0, cpu0 = datetime.datetime.now(datetime.timezone.utc), time.time(), _children_cpu_s()
        error = _execute(profile, name, scratch, kernel)
        wall, cpu = time.time() - t0, _children_cpu_s() - cpu0
        _log_timing(out_dir / "timings.csv", {"notebook": name, "profile": profile.name,
                                              "started_at": started.isoformat(timespec="seconds"),
                                              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "ok": error is None})
        if error is not None:
            print(f"FAILED: notebook {name} failed in cell {error.cell_index} (execution count {error.exec_count}): "
                  f"{error.ename}: {error.evalue}\n  partially executed notebook kept at {scratch}; {out} is unchanged",
                  file=sys.stderr)
            return 1
        os.replace(scratch, out)       # atomic: the committed notebook is either the old one or the finished one
        print(f"[{i}/{len(names)}] {name} done in {wall:.0f} s wall, {cpu:.0f} s CPU -> {out}", flush=True)
    from .report import reports, update_report
    if reports(profile):               # REPORT.md's generated blocks never lag the CSVs the notebooks just wrote
        print("REPORT.md", "updated" if update_report(profile) else "already up to date", flush=True)
    return 0


def dry_run(profile: Profile, claims: list[str] | None = None, numbers: list[str] | None = None) -> int:
    """Print what the notebooks of ``claims`` and ``numbers`` lack now and what it costs
    (:mod:`repro.experiments.costs`); train nothing."""
    import pandas as pd

    from .experiments import costs        # lazy: --help needs no torch

    names = notebooks_for(claims, numbers)
    recorded = last_wall_s(results_dir(profile) / "notebooks" / "timings.csv", profile)
    table = costs.cost_table(profile, names)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(f"Dry run on profile {profile.name}: per notebook and grid, the runs that can start now and their "
              f"estimated hours of one worker (divide by the number of workers for wall time), and the jobs still "
              f"waiting (a job whose next runs depend on these asks for them once these are recorded)\n")
        print(table.round(2).to_string(index=False))
        untimed = [n for n in names if n not in costs.NOTEBOOK_STAGES]
        print("\nNotebooks without a grid (their own work; last recorded wall time): " + ", ".join(
            f"{n} {recorded[n] / 3600:.2f} h" if n in recorded else f"{n} (never timed)" for n in untimed))
        bases = set(table.basis.str.split(", ").explode())
        if "assumed" in bases:
            print(f"\nBasis 'assumed': {costs.ASSUMPTION}.")
        if "none" in bases:
            print("\nBasis 'none': no run has been recorded on this CPU profile yet, so its runs are counted, not priced "
                  "(the per-step rate comes from the recorded runs; the GPU assumption is for a GPU profile only).")
        check = costs.timing_check(profile)
        if not check.empty:
            print("\nThe cost model tested out of sample (fitted on the earlier recorded runs, predicting the latest ones):")
            print(check.round(3).to_string(index=False))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.reproduce", description=__doc__.splitlines()[0])
    add_profile_argument(parser)
    parser.add_argument("--claims", default=None, metavar="IDS",
                        help="comma-separated claim ids, e.g. C1,C3 (any case): only their notebooks, and notebook 01 "
                             "only when its outputs are missing (default: every notebook)")
    parser.add_argument("--notebooks", default=None, metavar="NUMBERS",
                        help="comma-separated notebook numbers, e.g. 09 or 5,9: these notebooks (with --claims: and "
                             "the claims' notebooks)")
    parser.add_argument("--no-runs", action="store_true",
                        help="make no run: execute the notebooks on the runs recorded (a notebook whose runs are "
                             "missing stops, naming the command that makes them)")
    parser.add_argument("--dry-run", action="store_true",
                        help="train nothing: list per notebook and grid the runs still to do and their estimated "
                             "CPU- or GPU-hours (from the recorded timings, or a stated per-step assumption)")
    args = parser.parse_args(argv)

    numbers = [n.strip() for n in (args.notebooks or "").split(",") if n.strip()] or None

    def body() -> int:
        profile = get_profile(args.profile)
        if args.dry_run:
            return dry_run(profile, parse_claims(args.claims), numbers)
        from .data import checksums, data_dir      # lazy: --help needs no torch
        checksums.require_present(data_dir())      # a fresh clone stops here, in one line, saying how to fetch it
        return run(profile, parse_claims(args.claims), numbers, runs=not args.no_runs)
    return run_main(body, errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
