"""The command line: help everywhere, one-line errors with exit 2, cheap start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from probe import __version__
from probe.cli import cli

HEAVY = ("aiohttp", "dns", "scapy", "aioquic", "pandas", "rich")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "ringprobe")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help, f"{' '.join(path)} has no help text"


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_run_option_defaults_are_the_runners() -> None:
    # The CLI spells the defaults out (importing the runner would slow --help down).
    from probe.runner import DEFAULT_CONCURRENCY, DEFAULT_DEADLINE, DEFAULT_PER_HOST

    params = {p.name: p.default for p in cli.commands["run"].params}  # type: ignore[attr-defined]
    assert params["concurrency"] == DEFAULT_CONCURRENCY
    assert params["per_host"] == DEFAULT_PER_HOST
    assert params["deadline"] == DEFAULT_DEADLINE


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from probe.cli import cli\n"
        "CliRunner().invoke(cli, ['--help'])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--timeout", "abc"], "--timeout"),
        (["run", "--timeout", "0"], "--timeout"),
        (["run", "--allow-net", "10.0.0.0/99"], "not an IP network"),
        (["run", "--cc", "Russia"], "country code"),
        (["run", "--asn", "12x"], "ASN"),
        (["run", "--resolver", "not an address"], "resolver"),
        (["run", "--doh-url", "http://192.0.2.1/dns-query"], "https"),
        (["run", "--apps", "skype"], "skype"),
        (["run", "--ca-file", "/nonexistent/ca.pem"], "ca-file"),
        (["run", "--lab-date", "2026-08-01"], "only with --vantage lab"),
        (["run", "--vantage", "lab", "--lab-date", "August"], "--lab-date"),
        (["targets", "--apps", "icq"], "icq"),
        (["targets", "--targets", "/nonexistent/catalog.toml"], "catalog.toml"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ringprobe: error:")
    assert message.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_bad_catalog_file_names_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text(
        '[[target]]\nid = "x1"\napp = "whatsapp"\nrole = "signaling"\nhost = "e1.whatsapp.net"\n'
        'port = 70000\ntransport = "tcp"\nexpect = "tcp"\nsource = "me"\ndate = "2026-11-28"\n'
    )
    result = CliRunner().invoke(cli, ["targets", "--targets", str(bad)])
    assert result.exit_code == 2
    assert "mine.toml" in result.output
    assert "x1" in result.output
    assert "70000" in result.output


def test_targets_lists_the_builtin_catalog() -> None:
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == 0, result.output
    assert "e1.whatsapp.net" in result.output
    assert "149.154.167.51" in result.output
    assert "web.telegram.org" in result.output


def test_targets_json_and_app_filter() -> None:
    result = CliRunner().invoke(cli, ["targets", "--apps", "telegram", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows
    assert {row["app"] for row in rows} == {"telegram"}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port: int = closed.getsockname()[1]
    return port


def _loopback_catalog(tmp_path: Path, ports: dict[str, int]) -> Path:
    """A catalog of TCP control targets on loopback, one per (id, port)."""
    catalog = tmp_path / "cat.toml"
    catalog.write_text(
        '[defaults]\napp = "control"\nrole = "control"\ntransport = "tcp"\nexpect = "tcp"\n'
        'source = "test"\ndate = "2026-11-28"\naddress = "127.0.0.1"\n\n'
        + "".join(f'[[target]]\nid = "{tid}"\nport = {port}\n\n' for tid, port in ports.items())
    )
    return catalog


def test_run_json_summary_on_loopback(tmp_path: Path) -> None:
    """A whole `ringprobe run` through the CLI: stdout is only the JSON summary (no progress bar
    off a terminal), records land in --out and validate."""
    import socket

    from tests.recordcheck import assert_valid

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    catalog = _loopback_catalog(
        tmp_path, {"open": listener.getsockname()[1], "refused": _closed_port()}
    )
    try:
        result = CliRunner().invoke(
            cli,
            ["run", "--targets", str(catalog), "--out", str(tmp_path / "out"), "--no-doh",
             "--timeout", "2", "--vantage", "lab", "--cc", "zz", "--asn", "64496", "--json"],
        )  # fmt: skip
    finally:
        listener.close()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "complete"
    assert summary["records"] == 2
    assert summary["apps"]["control"] == {
        "checks": 2,
        "failed": {"tcp_connect: connection_refused": 1},
    }
    rows = [assert_valid(line) for line in Path(summary["records_path"]).read_text().splitlines()]
    assert {row["probe"]["asn"] for row in rows} == {"AS64496"}
    assert {row["probe"]["vantage"] for row in rows} == {"lab"}


def test_lab_date_dates_a_lab_runs_records_and_manifest(tmp_path: Path) -> None:
    from tests.recordcheck import assert_valid

    catalog = _loopback_catalog(tmp_path, {"refused": _closed_port()})
    result = CliRunner().invoke(
        cli,
        ["run", "--targets", str(catalog), "--out", str(tmp_path / "out"), "--no-doh",
         "--timeout", "2", "--vantage", "lab", "--lab-date", "2025-08-13", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    rows = [assert_valid(line) for line in Path(summary["records_path"]).read_text().splitlines()]
    assert rows
    assert {row["start_time"][:10] for row in rows} == {"2025-08-13"}
    manifest = json.loads(Path(summary["manifest_path"]).read_text())
    assert manifest["started"].startswith("2025-08-13")
    assert manifest["settings"]["lab_date"] == "2025-08-13"


def test_run_summary_comes_from_analysis(tmp_path: Path) -> None:
    """`ringprobe run --json` carries the analysis package's verdicts for its own records."""
    import analysis

    test_run_json_summary_on_loopback(tmp_path)
    (records,) = (tmp_path / "out").glob("*.jsonl")
    expected = analysis.verdicts(analysis.load(records))
    result = CliRunner().invoke(cli, ["analyze", str(records), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["app"], r["verdict"], r["rule"]) for r in rows] == list(
        zip(expected["app"], expected["verdict"], expected["rule"], strict=True)
    )
    assert all(row["summary"] for row in rows)


def test_analyze_formats(tmp_path: Path) -> None:
    test_run_json_summary_on_loopback(tmp_path)
    out = str(tmp_path / "out")
    table = CliRunner().invoke(cli, ["analyze", out])
    assert table.exit_code == 0, table.output
    assert table.output.startswith("run ")
    csv = CliRunner().invoke(cli, ["analyze", out, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    header = csv.output.splitlines()[0].split(",")
    assert header[:4] == ["run_id", "app", "verdict", "layer"]
    assert "summary" in header


def test_analyze_reads_ooni_samples() -> None:
    import analysis

    sample = Path(__file__).parent.parent.parent / "measurements/ooni-samples/whatsapp.json"
    result = CliRunner().invoke(cli, ["analyze", "--ooni", str(sample), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    expected = analysis.verdicts(analysis.load_ooni(sample))
    assert [(r["app"], r["verdict"]) for r in rows] == list(
        zip(expected["app"], expected["verdict"], strict=True)
    )
    assert {r["app"] for r in rows} == {"whatsapp"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "/nonexistent/dir"], "/nonexistent/dir"),
        (["analyze", "--format", "xml", "x"], "--format"),
        (["analyze"], "PATHS"),
    ],
)
def test_analyze_bad_input(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ringprobe: error:")
    assert message in line
