"""The quic check against loopback HTTP/3 servers (aioquic) and UDP stand-ins for a censor
(tests/fakes/quic_server.py); nothing leaves 127.0.0.1 and ::1."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks import http
from probe.checks.base import CheckContext
from probe.checks.quic import (
    HEADERS_KEPT,
    MAX_BODY_BYTES,
    _authority,
    _Close,
    _close_failure,
    quic_get,
)
from probe.model import Failure, Record, Target
from tests.fakes.quic_server import (
    INITIAL_DROP_FROM,
    FakeQUICServer,
    InitialDropProxy,
    SilentUDP,
)
from tests.fakes.tls_server import (
    DEFAULT_HOSTS,
    LOOPBACK,
    NEUTRAL_HOST,
    CertKind,
    FakePKI,
    body_bytes,
    client_context,
)
from tests.recordcheck import assert_valid

TIMEOUT = 1.0
HOST = DEFAULT_HOSTS[0]
# RFC 9000 §14.1: a client pads every datagram carrying an Initial to at least this many bytes.
MIN_INITIAL = 1200
CRYPTO_ERROR = 0x100  # RFC 9001 §4.8
QUIC_V2 = 0x6B3343CF  # RFC 9369 §3.1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePKI:
    return FakePKI(tmp_path_factory.mktemp("pki"))


def context(pki: FakePKI, timeout: float = TIMEOUT, **kwargs: Any) -> CheckContext:
    return client_context(pki, timeout, **kwargs)


def http3_target(port: int, host: str = HOST, path: str = "/") -> Target:
    return Target(
        id="t-h3",
        app="whatsapp",
        role="web",
        port=port,
        transport="udp",
        expect="http3",
        source="test",
        date="2026-11-28",
        host=host,
        path=path,
    )


def short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def assert_silent_failure(record: Record, failure: str) -> None:
    """A failure before the handshake: nothing of the response was recorded."""
    assert_valid(record)
    assert record.failure == failure, record.details.get("error")
    assert record.details["handshake_done"] is False
    assert "quic_version" not in record.details
    assert "status" not in record.details
    assert "handshake" not in record.timings


@pytest.mark.parametrize("address", [LOOPBACK, "::1"])
async def test_get_over_http3_records_the_response(pki: FakePKI, address: Any) -> None:
    async with FakeQUICServer("complete", pki, host=address, body_size=5000) as srv:
        record = await quic_get(context(pki), http3_target(srv.port, path="/w"), address, 4)
    data = assert_valid(record)
    assert record.failure is None, record.details.get("error")
    assert (data["check"], data["transaction_id"]) == ("quic", 4)
    assert data["target"]["address"] == address
    details = record.details
    assert details["handshake_done"] is True
    assert details["quic_version"] == 1
    assert details["alpn"] == "h3"
    assert details["sni"] == HOST
    assert details["status"] == 200
    assert details["headers"]["server"] == "ringprobe-fake"
    assert details["headers"]["content-length"] == "5000"
    assert details["body_bytes"] == len(srv.body) == 5000
    assert details["body_sha256"] == short_sha(srv.body)
    assert details["truncated"] is False
    assert "closed_by" not in details
    # Every datagram the server got, the client counted; its Initial alone is padded to 1200.
    assert details["bytes_sent"] >= srv.bytes_received >= MIN_INITIAL
    assert details["bytes_received"] > len(srv.body)
    assert srv.connections == 1
    assert srv.requests == [
        {
            b":method": b"GET",
            b":scheme": b"https",
            b":authority": f"{HOST}:{srv.port}".encode(),  # not 443: the port is said
            b":path": b"/w",
        }
    ]
    timings = record.timings
    assert 0 < timings["handshake"] <= timings["first_byte"] <= timings["done"] <= record.runtime


async def test_a_status_other_than_2xx_is_an_observation(pki: FakePKI) -> None:
    async with FakeQUICServer("complete", pki, status=404, body_size=10) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert record.details["status"] == 404
    assert record.details["body_bytes"] == 10


async def test_the_body_is_read_up_to_the_cap(pki: FakePKI) -> None:
    size = MAX_BODY_BYTES + 40 * 1024
    async with FakeQUICServer("complete", pki, body_size=size) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None, record.details.get("error")
    details = record.details
    assert details["body_bytes"] == MAX_BODY_BYTES
    assert details["truncated"] is True
    assert details["body_sha256"] == short_sha(body_bytes(size)[:MAX_BODY_BYTES])
    assert details["throughput_bps"] > 0
    assert "done" in record.timings
    assert record.runtime < TIMEOUT  # the check stopped reading; it did not wait for the rest


def test_cap_and_headers_are_http_gets() -> None:
    assert MAX_BODY_BYTES == http.MAX_BODY_BYTES
    assert HEADERS_KEPT == http.HEADERS_KEPT


async def test_a_silent_port_is_a_timeout(pki: FakePKI) -> None:
    async with SilentUDP() as silent:
        record = await quic_get(context(pki), http3_target(silent.port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.GENERIC_TIMEOUT)
    assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 0.5
    assert silent.sizes  # the Initial went out, and was retransmitted into the silence
    assert min(silent.sizes) >= MIN_INITIAL
    assert record.details["bytes_sent"] >= sum(silent.sizes)
    assert record.details["bytes_received"] == 0


@pytest.mark.parametrize("drop_from", [INITIAL_DROP_FROM, None], ids=["drop", "relay"])
async def test_dropped_initials_are_a_timeout(pki: FakePKI, drop_from: int | None) -> None:
    """The Russian filter: no Initial reaches the server. The same relay without the drop is the
    control that shows the relay itself works."""
    async with (
        FakeQUICServer("complete", pki) as srv,
        InitialDropProxy(srv.port, drop_from=drop_from) as proxy,
    ):
        record = await quic_get(context(pki), http3_target(proxy.port), LOOPBACK, 1)
    if drop_from is None:
        assert_valid(record)
        assert record.failure is None, record.details.get("error")
        assert record.details["status"] == 200
        assert proxy.dropped == []
        assert srv.connections == 1
        return
    assert_silent_failure(record, Failure.GENERIC_TIMEOUT)
    assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 0.5
    assert proxy.dropped
    assert min(proxy.dropped) >= MIN_INITIAL
    assert proxy.forwarded == 0
    assert srv.datagrams == 0
    assert record.details["bytes_received"] == 0


async def test_a_closed_port_is_connection_refused(pki: FakePKI) -> None:
    """ICMP port unreachable reaches the check through its connected socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_socket:
        probe_socket.bind((LOOPBACK, 0))
        port = probe_socket.getsockname()[1]
    record = await quic_get(context(pki), http3_target(port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.CONNECTION_REFUSED)
    assert "ConnectionRefusedError" in record.details["error"]
    assert record.runtime < TIMEOUT / 2


@pytest.mark.parametrize(
    ("cert", "host", "failure", "alert"),
    [
        ("wrong_host", HOST, Failure.SSL_INVALID_HOSTNAME, 42),
        ("valid", NEUTRAL_HOST, Failure.SSL_INVALID_HOSTNAME, 42),  # an SNI the leaf lacks
        ("untrusted", HOST, Failure.SSL_UNKNOWN_AUTHORITY, 42),
        ("expired", HOST, Failure.SSL_INVALID_CERTIFICATE, 45),
    ],
)
async def test_certificate_failures_are_named_as_tls_names_them(
    pki: FakePKI, cert: CertKind, host: str, failure: str, alert: int
) -> None:
    async with FakeQUICServer("complete", pki, cert=cert) as srv:
        record = await quic_get(context(pki), http3_target(srv.port, host=host), LOOPBACK, 1)
    assert_silent_failure(record, failure)
    details = record.details
    assert details["sni"] == host
    assert details["closed_by"] == "local"  # our check refused the certificate
    assert details["close_code"] == CRYPTO_ERROR + alert
    assert details["close_space"] == "transport"
    assert srv.requests == []
    assert record.runtime < TIMEOUT / 2


async def test_the_test_ca_is_trusted_only_through_ca_file(pki: FakePKI) -> None:
    """Without ctx.ca_file the system store alone decides, and it does not know the test CA."""
    ctx = CheckContext(timeout=TIMEOUT, allow=AllowList.from_sources())
    async with FakeQUICServer("complete", pki) as srv:
        record = await quic_get(ctx, http3_target(srv.port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.SSL_UNKNOWN_AUTHORITY)


async def test_a_peer_refusing_the_connection_is_connection_refused(pki: FakePKI) -> None:
    async with FakeQUICServer("refuse", pki) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.CONNECTION_REFUSED)
    details = record.details
    assert (details["closed_by"], details["close_code"]) == ("peer", 0x2)  # RFC 9000 §20.1
    assert details["close_reason"] == "refused by the test server"
    assert srv.connections == 1


async def test_a_peers_tls_alert_is_a_failed_handshake(pki: FakePKI) -> None:
    """The server speaks no h3 and says so with no_application_protocol (RFC 9001 §8.1)."""
    async with FakeQUICServer("complete", pki, alpn=["hq-interop"]) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.SSL_FAILED_HANDSHAKE)
    assert record.details["closed_by"] == "peer"
    assert record.details["close_code"] == CRYPTO_ERROR + 120


