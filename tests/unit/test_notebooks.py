"""The notebooks in analysis/notebooks/ run from top to bottom on the repository's samples, and
use only the public API of the analysis package."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "analysis" / "notebooks").glob("*.ipynb"))
# What a notebook may import of ours: the package and its documented modules.
PUBLIC = {"analysis", "analysis.plots", "analysis.report", "analysis.scale"}
OURS = ("analysis", "probe")
# Seconds one cell may take (the slowest loads a sample and draws figures: a few seconds).
CELL_TIMEOUT = 300


def test_the_notebooks_are_there() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "case-study.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_only_the_public_api(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    ours = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        # IPython magics (%matplotlib inline) are not Python.
        lines = cell.source.splitlines()
        source = "\n".join(line for line in lines if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                ours |= {a.name for a in node.names if a.name.split(".")[0] in OURS}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OURS:
                names = {f"{node.module}.{a.name}" for a in node.names}
                # `from analysis import plots` imports a module; `from analysis import load` a
                # function of the package: both are the package's public surface.
                ours |= {n if n in PUBLIC else str(node.module) for n in names}
    assert ours
    assert ours <= PUBLIC, ours - PUBLIC


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_error(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    # Committed clean: outputs would go stale with the code.
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    # The figures render (as PNG) rather than as "<Figure ...>" text.
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images
    # Every code cell ran and the last one printed its conclusion.
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
