"""`ringprobe run`: measure the catalog's endpoints and write JSON Lines records."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from probe.cli import trace as trace_cli
from probe.cli.common import (
    allow_net_option,
    catalog_options,
    load_selected,
    reflector_from,
    reflector_options,
)
from probe.config import Settings, load_settings
from probe.consent import require_consent

if TYPE_CHECKING:
    from probe.checks.base import CheckContext
    from probe.runner import Event, Limits, Localize, RunOutput, RunResult

DEFAULT_OUT = Path("ringprobe-results")
# Cloudflare's resolver by address, so DoH needs no prior (possibly tampered) lookup.
DEFAULT_DOH_URL = "https://1.1.1.1/dns-query"


@click.command("run")
@catalog_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for the records (.jsonl) and the run manifest.",
)
@allow_net_option
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra certificate authorities (PEM) to trust for TLS, e.g. the lab's.",
)
@click.option("--resolver", metavar="ADDR[:PORT]", help="Also resolve through this DNS server.")
@click.option(
    "--doh-url",
    default=DEFAULT_DOH_URL,
    show_default=True,
    help="DNS-over-HTTPS resolver to compare answers with.",
)
@click.option("--no-doh", is_flag=True, help="Skip the DNS-over-HTTPS comparison.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 120),
    default=10.0,
    show_default=True,
    help="Seconds one check may take.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(1, 24 * 3600),
    default=300.0,
    show_default=True,
    help="Seconds the whole run may take; checks not started by then are skipped.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=128,  # probe.runner.DEFAULT_CONCURRENCY, not imported: --help must stay light
    show_default=True,
    help="Checks in flight at once.",
)
@click.option(
    "--per-host",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Checks in flight at once to one address.",
)
@click.option("--neutral-sni", default="example.org", show_default=True, help="SNI of the twin.")
@reflector_options(
    "A ringprobe reflector's IP address: send call-shaped flows to it and measure their "
    "echoes (docs/callflow.md); with --localize the call trigger is traced to it. Without it "
    "no call flows are sent."
)
@click.option(
    "--call-duration",
    type=click.FloatRange(1, 60),
    default=10.0,  # probe.checks.call_flow.DEFAULT_DURATION, not imported: --help stays light
    show_default=True,
    help="Seconds each call-shaped flow sends for (three flows per app).",
)
@click.option(
    "--call-profile",
    "call_profiles",
    type=click.Choice(["voice", "video"]),
    multiple=True,
    default=("voice",),
    show_default=True,
    help="Call-flow profile; repeat for both. voice: a 90-170-byte datagram every 60 ms (about "
    "0.6 MB per app with the TLS streams); video: 900-1200 bytes every 20 ms (about 3 MB more "
    "per app at 10 s).",
)
@click.option(
    "--localize",
    is_flag=True,
    help="After the other checks, trace each app's triggers (as `ringprobe trace` does by "
    "default: tls, stun, the WhatsApp prologue, the call opening, each to one catalog "
    "endpoint) to find the hop that interferes. Needs root or CAP_NET_RAW, else the trace "
    "records say raw_socket_not_permitted and nothing is sent. A trace starts only if the "
    "deadline leaves it its whole budget (a TCP trace at the default TTLs and --timeout: up to "
    "3 minutes); raise --deadline so that all of them run.",
)
@click.option(
    "--localize-max-ttl",
    type=click.IntRange(1, trace_cli.MAX_TTL),
    default=trace_cli.DEFAULT_MAX_TTL,
    show_default=True,
    help="The highest TTL a --localize trace sends.",
)
@click.option(
    "--vantage",
    type=click.Choice(["volunteer", "baseline", "lab"]),
    default="volunteer",
    show_default=True,
    help="What kind of network this is (baseline: a scheduled run from an uncensored one).",
)
@click.option(
    "--lab-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="Lab runs only (--vantage lab): date the run's records to this day, time of day kept, "
    "to build time series from the lab (measurements/samples).",
)
@click.option("--cc", default="ZZ", show_default=True, help="Country code to record.")
@click.option(
    "--asn", default="AS0", show_default=True, help="Network (ASN) to record, e.g. AS12389."
)
@click.option(
    "--locate/--no-locate",
    default=None,
    help="Look up this network's ASN and country before the checks: the public address from a "
    "STUN Binding to --stun-server, its ASN and country from Team Cymru's DNS service; only "
    "those are recorded, never the address (docs/volunteers.md). Default: on, except with "
    "--vantage lab, an allow-list (--allow-net, RINGPROBE_ALLOW_NETS), or --asn and --cc "
    "both given.",
)
@click.option(
    "--stun-server",
    metavar="HOST[:PORT]",
    default="stun.l.google.com:19302",  # probe.config.DEFAULT_STUN_SERVER; --help stays light
    show_default=True,
    help="The neutral STUN server --locate asks for the public address (the control catalog's).",
)
@click.option(
    "--network-type",
    type=click.Choice(["wifi", "mobile", "wired", "unknown"]),
    default="unknown",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option(
    "--upload",
    "upload_url",
    metavar="URL",
    help="After the run (also an interrupted one), upload its records to the collector at URL "
    "(docs/upload.md); if that fails, say so and exit 3.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Do not prompt; needs consent given earlier (ringprobe consent). Lab runs need none.",
)
@click.option(
    "--ci",
    is_flag=True,
    help="Scheduled check: implies --yes, no progress display; a JSON summary on stdout and exit "
    "0 when every app is ok, 1 on interference, 2 when something could not be measured "
    "(docs/scheduled.md).",
)
@click.option(
    "--ci-summary",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="With --ci: also write the JSON summary to PATH.",
)
def command(**options: Any) -> None:
    """Measure the endpoints of WhatsApp, Telegram, Signal (control) and neutral controls.

    Every check's record is written to OUT as soon as it finishes, so an interrupted run
    (Ctrl-C, SIGTERM) keeps what it measured; the manifest next to it says how the run ended.
    The first run from a network asks for consent (`ringprobe consent`); lab runs need none.
    """
    _ci_check(options)
    # Before anything is sent or written: the volunteer's informed consent (probe/consent.py).
    # --ci never prompts: a scheduled run has nobody to ask (docs/scheduled.md).
    user_settings = load_settings()  # the user's settings file (ringprobe config), read once
    require_consent(options["vantage"], options["yes"] or options["ci"], settings=user_settings)
    options["from_settings"] = _settings_defaults(options, user_settings)
    catalog = load_selected(options["targets_file"], options["apps"])
    ctx = _context(options)
    _upload_check(options, ctx)
    location = _locate(ctx, options)
    limits = _limits(options)
    localize = _localize(options)
    from probe.runner import RunOutput

    settings = {
        "apps": list(catalog.apps()),
        "catalog": list(catalog.sources),
        "timeout": ctx.timeout,
        "deadline": limits.deadline,
        "concurrency": limits.concurrency,
        "per_host": limits.per_host,
        "resolver": ctx.resolver,
        "doh_url": ctx.doh_url,
        "allow_list": ctx.allow.describe(),
        "reflector": ctx.reflector,
        "call_duration": ctx.call_duration if ctx.reflector else None,
        "call_profiles": list(ctx.call_profiles) if ctx.reflector else None,
        "lab_date": options["lab_date"].date().isoformat() if options.get("lab_date") else None,
        "localize": localize is not None,
        "localize_max_ttl": localize.max_ttl if localize is not None else None,
        "localize_wait": localize.wait if localize is not None else None,
        "location": location,
    }
    try:
        output = RunOutput(options["out_dir"], ctx, len(catalog), settings)
    except OSError as exc:
        # A usage error (exit 2): with --ci, exit 1 would read as interference found.
        raise click.BadParameter(
            f"cannot write to {options['out_dir']}: {exc.strerror}", param_hint="--out"
        ) from exc
    show_progress = sys.stdout.isatty() and not options["as_json"] and not options["ci"]
    signum, result = _run_with_signals(catalog, ctx, output, limits, localize, show_progress)
    result = result or output.result
    # After Ctrl-C the user wants out, not a minute of analysis.
    verdicts = _verdicts(result) if signum is None else "the run was interrupted"
    upload_failed = _upload(options, ctx, result)
    if options["ci"]:
        _ci_exit(result, verdicts, signum, options, ctx.scrubber.scrub)
    if options["as_json"]:
        summary_text = json.dumps(_summary_json(result, verdicts), indent=2, sort_keys=True)
        click.echo(ctx.scrubber.scrub(summary_text))
    else:
        _print_summary(result, verdicts, ctx.scrubber.scrub)
    if signum is not None:
        click.echo(
            ctx.scrubber.scrub(
                f"ringprobe: interrupted; {result.records} finished records kept in "
                f"{result.records_path}"
            ),
            err=True,
        )
        sys.exit(128 + signum)
    if upload_failed:
        sys.exit(EXIT_UPLOAD_FAILED)


def _context(options: dict[str, Any]) -> CheckContext:
    from probe.allowlist import AllowList
    from probe.checks.base import CheckContext
    from probe.checks.dns import parse_resolver
    from probe.checks.doh import parse_doh_url
    from probe.model import ProbeMeta

    cc = options["cc"].upper()
    if not re.fullmatch(r"[A-Z]{2}", cc):
        raise click.BadParameter(
            f"{options['cc']!r} is not a two-letter country code", param_hint="--cc"
        )
    asn = options["asn"].upper()
    asn = asn if asn.startswith("AS") else f"AS{asn}"
    if not re.fullmatch(r"AS[0-9]{1,10}", asn):
        raise click.BadParameter(
            f"{options['asn']!r} is not an ASN like AS12389", param_hint="--asn"
        )
    resolver = options["resolver"]
    if resolver:
        parse_resolver(resolver)  # validates; the check parses again when it runs
    doh_url = None if options["no_doh"] else parse_doh_url(options["doh_url"])
    reflector, secret = reflector_from(options)
    clock_offset = _lab_offset(options)
    return CheckContext(
        probe=ProbeMeta(
            cc=cc, asn=asn, network_type=options["network_type"], vantage=options["vantage"]
        ),
        allow=AllowList.from_sources(options["allow_net"]),
        timeout=options["timeout"],
        ca_file=str(options["ca_file"]) if options["ca_file"] else None,
        resolver=resolver,
        doh_url=doh_url,
        neutral_sni=options["neutral_sni"],
        reflector=reflector,
        reflector_secret=secret,
        call_duration=options["call_duration"],
        # Each profile once, in the order given.
        call_profiles=tuple(dict.fromkeys(options["call_profiles"])),
        clock_offset=clock_offset,
    )


def _lab_offset(options: dict[str, Any]) -> timedelta:
    """Whole days from today (UTC) to --lab-date; refused outside the lab, so a volunteer's or a
    baseline's records always carry the real time."""
    day = options.get("lab_date")
    if day is None:
        return timedelta(0)
    if options["vantage"] != "lab":
        raise click.BadParameter(
            "dates records to a simulated day: only with --vantage lab", param_hint="--lab-date"
        )
    return timedelta(days=(day.date() - datetime.now(UTC).date()).days)


