"""Benchmark: the signaling part of a full lab run, on an open network and with every app dropped.

Targets (issue text): when every app address silently drops, an app's signaling is judged within
the per-check timeout + 1 s; an app's signaling costs <= 50 KB (50,000 bytes) of traffic.

Two situations, each one probe run (``ringprobe run`` in the lab's client namespace, as the
scenario engine runs it: lab catalog, lab CA, lab DoH, allow-list of the lab's ranges), the
default concurrency, ``--repeat`` times:

1. open: no rule in the tspu;
2. all-drop: the tspu silently drops every packet to ``wa_signal``, ``wa_web``, ``tg_dc``,
   ``tg_web`` and ``sig`` and their IPv6 twins; DNS and the controls are untouched.

Bytes are counted on the wire, not taken from the records: nft counter rules in the tspu's
chain ``forward``, one per (set, family, direction), put before the drop rules so a dropped
packet still counts as sent. They count whole IP packets (headers, SYNs, retransmissions, ACKs).
Time per row: the span of its records, max(t0 + runtime) - min(t0), from the first DNS lookup
to the last check's end; the process's wall time and the run's own (manifest) are printed too.
The analysis's verdicts (``ringprobe run --json`` computes them with ``ringprobe analyze``)
show whether the drop is detected.

Needs root (the lab); everything stays inside the lab's namespaces. The lab is brought up at
the start (then one IPv6 connect warms its path: a fresh lab often loses its first IPv6 packet) and
taken down at the end (also on errors, Ctrl-C and SIGTERM) unless ``--keep``.

    .venv/bin/python bench/bench_signaling.py [--timeout 5] [--repeat 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from probe.lab import SETS, Lab, doctor
from probe.lab.scenario import restore
from probe.lab.state import locked

SPAN_SLACK = 1.0  # the time target: timeout + 1 s
BYTES_TARGET = 50_000  # the byte target per app's signaling: 50 KB
DROPPED = ("wa_signal", "wa_web", "tg_dc", "tg_web", "sig")
COMMENT = "bench-signaling"  # marks our counter rules in nft's listing
HANDSHAKES = ("mtproto", "whatsapp_chat")
DNS_CHECKS = ("dns_system", "dns_udp")
# On top of the run's deadline: interpreter start-up and the run's closing analysis.
PROBE_SLACK = 60.0
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: which records give its time, which sets its bytes."""

    label: str
    sets: tuple[str, ...]
    select: Callable[[dict[str, Any]], bool]
    judged: bool = False
    """The issue's targets apply (WhatsApp's and Telegram's signaling)."""


