"""Hand-built record sets: whole runs over the built-in catalog, as the runner would write them.

A run is described by a ``Fate`` per target (what the network did to each step); ``run_records``
plans the steps the way ``probe.runner`` does (DNS with every resolver when the target has a
host, the address from the catalog or the system resolver's first non-bogus answer, TCP connect,
TLS with the real and the neutral SNI for tls/https targets, HTTPS GETs for https targets, the
neutral GET only after a good neutral handshake, the app's handshake for mtproto/whatsapp targets,
a QUIC check instead of TCP for http3 targets) and returns ``probe.model.Record`` objects, each
checked against the JSON Schema. ``write_runs`` writes them as JSON Lines for ``analysis.load``.

Call tests (docs/callflow.md) are added per app with ``run_records(calls={app: CallTest(...)})``:
three ``call_flow`` records (call, control, call on the neutral port) to a ringprobe reflector,
each flow's datagrams simulated one by one under a ``FlowFate`` and binned as the probe bins them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from probe.model import Failure, ProbeMeta, Record, Target, TargetRef, Vantage, new_id
from probe.runner import RELAY_CHECKS
from probe.targets import builtin_catalog
from tests.recordcheck import assert_valid

CATALOG: tuple[Target, ...] = tuple(builtin_catalog().targets)
APPS = ("whatsapp", "telegram", "signal", "control")
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BODY = 256 * 1024  # http_get's body cap: a healthy GET reads this much
FAST_BPS = 8_000_000.0
NEUTRAL_SNI = "example.org"


@dataclass(frozen=True, slots=True)
class Fate:
    """What the network does to one target's steps: None is success, else a failure string.

    ``dns`` applies to the system resolver; ``dns_bogus`` makes it answer a private address
    (and nothing else), ``dns_mismatch`` makes it answer an address the other resolvers do not.
    ``real_bps``/``neutral_bps``/``*_bytes`` are the HTTPS GETs' figures (recorded even when the
    GET fails, as http_get does).
    """

    dns: str | None = None
    dns_bogus: bool = False
    dns_mismatch: bool = False
    tcp: str | None = None
    tls_real: str | None = None
    tls_neutral: str | None = None
    http_real: str | None = None
    http_neutral: str | None = None
    handshake: str | None = None
    """The mtproto / whatsapp_chat check after a good TCP connect."""
    quic: str | None = None
    """The quic check of an http3 target (UDP: no TCP step)."""
    relay: str | None = None
    """The known-answer checks of a call-path target (stun, turn, wa_relay, reflector)."""
    real_bps: float = FAST_BPS
    neutral_bps: float = FAST_BPS
    real_bytes: int = BODY
    neutral_bytes: int = BODY
    extra: dict[str, Any] = field(default_factory=dict)


OK = Fate()
DROP = Fate(tcp=Failure.GENERIC_TIMEOUT)
RST = Fate(tcp=Failure.CONNECTION_RESET)
INTERRUPTED = Fate(tcp=Failure.INTERRUPTED)


def catalog(*apps: str) -> list[Target]:
    """The built-in catalog's targets of these apps (all apps when none is named)."""
    wanted = apps or APPS
    return [t for t in CATALOG if t.app in wanted]


def real_address(host: str) -> str:
    """A stable documentation-range address for a host name (203.0.113.0/24)."""
    digest = hashlib.sha256(host.encode()).digest()
    return str(ipaddress.ip_address("203.0.113.0") + 1 + digest[0] % 250)


def _spoofed_address(host: str) -> str:
    digest = hashlib.sha256(host.encode()).digest()
    return str(ipaddress.ip_address("198.51.100.0") + 1 + digest[0] % 250)


