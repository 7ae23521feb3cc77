"""What the notebooks conclude: each claim's recorded verdicts (the claims themselves: :mod:`repro.claims`).

Each claim notebook ends with :func:`conclude`, which writes ``results/<profile>/claims/<id>.csv``: one row per
temperature ``regime`` where a claim is about samplers (:data:`repro.experiments.approaches.REGIMES`), and per
``basis`` where a claim was re-run with every arm at its own budget (:data:`BASES`); each row holds the verdict, the
finding (numbers with their intervals and seeds) and the evidence (links). :mod:`repro.report` renders them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .analysis.stats import DF_RULES, df_rule
from .analysis.wording import VERDICTS, Verdict   # the verdict words and record: repro.analysis.wording owns them
from .claims import claim as claim_of
from .experiments.approaches import REGIMES
from .experiments.budget import convergence_note
from .experiments.own_budget import cap_note
from .plots import save_table
from .profiles import Profile, results_dir, results_root

if TYPE_CHECKING:
    from .experiments.grid import Recorded


# How the arms of a re-run claim were budgeted (notebook 05's third protocol, 2026-12-05): "own", every arm at its
# own converged budget and tuning (the primary reading: the paper compares methods each trained to convergence);
# "equal", every arm at the size's one budget (the second protocol's runs, as recorded). A claim recorded without a
# basis was run one way only, the second protocol's; once it also has an "own" row, that row reads "equal". A claim
# tested twice by registered rules (E1, no regime) has "confirmatory", the test registered before its runs on fresh
# seeds (its verdict), and "registered", the first registration's, kept beside it.
BASES = {"own": "own budget", "equal": "equal compute", "confirmatory": "confirmatory", "registered": "first registration"}
COMPUTE = ("own", "equal")        # the bases of a re-run claim: recorded per temperature regime
# The report's order of a claim's readings, the one rule for every reader: no regime, then the authors' regime (cold)
# before T = 1; within a regime, the bases in the order of BASES (own budget first; a row without a basis is the
# equal-compute one).
REGIME_ORDER = ("", *sorted(REGIMES, key=lambda r: r != "cold"))


def in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """A claim's verdict rows in the report's order (:data:`REGIME_ORDER`, then :data:`BASES`)."""
    key = rows.regime.map(REGIME_ORDER.index) * len(BASES) + rows.basis.map(lambda b: list(BASES).index(b or "equal"))
    return rows.iloc[key.argsort(kind="stable")].reset_index(drop=True)


def claim_rows(profile: Profile, claim: str, folder: Path | None = None) -> pd.DataFrame | None:
    """The recorded rows of ``claim`` (None before it is concluded), with ``regime`` and ``basis`` ("" where a claim
    has none) and ``label``: how the report names the row, e.g. "cold T, own budget"; ``folder``: another results
    folder of the profile than :func:`.profiles.results_dir` (a scratch copy)."""
    path = (folder or results_dir(profile)) / "claims" / f"{claim}.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path, keep_default_na=False)
    for column in ("regime", "basis"):
        df[column] = df[column].astype(str) if column in df else ""
    df = in_order(df)                     # a file written before this order holds its rows in another
    return df.assign(label=[row_label(r, b, own=(df.basis == "own").any()) for r, b in zip(df.regime, df.basis)])


def row_label(regime: str, basis: str, own: bool = False) -> str:
    """The words that tell a claim's rows apart ("" for a claim with one row); ``own``: the claim has an own-budget
    row, so a row without a basis is the equal-compute one."""
    basis = basis or ("equal" if own else "")
    return ", ".join(w for w in (REGIMES.get(regime, ""), BASES.get(basis, "")) if w)


def record_claim(profile: Profile, claim: str, verdict: str, finding: str, evidence: str,
                 regime: str | None = None, basis: str | None = None) -> pd.DataFrame:
    """Write a claim's verdict row. A claim about samplers has one row per temperature ``regime``, a re-run claim
    one per ``basis`` as well, and a claim registered twice (E1) one per registration (``basis``, no regime): recording
    one row keeps the claim's rows of the other regimes and bases."""
    claim_of(claim)                               # one clear error for an unknown id
    if df_rule() != DF_RULES[0] and "REPRO_RESULTS_DIR" not in os.environ:
        raise ValueError(f"REPRO_DF_RULE={df_rule()} is the sensitivity analysis's rule: it records verdicts only in a "
                         "scratch results folder ($REPRO_RESULTS_DIR); unset it to record the registered ones")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if regime is not None and regime not in REGIMES:
        raise ValueError(f"unknown temperature regime {regime!r}; valid: {', '.join(REGIMES)}")
    if basis is not None and basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; valid: {', '.join(BASES)}")
    if basis in COMPUTE and regime is None:
        raise ValueError(f"a basis needs a temperature regime: {claim} is recorded per regime where it has a basis")
    basis = None if basis == "equal" else basis        # a row without a basis is the equal-compute one
    row = pd.DataFrame([dict(claim=claim, profile=profile.name, verdict=verdict, finding=finding, evidence=evidence,
                             regime=regime or "", basis=basis or "")])
    old = claim_rows(profile, claim)
    if old is not None and (regime is not None or basis is not None):   # rows of regimes and bases, the old one of
        # this pair replaced (and a stale row of the other kind, e.g. one recorded before the claim had regimes, gone)
        same_kind = old.regime.isin(REGIMES) if regime is not None else (old.regime == "") & (old.basis != "")
        kept = old[same_kind & ((old.regime != (regime or "")) | (old.basis != (basis or "")))]
        row = in_order(pd.concat([kept.drop(columns="label"), row]))
    save_table(row, profile, f"claims/{claim}")
    return row