def _limits(options: dict[str, Any]) -> Limits:
    from probe.runner import Limits

    return Limits(
        concurrency=options["concurrency"],
        per_host=options["per_host"],
        deadline=options["deadline"],
    )


def _localize(options: dict[str, Any]) -> Localize | None:
    if not options["localize"]:
        return None
    from probe.runner import Localize

    return Localize(max_ttl=options["localize_max_ttl"], wait=trace_cli.DEFAULT_WAIT)


def _run_with_signals(
    catalog: Any,
    ctx: CheckContext,
    output: RunOutput,
    limits: Limits,
    localize: Localize | None,
    show_progress: bool,
) -> tuple[int | None, RunResult | None]:
    """Run the event loop; SIGINT and SIGTERM cancel the run, which keeps its records and marks
    the manifest interrupted. Returns (signal number or None, result)."""
    from probe.interrupt import run_until_signal
    from probe.runner import execute

    async def main() -> RunResult:
        with _Progress(show_progress) as progress:
            return await execute(catalog, ctx, output, limits, progress.on_event, localize)

    return run_until_signal(main)


class _Progress:
    """A rich progress bar over targets while a terminal watches; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._records = 0
        self._failures = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]measuring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "targets · {task.fields[records]} records · {task.fields[failures]} failed"
                ),
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: Event) -> None:
        if self._progress is None:
            return
        if event.kind == "start":
            self._task = self._progress.add_task("run", total=event.total, records=0, failures=0)
        elif event.kind == "record" and event.record is not None:
            self._records += 1
            self._failures += event.record.failure is not None
            self._progress.update(self._task, records=self._records, failures=self._failures)
        elif event.kind == "target_done" or (event.kind == "skipped" and event.target is not None):
            # A skip of no one target (call flows without a reflector) is no target's progress.
            self._progress.advance(self._task)


def _per_app(result: RunResult) -> dict[str, dict[str, Any]]:
    """Counts per app from the records file (what was actually written, scrubbed)."""
    apps: dict[str, dict[str, Any]] = defaultdict(lambda: {"checks": 0, "failed": Counter()})
    if result.records_path.exists():
        with result.records_path.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                entry = apps[record["app"]]
                entry["checks"] += 1
                if record["failure"] is not None:
                    entry["failed"][f"{record['check']}: {record['failure']}"] += 1
    return apps


def _verdicts(result: RunResult) -> list[dict[str, Any]] | str:
    """The analysis package's verdicts on this run's records, or why there are none.

    Computed in a child process (`ringprobe analyze --format json`): the rules live only in
    `analysis`, and pandas (~80 MB) never weighs on the process that measures.
    """
    if result.records == 0:
        return "no records to analyse"
    cmd = [
        sys.executable,
        "-m",
        "probe.cli",
        "analyze",
        str(result.records_path),
        "--format",
        "json",
    ]
    try:
        # Bounded: analysing one run's few hundred records takes seconds.
        done = subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
            cmd, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"analysis did not run: {exc}"
    if done.returncode != 0:
        return "analysis failed: " + (done.stderr.strip().splitlines() or ["no message"])[-1]
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this (measuring) process and of the analysis child, in MB."""
    import resource

    kib = 1024.0  # Linux reports ru_maxrss in KiB
    return {
        "probe": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "analysis": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1),
    }


