"""The profile table: complete, internally consistent, smoke strictly smaller than cpu; lookup errors are clear."""
import dataclasses
import math

import pytest

from repro import profiles
from repro.models import BACKBONES
from repro.profiles import KNOBS, PROFILES, Profile, get_profile, results_dir

NAMES = ("smoke", "cpu", "paper")
OPTIONAL = {f.name for f in dataclasses.fields(Profile) if "None" in str(f.type)}


def test_profile_names():
    assert tuple(PROFILES) == NAMES
    assert all(p.name == name for name, p in PROFILES.items())
    assert profiles.DEFAULT_PROFILE == "cpu"


@pytest.mark.parametrize("name", NAMES)
def test_every_profile_has_every_knob(name):
    values = dataclasses.asdict(PROFILES[name])
    assert tuple(values) == KNOBS
    for knob, value in values.items():
        assert value is not None or knob in OPTIONAL, f"{name}.{knob} is None"
        if isinstance(value, tuple) and knob not in CHOSEN_LATER:
            assert len(value) > 0, f"{name}.{knob} is empty"


def _size(value):
    """A count knob as a number: None (= the whole split) is infinite, a tuple counts its entries."""
    if value is None:
        return math.inf
    return value


# knob -> how its size is measured. Every knob must be either here or in NOT_COUNTS (checked below), so a
# new count knob cannot slip past the smoke < cpu check.
COUNT_KNOBS = {
    "width": _size, "source_train_n": _size, "source_val_n": _size, "source_epochs": _size, "ssl_epochs": _size,
    "swag_epochs": _size, "swag_snapshots": _size, "swag_max_rank": _size, "batch_size": _size, "probe_n": _size, "probe_test_n": _size,
    "downstream_test_n": _size, "train_sizes": len, "fashion_sizes": len, "seeds": len, "t1_seeds": len, "ranks": len, "scales": len, "tuning_scales": len,
    "downstream_steps": lambda v: max(s for _, s in v), "budget_grid": max, "budget_sizes": len, "elbo_sizes": len,
    "budget_max_steps": _size, "cycles": _size, "bma_samples": _size, "geometry_random_directions": _size,
    "geometry_top_directions": _size, "geometry_points": _size, "geometry_test_n": _size, "geometry_bn_n": _size,
    "segmentation_size": math.prod, "downstream_batch_size": _size, "study_n": _size, "lr_grid": len,
    "factor_grid": len, "temperatures": len, "cold_temperatures": len, "tuning_seeds": _size, "segmentation_steps": _size, "segmentation_batch_size": _size,
    "decoder_channels": _size, "sampler_budget_sizes": len, "sampler_budget_max_steps": _size, "confirm_seeds": len,
}
# knobs a notebook fills once its rule has chosen (empty until then)
CHOSEN_LATER = {"sampler_steps", "checked_steps"}
# names, a pixel size both CPU profiles share (32 px), a fraction, a device, a burn-in both CPU profiles share (1 epoch),
# a switch notebook 09 sets, whether downstream training is compiled, whether notebook 09's rule sets the budgets, the
# sampler budgets notebook 09 chose, the budgets notebook 05's checks doubled
NOT_COUNTS = {"name", "model", "source_dataset", "image_size", "val_fraction", "device", "aspp_rates",
              "segmentation_dataset", "swag_burnin_epochs", "bn_refresh", "compile", "budget_rule", "sampler_steps",
              "checked_steps"}


def test_every_knob_is_classified():
    assert set(KNOBS) - set(COUNT_KNOBS) - NOT_COUNTS == set()
    assert set(COUNT_KNOBS) | NOT_COUNTS <= set(KNOBS)


@pytest.mark.parametrize("knob", [k for k in COUNT_KNOBS if k in KNOBS])
def test_smoke_is_smaller_than_cpu(knob):
    size = COUNT_KNOBS[knob]
    smoke, cpu = getattr(PROFILES["smoke"], knob), getattr(PROFILES["cpu"], knob)
    assert size(smoke) < size(cpu), f"{knob}: smoke {smoke} vs cpu {cpu}"


def test_smoke_largest_train_size_is_smaller():
    assert max(PROFILES["smoke"].train_sizes) < max(PROFILES["cpu"].train_sizes)


@pytest.mark.parametrize("name", NAMES)
def test_rank_invariants(name):
    p = PROFILES[name]
    assert p.swag_snapshots >= p.swag_max_rank
    assert max(p.ranks) <= p.swag_max_rank
    assert min(p.ranks) >= 0
    assert list(p.ranks) == sorted(set(p.ranks))