async def test_no_common_version_is_quic_incompatible_version(pki: FakePKI) -> None:
    async with FakeQUICServer("complete", pki, versions=[QUIC_V2]) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_silent_failure(record, Failure.QUIC_INCOMPATIBLE_VERSION)
    assert record.details["server_versions"] == [QUIC_V2]
    assert srv.connections == 0
    assert record.runtime < TIMEOUT / 2


async def test_a_peer_closing_after_the_request_is_quic_connection_closed(pki: FakePKI) -> None:
    async with FakeQUICServer("close", pki, close_code=0x10B) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.QUIC_CONNECTION_CLOSED, record.details.get("error")
    details = record.details
    assert details["handshake_done"] is True
    assert (details["closed_by"], details["close_space"]) == ("peer", "application")
    assert details["close_code"] == 0x10B
    assert details["close_reason"] == "closed by the test server"
    assert "status" not in details
    assert "handshake" in record.timings
    assert "first_byte" not in record.timings
    assert len(srv.requests) == 1


async def test_a_reset_request_stream_is_http_request_failed(pki: FakePKI) -> None:
    async with FakeQUICServer("reset", pki) as srv:
        record = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.HTTP_REQUEST_FAILED, record.details.get("error")
    assert record.details["stream_reset_code"] == 0x10B  # H3_REQUEST_REJECTED, RFC 9114 §8.1
    assert record.details["handshake_done"] is True
    assert "closed_by" not in record.details
    assert record.runtime < TIMEOUT / 2


