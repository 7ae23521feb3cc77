"""Notebook 09's pre-registered budget rule, on simulated learning curves whose flattening point is known."""
import math

import pandas as pd
import pytest

from repro.experiments import budget
from repro.experiments.grid import Recorded


def saturating(steps: int, ceiling: float = 0.8, scale: float = 400.0) -> float:
    """A learning curve acc = ceiling (1 - exp(-steps / scale)): doubling B gains ceiling (e^-B/s - e^-2B/s)."""
    return ceiling * (1 - math.exp(-steps / scale))


def first_flat(scale: float, grid, ceiling: float = 0.8) -> int | None:
    """The closed form of the rule on that curve: the smallest B (with 2B on the grid) where
    ceiling (e^-B/s - e^-2B/s) < 0.01; None if there is none."""
    return next((b for b in grid if 2 * b in grid
                 and ceiling * (math.exp(-b / scale) - math.exp(-2 * b / scale)) < budget.THRESHOLD), None)


GRID = [200 * 2 ** i for i in range(7)]


@pytest.mark.parametrize("scale, expected", [(50.0, 400), (400.0, 3200), (1000.0, 6400), (1500.0, None)])
def test_rule_finds_where_doubling_stops_paying(scale, expected):
    curve = pd.Series({b: saturating(b, scale=scale) for b in GRID})
    assert first_flat(scale, GRID) == expected                 # the simulated truth, worked out by hand above
    assert budget.chosen_budget(curve) == expected


def test_rule_waits_while_the_curve_still_climbs():
    curve = pd.Series({b: 0.1 * math.log2(b) for b in GRID[:4]})      # +0.1 per doubling: never flat
    assert budget.chosen_budget(curve) is None
    assert budget.chosen_budget(pd.Series({200: 0.5})) is None        # one point: no doubling to judge


def test_a_curve_still_climbing_at_the_cap_takes_the_cap_and_is_marked_not_converged():
    climbing = pd.Series({b: 0.1 * math.log2(b) for b in GRID[:3]})       # 200, 400, 800: +0.1 per doubling
    assert budget.chosen_budget(climbing, cap=800) == 800
    assert budget.chosen_budget(climbing, cap=1600) is None               # the cap not reached yet: keep doubling
    flat = pd.Series({b: saturating(b, scale=50.0) for b in GRID[:3]})
    assert budget.chosen_budget(flat, cap=800) == 400                     # a flat curve: the rule, not the cap
    rows = _table({"sgd_transfer": 50.0, "map_learned": lambda b: 0.05 * math.log2(b)}, grid=GRID[:3])
    b = budget.budgets(budget.curves(rows), cap=800).iloc[0]
    assert (b.sgd_transfer, b.map_learned, b.budget, b.converged) == (400, 800, 800, False)
    assert bool(budget.budgets(budget.curves(_table({"sgd_transfer": 50.0, "map_learned": 50.0}, grid=GRID[:3])),
                               cap=800).iloc[0].converged)


def test_rule_takes_the_first_flat_doubling_even_if_a_later_one_climbs():
    # a dip then a late climb (noise): the rule as registered takes the first doubling that gains < 1 point
    curve = pd.Series({200: 0.50, 400: 0.60, 800: 0.605, 1600: 0.64, 3200: 0.645})
    assert budget.chosen_budget(curve) == 400


def _table(curves: dict, grid=GRID, n=1000, seeds=2, noise=0.0) -> pd.DataFrame:
    """Finished runs of every rule arm: its curve (a scale of :func:`saturating`, or a function of the steps) plus
    +-noise alternating over seeds."""
    def acc(curve, b):
        return curve(b) if callable(curve) else saturating(b, scale=curve)
    rows = [{"n_train": n, "approach": arm, "temperature": 0.0, "steps": b, "seed": s, "status": "ok",
             "accuracy": acc(curve, b) + noise * (-1) ** s, "nll": 1.0}
            for arm, curve in curves.items() for b in grid for s in range(seeds)]
    return pd.DataFrame(rows)


