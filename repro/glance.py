"""The study at a glance: each claim's primary effect in each temperature regime, read from the test table its
recorded verdict cites, as REPORT.md's summary table and forest plot show them.

A claim's verdict row (:func:`repro.findings.claim_rows`) links its test table first; its
:class:`~repro.claims.Primary` picks the one comparison of that table the summary shows. Where a re-run claim has an
own-budget row (every arm at its own converged budget and tuning) that row is the one shown; its equal-compute row stays
in the claim's section.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .claims import CLAIMS, Claim, Primary
from .experiments.approaches import REGIMES
from .findings import claim_rows
from .profiles import Profile, results_root

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[([^\]]+)\]\(([^)]+\.csv)\)")
#: The summary's regime columns: cold first, the authors' regime. A claim with one reading (no sampler) fills the first.
ORDER = ("cold", "T1")
FIRST = ORDER[0]
assert set(ORDER) == set(REGIMES)


@dataclass(frozen=True)
class Effect:
    """One claim's primary effect in one regime: its verdict row's ``verdict`` and ``basis``, the comparison ``row``
    of the cited ``table`` (a path relative to the repository), and the claim's :class:`Primary`."""
    claim: str
    regime: str
    verdict: str
    basis: str
    table: str
    row: pd.Series | None
    primary: Primary | None

    @property
    def in_margins(self) -> tuple[float, float, float] | None:
        """Δ and its 95 % CI in units of the equivalence margin, signed so that positive is the claimed direction
        (None where the primary has no margin or the table no interval)."""
        p, r = self.primary, self.row
        if p is None or p.margin is None or r is None or "ci_low" not in r:
            return None
        lo, hi = sorted((p.sign * r.ci_low / p.margin, p.sign * r.ci_high / p.margin))
        return p.sign * r.mean_diff / p.margin, lo, hi

    def cell(self) -> str:
        """The summary cell: Δ (95 % CI) in the table's units, linked to the CSV it is read from."""
        if self.row is None or self.primary is None:
            return "—"
        text = self.primary.describe(self.row)
        return f"[{text}]({self.table})" + (" (own budget)" if self.basis == "own" else "")


def tests_table(evidence: str) -> str | None:
    """The first CSV an evidence cell links: the claim's test table (:func:`repro.findings.conclude` links it first)."""
    m = LINK.search(evidence)
    return m.group(2) if m else None


def local(link: str) -> Path:
    """Where a ``results/<profile>/...`` link of a verdict row lives on this machine (``$REPRO_RESULTS_DIR`` honoured)."""
    parts = Path(link).parts
    return results_root().joinpath(*parts[1:]) if parts and parts[0] == "results" else ROOT / link


def _pick(table: pd.DataFrame, primary: Primary, regime: str) -> pd.Series | None:
    """The row of ``table`` that ``primary`` selects (the least favourable of several, where it picks one)."""
    mask = pd.Series(True, index=table.index)
    where = dict(primary.where) | ({primary.regime_column: regime} if primary.regime_column else {})
    for column, value in where.items():
        if column not in table:
            return None
        values = value if isinstance(value, tuple) else (value,)
        mask &= table[column].astype(str).isin([str(v) for v in values])
    rows = table[mask]
    if rows.empty:
        return None
    if len(rows) > 1 and "mean_diff" in rows:      # the binding one: the least in the claimed direction
        return rows.loc[(primary.sign * rows.mean_diff).idxmin()]
    return rows.iloc[0]


def effects(profile: Profile, claim: Claim) -> dict[str, Effect]:
    """``claim``'s primary effect per regime where it is recorded (own budget before equal compute); a claim with one
    reading (no regime) has it under :data:`FIRST`, unless its table holds every regime (``Primary.regime_column``)."""
    if (rows := claim_rows(profile, claim.id)) is None:
        return {}
    out = {}
    for regime in REGIMES:
        mine = rows[rows.regime == regime] if (rows.regime != "").any() else rows
        if mine.empty:
            continue
        r = mine[mine.basis == "own"].iloc[0] if (mine.basis == "own").any() else mine.iloc[0]
        path = tests_table(r.evidence)
        table = pd.read_csv(local(path)) if path and local(path).exists() else None
        row = None if table is None or claim.primary is None else _pick(table, claim.primary, regime)
        if single(rows, claim) and regime != FIRST:
            continue                                 # one reading, shown once
        out[regime] = Effect(claim.id, regime, r.verdict, r.basis, path or "", row, claim.primary)
    return out


def single(rows: pd.DataFrame, claim: Claim) -> bool:
    """Whether ``claim`` was read once, with no temperature regime (no sampler in it)."""
    return (rows.regime == "").all() and not (claim.primary and claim.primary.regime_column)


def anchor(claim: Claim) -> str:
    """The id of the claim's section in REPORT.md (an explicit ``<a id=...>`` there, stable under heading edits)."""
    return claim.id.lower()


def render_summary(profile: Profile) -> str:
    """REPORT.md's summary table: one row per claim, every cell short."""
    cols = ["claim", "the paper (where)", "primary effect", "ours, cold T (the authors' regime)", "verdict, cold T",
            "ours, T = 1", "verdict, T = 1", "Flowers-102 reproduction"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for claim in CLAIMS.values():
        got, rows = effects(profile, claim), claim_rows(profile, claim.id)
        cells = [f"[{claim.id}](#{anchor(claim)})", claim.paper or claim.statement,
                 claim.primary.label if claim.primary else "—"]
        for regime in ORDER:
            if (e := got.get(regime)) is not None:
                cells += [e.cell(), f"**{e.verdict}**"]
            elif rows is not None and single(rows, claim):
                cells += ["same (no sampler)", "same"]
            else:
                cells += ["not run", "—"]
        cells.append(claim.reproduction)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def forest_rows(profile: Profile) -> pd.DataFrame:
    """Every claim's primary effect in margins (:attr:`Effect.in_margins`) per regime: the forest plot's data."""
    rows = []
    for claim in CLAIMS.values():
        got = effects(profile, claim)
        for regime, e in ((r, got[r]) for r in ORDER if r in got):
            if (m := e.in_margins) is not None:
                rows.append({"claim": claim.id, "label": f"{claim.id}: {claim.primary.label}", "regime": REGIMES[regime],
                             "effect": m[0], "low": m[1], "high": m[2], "verdict": e.verdict})
    return pd.DataFrame(rows, columns=["claim", "label", "regime", "effect", "low", "high", "verdict"])
