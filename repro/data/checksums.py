"""The exact data of the study: the SHA-256 of every file it reads, and the checks of a data directory against them.

``checksums.json`` beside this module lists each file by its path in the data directory (:func:`.formats.data_dir`)
with its size and SHA-256; a gzip file also has the SHA-256 of its decompressed bytes, because a re-gzipped copy holds
the same data under another header (the study read Debian's re-gzipped Fashion-MNIST, whose official download has
other headers). ``python -m repro.data verify`` checks a directory; :func:`repro.data.download` checks what it builds.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
from pathlib import Path

__all__ = ["FETCH_COMMAND", "table", "study_datasets", "check_file", "verify", "require_present"]

TABLE = Path(__file__).with_name("checksums.json")
FETCH_COMMAND = "make data"          # = python -m repro.data download all, into $REPRO_DATA_DIR (default ./data)
_CHUNK = 1 << 20


@functools.lru_cache(maxsize=1)
def table() -> dict[str, dict]:
    """``relative path -> {"bytes", "sha256"[, "gunzipped_sha256"]}`` of every file the study reads."""
    return json.loads(TABLE.read_text())


def study_datasets() -> list[str]:
    """The datasets the study reads, in the table's order (the folder of each file)."""
    return list(dict.fromkeys(rel.split("/")[0] for rel in table()))


def _sha256(stream) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def check_file(root: Path, rel: str) -> str | None:
    """None when ``root/rel`` is the study's file (or, for gzip, holds its bytes), else one line saying what differs."""
    want, path = table()[rel], Path(root) / rel
    if not path.is_file():
        return f"{path}: missing"
    with open(path, "rb") as f:
        got = _sha256(f)
    if got == want["sha256"]:
        return None
    if "gunzipped_sha256" in want:
        try:
            with gzip.open(path) as f:
                if _sha256(f) == want["gunzipped_sha256"]:
                    return None      # the same data under another gzip header
        except (OSError, EOFError):
            pass
    return (f"{path}: SHA-256 {got[:16]}... ({path.stat().st_size} bytes) is not the study's {want['sha256'][:16]}... "
            f"({want['bytes']} bytes); see {rel.split('/')[0]}/PROVENANCE.md of the study's data for its recipe")


def verify(root: Path, names: list[str] | None = None) -> dict[str, str | None]:
    """``relative path -> problem or None`` for every study file of ``names`` (default: every dataset) in ``root``."""
    names = study_datasets() if names is None else names
    return {rel: check_file(root, rel) for rel in table() if rel.split("/")[0] in names}


def require_present(root: Path) -> None:
    """FileNotFoundError (one line: where it looked, how to fetch) unless every study file is in ``root``. Checks
    presence only, so a run starts at once; ``python -m repro.data verify`` checks the bytes."""
    missing = [rel for rel in table() if not (Path(root) / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"the study's data is not in {root} ({len(missing)} of {len(table())} files missing, "
                                f"e.g. {missing[0]}; the directory is $REPRO_DATA_DIR, default ./data): fetch it with "
                                f"`{FETCH_COMMAND}` (python -m repro.data download all)")
