"""How much the verdicts rest on the registered degrees of freedom: ``python -m repro.sensitivity --profile cpu``.

Where the seeds of a comparison agree more closely than the test images' own noise allows, the registered rule floors
the seed component at zero and Welch-Satterthwaite gives the test about as many degrees of freedom as there are test
images, as if the seed-to-seed spread were known to be nil (:mod:`repro.analysis.stats`). This command re-reads every
claim whose test is the paired bootstrap under the most conservative rule instead, the seeds' own K(S - 1)
(``REPRO_DF_RULE=seeds``): it executes their notebooks on a scratch copy of the recorded results (nothing is trained;
a few minutes on the ``cpu`` profile) and writes each reading's two verdicts side by side to
``results/<profile>/claims/df_sensitivity.csv``, which REPORT.md shows. The registered verdicts stay the verdicts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from .analysis.stats import DF_RULES
from .claims import CLAIMS
from .cli import add_profile_argument, run_main
from .findings import claim_rows
from .plots import save_table
from .profiles import Profile, get_profile, results_dir

RULE = DF_RULES[1]
#: C1 compares loss curves with Welch's test, not the seeds x images bootstrap: the rule does not reach it (and its
#: notebook takes hours).
UNTOUCHED = ("C1",)
TABLE = "claims/df_sensitivity"
RUNS = "runs.csv"


def side_by_side(registered: dict[str, pd.DataFrame | None], conservative: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """Per claim reading (claim, regime, basis, label), its ``registered`` verdict and the one at the seeds' degrees of
    freedom (``seeds_df``), from each claim's verdict rows (:func:`.findings.claim_rows`; None: not concluded), and
    whether they differ."""
    rows = []
    for claim, now in registered.items():
        if now is None:
            continue
        other = conservative.get(claim)
        alt = {} if other is None else {(r, b): v for r, b, v in zip(other.regime, other.basis, other.verdict)}
        for r in now.itertuples():
            rows.append({"claim": claim, "regime": r.regime, "basis": r.basis, "label": r.label,
                         "registered": r.verdict, "seeds_df": alt.get((r.regime, r.basis), "not concluded")})
    out = pd.DataFrame(rows, columns=["claim", "regime", "basis", "label", "registered", "seeds_df"])
    return out.assign(changed=out.registered != out.seeds_df)


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of a results folder while workers may be writing it: every ``runs.csv`` last, so that each
    row it holds has its predictions copied already (a run saves them before its row)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tmp", "*.log", RUNS))
    for path in src.rglob(RUNS):
        shutil.copy2(path, dst / path.relative_to(src))


def reread(profile: Profile) -> pd.DataFrame:
    """Every claim but :data:`UNTOUCHED` concluded again at the seeds' degrees of freedom on a scratch copy of
    ``profile``'s results (its notebooks executed by :mod:`repro.reproduce`, reading the recorded runs only), set
    beside the registered verdicts (:func:`side_by_side`); saved as :data:`TABLE`."""
    claims = [c for c in CLAIMS if c not in UNTOUCHED]
    with tempfile.TemporaryDirectory(prefix="repro_sensitivity_") as tmp:
        scratch = Path(tmp) / profile.name
        _copy(results_dir(profile), scratch)
        for claim in claims:                   # a reading the notebooks do not conclude again must not pass as one
            (scratch / "claims" / f"{claim}.csv").unlink(missing_ok=True)
        env = os.environ | {"REPRO_RESULTS_DIR": tmp, "REPRO_DF_RULE": RULE, "REPRO_READ_ONLY": "1"}
        code = subprocess.call([sys.executable, "-m", "repro.reproduce", "--profile", profile.name, "--claims",
                                ",".join(claims), "--no-runs"], env=env)
        if code:
            raise RuntimeError(f"the notebooks failed at the seeds' degrees of freedom (exit code {code}); "
                               f"{TABLE}.csv is unchanged")
        table = side_by_side({c: claim_rows(profile, c) for c in claims},
                             {c: claim_rows(profile, c, folder=scratch) for c in claims})
    save_table(table, profile, TABLE)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.sensitivity", description=__doc__.splitlines()[0])
    add_profile_argument(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        table = reread(get_profile(args.profile))
        print(f"{int(table.changed.sum())} of {len(table)} claim readings change at the seeds' degrees of freedom:")
        print(table[table.changed].to_string(index=False) if table.changed.any() else "none")

    return run_main(body, errors=(ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
