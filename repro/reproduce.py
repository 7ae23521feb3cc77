"""Run the study's notebooks headlessly through papermill: ``python -m repro.reproduce --profile cpu``.

Executed notebooks go to ``results/<profile>/notebooks/``. Finished work inside a notebook (priors, runs)
is cached by ``repro`` itself, so re-running is cheap. A failing notebook stops the batch with a non-zero
exit naming the notebook and cell; its partially executed copy is kept for inspection.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .profiles import PROFILES, get_profile, results_dir
from .report import CLAIMS

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PRIORS_NOTEBOOK = "01_prior_fitting"        # builds the priors every claim uses


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


def run(profile: str, claims: list[str] | None = None) -> int:
    import papermill as pm

    profile = get_profile(profile).name
    out_dir = results_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = notebooks_for(claims)
    for i, name in enumerate(names, 1):
        out = out_dir / f"{name}.ipynb"
        print(f"[{i}/{len(names)}] {name} (profile {profile}) ...", flush=True)
        t0 = time.time()
        try:
            pm.execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out, parameters={"profile": profile},
                                cwd=str(NOTEBOOK_DIR), progress_bar=False)
        except pm.PapermillExecutionError as e:
            print(f"FAILED: notebook {name} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                  f"{e.ename}: {e.evalue}\n  partially executed notebook kept at {out}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(names)}] {name} done in {time.time() - t0:.0f} s -> {out}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: $REPRO_PROFILE or cpu)")
    parser.add_argument("--claims", default=None, help="comma-separated claim ids, e.g. C1,C2 (default: every notebook)")
    args = parser.parse_args(argv)
    try:
        claims = [c.strip().upper() for c in args.claims.split(",")] if args.claims else None
        return run(get_profile(args.profile).name, claims)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