async def test_guard_refuses_before_sending(pki: FakePKI) -> None:
    refused = context(pki, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeQUICServer("complete", pki) as srv:
        record = await quic_get(refused, http3_target(srv.port), LOOPBACK, 1)
        # A check the server does answer: a datagram of the refused one would have come first.
        after = await quic_get(context(pki), http3_target(srv.port), LOOPBACK, 2)
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.details["sni"] == HOST  # what would have been sent is still said
    assert record.details["bytes_sent"] == 0
    assert record.timings == {}
    assert after.failure is None
    assert srv.connections == 1
    assert srv.bytes_received <= after.details["bytes_sent"]


async def test_cancellation_propagates_and_closes(pki: FakePKI) -> None:
    async with SilentUDP() as silent:
        task = asyncio.create_task(
            quic_get(context(pki, timeout=5.0), http3_target(silent.port), LOOPBACK, 1)
        )
        for _ in range(200):  # until the Initial has reached the port
            if silent.sizes:
                break
            await asyncio.sleep(0.01)
        assert silent.sizes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_target_without_host_is_a_programming_error(pki: FakePKI) -> None:
    target = Target(
        id="t",
        app="control",
        role="control",
        port=443,
        transport="udp",
        expect="http3",
        source="test",
        date="2026-11-28",
        address=LOOPBACK,
    )
    with pytest.raises(ValueError, match="no host"):
        await quic_get(context(pki), target, LOOPBACK, 1)


def test_the_authority_leaves_out_the_https_port() -> None:
    assert _authority(http3_target(443)) == HOST
    assert _authority(http3_target(8443)) == f"{HOST}:8443"


def _close(code: int, *, by_peer: bool, application: bool = False, reason: str = "") -> _Close:
    return _Close(by_peer=by_peer, code=code, application=application, reason=reason)


@pytest.mark.parametrize(
    ("close", "handshake_done", "failure"),
    [
        # the peer's TLS alerts, as OONI's netxlite names them
        (_close(CRYPTO_ERROR + 48, by_peer=True), False, Failure.SSL_UNKNOWN_AUTHORITY),
        (_close(CRYPTO_ERROR + 112, by_peer=True), False, Failure.SSL_INVALID_HOSTNAME),
        (_close(CRYPTO_ERROR + 42, by_peer=True), False, Failure.SSL_INVALID_CERTIFICATE),
        (_close(CRYPTO_ERROR + 40, by_peer=True), False, Failure.SSL_FAILED_HANDSHAKE),
        (_close(CRYPTO_ERROR + 80, by_peer=True), False, Failure.SSL_FAILED_HANDSHAKE),
        # our certificate check, by aioquic's and OpenSSL's words
        (
            _close(CRYPTO_ERROR + 42, by_peer=False, reason="self-signed certificate"),
            False,
            Failure.SSL_UNKNOWN_AUTHORITY,
        ),
        (
            _close(CRYPTO_ERROR + 42, by_peer=False, reason="certificate has been revoked"),
            False,
            Failure.SSL_INVALID_CERTIFICATE,
        ),
        # other closes
        (_close(0x2, by_peer=True), False, Failure.CONNECTION_REFUSED),
        (_close(0x2, by_peer=True, application=True), True, Failure.QUIC_CONNECTION_CLOSED),
        (_close(0x0, by_peer=True), True, Failure.QUIC_CONNECTION_CLOSED),
        (_close(0xA, by_peer=False), False, Failure.SSL_FAILED_HANDSHAKE),
        (_close(0x106, by_peer=False, application=True), True, Failure.HTTP_REQUEST_FAILED),
    ],
)
def test_close_failures(close: _Close, handshake_done: bool, failure: str) -> None:
    assert _close_failure(close, handshake_done=handshake_done) == failure