def _app_role(app: str, role: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["app"] == app and (role is None or r["target"]["role"] == role)


ROWS = (
    Row("whatsapp signaling", ("wa_signal",), _app_role("whatsapp", "signaling"), judged=True),
    Row("whatsapp web", ("wa_web",), _app_role("whatsapp", "web")),
    Row("telegram signaling", ("tg_dc",), _app_role("telegram", "signaling"), judged=True),
    Row("telegram web", ("tg_web",), _app_role("telegram", "web")),
    Row("signal (all)", ("sig",), _app_role("signal")),
    Row("controls (+DoH)", ("ctl",), _app_role("control")),
    Row("dns (plain)", ("dns",), lambda r: r["check"] in DNS_CHECKS),
)


@dataclass(slots=True)
class Measurement:
    """One probe run in one situation."""

    wall: float
    """Seconds from starting the probe process to its exit (start-up and analysis included)."""
    run: float
    """Seconds of the run itself (its manifest's started -> ended)."""
    status: str
    concurrency: int
    wire: dict[tuple[str, str], int]
    """(set without the 6, "up" or "down") -> bytes counted in the tspu, both families."""
    packets: dict[tuple[str, str], int]
    """The same keys -> packets."""
    spans: dict[str, float | None]
    """Row label -> span of its records (None: no records)."""
    handshake_bytes: dict[str, tuple[int, int]]
    """Row label -> (bytes_sent, bytes_received) summed over its handshake records."""
    connects: dict[str, int]
    """Row label -> TCP connections tried (tcp_connect and handshake records)."""
    verdicts: dict[str, str]
    """App -> the analysis's verdict, with layer and mechanism."""
    failures: Counter[str] = field(default_factory=Counter)
    """'check: failure' over the signaling rows' records."""


def counter_rules() -> list[str]:
    """nft rules counting every set, per family and direction; they match and continue."""
    rules = []
    for base in SETS:
        for family, name in (("ip", base), ("ip6", f"{base}6")):
            for direction, field_ in (("up", "daddr"), ("down", "saddr")):
                comment = f"{COMMENT} {base} {direction}"
                rules.append(f'{family} {field_} @{name} counter comment "{comment}"')
    return rules


def drop_rules() -> list[str]:
    return [
        rule for base in DROPPED for rule in (f"ip daddr @{base} drop", f"ip6 daddr @{base}6 drop")
    ]


def nft(lab: Lab, args: list[str], script: str | None = None) -> str:
    program = doctor.find("nft")
    if program is None:
        raise SystemExit("nft is missing; see 'ringprobe lab doctor'")
    done = lab.run_in("tspu", [program, *args], input=script, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise SystemExit(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def install(lab: Lab, rules: Iterable[str]) -> None:
    """A clean tspu, then the rules in order, in one nft transaction."""
    restore(lab)
    nft(lab, ["-f", "-"], "".join(f"add rule inet tspu forward {rule}\n" for rule in rules))


def read_counters(lab: Lab) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(set, direction) -> bytes, and -> packets, IPv4 and IPv6 summed, from our counter rules."""
    listing = json.loads(nft(lab, ["-j", "list", "chain", "inet", "tspu", "forward"]))
    counted: dict[tuple[str, str], int] = defaultdict(int)
    packets: dict[tuple[str, str], int] = defaultdict(int)
    for item in listing["nftables"]:
        rule = item.get("rule")
        if not rule or not str(rule.get("comment", "")).startswith(COMMENT):
            continue
        _, base, direction = rule["comment"].split()
        for expr in rule["expr"]:
            if "counter" in expr:
                counted[(base, direction)] += int(expr["counter"]["bytes"])
                packets[(base, direction)] += int(expr["counter"]["packets"])
    return dict(counted), dict(packets)


# One TCP connect from the client: a fresh lab often loses its first IPv6 packet (the SYN goes
# again after 1 s), which would show as Telegram's IPv6 DCs answering in 1 s in the first run.
WARM_UP = """
import socket, sys, time
started = time.monotonic()
try:
    socket.create_connection((sys.argv[1], 443), timeout=5).close()
except OSError as exc:
    print(f"failed: {exc}")
print(f"{time.monotonic() - started:.2f}")
"""


def warm_up(lab: Lab) -> str:
    """Seconds of one IPv6 connect to a Telegram DC, before anything is counted."""
    address = lab.sets["tg_dc6"][0]
    done = lab.run_in("client", [sys.executable, "-c", WARM_UP, address], timeout=COMMAND_TIMEOUT)
    return " ".join(done.stdout.split()) or done.stderr.strip()


def measure(lab: Lab, situation: str, timeout: float, extra: list[str], out: Path) -> Measurement:
    """One probe run with counters (and, for all-drop, the drop rules after them)."""
    rules = counter_rules() + (drop_rules() if situation == "all-drop" else [])
    # A transaction is at most DNS, connect, TLS and a GET: the deadline must never cut one.
    deadline = 6 * timeout + 10
    with locked(lab.state_dir / "scenario.lock"):
        install(lab, rules)
        try:
            started = time.monotonic()
            done = lab.run_probe(
                out,
                ["--timeout", f"{timeout:g}", "--deadline", f"{deadline:g}", "--json", *extra],
                timeout=deadline + PROBE_SLACK,
            )
            wall = time.monotonic() - started
            wire, packets = read_counters(lab)
        finally:
            restore(lab)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise SystemExit(f"{situation}: the probe exited with {done.returncode}: {tail}")
    summary = json.loads(done.stdout)
    records = [
        json.loads(line)
        for line in Path(summary["records_path"]).read_text(encoding="utf-8").splitlines()
    ]
    spans: dict[str, float | None] = {}
    handshake_bytes: dict[str, tuple[int, int]] = {}
    connects: dict[str, int] = {}
    failures: Counter[str] = Counter()
    for row in ROWS:
        mine = [r for r in records if row.select(r)]
        spans[row.label] = (
            max(r["t0"] + r["runtime"] for r in mine) - min(r["t0"] for r in mine) if mine else None
        )
        shakes = [r["details"] for r in mine if r["check"] in HANDSHAKES]
        handshake_bytes[row.label] = (
            sum(int(d.get("bytes_sent", 0)) for d in shakes),
            sum(int(d.get("bytes_received", 0)) for d in shakes),
        )
        # The handshake opens a fresh connection after tcp_connect's (probe.runner).
        connects[row.label] = sum(r["check"] in ("tcp_connect", *HANDSHAKES) for r in mine)
        if row.judged:
            failures.update(f"{r['check']}: {r['failure'] or 'ok'}" for r in mine)
    verdicts = {
        str(v["app"]): _describe(v) for v in summary.get("verdicts", []) if isinstance(v, dict)
    }
    if summary.get("verdicts_error"):
        verdicts["(analysis)"] = str(summary["verdicts_error"])
    return Measurement(
        wall=wall,
        run=_seconds(summary["started"], summary["ended"]),
        status=str(summary["status"]),
        concurrency=int(summary["settings"]["concurrency"]),
        wire=wire,
        packets=packets,
        spans=spans,
        handshake_bytes=handshake_bytes,
        connects=connects,
        verdicts=verdicts,
        failures=failures,
    )


def _describe(row: dict[str, Any]) -> str:
    details = ", ".join(str(row[k]) for k in ("layer", "mechanism") if row.get(k))
    return f"{row['verdict']} ({details})" if details else str(row["verdict"])


def _seconds(started: str, ended: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return (datetime.strptime(ended, fmt) - datetime.strptime(started, fmt)).total_seconds()


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _wire(runs: list[Measurement], row: Row, direction: str, packets: bool = False) -> float:
    """Median over the runs of a row's counted bytes (or packets) in one direction."""
    values = [
        sum((m.packets if packets else m.wire).get((s, direction), 0) for s in row.sets)
        for m in runs
    ]
    return statistics.median(values)


def report(results: dict[str, list[Measurement]], timeout: float) -> None:
    span_target = timeout + SPAN_SLACK
    first = next(iter(results.values()))
    repeat = len(first)
    print(
        f"per-check timeout {timeout:g} s, concurrency {first[0].concurrency}; median over "
        f"{repeat} run(s) per situation; bytes are whole IP packets counted in the tspu "
        "(1 KB = 1000 B)"
    )
    print(
        f"targets for whatsapp/telegram signaling: span <= {span_target:g} s (timeout + "
        f"{SPAN_SLACK:g} s), traffic <= {BYTES_TARGET / 1000:g} KB\n"
    )
    worst = f" {'worst s':>7}" if repeat > 1 else ""
    header = (
        f"{'situation':9} {'row':20} {'span s':>7}{worst} {'up B':>9} {'down B':>9} "
        f"{'total KB':>9}  {'time target':12} {'bytes target'}"
    )
    print(header)
    print("-" * len(header))
    for situation, runs in results.items():
        for row in ROWS:
            span = _median(m.spans[row.label] for m in runs)
            spans = [v for v in (m.spans[row.label] for m in runs) if v is not None]
            up, down = _wire(runs, row, "up"), _wire(runs, row, "down")
            total = up + down
            text = f"{span:7.2f}" if span is not None else f"{'-':>7}"
            if repeat > 1:
                text += f" {max(spans):7.2f}" if spans else f" {'-':>7}"
            time_ok = bytes_ok = "-"
            if row.judged:
                time_ok = "met" if span is not None and span <= span_target else "NOT met"
                bytes_ok = "met" if total <= BYTES_TARGET else "NOT met"
            print(
                f"{situation:9} {row.label:20} {text} {up:9.0f} {down:9.0f} "
                f"{total / 1000:9.1f}  {time_ok:12} {bytes_ok}"
            )
    print("\nwhole run (median): process wall = start-up + run + closing analysis")
    for situation, runs in results.items():
        statuses = Counter(m.status for m in runs)
        print(
            f"  {situation:9} process {statistics.median(m.wall for m in runs):6.2f} s, "
            f"run {statistics.median(m.run for m in runs):6.2f} s, status "
            + ", ".join(f"{k} x{v}" for k, v in statuses.items())
        )
    print("\ncross-check, signaling (median): handshake records' bytes_sent/received vs the wire")
    for situation, runs in results.items():
        for row in ROWS:
            if not row.judged:
                continue
            sent = statistics.median(m.handshake_bytes[row.label][0] for m in runs)
            received = statistics.median(m.handshake_bytes[row.label][1] for m in runs)
            up, down = _wire(runs, row, "up"), _wire(runs, row, "down")
            ok = "yes" if sent <= up and received <= down else "NO"
            connects = statistics.median(m.connects[row.label] for m in runs)
            print(
                f"  {situation:9} {row.label:20} records {sent:6.0f} up {received:6.0f} down; "
                f"wire {up:6.0f} up {down:6.0f} down in {_wire(runs, row, 'up', True):4.0f} + "
                f"{_wire(runs, row, 'down', True):4.0f} packets, {connects:.0f} TCP "
                f"connections; records below wire: {ok}"
            )
    print("\nverdicts (analysis of each run's records; count over the runs)")
    for situation, runs in results.items():
        apps: dict[str, Counter[str]] = defaultdict(Counter)
        for m in runs:
            for app, verdict in m.verdicts.items():
                apps[app][verdict] += 1
        for app, seen in apps.items():
            text = "; ".join(f"{v} {n}/{len(runs)}" for v, n in seen.items())
            print(f"  {situation:9} {app:9} {text}")
    print("\nsignaling records' outcomes (last run)")
    for situation, runs in results.items():
        outcomes = ", ".join(f"{k} x{n}" for k, n in sorted(runs[-1].failures.items()))
        print(f"  {situation:9} {outcomes}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="per-check timeout, seconds")
    parser.add_argument("--repeat", type=int, default=1, help="runs per situation (median)")
    parser.add_argument(
        "--concurrency", type=int, help="checks in flight (default: the probe's default)"
    )
    parser.add_argument("--name", default="bench-signaling", help="lab name")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--records", type=Path, help="keep each run's records under this directory")
    parser.add_argument(
        "--apps",
        help="measure only these apps (e.g. whatsapp): the dns and DoH (controls) rows are then "
        "that app's own lookups",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    extra = ["--concurrency", str(args.concurrency)] if args.concurrency else []
    if args.apps:
        extra += ["--apps", args.apps]
    # SIGTERM as Ctrl-C: unwind through the finally blocks (probe stopped, tspu reset, lab down).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    lab = Lab(args.name)
    try:
        up = lab.up()
        print(
            f"lab {args.name!r} up in {up.elapsed:.1f} s{' (reused)' if up.reused else ''}; "
            f"IPv6 warm-up connect {warm_up(lab)} s"
        )
        results: dict[str, list[Measurement]] = {"open": [], "all-drop": []}
        with tempfile.TemporaryDirectory() as tmp:
            root = args.records or Path(tmp)
            for n in range(args.repeat):
                for situation, runs in results.items():
                    out = root / f"{situation}-{n + 1}"
                    runs.append(measure(lab, situation, args.timeout, extra, out))
        report(results, args.timeout)
    finally:
        if args.keep:
            print(f"\nlab {args.name!r} left up (--keep): ringprobe lab down --name {args.name}")
        else:
            lab.down()


if __name__ == "__main__":
    main()
