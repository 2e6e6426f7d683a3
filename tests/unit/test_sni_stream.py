"""The sni_stream check against an in-process ringprobe reflector on 127.0.0.1 (TLS on port 0)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.features import STEP_HTTP_NEUTRAL, STEP_HTTP_REAL, step_of
from analysis.load import load
from analysis.verdicts import target_status
from bench.naive_verdicts import naive_verdicts
from probe import runner as runner_module
from probe.allowlist import AllowList, parse_networks
from probe.checks import call_flow as call_flow_module
from probe.checks import sni_stream as sni_stream_module
from probe.checks.base import CheckContext, measured
from probe.checks.sni_stream import CHECK, sni_stream
from probe.model import Failure, Record, Target, TargetRef, new_id
from probe.reflector import Config, Reflector
from probe.reflector.server import self_signed_context
from probe.runner import STREAM_SNI, RunOutput, execute
from probe.targets import builtin_catalog
from tests.recordcheck import assert_valid
from tests.recordsets import (
    APP_PORTS,
    BODY,
    DROP,
    FAST_BPS,
    OK,
    REFLECTOR_ADDRESS,
    CallTest,
    Fate,
    run_records,
    where,
)
from tests.unit.test_verdicts import assert_verdict, judge, row

SECRET = bytes(range(32))
LOOPBACK = "127.0.0.1"
SIZE = 64 * 1024
APP_SNI = "web.whatsapp.com"
NEUTRAL = "example.org"


def _target(port: int) -> Target:
    return Target(
        id="whatsapp-reflector-443",
        app="whatsapp",
        role="reflector",
        port=port,
        transport="tcp",
        expect="echo",
        source="--reflector",
        date="2026-11-28",
        address=LOOPBACK,
    )


def _ctx(timeout: float = 5.0, **changes: Any) -> CheckContext:
    return replace(CheckContext(timeout=timeout, neutral_sni=NEUTRAL), **changes)


@pytest.fixture
async def reflector() -> AsyncIterator[Reflector]:
    config = Config(secret=SECRET, bind=(LOOPBACK,), udp_ports=(0,), tls_port=0, stats_interval=0)
    async with Reflector(config) as server:
        yield server


def _port(reflector: Reflector) -> int:
    return reflector.tls_addresses[0][1]


@pytest.mark.parametrize(("sni", "kind"), [(APP_SNI, "real"), (NEUTRAL, "neutral")])
async def test_both_snis_stream_exactly_the_bytes_asked_for(
    reflector: Reflector, sni: str, kind: str
) -> None:
    record = await sni_stream(
        _ctx(),
        _target(_port(reflector)),
        LOOPBACK,
        7,
        sni=sni,
        sni_kind=kind,
        secret=SECRET,
        size=SIZE,
    )
    data = assert_valid(record)
    assert record.failure is None, record.details
    assert data["check"] == CHECK
    assert data["transaction_id"] == 7
    details = record.details
    assert (details["sni"], details["sni_kind"]) == (sni, kind)
    assert details["body_bytes"] == details["requested"] == SIZE
    assert details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(details["throughput_bps"], int)
    assert details["throughput_bps"] > 0
    timings = record.timings
    assert 0 <= timings["connect"] <= timings["handshake"] <= timings["first_byte"]
    assert timings["first_byte"] <= timings["done"]
    assert reflector.stats()["tls_streams"] == 1


async def test_a_wrong_secret_gets_not_a_byte(reflector: Reflector) -> None:
    record = await sni_stream(
        _ctx(),
        _target(_port(reflector)),
        LOOPBACK,
        1,
        sni=APP_SNI,
        sni_kind="real",
        secret=b"\x00" * 32,
        size=SIZE,
    )
    assert_valid(record)
    assert record.failure == Failure.EOF
    assert record.details["body_bytes"] == 0
    assert record.details["throughput_bps"] is None
    assert "handshake" in record.timings
    assert "first_byte" not in record.timings
    assert reflector.stats()["tls_invalid"] == 1


async def test_a_silent_port_times_out() -> None:
    # Accepts the connection (the kernel does, from the backlog) and never answers the handshake.
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        record = await sni_stream(
            _ctx(timeout=0.3),
            _target(port),
            LOOPBACK,
            1,
            sni=NEUTRAL,
            sni_kind="neutral",
            secret=SECRET,
        )
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert "body_bytes" not in record.details  # the handshake never ended: no stream
    assert "connect" in record.timings
    assert "handshake" not in record.timings


async def test_a_stream_that_stalls_keeps_the_bytes_read_before_the_timeout() -> None:
    sent = 48 * 1024
    done = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n")
        writer.write(os.urandom(sent))
        await writer.drain()
        await done.wait()  # then nothing more, and no close, until the test ends
        writer.close()

    server = await asyncio.start_server(stall, LOOPBACK, 0, ssl=self_signed_context())
    async with server:
        port = server.sockets[0].getsockname()[1]
        record = await sni_stream(
            _ctx(timeout=1.0), _target(port), LOOPBACK, 1, sni=APP_SNI, sni_kind="real",
            secret=SECRET, size=SIZE * 2,
        )  # fmt: skip
        done.set()
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert record.details["body_bytes"] == sent
    assert "first_byte" in record.timings
    assert "done" not in record.timings


async def test_the_guard_refuses_before_any_socket() -> None:
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.setblocking(False)
        ctx = _ctx(allow=AllowList(parse_networks(["192.0.2.0/24"])))
        record = await sni_stream(
            ctx,
            _target(listener.getsockname()[1]),
            LOOPBACK,
            1,
            sni=APP_SNI,
            sni_kind="real",
            secret=SECRET,
        )
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.timings == {}


async def test_an_unknown_sni_kind_is_a_bug() -> None:
    with pytest.raises(ValueError, match="sni_kind"):
        await sni_stream(
            _ctx(), _target(1), LOOPBACK, 1, sni=APP_SNI, sni_kind="other", secret=SECRET
        )


# --- planning: the runner's two streams per call test ---------------------------------------------


def _app_targets() -> list[Target]:
    # Catalog entries that put both calling apps in the run and send nothing themselves.
    return [
        Target(
            id=f"{app}-x",
            app=app,
            role="relay",
            port=9,
            transport="udp",
            expect="unknown",
            source="test",
            date="2026-11-28",
            address=LOOPBACK,
        )
        for app in ("whatsapp", "telegram")
    ]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [assert_valid(line) for line in path.read_text().splitlines()]


def test_each_calling_app_has_a_stream_sni_and_it_is_its_catalog_web_host() -> None:
    assert set(runner_module.STREAM_SNI) == set(runner_module.CALL_TESTS)
    hosts = {(t.app, t.host) for t in builtin_catalog().targets if t.expect == "https"}
    for app, sni in runner_module.STREAM_SNI.items():
        assert (app, sni) in hosts


async def test_the_runner_plans_two_streams_after_each_call_test_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str, str, float]] = []  # (app, what, start|end, time)

    async def fake_flow(
        ctx: CheckContext, target: Target, address: str, tx: int, **kw: Any
    ) -> Record:
        async with measured(ctx, "call_flow", target, address, tx) as step:
            events.append((target.app, "flow", "start", time.monotonic()))
            step.details.update(flow=kw["flow"])
            await asyncio.sleep(0.02)
            events.append((target.app, "flow", "end", time.monotonic()))
        return step.record

    async def fake_stream(
        ctx: CheckContext, target: Target, address: str, tx: int, **kw: Any
    ) -> Record:
        async with measured(ctx, "sni_stream", target, address, tx) as step:
            events.append((target.app, kw["sni_kind"], "start", time.monotonic()))
            step.details.update(sni=kw["sni"], sni_kind=kw["sni_kind"])
            assert kw["secret"] == SECRET
            await asyncio.sleep(0.05)
            events.append((target.app, kw["sni_kind"], "end", time.monotonic()))
        return step.record

    monkeypatch.setattr(call_flow_module, "call_flow", fake_flow)
    monkeypatch.setattr(sni_stream_module, "sni_stream", fake_stream)
    ctx = _ctx(reflector=LOOPBACK, reflector_secret=SECRET, call_duration=0.1)
    result = await execute(_app_targets(), ctx, RunOutput(tmp_path, ctx, 2, {}))
    assert result.status == "complete"
    rows = _rows(result.records_path)
    streams = [row for row in rows if row["check"] == "sni_stream"]
    assert len(streams) == 4
    for app in ("whatsapp", "telegram"):
        mine = [row for row in streams if row["app"] == app]
        flows = [row for row in rows if row["check"] == "call_flow" and row["app"] == app]
        assert [row["details"]["sni_kind"] for row in mine] == ["real", "neutral"]
        assert [row["details"]["sni"] for row in mine] == [runner_module.STREAM_SNI[app], NEUTRAL]
        # The call test's transaction; the reflector's TLS port as a tcp target of role reflector.
        assert {rec["transaction_id"] for rec in mine} == {flows[0]["transaction_id"]}
        for rec in mine:
            assert rec["target"]["id"] == f"{app}-reflector-443"
            assert (rec["target"]["port"], rec["target"]["transport"]) == (443, "tcp")
            assert (rec["target"]["role"], rec["target"]["expect"]) == ("reflector", "echo")
            assert rec["target"]["address"] == LOOPBACK
    # In the order things happened (one event loop: the order of the appends), each app's three
    # flows first, then its real stream from start to end, then its neutral one: nothing overlaps
    # a stream. The apps' call tests run one after the other.
    order = [(app, what, edge) for app, what, edge, _at in events]
    expected: list[tuple[str, str, str]] = []
    for app in ("whatsapp", "telegram"):
        app_flows = [event for event in order if event[0] == app and event[1] == "flow"]
        assert len(app_flows) == 6
        expected += app_flows
        expected += [(app, kind, edge) for kind in ("real", "neutral") for edge in ("start", "end")]
    assert order == expected


async def test_a_run_against_an_in_process_reflector_streams_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(
        secret=SECRET, bind=(LOOPBACK,), udp_ports=(0, 0, 0), tls_port=0, stats_interval=0
    )
    async with Reflector(config) as server:
        wa, tg, neutral = (port for _, port in server.udp_addresses)
        monkeypatch.setitem(runner_module.CALL_TESTS, "whatsapp", ("whatsapp_rtp", wa))
        monkeypatch.setitem(runner_module.CALL_TESTS, "telegram", ("telegram_reflector", tg))
        monkeypatch.setattr(runner_module, "NEUTRAL_PORT", neutral)
        monkeypatch.setattr(runner_module, "REFLECTOR_TLS_PORT", _port(server))
        ctx = _ctx(reflector=LOOPBACK, reflector_secret=SECRET, call_duration=0.5)
        result = await execute(_app_targets(), ctx, RunOutput(tmp_path, ctx, 2, {}))
        assert server.stats()["tls_streams"] == 4
    assert result.status == "complete"
    rows = _rows(result.records_path)
    streams = [row for row in rows if row["check"] == "sni_stream"]
    assert len(streams) == 4
    for rec in streams:
        assert rec["failure"] is None, json.dumps(rec["details"])
        assert rec["details"]["body_bytes"] == sni_stream_module.DEFAULT_SIZE
    assert sum(row["check"] == "call_flow" and row["failure"] is None for row in rows) == 6


# --- analysis: the reflector's streams in the SNI throughput comparison ---------------------------

SLOW_BPS = 150_000.0  # Twitter 2021-like policing (METHOD.md)
SMALL_PAGE = 16_000  # a web page below MIN_THROUGHPUT_BYTES: its GETs cannot be compared


def _stream_records(
    records: list[Record], app: str, real_bps: float, neutral_bps: float, tx: int = 900
) -> list[Record]:
    """The two sni_stream records the runner writes for ``app``, in the run of ``records``."""
    first = records[0]
    target = replace(_target(443), address=REFLECTOR_ADDRESS, app=app, id=f"{app}-reflector-443")
    out = []
    for i, (kind, sni, bps) in enumerate(
        (("real", STREAM_SNI[app], real_bps), ("neutral", NEUTRAL, neutral_bps))
    ):
        record = Record(
            measurement_id=new_id(),
            run_id=first.run_id,
            start_time=first.start_time,
            runtime=1.0,
            t0=100.0 + i,
            probe=first.probe,
            app=app,
            target=TargetRef.of(target, REFLECTOR_ADDRESS),
            check="sni_stream",
            transaction_id=tx,
            failure=None,
            timings={"connect": 0.01, "handshake": 0.05, "first_byte": 0.06, "done": 0.9},
            details={
                "sni": sni,
                "sni_kind": kind,
                "requested": BODY,
                "body_bytes": BODY,
                "throughput_bps": bps,
                "tls_version": "TLSv1.3",
            },
            software_version="0.1.0",
        )
        assert_valid(record)
        out.append(record)
    return out


def _small_pages(target: Target) -> Fate:
    """The app's web GETs read small pages (not comparable): only the streams can show policing."""
    return Fate(real_bytes=SMALL_PAGE, neutral_bytes=SMALL_PAGE) if target.expect == "https" else OK


