"""repro.sensitivity: the verdicts at the seeds' degrees of freedom set beside the registered ones, and REPORT's
block of them (which readings change; stale once a verdict moves)."""
import os

import pytest

from repro import findings, sensitivity
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
    block = sensitivity.render(SMOKE)
    assert block.startswith("1 of 3 claim readings keep their verdict")
    assert "| C2 | cold T | not reproduced | inconclusive |" in block and "run `make sensitivity` again" not in block
    findings.record_claim(SMOKE, "C2", "inconclusive", "", "", regime="T1")    # a verdict moves after the re-read
    assert "run `make sensitivity` again" in sensitivity.render(SMOKE)


def _notebooks(verdicts: dict[str, str], exit_code: int = 0):
    """A stand-in for the notebooks' batch: records C2's cold verdict per rule in the folder it is given."""
    def call(argv, env):
        assert argv[1:3] == ["-m", "repro.reproduce"] and env["REPRO_READ_ONLY"] == "1"
        before = os.environ.copy()
        os.environ.update(env)
        try:
            findings.record_claim(SMOKE, "C2", verdicts[env["REPRO_DF_RULE"]], "", "", regime="cold")
        finally:
            os.environ.clear()
            os.environ.update(before)
        return exit_code
    return call


def test_the_two_readings_see_one_copy_and_a_failure_leaves_the_committed_results_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    findings.record_claim(SMOKE, "C2", "reproduced", "", "", regime="cold")    # committed, from older runs
    (tmp_path / "smoke" / "transfer").mkdir(parents=True)
    (tmp_path / "smoke" / "transfer" / "runs.csv").write_text("key\nabc\n")
    monkeypatch.setattr(sensitivity, "CLAIMS", {"C2": None})
    committed = (tmp_path / "smoke" / "claims" / "C2.csv").read_text()
    monkeypatch.setattr(sensitivity.subprocess, "call", _notebooks({"satterthwaite": "not reproduced",
                                                                    "seeds": "inconclusive"}, exit_code=1))
    with pytest.raises(RuntimeError, match="df_sensitivity.csv is unchanged"):
        sensitivity.reread(SMOKE)
    assert (tmp_path / "smoke" / "claims" / "C2.csv").read_text() == committed
    assert not (tmp_path / "smoke" / "claims" / "df_sensitivity.csv").exists()
    monkeypatch.setattr(sensitivity.subprocess, "call", _notebooks({"satterthwaite": "not reproduced",
                                                                    "seeds": "inconclusive"}))
    table = sensitivity.reread(SMOKE)
    # both readings come from the copy's runs: "registered" is the re-read's, not the committed "reproduced"
    assert list(zip(table.registered, table.seeds_df, table.changed)) == [("not reproduced", "inconclusive", True)]
    assert (tmp_path / "smoke" / "claims" / "C2.csv").read_text() == committed
    assert "run `make sensitivity` again" in sensitivity.render(SMOKE)   # the committed verdict is older


def test_the_sensitivity_rule_records_no_verdict_outside_a_scratch_folder(monkeypatch):
    monkeypatch.delenv("REPRO_RESULTS_DIR", raising=False)
    monkeypatch.setenv("REPRO_DF_RULE", "seeds")
    with pytest.raises(ValueError, match="sensitivity analysis's rule"):
        findings.record_claim(SMOKE, "C2", "reproduced", "", "", regime="cold")
