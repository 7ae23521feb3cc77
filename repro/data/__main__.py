"""Command line of :mod:`repro.data`: ``download NAME|all``, ``verify`` (the study's checksums) and ``decode``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import run_main
from . import __doc__ as _package_doc
from .checksums import verify
from .downloads import download
from .formats import DATASETS, data_dir, load

_ROOT_HELP = "data directory (default: $REPRO_DATA_DIR, else ./data in the clone)"


def _verify(root: Path | None) -> int:
    """One line per study file: ok, or what differs; status 1 when any differs."""
    root = root or data_dir()
    problems = verify(root)
    for rel, problem in problems.items():
        print(problem or f"{root / rel}: ok")
    bad = sum(p is not None for p in problems.values())
    print(f"{len(problems) - bad} of {len(problems)} files are the study's"
          + (f"; {bad} differ or are missing" if bad else ""))
    return 1 if bad else 0


def _decode() -> int:
    """Decode (and cache) every dataset present in the data directory, one line per split."""
    for name, info in DATASETS.items():
        for split in info.splits:
            try:
                s = load(name, split)
            except FileNotFoundError:
                print(f"{name}/{split}: not present")
                continue
            print(f"{name}/{split}: images {tuple(s.images.shape)}, targets {tuple(s.targets.shape)}")
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.data", description=_package_doc.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch a dataset, build the study's files, check them against its checksums")
    d.add_argument("name", choices=["all", *DATASETS], help="a dataset, or all: every dataset the study reads")
    d.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
    v = sub.add_parser("verify", help="check a data directory against the study's checksums (repro/data/checksums.json)")
    v.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
    sub.add_parser("decode", help="decode and cache every dataset present in the data directory")
    args = parser.parse_args(argv)
    commands = {"download": lambda: print(download(args.name, args.root)), "verify": lambda: _verify(args.root),
                "decode": _decode}
    return run_main(commands[args.cmd], errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(_main())
