"""Errors a user can cause and fix — a missing data directory, prior or prerequisite, an unusable prior file — shown
as one line wherever they surface: on the command line by :func:`repro.cli.run_main`, in a notebook by IPython, which
renders an exception through its ``_render_traceback_`` when it has one, instead of a stack trace."""
from __future__ import annotations


class UserError(Exception):
    """Mixed into an error class whose message says what is wrong and the command that fixes it."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class DataMissing(UserError, FileNotFoundError):
    """A dataset file is not in the data directory (the message says where it looked and how to get it)."""
