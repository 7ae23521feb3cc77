"""``python -m repro.studies``: the downstream grids' command (:mod:`repro.experiments.studies`), at the package's top."""
import sys

from .experiments.studies import main

if __name__ == "__main__":
    sys.exit(main())
