"""The study's verdict vocabulary and how a finding states a comparison: the four words (also defined in REPORT.md),
the rule that turns a claim's comparison outcomes into one of them, and the phrases a finding is built from.

* **reproduced**: every primary comparison of the claim shows the claimed effect (Holm-adjusted p < :data:`.stats.ALPHA`);
* **partially reproduced**: not all of them, but the claim's stated partial condition holds;
* **not reproduced**: the claimed effect is absent (equivalent to zero within +-1 accuracy point, TOST) or reversed
  (significant in the opposite direction), with adequate power, for a primary comparison;
* **inconclusive**: neither the effect nor its absence is shown (underpowered), or the comparison is confounded.

The claims' rules themselves are in :mod:`.verdicts`.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import pandas as pd

from ..experiments.approaches import APPROACHES, SHORT
from .stats import finished

#: The four verdict words, defined in the module docstring and in REPORT.md.
VERDICTS = ("reproduced", "partially reproduced", "not reproduced", "inconclusive")


class Verdict(NamedTuple):
    """What a claim's decision rule returns: its test table (None where a rule has none), the verdict ``word`` (one
    of :data:`VERDICTS`) and the ``finding``, the numbers behind it in a sentence or two."""
    table: pd.DataFrame | None
    word: str
    finding: str


def word(outcomes: Sequence[str], partial: bool = False, confounded: bool = False) -> str:
    """The verdict word of a claim from its primary comparisons' outcomes (see :func:`repro.analysis.stats.outcome`).

    ``reproduced`` if every primary comparison shows the effect; ``partially reproduced`` if not, but ``partial`` (the
    claim's stated partial condition) holds; ``not reproduced`` if some primary comparison is reversed or equivalent
    to zero, or ``absent`` (a claim-specific failure, e.g. an optimum at the grid's edge); ``inconclusive``
    otherwise, or whenever ``confounded``. Any claim can use it."""
    if confounded:
        return "inconclusive"
    if outcomes and all(o == "effect" for o in outcomes):
        return "reproduced"
    if partial:
        return "partially reproduced"
    if any(o in ("reversed", "equivalent", "absent") for o in outcomes):
        return "not reproduced"
    return "inconclusive"


def phrase_diff(c, pct: bool = False) -> str:
    """'Δ = ... (95% CI ...; Holm p = ...; outcome)' of a comparison (dict, Series or itertuples row)."""
    c = c._asdict() if hasattr(c, "_asdict") else dict(c)
    f = 100.0 if pct else 1.0
    u = " pt" if pct else ""
    return (f"Δ = {f * c['mean_diff']:+.3g}{u} (95% CI {f * c['ci_low']:+.3g} to {f * c['ci_high']:+.3g}; "
            f"Holm p = {c.get('p_holm', c['p']):.2g}; {c.get('outcome', '')})")


def phrase_regime(df: pd.DataFrame, extra: str = "") -> str:
    """'Regime: Bayes at T = ...; n = ...; <extra>. ', the opening of a finding. The cold T is chosen per approach and
    prior, so where the sampler arms ran at different T each arm's is named."""
    d = finished(df)
    bayes = d[d.approach.map(lambda a: a in APPROACHES and APPROACHES[a].bayes).astype(bool)] if "temperature" in d \
        else None
    temps = [] if bayes is None else sorted(bayes.temperature.dropna().unique())
    by_arm = "" if len(temps) < 2 or "prior_kind" not in d else ", ".join(
        f"{SHORT.get(a, a)} {k}: {', '.join(f'{x:g}' for x in sorted(t.dropna().unique()))}"
        for (a, k), t in bayes.groupby(["approach", "prior_kind"]).temperature)
    sizes = sorted(d.n_train.unique()) if "n_train" in d else []
    parts = ([f"Bayes at T = {', '.join(f'{t:g}' for t in temps)}" + (f" ({by_arm})" if by_arm else "")]
             if temps else []) + \
            ([f"n = {', '.join(str(int(n)) for n in sizes)}"] if sizes else []) + ([extra] if extra else [])
    return "Regime: " + "; ".join(parts) + ". " if parts else ""