def _agrees_with_naive(tmp_path: Path, table: pd.DataFrame) -> None:
    ours = {(str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule)) for r in table.itertuples()}
    assert ours == naive_verdicts(sorted((tmp_path / "runs").glob("*.jsonl")))


def test_the_streams_are_the_http_steps() -> None:
    assert step_of("sni_stream", "real") == STEP_HTTP_REAL
    assert step_of("sni_stream", "neutral") == STEP_HTTP_NEUTRAL


def test_a_slow_app_sni_stream_from_the_reflector_is_sni_throttling(tmp_path: Path) -> None:
    records = run_records(_small_pages, calls={"whatsapp": CallTest(), "telegram": CallTest()})
    records += _stream_records(records, "whatsapp", SLOW_BPS, FAST_BPS)
    records += _stream_records(records, "telegram", FAST_BPS, FAST_BPS, tx=901)
    table = judge(tmp_path, records)
    r = row(table, "whatsapp")
    assert_verdict(r, "throttled", "sni_throttled", "tls", "sni")
    assert (r["throughput_targets"], r["targets_throttled"], r["targets_fast"]) == (1, 1, 0)
    assert (r["throughput_real_bps"], r["throughput_neutral_bps"]) == (SLOW_BPS, FAST_BPS)
    assert r["targets_failed"] == 0  # the reflector is never a signaling endpoint
    t = row(table, "telegram")
    assert_verdict(t, "ok", "ok")
    assert (t["throughput_targets"], t["targets_throttled"], t["targets_fast"]) == (1, 0, 1)
    statuses = target_status(load(tmp_path / "runs"))
    by_id = dict(zip(statuses["target_id"], statuses["status"], strict=True))
    assert by_id["whatsapp-reflector-443"] == "throttled"
    assert by_id["telegram-reflector-443"] == "ok"
    # The call-flow targets of the reflector (UDP ports) are no step: unmeasured, never judged.
    assert by_id[f"whatsapp-reflector-{APP_PORTS['whatsapp']}"] == "unmeasured"
    _agrees_with_naive(tmp_path, table)


