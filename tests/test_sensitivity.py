"""repro.sensitivity: the verdicts at the seeds' degrees of freedom set beside the registered ones, and REPORT's
block of them (which readings change; stale once a verdict moves)."""
from repro import findings, report, sensitivity
from repro.plots import save_table
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


def test_readings_are_paired_by_regime_and_basis_and_the_block_lists_those_that_change(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(scratch))          # the re-read, as the scratch notebooks record it
    findings.record_claim(SMOKE, "C2", "inconclusive", "", "", regime="cold")
    findings.record_claim(SMOKE, "C2", "not reproduced", "", "", regime="T1")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    findings.record_claim(SMOKE, "C2", "not reproduced", "", "", regime="cold")
    findings.record_claim(SMOKE, "C2", "not reproduced", "", "", regime="T1")
    findings.record_claim(SMOKE, "C4", "partially reproduced", "", "", regime="cold", basis="own")
    claims = ("C2", "C4", "C5")                                       # C5: concluded nowhere, so no row
    table = sensitivity.side_by_side({c: findings.claim_rows(SMOKE, c) for c in claims},
                                     {c: findings.claim_rows(SMOKE, c, folder=scratch / "smoke") for c in claims})
    assert list(zip(table.claim, table.label, table.seeds_df, table.changed)) == [
        ("C2", "cold T", "inconclusive", True), ("C2", "T = 1", "not reproduced", False),
        ("C4", "cold T, own budget", "not concluded", True)]
    save_table(table, SMOKE, sensitivity.TABLE)
    block = report.render_df_sensitivity(SMOKE)
    assert block.startswith("1 of 3 claim readings keep their verdict")
    assert "| C2 | cold T | not reproduced | inconclusive |" in block and "Made before" not in block
    findings.record_claim(SMOKE, "C2", "inconclusive", "", "", regime="T1")    # a verdict moves after the re-read
    assert "Made before the latest verdicts" in report.render_df_sensitivity(SMOKE)
