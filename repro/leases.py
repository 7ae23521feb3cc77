"""Which process runs which run of a shared grid: leases, safe on a shared network filesystem.

A lease on run ``key`` is a file ``<folder>/<key>.<n>`` (attempt n) holding its holder's host and pid, created with
``O_CREAT | O_EXCL``: atomic on a local filesystem and on NFS v3 and later (Linux clients; designed for those and for
Lustre / GPFS, which give the same guarantee). While the run executes, a heartbeat thread refreshes the file's
modification time every :data:`HEARTBEAT_S` seconds. The highest attempt is the live lease; it goes **stale** when its
holder is a process of this host that no longer exists, or, for a holder on another host, when its heartbeat is older
than the lease (:data:`LEASE_S`; keep it well above the clock skew between the nodes and the file server). A stale
lease is taken over by creating attempt n + 1, which only one process can do: two workers that both find attempt n
stale never both win, and no lease file is ever deleted by anyone but its holder.

A holder on this host is judged by its pid alone, so a worker paused with SIGSTOP keeps its runs; one on another host
that stalls (or is suspended) for longer than the lease loses its run to another worker, which then runs it too (the
grid's CSV keeps one row per run, the later one).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

LEASE_S = 900.0        # a lease whose holder (on another host) has not beaten for this long is stale
HEARTBEAT_S = 30.0     # how often a holder refreshes its lease

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attempts(folder: Path, key: str) -> list[tuple[int, Path]]:
    """(n, path) of every attempt file of ``key``, ascending."""
    pattern = re.compile(rf"{re.escape(key)}\.(\d+)$")
    found = [(int(m.group(1)), p) for p in folder.glob(f"{key}.*") if (m := pattern.match(p.name))]
    return sorted(found)


def _stale(path: Path, lease_s: float) -> bool:
    """Whether the lease in ``path`` is stale (module docstring); a file that vanished meanwhile is not."""
    try:
        text, beat = path.read_text(), path.stat().st_mtime
    except FileNotFoundError:
        return False
    try:
        holder = json.loads(text or "{}")
    except ValueError:                        # half-written by a holder killed as it took it: judge by its age
        holder = {}
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        return holder["pid"] != os.getpid() and not _alive(int(holder["pid"]))
    return time.time() - beat > lease_s


class Lease:
    """A held lease: its heartbeat runs until :meth:`release`."""

    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S):
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"lease {path.name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                log.warning("lease %s vanished while held", self.path)
                return
            except OSError as e:          # a network filesystem hiccup: try again at the next beat
                log.warning("lease %s: heartbeat failed: %s", self.path, e)

    def release(self) -> None:
        """Stop the heartbeat and remove every attempt file of this run (the run is finished or abandoned)."""
        self._stop.set()
        self._thread.join()
        key = self.path.name.rsplit(".", 1)[0]
        for _, path in _attempts(self.path.parent, key):
            with contextlib.suppress(OSError):
                path.unlink()


def lease(folder: Path, key: str, lease_s: float = LEASE_S, heartbeat_s: float = HEARTBEAT_S) -> Lease | None:
    """Lease run ``key`` to this process: a :class:`Lease` if it is ours now (no live lease existed, or the live one
    was stale and this process created the next attempt), None if another process holds it."""
    attempts = _attempts(folder, key)
    if attempts and not _stale(attempts[-1][1], lease_s):
        return None
    n = attempts[-1][0] + 1 if attempts else 0
    path = folder / f"{key}.{n}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:                   # another process created this attempt first
        return None
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "attempt": n}))
    if n:
        log.info("run %s: took over a stale lease (attempt %d)", key, n)
    return Lease(path, heartbeat_s)
