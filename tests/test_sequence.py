"""The documented smoke sequence in a fresh clone: notebook 01, the studies, every notebook, with no flag a user must
discover and no tracked file changed. About half an hour on 2 cores: run by ``make check-sequence``, skipped by
``make test``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not os.environ.get("REPRO_SEQUENCE"), reason="make check-sequence runs it")


def step(clone: Path, *args: str) -> None:
    """One documented command in the clone (the clone's own package: ``python -m`` puts its folder first)."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=clone, capture_output=True, text=True,
                          env=os.environ | {"REPRO_PROFILE": "smoke", "PYTHONPATH": str(clone)})
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_a_fresh_clone_runs_the_smoke_study_as_documented(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    step(clone, "repro.reproduce", "--profile", "smoke", "--claims", "C1")     # README's first step: the priors
    step(clone, "repro.studies", "--profile", "smoke")                          # make studies, waited for
    step(clone, "repro.reproduce", "--profile", "smoke")                        # every notebook, from the runs
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=clone, capture_output=True,
                             text=True).stdout
    assert changed == "", f"tracked files changed:\n{changed}"
    assert len(list((clone / "results" / "smoke" / "notebooks").glob("*.ipynb"))) == 10
