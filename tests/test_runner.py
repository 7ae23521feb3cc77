"""The resumable grid: skip finished runs, record failures, survive SIGKILL/SIGTERM, save predictions atomically."""
import csv
import json
import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repro.runner import MissingPrerequisite, Run, _append_row, completed_keys, load_results, run_grid
from repro.train import DivergenceError

ROOT = Path(__file__).resolve().parents[1]


def counting(fn=None):
    """Wrap ``fn`` (default: a metric from the params) and count its calls."""
    calls = []

    def wrapped(run):
        calls.append(run.key)
        return fn(run) if fn else {"acc": run["i"] / 10}
    wrapped.calls = calls
    return wrapped


def raw_rows(path):
    """Parse the CSV with the csv module and check that every row has exactly the header's fields."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body), "partial or ragged row"
    return header, body


def no_temp_files(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------------------------ Run

def test_run_key_is_stable_hashable_and_type_sensitive():
    a = Run("s", {"lr": 0.1, "seed": 0, "approach": "learned"})
    b = Run("s", {"approach": "learned", "seed": 0, "lr": 0.1})
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.key == "523af7db0b19"  # changing the canonical form would orphan every stored result
    assert len({a, b}) == 1 and a.params == {"approach": "learned", "lr": 0.1, "seed": 0}
    a.params["seed"] = 5  # a copy: the run is unchanged
    assert a["seed"] == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.task = "t"
    keys = {Run("s", {"x": v}).key for v in (1, 1.0, True, "1", None)} | {Run("t", {"x": 1}).key}
    assert len(keys) == 6
    assert Run("s", {"x": np.float64(0.5), "n": np.int64(3)}) == Run("s", {"x": 0.5, "n": 3})


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, torch.ones(2), np.zeros(3), object()])
def test_non_scalar_param_raises_naming_it(bad):
    with pytest.raises(ValueError, match="'rank'"):
        Run("s", {"seed": 0, "rank": bad})
    with pytest.raises(ValueError, match="'status'"):
        Run("s", {"status": 1})


# ------------------------------------------------------------------------------------------------ grid

def test_finished_runs_are_skipped(tmp_path):
    out = tmp_path / "r.csv"
    runs = [Run("s", {"i": i}) for i in range(4)]
    fn = counting()
    df = run_grid(runs, fn, out)
    assert len(fn.calls) == 4 and list(df["status"]) == ["ok"] * 4 and list(df["i"]) == [0, 1, 2, 3]
    assert completed_keys(out) == {r.key for r in runs}

    fn2 = counting()
    more = runs + [Run("s", {"i": 4}), Run("s", {"i": 5})]
    df = run_grid(more[::-1], fn2, out)  # rows come back in the order asked
    assert sorted(fn2.calls) == sorted([more[4].key, more[5].key])
    assert list(df["i"]) == [5, 4, 3, 2, 1, 0]
    assert list(run_grid(runs[:2], fn2, out)["i"]) == [0, 1] and len(fn2.calls) == 2  # subset, no new calls

    row = load_results(out).iloc[0]
    assert row["study"] == "s" and row["wall_time_s"] >= 0 and "T" in row["finished_at"]


def test_duplicates_collapsed(tmp_path):
    fn = counting()
    r = Run("s", {"i": 1, "seed": 0})
    df = run_grid([r, r, Run("s", {"seed": 0, "i": 1})], fn, tmp_path / "r.csv")
    assert len(fn.calls) == 1 and len(df) == 1


def test_failed_run_is_recorded_and_grid_continues(tmp_path):
    out = tmp_path / "r.csv"
    runs = [Run("s", {"i": i, "lr": 0.5}) for i in range(4)]

    def diverge(run):
        if run["i"] == 1:
            raise DivergenceError("loss became nan\nat step 7")
        return {"acc": 0.9}
    fn = counting(diverge)
    df = run_grid(runs, fn, out)
    assert len(fn.calls) == 4
    assert list(df["status"]) == ["ok", "failed: DivergenceError: loss became nan", "ok", "ok"]
    failed = df.iloc[1]
    assert failed["i"] == 1 and failed["lr"] == 0.5 and pd.isna(failed["acc"])  # settings kept, no metrics
    assert completed_keys(out) == {runs[i].key for i in (0, 2, 3)}

    fn2 = counting()
    run_grid(runs, fn2, out, retry_failed=False)
    run_grid(runs, fn2, out, retry_failed={runs[0].key})
    assert fn2.calls == []                         # left as it is (or not among the keys to retry) ...
    df = run_grid(runs, fn2, out)
    assert fn2.calls == [runs[1].key]              # ... or tried again by the next call
    assert list(df["status"]) == ["ok"] * 4 and df["key"].is_unique and len(load_results(out)) == 4
    assert df["previous_errors"].iloc[1].endswith("failed: DivergenceError: loss became nan")


def test_failed_run_is_retried_by_the_next_call_keeping_its_error(tmp_path):
    out = tmp_path / "r.csv"
    runs = [Run("s", {"i": i}) for i in range(3)]
    attempts = []

    def flaky(run):  # run 1 fails twice, then succeeds
        attempts.append(run["i"])
        if run["i"] == 1 and attempts.count(1) <= 2:
            raise OSError(f"disk full (attempt {attempts.count(1)})")
        return {"acc": 0.5}
    assert list(run_grid(runs, flaky, out)["status"]) == ["ok", "failed: OSError: disk full (attempt 1)", "ok"]
    assert attempts == [0, 1, 2]                                   # once per call, even when it fails
    run_grid(runs, flaky, out)
    df = run_grid(runs, flaky, out)
    assert attempts == [0, 1, 2, 1, 1] and list(df["status"]) == ["ok"] * 3
    history = df["previous_errors"].iloc[1].split(" | ")
    assert [h.split(" ", 1)[1] for h in history] == ["failed: OSError: disk full (attempt 1)",
                                                     "failed: OSError: disk full (attempt 2)"]
    assert "T" in history[0].split(" ", 1)[0]                      # each error with the time it happened
    assert pd.isna(df["previous_errors"].iloc[0]) and len(load_results(out)) == 3   # one row per key


def test_missing_prerequisite_stops_the_grid_and_heals_once_built(tmp_path):
    """fail, build the prerequisite, resume, succeed: the sequence of a grid started before notebook 01."""
    out, prior = tmp_path / "r.csv", tmp_path / "prior.pt"
    runs = [Run("s", {"i": i}) for i in range(5)]

    def needs_prior(run):
        if not prior.exists():
            raise MissingPrerequisite(f"{prior} does not exist", "make prior")
        return {"acc": float(prior.read_text()) + run["i"]}
    fn = counting(needs_prior)
    with pytest.raises(MissingPrerequisite, match="build it with `make prior`"):
        run_grid(runs, fn, out)
    assert len(fn.calls) == 1                                      # stopped at once: one failure, not five
    (row,) = load_results(out).to_dict("records")
    assert row["status"] == f"failed: MissingPrerequisite: {prior} does not exist: build it with `make prior`"
    prior.write_text("10")                                         # build it
    df = run_grid(runs, fn, out)                                   # resume
    assert list(df["status"]) == ["ok"] * 5 and list(df["acc"]) == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert len(fn.calls) == 6 and "build it with `make prior`" in df["previous_errors"].iloc[0]
    assert df["previous_errors"].iloc[1:].isna().all()


def test_keyboard_interrupt_propagates_with_nothing_half_written(tmp_path):
    out = tmp_path / "r.csv"

    def fn(run):
        if run["i"] == 2:
            raise KeyboardInterrupt
        return {"acc": 1.0}
    with pytest.raises(KeyboardInterrupt):
        run_grid([Run("s", {"i": i}) for i in range(4)], fn, out)
    _, body = raw_rows(out)
    assert len(body) == 2 and no_temp_files(tmp_path)


def test_column_union_and_metric_types(tmp_path):
    out = tmp_path / "r.csv"
    runs = [Run("s", {"i": 0}), Run("s", {"i": 1}), Run("s", {"i": 2, "extra": "x"}), Run("s", {"i": 3})]

    def fn(run):
        i = run["i"]
        if i == 0:
            return {"acc": torch.tensor(0.25)}  # 0-d tensor -> float
        if i == 1:
            return {"acc": np.float32(0.5), "nll": 1e-300}
        if i == 2:
            return {"acc": float("nan"), "ok_flag": True}
        return {"acc": [1, 2]}  # not a scalar: recorded as a failure naming the metric
    df = run_grid(runs, fn, out)
    header, _ = raw_rows(out)
    assert {"acc", "nll", "extra", "ok_flag"} <= set(header)
    assert df["acc"].iloc[0] == 0.25 and df["acc"].iloc[1] == 0.5 and np.isnan(df["acc"].iloc[2])
    assert df["nll"].iloc[1] == 1e-300 and pd.isna(df["nll"].iloc[0]) and pd.isna(df["extra"].iloc[0])
    assert df["extra"].iloc[2] == "x"
    assert df["status"].iloc[3].startswith("failed: ValueError: metric 'acc'")


def test_load_results_missing_and_digit_keys(tmp_path):
    assert load_results(tmp_path / "none.csv").empty and completed_keys(tmp_path / "none.csv") == set()
    run = next(r for r in (Run("s", {"i": i}) for i in range(100_000)) if r.key.isdigit())
    df = run_grid([run], counting(), tmp_path / "r.csv")
    assert df["key"].iloc[0] == run.key  # an all-digit key stays text, leading zeros included


# ------------------------------------------------------------------------------------------------ predictions

def test_predictions_saved_atomically_and_loadable(tmp_path, monkeypatch):
    out, pred = tmp_path / "r.csv", tmp_path / "pred"
    probs = torch.softmax(torch.randn(5, 3), -1)

    def fn(run):
        return {"acc": 0.5, "predictions": {"probs": probs.requires_grad_(), "labels": np.arange(5)}}
    r0 = Run("s", {"i": 0})
    df = run_grid([r0], fn, out, predictions_dir=pred)
    assert "predictions" not in df.columns and df["status"].iloc[0] == "ok"
    saved = torch.load(pred / f"{r0.key}.pt", weights_only=True)
    assert torch.equal(saved["probs"], probs.detach()) and torch.equal(saved["labels"], torch.arange(5))
    assert no_temp_files(pred)

    def broken_save(obj, f, *a, **k):  # a crash half-way through writing the file (a path or a file object)
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 partial")
        else:
            with open(f, "wb") as h:
                h.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    r1 = Run("s", {"i": 1})
    df = run_grid([r1], fn, out, predictions_dir=pred)
    assert df["status"].iloc[0] == "failed: OSError: disk full"
    assert not (pred / f"{r1.key}.pt").exists() and no_temp_files(pred)


def test_a_saved_slice_does_not_carry_its_base_storage(tmp_path):
    big = torch.zeros(1000, 100, dtype=torch.uint8)            # 100 kB; the run keeps 2 rows of it (200 B)
    r = Run("s", {"i": 0})
    run_grid([r], lambda run: {"acc": 0.5, "predictions": {"first": big[:2]}}, tmp_path / "r.csv",
             predictions_dir=tmp_path / "pred")
    f = tmp_path / "pred" / f"{r.key}.pt"
    assert torch.load(f, weights_only=True)["first"].untyped_storage().nbytes() == 200
    assert f.stat().st_size < 10_000


# ------------------------------------------------------------------------------------------------ interruption

CHILD = """
import sys, time
from repro.runner import Run, run_grid
def fn(run):
    time.sleep(float(sys.argv[2]))
    return {"acc": run["i"] / 30}