def test_equal_stream_rates_are_ok(tmp_path: Path) -> None:
    records = run_records(_small_pages, calls={"whatsapp": CallTest()})
    records += _stream_records(records, "whatsapp", FAST_BPS, FAST_BPS)
    table = judge(tmp_path, records)
    r = row(table, "whatsapp")
    assert_verdict(r, "ok", "ok")
    assert (r["throughput_targets"], r["targets_throttled"], r["targets_fast"]) == (1, 0, 1)
    _agrees_with_naive(tmp_path, table)


def test_a_slow_stream_while_the_apps_web_gets_run_fast_is_contradicted(tmp_path: Path) -> None:
    records = run_records()  # the web GETs: 256 KiB at 8 Mbit/s with either SNI
    records += _stream_records(records, "whatsapp", SLOW_BPS, FAST_BPS)
    table = judge(tmp_path, records)
    assert_verdict(row(table, "whatsapp"), "inconclusive", "throttle_contradicted")
    _agrees_with_naive(tmp_path, table)


def test_a_slow_stream_with_signaling_blocked_stays_blocked(tmp_path: Path) -> None:
    blocked = where(lambda t: t.app == "whatsapp" and t.role == "signaling", DROP, OK)
    records = run_records(blocked)
    records += _stream_records(records, "whatsapp", SLOW_BPS, FAST_BPS)
    table = judge(tmp_path, records)
    assert row(table, "whatsapp")["verdict"] == "blocked"
    _agrees_with_naive(tmp_path, table)
