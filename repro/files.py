"""Atomic file writes: a reader, a crash or a kill never leaves half a file behind."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    The temporary file is ``.<name>.<random>.tmp`` (removed on any error). The result keeps the mode of
    the file it replaces, or 0644 (mkstemp alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())                 # the rename must not outlive the data on a crash
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_file`: a reader never sees half a file."""
    import torch  # lazy: the runner, which writes CSVs through this module, needs no torch

    with atomic_file(path) as f:
        torch.save(obj, f)
