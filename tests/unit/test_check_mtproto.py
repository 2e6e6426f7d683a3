"""The mtproto check against loopback servers built from our own obfuscated2 / MTProto server
side (tests/fakes/signaling_server.py); nothing leaves 127.0.0.1."""

from __future__ import annotations

import os
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.mtproto import mtproto_handshake
from probe.model import Failure, Target, is_known_failure
from probe.protocols.mtproto import build_res_pq, parse_req_pq_multi, server_msg_id
from probe.protocols.obfuscated2 import INIT_LEN, Framing, ObfuscatedServer, derive_keys
from tests.fakes.signaling_server import LOOPBACK, Answer, Behaviour, FakeSignalingServer
from tests.recordcheck import assert_valid

TIMEOUT = 0.5
FUZZ_TIMEOUT = 0.3
# core.telegram.org/mtproto/samples-auth_key: the pq of the worked example, and a fingerprint.
PQ = bytes.fromhex("17ED48941A08F981")
FINGERPRINTS = (-4344800451088585951, 0x0BC35F3509F7B7A5)


def context(timeout: float = TIMEOUT) -> CheckContext:
    # The suite's allow-list (conftest): a slip cannot leave loopback.
    return CheckContext(timeout=timeout, allow=AllowList.from_sources())


def telegram_target(port: int) -> Target:
    return Target(
        id="tg-dc2",
        app="telegram",
        role="signaling",
        port=port,
        transport="tcp",
        expect="tcp",
        source="test",
        date="2026-01-01",
        address=LOOPBACK,
    )


def _server_and_request(data: bytes) -> tuple[ObfuscatedServer, bytes] | None:
    """The server side of the client's opening, and its first payload once complete."""
    if len(data) < INIT_LEN:
        return None
    server = ObfuscatedServer.from_init(data[:INIT_LEN])
    payloads = server.feed(data[INIT_LEN:])
    return (server, payloads[0]) if payloads else None


def res_pq_answer(*, nonce: bytes | None = None) -> Answer:
    """A data center: resPQ echoing the client's nonce (or ``nonce`` instead, to mismatch)."""

    def answer(data: bytes) -> bytes | None:
        opened = _server_and_request(data)
        if opened is None:
            return None
        server, payload = opened
        request = parse_req_pq_multi(payload)
        body = build_res_pq(
            nonce or request.nonce,
            os.urandom(16),
            PQ,
            FINGERPRINTS,
            msg_id=server_msg_id(time.time()),
        )
        return server.encrypt(body)

    return answer


def payload_answer(payload: bytes) -> Answer:
    """A server that frames and encrypts ``payload`` correctly but it is not a resPQ."""

    def answer(data: bytes) -> bytes | None:
        opened = _server_and_request(data)
        return None if opened is None else opened[0].encrypt(payload)

    return answer


def raw_answer(wire: bytes) -> Answer:
    """A server that encrypts ``wire`` with the right stream but frames nothing: the client
    decrypts exactly ``wire``, so the bytes reach its frame decoder as written."""

    def answer(data: bytes) -> bytes | None:
        opened = _server_and_request(data)
        if opened is None:
            return None
        _in_key, _in_iv, out_key, out_iv = derive_keys(data[:INIT_LEN])
        return Cipher(algorithms.AES(out_key), modes.CTR(out_iv)).encryptor().update(wire)

    return answer


@pytest.mark.parametrize("framing", list(Framing))
async def test_res_pq_arrives(framing: Framing) -> None:
    async with FakeSignalingServer("answer", res_pq_answer()) as srv:
        record = await mtproto_handshake(
            context(), telegram_target(srv.port), LOOPBACK, 3, framing=framing, dc_id=2
        )
    data = assert_valid(record)
    assert record.failure is None, record.details
    assert record.check == "mtproto"
    assert data["transaction_id"] == 3
    details = record.details
    assert details["res_pq"] is True
    assert details["framing"] == framing.value
    assert details["dc_id"] == 2
    assert details["fingerprints"] == len(FINGERPRINTS)
    assert len(bytes.fromhex(details["server_nonce"])) == 16
    assert details["bytes_sent"] == len(srv.received[0])
    assert details["bytes_received"] > 0
    assert 0 <= record.timings["connect"] <= record.timings["res_pq"]
    assert ObfuscatedServer.from_init(srv.received[0][:INIT_LEN]).dc_id == 2
    assert not srv.errors


