"""The typed run spec: every recorded run is exactly one spec and back, keys stay put when a field is added, versions
keep older runs apart, the migration keeps every other cell, and bad values get one clear error."""
import csv
import dataclasses
import shutil
from pathlib import Path

import pytest

from repro.experiments import migrate
from repro.experiments.algorithms import algorithm
from repro.experiments.spec import PROTOCOL, RunSpec, _added
from repro.profiles import get_profile
from repro.runner import Run

P = get_profile("smoke")
CPU = get_profile("cpu")
RECORDED = Path(__file__).resolve().parents[1] / "results" / "cpu"


def recorded_rows(task: str) -> list[dict[str, str]]:
    with open(RECORDED / task / "runs.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", ["transfer", "segmentation"])
def test_every_recorded_run_is_exactly_one_spec_and_back(task):
    rows = recorded_rows(task)
    assert len(rows) > 100                                     # the study's committed grids
    specs = [RunSpec.from_record(task, row) for row in rows]
    assert [s.key for s in specs] == [row["key"] for row in rows]
    assert len({s.key for s in specs}) == len(specs)            # no two runs are one spec
    for spec, row in zip(specs, rows):
        assert RunSpec.from_record(task, spec.record()) == spec
        assert Run(task, spec.record(), keyed=spec.keyed()).key == row["key"]
        # the migration made every field of its day an explicit cell (protocol included); a field added since may be
        # empty (its default) in the rows recorded before it
        assert all(row[name] for name in migrate.MIGRATED if name in spec.record())
    protocols = {s.protocol for s in specs}
    assert protocols == {1, 2}                                   # both protocols' runs stay readable


def test_adding_a_field_with_a_default_leaves_every_recorded_key_unchanged():
    Extended = dataclasses.make_dataclass("Extended", [("augment", bool, _added(True))], bases=(RunSpec,),
                                          frozen=True, kw_only=True)
    for task in ("transfer", "segmentation"):
        for row in recorded_rows(task):
            assert Extended.from_record(task, row).key == row["key"]
    spec = Extended.default(CPU, "transfer", "map_learned")
    assert spec.key == RunSpec.default(CPU, "transfer", "map_learned").key
    off = dataclasses.replace(spec, augment=False)
    assert off.keyed()["augment"] is False and off.key != spec.key


def test_a_version_keeps_runs_of_older_code_apart():
    v1 = RunSpec.default(CPU, "transfer", "bayes_learned")
    v2 = dataclasses.replace(v1, sampler_version=2)
    assert "sampler_version" not in v1.keyed() and v2.keyed()["sampler_version"] == 2 and v1.key != v2.key
    assert algorithm("sghmc").JITTER == {1: 0.0, 2: 0.5}
    with pytest.raises(ValueError, match="sampler_version of a 'sgd' run must be one of 1, got 2"):
        RunSpec.default(CPU, "transfer", "map_learned", sampler_version=2)
    with pytest.raises(ValueError, match="sampler_version of a 'sghmc' run must be one of 1, 2, got 3"):
        dataclasses.replace(v1, sampler_version=3)
    # a first-protocol run is read back as what it was, and never re-made by this code
    first = RunSpec.from_record("transfer", v1.record() | {"protocol": 1})
    assert first.protocol == 1 and {"burnin_cycles", "bn_refresh"}.isdisjoint(first.keyed()) and first.key != v1.key
    with pytest.raises(ValueError, match="belongs to protocol 1; this code makes protocol-2 runs only"):
        first.current()
    assert v1.current() is v1 and v1.protocol == PROTOCOL


@pytest.mark.parametrize("change, message", [
    (dict(steps=2.5), "steps must be an int, got 2.5"),
    (dict(seed=True), "seed must be an int, got True"),
    (dict(scale="1e3"), "scale must be a float, got '1e3'"),
    (dict(bn_refresh="yes"), "bn_refresh must be a bool, got 'yes'"),
    (dict(steps=-1), "steps must be >= 0, got -1"),
    (dict(precision="fp16"), "precision must be one of fp32, bf16, got 'fp16'"),
    (dict(dataset=None), "a transfer run names dataset and n_train"),
    (dict(protocol=3), "protocol must be one of 1, 2, got 3"),
])
def test_bad_values_get_one_clear_error(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(RunSpec.default(CPU, "transfer", "bayes_learned"), **change)


def test_numbers_are_typed_once_so_equal_settings_share_a_key():
    a = RunSpec.default(CPU, "transfer", "map_learned", steps=400.0, scale=1000, lr=1)
    b = RunSpec.default(CPU, "transfer", "map_learned", steps=400, scale=1e3, lr=1.0)
    assert a == b and a.key == b.key and type(a.steps) is int and type(a.scale) is float


def unmigrated(tmp_path: Path, rows: int = 40) -> Path:
    """A copy of the first recorded transfer rows as they were before the migration: without the columns it adds."""
    added = ("protocol", "evaluation_version", "key_version", "likelihood", "precision", "sampler_version")
    with open(RECORDED / "transfer" / "runs.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames if c not in added]
        kept = [r for r, _ in zip(reader, range(rows))]
    path = tmp_path / "cpu" / "transfer" / "runs.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in kept:        # a first-protocol run is told by its missing burnin_cycles, as before the migration
            w.writerow([r[c] if not (r.get("protocol") == "1" and c in ("burnin_cycles", "bn_refresh")) else ""
                        for c in columns])
    return path


def test_the_migration_makes_every_field_explicit_and_keeps_every_other_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    path = unmigrated(tmp_path)
    before = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert "protocol" not in before[0]
    counts = migrate.migrate(CPU, "transfer")
    assert counts["rows"] == len(before) and counts["changed"] == len(before)
    after = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    original = {r["key"]: r for r in recorded_rows("transfer")}
    for old, new in zip(before, after):
        assert {c: new[c] for c in old if old[c]} == {c: v for c, v in old.items() if v}   # nothing rewritten
        spec = RunSpec.from_record("transfer", new)
        assert spec.key == new["key"] and spec == RunSpec.from_record("transfer", original[new["key"]])
    text = path.read_bytes()
    assert migrate.migrate(CPU, "transfer")["changed"] == 0 and path.read_bytes() == text      # idempotent


def test_a_row_whose_key_its_spec_does_not_reproduce_stops_the_migration_before_any_write(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    path = unmigrated(tmp_path, rows=5)
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    rows[2]["lr"] = repr(float(rows[2]["lr"]) * 1.5)                  # a cell of its key edited by hand
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = path.read_bytes()
    with pytest.raises(ValueError, match="transfer row 4 .* nothing was written"):
        migrate.migrate(CPU, "transfer")
    assert path.read_bytes() == text
    shutil.rmtree(tmp_path / "cpu")
