"""The runner: limits, deadline, streaming writes, interruption, scrubbing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks import tcp
from probe.checks.base import CheckContext, measured
from probe.model import Failure, Record, Target, TargetRef
from probe.protocols import stun
from probe.runner import Limits, RunOutput, choose_address, execute
from tests.fakes.signaling_server import FakeSignalingServer
from tests.fakes.udp_server import FakeUdpServer, silent
from tests.recordcheck import assert_valid
from tests.unit.test_check_mtproto import res_pq_answer
from tests.unit.test_check_relay import allocate_answer, binding_answer, pong_answer
from tests.unit.test_check_whatsapp import hello_answer


def _target(tid: str, address: str, port: int, expect: str = "tcp") -> Target:
    return Target(
        id=tid, app="control", role="control", port=port, transport="tcp", expect=expect,
        source="test", date="2026-11-28", address=address,
    )  # fmt: skip


@contextlib.contextmanager
def dropping_listener(address: str = "127.0.3.1") -> Iterator[int]:
    """A port whose SYNs Linux drops silently: backlog 0 and an accept queue we fill ourselves."""
    server = socket.socket()
    server.bind((address, 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect((address, port))
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for s in (*fillers, server):
            s.close()


@contextlib.asynccontextmanager
async def accepting_server(address: str = "127.0.0.1") -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, address, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port(address: str = "127.0.0.1") -> int:
    s = socket.socket()
    s.bind((address, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _lines(path: Path) -> list[dict[str, Any]]:
    return [assert_valid(line) for line in path.read_text().splitlines()]


async def test_full_run_writes_one_valid_record_per_check(tmp_path: Path) -> None:
    ctx = CheckContext(timeout=0.5)
    async with accepting_server() as open_port:
        with dropping_listener() as drop_port:
            targets = [
                _target("open", "127.0.0.1", open_port),
                _target("refused", "127.0.0.1", closed_port()),
                _target("dropped", "127.0.3.1", drop_port),
            ]
            output = RunOutput(tmp_path, ctx, len(targets), {"test": True})
            result = await execute(targets, ctx, output)
    assert result.status == "complete"
    assert result.targets_done == 3
    rows = {row["target"]["id"]: row for row in _lines(result.records_path)}
    assert rows["open"]["failure"] is None
    assert rows["refused"]["failure"] == Failure.CONNECTION_REFUSED
    assert rows["dropped"]["failure"] == Failure.GENERIC_TIMEOUT
    assert {row["check"] for row in rows.values()} == {"tcp_connect"}
    assert len({row["transaction_id"] for row in rows.values()}) == 3
    assert {row["run_id"] for row in rows.values()} == {ctx.run_id}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["status"] == "complete"
    assert manifest["records"] == 3
    assert manifest["failures"] == 2
    assert manifest["settings"] == {"test": True}


async def test_deadline_cuts_and_marks_without_calling_it_a_timeout(tmp_path: Path) -> None:
    ctx = CheckContext(timeout=5.0)
    with dropping_listener() as port:
        targets = [_target(f"d{i}", "127.0.3.1", port) for i in range(3)]
        output = RunOutput(tmp_path, ctx, len(targets), {})
        started = time.monotonic()
        result = await execute(targets, ctx, output, Limits(concurrency=1, deadline=0.6))
        elapsed = time.monotonic() - started
    assert elapsed < 4.0  # far below one 5 s timeout: the deadline, not the timeout, ended it
    assert result.status == "deadline_reached"
    rows = _lines(result.records_path)
    assert len(rows) == 1  # the one in flight; the others never started
    assert rows[0]["failure"] == Failure.INTERRUPTED
    assert rows[0]["details"]["deadline_cut"] is True
    assert result.targets_done == 1  # the cut one ended its transaction; two never began


async def test_concurrency_limits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight: dict[str, int] = {}
    peak_total = 0
    peak_per_address: dict[str, int] = {}

    async def fake_connect(ctx: CheckContext, target: Target, address: str, tx: int) -> Record:
        nonlocal peak_total
        async with measured(ctx, "tcp_connect", target, address, tx) as step:
            in_flight[address] = in_flight.get(address, 0) + 1
            peak_total = max(peak_total, sum(in_flight.values()))
            peak_per_address[address] = max(peak_per_address.get(address, 0), in_flight[address])
            await asyncio.sleep(0.02)
            in_flight[address] -= 1
            step.details["fake"] = True
        return step.record

    monkeypatch.setattr(tcp, "tcp_connect", fake_connect)
    targets = [_target(f"t{i}", f"192.0.2.{i % 3 + 1}", 443) for i in range(24)]
    ctx = CheckContext(timeout=1.0)
    output = RunOutput(tmp_path, ctx, len(targets), {})
    result = await execute(targets, ctx, output, Limits(concurrency=5, per_host=2))
    assert result.records == 24
    assert peak_total <= 5
    assert max(peak_per_address.values()) <= 2
    assert peak_total >= 2  # it did run things side by side


async def test_guard_refuses_and_nothing_is_sent(tmp_path: Path) -> None:
    ctx = CheckContext(timeout=0.5, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with accepting_server() as port:
        targets = [_target("loop", "127.0.0.1", port)]
        output = RunOutput(tmp_path, ctx, 1, {})
        result = await execute(targets, ctx, output)
    (row,) = _lines(result.records_path)
    assert row["failure"] == Failure.ADDRESS_NOT_ALLOWED


async def test_writer_scrubs_own_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def leaky(ctx: CheckContext, target: Target, address: str, tx: int) -> Record:
        async with measured(ctx, "tcp_connect", target, address, tx) as step:
            ctx.note_local(("198.51.100.77", 40000))
            raise ConnectionResetError("reset on 198.51.100.77:40000 -> 192.0.2.1:443")
        return step.record

    monkeypatch.setattr(tcp, "tcp_connect", leaky)
    ctx = CheckContext(timeout=0.5)
    output = RunOutput(tmp_path, ctx, 1, {})
    result = await execute([_target("x", "192.0.2.1", 443)], ctx, output)
    text = result.records_path.read_text()
    assert "198.51.100.77" not in text
    assert "[scrubbed]:40000" in text
    assert _lines(result.records_path)[0]["failure"] == Failure.CONNECTION_RESET


def test_choose_address_prefers_system_then_others() -> None:
    def rec(
        check: str, resolver: str, addresses: list[str], bogus: list[str], failure: str | None
    ) -> Record:
        target = _target("t", "192.0.2.1", 443)
        return Record(
            measurement_id="0" * 32, run_id="0" * 32, start_time="", runtime=0, t0=0,
            probe=CheckContext().probe, app="control",
            target=TargetRef.of(target, None),
            check=check, transaction_id=1, failure=failure,
            details={"resolver": resolver, "addresses": addresses, "bogus": bogus},
        )  # fmt: skip

    system_ok = rec("dns_system", "system", ["192.0.2.5"], [], None)
    doh_ok = rec("dns_doh", "doh", ["192.0.2.9"], [], None)
    spoofed = rec("dns_system", "system", ["10.10.34.35"], ["10.10.34.35"], None)
    failed = rec("dns_system", "system", [], [], Failure.DNS_NXDOMAIN)
    assert choose_address([doh_ok, system_ok]) == ("192.0.2.5", "system")
    assert choose_address([spoofed, doh_ok]) == ("192.0.2.9", "doh")
    assert choose_address([failed, doh_ok]) == ("192.0.2.9", "doh")
    assert choose_address([failed]) == (None, "none")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_keeps_records_and_says_so(tmp_path: Path, signum: int) -> None:
    catalog = tmp_path / "cat.toml"
    with dropping_listener() as drop_port:
        refused = closed_port()
        entries = [("refused", "127.0.0.1", refused), ("dropped", "127.0.3.1", drop_port)]
        catalog.write_text(
            "".join(
                f'[[target]]\nid = "{tid}"\napp = "control"\nrole = "control"\naddress = "{addr}"\n'
                f'port = {port}\ntransport = "tcp"\nexpect = "tcp"\nsource = "t"\n'
                'date = "2026-11-28"\n'
                for tid, addr, port in entries
            )
        )
        out = tmp_path / "out"
        env = dict(os.environ, RINGPROBE_ALLOW_NETS="127.0.0.0/8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "run", "--targets", str(catalog), "--out", str(out),
             "--timeout", "30", "--no-doh"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                files = list(out.glob("*.jsonl"))
                if files and files[0].read_text().count("\n") >= 1:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the refused target's record never appeared")
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + signum, stderr
    assert "interrupted" in stderr
    (records,) = out.glob("*.jsonl")
    rows = _lines(records)
    assert [row["target"]["id"] for row in rows] == ["refused"]
    (manifest,) = out.glob("*.manifest.json")
    data = json.loads(manifest.read_text())
    assert data["status"] == "interrupted"
    assert data["records"] == 1


# --- what the runner plans after the TCP connect --------------------------------------------------


def _app_target(tid: str, app: str, port: int, expect: str, dc: int | None = None) -> Target:
    return Target(
        id=tid, app=app, role="signaling", port=port, transport="tcp", expect=expect,
        source="test", date="2026-11-28", address="127.0.0.1", dc=dc,
    )  # fmt: skip


async def _run(tmp_path: Path, targets: list[Target], timeout: float = 1.0) -> list[dict[str, Any]]:
    ctx = CheckContext(timeout=timeout)
    output = RunOutput(tmp_path, ctx, len(targets), {})
    result = await execute(targets, ctx, output)
    assert result.status == "complete"
    return _lines(result.records_path)


async def test_a_data_center_gets_the_mtproto_handshake_after_its_connect(tmp_path: Path) -> None:
    async with FakeSignalingServer("answer", res_pq_answer()) as srv:
        rows = await _run(tmp_path, [_app_target("dc", "telegram", srv.port, "mtproto", dc=2)])
    assert [row["check"] for row in rows] == ["tcp_connect", "mtproto"]
    handshake = rows[1]
    assert handshake["failure"] is None
    assert handshake["details"]["res_pq"] is True
    assert handshake["details"]["dc_id"] == 2
    assert handshake["details"]["address_source"] == "catalog"
    assert handshake["transaction_id"] == rows[0]["transaction_id"]
    assert handshake["target"]["expect"] == "mtproto"


async def test_a_silent_data_center_is_a_connect_then_a_timeout(tmp_path: Path) -> None:
    async with FakeSignalingServer("silent", res_pq_answer()) as srv:
        rows = await _run(
            tmp_path, [_app_target("dc", "telegram", srv.port, "mtproto")], timeout=0.5
        )
    assert [(row["check"], row["failure"]) for row in rows] == [
        ("tcp_connect", None),
        ("mtproto", Failure.GENERIC_TIMEOUT),
    ]


async def test_a_chat_server_gets_the_whatsapp_prologue(tmp_path: Path) -> None:
    async with FakeSignalingServer("answer", hello_answer) as srv:
        rows = await _run(tmp_path, [_app_target("chat", "whatsapp", srv.port, "whatsapp")])
    assert [(row["check"], row["failure"]) for row in rows] == [
        ("tcp_connect", None),
        ("whatsapp_chat", None),
    ]
    assert rows[1]["details"]["server_hello"] is True


async def test_no_handshake_without_a_connection(tmp_path: Path) -> None:
    rows = await _run(tmp_path, [_app_target("dc", "telegram", closed_port(), "mtproto")])
    assert [(row["check"], row["failure"]) for row in rows] == [
        ("tcp_connect", Failure.CONNECTION_REFUSED)
    ]


def _udp_target(tid: str, port: int, expect: str, app: str = "telegram") -> Target:
    return Target(
        id=tid, app=app, role="turn", port=port, transport="udp", expect=expect,
        source="test", date="2026-11-28", address="127.0.0.1",
    )  # fmt: skip


async def test_a_turn_server_gets_a_binding_then_an_allocate(tmp_path: Path) -> None:
    def turn(data: bytes, index: int) -> bytes:
        # Both checks run side by side: answer each by its message type.
        is_binding = stun.parse(data).msg_type == stun.BINDING_REQUEST
        return binding_answer(data) if is_binding else allocate_answer(data)

    async with FakeUdpServer(turn) as srv:
        rows = await _run(tmp_path, [_udp_target("turn", srv.port, "turn")])
    assert [(row["check"], row["failure"]) for row in rows] == [
        ("stun_binding", None),
        ("stun_allocate", None),
    ]
    assert rows[1]["details"]["realm"] == "telegram.org"
    assert srv.count == 2  # one Binding and one Allocate, both answered at once
    assert {row["details"]["address_source"] for row in rows} == {"catalog"}
    assert len({row["transaction_id"] for row in rows}) == 1


@pytest.mark.parametrize(
    ("expect", "check", "answer"),
    [("wa_relay", "wa_relay_ping", pong_answer), ("stun", "stun_binding", binding_answer)],
)
async def test_a_relay_gets_its_known_answer_check(
    tmp_path: Path, expect: str, check: str, answer: Any
) -> None:
    async with FakeUdpServer(answer) as srv:
        rows = await _run(tmp_path, [_udp_target("relay", srv.port, expect, app="whatsapp")])
    assert [(row["check"], row["failure"], row["details"]["answered"]) for row in rows] == [
        (check, None, True)
    ]


async def test_a_silent_reflector_is_a_timeout(tmp_path: Path) -> None:
    async with FakeUdpServer(silent()) as srv:
        rows = await _run(tmp_path, [_udp_target("refl", srv.port, "reflector")], timeout=0.5)
    assert [(row["check"], row["failure"]) for row in rows] == [
        ("tg_reflector", Failure.GENERIC_TIMEOUT)
    ]
    assert srv.count == len(rows[0]["details"]["attempts"])


async def test_a_udp_target_without_a_check_is_skipped_and_said_so(tmp_path: Path) -> None:
    target = Target(
        id="relay", app="whatsapp", role="relay", port=3478, transport="udp", expect="unknown",
        source="test", date="2026-11-28", address="127.0.0.1",
    )  # fmt: skip
    ctx = CheckContext(timeout=0.5)
    output = RunOutput(tmp_path, ctx, 1, {})
    result = await execute([target], ctx, output)
    assert result.records_path.read_text() == ""
    assert {"target": "relay", "reason": "no UDP check for unknown"} in result.skipped