async def test_dc_id_is_left_out_when_unknown() -> None:
    async with FakeSignalingServer("answer", res_pq_answer()) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None
    assert "dc_id" not in record.details
    assert record.details["framing"] == "intermediate"


async def test_silence_is_a_timeout() -> None:
    async with FakeSignalingServer("silent", res_pq_answer()) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert record.details["res_pq"] is False
    assert record.details["bytes_sent"] > INIT_LEN
    assert record.details["bytes_received"] == 0
    assert "connect" in record.timings
    assert "res_pq" not in record.timings
    assert record.runtime < TIMEOUT + 0.5


async def test_close_before_res_pq_is_eof() -> None:
    async with FakeSignalingServer("close", res_pq_answer()) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.EOF
    assert record.details["res_pq"] is False


async def test_reset_is_connection_reset() -> None:
    async with FakeSignalingServer("reset", res_pq_answer()) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.CONNECTION_RESET
    assert record.details["res_pq"] is False


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (res_pq_answer(nonce=b"\x01" * 16), Failure.MTPROTO_NONCE_MISMATCH),
        (payload_answer(bytes(24)), Failure.MTPROTO_BAD_RESPONSE),  # plain header, no body
        (payload_answer(struct.pack("<i", -404)), Failure.MTPROTO_TRANSPORT_ERROR),
        (raw_answer(b"\xff\xff\xff\xff"), Failure.MTPROTO_BAD_FRAMING),  # quick-ack from a server
    ],
    ids=["nonce_mismatch", "bad_response", "transport_error", "bad_framing"],
)
async def test_wrong_answers_get_the_decoders_failure(answer: Answer, failure: str) -> None:
    async with FakeSignalingServer("answer", answer) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == failure
    assert record.details["res_pq"] is False
    assert record.details["bytes_received"] > 0
    assert record.details["error"]
    if failure == Failure.MTPROTO_TRANSPORT_ERROR:
        assert record.details["transport_error"] == 404


async def test_plain_garbage_is_recorded_not_raised() -> None:
    # Unencrypted bytes decrypt to noise: a framing error, or a frame never completed (EOF).
    garbage = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    async with FakeSignalingServer("garbage", res_pq_answer(), garbage=garbage) as srv:
        record = await mtproto_handshake(context(), telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure in (Failure.MTPROTO_BAD_FRAMING, Failure.EOF)
    assert record.details["bytes_received"] == len(garbage)


async def test_refused_address_sees_no_connection() -> None:
    ctx = CheckContext(timeout=TIMEOUT, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeSignalingServer("answer", res_pq_answer()) as srv:
        record = await mtproto_handshake(ctx, telegram_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert srv.connections == 0
    assert record.details["bytes_sent"] == 0
    assert "connect" not in record.timings


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=st.binary(max_size=300), encrypted=st.booleans())
async def test_any_reply_is_recorded(reply: bytes, encrypted: bool) -> None:
    answer = raw_answer(reply) if encrypted else res_pq_answer()
    behaviour: Behaviour = "answer" if encrypted else "garbage"
    async with FakeSignalingServer(behaviour, answer, garbage=reply) as srv:
        record = await mtproto_handshake(
            context(FUZZ_TIMEOUT), telegram_target(srv.port), LOOPBACK, 1
        )
    assert_valid(record)
    assert record.failure is None or is_known_failure(record.failure)
    assert record.details["bytes_received"] <= len(reply)