def _summary_json(result: RunResult, verdicts: list[dict[str, Any]] | str) -> dict[str, Any]:
    summary = result.manifest()
    summary["records_path"] = str(result.records_path)
    summary["manifest_path"] = str(result.manifest_path)
    summary["peak_rss_mb"] = _peak_rss_mb()
    summary["apps"] = {
        app: {"checks": v["checks"], "failed": dict(v["failed"])}
        for app, v in _per_app(result).items()
    }
    if isinstance(verdicts, str):
        summary["verdicts"] = []
        summary["verdicts_error"] = verdicts
    else:
        summary["verdicts"] = verdicts
    return summary


def _print_summary(
    result: RunResult, verdicts: list[dict[str, Any]] | str, scrub: Callable[[str], str] = str
) -> None:
    head = f"run {result.run_id[:8]}: {result.status}, {result.records} records"
    click.echo(scrub(f"{head} in {result.records_path}"))
    if isinstance(verdicts, str):
        click.echo(scrub(f"  no verdicts: {verdicts}"))
        return
    for row in verdicts:
        click.echo(scrub(f"  {row['summary']}"))
    if result.status != "complete":
        click.echo(
            f"  (the run ended {result.status.replace('_', ' ')}: verdicts cover what finished)"
        )


def _ci_check(options: dict[str, Any]) -> None:
    """--ci and --ci-summary: refuse combinations that cannot mean anything."""
    if options["ci"] and options["as_json"]:
        raise click.BadParameter("--ci prints its own JSON summary; drop --json", param_hint="--ci")
    if options["ci_summary"] is not None and not options["ci"]:
        raise click.BadParameter("only with --ci", param_hint="--ci-summary")


