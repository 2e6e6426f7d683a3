"""Scheduled checks: `ringprobe run --ci` and its examples (docs/scheduled.md).

Every branch of the exit status is decided on the analysis's own verdicts for record sets built by
tests/recordsets.py (the rows `ringprobe analyze --format json` prints, which is what a run's
child process hands to probe.ci), and whole runs go through the CLI on a loopback catalog. The
example GitHub workflow's shell steps run for real under bash, and the systemd units go through
``systemd-analyze verify`` where it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from probe import ci
from probe.cli import cli
from probe.model import Failure, Record, Target
from probe.runner import RunResult
from tests.recordsets import (
    DROP,
    CallTest,
    Fate,
    FlowFate,
    by_app,
    run_records,
    where,
    write_runs,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "scheduled-check.yml"
SYSTEMD = ROOT / "contrib" / "systemd"
README = ROOT / "README.md"
APPS = ["whatsapp", "telegram", "signal", "control"]


def _rows(tmp_path: Path, records: list[Record]) -> list[dict[str, Any]]:
    """The verdict rows of `ringprobe analyze --format json` for one run's records."""
    from probe.cli.analyze import as_rows, judge, load_records

    directory = write_runs(tmp_path / "runs", records)
    table = judge(*load_records((str(directory),), (), ()))
    return as_rows(table)


def _result(tmp_path: Path, records: list[Record], status: str = "complete") -> RunResult:
    apps = list(dict.fromkeys(r.app for r in records)) or APPS
    return RunResult(
        run_id=records[0].run_id if records else "0" * 32,
        records_path=tmp_path / "runs" / "records-000.jsonl",
        manifest_path=tmp_path / "runs" / "records-000.manifest.json",
        status=status,  # type: ignore[arg-type]
        records=len(records),
        failures=sum(r.failure is not None for r in records),
        settings={"apps": apps},
    )


def _verdict(rows: list[dict[str, Any]], app: str) -> str:
    (row,) = [r for r in rows if r["app"] == app]
    return str(row["verdict"])


# --- the vocabulary is the analysis's ------------------------------------------------------------


def test_the_verdict_lists_are_the_analysis_lists() -> None:
    from analysis.rules import INTERFERENCE_VERDICTS, VERDICTS

    assert ci.VERDICTS == VERDICTS
    assert ci.INTERFERENCE_VERDICTS == INTERFERENCE_VERDICTS
    groups = [{ci.OK_VERDICT}, set(ci.INTERFERENCE_VERDICTS), set(ci.NOT_MEASURED_VERDICTS)]
    assert set.union(*groups) == set(VERDICTS)
    assert sum(len(g) for g in groups) == len(VERDICTS)  # disjoint


def test_the_ci_module_does_not_load_pandas() -> None:
    code = "import sys, probe.ci; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- every branch, through the real analysis ------------------------------------------------------


def _web(target: Target) -> bool:
    return target.app == "whatsapp" and target.role == "web"


def _wa_calls(target: Target) -> bool:
    return target.app == "whatsapp" and target.expect in ("stun", "turn", "wa_relay", "reflector")


SLOW = Fate(real_bps=140_000, real_bytes=175_000, http_real=Failure.GENERIC_TIMEOUT)
HALF_WA = where(lambda t: t.app == "whatsapp" and t.port == 443, DROP)

