"""What the recorded grids cost with today's code: ``python -m repro.bench grid`` (``make bench-grid``).

A stratified sample of a profile's *recorded* downstream runs (``per_group`` of each (task, split, approach) group)
is re-run with the current code in each training precision (:mod:`repro.compute`), each run's precisions back to
back so that machine drift hits them alike, by single-thread worker processes sharing one resumable re-time grid
(:func:`retime_csv`). From the re-timed sample the whole recorded grid's hours are projected per precision
(:func:`retime`), and :func:`precision_rule` applies the rule registered in README ("Performance") by which a training
precision is adopted for the grids made from then on.
"""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from .analysis.stats import finished
from .compute import PRECISIONS
from .profiles import Profile, results_root
from .runner import Run, load_results, run_grid

GRID_METRIC = {"transfer": "accuracy", "segmentation": "miou"}   # what a re-run is compared on, per task
RETIME_STUDY = "retime"      # the re-time grid: one row per (recorded run, precision), keyed by the recorded run's key
MARGIN = 0.01                # the rule's equivalence margin: one accuracy (mIoU) point
MIN_SAVING = 0.15            # ... and the least share of the projected CPU-hours it must save


def required_runs(profile: Profile) -> dict[str, tuple[str, dict]]:
    """``key -> (task, params)`` of every run the profile's notebooks read, tuning included.

    Every job of every stage reads one snapshot of the grids (:class:`repro.experiments.grid.Recorded`): they must
    already be recorded (a missing run raises; nothing runs).
    """
    from .experiments import grid, studies
    rec = grid.Recorded(profile)
    for _, job in studies.jobs(profile, studies.DEFAULT_ORDER):
        job(rec)
    return {key: (spec.task, spec.record()) for key, spec in rec.read.items()}


def retime_csv(profile: Profile) -> Path:
    """``results/bench/retime_<profile>_grid.csv``: the re-time grid (a ``run_grid`` CSV, so resumable)."""
    return results_root() / "bench" / f"retime_{profile.name}_grid.csv"


def _retime(profile: Profile, task: str, params: dict, precision: str) -> dict:
    """The headline metric and the process CPU time of one recorded run re-run with the current code in
    ``precision``; nothing of the run is saved (the runner records the wall time)."""
    from .experiments.workers import RUN
    from .experiments.spec import RunSpec
    c0 = time.process_time()
    out = RUN[task](profile, RunSpec.from_record(task, params | {"precision": precision}).current())
    return {"retimed_metric": out[GRID_METRIC[task]], "cpu_time_s": time.process_time() - c0}


def _retime_worker(job: tuple[Profile, dict[str, tuple[str, dict]], list[Run]]) -> None:
    """One worker of the re-time grid, single-threaded like a ``make studies`` worker; workers share the CSV."""
    profile, needed, runs = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(runs, lambda r: _retime(profile, *needed[r["run_key"]], r["precision"]), retime_csv(profile),
                 desc="re-time", shared=True)
    finally:
        torch.set_num_threads(threads)


