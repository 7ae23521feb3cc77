"""REPORT.md's summary table is exactly what the committed claim CSVs generate."""
import re

import pandas as pd
import pytest

from repro.claims import CLAIMS
from repro import findings, report
from repro.profiles import get_profile

SMOKE, CPU = get_profile("smoke"), get_profile("cpu")


@pytest.mark.parametrize("block", sorted(report.BLOCKS))
def test_report_blocks_match_the_committed_csvs(block):
    text = report.REPORT.read_text()
    table = re.search(rf"<!-- {block}:begin -->\n(.*?)\n<!-- {block}:end -->", text, re.S).group(1)
    assert table == report.BLOCKS[block](CPU), "REPORT.md is stale: run `python -m repro.report --profile cpu`"


def test_every_claim_has_one_row():
    rows = report.render_summary(CPU).splitlines()[2:]
    assert [re.match(r"\| \[(\w+)\]\(#\w+\) \|", r).group(1) for r in rows] == list(CLAIMS)


def test_record_claim_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    findings.record_claim(SMOKE, "C3", "partially reproduced", "acc 0.51 ± 0.02 (3 seeds)", "nb 04")
    row = pd.read_csv(tmp_path / "smoke" / "claims" / "C3.csv").iloc[0]
    assert (row.verdict, row.finding) == ("partially reproduced", "acc 0.51 ± 0.02 (3 seeds)")
    assert "| [C3](#c3) |" in report.render_summary(SMOKE) and "**partially reproduced**" in report.render_summary(SMOKE)
    assert "acc 0.51 ± 0.02 (3 seeds)" in report.render_findings(SMOKE, "C3")


