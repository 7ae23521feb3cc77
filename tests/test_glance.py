"""The summary table and forest plot read each claim's primary comparison from the test table its verdict cites, and
REPORT.md's numbers come from the CSVs they link (checked by hand-computed cases and against the committed CSVs)."""
import re

import pandas as pd
import pytest

from repro import findings, glance, report
from repro.claims import CLAIMS
from repro.profiles import get_profile

SMOKE, CPU = get_profile("smoke"), get_profile("cpu")
ROOT = report.REPORT.parent


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
    # once a claim has an own-budget reading, the row shows it first and the equal-compute one beside it
    own = _tests(tmp_path, "c4_tests_cold_own", [
        {**base, "comparison": "(1)>(2)", "n_train": "all", "mean_diff": 0.012, "ci_low": 0.002, "ci_high": 0.022}])
    findings.record_claim(SMOKE, "C4", "reproduced", "…", own, regime="cold", basis="own")
    row = _row(report.render_summary(SMOKE), "C4")
    assert row[3] == ("own budget: [+1.2 pt (+0.2 to +2.2)](results/smoke/transfer/c4_tests_cold_own.csv); "
                      "equal compute: [-3.4 pt (-4.4 to -2.5)](results/smoke/transfer/c4_tests_cold.csv)")
    assert row[4] == "own budget: **reproduced**; equal compute: **partially reproduced**"
    assert glance.forest_rows(SMOKE).set_index("claim").loc["C4", "effect"] == pytest.approx(1.2)   # the primary reading


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


def test_numbers_compare_as_numbers_and_the_metric_is_the_primarys(tmp_path, monkeypatch):
    """A CSV column with a NaN reads as float (1000.0 must match 1000); a table with several metrics shows the claim's."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    base = dict(widths="de_elbo", family="learned")
    rows = [{**base, "arm": arm, "n_train": n, "metric": "accuracy", "mean_diff": d, "ci_low": d - 0.01, "ci_high": d + 0.01}
            for arm, n, d in (("cold", 1000, -0.02), ("T1", 1000, -0.03), ("map", 1000, -0.5), ("cold", 100, -0.4))]
    rows.append({**base, "arm": "cold", "n_train": None, "metric": "accuracy", "mean_diff": -0.9, "ci_low": -1, "ci_high": -0.8})
    rows.append({**base, "arm": "cold", "n_train": 1000, "metric": "nll", "mean_diff": -0.7, "ci_low": -0.8, "ci_high": -0.6})
    evidence = _tests(tmp_path, "e1_tests", rows).replace("05_five_way", "10_learned_scale")
    findings.record_claim(SMOKE, "E1", "not reproduced", "…", evidence)
    row = _row(report.render_summary(SMOKE), "E1")
    # cold: the worse of MAP and the cold sampler at n = 1000 (the NaN n_train row and the NLL row are not read)
    assert row[3].startswith("[-50.0 pt (-51.0 to -49.0)]") and row[5].startswith("[-3.0 pt (-4.0 to -2.0)]")
    # ... over both priors: a worse non-learned comparison is the one shown
    rows.append({**base, "family": "non-learned", "arm": "cold", "n_train": 1000, "metric": "accuracy",
                 "mean_diff": -0.6, "ci_low": -0.61, "ci_high": -0.59})
    findings.record_claim(SMOKE, "E1", "not reproduced", "…", _tests(tmp_path, "e1_tests", rows).replace(
        "05_five_way", "10_learned_scale"))
    assert _row(report.render_summary(SMOKE), "E1")[3].startswith("[-60.0 pt (-61.0 to -59.0)]")


def test_e1_shows_its_confirmatory_verdict_first_and_the_first_registration_beside_it(tmp_path, monkeypatch):
    """Two registrations, no regime: the confirmatory reading (MAP and the cold sampler only) first, the first
    registration's after it; the T = 1 column, which the confirmatory test did not run, says so."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    first = [dict(widths=w, family="learned", arm=a, n_train=1000, metric="accuracy", mean_diff=d, ci_low=d - 0.01,
                  ci_high=d + 0.01) for w, a, d in (("de_elbo", "map", -0.18), ("de_elbo_matched", "map", -0.012),
                                                    ("de_elbo_matched", "cold", -0.011), ("de_elbo_matched", "T1", -0.02))]
    again = [dict(r, widths="de_elbo_matched", mean_diff=d, ci_low=d - 0.01, ci_high=d + 0.01)
             for r, d in zip(first[1:3], (0.004, -0.003))]
    for basis, word, rows in (("registered", "not reproduced", first), ("confirmatory", "reproduced", again)):
        evidence = _tests(tmp_path, f"e1_tests_{basis}", rows).replace("05_five_way", "10_learned_scale")
        findings.record_claim(SMOKE, "E1", word, "…", evidence, basis=basis)
    assert findings.claim_rows(SMOKE, "E1").basis.tolist() == ["confirmatory", "registered"]
    row = [_visible(c) for c in _row(report.render_summary(SMOKE), "E1")]
    assert row[3] == "confirmatory: -0.3 pt (-1.3 to +0.7); first registration: -18.0 pt (-19.0 to -17.0)"
    assert row[4] == "confirmatory: reproduced; first registration: not reproduced"
    assert row[5] == "confirmatory: not tested; first registration: -2.0 pt (-3.0 to -1.0)"
    assert row[6] == "confirmatory: —; first registration: not reproduced"
    forest = glance.forest_rows(SMOKE)
    assert forest.effect.tolist() == pytest.approx([-0.3])        # the primary reading, in the regime it tested


