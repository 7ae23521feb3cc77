"""A resumable experiment grid: run each setting once, one CSV row per finished run, safe to kill at any time.

``run_grid`` calls ``fn(run)`` for every run without an ``ok`` row and appends the returned metrics to a
CSV. The CSV is rewritten whole to a temporary file and renamed over the old one after every run, so a
reader (or a rerun after SIGKILL) sees either the old file or the new one, never a partial row. Runs that
raise are recorded as ``failed: <Type>: <message>`` and the grid goes on; the next call retries them, and a
retried run's row keeps the errors of its earlier attempts in ``previous_errors`` (one row per key).
A missing prerequisite (:class:`MissingPrerequisite`) stops the grid instead. How often a failure is retried across
calls is the caller's (a worker retries each failure it finds at its start once: :mod:`repro.experiments.workers`).
The module knows nothing about models: a run is a task (the grid's name, column ``study``) and a set of JSON-able scalar
settings.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .leases import lease
from .errors import UserError
from .files import atomic_file, atomic_torch_save

try:  # advisory lock so that two processes sharing a CSV do not lose each other's rows
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["Run", "run_grid", "load_results", "completed_keys", "RESERVED_COLUMNS", "MissingPrerequisite"]

log = logging.getLogger(__name__)

# Columns the runner writes itself; hyperparameters and metrics may not use these names.
RESERVED_COLUMNS = ("study", "key", "status", "wall_time_s", "finished_at", "previous_errors")
# Read as text: a 12-hex key made only of digits must not become an integer (and lose leading zeros).
_TEXT_COLUMNS = {"study": str, "key": str, "status": str, "finished_at": str, "previous_errors": str}
_HISTORY_SEPARATOR = " | "


class MissingPrerequisite(UserError, FileNotFoundError):
    """A run needs a file that another command builds (e.g. the priors of notebook 01).

    Every other run of the grid would fail the same way, so ``run_grid`` records this one and stops by re-raising;
    the message ends with the command that builds the file (``command``), and the next call retries the run.
    """

    def __init__(self, what: str, command: str):
        super().__init__(f"{what}: build it with `{command}`")
        self.command = command


_SCALARS = (str, bool, int, float, type(None))


def _scalar(name: str, value: Any, what: str) -> Any:
    """``value`` as a plain Python scalar (numpy scalars and 0-d tensors are unwrapped), else ValueError."""
    if type(value) in _SCALARS:
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.float64, np.bool_, 0-d tensor
        item = value.item()
        if type(item) in _SCALARS:
            return item
    raise ValueError(f"{what} {name!r} must be a JSON-able scalar (str, int, float, bool or None), "
                     f"got {type(value).__name__}: {value!r:.80}")


@dataclass(frozen=True, init=False, eq=False, repr=False)
class Run:
    """One run of a grid: ``Run("transfer", {"rank": 5, "seed": 0, ...})``, the grid's ``task`` and the run's params.

    Params are stored as sorted ``(name, value)`` pairs so the run is hashable; ``key`` is the first 12 hex
    digits of the sha1 of canonical JSON of the task (under the name "study", which every recorded key hashed, and
    the CSVs' column keeps) and ``keyed`` (by default all the params; a caller whose
    params hold more than identifies the run, e.g. a setting at a default that runs recorded before it existed
    had, passes the part that does: :class:`repro.experiments.spec.RunSpec`). Equality and hashing go through
    the key, so ``1``, ``1.0`` and ``True`` are different settings (they are different JSON).
    """

    task: str
    items: tuple[tuple[str, Any], ...]
    key: str

    def __init__(self, task: str, params: Mapping[str, Any], keyed: Mapping[str, Any] | None = None):
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a dict of name -> scalar, got {type(params).__name__}")
        items = []
        for name, value in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"hyperparameter names must be non-empty strings, got {name!r}")
            if name in RESERVED_COLUMNS:
                raise ValueError(f"hyperparameter {name!r} clashes with a column the runner writes: {RESERVED_COLUMNS}")
            items.append((name, _scalar(name, value, "hyperparameter")))
        items.sort(key=lambda kv: kv[0])
        if keyed is not None and any(name not in params or params[name] != v for name, v in keyed.items()):
            raise ValueError(f"keyed must be a part of params, got {dict(keyed)!r:.200}")
        key_items = dict(items) if keyed is None else {name: value for name, value in items if name in keyed}
        canonical = json.dumps({"study": task, "params": key_items}, sort_keys=True,
                               separators=(",", ":"), ensure_ascii=True)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "items", tuple(items))
        object.__setattr__(self, "key", hashlib.sha1(canonical.encode()).hexdigest()[:12])

    @property
    def params(self) -> dict[str, Any]:
        """The hyperparameters as a fresh dict (mutating it does not change the run)."""
        return dict(self.items)

    def __getitem__(self, name: str) -> Any:
        return dict(self.items)[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Run({self.task!r}, {self.params!r})  # key={self.key}"


# ---------------------------------------------------------------------------------------------- CSV I/O

def _cell(value: Any) -> str:
    """CSV text of a scalar: repr for floats keeps every digit (and writes nan/inf), None is empty."""
    if value is None:
        return ""
    if type(value) is float:
        return repr(value)
    return str(value)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of the CSV as text, untouched (so a rewrite never changes existing cells)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [dict(r) for r in reader]
            return list(reader.fieldnames or []), rows
    except FileNotFoundError:
        return [], []


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write the whole CSV to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_file(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])


@contextlib.contextmanager
def _locked(csv_path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of a CSV: a POSIX record lock (``lockf``) on ``.<csv name>.lock``
    beside it, which NFS (v3 through its lock manager, v4 natively) and Lustre honour across the nodes of a cluster."""
    if fcntl is None:
        yield
        return
    fd = os.open(csv_path.parent / f".{csv_path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks: single writer assumed
            log.warning("no lock on %s's filesystem: a single writer is assumed", csv_path)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_stale_temps(path: Path) -> None:
    """Temp files left by a writer killed mid-write (called under the lock, so none is in use)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _history(rows: list[dict[str, str]]) -> str:
    """``previous_errors`` of a new row replacing ``rows`` (same key): their own history, then their failures."""
    entries = []
    for r in rows:
        entries += [e for e in (r.get("previous_errors") or "").split(_HISTORY_SEPARATOR) if e]
        if r.get("status", "").startswith("failed"):
            entries.append(f"{r.get('finished_at', '')} {r['status']}".strip())
    return _HISTORY_SEPARATOR.join(entries)


def _append_row(path: Path, row: dict[str, str]) -> None:
    """Add ``row`` to the CSV, replacing an earlier row with the same key (a retried failure, kept in the new row's
    ``previous_errors``)."""
    with _locked(path):
        columns, rows = _read_rows(path)
        same = [r for r in rows if r.get("key") == row["key"]]
        if row["status"] != "ok" and any(r.get("status") == "ok" for r in same):
            return  # another process finished it meanwhile: keep its success
        if history := _history(same):
            row = {**row, "previous_errors": history}
        rows = [r for r in rows if r.get("key") != row["key"]] + [row]
        columns = columns + [c for c in row if c not in columns]  # union, old order first
        _write_rows(path, columns, rows)


def load_results(csv_path: str | os.PathLike) -> pd.DataFrame:
    """All rows of a results CSV (empty DataFrame when the file is missing or empty)."""
    path = Path(csv_path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    header = _read_rows(path)[0]
    return pd.read_csv(path, dtype={c: t for c, t in _TEXT_COLUMNS.items() if c in header})


def completed_keys(csv_path: str | os.PathLike) -> set[str]:
    """Keys of the runs recorded with status ``ok``."""
    return {r["key"] for r in _read_rows(Path(csv_path))[1] if r.get("status") == "ok" and r.get("key")}


# ---------------------------------------------------------------------------------------------- the grid

def _first_line(e: BaseException) -> str:
    msg = str(e).strip()
    return f"{type(e).__name__}: {msg.splitlines()[0]}" if msg else type(e).__name__


def _save_predictions(predictions: Any, path: Path) -> None:
    """Save a dict of tensors/arrays atomically, as tensors so ``torch.load(weights_only=True)`` reads it."""
    import torch  # lazy: the runner itself needs no torch

    if not isinstance(predictions, Mapping):
        raise TypeError(f"'predictions' must be a dict of tensors/arrays, got {type(predictions).__name__}")
    out = {}
    for k, v in predictions.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().clone()   # a slice would otherwise drag its whole base storage into the file
        elif type(v).__module__ == "numpy" and hasattr(v, "shape"):  # ndarray: pickled arrays need weights_only=False
            v = torch.as_tensor(v)
        out[str(k)] = v
    atomic_torch_save(out, path)


def _failed_rows(path: Path) -> dict[str, tuple]:
    """The failed rows of the CSV as they are now (key -> its cells): a row that changes later was rewritten by a
    new attempt, here or in another process."""
    return {r["key"]: tuple(sorted(r.items())) for r in _read_rows(path)[1] if r.get("status", "").startswith("failed")}


def _finished_keys(path: Path, to_retry: dict[str, tuple]) -> set[str]:
    """Keys whose run needs nothing more from this call: recorded ok, or failed and not awaiting its retry (a failed
    row that changed since the call started was retried, here or elsewhere)."""
    done = set()
    for r in _read_rows(path)[1]:
        key, status = r.get("key"), r.get("status", "")
        if status == "ok" or (status.startswith("failed") and to_retry.get(key) != tuple(sorted(r.items()))):
            done.add(key)
    return done


def _execute(run: Run, fn: Callable[[Run], Mapping[str, Any]], path: Path, pred_dir: Path | None) -> bool:
    """Run ``fn(run)`` and record its row (and predictions) in ``path``; whether it succeeded. A
    :class:`MissingPrerequisite` is recorded, then re-raised."""
    params = run.params
    t0 = time.perf_counter()
    error = None
    try:
        result = dict(fn(run))
        predictions = result.pop("predictions", None)
        metrics = {}
        for name, value in result.items():
            if name in RESERVED_COLUMNS or name in params:
                raise ValueError(f"metric {name!r} clashes with a hyperparameter or runner column")
            metrics[name] = _scalar(name, value, "metric")
        if predictions is not None:
            if pred_dir is None:
                log.warning("run %s returned predictions but run_grid has no predictions_dir: not saved", run.key)
            else:
                _save_predictions(predictions, pred_dir / f"{run.key}.pt")
        status = "ok"
    except Exception as e:  # noqa: BLE001 - one bad setting must not stop the grid
        metrics, status, error = {}, f"failed: {_first_line(e)}", e
        # a missing prerequisite is said in one line; anything else needs its traceback in the log
        log.warning("run %s %r %s", run.key, params, status, exc_info=not isinstance(e, MissingPrerequisite))
    row = {"study": run.task, **params, **metrics, "key": run.key, "status": status,
           "wall_time_s": time.perf_counter() - t0,
           "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _append_row(path, {k: _cell(v) for k, v in row.items()})
    if isinstance(error, MissingPrerequisite):
        raise error
    return error is None


def run_grid(runs: Sequence[Run], fn: Callable[[Run], Mapping[str, Any]], csv_path: str | os.PathLike, *,
             predictions_dir: str | os.PathLike | None = None, desc: str | None = None,
             retry_failed: bool | Iterable[str] = True, shared: bool = False, poll_s: float = 5.0) -> pd.DataFrame:
    """Run ``fn`` on every run without an ``ok`` row in ``csv_path``; return the rows of all ``runs`` (old and new).

    ``fn(run)`` returns a dict of scalar metrics, optionally with ``"predictions"``: a dict of tensors or
    arrays saved atomically to ``predictions_dir/<key>.pt`` before the row is written (an ``ok`` row
    therefore always has its file). Any Exception is recorded as a failed row and the grid continues.
    A run recorded as failed when the call starts is tried again (``retry_failed=False``: left as it is; a set of keys:
    those runs only), once:
    a run that fails during this call, here or in another process, is not retried by it. A
    :class:`MissingPrerequisite` is recorded, then re-raised: the grid stops, since every run would fail alike.
    KeyboardInterrupt/SystemExit propagate; the CSV is never left half-written.

    ``shared=True`` lets several processes, on one machine or on the nodes of a cluster sharing the filesystem,
    work through the same grid: each run is leased (:mod:`repro.leases`: a file in ``.<csv name>.leases/`` with a
    heartbeat) before it starts, so no two processes run it; a process returns only when every run has a row,
    taking over the runs of a process that died (at once on this host; after the lease on another).
    """
    runs = list(dict.fromkeys(runs))  # collapse duplicates, keep first-seen order
    for r in runs:
        if not isinstance(r, Run):
            raise TypeError(f"run_grid expects Run objects, got {type(r).__name__}")
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred_dir = Path(predictions_dir) if predictions_dir is not None else None
    leases = path.parent / f".{path.name}.leases"
    if shared:
        leases.mkdir(exist_ok=True)
    with _locked(path):
        _remove_stale_temps(path)
    to_retry = _failed_rows(path) if retry_failed else {}
    if not isinstance(retry_failed, bool):
        keys = set(retry_failed)
        to_retry = {k: row for k, row in to_retry.items() if k in keys}

    def finished() -> set[str]:
        return _finished_keys(path, to_retry)

    done = finished()
    todo = [r for r in runs if r.key not in done]
    n_failed = 0
    with tqdm(total=len(runs), initial=len(runs) - len(todo), desc=desc or (runs[0].task if runs else None),
              dynamic_ncols=True) as bar:
        while todo:
            waiting, done = [], finished() if shared else set()
            for run in todo:
                held = None
                if shared:
                    if run.key in done:
                        bar.update(1)
                        continue
                    if (held := lease(leases, run.key)) is None:
                        waiting.append(run)       # another process is on it
                        continue
                    if run.key in finished():     # read under our lease: finished meanwhile by the last holder
                        held.release()
                        bar.update(1)
                        continue
                try:
                    n_failed += not _execute(run, fn, path, pred_dir)
                finally:
                    if held is not None:
                        held.release()
                bar.update(1)
                if n_failed:
                    bar.set_postfix(failed=n_failed)
            todo = waiting
            if todo:
                time.sleep(poll_s)

    df = load_results(path)
    if df.empty:
        return df
    order = {r.key: i for i, r in enumerate(runs)}
    df = df[df["key"].isin(order)]
    return df.iloc[df["key"].map(order).argsort(kind="stable")].reset_index(drop=True)
