"""tls_handshake against loopback fake servers; every failure class, both SNI kinds."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.tls import certificate_summary, tls_handshake
from probe.model import Failure, is_known_failure
from tests.fakes.tls_server import (
    LOOPBACK,
    NEUTRAL_HOST,
    Behaviour,
    CertKind,
    FakePKI,
    FakeTLSServer,
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


async def test_real_sni_handshake_records_session_and_certificate(pki: FakePKI) -> None:
    async with FakeTLSServer("complete", pki) as srv:
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 3, sni_kind="real"
        )
    assert_valid(record)
    assert record.failure is None
    assert record.check == "tls_handshake"
    details = record.details
    assert details["sni"] == HOST
    assert details["sni_kind"] == "real"
    assert details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert details["cipher"]
    assert details["alpn"] == "http/1.1"  # offered h2 and http/1.1; the fake speaks only 1.1
    assert details["cert_subject_cn"] == HOST
    assert HOST in details["cert_san"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", details["cert_not_after"])
    assert re.fullmatch(r"[0-9a-f]{64}", details["cert_sha256"])
    assert 0 < record.timings["connect"] <= record.timings["handshake"] <= record.runtime


async def test_neutral_sni_handshakes_without_verification(pki: FakePKI) -> None:
    async with FakeTLSServer("complete", pki) as srv:
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 3, sni_kind="neutral"
        )
    assert_valid(record)
    assert record.failure is None
    assert record.details["sni"] == NEUTRAL_HOST
    assert record.details["sni_kind"] == "neutral"
    # The server chose its leaf by SNI, so the neutral name got the neutral certificate.
    assert record.details["cert_san"] == [NEUTRAL_HOST]
    assert "handshake" in record.timings


async def test_sni_pair_tells_a_name_trigger_apart(pki: FakePKI) -> None:
    """Same server, same address: only the name differs, and only the real name fails."""
    async with FakeTLSServer("complete", pki, cert="wrong_host") as srv:
        real, neutral = await asyncio.gather(
            *(
                tls_handshake(context(pki), web_target(srv.port), LOOPBACK, 9, sni_kind=kind)
                for kind in ("real", "neutral")
            )
        )
    for record in (real, neutral):
        assert_valid(record)
        assert record.transaction_id == 9
    assert real.failure == Failure.SSL_INVALID_HOSTNAME
    assert neutral.failure is None
    assert neutral.details["cert_subject_cn"] == "wrong.host.invalid"


async def test_peer_deaf_after_the_handshake_is_still_a_success(pki: FakePKI) -> None:
    """A peer that never answers our close_notify costs the hang-up time, never the result."""
    async with FakeTLSServer("deaf", pki) as srv:
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind="real"
        )
    assert_valid(record)
    assert record.failure is None
    assert record.details["tls_version"]
    assert record.timings["handshake"] < record.runtime < TIMEOUT


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [
        ("refuse", Failure.CONNECTION_REFUSED),
        ("reset", Failure.CONNECTION_RESET),
        ("close", Failure.EOF),
        ("hang", Failure.GENERIC_TIMEOUT),
    ],
)
@pytest.mark.parametrize("sni_kind", ["real", "neutral"])
async def test_network_failures(
    pki: FakePKI, behaviour: Behaviour, failure: str, sni_kind: str
) -> None:
    async with FakeTLSServer(behaviour, pki) as srv:
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind=sni_kind
        )
    assert_valid(record)
    assert record.failure == failure, record.details.get("error")
    assert record.details["sni_kind"] == sni_kind
    assert "handshake" not in record.timings
    assert "tls_version" not in record.details
    if behaviour == "hang":
        assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 1.0
    if behaviour == "refuse":
        assert srv.connections == 0
    else:
        assert "connect" in record.timings
        assert srv.connections == 1


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
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind="real"
        )
    assert_valid(record)
    assert record.failure == failure, record.details.get("error")
    assert "CERTIFICATE_VERIFY_FAILED" in record.details["error"]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("192.0.2.1", "127.0.0.0/8"), (LOOPBACK, "192.0.2.0/24")],
)
async def test_guard_refuses_before_sending(pki: FakePKI, address: str, allowed: str) -> None:
    ctx = context(pki, allow=AllowList(parse_networks([allowed])))
    async with FakeTLSServer("complete", pki) as srv:
        record = await tls_handshake(ctx, web_target(srv.port), address, 1, sni_kind="real")
        await asyncio.sleep(0.05)  # room for a connection that should not exist to be accepted
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.details["sni"] == HOST  # what would have been sent is still said
    assert record.timings == {}
    assert srv.connections == 0
    assert srv.bytes_received == 0


async def test_local_address_is_noted_even_when_the_handshake_fails(
    pki: FakePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    original = CheckContext.note_local

    def as_if_public(self: CheckContext, sockname: Any) -> None:
        # Loopback identifies nobody and is ignored; stand in a public address for it.
        seen.append(sockname)
        original(self, ("203.0.113.77", *sockname[1:]))

    monkeypatch.setattr(CheckContext, "note_local", as_if_public)
    ctx = context(pki)
    async with FakeTLSServer("close", pki) as srv:
        record = await tls_handshake(ctx, web_target(srv.port), LOOPBACK, 1, sni_kind="real")
    assert record.failure == Failure.EOF
    assert [name[0] for name in seen] == [LOOPBACK]
    assert seen[0][1] != srv.port
    assert ctx.scrubber.addresses >= {"203.0.113.77"}
    assert "203.0.113.77" not in ctx.scrubber.scrub(record.to_json() + " 203.0.113.77")


async def test_cancellation_propagates_and_closes(pki: FakePKI) -> None:
    async with FakeTLSServer("hang", pki) as srv:
        task = asyncio.create_task(
            tls_handshake(
                context(pki, timeout=5.0),
                web_target(srv.port),
                LOOPBACK,
                1,
                sni_kind="real",
            )
        )
        for _ in range(200):  # until the ClientHello has reached the server
            if srv.bytes_received:
                break
            await asyncio.sleep(0.01)
        assert srv.bytes_received > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("sni_kind", ["sideways", ""])
async def test_unknown_sni_kind_is_a_programming_error(pki: FakePKI, sni_kind: str) -> None:
    with pytest.raises(ValueError, match="sni_kind"):
        await tls_handshake(context(pki), web_target(443), LOOPBACK, 1, sni_kind=sni_kind)


def test_certificate_summary_of_junk_keeps_only_the_fingerprint() -> None:
    summary = certificate_summary(b"\x30\x03\x02\x01\x00")
    assert summary["cert_unparsed"] is True
    assert len(summary["cert_sha256"]) == 64
    assert certificate_summary(None) == {}


# A TLS record header (content type, version 3.3, length) in front of random bytes reaches deeper
# into the client's parser than random bytes alone.
_tls_records = st.builds(
    lambda kind, body: bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body,
    st.sampled_from([20, 21, 22, 23]),
    st.binary(max_size=300),
)


@settings(max_examples=25, deadline=None)
@given(garbage=st.one_of(st.binary(max_size=600), _tls_records))
async def test_arbitrary_server_bytes_are_recorded_never_raised(
    pki: FakePKI, garbage: bytes
) -> None:
    async with FakeTLSServer("garbage", pki, garbage=garbage, hold=2.0) as srv:
        record = await tls_handshake(
            context(pki), web_target(srv.port), LOOPBACK, 1, sni_kind="real"
        )
    assert_valid(record)
    assert record.failure is not None
    assert is_known_failure(record.failure)
    assert record.runtime < TIMEOUT + 1.0