def _ci_exit(
    result: RunResult,
    verdicts: list[dict[str, Any]] | str,
    signum: int | None,
    options: dict[str, Any],
    scrub: Callable[[str], str],
) -> None:
    """--ci: the summary (probe.ci) on stdout and in --ci-summary, a line on stderr, and exit
    with the summary's status (0 ok, 1 interference, 2 not measured, 128 + signal)."""
    from probe import ci

    summary = ci.summarize(result, verdicts, vantage=options["vantage"], signum=signum)
    # As the --json summary: the volunteer's address out of every string (evidence, paths).
    summary = json.loads(scrub(json.dumps(summary)))
    if options["ci_summary"] is not None:
        summary = ci.write_summary(summary, options["ci_summary"])
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(ci.headline(summary), err=True)
    sys.exit(summary["exit_status"])


def _locate(ctx: CheckContext, options: dict[str, Any]) -> str:
    """--locate: look up the run's ASN and country (probe.locate) before anything is written,
    into ``ctx.probe``; the public address goes only to ``ctx.scrubber``. An --asn or --cc given
    on the command line wins over the lookup; both given, no lookup is made. A failed lookup
    records AS0/ZZ (or what was given) and the run goes on. Returns the manifest's ``location``."""
    import dataclasses
    import time

    from probe.errors import OptionError
    from probe.locate import LocateError, locate, parse_stun_server

    try:
        parse_stun_server(options["stun_server"])
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint="--stun-server") from exc
    source = click.get_current_context().get_parameter_source
    given = {
        name
        for name in ("asn", "cc")
        if source(name) != click.core.ParameterSource.DEFAULT or name in options["from_settings"]
    }
    wanted = options["locate"]
    if wanted is None:
        # An allow-list marks a controlled run (tests, CI, the lab): the neutral STUN server and
        # the resolver's upstream lie outside it, so only --locate asks them.
        wanted = (
            not ctx.allow.restricted and options["vantage"] != "lab" and not given >= {"asn", "cc"}
        )
    if not wanted:
        return "given" if given == {"asn", "cc"} else _not_looked_up(given)
    if given == {"asn", "cc"}:
        return "given"  # the manual override: nothing to ask the network
    try:
        found = asyncio.run(locate(ctx, options["stun_server"]))
    except LocateError as exc:
        reason = ctx.scrubber.scrub(f"{exc.failure}: {exc}")
        click.echo(f"ringprobe: could not look up this network ({reason})", err=True)
        return f"lookup failed: {reason}"
    finally:
        # The run's deadline and its records' t0 count from the checks, not from the lookup.
        ctx.run_start = time.monotonic()
    ctx.probe = dataclasses.replace(
        ctx.probe,
        asn=ctx.probe.asn if "asn" in given else found.asn,
        cc=ctx.probe.cc if "cc" in given else found.cc,
    )
    return "looked up" if not given else f"looked up, {' and '.join(sorted(given))} given"