@dataclass(slots=True)
class _Run:
    run_id: str
    meta: ProbeMeta
    start: datetime
    records: list[Record] = field(default_factory=list)
    clock: float = 0.0

    def add(
        self,
        target: Target,
        address: str | None,
        check: str,
        tx: int,
        failure: str | None,
        details: dict[str, Any],
        timings: dict[str, float] | None = None,
    ) -> None:
        self.clock += 0.01
        if failure is not None:
            details = {**details, "error": f"simulated {failure}"}
        if failure == Failure.INTERRUPTED:
            details = {**details, "deadline_cut": True}
        record = Record(
            measurement_id=new_id(),
            run_id=self.run_id,
            start_time=(self.start + timedelta(seconds=self.clock)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            runtime=0.05,
            t0=round(self.clock, 6),
            probe=self.meta,
            app=target.app,
            target=TargetRef.of(target, address),
            check=check,
            transaction_id=tx,
            failure=failure,
            timings=timings or {},
            details=details,
            software_version="0.1.0",
        )
        assert_valid(record)
        self.records.append(record)


def _dns(run: _Run, target: Target, tx: int, fate: Fate, doh: bool) -> str | None:
    """The DNS records of one target; returns the address the runner would contact."""
    assert target.host is not None
    real = real_address(target.host)
    if fate.dns_bogus:
        system = ["10.10.34.35"]
    elif fate.dns_mismatch:
        system = [_spoofed_address(target.host)]
    else:
        system = [real]
    answers: dict[str, list[str]] = {"system": [] if fate.dns is not None else system}
    if doh:
        answers["doh"] = [real]
    ok = [name for name, addrs in answers.items() if addrs]
    for name, addrs in answers.items():
        failure = fate.dns if name == "system" else None
        details: dict[str, Any] = {
            "resolver": name,
            "server": "192.0.2.53" if name == "system" else "https://1.1.1.1/dns-query",
            "answers": [{"type": "A", "value": a, "ttl": 60} for a in addrs],
            "addresses": addrs,
            "bogus": [a for a in addrs if a.startswith("10.")],
            "queries": [],
        }
        if failure is None:
            others = [o for o in ok if o != name]
            union = {a for o in others for a in answers[o]}
            details["compared_with"] = others
            details["consistent"] = bool(union & set(addrs)) if others else None
            details["rcode"] = "NOERROR"
        elif failure == Failure.DNS_NXDOMAIN:
            details["rcode"] = "NXDOMAIN"
        check = "dns_system" if name == "system" else "dns_doh"
        run.add(target, None, check, tx, failure, details)
    # choose_address: the system resolver's first non-bogus answer, else another resolver's.
    for name in ("system", "doh"):
        usable = [a for a in answers.get(name, []) if not a.startswith("10.")]
        if usable:
            return usable[0]
    return None


def _source(target: Target, fate: Fate, address: str) -> str:
    if target.address is not None:
        return "catalog"
    if fate.dns is None and not fate.dns_bogus:
        return "system"
    return "doh"


def _transaction(run: _Run, target: Target, tx: int, fate: Fate, doh: bool) -> None:
    address = target.address
    if target.host is not None:
        resolved = _dns(run, target, tx, fate, doh)
        if address is None:
            address = resolved
    if address is None:
        return
    source = _source(target, fate, address)
    if target.transport == "udp":
        if target.expect == "http3":
            details: dict[str, Any] = {"address_source": source, "handshake_done": False}
            if fate.quic is None:
                details.update(handshake_done=True, quic_version=1, alpn="h3", status_code=200)
            run.add(target, address, "quic", tx, fate.quic, details)
        for check in RELAY_CHECKS.get(target.expect, ()):
            answered = fate.relay is None
            details = {"address_source": source, "answered": answered, "bytes_sent": 20}
            details.update(bytes_received=32 if answered else 0, unmatched=0, invalid=0)
            details["attempts"] = [
                {"sent": 0.0, "answered": answered, "rtt": 0.02 if answered else None}
            ]
            run.add(target, address, check, tx, fate.relay, details)
        return
    run.add(target, address, "tcp_connect", tx, fate.tcp, {"address_source": source})
    if fate.tcp is None and target.expect in ("mtproto", "whatsapp"):
        _handshake(run, target, address, tx, fate.handshake)
    if fate.tcp is not None or target.expect not in ("tls", "https"):
        return
    outcome = {"real": fate.tls_real, "neutral": fate.tls_neutral}
    for kind in ("real", "neutral"):
        sni = target.host if kind == "real" else NEUTRAL_SNI
        details: dict[str, Any] = {"sni": sni, "sni_kind": kind}
        if outcome[kind] is None:
            details.update(tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", alpn="h2")
        run.add(target, address, "tls_handshake", tx, outcome[kind], details)
    if target.expect != "https":
        return
    gets = {
        "real": (fate.http_real, fate.real_bps, fate.real_bytes),
        "neutral": (fate.http_neutral, fate.neutral_bps, fate.neutral_bytes),
    }
    for kind, (failure, bps, size) in gets.items():
        if kind == "neutral" and fate.tls_neutral is not None:
            continue  # the runner GETs with the neutral SNI only after its handshake worked
        if kind == "real" and fate.tls_real is not None:
            continue
        sni = target.host if kind == "real" else NEUTRAL_SNI
        details = {
            "sni": sni,
            "sni_kind": kind,
            "status": 200,
            "http_version": "HTTP/1.1",
            "headers": {},
            "body_bytes": size,
            "truncated": size >= BODY,
            "body_sha256": "0123456789abcdef",
            "throughput_bps": bps,
        }
        run.add(target, address, "http_get", tx, failure, details, {"first_byte": 0.1})


def _handshake(run: _Run, target: Target, address: str, tx: int, failure: str | None) -> None:
    """The mtproto or whatsapp_chat record, with the details those checks write."""
    answered = failure is None
    if target.expect == "mtproto":
        check, flag = "mtproto", "res_pq"
        details: dict[str, Any] = {"framing": "intermediate", "bytes_sent": 112}
        if target.dc is not None:
            details["dc_id"] = target.dc
    else:
        check, flag = "whatsapp_chat", "server_hello"
        details = {"bytes_sent": 40}
    details.update({flag: answered, "bytes_received": 84 if answered else 0})
    run.add(target, address, check, tx, failure, details)


# --- call tests: call_flow records ----------------------------------------------------------------

REFLECTOR_ADDRESS = "192.0.2.77"
NEUTRAL_PORT = 40000
APP_PORTS = {"whatsapp": 3478, "telegram": 597}
FRAMINGS = {"whatsapp": "whatsapp_rtp", "telegram": "telegram_reflector"}
BIN_WIDTH = 0.25


@dataclass(frozen=True, slots=True)
class FlowFate:
    """What the network does to one call-shaped flow's datagrams (deterministic per seed).

    A datagram sent at or after ``cut_s`` is dropped on the way out (0: blocked from the first
    packet); ``drop_opening`` drops the 3 datagrams that open the call (STUN Allocate and pings,
    reflector hellos) and nothing else; ``rate`` keeps that share of the datagrams, evenly spaced
    (a cap at that share of the send rate); ``loss`` drops each datagram at random with that
    probability, on the way out with probability ``loss_up`` and else on the way back.
    ``rtt_ms`` grows by ``rtt_slope_ms_s`` per second of send time (a queue filling).
    """

    cut_s: float | None = None
    drop_opening: bool = False
    rate: float = 1.0
    loss: float = 0.0
    loss_up: float = 0.5
    rtt_ms: float = 40.0
    rtt_slope_ms_s: float = 0.0


OPEN = FlowFate()


@dataclass(frozen=True, slots=True)
class CallTest:
    """One app's call test: its three flows' fates (``neutral`` None: the flow is not run)."""

    call: FlowFate = OPEN
    control: FlowFate = OPEN
    neutral: FlowFate | None = OPEN
    profile: str = "voice"
    duration: float = 10.0
    """probe.checks.call_flow.DEFAULT_DURATION"""
    seed: int = 0
    failure: str | None = None
    """Force the records' failure (interrupted, address_not_allowed); None: from the echoes."""


def reflector_target(app: str, port: int) -> Target:
    """The ringprobe reflector as a call_flow record's target."""
    return Target(
        id=f"{app}-reflector-{port}",  # as probe.runner names it
        app=app,
        role="reflector",
        port=port,
        transport="udp",
        expect="echo",
        source="--reflector",
        date="2026-11-28",
        address=REFLECTOR_ADDRESS,
    )


def flow_details(flow: str, fate: FlowFate, test: CallTest, framing: str) -> dict[str, Any]:
    """A call_flow record's details: the datagrams of one flow simulated and binned."""
    rng = random.Random(f"{test.seed}-{flow}")
    video = test.profile == "video"
    interval = 0.02 if video else 0.06
    low, high = (900, 1200) if video else (90, 170)
    n_bins = int(-(-test.duration // BIN_WIDTH))
    keys = ("sent", "sent_bytes", "echoed", "echoed_bytes")
    bins: list[dict[str, Any]] = [dict.fromkeys(keys, 0) for _ in range(n_bins)]
    rtts: list[list[float]] = [[] for _ in range(n_bins)]
    rx = 0
    rx_seen: list[int | None] = [None] * n_bins
    echoes: list[tuple[float, int, int]] = []  # send time, seq, size
    count = round(test.duration / interval)
    for seq in range(count):
        t = seq * interval
        b = min(int(t / BIN_WIDTH), n_bins - 1)
        size = rng.randint(low, high)
        bins[b]["sent"] += 1
        bins[b]["sent_bytes"] += size
        up = fate.cut_s is None or t < fate.cut_s
        up = up and int((seq + 1) * fate.rate) > int(seq * fate.rate)
        up = up and not (fate.drop_opening and seq < 3)
        down = True
        if rng.random() < fate.loss:
            if rng.random() < fate.loss_up:
                up = False
            else:
                down = False
        if not up:
            continue
        rx += 1
        if not down:
            continue
        bins[b]["echoed"] += 1
        bins[b]["echoed_bytes"] += size
        rtts[b].append(fate.rtt_ms + fate.rtt_slope_ms_s * t)
        rx_seen[b] = max(rx_seen[b] or 0, rx)
        echoes.append((t, seq, size))
    highest: int | None = None
    for b in range(n_bins):
        if rx_seen[b] is not None:
            highest = max(highest or 0, rx_seen[b] or 0)
        bins[b]["reflector_rx"] = highest
        bins[b]["rtt_ms"] = statistics.median(rtts[b]) if rtts[b] else None
    return {
        "flow": flow,
        "profile": test.profile,
        "framing": framing,
        "session": hashlib.sha256(f"{test.seed}-{flow}".encode()).hexdigest()[:16],
        "interval_ms": int(interval * 1000),
        "duration": test.duration,
        "bin_width": BIN_WIDTH,
        "bins": bins,
        "packets_sent": sum(b["sent"] for b in bins),
        "bytes_sent": sum(b["sent_bytes"] for b in bins),
        "packets_echoed": len(echoes),
        "bytes_echoed": sum(e[2] for e in echoes),
        "reflector_rx": highest,
        "first_echo_s": round(echoes[0][0], 6) if echoes else None,
        "last_echo_s": round(echoes[-1][0], 6) if echoes else None,
        "last_echo_seq": echoes[-1][1] if echoes else None,
        "invalid": 0,
    }


def _call_test(run: _Run, app: str, test: CallTest, tx: int) -> None:
    """The three call_flow records of one app's call test, under one transaction id (as
    probe.runner writes them)."""
    port = APP_PORTS.get(app, 3478)
    flows = [("call", test.call, port), ("control", test.control, port)]
    if test.neutral is not None:
        flows.append(("call_neutral_port", test.neutral, NEUTRAL_PORT))
    for flow, fate, flow_port in flows:
        details = flow_details(flow, fate, test, FRAMINGS.get(app, "whatsapp_rtp"))
        failure = test.failure
        if failure is None and not details["packets_echoed"]:
            failure = Failure.GENERIC_TIMEOUT
        target = reflector_target(app, flow_port)
        run.add(target, REFLECTOR_ADDRESS, "call_flow", tx, failure, details)


FateSpec = Mapping[str, Fate] | Callable[[Target], Fate]


def run_records(
    fates: FateSpec | None = None,
    *,
    apps: Iterable[str] = APPS,
    run_id: str | None = None,
    vantage: Vantage = "volunteer",
    cc: str = "RU",
    asn: str = "AS12389",
    start: datetime = START,
    doh: bool = True,
    default: Fate = OK,
    calls: Mapping[str, CallTest] | None = None,
) -> list[Record]:
    """Every record of one run over the catalog's targets of ``apps``.

    ``fates``: per target id (unnamed targets get ``default``), or a function of the target.
    ``calls``: a call test per app (three call_flow records each), after the catalog's targets.
    """
    run = _Run(
        run_id=run_id or new_id(),
        meta=ProbeMeta(cc=cc, asn=asn, network_type="wired", vantage=vantage),
        start=start,
    )
    for tx, target in enumerate(catalog(*apps), 1):
        fate = fates(target) if callable(fates) else (fates or {}).get(target.id, default)
        _transaction(run, target, tx, fate, doh)
    tx = len(run.records) + 1
    for app, test in (calls or {}).items():
        _call_test(run, app, test, tx)
        tx += 1
    return run.records


def by_app(fates: Mapping[str, Fate], default: Fate = OK) -> Callable[[Target], Fate]:
    """A fate per app (``fates`` keyed by app name), ``default`` for the others."""
    return lambda target: fates.get(target.app, default)


def where(
    pick: Callable[[Target], bool], fate: Fate, default: Fate = OK
) -> Callable[[Target], Fate]:
    """``fate`` for the targets ``pick`` selects, ``default`` for the rest."""
    return lambda target: fate if pick(target) else default


def write_runs(directory: Path, *runs: list[Record], name: str = "records") -> Path:
    """Write runs as one JSON Lines file each under ``directory``; return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, records in enumerate(runs):
        path = directory / f"{name}-{i:03d}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(record.to_json() + "\n")
    return directory


def with_fate(fate: Fate, **changes: Any) -> Fate:
    """A copy of ``fate`` with some fields changed."""
    return replace(fate, **changes)
