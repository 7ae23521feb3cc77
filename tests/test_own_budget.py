"""The third protocol's test-split runs: the budget check at the chosen values, and what each study runs, on a fake
grid whose learning curve is known."""
from pathlib import Path

import pandas as pd
import pytest

from fakes import Scripted
from repro.experiments import own_budget
from repro.experiments.grid import MissingRuns
from repro.profiles import get_profile

P = get_profile("cpu")
CHOSEN = {"sgd_transfer": dict(steps=400, lr=0.03), "bayes_learned (T1)": dict(steps=1600, cycles=6, temperature=1.0),
          "bayes_learned (cold)": dict(steps=800, cycles=3, temperature=0.01)}


class FakeGrid:
    """Accuracy rises with the steps as ``curve`` says; records every setting asked for."""

    def __init__(self, curve):
        self.curve, self.asked = curve, []

    def __call__(self, profile, task, settings, desc=None):
        self.asked += settings
        return pd.DataFrame([s | {"accuracy": self.curve(s["steps"]), "status": "ok"} for s in settings])


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(own_budget, "retuned", lambda rec, arm, n: {
        "approach": arm.split(" ")[0], "n_train": n, "split": "holdout", **CHOSEN.get(arm, dict(steps=400))})
    return FakeGrid(lambda steps: {400: 0.50, 800: 0.53, 1600: 0.56, 3200: 0.575, 6400: 0.58}.get(steps, 0.5))


def test_the_budget_doubles_at_the_chosen_values_while_a_doubling_gains_a_point(fake):
    # gains: 400 -> 800 +3, 800 -> 1600 +3, 1600 -> 3200 +1.5, 3200 -> 6400 +0.5 points
    rec = Scripted(P, fake)
    assert own_budget.checked_budget(rec, "sgd_transfer", 1000) == 3200
    assert own_budget.checked_budget(rec, "bayes_learned (T1)", 1000) == 3200
    assert {s["split"] for s in fake.asked} == {"holdout"} and {s["seed"] for s in fake.asked} == {0, 1}
    capped = Scripted(get_profile("cpu", sampler_budget_max_steps=1600), fake)
    assert own_budget.checked_budget(capped, "sgd_transfer", 1000) == 1600


def test_a_budget_check_lacks_only_its_next_doubling(fake):
    rec = Scripted(P, fake, recorded=lambda s: s["steps"] <= 800)
    with pytest.raises(MissingRuns) as missing:
        own_budget.checked_budget(rec, "sgd_transfer", 1000)
    assert {(s.steps, s.seed) for s in missing.value.specs} == {(1600, 0), (1600, 1)}


def test_own_settings_run_on_the_test_split_at_the_checked_budget(fake):
    rec = Scripted(P, fake)
    s = own_budget.own_setting(rec, "bayes_learned (cold)", 300, seed=2)
    assert (s["split"], s["steps"], s["seed"], s["temperature"]) == ("test", 3200, 2, 0.01)
    assert own_budget.seeds_of(rec, "bayes_learned (T1)") == P.t1_seeds
    assert own_budget.seeds_of(rec, "map_learned") == P.seeds


def test_the_equal_compute_ensemble_has_one_member_per_kept_cycle_sharing_the_samplers_steps(fake):
    rec = Scripted(P, fake)
    own_budget.ensemble_own(rec, "cold")                 # the cold sampler: 3 cycles (2 kept) at 3 200 steps
    members = [s for s in fake.asked if s["split"] == "test"]
    assert {s["member"] for s in members} == {0, 1} and {s["steps"] for s in members} == {1600}
    assert {s["seed"] for s in members} == set(P.seeds) and {s["approach"] for s in members} == {"sgd_transfer"}
    fake.asked.clear()
    own_budget.ensemble_own(rec)                       # the paper's: bma_samples members at SGD transfer's budget
    members = [s for s in fake.asked if s["split"] == "test"]
    assert {s["member"] for s in members} == set(range(P.bma_samples)) and {s["steps"] for s in members} == {3200}


def test_the_ablation_turns_augmentation_off_for_the_sampler_arms_only(fake):
    rows = own_budget.t1_ablation(Scripted(P, fake))
    off = rows[~rows.augment]
    assert set(off.arm) == set(own_budget.ABLATION_ARMS) and set(rows[rows.augment].arm) == {
        "map_learned", *own_budget.ABLATION_ARMS}
    assert set(rows.n_train) == {P.study_n} and set(rows.seed) == set(P.seeds)


