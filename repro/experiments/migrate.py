"""The one migration of the recorded grids to typed run specs: ``python -m repro.experiments.migrate --profile cpu``.

Before :class:`.spec.RunSpec`, a run's CSV row held the parameters its key was hashed on and nothing else: a parameter
added later was absent from the rows made before it, and the first protocol's runs (``burnin_cycles`` and
``bn_refresh`` absent) were told apart by that absence. The migration makes every field explicit: each row of
``<task>/runs.csv`` is read as its spec (its protocol the one its columns show), its key is checked to be the key
the spec computes (nothing is re-keyed: the spec's key scheme reproduces every recorded key), and the spec's
:meth:`~.spec.RunSpec.record` is written into the row, so that ``protocol``, ``precision``, ``sampler_version``,
``evaluation_version``, ``key_version`` and ``likelihood`` are columns of every row. Every other cell is kept as it
was, byte for byte, and the file is replaced atomically under the grid's lock. The prediction files, named by key,
are unchanged; the migration says which rows have none and which files belong to no row.

Running it again changes nothing (it is idempotent); a row whose key the spec does not reproduce stops it before
anything is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.predictions import predictions_dir
from ..cli import add_profile_argument, run_main
from ..profiles import Profile, get_profile
from ..runner import _cell, _locked, _read_rows, _write_rows
from .approaches import TASKS
from .grid import grid_csv
from .spec import RunSpec


# The fields of RunSpec on the day of the migration (2026-12-05): every row holds each of them that applies to it. A
# field added since is a column from its first run on, empty (its default, RunSpec.from_record) in earlier rows.
MIGRATED = ("approach", "prior_kind", "rank", "scale", "head_var", "alpha", "weight_decay", "dataset", "n_train", "seed",
            "split", "sampler", "temperature", "lr", "momentum", "steps", "batch_size", "cycles", "burnin_cycles",
            "bma_samples", "explore_fraction", "member", "bn_refresh", "likelihood", "precision", "prior_protocol",
            "sampler_version", "evaluation_version", "key_version", "protocol")


def spec_of_row(task: str, row: dict[str, str]) -> RunSpec:
    """The spec of a recorded row, migrated or not: an unmigrated row's protocol is 1 where it has no
    ``burnin_cycles`` (the first protocol's runs had none), else 2."""
    if not row.get("protocol"):
        row = row | {"protocol": "1" if not row.get("burnin_cycles") else "2"}
    return RunSpec.from_record(task, row)


def migrated(task: str, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` with every spec field explicit; a ``ValueError`` naming the first row whose key its spec does not
    reproduce."""
    out = []
    for i, row in enumerate(rows):
        spec = spec_of_row(task, row)
        if spec.key != row.get("key"):
            raise ValueError(f"{task} row {i + 2} (key {row.get('key')}) is spec {spec.keyed()} with key {spec.key}: "
                             f"nothing was written")
        out.append(row | {name: row[name] if row.get(name) else _cell(value) for name, value in spec.record().items()})
    return out


def migrate(profile: Profile, task: str) -> dict[str, int]:
    """Migrate ``task``'s grid of ``profile`` in place; counts of rows, rows changed, rows without a prediction file
    and prediction files without a row."""
    path = grid_csv(profile, task)
    if not path.exists():
        return {"rows": 0, "changed": 0, "without_predictions": 0, "orphan_predictions": 0}
    with _locked(path):
        columns, rows = _read_rows(path)
        new = migrated(task, rows)
        added = [c for row in new for c in row if c not in columns]
        columns += list(dict.fromkeys(added))
        changed = sum(a != b for a, b in zip(rows, new))
        if changed:
            _write_rows(path, columns, new)
    keys = {r["key"] for r in new if r.get("status") == "ok"}
    folder = predictions_dir(profile, task)
    files = {p.stem for p in Path(folder).glob("*.pt")} if Path(folder).exists() else set()
    return {"rows": len(new), "changed": changed, "without_predictions": len(keys - files),
            "orphan_predictions": len(files - {r["key"] for r in new})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.experiments.migrate", description=__doc__.splitlines()[0])
    add_profile_argument(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        profile = get_profile(args.profile)
        for task in TASKS:
            print(task, migrate(profile, task), flush=True)

    return run_main(body, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
