"""JupyterLab as ``make lab`` starts it: a notebook of ``notebooks/`` is saved without outputs, as git commits it.

Saving in Lab writes the notebook with its outputs, execution counts and the kernel's ``language_info``; the git
filter (``.gitattributes``, installed by ``make setup``) strips them on the way into git, but ``git status`` still
lists a file whose size changed. So Lab strips them before it writes (:func:`strip_on_save`, Jupyter's pre-save
hook), the same way and with the same tool (nbstripout): the saved file is the committed one, byte for byte, while
the open notebook keeps its outputs on screen. The executed copies under ``results/`` keep theirs.
"""
from __future__ import annotations

STRIPPED_KEYS = ["metadata.language_info", "cell.metadata.execution"]   # beyond nbstripout's defaults
FOLDER = "notebooks/"


def strip_on_save(model: dict, path: str, contents_manager=None, **kwargs) -> None:
    """Jupyter's ``pre_save_hook``: strip a notebook under :data:`FOLDER` in place (cell ids kept)."""
    if model.get("type") != "notebook" or not path.lstrip("/").startswith(FOLDER):
        return
    import nbformat
    from nbstripout import strip_output

    nb = nbformat.from_dict(model["content"])          # the browser's save sends plain dicts
    model["content"] = strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=STRIPPED_KEYS)
