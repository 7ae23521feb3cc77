"""Command line of :mod:`repro.data`: ``python -m repro.data download NAME`` and ``python -m repro.data decode``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __doc__ as _package_doc
from .downloads import download
from .formats import DATASETS, load


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.data", description=_package_doc.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch a dataset into the data directory")
    d.add_argument("name", choices=list(DATASETS))
    d.add_argument("--root", type=Path, default=None, help="data directory (default: $REPRO_DATA_DIR)")
    sub.add_parser("decode", help="decode and cache every dataset present in the data directory")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "download":
            print(download(args.name, args.root))
            return 0
        for name, info in DATASETS.items():
            for split in info.splits:
                try:
                    s = load(name, split)
                except FileNotFoundError:
                    print(f"{name}/{split}: not present")
                    continue
                print(f"{name}/{split}: images {tuple(s.images.shape)}, targets {tuple(s.targets.shape)}")
        return 0
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