def test_a_claim_has_one_row_per_temperature_regime(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    findings.record_claim(SMOKE, "C4", "reproduced", "cold finding", "nb 05", regime="cold")
    findings.record_claim(SMOKE, "C4", "not reproduced", "T1 finding", "nb 05", regime="T1")
    findings.record_claim(SMOKE, "C4", "inconclusive", "cold again", "nb 05", regime="cold")     # replaces cold only
    rows = pd.read_csv(tmp_path / "smoke" / "claims" / "C4.csv")
    assert list(rows.regime) == ["cold", "T1"] and list(rows.verdict) == ["inconclusive", "not reproduced"]  # cold first
    full = report.render_findings(SMOKE, "C4")
    assert "| T = 1 | **not reproduced** | T1 finding |" in full and "| cold T | **inconclusive** | cold again |" in full
    assert "cold finding" not in full
    assert re.search(r"\| \[C4\]\(#c4\) \|.*\*\*inconclusive\*\*.*\*\*not reproduced\*\*", report.render_summary(SMOKE))


def test_a_rerun_claim_has_one_row_per_regime_and_basis(tmp_path, monkeypatch):
    """A claim the third protocol re-ran keeps its second-protocol rows (read as the equal-compute ones) beside the
    own-budget rows; recording one pair replaces only that pair; the budget table sets the protocols apart."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    claims = tmp_path / "smoke" / "claims"
    claims.mkdir(parents=True)
    pd.DataFrame({"claim": ["C4"], "verdict": ["not reproduced"], "finding": ["x"]}).to_csv(
        claims / "first_protocol.csv", index=False)
    findings.record_claim(SMOKE, "C4", "not reproduced", "cold, equal", "", regime="cold")
    findings.record_claim(SMOKE, "C4", "reproduced", "cold, own", "", regime="cold", basis="own")
    findings.record_claim(SMOKE, "C4", "inconclusive", "T1, equal", "", regime="T1")
    findings.record_claim(SMOKE, "C4", "partially reproduced", "cold, own again", "", regime="cold", basis="own")
    rows = findings.claim_rows(SMOKE, "C4")
    assert list(zip(rows.regime, rows.basis)) == [("cold", "own"), ("cold", ""), ("T1", "")]     # the report's order
    assert list(rows.label) == ["cold T, own budget", "cold T, equal compute", "T = 1, equal compute"]
    full = report.render_findings(SMOKE, "C4")
    assert "| cold T, own budget | **partially reproduced** | cold, own again |" in full and "cold, own |" not in full
    assert "| cold T, equal compute | **not reproduced** |" in full
    row = next(r for r in report.render_summary(SMOKE).splitlines() if r.startswith("| [C4]"))
    assert row.split(" | ")[4] == "own budget: **partially reproduced**; equal compute: **not reproduced**"  # own first
    assert row.split(" | ")[6] == "equal compute: **inconclusive**"             # a lone reading says which
    assert ("| C4 | not reproduced | cold T: not reproduced; T = 1: inconclusive | cold T: partially reproduced |"
            in report.render_budget(SMOKE))
    with pytest.raises(ValueError, match="unknown basis 'cheap'"):
        findings.record_claim(SMOKE, "C4", "reproduced", "", "", regime="cold", basis="cheap")
    with pytest.raises(ValueError, match="a basis needs a temperature regime"):
        findings.record_claim(SMOKE, "C4", "reproduced", "", "", basis="own")
    findings.record_claim(SMOKE, "C4", "reproduced", "T1, equal again", "", regime="T1", basis="equal")
    rows = findings.claim_rows(SMOKE, "C4")                   # "equal" is the row without a basis: replaced, not added
    assert len(rows) == 3 and rows.finding.iloc[2] == "T1, equal again"
    pd.read_csv(claims / "C4.csv").iloc[::-1].to_csv(claims / "C4.csv", index=False)   # a file in another order
    rows = findings.claim_rows(SMOKE, "C4")
    assert list(zip(rows.label, rows.finding)) == [("cold T, own budget", "cold, own again"),
                                                   ("cold T, equal compute", "cold, equal"),
                                                   ("T = 1, equal compute", "T1, equal again")]   # each label its row's


@pytest.mark.parametrize("claim, verdict, message", [
    ("C11", "reproduced", "unknown claim id 'C11'"),
    ("C1", "sort of", "verdict must be one of"),
])
def test_record_claim_rejects_bad_input(tmp_path, monkeypatch, claim, verdict, message):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        findings.record_claim(SMOKE, claim, verdict, "", "")


def test_quoted_prior_statistics_are_computed_from_the_prior_files():
    """REPORT's traces and SWAG variances come from the prior files (recomputed here from the raw tensors)."""
    import torch

    from repro.profiles import results_dir

    folder = results_dir(get_profile("cpu")) / "priors"
    kinds = [k for k in ("ssl", "supervised") if (folder / f"{k}_prior.pt").exists()]   # a refit may be under way
    if not kinds:
        pytest.skip("no cpu prior files")
    table = report.prior_statistics(CPU).set_index("kind")
    block = re.search(r"<!-- priors:begin -->\n(.*?)\n<!-- priors:end -->", report.REPORT.read_text(), re.S).group(1)
    for kind in kinds:
        raw = torch.load(folder / f"{kind}_prior.pt", weights_only=True)
        D, var = raw["factor"].double(), raw["diag"].double()
        k = D.shape[1]
        expected = {"trace_low_rank": 0.5 * float((D ** 2).sum()) / (k - 1),     # Σ = ½ diag + ½ D Dᵀ/(K − 1)
                    "trace_diagonal": 0.5 * float(var.sum()), "median_variance": float(var.median())}
        for column, value in expected.items():
            assert table.loc[kind, column] == pytest.approx(value, rel=1e-9)
        row = next(line for line in block.splitlines() if line.startswith(f"| {kind} |"))
        assert f"| {expected['trace_low_rank']:.3g} | {expected['trace_diagonal']:.3g} | " \
               f"{expected['median_variance']:.2g} |" in row


def test_verdict_vocabulary_has_one_owner():
    from repro.analysis import wording

    assert report.VERDICTS is wording.VERDICTS
    assert "inconclusive" in report.VERDICTS and "not testable here" not in report.VERDICTS


def test_tuning_block_names_where_a_reused_row_was_tuned(tmp_path, monkeypatch):
    """A row whose values another (prior kind, size) chose says which; a row tuned on its own runs says so ("—")."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    (tmp_path / "smoke" / "transfer").mkdir(parents=True)
    pd.DataFrame([dict(dataset="cifar10", n_train=100, approach="map_learned", prior_kind="supervised_matched",
                       regime="map", tuned_kind="supervised", tuned_n=100, lr=0.03, scale=1e3),
                  dict(dataset="cifar10", n_train=100, approach="map_learned", prior_kind="ssl",
                       regime="map", tuned_kind="ssl", tuned_n=100, lr=0.01, scale=1e5)]
                 ).to_csv(tmp_path / "smoke" / "transfer" / "tuning.csv", index=False)
    rows = report.render_tuning(SMOKE).splitlines()
    assert "tuned at" in rows[0].split(" | ")
    assert "| supervised, n = 100 | 0.03 |" in rows[2] and "| — | 0.01 |" in rows[3]


def test_training_budget_block_marks_the_chosen_budget_and_the_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    folder = tmp_path / "smoke" / "training_budget"
    folder.mkdir(parents=True)
    pd.DataFrame([dict(n_train=100, arm=a, steps=s, accuracy=acc) for a, s, acc in
                  (("sgd_transfer", 200, 0.370), ("sgd_transfer", 400, 0.374), ("bayes_learned (cold)", 400, 0.39))]
                 ).to_csv(folder / "curves.csv", index=False)
    pd.DataFrame([dict(n_train=100, sgd_transfer=200, map_learned=200, budget=200, converged=True,
                       map_nonlearned_gain=0.004)]).to_csv(folder / "budgets.csv", index=False)
    pd.DataFrame({"budget": [800], "converged": [False]}).to_csv(folder / "segmentation_budget.csv", index=False)
    pd.DataFrame([dict(approach=a, steps=s, miou=m) for a, s, m in (("sgd_transfer", 400, 0.46), ("sgd_transfer", 800, 0.51),
                                                                    ("map_learned", 800, 0.5))]
                 ).to_csv(folder / "segmentation_curves.csv", index=False)
    pd.DataFrame([dict(n_train=100, arm="bayes_learned (T1)", trained_every_cycle=False)]).to_csv(
        folder / "cycle_check.csv", index=False)
    pd.DataFrame([dict(adopt=True, mean_gain=0.009, mean_nll_change=-0.03)]).to_csv(
        folder / "bn_refresh_decision.csv", index=False)
    lines = report.render_training_budget(SMOKE).splitlines()
    assert lines[0].startswith("| n | steps | (1) Bayes + learned, cold T | (3) SGD transfer |")
    assert lines[2] == "| 100 | **200** |  | 0.370 |" and lines[3] == "| 100 | 400 | 0.390 | 0.374 |"
    text = "\n".join(lines)
    assert "* n = 100: budget **200** steps (SGD transfer's rule: 200, MAP + learned's: 200)." in text
    assert "* segmentation (CamVid val mIoU): budget **800** steps." in text
    assert "* not converged: segmentation trains 800 steps, the cap, where the validation mIoU of the last doubling " \
           "still gained +0.050 ((3) SGD transfer)." in text
    assert "MAP + non-learned" not in text            # +0.004 per doubling: flat enough to go unmentioned
    assert "more than 2 points below the first kept one: n = 100, bayes_learned (T1)" in text
    assert "accuracy by +0.0090 and NLL by -0.0300: adopted" in text


def test_amendment_block_compares_the_same_runs(tmp_path, monkeypatch):
    """The amendment table sets the first rules beside the amended ones on the first protocol's runs: a claim the second
    protocol has re-run shows its first-protocol verdict there, not the new one (which the budget table shows)."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    claims = tmp_path / "smoke" / "claims"
    claims.mkdir(parents=True)
    pd.DataFrame({"claim": ["C8"], "verdict": ["partially reproduced"]}).to_csv(claims / "before_amendment.csv", index=False)
    pd.DataFrame({"claim": ["C8"], "verdict": ["not reproduced"], "finding": ["x"]}).to_csv(
        claims / "first_protocol.csv", index=False)
    findings.record_claim(SMOKE, "C8", "reproduced", "second protocol", "", regime="cold")
    findings.record_claim(SMOKE, "C3", "reproduced", "second protocol only", "", regime="T1")
    rows = report.render_amendment(SMOKE).splitlines()
    assert "| C8 | partially reproduced | not reproduced |" in rows
    assert "| C3 | — | — |" in rows                         # no first-protocol verdict: none borrowed from the second
    assert "cold T: reproduced" in report.render_budget(SMOKE)


def test_compute_block_splits_the_protocols(tmp_path, monkeypatch):
    """Runs of the first protocol, of the second (each row's ``protocol``) and of the third (the runs in bf16) are
    counted apart, each with its total."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    (tmp_path / "smoke" / "transfer").mkdir(parents=True)
    run = dict(split="test", approach="map_learned", status="ok", precision="fp32")
    pd.DataFrame([run | dict(key="a", wall_time_s=3600.0, protocol=1),
                  run | dict(key="b", wall_time_s=1800.0, protocol=2),
                  run | dict(key="c", wall_time_s=5400.0, protocol=2),
                  run | dict(key="e", wall_time_s=720.0, protocol=2, precision="bf16")]
                 ).to_csv(tmp_path / "smoke" / "transfer" / "runs.csv", index=False)
    (tmp_path / "smoke" / "segmentation").mkdir()
    pd.DataFrame([run | dict(key="d", wall_time_s=360.0, protocol=1)]).to_csv(
        tmp_path / "smoke" / "segmentation" / "runs.csv", index=False)
    lines = report.render_compute(SMOKE).splitlines()
    assert "| **segmentation** | **first** | | | **1** | 0 | 360 | **0.10** |" in lines
    assert "| transfer | first | test | map_learned | 1 | 0 | 3600 | 1.00 |" in lines
    assert "| transfer | second | test | map_learned | 2 | 0 | 3600 | 2.00 |" in lines
    assert "| **transfer** | **first** | | | **1** | 0 | 3600 | **1.00** |" in lines
    assert "| **transfer** | **second** | | | **2** | 0 | 3600 | **2.00** |" in lines
    assert "| **transfer** | **third** | | | **1** | 0 | 720 | **0.20** |" in lines


def test_third_protocol_block_shows_values_resolution_and_ablation(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    (tmp_path / "smoke" / "transfer").mkdir(parents=True)
    (tmp_path / "smoke" / "training_budget").mkdir()
    assert report.render_third_protocol(SMOKE) == report.NOT_RUN
    pd.DataFrame([dict(arm="bayes_learned (cold)", n_train=1000, lr=0.03, weight_decay=None, scale=1e7, head_var=1.0,
                       alpha=None, temperature=0.001, cycles=6, tuned_steps=1600, steps=3200)]).to_csv(
        tmp_path / "smoke" / "transfer" / "own_budget_choices.csv", index=False)
    pd.DataFrame({"se": [0.004, 0.006, 0.01]}).to_csv(tmp_path / "smoke" / "training_budget" / "retune_resolution.csv",
                                                       index=False)
    pd.DataFrame([dict(arm="bayes_learned (T1)", augment=False, accuracy=0.55, minus_map=-0.04, minus_map_se=0.01,
                       share_of_second_gap_removed=0.75)]).to_csv(tmp_path / "smoke" / "transfer" / "t1_ablation.csv",
                                                                  index=False)
    lines = report.render_third_protocol(SMOKE).splitlines()
    assert lines[2] == "| (1) Bayes + learned, cold T | 1000 | 1600 | 3200 | 0.03 | — | 1e+07 | 1 | — | 0.001 | 6 |"
    assert "2 SE = 1.2 accuracy points (median over 3 pairs of neighbours; 0.8 to 2.0)" in lines[4]
    assert lines[-1] == "| (1) Bayes + learned, T = 1 | off | 0.550 | -4.0 ± 1.0 pt | 75% |"


def test_a_new_claim_is_one_record(tmp_path, monkeypatch):
    """A claim added to the registry and nowhere else: the report lists it, the batch selects its notebook, and its
    verdict is recorded and shown."""
    from repro import claims, reproduce
    from repro.analysis import verdicts

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(claims.CLAIMS, "C11", claims.Claim("C11", "a new statement (Fig 9)", "not tested",
                                                           "04_scale_sweep", verdicts.scale_verdict))
    assert ("| [C11](#c11) | a new statement (Fig 9) | — | not run | — | not run | — | not tested |"
            in report.render_summary(SMOKE))
    assert reproduce.notebooks_for(["C11"]) == ["01_prior_fitting", "04_scale_sweep"]
    findings.record_claim(SMOKE, "C11", "reproduced", "it held", "nb 04")
    assert ("| [C11](#c11) | a new statement (Fig 9) | — | — | **reproduced** | same (no sampler) | same | not tested |"
            in report.render_summary(SMOKE))
    assert "| one reading | **reproduced** | it held | nb 04 |" in report.render_findings(SMOKE, "C11")
    with pytest.raises(ValueError, match="^unknown claim id 'C12'; valid: C1, "):
        findings.record_claim(SMOKE, "C12", "reproduced", "", "")


def test_the_totals_and_the_third_protocols_progress_come_from_the_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    assert report.render_totals(SMOKE) == report.NOT_RUN
    (tmp_path / "smoke" / "transfer").mkdir(parents=True)
    pd.DataFrame({"key": list("abc"), "wall_time_s": [3600, 1800, 1800], "precision": ["fp32", "bf16", "bf16"]}).to_csv(
        tmp_path / "smoke" / "transfer" / "runs.csv", index=False)
    (tmp_path / "smoke" / "notebooks").mkdir()
    pd.DataFrame({"notebook": ["03_rank_ablation", "05_five_way", "05_five_way", "01_prior_fitting"],
                  "wall_s": [30, 999, 60, 5000], "ok": [True, True, True, True]}).to_csv(
        tmp_path / "smoke" / "notebooks" / "timings.csv", index=False)
    text = report.render_totals(SMOKE)
    assert text.startswith("**3 downstream runs, 2.0 recorded CPU-hours** (transfer 3 runs and 2.0 CPU-hours;")
    assert "the 2 notebooks that read the recorded runs (03–05) takes 1.5 minutes" in text      # each one's last run
    assert report.render_third_protocol(SMOKE).startswith("_In progress: 2 third-protocol runs recorded (1.0 CPU-hours).")


def test_a_priors_centre_quality_is_its_swa_means_cifar10_probe(tmp_path, monkeypatch):
    from repro.experiments import source_quality
    from repro.runner import MissingPrerequisite

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(MissingPrerequisite, match="source_evaluation.csv does not exist"):
        source_quality.centre_quality(SMOKE)
    (tmp_path / "smoke" / "prior_fitting").mkdir(parents=True)
    pd.DataFrame({"kind": ["ssl", "ssl", "supervised_matched"], "state": ["pretrained", "swa_mean", "swa_mean"],
                  "probe_cifar10_acc": [0.545, 0.529, 0.583]}).to_csv(
        tmp_path / "smoke" / "prior_fitting" / "source_evaluation.csv", index=False)
    assert source_quality.centre_quality(SMOKE) == {"ssl": 0.529, "supervised_matched": 0.583}


def test_only_the_reported_profile_in_the_repositorys_results_rewrites_the_report(tmp_path, monkeypatch):
    monkeypatch.delenv("REPRO_RESULTS_DIR", raising=False)
    assert report.reports(CPU) and not report.reports(SMOKE)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    assert not report.reports(CPU)