def retime(P: Profile, per_group: int | None = 1, workers: int = 2,
           precisions: Sequence[str] = PRECISIONS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, re-timed runs): recorded versus re-timed hours of the profile's downstream grids per group and
    precision, and each re-timed run's recorded and new time and metric.

    ``per_group`` recorded runs of each group (``None``: every run) are re-run in each of ``precisions`` in the
    re-time grid, which resumes: a run re-timed before is not re-run (delete the CSV after changing the code). Runs
    go in a random order, so a partial re-time is a random sample of every group, and every run re-timed so far
    counts. Projected hours = the group's run count x the mean re-timed wall time (with every run re-timed: their
    sum), in ``projected_h_<precision>``; ``cpu_projected_h_<precision>`` from process CPU time. ``max_metric_diff``:
    the largest |recorded metric - that of the fp32 re-run|, the size of a re-run's rounding alone. Recorded runs no
    stage reads any more are listed as ``superseded``. ``workers`` > 1 re-times in that many spawned processes.
    """
    from .experiments.grid import grid_csv
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise ValueError(f"precisions must be among {', '.join(PRECISIONS)}, got {list(precisions)}")
    needed = required_runs(P)
    rows = pd.concat([load_results(grid_csv(P, s)) for s in GRID_METRIC if grid_csv(P, s).exists()], ignore_index=True)
    read = rows.key.isin(needed)
    rows["group"] = (rows.study + " · " + rows.split + " · " + rows.approach).where(read, rows.study + " · superseded")
    retimed = _ok(load_results(retime_csv(P)))
    live = rows[read].sample(frac=1.0, random_state=0)
    live = pd.concat([live[live.key.isin(retimed.run_key)], live[~live.key.isin(retimed.run_key)]])  # re-timed first
    sample = live if per_group is None else live.groupby("group").head(per_group)
    job = (P, {k: needed[k] for k in sample.key}, [Run(RETIME_STUDY, {"run_key": k, "precision": q})
                                                   for k in sample.key for q in precisions])
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_retime_worker, [job] * workers)
    else:
        _retime_worker(job)
    retimed = _ok(load_results(retime_csv(P)))
    # one row per recorded run re-timed in any precision, then each precision's times and metric beside it
    table = live[live.key.isin(retimed.run_key)][["group", "key", "study", "wall_time_s"]].copy()
    table["recorded_metric"] = [live.loc[i, GRID_METRIC[t]] for i, t in zip(table.index, table.study)]
    out = rows.groupby("group").agg(runs=("key", "size"), recorded_h=("wall_time_s", "sum"))
    out["recorded_h"] /= 3600
    is_live = ~out.index.str.endswith("superseded")
    total = {"runs": len(live), "recorded_h": live.wall_time_s.sum() / 3600}
    for q in precisions:
        mine = retimed[retimed.precision == q].set_index("run_key")
        table[f"retimed_s_{q}"] = table.key.map(mine.wall_time_s)
        table[f"retimed_cpu_s_{q}"] = table.key.map(mine.cpu_time_s)
        table[f"metric_{q}"] = table.key.map(mine.retimed_metric)
        per = table.groupby("group").agg(**{f"retimed_{q}": (f"retimed_s_{q}", "count"),
                                            f"retimed_sample_s_{q}": (f"retimed_s_{q}", "mean"),
                                            f"retimed_cpu_s_{q}": (f"retimed_cpu_s_{q}", "mean")})
        out = out.join(per)
        out[f"projected_h_{q}"] = out.runs * out[f"retimed_sample_s_{q}"] / 3600   # NaN for superseded: not re-run
        out[f"cpu_projected_h_{q}"] = out.runs * out[f"retimed_cpu_s_{q}"] / 3600
        total |= {f"retimed_{q}": int(table[f"retimed_s_{q}"].notna().sum()),   # NaN until every group has a run
                  f"projected_h_{q}": out[f"projected_h_{q}"][is_live].sum(skipna=False),
                  f"cpu_projected_h_{q}": out[f"cpu_projected_h_{q}"][is_live].sum(skipna=False)}
    if "fp32" in precisions:                 # a re-run's rounding alone: fp32 here against fp32 when recorded
        table["metric_abs_diff"] = (table.metric_fp32 - table.recorded_metric).abs()
        out = out.join(table.groupby("group").agg(max_metric_diff=("metric_abs_diff", "max")))
        total["max_metric_diff"] = table.metric_abs_diff.max()
    summary = pd.concat([out.reset_index(), pd.DataFrame([{"group": "total (read by the notebooks)", **total}])],
                        ignore_index=True)
    return summary, table.drop(columns="study").rename(columns={"wall_time_s": "recorded_s"}).sort_values(
        ["group", "key"], ignore_index=True)


def _ok(retimed: pd.DataFrame) -> pd.DataFrame:
    """The finished rows of a re-time grid (an empty frame with its columns when there are none)."""
    if retimed.empty:
        return pd.DataFrame(columns=["run_key", "precision", "wall_time_s", "cpu_time_s", "retimed_metric"])
    return finished(retimed)


def precision_rule(summary: pd.DataFrame, runs: pd.DataFrame, other: str = "bf16", margin: float = MARGIN,
                   min_saving: float = MIN_SAVING, alpha: float = 0.05) -> dict:
    """The registered rule for adopting training precision ``other`` (README, "Performance"), on :func:`retime`'s two
    tables: (a) the paired difference metric(other) - metric(fp32) over the runs re-timed in both has its
    (1 - 2 alpha) t interval inside +-``margin`` (TOST at level ``alpha``), and (b) the projected hours of the whole
    recorded grid fall by at least ``min_saving``. ``adopt`` is both. Beside them: the mean |difference| and the
    mean |fp32 re-run - recorded|, the difference a re-run's rounding alone makes."""
    from scipy import stats
    both = runs.dropna(subset=["metric_fp32", f"metric_{other}"])
    if len(both) < 2:
        raise ValueError(f"the rule needs runs re-timed in fp32 and {other}; {len(both)} of {len(runs)} are")
    d = both[f"metric_{other}"] - both.metric_fp32
    half = stats.t.ppf(1 - alpha, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    total = summary.iloc[-1]
    saving = 1 - total[f"projected_h_{other}"] / total.projected_h_fp32
    equivalent = bool(-margin < d.mean() - half and d.mean() + half < margin)
    return {"pairs": len(d), "of_runs": len(runs), "mean_diff": d.mean(), "ci_low": d.mean() - half,
            "ci_high": d.mean() + half, "equivalent": equivalent, "saving": saving,
            "adopt": equivalent and bool(saving >= min_saving), "mean_abs_diff": d.abs().mean(),
            "mean_abs_rerun_diff": (both.metric_fp32 - both.recorded_metric).abs().mean()}
