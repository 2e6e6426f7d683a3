"""`ringprobe run --localize`: after the other checks the runner traces each app's triggers, one
trace at a time, to the endpoint `ringprobe trace` picks by default, at the address its
transaction contacted and under its transaction id; a trace starts only when the deadline holds
its whole budget, else the manifest says why. Everything on loopback (an allow-list of
127.0.0.0/8 alone); the traces that send need root or CAP_NET_RAW (skipped without it), the
other tests check what happens without it and what is never sent."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.allowlist import AllowList
from probe.checks import trace as tr
from probe.checks.base import CheckContext
from probe.cli import cli
from probe.model import Failure, Target
from probe.runner import SKIP_TRACE_CHECK, Limits, Localize, RunOutput, RunResult, execute
from tests.fakes.dns_server import FakeDNSServer, answer
from tests.fakes.signaling_server import FakeSignalingServer
from tests.fakes.tls_server import FakePKI, FakeTLSServer
from tests.fakes.udp_server import LOOPBACK, FakeUdpServer, silent
from tests.recordcheck import assert_valid
from tests.unit.test_check_whatsapp import hello_answer
from tests.unit.test_trace import _stun_answer, forbid_raw_sockets, needs_raw

# Segments one TCP probe may send: SYN, ACK, the payload, ACKs of the server's flight, the
# closing RST (tests/unit/test_trace.py sees 4 to 8 on loopback).
TCP_PACKETS_PER_TTL = 9
QUICK = Localize(max_ttl=3, wait=0.2)


def _ctx(timeout: float = 1.0, **changes: Any) -> CheckContext:
    return CheckContext(
        allow=AllowList.from_sources(["127.0.0.0/8"], environ={}), timeout=timeout, **changes
    )


def _target(
    tid: str,
    app: str,
    transport: str,
    expect: str,
    port: int,
    host: str | None = None,
    address: str | None = LOOPBACK,
) -> Target:
    return Target(
        id=tid, app=app, role="relay" if transport == "udp" else "signaling", port=port,
        transport=transport, expect=expect, source="test", date="2026-12-05", host=host,
        address=address,
    )  # fmt: skip


def _lines(path: Path) -> list[dict[str, Any]]:
    return [assert_valid(line) for line in path.read_text().splitlines()]


def _traces(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["check"] == "trace"]


async def _execute(
    targets: list[Target],
    ctx: CheckContext,
    tmp_path: Path,
    localize: Localize | None,
    limits: Limits | None = None,
) -> RunResult:
    output = RunOutput(tmp_path / "out", ctx, len(targets), {})
    return await execute(targets, ctx, output, limits, localize=localize)


@dataclass
class _Apps:
    targets: list[Target]
    ctx: CheckContext
    relay: FakeUdpServer
    stun: FakeUdpServer


@contextlib.asynccontextmanager
async def _four_apps(tmp_path: Path) -> AsyncIterator[_Apps]:
    """Signal's chat (TLS; a host, so the run asks the system resolver, a fake, though the
    catalog's address is the one contacted: a loopback answer is bogus), WhatsApp's chat server
    and relay, and a control STUN server, all on loopback: something for the tls, whatsapp,
    stun and call triggers."""
    async with (
        FakeDNSServer(answer(a=[LOOPBACK])) as dns_server,
        FakeTLSServer("complete", FakePKI(tmp_path)) as tls_server,
        FakeSignalingServer("answer", hello_answer) as chat,
        FakeUdpServer(_stun_answer) as relay,
        FakeUdpServer(_stun_answer) as stun_server,
    ):
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        ctx = _ctx(resolv_conf=str(conf), system_dns_port=dns_server.port)
        targets = [
            _target("sig-chat", "signal", "tcp", "tls", tls_server.port, host="chat.signal.org"),
            _target("wa-chat", "whatsapp", "tcp", "whatsapp", chat.port),
            _target("wa-relay", "whatsapp", "udp", "wa_relay", relay.port),
            _target("ctl-stun", "control", "udp", "stun", stun_server.port),
        ]
        yield _Apps(targets, ctx, relay, stun_server)


@needs_raw
async def test_localize_traces_each_apps_triggers_after_everything_else(tmp_path: Path) -> None:
    async with _four_apps(tmp_path) as apps:
        started = time.monotonic()
        result = await _execute(apps.targets, apps.ctx, tmp_path, QUICK)
        elapsed = time.monotonic() - started
        relay_count, stun_count = apps.relay.count, apps.stun.count
    assert result.status == "complete"
    assert not [s for s in result.skipped if s["target"] == SKIP_TRACE_CHECK]
    rows = _lines(result.records_path)
    traces = _traces(rows)
    # every trace after every other record: the traces come last
    first_trace = rows.index(traces[0])
    assert all(row["check"] == "trace" for row in rows[first_trace:])
    # each app's triggers (trace.app_triggers) that the catalog has an endpoint for, as a pair
    planned = sorted(
        (row["app"], row["details"]["trigger"], row["target"]["id"], row["details"]["control"])
        for row in traces
    )
    assert planned == sorted(
        (app, trigger, tid, control)
        for app, trigger, tid in [
            ("signal", "tls", "sig-chat"),
            ("whatsapp", "whatsapp", "wa-chat"),
            ("whatsapp", "stun", "wa-relay"),
            ("whatsapp", "call", "wa-relay"),
            ("control", "stun", "ctl-stun"),
        ]
        for control in (False, True)
    )
    # under the transaction of the endpoint traced, at the address it contacted
    tx_of = {row["target"]["id"]: row["transaction_id"] for row in rows[:first_trace]}
    for row in traces:
        assert row["transaction_id"] == tx_of[row["target"]["id"]]
        assert row["target"]["address"] == LOOPBACK
        assert row["failure"] is None, row
        details = row["details"]
        assert details["max_ttl"] == QUICK.max_ttl
        assert details["wait"] == QUICK.wait
        # loopback: the destination is at TTL 1, and whoever answers there ends the trace
        assert details["ttls_traced"] == 1
        assert details["first_interfering_ttl"] is None
        if details["transport"] == "udp":
            assert details["packets_sent"] == details["ttls_traced"]
        else:
            assert 1 <= details["packets_sent"] <= TCP_PACKETS_PER_TTL * details["ttls_traced"]
    signal_tls = next(r for r in traces if r["app"] == "signal" and not r["details"]["control"])
    assert signal_tls["details"]["sni"] == "chat.signal.org"
    # the datagrams each UDP server got: the run's own known-answer checks, then one per probe
    relay_rows = [r for r in rows[:first_trace] if r["target"]["id"] == "wa-relay"]
    stun_rows = [r for r in rows[:first_trace] if r["target"]["id"] == "ctl-stun"]
    sent_before = [sum(len(r["details"]["attempts"]) for r in rs) for rs in (relay_rows, stun_rows)]
    assert relay_count == sent_before[0] + 2 * 2  # stun and call, trigger and control at TTL 1
    assert stun_count == sent_before[1] + 2
    assert elapsed < 10.0


async def test_without_localize_nothing_is_traced(tmp_path: Path) -> None:
    async with _four_apps(tmp_path) as apps:
        result = await _execute(apps.targets, apps.ctx, tmp_path, None)
    assert result.status == "complete"
    rows = _lines(result.records_path)
    assert rows
    assert _traces(rows) == []
    assert not [s for s in result.skipped if s["target"] == SKIP_TRACE_CHECK]


async def test_a_deadline_too_short_for_a_trace_skips_it_and_says_so(tmp_path: Path) -> None:
    async with FakeUdpServer(_stun_answer) as server:
        targets = [_target("ctl-stun", "control", "udp", "stun", server.port)]
        started = time.monotonic()
        # a trace at the default TTLs and wait may take 19.4 s; the run has 3 s in all
        result = await _execute(
            targets,
            _ctx(),
            tmp_path,
            Localize(max_ttl=tr.DEFAULT_MAX_TTL, wait=tr.DEFAULT_WAIT),
            Limits(deadline=3.0),
        )
        elapsed = time.monotonic() - started
        count = server.count
    assert elapsed < 3.0
    assert result.status == "deadline_reached"
    rows = _lines(result.records_path)
    assert [row["check"] for row in rows] == ["stun_binding"]
    assert count == len(rows[0]["details"]["attempts"])  # not one datagram of a trace
    (skip,) = [s for s in result.skipped if s["target"] == SKIP_TRACE_CHECK]
    assert skip["reason"].startswith("control stun to ctl-stun: the deadline leaves")
    assert "19.4 s" in skip["reason"]
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["skipped"] == result.skipped


@needs_raw
async def test_traces_start_only_while_the_deadline_holds_their_budget(tmp_path: Path) -> None:
    # Two silent STUN servers: each trace runs its 2 TTLs, 4 probes of 0.5 s (2 s); its budget
    # is 2 * 2 * (0.5 + GRACE) + 1 = 3.6 s. The deadline (5 s) holds the first trace, which
    # leaves about 2.5 s: too little for the next app's.
    localize = Localize(max_ttl=2, wait=0.5)
    budget = tr.trace_budget("stun", max_ttl=2, wait=0.5, timeout=0.3)
    assert budget == pytest.approx(3.6)
    async with FakeUdpServer(silent()) as first, FakeUdpServer(silent()) as second:
        targets = [
            _target("ctl-stun", "control", "udp", "stun", first.port),
            _target("tg-turn", "telegram", "udp", "turn", second.port),
        ]
        started = time.monotonic()
        result = await _execute(
            targets, _ctx(timeout=0.3), tmp_path, localize, Limits(deadline=5.0)
        )
        elapsed = time.monotonic() - started
    assert elapsed < 5.0
    assert result.status == "deadline_reached"
    traces = _traces(_lines(result.records_path))
    assert {(row["app"], row["details"]["trigger"]) for row in traces} == {("control", "stun")}
    for row in traces:
        details = row["details"]
        assert [h["outcome"] for h in details["hops"]] == ["silent", "silent"]
        assert details["packets_sent"] == 2  # one datagram per TTL
        # it ended within the run's deadline
        assert row["t0"] + row["runtime"] < 5.0
    reasons = [s["reason"] for s in result.skipped if s["target"] == SKIP_TRACE_CHECK]
    # Telegram's stun and call triggers both go to its TURN server: neither fits
    assert [r.split(":")[0] for r in reasons] == [
        "telegram stun to tg-turn",
        "telegram call to tg-turn",
    ]


async def test_without_raw_sockets_the_traces_say_so_and_send_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_raw_sockets(monkeypatch)
    async with FakeUdpServer(_stun_answer) as server:
        targets = [_target("ctl-stun", "control", "udp", "stun", server.port)]
        result = await _execute(targets, _ctx(), tmp_path, QUICK)
        count = server.count
    assert result.status == "complete"
    rows = _lines(result.records_path)
    traces = _traces(rows)
    assert len(traces) == 2
    for row in traces:
        assert row["failure"] == Failure.RAW_SOCKET_NOT_PERMITTED
        assert "CAP_NET_RAW" in row["details"]["error"]
        assert row["details"]["packets_sent"] == 0
    assert count == len(rows[0]["details"]["attempts"])  # the run's own binding, nothing more


async def test_an_endpoint_without_an_address_is_not_traced(tmp_path: Path) -> None:
    # The lookup finds nothing (an empty answer): no address to trace to, and the manifest says so.
    async with FakeDNSServer(answer()) as dns_server:
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        ctx = _ctx(resolv_conf=str(conf), system_dns_port=dns_server.port)
        host = "chat.signal.org"
        targets = [_target("sig-chat", "signal", "tcp", "tls", 443, host=host, address=None)]
        result = await _execute(targets, ctx, tmp_path, QUICK)
    assert _traces(_lines(result.records_path)) == []
    assert {
        "target": SKIP_TRACE_CHECK,
        "reason": "signal tls to sig-chat: its lookups found no address",
    } in result.skipped


def test_localize_bounds() -> None:
    with pytest.raises(ValueError, match="max_ttl"):
        Localize(max_ttl=tr.MAX_TTL + 1, wait=1.0)
    with pytest.raises(ValueError, match="wait"):
        Localize(max_ttl=8, wait=0.0)


# --- the command ------------------------------------------------------------------------------


def _stun_catalog(tmp_path: Path, port: int) -> Path:
    catalog = tmp_path / "cat.toml"
    catalog.write_text(
        '[[target]]\nid = "ctl-stun"\napp = "control"\nrole = "control"\ntransport = "udp"\n'
        f'expect = "stun"\nsource = "test"\ndate = "2026-12-05"\naddress = "{LOOPBACK}"\n'
        f"port = {port}\n"
    )
    return catalog


@pytest.mark.parametrize("localize", [True, False])
def test_run_localize_option_and_manifest_settings(tmp_path: Path, localize: bool) -> None:
    # A bound socket that never reads: silent, so each trace runs its TTLs (or, without root,
    # fails at once with raw_socket_not_permitted).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((LOOPBACK, 0))
        catalog = _stun_catalog(tmp_path, server.getsockname()[1])
        extra = ["--localize", "--localize-max-ttl", "2"] if localize else []
        result = CliRunner().invoke(
            cli,
            ["run", "--targets", str(catalog), "--out", str(tmp_path / "out"), "--no-doh",
             "--timeout", "0.3", "--deadline", "60", "--allow-net", "127.0.0.0/8", "--json",
             *extra],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    settings = json.loads(Path(summary["manifest_path"]).read_text())["settings"]
    assert settings["localize"] is localize
    assert settings["localize_max_ttl"] == (2 if localize else None)
    assert settings["localize_wait"] == (tr.DEFAULT_WAIT if localize else None)
    traces = _traces(_lines(Path(summary["records_path"])))
    assert len(traces) == (2 if localize else 0)
    for row in traces:
        assert row["details"]["max_ttl"] == 2
        assert row["details"]["packets_sent"] <= 2


def test_run_localize_max_ttl_is_bounded() -> None:
    result = CliRunner().invoke(cli, ["run", "--localize", "--localize-max-ttl", "33"])
    assert result.exit_code == 2
    assert "--localize-max-ttl" in result.output
