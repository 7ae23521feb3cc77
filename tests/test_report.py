"""REPORT.md's summary table is exactly what the committed claim CSVs generate."""
import re

import pandas as pd
import pytest

from repro import report


@pytest.mark.parametrize("block", sorted(report.BLOCKS))
def test_report_blocks_match_the_committed_csvs(block):
    text = report.REPORT.read_text()
    table = re.search(rf"<!-- {block}:begin -->\n(.*?)\n<!-- {block}:end -->", text, re.S).group(1)
    assert table == report.BLOCKS[block]("cpu"), "REPORT.md is stale: run `python -m repro.report --profile cpu`"


def test_every_claim_has_a_row():
    rows = report.render_summary("cpu").splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == list(report.CLAIMS)


def test_record_claim_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    report.record_claim("smoke", "C3", "partially reproduced", "acc 0.51 ± 0.02 (3 seeds)", "nb 04")
    row = pd.read_csv(tmp_path / "smoke" / "claims" / "C3.csv").iloc[0]
    assert (row.verdict, row.finding) == ("partially reproduced", "acc 0.51 ± 0.02 (3 seeds)")
    assert "| C3 |" in report.render_summary("smoke") and "**partially reproduced**" in report.render_summary("smoke")


@pytest.mark.parametrize("claim, verdict, message", [
    ("C11", "reproduced", "unknown claim id 'C11'"),
    ("C1", "sort of", "verdict must be one of"),
])
def test_record_claim_rejects_bad_input(tmp_path, monkeypatch, claim, verdict, message):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        report.record_claim("smoke", claim, verdict, "", "")
