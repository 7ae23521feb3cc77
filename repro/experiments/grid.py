"""The downstream grids: one resumable grid per task (``transfer``, ``segmentation``) that every study shares.

A setting is a dict of :meth:`.spec.RunSpec.default` overrides. ``run_settings`` makes each a typed run spec (the
profile's defaults filled in, keyed on the source prior it starts from) and runs it through :func:`repro.runner.run_grid` into
``results/<profile>/<task>/runs.csv`` (predictions in ``<task>/predictions/<key>.pt``), so a setting two studies share
is trained once, and several processes can work through the same grid.

:func:`recording` replays studies without training: inside it, every run a study asks for must already be recorded,
and its key is collected (``repro.bench`` uses it to find the runs the notebooks read); a missing one raises
:class:`repro.runner.MissingPrerequisite`. :func:`planning` is the dry run (``repro.reproduce --dry-run``): inside it
a run that is not recorded is not trained but collected, and the study gets a :data:`PLACEHOLDER` row for it.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd

from ..analysis.predictions import predictions_dir
from ..profiles import Profile, results_dir
from ..runner import MissingPrerequisite, Run, load_results, run_grid

from .approaches import TASKS
from .pretrain import UNHASHED, prior_protocol
from .segmentation import run_segmentation
from .spec import RunSpec
from .transfer import run_transfer

RUN: dict[str, Callable[[Profile, RunSpec], dict]] = {"transfer": run_transfer, "segmentation": run_segmentation}
assert set(RUN) == set(TASKS)

_recording: contextvars.ContextVar[dict | None] = contextvars.ContextVar("recording", default=None)
_planning: contextvars.ContextVar[list | None] = contextvars.ContextVar("planning", default=None)
# What a study reads from a run that is only planned: equal scores everywhere, so that a tuning stage keeps its first
# value and a sweep or a budget grid is not extended (a dry run counts the runs known to be needed, not the extensions
# results may call for), and widths of 1 where a variational fit's would be.
PLACEHOLDER = {"status": "ok", "planned": True, "accuracy": 0.0, "nll": 0.0, "ece": 0.0, "miou": 0.0,
               "train_time_s": 0.0, "learned_scale": 1.0, "learned_head_var": 1.0, "learned_alpha": 1.0,
               "learned_sigma": 1.0}


def grid_csv(profile: Profile, task: str = "transfer") -> Path:
    return results_dir(profile) / task / "runs.csv"


def is_planning() -> bool:
    """Whether a dry run (:func:`planning`) is collecting runs instead of training them."""
    return _planning.get() is not None


def keyed_on_prior(profile: Profile, spec: RunSpec) -> RunSpec:
    """``spec`` with the protocol hash of the source prior the run starts from (``prior_protocol``), so that a run
    made with another prior has another key and is never read back for this one (see :mod:`.pretrain`); None for a
    run from a random initialisation, and for a prior fitted before protocols were hashed."""
    try:
        protocol = None if spec.prior_kind == "none" else prior_protocol(profile, spec.prior_kind)
    except MissingPrerequisite:
        if not is_planning():
            raise
        protocol = "planned"                 # a dry run before notebook 01: the prior does not exist yet
    return dataclasses.replace(spec, prior_protocol=None if protocol == UNHASHED else protocol)


def spec_of(profile: Profile, task: str, setting: dict) -> RunSpec:
    """The run spec of a setting on ``task``'s grid: every default filled in, keyed on its source prior."""
    return keyed_on_prior(profile, RunSpec.default(profile, task, **setting))


def as_run(spec: RunSpec) -> Run:
    """The runner's view of ``spec``: its record as the CSV columns, keyed on :meth:`.spec.RunSpec.keyed`."""
    return Run(spec.task, spec.record(), keyed=spec.keyed())


def runs_of(profile: Profile, task: str, settings: Iterable[dict]) -> list[Run]:
    """The runs of ``settings`` on ``task``'s grid, with every default filled in."""
    return [as_run(spec_of(profile, task, s)) for s in settings]


def run_settings(profile: Profile, task: str, settings: Iterable[dict], desc: str | None = None) -> pd.DataFrame:
    """Run (or read back) every setting on ``task``'s grid; one row per setting, in order."""
    runs, csv = runs_of(profile, task, settings), grid_csv(profile, task)
    needed = _recording.get()
    if needed is not None:
        missing = [r for r in runs if r.key not in set(load_results(csv).get("key", []))]
        if missing:
            raise MissingPrerequisite(f"{len(missing)} run(s) of {csv} are not recorded (e.g. {missing[0].params})",
                                      f"make studies PROFILE={profile.name}")
        needed.update({r.key: (r.study, r.params) for r in runs})
    if (plan := _planning.get()) is not None:
        done = load_results(csv)
        done = done[done.status == "ok"] if not done.empty else done
        recorded = set() if done.empty else set(done.key)
        missing = list(dict.fromkeys(r for r in runs if r.key not in recorded))     # a run asked for twice: once
        planned = set(plan)
        plan.extend((task, r) for r in missing if (task, r) not in planned)
        fake = pd.DataFrame([{"study": r.study, **r.params, "key": r.key, **PLACEHOLDER} for r in missing])
        rows = pd.concat([done, fake], ignore_index=True) if not done.empty else fake
        order = {r.key: i for i, r in enumerate(runs)}
        rows = rows[rows.key.isin(order)].drop_duplicates("key")
        return rows.iloc[rows.key.map(order).argsort(kind="stable")].reset_index(drop=True)
    return run_grid(runs, lambda r: RUN[task](profile, RunSpec.from_record(task, r.params).current()), csv, predictions_dir=predictions_dir(profile, task),
                    desc=desc, shared=True)


@contextlib.contextmanager
def planning() -> Iterator[list[tuple[str, Run]]]:
    """Inside: no run is trained; every (task, run) a study needs that is not recorded is collected, in order (the
    dry run). Choices made inside rest on placeholder rows: clear :mod:`.tuning`'s cache after it."""
    planned: list[tuple[str, Run]] = []
    token = _planning.set(planned)
    try:
        yield planned
    finally:
        _planning.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, tuple[str, dict]]]:
    """Inside: studies only read recorded runs (a missing one raises) and ``key -> (task, params)`` of each is kept."""
    needed: dict[str, tuple[str, dict]] = {}
    token = _recording.set(needed)
    try:
        yield needed
    finally:
        _recording.reset(token)
