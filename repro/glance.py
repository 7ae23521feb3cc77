"""The study at a glance: each claim's primary effect in each temperature regime, read from the test table its
recorded verdict cites, as REPORT.md's summary table and forest plot show them.

A claim's verdict row (:func:`repro.findings.claim_rows`) links its test table (:func:`repro.findings.tests_table`);
its :class:`~repro.claims.Primary` picks the one comparison of that table the summary shows. Where a re-run claim has an
own-budget row (every arm at its own converged budget and tuning) that row is the one shown; its equal-compute row stays
in the claim's section.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

from .claims import CLAIMS, Claim, Primary
from .experiments.approaches import REGIMES
from .findings import REGIME_ORDER, claim_rows, local, row_label, tests_table
from .analysis.stats import MARGINS
from .profiles import Profile, results_dir

#: The summary's regime columns, cold first: the authors' regime. A claim with one reading (no sampler) fills the first.
ORDER = tuple(r for r in REGIME_ORDER if r)
FIRST = ORDER[0]
NOT_RUN = "_Not yet run on this profile._"     # a generated block with nothing to show yet


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

    @property
    def untested(self) -> bool:
        """The cited table has no such comparison: e.g. a regime its test did not run."""
        return self.primary is not None and bool(self.table) and self.row is None

    def cell(self) -> str:
        """The summary cell: Δ (95 % CI) in the table's units, linked to the CSV it is read from."""
        if self.untested:
            return "not tested"
        if self.row is None or self.primary is None:
            return "—"
        return f"[{self.primary.describe(self.row)}]({self.table})"


def _matches(column: pd.Series, value) -> pd.Series:
    """Which cells of ``column`` equal ``value`` (a tuple: any of its values); numbers compare as numbers (a CSV
    column with a NaN reads as float: 1000 must match 1000.0), anything else as text."""
    values = value if isinstance(value, tuple) else (value,)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    texts = [str(v) for v in values if v not in numbers]
    return pd.to_numeric(column, errors="coerce").isin(numbers) | column.astype(str).isin(texts)


def _pick(table: pd.DataFrame, primary: Primary, regime: str) -> pd.Series | None:
    """The row of ``table`` that ``primary`` selects: its ``where``, the regime's columns (``Primary.regimes``), its
    metric where the table has several; of several rows left, the least favourable to the claim. None where the
    table has no such row (or the regime was not tested)."""
    if primary.regimes is not None and regime not in primary.regimes:
        return None
    where = dict(primary.where) | dict((primary.regimes or {}).get(regime, {}))
    if primary.metric and "metric" in table and "metric" not in where:
        where["metric"] = primary.metric
    mask = pd.Series(True, index=table.index)
    for column, value in where.items():
        if column not in table:
            return None
        mask &= _matches(table[column], value)
    rows = table[mask]
    if "mean_diff" in rows:
        rows = rows.dropna(subset=["mean_diff"])
    if rows.empty:
        return None
    return rows.loc[(primary.sign * rows.mean_diff).idxmin()] if "mean_diff" in rows else rows.iloc[0]


def effects(profile: Profile, claim: Claim, rows: pd.DataFrame | None = None) -> dict[str, tuple[Effect, ...]]:
    """``claim``'s primary effect per regime where it is recorded (own budget before equal compute), read from its
    verdict ``rows`` (by default :func:`.findings.claim_rows`); a claim with one reading (no regime) has it under
    :data:`FIRST`, unless its table holds every regime (``Primary.regimes``)."""
    if rows is None and (rows := claim_rows(profile, claim.id)) is None:
        return {}
    out = {}
    for regime in ((FIRST,) if single(rows, claim) else ORDER):       # one reading is shown once
        mine = rows[rows.regime == regime] if (rows.regime != "").any() else rows
        if mine.empty:
            continue
        readings = []
        for r in mine.itertuples():                      # in the report's order (claim_rows): own budget first
            path = tests_table(r.evidence, claim.id)
            table = pd.read_csv(local(path)) if path and local(path).exists() else None
            row = None if table is None or claim.primary is None else _pick(table, claim.primary, regime)
            readings.append(Effect(claim.id, regime, r.verdict, r.basis, path or "", row, claim.primary))
        out[regime] = tuple(readings)
    return out


def single(rows: pd.DataFrame, claim: Claim) -> bool:
    """Whether ``claim`` was read once, with no temperature regime (no sampler in it)."""
    return (rows.regime == "").all() and not (claim.primary and claim.primary.regimes)


def anchor(claim: Claim) -> str:
    """The id of the claim's section in REPORT.md (an explicit ``<a id=...>`` there, stable under heading edits)."""
    return claim.id.lower()


def render_summary(profile: Profile) -> str:
    """REPORT.md's summary table: one row per claim, every cell short; a claim the third protocol re-ran shows its
    own-budget reading (primary) and its equal-compute one side by side."""
    cols = ["claim", "the paper (where)", "primary effect", "ours, cold T (the authors' regime)", "verdict, cold T",
            "ours, T = 1", "verdict, T = 1", "Flowers-102 reproduction"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for claim in CLAIMS.values():
        rows = claim_rows(profile, claim.id)
        got = effects(profile, claim, rows) if rows is not None else {}
        cells = [f"[{claim.id}](#{anchor(claim)})", claim.paper or claim.statement,
                 claim.primary.label if claim.primary else "—"]
        for regime in ORDER:
            if (readings := got.get(regime)) and len(readings) == 1:
                overall = " (one verdict for all)" if len(got) > 1 and (rows.regime == "").all() else ""   # E1
                # a claim read more than one way says which reading a lone cell is (e.g. T = 1 before its re-run)
                which = f"{row_label('', readings[0].basis, own=True)}: " if (rows.basis != "").any() else ""
                cells += [which + readings[0].cell(), f"{which}**{readings[0].verdict}**{overall}"]
            elif readings:         # own budget (the primary reading), then equal; E1: confirmatory, then registered
                cells += ["; ".join(f"{row_label('', e.basis, own=True)}: {e.cell()}" for e in readings),
                          "; ".join(f"{row_label('', e.basis, own=True)}: "
                                    + ("—" if e.untested else f"**{e.verdict}**") for e in readings)]
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
        for regime, readings in effects(profile, claim).items():
            if (m := (e := readings[0]).in_margins) is not None:          # the primary reading: own budget first
                rows.append({"claim": claim.id, "label": f"{claim.id}: {claim.primary.label}", "regime": REGIMES[regime],
                             "effect": m[0], "low": m[1], "high": m[2], "verdict": e.verdict})
    return pd.DataFrame(rows, columns=["claim", "label", "regime", "effect", "low", "high", "verdict"])


FOREST = "00_verdicts"          # the forest plot's figure, drawn by update_report


def render_forest(profile: Profile) -> str:
    """The link to the forest plot of every claim's primary effect, once :func:`save_forest` has drawn it."""
    if not (results_dir(profile) / "figures" / f"{FOREST}.png").exists():
        return NOT_RUN
    margins = f"±{100 * MARGINS['accuracy']:g} point of accuracy or mIoU, ±{MARGINS['nll']:g} nats of NLL"
    return (f"![Each claim's primary effect with its 95 % CI, in units of its equivalence margin ({margins}), per "
            f"temperature regime; colour: the verdict](results/{profile.name}/figures/{FOREST}.png)")


def save_forest(profile: Profile) -> None:
    """Draw the forest plot :func:`render_forest` links (nothing where no claim has a primary effect yet)."""
    from .plots import forest, save_figure

    if not (df := forest_rows(profile)).empty:
        save_figure(fig := forest(df), profile, FOREST)
        plt.close(fig)
