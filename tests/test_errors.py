"""Errors a user can cause are one line in a notebook (IPython renders ``_render_traceback_``), not a stack trace."""
import pytest

from repro import data
from repro.errors import DataMissing, UserError
from repro.method.prior_files import load_prior
from repro.method.priors import PriorFileError
from repro.runner import MissingPrerequisite


@pytest.fixture(scope="module")
def shell():
    IPython = pytest.importorskip("IPython")
    return IPython.core.interactiveshell.InteractiveShell.instance()


def rendered(shell, capsys, code: str) -> str:
    shell.run_cell(code)
    return capsys.readouterr().out.strip()


def test_a_missing_data_directory_is_one_line(shell, capsys, tmp_path):
    root = tmp_path / "nowhere"
    out = rendered(shell, capsys, f"from repro import data; data.load('cifar10', 'train', root={str(root)!r})")
    assert out.startswith(f"DataMissing: data directory {root} does not exist") and "\n" not in out
    assert "python -m repro.data download cifar10" in out and "Traceback" not in out


def test_a_missing_prerequisite_is_one_line_naming_its_command(shell, capsys):
    out = rendered(shell, capsys, "from repro.runner import MissingPrerequisite\n"
                                  "raise MissingPrerequisite('ssl_prior.pt does not exist (run notebook 01)', "
                                  "'python -m repro.reproduce --profile smoke --claims C1')")
    assert out == ("MissingPrerequisite: ssl_prior.pt does not exist (run notebook 01): build it with "
                   "`python -m repro.reproduce --profile smoke --claims C1`")


def test_an_unreadable_prior_file_is_one_line(shell, capsys, tmp_path):
    (tmp_path / "prior.pt").write_bytes(b"truncated")
    out = rendered(shell, capsys, f"from repro.method.prior_files import load_prior; load_prior({str(tmp_path / 'prior.pt')!r})")
    assert out.startswith("PriorFileError: ") and "not a readable prior file" in out and "\n" not in out


def test_a_programming_error_keeps_its_traceback(shell, capsys):
    assert "Traceback" in rendered(shell, capsys, "def f():\n    return 1 / 0\nf()")


def test_they_stay_the_exceptions_callers_catch(tmp_path):
    assert issubclass(MissingPrerequisite, FileNotFoundError) and issubclass(DataMissing, FileNotFoundError)
    assert issubclass(PriorFileError, ValueError)
    assert all(issubclass(e, UserError) for e in (MissingPrerequisite, DataMissing, PriorFileError))
    with pytest.raises(FileNotFoundError):
        data.load("cifar10", "train", root="/nonexistent-data-dir")
    (tmp_path / "prior.pt").write_bytes(b"truncated")
    with pytest.raises(PriorFileError):
        load_prior(tmp_path / "prior.pt")
