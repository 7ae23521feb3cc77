"""What a batch will cost before it starts: ``python -m repro.reproduce --profile P --claims ... --dry-run``.

Each notebook's grids are planned without training (:func:`.grid.planning`): every run a study needs and the grid
has not recorded is counted, tuning included, as its own notebook's. A planned tuning stage keeps its first value and
no sweep or budget grid is extended, so the counts are those known to be needed now (a sweep that ends at an edge of
its grid, or a learning curve that has not flattened, adds runs later).

A run's cost is its steps times a per-step rate: on a profile with recorded runs, the median of
``wall_time_s / steps`` over its recorded runs of the same task and inference (map, sampler, variational), which
includes each run's evaluation (the sampler's BMA over its samples) and the load of the workers it ran beside; on a
profile without any (``paper`` on this machine), the assumption :data:`ASSUMED_SECONDS_PER_STEP`, whose source is
:data:`ASSUMPTION`. :func:`timing_check` tests the rates on the recorded runs themselves.
"""
from __future__ import annotations

import pandas as pd

from ..profiles import Profile
from ..runner import load_results
from . import tuning
from .approaches import lookup
from .grid import grid_csv, planning
from .studies import STAGES

# notebook -> the stages of repro.experiments.studies it runs (06 and 07 read 05's runs; 01 and 02 train no grid)
NOTEBOOK_STAGES = {"03_rank_ablation": ("C2",), "04_scale_sweep": ("C3",),
                   "05_five_way": ("five_way", "temperature", "mid_slope", "C10", "C10_equal", "fashion"),
                   "08_segmentation": ("segmentation",), "09_training_budget": ("budget",), "10_learned_scale": ("E1",)}
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
    for task in ("transfer", "segmentation"):
        rows = load_results(grid_csv(profile, task))
        if not rows.empty:
            out[task] = rows[(rows.status == "ok") & (rows.steps > 0)]
    return out


def seconds_per_step(profile: Profile, recorded: dict[str, pd.DataFrame] | None = None) -> dict[tuple[str, str], float]:
    """(task, inference) -> median recorded wall seconds per step on ``profile`` (empty without recorded runs)."""
    rates = {}
    for task, ok in (recorded if recorded is not None else _recorded(profile)).items():
        for inference, g in ok.groupby([_class(task, a) for a in ok.approach]):
            rates[(task, inference)] = float((g.wall_time_s / g.steps).median())
    return rates


def _rate(rates: dict, task: str, inference: str) -> tuple[float, str]:
    """The per-step seconds of a run and where the number comes from."""
    if (task, inference) in rates:
        return rates[(task, inference)], "recorded"
    same_task = [v for (t, _), v in rates.items() if t == task]
    if same_task:
        return max(same_task), "recorded (another inference's)"
    return ASSUMED_SECONDS_PER_STEP[task], "assumed"


def plan(profile: Profile, notebooks: list[str]) -> pd.DataFrame:
    """One row per planned run (not yet recorded) of ``notebooks``: notebook, task, approach, steps, estimated
    seconds and their basis."""
    rates, out = seconds_per_step(profile), []
    try:
        with planning() as planned:
            for notebook in notebooks:
                for stage in NOTEBOOK_STAGES.get(notebook, ()):
                    before = len(planned)
                    STAGES[stage](profile)
                    for task, run in planned[before:]:
                        rate, basis = _rate(rates, task, _class(task, run["approach"]))
                        out.append(dict(notebook=notebook, task=task, approach=run["approach"], steps=run["steps"],
                                        seconds=rate * run["steps"], basis=basis))
    finally:
        tuning.clear_cache()
    return pd.DataFrame(out, columns=["notebook", "task", "approach", "steps", "seconds", "basis"])


def cost_table(profile: Profile, notebooks: list[str]) -> pd.DataFrame:
    """Per notebook and grid: runs still to do and their estimated hours of one worker (CPU-hours for a
    single-threaded worker; GPU-hours on the paper profile), then a total row."""
    runs = plan(profile, notebooks)
    table = (runs.groupby(["notebook", "task"], sort=False)
             .agg(runs_to_do=("steps", "size"), steps=("steps", "sum"), hours=("seconds", lambda s: s.sum() / 3600),
                  basis=("basis", lambda b: ", ".join(sorted(set(b)))))
             .reset_index())
    total = pd.DataFrame([dict(notebook="total", task="", runs_to_do=int(table.runs_to_do.sum()),
                               steps=int(table.steps.sum()), hours=float(table.hours.sum()), basis="")])
    return pd.concat([table, total], ignore_index=True) if len(table) else total


def timing_check(profile: Profile) -> pd.DataFrame:
    """The rates tested on the recorded runs themselves (in sample): per grid, the recorded hours against the hours
    the rates give the same runs."""
    recorded, out = _recorded(profile), []
    rates = seconds_per_step(profile, recorded)
    for task, ok in recorded.items():
        model = sum(_rate(rates, task, _class(task, a))[0] * s for a, s in zip(ok.approach, ok.steps))
        out.append(dict(task=task, runs=len(ok), recorded_hours=ok.wall_time_s.sum() / 3600, model_hours=model / 3600))
    return pd.DataFrame(out).assign(error=lambda d: d.model_hours / d.recorded_hours - 1) if out else pd.DataFrame()