# (name, records, app whose verdict decides, that verdict, exit status)
CASES = [
    ("all_ok", lambda: run_records(), "whatsapp", "ok", 0),
    ("blocked", lambda: run_records(by_app({"telegram": DROP})), "telegram", "blocked", 1),
    ("throttled", lambda: run_records(where(_web, SLOW)), "whatsapp", "throttled", 1),
    (
        "calls_blocked",
        lambda: run_records(where(_wa_calls, Fate(relay=Failure.GENERIC_TIMEOUT))),
        "whatsapp",
        "calls_blocked",
        1,
    ),
    (
        "calls_cut",
        lambda: run_records(calls={"telegram": CallTest(call=FlowFate(cut_s=5.0))}),
        "telegram",
        "calls_cut",
        1,
    ),
    (
        "calls_throttled",
        lambda: run_records(calls={"whatsapp": CallTest(call=FlowFate(rate=0.5))}),
        "whatsapp",
        "calls_throttled",
        1,
    ),
    (
        "network_degraded",
        lambda: run_records(by_app({"whatsapp": DROP, "control": DROP})),
        "whatsapp",
        "network_degraded",
        2,
    ),
    ("inconclusive", lambda: run_records(HALF_WA), "whatsapp", "inconclusive", 2),
]


@pytest.mark.parametrize(
    ("make", "app", "verdict", "status"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_exit_status_per_verdict(
    tmp_path: Path, make: Any, app: str, verdict: str, status: int
) -> None:
    records = make()
    rows = _rows(tmp_path, records)
    assert _verdict(rows, app) == verdict
    summary = ci.summarize(_result(tmp_path, records), rows, vantage="volunteer")
    assert summary["exit_status"] == status
    assert summary["outcome"] == ci.OUTCOMES[status]
    assert summary["apps"][app]["verdict"] == verdict
    assert summary["apps"][app]["evidence"]
    assert summary["counts"]["verdicts"][verdict] >= 1
    assert sum(summary["counts"]["verdicts"].values()) == len(APPS)
    if status == 0:
        assert summary["reasons"] == []
    else:
        assert any(reason.startswith(f"{app}: {verdict}") for reason in summary["reasons"])
    json.dumps(summary)  # JSON-ready as it is


def test_interference_outweighs_what_could_not_be_measured(tmp_path: Path) -> None:
    records = run_records(lambda t: DROP if t.app == "telegram" else HALF_WA(t))
    rows = _rows(tmp_path, records)
    assert (_verdict(rows, "telegram"), _verdict(rows, "whatsapp")) == ("blocked", "inconclusive")
    outcome = ci.decide("complete", APPS, rows)
    assert outcome.exit_status == ci.EXIT_INTERFERENCE
    assert outcome.reasons == ("telegram: blocked (tcp, ip_drop)",)


def test_a_run_cut_by_its_deadline_is_not_measured_even_if_all_is_ok(tmp_path: Path) -> None:
    records = run_records()
    rows = _rows(tmp_path, records)
    assert {r["verdict"] for r in rows} == {"ok"}
    summary = ci.summarize(_result(tmp_path, records, "deadline_reached"), rows, vantage="baseline")
    assert summary["exit_status"] == ci.EXIT_NOT_MEASURED
    assert summary["reasons"] == ["the run ended deadline reached: not every check ran"]
    assert summary["vantage"] == "baseline"


def test_a_run_cut_by_its_deadline_still_reports_interference(tmp_path: Path) -> None:
    records = run_records(by_app({"whatsapp": DROP}))
    rows = _rows(tmp_path, records)
    outcome = ci.decide("deadline_reached", APPS, rows)
    assert outcome.exit_status == ci.EXIT_INTERFERENCE


def test_an_app_without_records_is_not_measured(tmp_path: Path) -> None:
    records = run_records(apps=("whatsapp", "telegram", "control"))
    rows = _rows(tmp_path, records)
    assert {r["verdict"] for r in rows} == {"ok"}
    result = _result(tmp_path, records)
    result.settings["apps"] = APPS  # the catalog had Signal, no record of it was written
    summary = ci.summarize(result, rows, vantage="volunteer")
    assert summary["exit_status"] == ci.EXIT_NOT_MEASURED
    assert summary["apps"]["signal"]["verdict"] is None
    assert summary["counts"]["verdicts"][ci.NO_VERDICT] == 1
    assert summary["reasons"] == ["signal: no verdict (no record of it was written)"]


@pytest.mark.parametrize(
    "why", ["no records to analyse", "analysis failed: SchemaVersionError: version 9"]
)
def test_no_verdicts_is_not_measured(tmp_path: Path, why: str) -> None:
    summary = ci.summarize(_result(tmp_path, []), why, vantage="volunteer")
    assert summary["exit_status"] == ci.EXIT_NOT_MEASURED
    assert summary["verdicts_error"] == why
    assert summary["reasons"] == [f"no verdicts: {why}"]
    assert {entry["verdict"] for entry in summary["apps"].values()} == {None}


def test_an_empty_verdict_list_is_not_measured() -> None:
    outcome = ci.decide("complete", [], [])
    assert outcome.exit_status == ci.EXIT_NOT_MEASURED


def test_an_interrupted_run_exits_as_every_interrupted_run(tmp_path: Path) -> None:
    summary = ci.summarize(
        _result(tmp_path, run_records(), "interrupted"),
        "the run was interrupted",
        vantage="volunteer",
        signum=signal.SIGTERM,
    )
    assert summary["exit_status"] == 128 + signal.SIGTERM
    assert summary["outcome"] == "interrupted"


def test_the_summary_file_is_the_summary(tmp_path: Path) -> None:
    records = run_records(by_app({"telegram": DROP}))
    summary = ci.summarize(_result(tmp_path, records), _rows(tmp_path, records), vantage="lab")
    path = tmp_path / "deep" / "ci.json"
    assert ci.write_summary(summary, path) is summary
    assert json.loads(path.read_text()) == summary
    assert [p.name for p in path.parent.iterdir()] == ["ci.json"]  # no temporary file left


def test_a_summary_that_cannot_be_written_is_not_measured(tmp_path: Path) -> None:
    records = run_records(by_app({"telegram": DROP}))
    summary = ci.summarize(_result(tmp_path, records), _rows(tmp_path, records), vantage="lab")
    assert summary["exit_status"] == ci.EXIT_INTERFERENCE
    blocker = tmp_path / "file"
    blocker.write_text("")
    failed = ci.write_summary(summary, blocker / "ci.json")  # a file is no directory
    assert failed["exit_status"] == ci.EXIT_NOT_MEASURED
    assert failed["reasons"][-1].startswith(f"the summary could not be written to {blocker}")
    assert summary["exit_status"] == ci.EXIT_INTERFERENCE  # the original is left as it was


# --- the command line, on loopback ----------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _catalog(tmp_path: Path, targets: dict[str, tuple[str, str, int]]) -> Path:
    """A loopback catalog: id -> (app, role, port), TCP targets that normally accept."""
    path = tmp_path / "cat.toml"
    path.write_text(
        '[defaults]\ntransport = "tcp"\nexpect = "tcp"\nsource = "test"\ndate = "2026-11-28"\n'
        'address = "127.0.0.1"\n\n'
        + "".join(
            f'[[target]]\nid = "{tid}"\napp = "{app}"\nrole = "{role}"\nport = {port}\n\n'
            for tid, (app, role, port) in targets.items()
        )
    )
    return path


def _run_ci(tmp_path: Path, catalog: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["run", "--targets", str(catalog), "--out", str(tmp_path / "out"), "--no-doh",
         "--timeout", "2", "--cc", "ZZ", "--asn", "AS64496", "--vantage", "baseline", "--ci",
         *extra],
    )  # fmt: skip


def test_ci_run_on_loopback_all_ok(tmp_path: Path, listener: int) -> None:
    catalog = _catalog(tmp_path, {f"ctl{i}": ("control", "control", listener) for i in range(3)})
    path = tmp_path / "summary" / "ci.json"
    result = _run_ci(tmp_path, catalog, "--ci-summary", str(path))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert json.loads(path.read_text()) == summary
    assert summary["status"] == "complete"
    assert summary["vantage"] == "baseline"
    assert summary["apps"]["control"]["verdict"] == "ok"
    assert summary["counts"]["records"] == 3
    assert summary["exit_status"] == 0
    assert result.stderr.strip() == "ringprobe: ci: exit 0 (ok): every app ok"
    records = Path(summary["records_path"]).read_text().splitlines()
    assert {json.loads(line)["probe"]["vantage"] for line in records} == {"baseline"}


def test_ci_run_on_loopback_blocked_app_exits_1(tmp_path: Path, listener: int) -> None:
    closed = _closed_port()
    targets = {f"ctl{i}": ("control", "control", listener) for i in range(3)}
    targets |= {f"wa{i}": ("whatsapp", "signaling", closed) for i in range(3)}
    result = _run_ci(tmp_path, _catalog(tmp_path, targets))
    summary = json.loads(result.stdout)
    assert summary["apps"]["whatsapp"]["verdict"] == "blocked", summary["apps"]
    assert summary["apps"]["control"]["verdict"] == "ok"
    assert result.exit_code == summary["exit_status"] == 1
    assert "whatsapp: blocked" in result.stderr


def test_ci_run_on_loopback_degraded_network_exits_2(tmp_path: Path) -> None:
    closed = _closed_port()
    catalog = _catalog(tmp_path, {f"ctl{i}": ("control", "control", closed) for i in range(3)})
    result = _run_ci(tmp_path, catalog)
    summary = json.loads(result.stdout)
    assert summary["apps"]["control"]["verdict"] == "network_degraded"
    assert result.exit_code == summary["exit_status"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ci", "--json"], "drop --json"),
        (["--ci-summary", "x.json"], "only with --ci"),
    ],
)
def test_ci_option_misuse_is_a_usage_error(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ringprobe: error:")
    assert message in lines[0]
    assert result.stdout == ""


# --- the example GitHub workflow ------------------------------------------------------------------


def _workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def _steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _workflow()["jobs"]["check"]["steps"]
    return steps


def _step(name: str) -> dict[str, Any]:
    (step,) = [s for s in _steps() if s.get("name", "").startswith(name)]
    return step


def documented_install() -> list[str]:
    """The commands of the README's "Install only the probe" block."""
    heading = re.search(r"^#+ Install only the probe$", README.read_text(), re.MULTILINE)
    assert heading, f"{README} has no 'Install only the probe' section"
    section = heading.string[heading.end() :]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_workflow_triggers_and_opt_in() -> None:
    data = _workflow()
    triggers = data["on"] if "on" in data else data[True]  # YAML 1.1: a bare `on` is true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (cron,) = [entry["cron"] for entry in triggers["schedule"]]
    assert len(cron.split()) == 5
    job = data["jobs"]["check"]
    assert "vars.RINGPROBE_SCHEDULED == 'true'" in job["if"]
    assert job["timeout-minutes"] <= 60
    assert data["permissions"] == {"contents": "read"}


def test_workflow_installs_as_documented_and_records_consent_before_measuring() -> None:
    names = [step.get("name", step.get("uses", "")) for step in _steps()]
    install = _step("Install ringprobe")["run"].splitlines()
    assert install == documented_install()
    assert _step("Record consent")["run"] == ".venv/bin/ringprobe consent --agree"
    measure = _step("Measure")["run"]
    assert ".venv/bin/ringprobe run --vantage baseline --ci " in measure
    assert "--out results" in measure
    order = [names.index(n) for n in ("Record consent", "Measure", "Upload the results", "Judge")]
    assert order == sorted(order)
    upload = _step("Upload the results")
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "results/"
    assert _step("Judge")["if"] == "always()"


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # GitHub runs a `run:` step as `bash -e {0}` when no shell is given.
    path = cwd / "step.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", "-e", str(path)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("status", [0, 1, 2, 143])
def test_workflow_measure_step_passes_the_status_on(tmp_path: Path, status: int) -> None:
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "ringprobe"
    fake.write_text(f'#!/bin/sh\necho "$@" > args.txt\nexit {status}\n')
    fake.chmod(0o755)
    output = tmp_path / "github_output"
    done = _bash(_step("Measure")["run"], tmp_path, {"GITHUB_OUTPUT": str(output)})
    assert done.returncode == 0, done.stderr  # the step itself never fails
    assert output.read_text() == f"status={status}\n"
    args = (tmp_path / "args.txt").read_text().split()
    assert args[:4] == ["run", "--vantage", "baseline", "--ci"]


@pytest.mark.parametrize(
    ("status", "summary", "code", "annotation"),
    [
        ("0", True, 0, None),
        ("1", True, 1, "::error title=ringprobe::interference found"),
        ("2", True, 0, "::warning title=ringprobe::not everything could be measured"),
        ("143", True, 1, "::error title=ringprobe::ringprobe ended with exit 143"),
        ("1", False, 1, "::error title=ringprobe::no summary (exit 1)"),
        ("", False, 1, "::error title=ringprobe::no summary (exit none)"),
    ],
)
def test_workflow_judge_step(
    tmp_path: Path, status: str, summary: bool, code: int, annotation: str | None
) -> None:
    step = _step("Judge")
    env = {key: str(value) for key, value in step["env"].items() if "${{" not in str(value)}
    env["STATUS"] = status
    if summary:
        (tmp_path / env["SUMMARY"]).parent.mkdir(parents=True)
        (tmp_path / env["SUMMARY"]).write_text('{"exit_status": 0}\n')
    done = _bash(step["run"], tmp_path, env)
    assert done.returncode == code, done.stdout + done.stderr
    if annotation is None:
        assert "::" not in done.stdout
    else:
        assert done.stdout.startswith(annotation)


# --- the systemd units ----------------------------------------------------------------------------


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{name}: keep a value on one line: {line}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{name}: {line} before any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_service_is_a_hardened_oneshot_ci_run() -> None:
    service = _unit("ringprobe-check.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["User"] not in (["root"], ["0"])
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[0].endswith("/bin/ringprobe")
    assert argv[1] == "run"
    assert {"--ci", "--yes"} <= set(argv)
    out = argv[argv.index("--out") + 1]
    summary = argv[argv.index("--ci-summary") + 1]
    (writable,) = service["ReadWritePaths"]
    assert out.startswith(writable + "/")
    assert summary.startswith(writable + "/")
    assert service["Environment"] == [f"RINGPROBE_CONFIG_DIR={writable}/config"]
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ]:
        assert service[key] == [value], key
    # No capability unless the run localizes (raw ICMP sockets: CAP_NET_RAW and nothing else).
    localize = "--localize" in argv
    assert service["CapabilityBoundingSet"] == (["CAP_NET_RAW"] if localize else [""])
    assert service.get("AmbientCapabilities", []) == (["CAP_NET_RAW"] if localize else [])
    assert "TimeoutStartSec" in service


def test_timer_runs_the_service_with_a_random_delay() -> None:
    timer = _unit("ringprobe-check.timer")
    assert timer["Timer"]["Unit"] == ["ringprobe-check.service"]
    assert timer["Timer"]["OnCalendar"]
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also wants ExecStart's program to exist: point it at this checkout's ringprobe.
    ringprobe = Path(sys.executable).with_name("ringprobe")
    assert ringprobe.exists()
    for unit in ("ringprobe-check.service", "ringprobe-check.timer"):
        text = (SYSTEMD / unit).read_text()
        (tmp_path / unit).write_text(
            text.replace("/opt/ringprobe/.venv/bin/ringprobe", str(ringprobe))
        )
    units = [str(tmp_path / unit) for unit in ("ringprobe-check.service", "ringprobe-check.timer")]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # an unknown key or a bad value is only a warning