def test_c2_reruns_every_rank_and_the_isotropic_prior_at_the_learned_samplers_own_budget(fake, monkeypatch):
    monkeypatch.setattr(own_budget, "setting", lambda rec, approach, kind, regime, **kw: {"alpha": 0.1})
    rows = own_budget.rank_own(Scripted(P, fake))
    learned, iso = rows[rows.approach == "bayes_learned"], rows[rows.approach == "bayes_isotropic"]
    for regime, seeds, steps in (("cold", P.seeds, 3200), ("T1", P.t1_seeds, 3200)):      # the checked budgets
        mine = learned[learned.arm == f"bayes_learned ({regime})"]
        assert {(r, k) for r, k in zip(mine["rank"], mine.seed)} == {(r, k) for r in P.ranks for k in seeds}
        theirs = iso[iso.arm == f"bayes_isotropic ({regime})"]
        assert set(theirs.seed) == set(seeds) and set(theirs.steps) == set(mine.steps) == {steps}
    assert set(rows.split) == {"test"} and "scale" not in iso.dropna(axis=1, how="all")
    tuned = [s for s in fake.asked if s["approach"] == "bayes_isotropic" and s["split"] == "holdout"]
    assert {s["alpha"] for s in tuned} == {0.01, 0.1, 1.0} and {s["steps"] for s in tuned} == {3200}   # α re-chosen


def test_c3_sweeps_lambda_at_each_arms_own_budget_covering_what_its_holdout_tuning_tried(fake, monkeypatch):
    tried = pd.DataFrame({"coordinate": ["lr", "scale", "scale", "scale"], "scale": [1e7, 1e5, 1e7, 1e9],
                          "key": ["s", "a", "s", "b"]})        # the λ coordinate starts from the lr coordinate's run
    monkeypatch.setattr(own_budget, "retune_runs", lambda rec, arm, n: tried)
    rows = own_budget.scale_own(Scripted(P, fake))
    sampler = rows[rows.arm == "bayes_learned (T1)"]
    assert set(sampler.seed) == set(P.t1_seeds) and set(rows[rows.arm == "map_learned"].seed) == set(P.seeds)
    assert min(sampler.scale) <= 1.0 and max(sampler.scale) >= 1e9 and set(rows.split) == {"test"}
    assert set(sampler.steps) == {3200} and set(rows[rows.arm == "map_learned"].steps) == {3200}


def test_the_ablation_table_pairs_each_arm_with_map_by_seed():
    rows = pd.DataFrame([dict(arm=a, augment=aug, seed=s, accuracy=acc, status="ok") for a, aug, s, acc in (
        ("map_learned", True, 0, 0.60), ("map_learned", True, 1, 0.62),
        ("bayes_learned (T1)", True, 0, 0.50), ("bayes_learned (T1)", True, 1, 0.54),      # gaps -0.10, -0.08
        ("bayes_learned (T1)", False, 0, 0.57), ("bayes_learned (T1)", False, 1, 0.61))])  # gaps -0.03, -0.01
    table = own_budget.ablation_table(rows, second_gap=-0.18).set_index("augment")
    assert table.loc[True, "minus_map"] == pytest.approx(-0.09) and table.loc[False, "minus_map"] == pytest.approx(-0.02)
    assert table.loc[True, "minus_map_se"] == pytest.approx(0.01)          # SD of (-0.10, -0.08) over sqrt(2)
    assert table.loc[True, "share_of_second_gap_removed"] == pytest.approx(0.5)
    assert table.loc[False, "share_of_second_gap_removed"] == pytest.approx(1 - 0.02 / 0.18)


def test_chosen_lists_every_arm_and_size_with_its_checked_budget(fake):
    table = own_budget.chosen(Scripted(P, fake))
    assert len(table) == len(own_budget.ARMS) * len(P.sampler_budget_sizes)
    assert list(dict.fromkeys(table.arm)) == list(own_budget.ARMS)
    cold = table[(table.arm == "bayes_learned (cold)") & (table.n_train == 300)].iloc[0]
    assert (cold.tuned_steps, cold.steps, cold.temperature) == (CHOSEN["bayes_learned (cold)"]["steps"], 3200, 0.01)


def test_an_arm_at_the_cap_is_named_in_the_own_budget_verdicts(fake):
    capped = Scripted(get_profile("cpu", sampler_budget_max_steps=3200), fake)   # every check runs to 3 200: the cap
    assert "sgd_transfer at n = 100 trains the cap of 3200 steps" in own_budget.unconverged_note(capped)
    at_300 = own_budget.unconverged_note(capped, ("map_learned",), sizes=(300,))     # C3's kind of reading: one size
    assert at_300 == " Not converged (notebook 09): map_learned at n = 300 trains the cap of 3200 steps."
    fake.curve = lambda steps: 0.5                                # flat: every arm keeps its tuned budget
    assert own_budget.unconverged_note(Scripted(P, fake)) == ""


