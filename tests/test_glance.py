"""The summary table and forest plot read each claim's primary comparison from the test table its verdict cites, and
REPORT.md's numbers come from the CSVs they link (checked by hand-computed cases and against the committed CSVs)."""
import re

import pandas as pd
import pytest

from repro import findings, glance, report
from repro.claims import CLAIMS
from repro.profiles import get_profile

SMOKE, CPU = get_profile("smoke"), get_profile("cpu")
ROOT = glance.ROOT


def _tests(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / "smoke" / "transfer" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return f"[notebook](results/smoke/notebooks/05_five_way.ipynb) · [{name}](results/smoke/transfer/{name}.csv)"


def _row(summary: str, claim: str) -> list[str]:
    return next(r for r in summary.splitlines() if r.startswith(f"| [{claim}]")).split(" | ")


def test_the_summary_shows_the_primary_row_of_the_table_the_verdict_cites(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    base = dict(dataset="cifar10", kind="ssl", metric="accuracy")
    evidence = _tests(tmp_path, "c4_tests_cold", [
        {**base, "comparison": "(1)>(2)", "n_train": "all", "mean_diff": -0.0342, "ci_low": -0.0437, "ci_high": -0.0247},
        {**base, "comparison": "(1)>(2)", "n_train": "100", "mean_diff": -0.5, "ci_low": -0.6, "ci_high": -0.4},
        {**base, "comparison": "(2)>(5)", "n_train": "all", "mean_diff": 0.133, "ci_low": 0.114, "ci_high": 0.153}])
    findings.record_claim(SMOKE, "C4", "partially reproduced", "…", evidence, regime="cold")
    row = _row(report.render_summary(SMOKE), "C4")
    assert row[3] == "[-3.4 pt (-4.4 to -2.5)](results/smoke/transfer/c4_tests_cold.csv)"
    assert row[4] == "**partially reproduced**" and row[5:7] == ["not run", "—"]
    # an own-budget reading is the one shown, marked, once it exists; the equal-compute one stays in the section
    own = _tests(tmp_path, "c4_tests_cold_own", [
        {**base, "comparison": "(1)>(2)", "n_train": "all", "mean_diff": 0.012, "ci_low": 0.002, "ci_high": 0.022}])
    findings.record_claim(SMOKE, "C4", "reproduced", "…", own, regime="cold", basis="own")
    row = _row(report.render_summary(SMOKE), "C4")
    assert row[3] == "[+1.2 pt (+0.2 to +2.2)](results/smoke/transfer/c4_tests_cold_own.csv) (own budget)"
    assert row[4] == "**reproduced**"


def test_several_matching_rows_show_the_least_favourable_and_nll_is_signed(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    c6 = _tests(tmp_path, "c6_tests_T1", [
        {"reference": "sgd_transfer", "comparison": "gain(n=300) > gain(n=100)", "mean_diff": 0.03, "ci_low": 0.01, "ci_high": 0.05},
        {"reference": "sgd_transfer", "comparison": "gain(n=300) > gain(n=1000)", "mean_diff": 0.01, "ci_low": -0.01, "ci_high": 0.03},
        {"reference": "bayes_nonlearned", "comparison": "gain(n=300) > gain(n=100)", "mean_diff": -0.2, "ci_low": -0.3, "ci_high": -0.1}])
    findings.record_claim(SMOKE, "C6", "inconclusive", "…", c6, regime="T1")
    c7 = _tests(tmp_path, "c7_tests_T1", [   # (1)'s NLL 0.10 nats above (3): against the claim, 2 margins of 0.05
        {"comparison": "(1) vs (3)", "n_train": "all", "metric": "nll", "mean_diff": 0.10, "ci_low": 0.08, "ci_high": 0.12},
        {"comparison": "(1) vs (3)", "n_train": "all", "metric": "accuracy", "mean_diff": 0.5, "ci_low": 0.4, "ci_high": 0.6}])
    findings.record_claim(SMOKE, "C7", "not reproduced", "…", c7, regime="T1")
    assert _row(report.render_summary(SMOKE), "C6")[5].startswith("[+1.0 pt (-1.0 to +3.0)]")
    assert _row(report.render_summary(SMOKE), "C7")[5].startswith("[+0.10 nats (+0.08 to +0.12)]")
    forest = glance.forest_rows(SMOKE).set_index("claim")
    assert forest.loc["C6", ["effect", "low", "high"]].tolist() == pytest.approx([1.0, -1.0, 3.0])
    assert forest.loc["C7", ["effect", "low", "high"]].tolist() == pytest.approx([-2.0, -2.4, -1.6])


def test_a_claim_without_a_sampler_reads_once_and_a_missing_table_shows_a_dash(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    findings.record_claim(SMOKE, "C1", "not reproduced", "…", "[notebook](results/smoke/notebooks/02.ipynb)")
    row = _row(report.render_summary(SMOKE), "C1")
    assert row[3:7] == ["—", "**not reproduced**", "same (no sampler)", "same"]
    assert glance.forest_rows(SMOKE).empty


# ----------------------------------------------------------------------------- REPORT.md against its own CSVs

def _visible(cell: str) -> str:
    return re.sub(r"\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", cell)


#: The columns a stated result may come from: effects, their intervals and the means compared (not p-values or SEs).
RESULTS = ("mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "top_mean", "random_mean")


def _values(csv: str) -> list[float]:
    df = pd.read_csv(glance.local(csv))
    return [float(v) for c in RESULTS if c in df for v in df[c].dropna()]


def _rounds_from(shown: str, values: list[float]) -> bool:
    """``shown`` (e.g. "-3.4", "13.3") is some value of the CSV, in its units or in points (× 100), rounded as shown;
    a number stated as a gap (no sign) may be the value's magnitude."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    x = float(shown.replace("−", "-"))
    signed = shown[0] in "+-−"
    return any(round(f * v, decimals) == x or (not signed and round(abs(f * v), decimals) == x)
               for v in values for f in (1, 100))


def test_every_summary_cell_is_short_and_every_number_rounds_from_the_csv_it_links():
    longest = 0
    for line in report.render_summary(CPU).splitlines()[2:]:
        cells = line.strip("|").split(" | ")
        longest = max(longest, *(len(_visible(c)) for c in cells))
        for text, csv in glance.LINK.findall(line):
            numbers = re.findall(r"[+-−]?\d+(?:\.\d+)?", text)
            assert numbers and all(_rounds_from(n, _values(csv)) for n in numbers), (text, csv)
    assert longest <= 150


def _abstract() -> str:
    text = report.REPORT.read_text()
    return text[text.index("## Abstract"):text.index("\n## ", text.index("## Abstract") + 1)]


def test_every_result_in_the_abstract_rounds_from_a_csv_it_links():
    abstract = _abstract()
    csvs = re.findall(r"\]\(([^)]+\.csv)\)", abstract)
    values = [v for csv in csvs for v in _values(csv)]
    stated = re.findall(r"(\d+(?:\.\d+)?) (?:mIoU )?points?\b", abstract)
    assert len(stated) >= 4 and csvs
    assert [n for n in stated if not _rounds_from(n, values)] == []
    assert len(abstract.split()) <= 300 + 3          # its heading's words aside


def test_every_relative_link_and_anchor_of_the_report_resolves():
    text = report.REPORT.read_text()
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', text))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        if path and not (ROOT / path).exists():
            broken.append(target)
        elif not path and fragment not in anchors:
            broken.append(target)
    assert broken == []
    assert {glance.anchor(c) for c in CLAIMS.values()} <= anchors