def test_size_budget_is_the_largest_arm_budget_and_seeds_are_averaged():
    scales = {"sgd_transfer": 100.0, "map_learned": 400.0}
    rows = _table(scales, noise=0.05)                # seed noise that cancels in the mean
    b = budget.budgets(budget.curves(rows)).iloc[0]
    assert [b[a] for a in budget.RULE_ARMS] == [first_flat(s, GRID) for s in scales.values()]
    assert b.budget == first_flat(400.0, GRID) == 3200


def test_the_from_scratch_arm_is_reported_not_followed():
    # amended rule: MAP + non-learned climbs 5 points per doubling; the size's budget is the rule arms', and the
    # non-learned arm's gain over the last doubling at that budget is reported
    climbing = lambda b: 0.05 * math.log2(b)
    rows = _table({"sgd_transfer": 50.0, "map_learned": 50.0, "map_nonlearned": climbing}, grid=GRID[:3])
    b = budget.budgets(budget.curves(rows)).iloc[0]
    assert b.sgd_transfer == b.map_learned == b.budget == 400
    assert b.map_nonlearned_gain == pytest.approx(0.05)
    rows = _table({"sgd_transfer": 50.0, "map_learned": lambda b: 0.05 * math.log2(b)}, grid=GRID[:3])
    assert pd.isna(budget.budgets(budget.curves(rows)).iloc[0].budget)   # a rule arm still climbing: no budget yet


def test_sampler_arms_are_named_by_temperature_and_kept_out_of_the_rule():
    rows = _table({"sgd_transfer": 100.0, "map_learned": 100.0, "map_nonlearned": 100.0})
    sampler = rows[rows.approach == "sgd_transfer"].assign(approach="bayes_learned", temperature=1.0, accuracy=0.0)
    table = budget.curves(pd.concat([rows, sampler]))
    assert "bayes_learned (T1)" in set(table.arm)
    assert budget.budgets(table).iloc[0].budget == first_flat(100.0, GRID)


def test_cycle_check_flags_a_cycle_that_ends_untrained():
    samples = pd.DataFrame([{"n_train": 100, "arm": "bayes_learned (T1)", "steps": 800, "cycles": 4, "seed": 0,
                             "cycle": c, "accuracy": acc} for c, acc in ((1, 0.60), (2, 0.61), (3, 0.57))]
                           + [{"n_train": 100, "arm": "bayes_learned (cold)", "steps": 800, "cycles": 4, "seed": 0,
                               "cycle": c, "accuracy": acc} for c, acc in ((1, 0.60), (2, 0.59), (3, 0.595))])
    checked = budget.cycle_check(samples, pd.DataFrame({"n_train": [100], "budget": [800]})).set_index("arm")
    assert not checked.loc["bayes_learned (T1)", "trained_every_cycle"]        # 3 points below the first kept cycle
    assert checked.loc["bayes_learned (cold)", "trained_every_cycle"]            # 1 point: within the tolerance
    assert set(checked.cycles) == {4}                                           # what the profile is checked against


@pytest.mark.parametrize("gain, nll_change, adopt", [(0.006, -0.01, True), (0.004, -0.01, False), (0.02, 0.01, False)])
def test_bn_refresh_rule(gain, nll_change, adopt):
    bn = pd.DataFrame({"gain": [gain, gain], "nll_change": [nll_change, nll_change]})
    assert budget.adopt_bn_refresh(bn) is adopt


