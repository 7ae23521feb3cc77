"""Saving a notebook as ``make lab`` does: the file written is the committed one, byte for byte."""
import json
import shutil
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["04_scale_sweep.ipynb", "09_training_budget.ipynb"])
def test_a_notebook_saved_in_lab_with_its_outputs_is_written_as_committed(tmp_path, name):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS / name, tmp_path / "notebooks" / name)
    manager = FileContentsManager(root_dir=str(tmp_path), pre_save_hook="repro.lab.strip_on_save")
    with_outputs = lambda: with_a_kernels_outputs(manager.get(f"notebooks/{name}"))         # noqa: E731
    manager.save(with_outputs(), f"notebooks/{name}")
    assert (tmp_path / "notebooks" / name).read_bytes() == (NOTEBOOKS / name).read_bytes()
    as_sent = with_outputs()                          # as the browser sends it: plain JSON, not a NotebookNode
    manager.save(as_sent | {"content": json.loads(json.dumps(as_sent["content"]))}, f"notebooks/{name}")
    assert (tmp_path / "notebooks" / name).read_bytes() == (NOTEBOOKS / name).read_bytes()
    manager.save(with_outputs(), "kept.ipynb")       # elsewhere (as under results/) a notebook keeps its outputs
    assert "a result" in (tmp_path / "kept.ipynb").read_text()


def with_a_kernels_outputs(model: dict) -> dict:
    """``model`` as Lab saves it after running every cell: outputs, execution counts, the kernel's metadata."""
    nb = model["content"]
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a result\n")]
            cell.execution_count = 7
            cell.metadata["execution"] = {"iopub.status.busy": "2026-12-05T20:00:00Z"}
    return model