def _not_looked_up(given: set[str]) -> str:
    return "not looked up" + (f", {' and '.join(sorted(given))} given" if given else "")


# Ours: distinct from --ci's 0/1/2 and from 128 + signal (docs/upload.md).
EXIT_UPLOAD_FAILED = 3


def _upload_check(options: dict[str, Any], ctx: CheckContext) -> None:
    """--upload: a usable URL, and an IP literal inside the allow-list, before anything is sent."""
    if options["upload_url"] is None:
        return
    from probe.upload import check_literal_host, parse_collector_url

    options["upload_url"] = parse_collector_url(options["upload_url"])
    check_literal_host(options["upload_url"], ctx.allow)


def _upload(options: dict[str, Any], ctx: CheckContext, result: RunResult) -> bool:
    """--upload: send the run's records file (probe.upload; resumable with `ringprobe upload`).
    Messages go to stderr (stdout may be a JSON summary), own addresses scrubbed as everywhere.
    True when the upload failed."""
    url = options["upload_url"]
    if url is None or result.records == 0:
        return False
    from probe.errors import NotAllowedError
    from probe.upload import FileResult, run_upload

    path = result.records_path
    done: list[FileResult] = []
    signum: int | None = None
    refused: str | None = None
    try:
        done, signum = run_upload([path], url, ctx.allow)
    except NotAllowedError as exc:  # a host name that resolved outside the allow-list
        refused = str(exc)
    if done and done[0].ok:
        sent = done[0]
        click.echo(
            ctx.scrubber.scrub(
                f"ringprobe: uploaded {sent.records} records to {url} ({sent.stored} stored, "
                f"{sent.duplicates} already there)"
            ),
            err=True,
        )
        return False
    why = refused or (done[0].error if done else None) or f"interrupted (signal {signum})"
    click.echo(
        ctx.scrubber.scrub(
            f"ringprobe: upload to {url} failed: {why}; the records stay in {path}; resume with "
            f"`ringprobe upload {path} --to {url}`"
        ),
        err=True,
    )
    return True


# The settings (probe/config.py, `ringprobe config`) that stand in for a `run` option left at its
# default: setting name -> option name.
SETTING_OPTIONS: Final = {
    "out": "out_dir",
    "asn": "asn",
    "cc": "cc",
    "network_type": "network_type",
    "stun_server": "stun_server",
    "locate": "locate",
    "upload_url": "upload_url",
}


def _settings_defaults(options: dict[str, Any], settings: Settings) -> frozenset[str]:
    """Fill the options the command line left at their defaults from the user's settings file
    (the command line wins); the names of the options so filled."""
    source = click.get_current_context().get_parameter_source
    filled: set[str] = set()
    for key, option in SETTING_OPTIONS.items():
        if key in settings.from_file and source(option) == click.core.ParameterSource.DEFAULT:
            value = getattr(settings, key)
            options[option] = Path(value) if option == "out_dir" else value
            filled.add(option)
    return frozenset(filled)