def test_the_cited_test_table_is_found_by_name_not_position():
    cell = ("[notebook](results/cpu/notebooks/05.ipynb) · [summary](results/cpu/transfer/five_way_summary.csv) · "
            "[c4_tests_cold_own](results/cpu/transfer/c4_tests_cold_own.csv)")
    assert findings.tests_table(cell, "C4") == "results/cpu/transfer/c4_tests_cold_own.csv"
    assert findings.tests_table(cell, "C1") is None


def test_a_finding_ends_its_convergence_note_as_a_sentence(tmp_path, monkeypatch):
    from repro.analysis.wording import Verdict

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(findings, "convergence_note", lambda profile, claim: " Not converged (notebook 09): x.")
    findings.conclude(SMOKE, "C4", Verdict(None, "inconclusive", "a; b;"), regime="cold")
    assert findings.claim_rows(SMOKE, "C4").finding.iloc[0] == "a; b. Not converged (notebook 09): x."


def test_an_own_budget_finding_notes_an_arm_at_the_cap_only_among_the_arms_it_reads(tmp_path, monkeypatch):
    """The cap note names arms trained from a random initialisation where the claim compares them (C4: every size),
    C2's and C3's arms at the size they are read at; C10 (BMA vs SGD ensembles) reads none."""
    from types import SimpleNamespace

    from repro.analysis.wording import Verdict
    from repro.experiments import own_budget

    asked = {}

    def note(rec, arms, sizes=None):
        asked[len(asked)] = (arms, sizes)
        return " Not converged (notebook 09): x at the cap."

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(own_budget, "unconverged_note", note)
    for claim in ("C4", "C10", "C2"):
        findings.conclude(SMOKE, claim, Verdict(None, "inconclusive", "a."), regime="cold", basis="own",
                          rec=SimpleNamespace(profile=SMOKE))
    assert findings.claim_rows(SMOKE, "C4").finding.iloc[0] == "a. Not converged (notebook 09): x at the cap."
    assert findings.claim_rows(SMOKE, "C10").finding.iloc[0] == "a."
    assert findings.claim_rows(SMOKE, "C2").finding.iloc[0] == "a. Not converged (notebook 09): x at the cap."
    assert asked == {0: (own_budget.arms_of(("cold",)), None), 1: (("bayes_learned (cold)",), (SMOKE.study_n,))}
    assert own_budget.AT_STUDY_N["C3"] == ("map_learned", "bayes_learned (T1)")   # C3 is read at T = 1: both its arms


def test_the_forest_plot_draws_every_verdict_in_one_or_two_regimes():
    from repro import plots
    from repro.analysis.wording import VERDICTS

    df = pd.DataFrame({"claim": [f"C{i}" for i in range(4)], "label": [f"C{i}: x" for i in range(4)],
                       "regime": ["cold T"] * 4, "effect": [2.0, 0.5, -3.0, -0.2], "low": [1.0, -0.4, -5.0, -2.0],
                       "high": [3.0, 1.4, -1.0, 1.5], "verdict": list(VERDICTS)})
    for frame in (df, pd.concat([df, df.assign(regime="T = 1")])):
        fig = plots.forest(frame)
        assert len(fig.axes) == frame.regime.nunique() and fig.axes[0].get_yticklabels()[0].get_text() == "C0: x"


# ----------------------------------------------------------------------------- REPORT.md against its own CSVs

def _visible(cell: str) -> str:
    return re.sub(r"\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", cell)


NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?")


def test_every_summary_cell_is_short_and_states_one_row_of_the_csv_it_links():
    """Δ and its CI in a cell are the mean_diff, ci_low and ci_high of one row of the linked table (points: × 100)."""
    longest = 0
    for line in report.render_summary(CPU).splitlines()[2:]:
        longest = max(longest, *(len(_visible(c)) for c in line.strip("|").split(" | ")))
        for text, csv in findings.CSV_LINK.findall(line):
            table = pd.read_csv(findings.local(csv))
            shown = [float(n.replace("−", "-")) for n in NUMBER.findall(text)]
            columns = ("mean_diff", "ci_low", "ci_high") if "mean_diff" in table else ("top_mean", "random_mean")
            decimals = [len(n.split(".")[1]) if "." in n else 0 for n in NUMBER.findall(text)]
            scale = 100 if " pt" in text else 1
            assert any(all(round(scale * r[c], d) == v for c, v, d in zip(columns, shown, decimals))
                       for _, r in table.iterrows()), (text, csv)
    assert longest <= 150


def _abstract() -> str:
    text = report.REPORT.read_text()
    return text[text.index("## Abstract"):text.index("\n## ", text.index("## Abstract") + 1)]


def test_every_result_in_the_abstract_is_a_difference_in_the_csv_its_sentence_links():
    """Each decimal number of the abstract (a result) sits in a sentence that links a CSV holding that difference, in
    points (× 100), signed or as a gap."""
    abstract = re.sub(r"\s+", " ", _abstract())
    checked = 0
    for sentence in re.split(r"(?<=[.)]) (?=[A-Z*])", abstract):
        numbers = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", sentence)
        csvs = [t for _, t in findings.CSV_LINK.findall(sentence)]
        if not numbers:
            continue
        assert csvs, f"a result without a CSV in its sentence: {sentence}"
        diffs = [100 * v for csv in csvs for v in pd.read_csv(findings.local(csv)).mean_diff.dropna()]
        for n in numbers:
            x = float(n)
            assert any(round(abs(d), 1) == x for d in diffs), (n, sentence)
            checked += 1
    assert checked >= 5
    assert len(abstract.split()) <= 300 + 2          # its heading's two words aside


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