@pytest.mark.parametrize("name", NAMES)
def test_other_invariants(name):
    p = PROFILES[name]
    assert p.model in BACKBONES
    assert list(p.train_sizes) == sorted(set(p.train_sizes)) and min(p.train_sizes) > 0
    assert set(p.fashion_sizes) <= set(p.train_sizes) and p.study_n in p.fashion_sizes   # Fashion is tuned at study_n
    assert len(set(p.seeds)) == len(p.seeds)
    assert all(s >= 1 for s in p.scales)                       # lambda >= 1 (docs/conventions.md §1)
    assert 0 < p.val_fraction < 1
    assert 1 <= p.bma_samples and 1 <= p.cycles
    assert p.device in ("cpu", "cuda") and (p.device == "cpu") == (name != "paper")


def test_steps_for_takes_the_next_measured_size_up():
    p = get_profile("smoke", downstream_steps=((1000, 800), (100, 200), (5000, 3200)))
    assert [p.steps_for(n) for n in (10, 100, 101, 300, 1000, 4999, 5000, 50000)] == [200, 200, 800, 800, 800, 3200,
                                                                                      3200, 3200]


@pytest.mark.parametrize("name", NAMES)
def test_budget_invariants(name):
    p = PROFILES[name]
    sizes = [n for n, _ in p.downstream_steps]
    assert len(set(sizes)) == len(sizes) and all(s >= 1 for _, s in p.downstream_steps)
    steps = [s for _, s in sorted(p.downstream_steps)]
    assert steps == sorted(steps)                              # budgets grow with n: steps_for never under-trains
    assert list(p.budget_grid) == [p.budget_grid[0] * 2 ** i for i in range(len(p.budget_grid))]   # doubling
    assert p.budget_max_steps >= p.budget_grid[-1]
    # the cap is a point of the doubling grid, so a curve climbing to it takes it as its budget (chosen_budget)
    assert p.budget_max_steps in {p.budget_grid[0] * 2 ** i for i in range(30)}
    assert p.bma_samples % (p.cycles - 1 if p.cycles > 1 else 1) == 0   # samples spread evenly past the burn-in
    assert 0.0 in p.cold_temperatures and all(0 <= t < 1 for t in p.cold_temperatures)
    assert 1 <= p.tuning_seeds <= len(p.seeds)
    assert set(p.seeds) <= set(p.t1_seeds)                     # T = 1 arms get the seeds of every arm, and more


def test_budget_rule_matches_notebook_09():
    """The cpu profile's budgets are notebook 09's tables (once notebook 09 has chosen them on cpu)."""
    from repro.experiments import budget

    problems = budget.mismatches(PROFILES["cpu"])
    if problems and problems[0].startswith("notebook 09 has not chosen the budgets yet"):
        pytest.skip(problems[0])
    assert problems == []


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_profile("huge")
    assert "'huge'" in str(e.value)
    assert "smoke, cpu, paper" in str(e.value)


def test_unknown_knob_lists_valid_knobs():
    with pytest.raises(ValueError) as e:
        get_profile("smoke", epochs=3)
    msg = str(e.value)
    assert "epochs" in msg
    for knob in KNOBS:
        assert knob in msg


def test_overrides_apply_without_touching_the_table():
    p = get_profile("smoke", seeds=(7,), downstream_steps=((100, 1),))
    assert p.seeds == (7,) and p.steps_for(100) == 1 and p.name == "smoke"
    assert PROFILES["smoke"].seeds == (0, 1)
    assert get_profile(p) is not None and get_profile(p).seeds == (7,)
    assert get_profile(p, cycles=9).cycles == 9


def test_env_var_picks_the_default(monkeypatch):
    monkeypatch.setenv("REPRO_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    assert get_profile("paper").name == "paper"                # an explicit name wins
    monkeypatch.setenv("REPRO_PROFILE", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        get_profile()
    monkeypatch.delenv("REPRO_PROFILE")
    assert get_profile().name == "cpu"


def test_results_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "out"))
    path = results_dir(get_profile("smoke"))
    assert path == tmp_path / "out" / "smoke" and path.is_dir()
    assert results_dir(get_profile("cpu", seeds=(0,))) == tmp_path / "out" / "cpu"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_confirmatory_seeds_are_fresh(name):
    """E1's confirmatory runs use seeds no other run of the profile uses (notebook 10's registration)."""
    p = PROFILES[name]
    assert not set(p.confirm_seeds) & (set(p.seeds) | set(p.t1_seeds))