run_grid([Run("interrupt", {"i": i, "lr": 0.1}) for i in range(int(sys.argv[3]))], fn, sys.argv[1])
"""


def interrupt_child(out, sig, sleep, min_rows, jitter=0.0, poll=0.005, n_runs=30):
    """Start an ``n_runs`` grid in a subprocess, wait for ``min_rows`` rows (+ up to ``jitter`` s), send ``sig``.

    While waiting, every read of the CSV must parse with whole rows and never lose a row.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(sleep), str(n_runs)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + 30, 0
        while seen < min_rows:
            assert proc.poll() is None, "child died early"
            assert time.monotonic() < deadline, "child too slow"
            if out.exists():  # what a reader sees at any instant is what SIGKILL at that instant leaves
                n = len(raw_rows(out)[1])
                assert n >= seen, f"rows went from {seen} to {n}: a reader saw a half-written file"
                seen = n
            time.sleep(poll)
        time.sleep(random.uniform(0, jitter))  # land anywhere in the child's read-rewrite cycle
        proc.send_signal(sig)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig


def resume_and_check(out, n_runs=30, extra_rows=0):
    header, body = raw_rows(out)  # no partial row
    before = load_results(out)
    mine = before[before["study"] == "interrupt"]
    assert mine["key"].is_unique and (mine["status"] == "ok").all()
    n_before = len(mine)
    assert 5 <= n_before < n_runs, n_before
    assert len(before) == n_before + extra_rows

    fn = counting(lambda run: {"acc": run["i"] / 30})
    runs = [Run("interrupt", {"i": i, "lr": 0.1}) for i in range(n_runs)]
    df = run_grid(runs, fn, out)
    assert len(fn.calls) == n_runs - n_before
    assert sorted(df["key"]) == sorted(r.key for r in runs) and (df["status"] == "ok").all()
    everything = load_results(out)
    assert everything["key"].is_unique and len(everything) == n_runs + extra_rows
    assert no_temp_files(out.parent)  # a temp file left by the killed writer is cleaned up
    return everything


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_grid_resumes_exactly_once(tmp_path, sig):
    out = tmp_path / "grid.csv"
    interrupt_child(out, sig, sleep=0.05, min_rows=5, jitter=0.05)
    resume_and_check(out)


