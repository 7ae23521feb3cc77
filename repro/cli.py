"""What the ``python -m repro...`` entry points share: the ``--profile`` argument and one-line errors for bad input."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .profiles import DEFAULT_PROFILE, PROFILES

PROFILE_HELP = f"size profile, one of {', '.join(PROFILES)} (default: $REPRO_PROFILE, else {DEFAULT_PROFILE})"


def add_profile_argument(parser: argparse.ArgumentParser, default: str | None = None, help: str = PROFILE_HELP) -> None:
    """``--profile NAME``, resolved later by :func:`repro.profiles.get_profile` (so a bad name is one line)."""
    parser.add_argument("--profile", default=default, metavar="NAME", help=help)


def run_main(body: Callable[[], int | None], errors: tuple[type[BaseException], ...] = (ValueError,)) -> int:
    """``body()``'s exit status (None: 0). An error of ``errors`` (bad input, a missing file, a missing prerequisite)
    is one line on stderr and status 1: a person who typed a wrong name needs the valid ones, not a traceback."""
    try:
        return body() or 0
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
