"""Stand-ins for the recorded grids: a snapshot whose runs are scripted, so a study's rule can be checked against
known answers without training."""
from __future__ import annotations

from typing import Callable, Iterable

import pandas as pd

from repro.experiments.grid import MissingRuns, Recorded
from repro.experiments.spec import RunSpec
from repro.profiles import Profile


class Scripted(Recorded):
    """A snapshot of ``profile``'s grids in which the rows of any settings are ``answer(profile, task, settings,
    desc)`` (a DataFrame, one row per setting); where ``recorded(setting)`` is False, the run is missing instead
    (:class:`MissingRuns`, as from the real grids)."""

    def __init__(self, profile: Profile, answer: Callable[..., pd.DataFrame],
                 recorded: Callable[[dict], bool] = lambda s: True):
        super().__init__(profile)
        self.answer, self.recorded = answer, recorded

    def rows(self, task: str, settings: Iterable[dict], desc: str | None = None) -> pd.DataFrame:
        settings = list(settings)
        missing = [RunSpec.default(self.profile, task, **s) for s in settings if not self.recorded(s)]
        if missing:
            raise MissingRuns(self.profile, task, missing, desc)
        return self.answer(self.profile, task, settings, desc)
