"""The public API of both packages: what `__all__` promises is there, and nothing shadows a
submodule (a function named like its module would hide the module from `from analysis import x`)."""

from __future__ import annotations

import importlib
import types

import pytest

import analysis
import probe


@pytest.mark.parametrize("package", [analysis, probe])
def test_all_names_exist(package: types.ModuleType) -> None:
    for name in package.__all__:
        assert hasattr(package, name), name


def test_analysis_exports() -> None:
    assert set(analysis.__all__) >= {
        "load",
        "load_ooni",
        "verdicts",
        "explain",
        "VERDICTS",
        "COLUMNS",
    }
    assert set(analysis.VERDICTS) == {
        "ok", "blocked", "throttled", "calls_blocked", "calls_throttled", "calls_cut",
        "network_degraded", "inconclusive",
    }  # fmt: skip


# `analysis.load`, `analysis.verdicts` and `analysis.differential` are the documented functions;
# their modules stay reachable through `import analysis.load` / sys.modules, on purpose.
API_FUNCTIONS = {"load", "verdicts", "differential"}


@pytest.mark.parametrize(
    "module",
    [
        "columns", "differential", "errors", "features", "load", "onset", "ooni", "parquet",
        "rules", "shares", "summary", "verdicts",
    ],
)  # fmt: skip
def test_submodules_are_not_shadowed(module: str) -> None:
    imported = importlib.import_module(f"analysis.{module}")
    attribute = getattr(analysis, module)
    if module in API_FUNCTIONS:
        assert attribute is getattr(imported, module)
    else:
        assert attribute is imported
