"""Run the study's notebooks headlessly through papermill: ``python -m repro.reproduce --profile cpu``.

Executed notebooks go to ``results/<profile>/notebooks/``. Finished work inside a notebook (priors, runs)
is cached by ``repro`` itself, so re-running is cheap. A failing notebook stops the batch with a non-zero
exit naming the notebook and cell; its partially executed copy is kept for inspection. Every execution appends
its wall and CPU time (the kernel's, all threads and loader workers included) to ``notebooks/timings.csv``.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import resource
import sys
import time
from pathlib import Path

from .profiles import PROFILES, Profile, get_profile, results_dir
from .report import CLAIMS

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PRIORS_NOTEBOOK = "01_prior_fitting"        # builds the priors every claim uses
TIMING_FIELDS = ["notebook", "profile", "started_at", "wall_s", "cpu_s", "ok"]


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


def notebooks_for(claims: list[str] | None) -> list[str]:
    """Notebooks to run for ``claims`` (all present notebooks when None), without repeats, in order."""
    present = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not claims:
        return present
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claim id(s) {unknown}; valid: {', '.join(CLAIMS)}")
    missing = [c for c in claims if CLAIMS[c][2] not in present]
    if missing:
        raise ValueError(f"claim(s) {missing} have no notebook yet; implemented: "
                         f"{', '.join(c for c, v in CLAIMS.items() if v[2] in present)}")
    return sorted({PRIORS_NOTEBOOK} | {CLAIMS[c][2] for c in claims})


def run(profile: Profile, claims: list[str] | None = None) -> int:
    """Execute the notebooks of ``claims`` (every notebook when None) on ``profile``; 0 when all succeeded."""
    import papermill as pm

    out_dir = results_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = notebooks_for(claims)
    for i, name in enumerate(names, 1):
        out = out_dir / f"{name}.ipynb"
        print(f"[{i}/{len(names)}] {name} (profile {profile.name}) ...", flush=True)
        started, t0, cpu0 = datetime.datetime.now(datetime.timezone.utc), time.time(), _children_cpu_s()
        error = None
        try:
            pm.execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out, parameters={"profile": profile.name},
                                cwd=str(NOTEBOOK_DIR), progress_bar=False)
        except pm.PapermillExecutionError as e:
            error = e
        wall, cpu = time.time() - t0, _children_cpu_s() - cpu0
        _log_timing(out_dir / "timings.csv", {"notebook": name, "profile": profile.name,
                                              "started_at": started.isoformat(timespec="seconds"),
                                              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "ok": error is None})
        if error is not None:
            print(f"FAILED: notebook {name} failed in cell {error.cell_index} (execution count {error.exec_count}): "
                  f"{error.ename}: {error.evalue}\n  partially executed notebook kept at {out}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(names)}] {name} done in {wall:.0f} s wall, {cpu:.0f} s CPU -> {out}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: $REPRO_PROFILE or cpu)")
    parser.add_argument("--claims", default=None, help="comma-separated claim ids, e.g. C1,C2 (default: every notebook)")
    args = parser.parse_args(argv)
    try:
        claims = [c.strip().upper() for c in args.claims.split(",")] if args.claims else None
        return run(get_profile(args.profile), claims)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