def test_the_grids_wait_for_the_budgets_notebook_09_chose(tmp_path, monkeypatch):
    from repro.profiles import get_profile
    from repro.runner import MissingPrerequisite

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    budget.require_budgets(get_profile("smoke"))         # smoke's budgets stand: notebook 09's rule does not set them
    P = get_profile("smoke", downstream_steps=((100, 400), (300, 800)), segmentation_steps=200, budget_rule=True)
    with pytest.raises(MissingPrerequisite, match="notebook 09 has not chosen the budgets yet") as e:
        budget.require_budgets(P)
    assert e.value.command == "python -m repro.reproduce --profile smoke --notebooks 09"     # what builds its tables
    folder = tmp_path / "smoke" / "training_budget"
    folder.mkdir(parents=True)
    pd.DataFrame({"budget": [200]}).to_csv(folder / "segmentation_budget.csv", index=False)
    pd.DataFrame({"n_train": [100], "budget": [400]}).to_csv(folder / "budgets.csv", index=False)
    cycles = dict(n_train=100, arm="bayes_learned (T1)", cycles=3, first_kept_cycle=0.60, worst_later_cycle=0.59)
    pd.DataFrame([cycles | {"trained_every_cycle": True}]).to_csv(folder / "cycle_check.csv", index=False)
    assert "no bn_refresh_decision.csv" in budget.mismatches(P)[0]
    pd.DataFrame({"adopt": [False]}).to_csv(folder / "bn_refresh_decision.csv", index=False)
    assert budget.mismatches(get_profile("smoke", downstream_steps=((100, 400), (300, 800)), segmentation_steps=200,
                                         cycles=5, budget_rule=True)) == ["notebook 09's sampler runs had 3 cycles, the profile gives 5"]
    pd.DataFrame({"adopt": [False]}).to_csv(folder / "bn_refresh_decision.csv", index=False)
    budget.require_budgets(P)                                          # the profile holds the chosen budgets
    pd.DataFrame({"adopt": [True]}).to_csv(folder / "bn_refresh_decision.csv", index=False)
    assert budget.mismatches(P) == ["rule 5 adopted BatchNorm statistics re-estimated per sample, the profile's "
                                    "bn_refresh is False"]
    budget.require_budgets(get_profile("smoke", downstream_steps=((100, 400), (300, 800)), segmentation_steps=200,
                                       bn_refresh=True, budget_rule=True))
    pd.DataFrame([cycles | {"worst_later_cycle": 0.55, "trained_every_cycle": False}]).to_csv(
        folder / "cycle_check.csv", index=False)
    pd.DataFrame({"adopt": [False]}).to_csv(folder / "bn_refresh_decision.csv", index=False)
    assert budget.mismatches(P) == ["n = 100, bayes_learned (T1): a later cycle ends 0.050 below the first kept one "
                                    "(rule 3: fewer than 3 cycles)"]
    pd.DataFrame([cycles | {"trained_every_cycle": True}]).to_csv(folder / "cycle_check.csv", index=False)
    pd.DataFrame({"n_train": [100], "budget": [800]}).to_csv(folder / "budgets.csv", index=False)
    assert budget.mismatches(P) == ["n = 100: notebook 09 chose 800 steps, the profile gives 400"]
    pd.DataFrame({"n_train": [100], "budget": [None]}).to_csv(folder / "budgets.csv", index=False)
    assert budget.mismatches(P) == ["n = 100: notebook 09 has not chosen a budget (its curves have not flattened)"]


def test_claims_comparing_unconverged_arms_say_so(tmp_path, monkeypatch):
    """The notes a verdict carries (``convergence_note``) come from notebook 09's tables: a reported arm still
    gaining a point per doubling at a size's budget, a size or segmentation stopped at the cap."""
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    P = get_profile("smoke")
    assert budget.convergence_note(P, "C4") == "" and budget.unconverged(P, "segmentation") == []   # no tables yet
    folder = tmp_path / "smoke" / "training_budget"
    folder.mkdir(parents=True)
    pd.DataFrame([dict(n_train=100, budget=200, converged=True, map_nonlearned_gain=0.004),
                  dict(n_train=1000, budget=800, converged=False, map_nonlearned_gain=0.049)]
                 ).to_csv(folder / "budgets.csv", index=False)
    pd.DataFrame({"budget": [800], "converged": [False]}).to_csv(folder / "segmentation_budget.csv", index=False)
    pd.DataFrame([dict(approach=a, steps=s, miou=m) for a, s, m in (
        ("sgd_transfer", 400, 0.468), ("sgd_transfer", 800, 0.514), ("map_learned", 400, 0.44),
        ("map_learned", 800, 0.511))]).to_csv(folder / "segmentation_curves.csv", index=False)
    assert budget.unconverged(P) == ["at n = 1000 the rule arms had not flattened by the cap of 800 steps",
                                     "at n = 1000 (5) MAP + non-learned still gained +0.049 from 800 to 1600 steps"]
    assert budget.convergence_note(P, "C9") == (
        " Not converged (notebook 09): segmentation trains 800 steps, the cap, where the validation mIoU of the last "
        "doubling still gained +0.046 ((3) SGD transfer), +0.071 ((2) MAP + learned).")
    assert budget.convergence_note(P, "C4").startswith(" Not converged (notebook 09): at n = 1000 the rule arms")
    assert budget.convergence_note(P, "C5") == budget.convergence_note(P, "C10") == ""   # no unconverged arm compared
    pd.DataFrame({"budget": [400], "converged": [True]}).to_csv(folder / "segmentation_budget.csv", index=False)
    assert budget.convergence_note(P, "C9") == ""


