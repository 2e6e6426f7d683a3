"""`ringprobe lab`: the emulated censored network (doctor, up, down, list, run, demo)."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from probe.lab import Lab
    from probe.lab.scenario import AppResult, Scenario, ScenarioResult

F = TypeVar("F", bound=Callable[..., Any])


def _name_option(func: F) -> F:
    return click.option(
        "--name",
        default="default",
        show_default=True,
        help="Which lab: its namespaces are rp<4 hex digits of the name>-<role>, so labs with "
        "different names never collide.",
    )(func)


@click.group("lab")
def command() -> None:
    """The lab: an emulated censored network on this machine.

    Five network namespaces in a row (client, isp, tspu, border, internet) with real servers
    (dnsmasq, nginx, coturn, dnsdist, ngtcp2) in the last and TSPU-like rules in the middle.
    Nothing leaves the machine. Needs root on Linux; `ringprobe lab doctor` checks.
    """


@command.command("doctor")
def doctor_command() -> None:
    """Check what the lab needs (Linux, root, ip, nft, iptables with the string match,
    dnsmasq, nginx, coturn, dnsdist, ngtcp2) and print the install line for what is missing.
    Exits 1 when something is missing."""
    from probe.lab import doctor

    findings = doctor.check()
    width = max(len(f.name) for f in findings)
    for finding in findings:
        mark = "OK     " if finding.ok else "MISSING"
        click.echo(f"{mark} {finding.name.ljust(width)}  {finding.detail}")
    line = doctor.install_line(findings)
    if line:
        click.echo(f"\ninstall what is missing (as root):\n  {line}")
    if not all(f.ok for f in findings):
        sys.exit(1)
    click.echo("\nthe lab can run here")


@command.command("up")
@_name_option
def up_command(name: str) -> None:
    """Build the lab (or leave an identical running one as it is) and say how to use it.

    A lab left half built or crashed is removed first. Prints the time it took.
    """
    from probe.lab import Lab, LabSetupError

    lab = Lab(name)
    try:
        result = lab.up()
    except LabSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "already up (checked" if result.reused else "up (built"
    click.echo(f"lab {name!r} {verb} in {result.elapsed:.2f} s)")
    _describe(lab)


def _describe(lab: Lab) -> None:
    prefix = lab.prefix
    roles = ",".join(lab.namespaces)
    probe = " ".join(lab.probe_command(lab.state_dir / "results"))
    click.echo(f"  namespaces  {prefix}-{{{roles}}}")
    click.echo(f"  catalog     {lab.catalog_path}")
    click.echo(f"  CA          {lab.ca_file}")
    click.echo(f"  resolver    {lab.resolver} ({lab.client_resolv_conf})")
    click.echo(f"  DoH         {lab.doh_url}")
    click.echo(f"  rules       nft add rule inet tspu forward ... (namespace {prefix}-tspu)")
    click.echo(
        f'              placement = "border": inet border forward (namespace {prefix}-border)'
    )
    click.echo(f"  probe       {probe}")


@command.command("down")
@_name_option
def down_command(name: str) -> None:
    """Stop every process the lab started (by pid) and remove its namespaces and files.

    Safe on a lab that is down, half built or crashed.
    """
    from probe.lab import Lab, LabSetupError

    try:
        result = Lab(name).down()
    except LabSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.stopped and not result.namespaces:
        click.echo(f"lab {name!r} was not up; nothing to remove")
        return
    click.echo(
        f"lab {name!r} down in {result.elapsed:.2f} s: stopped {len(result.stopped)} "
        f"processes, removed {len(result.namespaces)} namespaces"
    )


# --- scenarios -------------------------------------------------------------------------------


class _ScenarioFailure(click.ClickException):
    """A scenario file's fault (exit 2, like every input error), without a --help hint: the
    message already names the file and line."""

    exit_code = 2


# The defaults of probe.lab.scenario (CHECK_TIMEOUT, RUN_DEADLINE), written out so that this
# module imports nothing but click at the top (`ringprobe --help` stays fast); a test keeps them
# equal.
DEFAULT_TIMEOUT = 3.0
DEFAULT_DEADLINE = 20.0


def _scenario_options(func: F) -> F:
    """Options `run` and `demo` share."""
    func = click.option(
        "--deadline",
        type=click.FloatRange(5, 600),
        default=DEFAULT_DEADLINE,
        show_default=True,
        help="Seconds one scenario's probe run may take.",
    )(func)
    func = click.option(
        "--timeout",
        type=click.FloatRange(0.5, 60),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds one check may take (a dropped packet costs a check this long).",
    )(func)
    func = click.option(
        "--keep-records",
        type=click.Path(file_okay=False, path_type=Path),
        metavar="DIR",
        help="Keep each run's records in DIR/<scenario> (default: the lab's state directory, "
        "latest run only, removed by `lab down`).",
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(func)
    return _name_option(func)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Python's default for SIGTERM ends the process without running `finally`: the scenario's
    # rules would stay in the tspu and the probe would run on. An exception unwinds instead
    # (subprocess.run stops the probe, run_scenario restores the tspu); 128 + signal, as `run`.
    raise SystemExit(128 + signum)


@contextmanager
def _lab_for_scenarios(name: str, quiet: bool) -> Iterator[Lab]:
    """The lab, brought up if it is not; taken down afterwards only if this command brought it
    up (a lab someone else built stays as it was). SIGTERM unwinds like Ctrl-C meanwhile."""
    from probe.lab import Lab, LabSetupError

    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    lab = Lab(name)
    try:
        status = lab.status()
        was_up = status.state == "up"
        # A healthy lab is left alone: `up` would reset the tspu under a scenario that another
        # command may be running on it (scenario runs take turns through a lock).
        result = None if status.healthy else lab.up()
    except LabSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        verb = "already up" if result is None else f"up (built in {result.elapsed:.2f} s)"
        click.echo(f"lab {name!r} {verb}")
    try:
        yield lab
    finally:
        if not was_up:
            down = lab.down()
            if not quiet:
                click.echo(f"lab {name!r} down in {down.elapsed:.2f} s (this command built it)")


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def list_command(as_json: bool) -> None:
    """The built-in scenarios, with what each emulates and expects.

    `ringprobe lab run --scenario NAME` runs one; docs/lab.md describes the file format for
    writing your own.
    """
    from probe.lab.scenario import builtin_path, builtin_scenarios

    scenarios = builtin_scenarios()
    if as_json:
        rows = [
            {
                "name": s.name,
                "summary": s.summary,
                "path": str(builtin_path(s.name)),
                "placement": s.placement,
                "call_flows": s.call_flows,
                "call_duration": s.call_duration if s.call_flows else None,
                "expect": {e.app: e.to_dict() for e in s.expect},
            }
            for s in scenarios
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(s.name) for s in scenarios)
    for scenario in scenarios:
        click.echo(f"{scenario.name.ljust(width)}  {scenario.summary}")


@command.command("run")
@click.option(
    "--scenario",
    "spec",
    required=True,
    metavar="NAME|FILE",
    help="A built-in scenario's name (`ringprobe lab list`) or a scenario file's path.",
)
@_scenario_options
def run_command(
    spec: str, name: str, as_json: bool, keep_records: Path | None, timeout: float, deadline: float
) -> None:
    """Run one scenario: apply its rules to the tspu, run the probe in the client namespace,
    restore a clean tspu, and compare the analysis's verdicts with the scenario's [expect].

    Brings the lab up if it is not (and then takes it down again). Exits 1 when a verdict
    differs from the expectation, 2 when the scenario file is not valid or the kernel refuses
    one of its rules (the message names the line).
    """
    from probe.lab import ScenarioError, ScenarioRunError
    from probe.lab.scenario import find_scenario, run_scenario

    try:
        scenario = find_scenario(spec)
    except ScenarioError as exc:
        raise _ScenarioFailure(str(exc)) from exc
    with _lab_for_scenarios(name, quiet=as_json) as lab:
        try:
            result = run_scenario(
                lab, scenario, keep_records=keep_records, timeout=timeout, deadline=deadline
            )
        except ScenarioError as exc:
            raise _ScenarioFailure(str(exc)) from exc
        except ScenarioRunError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_result(result)
    if not result.passed:
        sys.exit(1)


def _print_result(result: ScenarioResult) -> None:
    scenario = result.scenario
    click.echo(f"scenario {scenario.name}: {scenario.summary}")
    click.echo(f"  from {scenario.source}")
    rows = [("app", "expected", "got", "pass")]
    rows += [(a.app, _expected(a), a.got, _mark(a)) for a in result.apps]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for app_row in rows:
        cells = (c.ljust(w) for c, w in zip(app_row, widths, strict=True))
        click.echo(("  " + "  ".join(cells)).rstrip())
    for app in result.apps:
        click.echo(f"  {app.app}: [{app.rule or '-'}] {app.evidence}")
    verdict = "passed" if result.passed else "MISSED"
    click.echo(
        f"{verdict} in {result.elapsed:.1f} s (probe run {result.probe_status}); "
        f"records: {result.records_path}"
    )


def _expected(app: AppResult) -> str:
    return app.expected.describe() if app.expected is not None else "-"


def _mark(app: AppResult) -> str:
    return {True: "yes", False: "MISS", None: "-"}[app.passed]


_DEMO_COLUMNS = (("scenario", 20), ("app", 8), ("expected", 28), ("got", 28), ("pass", 4))


def _demo_line(cells: tuple[str, ...]) -> str:
    widths = [w for _name, w in _DEMO_COLUMNS]
    padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


@command.command("demo")
@_scenario_options
def demo_command(
    name: str, as_json: bool, keep_records: Path | None, timeout: float, deadline: float
) -> None:
    """Run every built-in scenario on the lab and print scenario / app / expected / got / pass.

    Brings the lab up if it is not (and takes it down afterwards only then). Exits 1 if any
    verdict differs from its scenario's expectation (or a scenario could not run).
    """
    from probe.lab.scenario import ScenarioResult, builtin_scenarios, run_many

    started = time.monotonic()
    scenarios = builtin_scenarios()
    results: list[dict[str, Any]] = []
    met = expected = 0
    failed = False
    with _lab_for_scenarios(name, quiet=as_json) as lab:
        if not as_json:
            click.echo(_demo_line((*(n for n, _w in _DEMO_COLUMNS), "time")))
        options = {"keep_records": keep_records, "timeout": timeout, "deadline": deadline}
        for scenario, outcome in run_many(lab, scenarios, **options):
            if isinstance(outcome, ScenarioResult):
                results.append(outcome.to_dict())
                rows = [a for a in outcome.apps if a.expected is not None]
                expected += len(rows)
                met += sum(bool(a.passed) for a in rows)
                failed |= not outcome.passed
                if not as_json:
                    _print_demo_rows(scenario, outcome, rows)
            else:
                failed = True
                expected += len(scenario.expect)
                results.append({"scenario": scenario.name, "passed": False, "error": str(outcome)})
                if not as_json:
                    click.echo(_demo_line((scenario.name, "-", "-", "-", "ERROR")))
                    click.echo(f"    {outcome}")
        elapsed = time.monotonic() - started
        if not as_json:
            verdict = "all met" if not failed else "NOT ALL MET"
            click.echo(
                f"{len(scenarios)} scenarios, {met} of {expected} expectations met ({verdict}) "
                f"in {elapsed:.1f} s"
            )
    if as_json:
        summary = {
            "lab": name,
            "passed": not failed,
            "expectations": expected,
            "met": met,
            "elapsed": round(elapsed, 2),
            "scenarios": results,
        }
        click.echo(json.dumps(summary, indent=2))
    if failed:
        sys.exit(1)


def _print_demo_rows(scenario: Scenario, result: ScenarioResult, rows: list[AppResult]) -> None:
    for i, app in enumerate(rows):
        first = i == 0
        cells = (
            scenario.name if first else "",
            app.app,
            _expected(app),
            app.got,
            _mark(app),
            f"{result.elapsed:.1f} s" if first else "",
        )
        click.echo(_demo_line(cells))
        if not app.passed:
            click.echo(f"    [{app.rule or '-'}] {app.evidence}")
