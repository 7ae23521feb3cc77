"""The downstream grids, read: what a study needs, recorded or missing. Nothing here trains.

Every downstream run of a task (``transfer``, ``segmentation``) lives in one resumable grid,
``results/<profile>/<task>/runs.csv`` (predictions in ``<task>/predictions/<key>.pt``), so a setting two studies share
is trained once. A *setting* is a dict of :meth:`.spec.RunSpec.default` overrides; :func:`spec_of` makes it a typed
run spec keyed on the source prior it starts from.

A study is a function of :class:`Recorded`, a snapshot of a profile's grids: it asks for the rows of its settings
(:meth:`Recorded.rows`) and gets them in order, or, where one is not recorded, :class:`MissingRuns` naming the specs
and the command that makes them. A study that adapts (a sweep extended at its edge, a budget doubled) asks again with
the next settings once the first are answered, so the specs it lacks are always the next ones it needs. Only the
workers (:mod:`.workers`) run specs: they call a study, make the runs it lacks, and call it again until it returns.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from ..profiles import Profile, results_dir
from ..runner import MissingPrerequisite, Run, load_results

from .approaches import TASKS
from .pretrain import UNHASHED, prior_protocol
from .spec import RunSpec


def grid_csv(profile: Profile, task: str = "transfer") -> Path:
    return results_dir(profile) / task / "runs.csv"


def keyed_on_prior(profile: Profile, spec: RunSpec) -> RunSpec:
    """``spec`` with the protocol hash of the source prior the run starts from (``prior_protocol``), so that a run
    made with another prior has another key and is never read back for this one (see :mod:`.pretrain`); None for a
    run from a random initialisation, and for a prior fitted before protocols were hashed."""
    protocol = None if spec.prior_kind == "none" else prior_protocol(profile, spec.prior_kind)
    return dataclasses.replace(spec, prior_protocol=None if protocol == UNHASHED else protocol)


def spec_of(profile: Profile, task: str, setting: dict) -> RunSpec:
    """The run spec of a setting on ``task``'s grid: every default filled in, keyed on its source prior."""
    return keyed_on_prior(profile, RunSpec.default(profile, task, **setting))


def as_run(spec: RunSpec) -> Run:
    """The runner's view of ``spec``: its record as the CSV columns, keyed on :meth:`.spec.RunSpec.keyed`."""
    return Run(spec.task, spec.record(), keyed=spec.keyed())


def studies_command(profile: Profile, stages: Sequence[str] = ()) -> str:
    """The command that makes a profile's missing runs (of ``stages``, where known)."""
    return f"make studies PROFILE={profile.name}" + (f" STAGES={','.join(stages)}" if stages else "")


def failed_keys(profile: Profile) -> set[str]:
    """Keys of the runs recorded as failed on ``profile``'s grids (a worker retries each once; a dry run counts them)."""
    out = set()
    for task in TASKS:
        rows = load_results(grid_csv(profile, task))
        out |= set() if rows.empty else set(rows.key[rows.status != "ok"])
    return out


class MissingRuns(MissingPrerequisite):
    """Runs a study needs that ``task``'s grid has not recorded: ``specs``, in the order the study asked for them."""

    def __init__(self, profile: Profile, task: str, specs: Sequence[RunSpec], desc: str | None = None,
                 stages: Sequence[str] = ()):
        self.task, self.specs, self.desc = task, tuple(specs), desc
        first = ", ".join(f"{k}={v}" for k, v in specs[0].keyed().items() if k in _SHOWN)
        super().__init__(f"{len(specs)} run(s) of {grid_csv(profile, task)} are not recorded"
                         f"{f' ({desc})' if desc else ''}, e.g. {first}", studies_command(profile, stages))


_SHOWN = ("approach", "prior_kind", "n_train", "seed", "split", "steps", "lr", "scale", "alpha", "head_var",
          "temperature", "cycles", "member", "augment")     # what a MissingRuns message shows of its first spec


class Recorded:
    """A snapshot of ``profile``'s grids, read once per task when first asked: the rows of recorded runs.

    ``retry``: keys of failed runs to treat as missing (a worker retries the failures it found at its start, once).
    ``stages``: the stages whose workers make what is missing (named in :class:`MissingRuns`' command).
    :meth:`memo` keeps a study's answer for the snapshot's life, so a choice several studies read is made once.
    ``read``: the spec of every run read so far, by key (what a notebook depends on).
    """

    def __init__(self, profile: Profile, retry: Iterable[str] = (), stages: Sequence[str] = ()):
        self.profile, self.retry, self.stages = profile, frozenset(retry), tuple(stages)
        self.read: dict[str, RunSpec] = {}
        self._tables: dict[str, pd.DataFrame] = {}
        self._memo: dict[tuple, Any] = {}

    def table(self, task: str = "transfer") -> pd.DataFrame:
        """Every recorded row of ``task``'s grid (failed ones included), indexed by key."""
        if task not in self._tables:
            rows = load_results(grid_csv(self.profile, task))
            self._tables[task] = rows.set_index("key", drop=False) if not rows.empty else rows
        return self._tables[task]

    def rows(self, task: str, settings: Iterable[dict], desc: str | None = None) -> pd.DataFrame:
        """The recorded row of every setting on ``task``'s grid, in order (a setting asked for twice: once), failed
        ones included (their ``status`` says so); :class:`MissingRuns` where one is not recorded."""
        specs = list(dict.fromkeys(spec_of(self.profile, task, s) for s in settings))
        table = self.table(task)
        keys = [s.key for s in specs]
        missing = [s for s, k in zip(specs, keys) if table.empty or k not in table.index or k in self.retry]
        if missing:
            raise MissingRuns(self.profile, task, missing, desc, self.stages)
        self.read.update(zip(keys, specs))
        return table.loc[keys].reset_index(drop=True)

    def each(self, jobs: Iterable[Callable[["Recorded"], Any]]) -> list:
        """Every job's answer, in order, asking for the missing runs of all of them at once (one
        :class:`MissingRuns`): jobs that are each a sequential chain (a fit's doubling, an arm's tuning, budget check
        and test runs) run side by side, and no worker waits on one chain while another has runs to make."""
        out, missing = [], []
        for job in jobs:
            try:
                out.append(job(self))
            except MissingRuns as m:
                missing.append(m)
        if missing:
            specs = list(dict.fromkeys(s for m in missing for s in m.specs))
            raise MissingRuns(self.profile, missing[0].task, specs, missing[0].desc, self.stages)
        return out

    def memo(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(self, *args)``, computed once per snapshot (an answer that needs missing runs is not kept)."""
        key = (fn, args)
        if key not in self._memo:
            self._memo[key] = fn(self, *args)
        return self._memo[key]

    def complete(self, study: Callable[["Recorded"], Any]) -> bool:
        """Whether every run ``study`` needs is recorded (it is called, and reads only)."""
        try:
            study(self)
        except MissingRuns:
            return False
        return True
