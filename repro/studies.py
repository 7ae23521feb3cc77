"""``python -m repro.studies``: the downstream grids' command (:mod:`repro.experiments.workers`), at the package's top."""
import sys

from .experiments.workers import main

if __name__ == "__main__":
    sys.exit(main())
