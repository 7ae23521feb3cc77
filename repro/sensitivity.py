"""How much the verdicts rest on the registered degrees of freedom: ``python -m repro.sensitivity --profile cpu``.

Where the seeds of a comparison agree more closely than the test images' own noise allows, the registered rule floors
the seed component at zero and Welch-Satterthwaite gives the test about as many degrees of freedom as there are test
images, as if the seed-to-seed spread were known to be nil (:mod:`repro.analysis.stats`). This command re-reads every
claim whose test is the paired bootstrap under a conservative rule instead, at most the seeds' own K(S - 1)
(``REPRO_DF_RULE=seeds``): it executes their notebooks twice on one scratch copy of the recorded results, under each
rule (nothing is trained; a few minutes on the ``cpu`` profile), and writes each reading's two verdicts side by side to
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
    whether they differ ("not concluded" where the second reading is missing: it counts as a change)."""
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
    """A consistent copy of a results folder while workers may be writing it: every ``runs.csv`` first, then the
    rest, so that each row of the copied tables has its predictions copied too (a run saves them before its row)."""
    for path in src.rglob(RUNS):
        if "tmp" not in path.relative_to(src).parts:
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / path.relative_to(src))
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tmp", "*.log", "*.tmp", RUNS), dirs_exist_ok=True)


def conclude_all(profile: Profile, folder: Path, claims: list[str], rule: str) -> dict[str, pd.DataFrame | None]:
    """``claims`` concluded afresh under the degrees-of-freedom ``rule`` on the results copy ``folder`` (its
    notebooks executed by :mod:`repro.reproduce` on the recorded runs only): each claim's verdict rows, None where a
    notebook concluded nothing (its earlier rows are removed first, so none passes for a new one)."""
    for claim in claims:
        (folder / "claims" / f"{claim}.csv").unlink(missing_ok=True)
    env = os.environ | {"REPRO_RESULTS_DIR": str(folder.parent), "REPRO_DF_RULE": rule, "REPRO_READ_ONLY": "1"}
    code = subprocess.call([sys.executable, "-m", "repro.reproduce", "--profile", profile.name, "--claims",
                            ",".join(claims), "--no-runs"], env=env)
    if code:
        raise RuntimeError(f"the notebooks failed under the {rule} rule (exit code {code}); {TABLE}.csv is unchanged")
    return {c: claim_rows(profile, c, folder=folder) for c in claims}


def reread(profile: Profile) -> pd.DataFrame:
    """Every claim but :data:`UNTOUCHED` concluded twice on one scratch copy of ``profile``'s recorded results, under
    the registered rule and at the seeds' degrees of freedom (:func:`conclude_all`), the two set side by side
    (:func:`side_by_side`) and saved as :data:`TABLE`. Both readings see the same runs, so a change is the rule's, not
    that of runs recorded since the notebooks last ran."""
    claims = [c for c in CLAIMS if c not in UNTOUCHED]
    with tempfile.TemporaryDirectory(prefix="repro_sensitivity_") as tmp:
        scratch = Path(tmp) / profile.name
        _copy(results_dir(profile), scratch)
        registered = conclude_all(profile, scratch, claims, DF_RULES[0])
        table = side_by_side(registered, conclude_all(profile, scratch, claims, RULE))
    save_table(table, profile, TABLE)
    return table


def render(profile: Profile) -> str:
    """REPORT.md's block of the re-read (:data:`TABLE`): the claim readings whose verdict changes at the seeds' degrees
    of freedom, and how many keep theirs; says so where the recorded verdicts have moved since it was made."""
    if not (path := results_dir(profile) / f"{TABLE}.csv").exists():
        return "_Not yet re-read on this profile (`make sensitivity`)._"
    df, stale = pd.read_csv(path, keep_default_na=False), False          # "" for a reading without regime or basis
    for claim in (c for c in CLAIMS if c not in UNTOUCHED):     # a verdict (or a claim) recorded since: stale
        rows, g = claim_rows(profile, claim), df[df.claim == claim]
        recorded = {} if rows is None else dict(zip(zip(rows.regime, rows.basis), rows.verdict))
        stale |= recorded != dict(zip(zip(g.regime, g.basis), g.registered))
    changed = df[df.changed.astype(bool)]
    lines = [f"{len(df) - len(changed)} of {len(df)} claim readings keep their verdict at the seeds' degrees of freedom"
             + (":" if len(changed) else ".")]
    if len(changed):
        lines += ["", "| claim | reading | registered verdict | at the seeds' degrees of freedom |", "|---|---|---|---|"]
        lines += [f"| {r.claim} | {r.label or 'one reading'} | {r.registered} | {r.seeds_df} |" for r in changed.itertuples()]
    if stale:
        lines += ["", "_The recorded verdicts differ from this table's registered ones (made before the latest runs or "
                  "verdicts): run `make sensitivity` again._"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: re-read, save, and print the readings that change."""
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
