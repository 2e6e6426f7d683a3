"""`ringprobe analyze --by` (shares per group, in every format) and `--report` (the HTML report)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.load import load
from analysis.report import INDEX, REPORT_MARKER
from analysis.shares import AGGREGATE_COLUMNS, NOT_ENOUGH, aggregate
from analysis.verdicts import verdicts
from probe.cli import cli
from tests.recordsets import write_runs
from tests.unit.test_plots import campaign


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    """A directory of records and the verdict table the library computes from it."""
    directory = write_runs(tmp_path_factory.mktemp("results"), *campaign())
    return str(directory), verdicts(load(directory))


def analyze(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["analyze", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_by_json_is_the_libraries_aggregate(results: tuple[str, pd.DataFrame]) -> None:
    directory, table = results
    stdout, _ = analyze(directory, "--by", "app,asn", "--format", "json")
    rows = json.loads(stdout)
    expected = aggregate(table, by=["app", "asn"])
    assert list(rows[0]) == ["app", "asn", *AGGREGATE_COLUMNS]
    got = [(r["app"], r["asn"], r["verdict"], r["count"], r["runs"], r["status"]) for r in rows]
    want = expected[["app", "asn", "verdict", "count", "runs", "status"]]
    assert got == list(want.itertuples(index=False, name=None))
    shares = [r["share"] for r in rows]
    assert shares == [None if pd.isna(s) else pytest.approx(s) for s in expected["share"]]


def test_by_csv_and_min_runs(results: tuple[str, pd.DataFrame]) -> None:
    directory, table = results
    stdout, _ = analyze(directory, "--by", "app, day", "--format", "csv", "--min-runs", "5")
    rows = list(csv.DictReader(io.StringIO(stdout)))
    expected = aggregate(table, by=["app", "day"], min_runs=5)
    assert list(rows[0]) == ["app", "day", *AGGREGATE_COLUMNS]
    assert len(rows) == len(expected)
    assert [r["status"] for r in rows] == list(expected["status"])
    assert {r["status"] for r in rows} == {"ok", NOT_ENOUGH}  # 10, 10 and 4 runs a day


def test_by_table_is_one_line_per_group_and_verdict(results: tuple[str, pd.DataFrame]) -> None:
    directory, table = results
    stdout, _ = analyze(directory, "--by", "app,day")
    lines = stdout.splitlines()
    expected = aggregate(table, by=["app", "day"])
    assert lines[0].split() == ["app", "day", *AGGREGATE_COLUMNS]
    assert len(lines) == len(expected) + 1
    first = expected.iloc[0]
    assert lines[1].split() == [
        first["app"],
        "2026-11-28",
        first["verdict"],
        str(first["count"]),
        str(first["runs"]),
        f"{first['share']:.3f}",
        f"{first['ci_low']:.3f}",
        f"{first['ci_high']:.3f}",
        "ok",
    ]
    assert lines[-1].split()[-3:] == ["not", "enough", "data"]  # the 4-run day: no share
    assert not stdout.startswith("run ")  # not the per-run listing


def test_report_writes_index_and_says_where(
    tmp_path: Path, results: tuple[str, pd.DataFrame]
) -> None:
    directory, _table = results
    out = tmp_path / "report"
    stdout, stderr = analyze(directory, "--report", str(out))
    index = out / INDEX
    assert stdout == ""  # the report replaces the per-run listing
    assert stderr.strip() == f"report written to {index}"
    text = index.read_text(encoding="utf-8")
    assert REPORT_MARKER in text
    assert text.count('src="data:image/png;base64,') == 4  # 3 figures, 1 call-flow timeline
    assert "Shares of verdicts by app, day" in text
    # Again over its own output, grouped otherwise, with the table printed too.
    stdout, _ = analyze(directory, "--report", str(out), "--by", "asn", "--format", "json")
    assert {row["asn"] for row in json.loads(stdout)} == {"AS1", "AS2"}
    assert "Shares of verdicts by asn" in index.read_text(encoding="utf-8")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probe.cli", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("by", "message"),
    [
        ("app,frob", "Invalid value for '--by': unknown key 'frob'"),
        ("probeasn", "did you mean 'probe_asn'?"),
        ("app,verdict", "'verdict' is what is counted"),
        ("app,,day", "empty key"),
    ],
)
def test_bad_keys_are_usage_errors(tmp_path: Path, by: str, message: str) -> None:
    # Checked before anything is loaded: the path need not even exist.
    result = run_cli(str(tmp_path / "nothing-here"), "--by", by)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ringprobe: error:")
    assert message in line


def test_a_report_over_other_files_is_refused(
    tmp_path: Path, results: tuple[str, pd.DataFrame]
) -> None:
    directory, _table = results
    result = run_cli(directory, "--report", directory)  # the records' own directory
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "--report" in line
    assert "not empty and not a previous report" in line
    assert not (Path(directory) / INDEX).exists()


def test_help_names_the_options_and_imports_nothing_heavy() -> None:
    result = CliRunner().invoke(cli, ["analyze", "--help"])
    assert result.exit_code == 0
    for option in ("--by KEY[,KEY...]", "--report DIR", "--min-runs"):
        assert option in result.output
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from probe.cli import cli\n"
        "CliRunner().invoke(cli, ['analyze', '--help'])\n"
        "print(','.join(m for m in ('matplotlib', 'pandas', 'analysis') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_min_runs_default_is_the_libraries() -> None:
    from analysis.shares import MIN_RUNS

    params = {p.name: p.default for p in cli.commands["analyze"].params}  # type: ignore[attr-defined]
    assert params["min_runs"] == MIN_RUNS
