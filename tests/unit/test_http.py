"""http_get against loopback fake servers: statuses, the body cap, throughput, every failure."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import Any

import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.http import MAX_BODY_BYTES, MIN_THROUGHPUT_BYTES, http_get
from probe.model import Failure
from tests.fakes.tls_server import (
    LOOPBACK,
    NEUTRAL_HOST,
    Behaviour,
    CertKind,
    FakePKI,
    FakeTLSServer,
    body_bytes,
    client_context,
    web_target,
)
from tests.recordcheck import assert_valid

TIMEOUT = 0.5
HOST = "web.whatsapp.com"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePKI:
    return FakePKI(tmp_path_factory.mktemp("pki"))


def context(pki: FakePKI, timeout: float = TIMEOUT, **kwargs: Any) -> CheckContext:
    return client_context(pki, timeout, **kwargs)


def short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("sni_kind", ["real", "neutral"])
async def test_get_records_status_body_and_headers(pki: FakePKI, sni_kind: str) -> None:
    async with FakeTLSServer("complete", pki, body_size=1500) as srv:
        target = web_target(srv.port, path="/status?x=1")
        record = await http_get(context(pki), target, LOOPBACK, 4, sni_kind=sni_kind)
    assert_valid(record)
    assert record.failure is None
    assert record.check == "http_get"
    details = record.details
    assert details["status"] == 200
    assert details["http_version"] == "HTTP/1.1"
    assert details["sni"] == (HOST if sni_kind == "real" else NEUTRAL_HOST)
    assert details["sni_kind"] == sni_kind
    assert details["body_bytes"] == 1500
    assert details["truncated"] is False
    assert details["body_sha256"] == short_sha(body_bytes(1500))
    assert details["headers"] == {
        "server": "ringprobe-fake",
        "content-type": "application/octet-stream",
        "content-length": "1500",
    }
    assert details["throughput_bps"] is None  # 1500 bytes are too few to time
    assert 0 < record.timings["first_byte"] <= record.timings["done"] <= record.runtime
    # The Host header names the real host whatever the SNI, and the path is the target's.
    [request] = srv.requests
    assert request.startswith(b"GET /status?x=1 HTTP/1.1\r\n")
    assert f"\r\nHost: {HOST}:{srv.port}\r\n".encode() in request


@pytest.mark.parametrize(("extra", "truncated"), [(50_000, True), (0, False)])
async def test_body_is_capped(pki: FakePKI, extra: int, truncated: bool) -> None:
    size = MAX_BODY_BYTES + extra
    async with FakeTLSServer("complete", pki, body_size=size) as srv:
        record = await http_get(context(pki, timeout=5.0), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert record.details["body_bytes"] == MAX_BODY_BYTES
    assert record.details["truncated"] is truncated
    assert record.details["body_sha256"] == short_sha(body_bytes(size)[:MAX_BODY_BYTES])
    assert record.details["headers"]["content-length"] == str(size)


@pytest.mark.parametrize("status", [404, 451, 503])
async def test_non_2xx_is_an_observation(pki: FakePKI, status: int) -> None:
    async with FakeTLSServer("complete", pki, status=status, body_size=10) as srv:
        record = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert record.details["status"] == status
    assert record.details["body_bytes"] == 10


async def test_redirect_is_recorded_not_followed(pki: FakePKI) -> None:
    location = "https://blockpage.invalid/"
    async with FakeTLSServer("complete", pki, status=302, headers={"Location": location}) as srv:
        record = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert record.details["status"] == 302
    assert record.details["headers"]["location"] == location
    assert srv.connections == 1
    assert len(srv.requests) == 1


async def test_trickle_throughput_is_plausible(pki: FakePKI) -> None:
    size, chunk, delay = 12_288, 512, 0.02
    async with FakeTLSServer(
        "trickle", pki, body_size=size, trickle_chunk=chunk, trickle_delay=delay
    ) as srv:
        record = await http_get(context(pki, timeout=5.0), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert record.details["body_bytes"] == size
    assert size - chunk >= MIN_THROUGHPUT_BYTES
    # The server paces ``chunk`` bytes per ``delay`` at best; sleeps only ever run late.
    ceiling = chunk * 8 / delay
    rate = record.details["throughput_bps"]
    assert rate is not None
    assert ceiling / 10 < rate < ceiling * 1.5
    # The head may arrive with a few chunks behind it, so allow for half of the pacing.
    assert record.timings["done"] - record.timings["first_byte"] >= size / chunk / 2 * delay


@pytest.mark.parametrize(
    ("end", "failure"), [("close", Failure.EOF), ("reset", Failure.CONNECTION_RESET)]
)
async def test_body_cut_short(pki: FakePKI, end: Any, failure: str) -> None:
    async with FakeTLSServer(
        "trickle", pki, body_size=8192, trickle_budget=0.1, trickle_end=end
    ) as srv:
        record = await http_get(context(pki, timeout=5.0), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == failure, record.details.get("error")
    assert record.details["status"] == 200
    assert 0 < record.details["body_bytes"] < 8192
    assert record.details["truncated"] is False  # cut by the peer, not by our cap
    assert "done" not in record.timings


async def test_timeout_mid_body_keeps_what_was_read(pki: FakePKI) -> None:
    async with FakeTLSServer(
        "trickle", pki, body_size=100_000, trickle_chunk=1024, trickle_delay=0.05
    ) as srv:
        record = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert record.details["status"] == 200
    assert 0 < record.details["body_bytes"] < 100_000
    assert record.details["throughput_bps"] is not None


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [
        ("refuse", Failure.CONNECTION_REFUSED),
        ("reset", Failure.CONNECTION_RESET),
        ("close", Failure.EOF),
        ("hang", Failure.GENERIC_TIMEOUT),
        ("deaf", Failure.GENERIC_TIMEOUT),  # handshake done, then no response
    ],
)
@pytest.mark.parametrize("sni_kind", ["real", "neutral"])
async def test_network_failures(
    pki: FakePKI, behaviour: Behaviour, failure: str, sni_kind: str
) -> None:
    async with FakeTLSServer(behaviour, pki) as srv:
        record = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind=sni_kind)
    assert_valid(record)
    assert record.failure == failure, record.details.get("error")
    assert "status" not in record.details
    if failure == Failure.GENERIC_TIMEOUT:
        assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 1.0


@pytest.mark.parametrize(
    ("cert", "failure"),
    [
        ("wrong_host", Failure.SSL_INVALID_HOSTNAME),
        ("untrusted", Failure.SSL_UNKNOWN_AUTHORITY),
        ("expired", Failure.SSL_INVALID_CERTIFICATE),
    ],
)
async def test_certificate_failures(pki: FakePKI, cert: CertKind, failure: str) -> None:
    async with FakeTLSServer("complete", pki, cert=cert) as srv:
        real = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1)
        neutral = await http_get(
            context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind="neutral"
        )
    assert_valid(real)
    assert_valid(neutral)
    assert real.failure == failure, real.details.get("error")
    assert neutral.failure is None  # nothing is verified with the neutral name
    assert neutral.details["status"] == 200


async def test_garbage_instead_of_tls(pki: FakePKI) -> None:
    async with FakeTLSServer("garbage", pki, garbage=b"HTTP/1.1 200 OK\r\n\r\n") as srv:
        record = await http_get(context(pki), web_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.SSL_FAILED_HANDSHAKE


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("192.0.2.1", "127.0.0.0/8"), (LOOPBACK, "192.0.2.0/24")],
)
async def test_guard_refuses_before_sending(pki: FakePKI, address: str, allowed: str) -> None:
    ctx = context(pki, allow=AllowList(parse_networks([allowed])))
    async with FakeTLSServer("complete", pki) as srv:
        record = await http_get(ctx, web_target(srv.port), address, 1)
        await asyncio.sleep(0.05)  # room for a connection that should not exist to be accepted
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.timings == {}
    assert srv.connections == 0
    assert srv.bytes_received == 0


async def test_local_address_goes_to_the_scrubber(
    pki: FakePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    original = CheckContext.note_local

    def as_if_public(self: CheckContext, sockname: Any) -> None:
        # Loopback identifies nobody and is ignored; stand in a public address for it.
        seen.append(sockname)
        original(self, ("198.51.100.9", *sockname[1:]))

    monkeypatch.setattr(CheckContext, "note_local", as_if_public)
    ctx = context(pki)
    async with FakeTLSServer("complete", pki) as srv:
        record = await http_get(ctx, web_target(srv.port), LOOPBACK, 1)
    assert record.failure is None
    assert [name[0] for name in seen] == [LOOPBACK]
    assert seen[0][1] != srv.port
    assert "198.51.100.9" in ctx.scrubber.addresses
    assert "198.51.100.9" not in ctx.scrubber.scrub(record.to_json() + " 198.51.100.9")


async def test_cancellation_propagates_and_closes(pki: FakePKI) -> None:
    async with FakeTLSServer(
        "trickle", pki, body_size=100_000, trickle_chunk=256, trickle_delay=0.05
    ) as srv:
        task = asyncio.create_task(
            http_get(context(pki, timeout=5.0), web_target(srv.port), LOOPBACK, 1)
        )
        for _ in range(200):  # until the request has reached the server
            if srv.requests:
                break
            await asyncio.sleep(0.01)
        assert srv.requests
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_target_without_host_is_a_programming_error(pki: FakePKI) -> None:
    nameless = dataclasses.replace(web_target(443), host=None)
    with pytest.raises(ValueError, match="host"):
        await http_get(context(pki), nameless, LOOPBACK, 1, sni_kind="neutral")
