"""Every ``python -m`` entry point: a help text for each argument, and bad input answered in one line, no traceback."""
import argparse

import pytest

from repro import bench, claims, report, reproduce
from repro.data import __main__ as data_cli
from repro.experiments import workers

MAINS = {"studies": workers.main, "reproduce": reproduce.main, "report": report.main, "bench": bench.main,
         "data": data_cli._main, "claims": claims.main}


@pytest.mark.parametrize("name", MAINS)
def test_every_argument_has_a_help_text(name, monkeypatch, capsys):
    actions = []
    add_argument = argparse._ActionsContainer.add_argument

    def spy(self, *args, **kwargs):
        actions.append(add_argument(self, *args, **kwargs))
        return actions[-1]
    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", spy)
    with pytest.raises(SystemExit):
        MAINS[name](["--help"])
    undocumented = [a.option_strings or a.dest for a in actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert actions and undocumented == []


@pytest.mark.parametrize("name", ["studies", "reproduce", "report", "bench"])
def test_an_unknown_profile_is_one_line(name, capsys):
    assert MAINS[name](["--profile", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: unknown profile 'nope'; valid profiles: smoke, cpu, paper"