#: A link to a CSV in an evidence cell (:func:`evidence` writes them): its text and its target.
CSV_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+\.csv)\)")


def tests_table(evidence_cell: str, claim: str) -> str | None:
    """The link target of ``claim``'s test table in an evidence cell (:func:`conclude` saves it as
    ``<folder>/<claim>_tests[_<regime>][_<basis>]``), None where the rule had no table."""
    stem = f"{claim.lower()}_tests"
    return next((target for _, target in CSV_LINK.findall(evidence_cell) if Path(target).stem.startswith(stem)), None)


def local(link: str) -> Path:
    """Where a ``results/<profile>/...`` link of an evidence cell lives on this machine (``$REPRO_RESULTS_DIR``
    honoured)."""
    parts = Path(link).parts
    return results_root().joinpath(*parts[1:]) if parts and parts[0] == "results" else Path(link)


def evidence(profile: Profile, notebook: str, tables: list[str] = (), figures: list[str] = ()) -> str:
    """The evidence cell of a claim row: links to the executed notebook, CSVs and figures under results/<profile>/."""
    out = f"results/{profile.name}"
    links = [f"[notebook]({out}/notebooks/{notebook}.ipynb)"]
    links += [f"[{Path(t).name}]({out}/{t}.csv)" for t in tables]
    links += [f"[figure]({out}/figures/{f}.png)" for f in figures]
    return " · ".join(links)


def conclude(profile: Profile, claim: str, result: Verdict, tables: list[str] = (),
             figures: list[str] = (), folder: str = "transfer", regime: str | None = None,
             basis: str | None = None, rec: "Recorded | None" = None) -> pd.DataFrame | None:
    """The last cell of a claim notebook: save the verdict's test table as ``<folder>/<claim>_tests`` (with the
    ``regime`` and ``basis`` appended where given), record the claim with links to its notebook, tables and figures,
    and print the verdict. ``result`` is the :class:`~repro.analysis.wording.Verdict` a claim's rule returns. An equal-compute verdict ends with notebook 09's note on arms its budgets left unconverged, an
    own-budget one with the note on arms at the cap, read from ``rec`` (the snapshot of the grids the notebook read).
    Returns the table."""
    table, verdict, finding = result
    if basis == "own" and rec is None:
        raise ValueError("an own-budget verdict reads its arms' budgets: pass rec, the snapshot the notebook read")
    note = cap_note(rec, claim, regime) if basis == "own" else convergence_note(profile, claim)
    finding = finding.rstrip(" .;") + "." + note if note else finding      # a sentence of its own
    if table is not None:
        suffix = "".join(f"_{w}" for w in (regime, basis) if w)
        tables = [f"{folder}/{claim.lower()}_tests{suffix}", *tables]
        save_table(table, profile, tables[0])
    record_claim(profile, claim, verdict, finding, evidence(profile, claim_of(claim).notebook, list(tables), list(figures)),
                 regime, basis)
    label = row_label(regime or "", basis or "")
    print(f"{claim}{f' ({label})' if label else ''} on profile {profile.name}: {verdict} — {finding}\n")
    return table
