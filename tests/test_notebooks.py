"""The example notebooks run end to end (so they cannot rot) and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_four_stages_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.timeout(1200)
def test_notebooks_run_end_to_end_in_order(tmp_path, monkeypatch):
    """All four in one kernel session each, sharing one working folder as a user would run them
    (notebooks 3 and 4 reuse notebook 2's model instead of training again)."""
    monkeypatch.setenv("FALV_EXAMPLES_WORK", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = str(EXAMPLES.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(EXAMPLES)}})
        client.execute()  # raises CellExecutionError naming the cell and its traceback
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    assert (tmp_path / "labels" / "labels.jsonl").is_file() and (tmp_path / "evaluation.html").is_file()