@pytest.mark.parametrize("missing, expected", [((), ("cold", "T1")), (("T1",), ("cold",)), (("cold",), ()),
                                               (("cold", "T1"), ())])
def test_a_regime_is_concluded_once_its_phase_and_the_optimisers_are_recorded(fake, missing, expected):
    # a T = 1 arm's runs, or a cold phase's (the optimisers' and the cold samplers'), not recorded
    phase_of = {arm: phase for phase, arms in own_budget.PHASES.items() for arm in arms}
    by_approach = {"cold": lambda s: s["approach"] != "bayes_learned" or s.get("temperature") != 1.0,
                   "T1": lambda s: s["approach"] == "bayes_learned" and s.get("temperature") == 1.0}
    rec = Scripted(P, fake, recorded=lambda s: not any(by_approach[m](s) for m in missing))
    assert phase_of["bayes_learned (T1)"] == "T1"
    assert own_budget.ready(rec) == expected


def test_a_regimes_verdicts_read_the_optimisers_and_its_own_samplers():
    assert own_budget.arms_of(("T1",)) == ("sgd_transfer", "map_learned", "map_nonlearned", "bayes_learned (T1)",
                                           "bayes_nonlearned (T1)")
    assert own_budget.arms_of(()) == ()
    assert set(own_budget.arms_of(("cold", "T1"))) == set(own_budget.ARMS)


def test_a_runs_sample_mean_is_the_mean_of_its_samples_accuracies():
    rows = pd.DataFrame({"sample_accuracy": ["0.50;0.60;0.70", None]})
    assert own_budget.sample_mean(rows).iloc[0] == pytest.approx(0.6) and pd.isna(own_budget.sample_mean(rows).iloc[1])


def test_the_profile_records_every_budget_its_check_doubled():
    """``checked_steps`` against a choices table: a doubled budget must be listed with its steps, no other arm."""
    P = get_profile("cpu", checked_steps=(("map_nonlearned", 1000, 3200),))
    choices = pd.DataFrame(dict(arm=["map_nonlearned", "map_learned", "bayes_nonlearned (cold)"], n_train=[1000] * 3,
                                tuned_steps=[400, 400, 1600], steps=[3200, 400, 6400]))
    assert own_budget.checked_mismatches(P, choices) == [
        "bayes_nonlearned (cold) at n = 1000: the budget check chose 6400 steps (tuned at 1600), the profile's "
        "checked_steps give None"]
    assert own_budget.checked_mismatches(P, choices.iloc[:2]) == []
    assert len(own_budget.checked_mismatches(P, choices.assign(steps=[400, 400, 1600]))) == 1    # listed, not doubled


def test_the_cpu_profile_holds_the_budgets_its_recorded_checks_chose():
    path = Path(__file__).resolve().parents[1] / "results" / "cpu" / "transfer" / "own_budget_choices.csv"
    if not path.exists():
        pytest.skip("no recorded third-protocol choices")
    assert own_budget.checked_mismatches(get_profile("cpu"), pd.read_csv(path)) == []


def test_c3s_holdout_table_holds_every_lambda_its_coordinate_tried_the_start_included(monkeypatch):
    # the scale coordinate starts from the lr coordinate's choice (key "s"): that run is listed under both
    runs = pd.DataFrame(dict(coordinate=["lr", "lr", "scale", "scale", "scale", "scale", "scale", "scale"],
                             scale=[1e7, 1e7, 1e5, 1e5, 1e7, 1e7, 1e9, 1e9], seed=[0, 1] * 4,
                             key=["s0", "s1", "a0", "a1", "s0", "s1", "b0", "b1"], status="ok",
                             accuracy=[0.58, 0.60, 0.57, 0.59, 0.58, 0.60, 0.59, 0.60], nll=1.0))
    monkeypatch.setattr(own_budget, "retune_runs", lambda rec, arm, n: runs)
    monkeypatch.setattr(own_budget, "scale_chosen", lambda rec: {"map_learned": 1e7, "bayes_learned": 1e5})
    table = own_budget.scale_holdout(Scripted(P, FakeGrid(lambda steps: 0.5))).set_index(["arm", "scale"])
    assert table.loc[("map_learned", 1e7), "accuracy"] == pytest.approx(0.59)      # the start, both seeds, once each
    assert table.loc[("map_learned", 1e9), "accuracy"] == pytest.approx(0.595)     # the best mean: not rule 5's choice
    assert table.chosen.groupby("arm").sum().to_dict() == {"bayes_learned (T1)": 1, "map_learned": 1}
    assert bool(table.loc[("bayes_learned (T1)", 1e5), "chosen"]) and len(table) == 6
