"""What a batch will cost before it starts: ``python -m repro.reproduce --profile P --claims ... --dry-run``.

Each notebook's stages are read without training (:func:`plan`): every job of a stage (:func:`.studies.jobs`) is
called on a snapshot of the grids, and the runs it lacks next (:class:`.grid.MissingRuns`) are counted, tuning
included, as its own notebook's. A study that adapts (a sweep extended at its edge, a budget doubled, a tuning stage
whose later values depend on the earlier) asks for its later runs only once the earlier are recorded, so the counts
are those that can start now; a job still waiting on them is counted as such (``jobs_waiting``).

A run's cost is a per-step rate times its steps plus a fixed evaluation overhead: on a profile with recorded runs,
the recorded training seconds per step of its runs of the same task and inference (map, sampler, variational) and
the mean ``wall_time_s - train_time_s`` of those on the same split (a sampler's BMA over its samples on the test
and shifted sets costs more than a MAP run's single pass on 200 validation images), both including the load of the
workers the runs ran beside; on a GPU profile without any (``paper`` on this machine), the assumption
:data:`ASSUMED_SECONDS_PER_STEP`, whose source is :data:`ASSUMPTION`, and no overhead; on a CPU profile without any
(``smoke`` in a fresh clone), none: its runs are listed, not priced. :func:`timing_check` tests the
model out of sample: fitted on all but the latest :data:`OUT_OF_SAMPLE_SHARE` of the runs by ``finished_at``, it
predicts those. The model carries the load its runs were recorded under (how many processes shared the cores), not
the load to come.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..analysis.stats import finished
from ..profiles import Profile
from ..runner import MissingPrerequisite, load_results
from .approaches import TASKS, lookup
from .grid import MissingRuns, Recorded, failed_keys, grid_csv
from .studies import NOTEBOOK_STAGES, jobs

# One GPU, per step, where no run has been recorded (the paper profile: ResNet-50 at 224 px, batch 16; segmentation
# at 513 x 513, batch 16).
ASSUMED_SECONDS_PER_STEP = {"transfer": 0.024, "segmentation": 0.125}
ASSUMPTION = ("assumed per-step time on one A100: NVIDIA DeepLearningExamples (PyTorch ConvNets README) trains "
              "ResNet-50 at 5 322 img/s in TF32 on 8 x A100 40GB, 665 img/s per GPU, so a 16-image step takes "
              "~24 ms; a 513 x 513 segmentation step has (513 / 224)^2 = 5.2 x the pixels, ~125 ms. Training steps only "
              "(no evaluation, e.g. a sampler's BMA) and optimistic: a 16-image batch uses a GPU less well than the "
              "benchmark's")


def _class(task: str, approach: str) -> str:
    return lookup(approach, task).inference


def _recorded(profile: Profile) -> dict[str, pd.DataFrame]:
    """task -> its finished runs on ``profile`` (tasks without any left out)."""
    out = {}
    for task in TASKS:
        rows = load_results(grid_csv(profile, task))
        if not rows.empty:
            out[task] = finished(rows)[lambda d: d.steps > 0]
    return out


OUT_OF_SAMPLE_SHARE = 0.2     # the latest runs the out-of-sample check predicts from the earlier ones


@dataclass(frozen=True)
class Rates:
    """The cost model of one profile's recorded runs: seconds per training step per (task, inference) and per (task,
    inference, training precision), and the evaluation overhead per (task, inference, split): ratios of sums and
    means, not medians, because what the model must get right is a grid's total, slow runs included."""

    step: dict[tuple[str, ...], float]
    overhead: dict[tuple[str, str, str], float]
    device: str = "cuda"     # where the runs train: the GPU assumption prices only a GPU profile's runs

    @classmethod
    def fit(cls, recorded: dict[str, pd.DataFrame]) -> "Rates":
        step, overhead = {}, {}
        for task, ok in recorded.items():
            ok = ok.assign(inference=[_class(task, a) for a in ok.approach])   # every row records its precision
            for inference, g in ok.groupby("inference"):
                step[(task, inference)] = float(g.train_time_s.sum() / g.steps.sum())
            for (inference, precision), g in ok.groupby(["inference", "precision"]):
                step[(task, inference, precision)] = float(g.train_time_s.sum() / g.steps.sum())
            for (inference, split), g in ok.groupby(["inference", "split"]):
                overhead[(task, inference, split)] = float((g.wall_time_s - g.train_time_s).clip(lower=0).mean())
        return cls(step, overhead)

    def seconds(self, task: str, approach: str, steps: int, split: str, precision: str = "fp32") -> tuple[float, str]:
        """A run's estimated wall seconds and where the rate comes from (its precision's rate where one is recorded)."""
        inference = _class(task, approach)
        if (task, inference, precision) in self.step:
            rate, basis = self.step[(task, inference, precision)], "recorded"
        elif (task, inference) in self.step:
            rate, basis = self.step[(task, inference)], "recorded"
        elif same_task := [v for key, v in self.step.items() if key[0] == task]:
            rate, basis = max(same_task), "recorded (another inference's)"
        elif self.device == "cuda":
            return ASSUMED_SECONDS_PER_STEP[task] * steps, "assumed"
        else:                 # a CPU profile before its first recorded run: no rate is known here
            return float("nan"), "none"
        # a split (or inference) never recorded costs the costliest recorded evaluation of its inference (of its task)
        fallback = ([v for (t, i, _), v in self.overhead.items() if (t, i) == (task, inference)]
                    or [v for (t, _, _), v in self.overhead.items() if t == task])
        overhead = self.overhead.get((task, inference, split), max(fallback, default=0.0))
        return rate * steps + overhead, basis