def test_sigkill_while_rewriting_a_large_csv(tmp_path):
    """With no sleep and 3000 foreign rows, the child spends its time rewriting the CSV: the kill lands mid-write.

    A rewrite can take ~2 ms on a fast machine, so the grid is long (200 runs) for the kill to land before its end.
    """
    out = tmp_path / "grid.csv"
    foreign = [{"study": "other", "i": str(i), "key": f"f{i:011d}", "status": "ok", "note": "a,b \"q\""}
               for i in range(3000)]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["study", "i", "key", "status", "note"])
        w.writeheader()
        w.writerows(foreign)
    interrupt_child(out, signal.SIGKILL, sleep=0.0, min_rows=3008, jitter=0.05, poll=0.0, n_runs=200)
    everything = resume_and_check(out, n_runs=200, extra_rows=3000)
    other = everything[everything["study"] == "other"]
    assert list(other["i"]) == list(range(3000)) and (other["note"] == 'a,b "q"').all()


# ------------------------------------------------------------------------------------- shared grids

SHARED_CHILD = r"""
import os, sys, time
from repro.runner import Run, run_grid
out, log = sys.argv[1], sys.argv[2]
def fn(run):
    with open(log, "a") as f:
        f.write(f"{run['i']} {os.getpid()}\n")
    time.sleep(0.05)
    return {"acc": run["i"] / 10}
run_grid([Run("shared", {"i": i}) for i in range(24)], fn, out, shared=True, poll_s=0.05)
"""


