"""tcp_connect against loopback servers this module starts; nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.tcp import tcp_connect
from probe.model import Failure
from tests.fakes.tls_server import LOOPBACK, FakeTLSServer, web_target
from tests.recordcheck import assert_valid

TIMEOUT = 0.5


def context(timeout: float = TIMEOUT) -> CheckContext:
    # The suite's allow-list (conftest): a slip cannot leave loopback.
    return CheckContext(timeout=timeout, allow=AllowList.from_sources())


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full, so the kernel drops new SYNs: what an IP-level drop
    looks like to the client (a connect that never completes)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # backlog 0 holds one; the rest are dropped, as later SYNs will be
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):  # non-blocking: the SYN is on its way
                filler.connect((LOOPBACK, port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_succeeds_and_is_timed() -> None:
    async with FakeTLSServer("hang") as srv:
        record = await tcp_connect(context(), web_target(srv.port), LOOPBACK, 7)
        for _ in range(100):  # the accept loop runs after the client's connect returns
            if srv.connections:
                break
            await asyncio.sleep(0.01)
    data = assert_valid(record)
    assert record.failure is None
    assert record.check == "tcp_connect"
    assert record.transaction_id == 7
    assert data["target"]["address"] == LOOPBACK
    assert data["target"]["port"] == srv.port
    assert 0 < record.timings["connect"] <= record.runtime
    assert srv.connections == 1


async def test_refused() -> None:
    async with FakeTLSServer("refuse") as srv:
        record = await tcp_connect(context(), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.CONNECTION_REFUSED
    assert "connect" not in record.timings
    assert srv.connections == 0


async def test_dropped_syn_is_a_timeout(full_backlog: int) -> None:
    ctx = context()
    record = await tcp_connect(ctx, web_target(full_backlog), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 1.0


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("192.0.2.1", "127.0.0.0/8"),  # outside the list, and nothing there anyway
        (LOOPBACK, "192.0.2.0/24"),  # a live server the guard must keep us from
    ],
)
async def test_guard_refuses_before_sending(address: str, allowed: str) -> None:
    ctx = CheckContext(timeout=TIMEOUT, allow=AllowList(parse_networks([allowed])))
    async with FakeTLSServer("hang") as srv:
        record = await tcp_connect(ctx, web_target(srv.port), address, 1)
        await asyncio.sleep(0.05)  # room for a connection that should not exist to be accepted
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.target.address == address
    assert srv.connections == 0
    assert srv.bytes_received == 0


async def test_local_address_goes_to_the_scrubber(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = CheckContext.note_local

    def as_if_public(self: CheckContext, sockname: Any) -> None:
        # Loopback identifies nobody and is ignored; stand in a public address for it.
        seen.append(sockname)
        original(self, ("198.51.100.23", *sockname[1:]))

    monkeypatch.setattr(CheckContext, "note_local", as_if_public)
    ctx = context()
    async with FakeTLSServer("hang") as srv:
        record = await tcp_connect(ctx, web_target(srv.port), LOOPBACK, 1)
    assert record.failure is None
    assert len(seen) == 1
    assert seen[0][0] == LOOPBACK
    assert seen[0][1] != srv.port  # the client's own end, not the server's
    assert "198.51.100.23" in ctx.scrubber.addresses
    assert "198.51.100.23" not in ctx.scrubber.scrub(record.to_json() + " 198.51.100.23")


async def test_cancellation_propagates(full_backlog: int) -> None:
    ctx = context(5.0)
    task = asyncio.create_task(tcp_connect(ctx, web_target(full_backlog), LOOPBACK, 1))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