def rates(profile: Profile, recorded: dict[str, pd.DataFrame] | None = None) -> Rates:
    """The cost model fitted on ``profile``'s recorded runs (empty without any)."""
    fitted = Rates.fit(recorded if recorded is not None else _recorded(profile))
    return Rates(fitted.step, fitted.overhead, profile.device)


def plan(profile: Profile, notebooks: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What ``notebooks`` lack now: one row per run that can start (not yet recorded; each counted once, as the first
    notebook's that needs it) with notebook, task, approach, steps, estimated seconds, their basis and the run's key;
    and one row per notebook with its jobs still waiting (on those runs, or, ``blocked``, on a prerequisite such as notebook 09's
    budgets). A stage several notebooks read (05, 06 and 07 read the five-way grid) is planned once, as the first's."""
    model, rec, out, waiting, seen = rates(profile), Recorded(profile, retry=failed_keys(profile)), [], [], set()
    planned: set[str] = set()
    for notebook in notebooks:
        stages = tuple(s for s in NOTEBOOK_STAGES.get(notebook, ()) if s not in planned)
        planned.update(stages)
        pending, blocked = 0, []
        for _, job in jobs(profile, stages) if stages else ():
            try:
                job(rec)
                continue
            except MissingRuns as missing:
                pending += 1
                for spec in missing.specs:
                    if spec.key in seen:
                        continue
                    seen.add(spec.key)
                    seconds, basis = model.seconds(missing.task, spec.approach, spec.steps, spec.split, spec.precision)
                    out.append(dict(notebook=notebook, task=missing.task, approach=spec.approach, steps=spec.steps,
                                    seconds=seconds, basis=basis, key=spec.key))
            except MissingPrerequisite as e:
                pending += 1
                blocked.append(str(e).split(":")[0])
        if stages:
            waiting.append(dict(notebook=notebook, jobs_waiting=pending, blocked="; ".join(dict.fromkeys(blocked))))
    return (pd.DataFrame(out, columns=["notebook", "task", "approach", "steps", "seconds", "basis", "key"]),
            pd.DataFrame(waiting, columns=["notebook", "jobs_waiting", "blocked"]))


def cost_table(profile: Profile, notebooks: list[str]) -> pd.DataFrame:
    """Per notebook and grid: runs that can start now and their estimated hours of one worker (CPU-hours for a
    single-threaded worker; GPU-hours on the paper profile), the jobs still waiting, then a total row."""
    runs, waiting = plan(profile, notebooks)
    table = (runs.groupby(["notebook", "task"], sort=False)
             .agg(runs_to_do=("steps", "size"), steps=("steps", "sum"), hours=("seconds", lambda s: s.sum() / 3600),
                  basis=("basis", lambda b: ", ".join(sorted(set(b)))))
             .reset_index())
    table = waiting.merge(table, on="notebook", how="left").fillna({"task": "", "runs_to_do": 0, "steps": 0,
                                                                   "hours": 0.0, "basis": ""})
    table = table[(table.jobs_waiting > 0) | (table.runs_to_do > 0)]
    total = pd.DataFrame([dict(notebook="total", task="", runs_to_do=int(table.runs_to_do.sum()),
                               steps=int(table.steps.sum()), hours=float(table.hours.sum()), basis="",
                               jobs_waiting=int(table.jobs_waiting.sum()), blocked="")])
    columns = ["notebook", "task", "runs_to_do", "steps", "hours", "basis", "jobs_waiting", "blocked"]
    return pd.concat([table, total], ignore_index=True)[columns].astype({"runs_to_do": int, "steps": int})


def timing_check(profile: Profile) -> pd.DataFrame:
    """The cost model tested out of sample, per grid: fitted on the runs finished before the latest
    :data:`OUT_OF_SAMPLE_SHARE`, it predicts those; recorded hours against predicted. (In sample the totals would
    match by construction: the rates are ratios of sums.)"""
    recorded, out = _recorded(profile), []
    for task, ok in recorded.items():
        ok = ok.sort_values("finished_at", kind="stable")
        cut = len(ok) - max(1, round(OUT_OF_SAMPLE_SHARE * len(ok)))
        if cut < 1:
            continue
        model, scored = rates(profile, {task: ok.iloc[:cut]}), ok.iloc[cut:]
        hours = sum(model.seconds(task, r.approach, r.steps, r.split, r.precision)[0] for r in scored.itertuples()) / 3600
        out.append(dict(task=task, fitted_on=cut, predicted_runs=len(scored),
                        recorded_hours=scored.wall_time_s.sum() / 3600, model_hours=hours))
    return pd.DataFrame(out).assign(error=lambda d: d.model_hours / d.recorded_hours - 1) if out else pd.DataFrame()