def test_the_profile_must_hold_each_sampler_arms_budget_once_notebook_09_chose_it(tmp_path, monkeypatch):
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    folder = tmp_path / "smoke" / "training_budget"
    folder.mkdir(parents=True)
    pd.DataFrame({"budget": [6]}).to_csv(folder / "segmentation_budget.csv", index=False)
    pd.DataFrame({"n_train": [300], "budget": [12]}).to_csv(folder / "budgets.csv", index=False)
    pd.DataFrame({"n_train": [100], "arm": ["bayes_learned (T1)"], "cycles": [3], "first_kept_cycle": [0.5],
                  "worst_later_cycle": [0.5], "trained_every_cycle": [True]}).to_csv(folder / "cycle_check.csv",
                                                                                       index=False)
    pd.DataFrame({"adopt": [False]}).to_csv(folder / "bn_refresh_decision.csv", index=False)
    P = get_profile("smoke", budget_rule=True, segmentation_steps=6)
    assert budget.mismatches(P) == []                       # before the third amendment's table exists
    pd.DataFrame({"n_train": [100, 100], "arm": ["bayes_learned (cold)", "bayes_learned (T1)"], "budget": [800, None],
                  }).to_csv(folder / "sampler_budgets.csv", index=False)
    assert budget.mismatches(P) == [
        "n = 100, bayes_learned (cold): notebook 09 chose 800 steps, the profile's sampler_steps give None",
        "n = 100, bayes_learned (T1): notebook 09 has not chosen its budget (its curve is still rising)"]
    held = get_profile("smoke", budget_rule=True, segmentation_steps=6, sampler_steps=(("bayes_learned (cold)", 100, 800),))
    assert budget.mismatches(held) == [budget.mismatches(P)[1]]


def test_the_sampler_budgets_print_as_the_profile_holds_them():
    table = pd.DataFrame({"n_train": [100, 1000], "arm": ["bayes_learned (cold)", "bayes_learned (T1)"],
                          "budget": pd.array([800, None], dtype="Int64")})
    assert budget.as_sampler_steps(table) == (("bayes_learned (cold)", 100, 800),)


def test_dropped_sizes_are_rule_1s_and_never_the_third_amendments(tmp_path, monkeypatch):
    """n = 5 000's fp32 curve was dropped; the sampler curves' n = 300 (bf16, the third amendment) was not."""
    from repro.profiles import get_profile

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    (tmp_path / "cpu" / "transfer").mkdir(parents=True)
    run = dict(study="transfer", split="holdout", status="ok", seed=0, nll=1.0, temperature=0.0, prior_kind="ssl")
    pd.DataFrame([run | dict(key="a", approach="map_learned", n_train=5000, steps=400, accuracy=0.6, precision="fp32"),
                  run | dict(key="b", approach="bayes_learned", n_train=300, steps=800, accuracy=0.4, precision="bf16",
                             temperature=0.01),
                  run | dict(key="c", approach="map_learned", n_train=1000, steps=400, accuracy=0.58, precision="fp32")]
                 ).to_csv(tmp_path / "cpu" / "transfer" / "runs.csv", index=False)
    dropped = budget.dropped_sizes(Recorded(get_profile("cpu")))
    assert list(dropped.n_train) == [5000] and list(dropped.arm) == ["map_learned"]