def test_two_processes_share_a_grid_and_run_each_setting_once(tmp_path):
    out, log = tmp_path / "grid.csv", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", SHARED_CHILD, str(out), str(log)], env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    calls = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for i, _ in calls) == list(range(24))       # every setting exactly once
    assert len({pid for _, pid in calls}) == 2                         # and both processes did work
    df = load_results(out)
    assert len(df) == 24 and df["key"].is_unique and (df["status"] == "ok").all()
    assert not any((tmp_path / ".grid.csv.leases").iterdir())          # leases released


def test_shared_grid_waits_for_a_live_lease_and_takes_over_a_dead_one(tmp_path):
    out = tmp_path / "grid.csv"
    runs = [Run("shared", {"i": i}) for i in range(3)]
    leases = tmp_path / ".grid.csv.leases"
    leases.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    (leases / f"{runs[0].key}.0").write_text(json.dumps({"host": host, "pid": live.pid}))  # a process running run 0
    (leases / f"{runs[1].key}.0").write_text(json.dumps({"host": host, "pid": dead.pid}))  # one that died in run 1
    calls = []

    def fn(run):
        calls.append(run["i"])
        if len(calls) == 2:   # meanwhile the live process finishes run 0 and releases its lease
            _append_row(out, {"study": "shared", "i": "0", "acc": "0.5", "key": runs[0].key, "status": "ok"})
            (leases / f"{runs[0].key}.0").unlink()
        return {"acc": run["i"] / 10}

    try:
        df = run_grid(runs, fn, out, shared=True, poll_s=0.01)
    finally:
        live.kill()
    assert sorted(calls) == [1, 2]                     # run 0 was never run here, run 1 was taken over
    assert list(df["i"]) == [0, 1, 2] and list(df["acc"]) == [0.5, 0.1, 0.2]
