"""The whatsapp_chat check against loopback servers built from our own WhatsApp prologue server
side (tests/fakes/signaling_server.py); nothing leaves 127.0.0.1."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.whatsapp import whatsapp_chat
from probe.model import Failure, Target, is_known_failure
from probe.protocols.whatsapp import (
    CONN_HEADER,
    build_server_hello,
    encode_frame,
    parse_client_prologue,
)
from tests.fakes.signaling_server import LOOPBACK, Answer, Behaviour, FakeSignalingServer
from tests.recordcheck import assert_valid

TIMEOUT = 0.5
FUZZ_TIMEOUT = 0.3
PAYLOAD_LEN = 300


def context(timeout: float = TIMEOUT) -> CheckContext:
    # The suite's allow-list (conftest): a slip cannot leave loopback.
    return CheckContext(timeout=timeout, allow=AllowList.from_sources())


def chat_target(port: int) -> Target:
    return Target(
        id="wa-e1-443",
        app="whatsapp",
        role="signaling",
        port=port,
        transport="tcp",
        expect="tcp",
        source="test",
        date="2026-01-01",
        host="e1.whatsapp.net",
        address=LOOPBACK,
    )


def hello_answer(data: bytes) -> bytes | None:
    """A chat server: a ServerHello once the client's prologue is whole."""
    if parse_client_prologue(data) is None:
        return None
    return build_server_hello(payload_len=PAYLOAD_LEN)


def echo_answer(data: bytes) -> bytes | None:
    """A middlebox that echoes the client's hello frame: well framed, but no serverHello."""
    prologue = parse_client_prologue(data)
    return None if prologue is None else data[len(CONN_HEADER) : prologue.consumed]


def fixed_answer(reply: bytes) -> Answer:
    def answer(data: bytes) -> bytes | None:
        return None if parse_client_prologue(data) is None else reply

    return answer


async def test_server_hello_arrives() -> None:
    async with FakeSignalingServer("answer", hello_answer) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 5)
    data = assert_valid(record)
    assert record.failure is None, record.details
    assert record.check == "whatsapp_chat"
    assert data["transaction_id"] == 5
    details = record.details
    assert details["server_hello"] is True
    assert details["static_length"] == 48
    assert details["payload_length"] == PAYLOAD_LEN
    assert details["bytes_received"] == details["frame_length"] + 3
    assert details["bytes_sent"] == len(srv.received[0])
    assert srv.received[0].startswith(CONN_HEADER)
    assert 0 <= record.timings["connect"] <= record.timings["server_hello"]
    assert not srv.errors


async def test_silence_is_a_timeout() -> None:
    async with FakeSignalingServer("silent", hello_answer) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert record.details["server_hello"] is False
    assert record.details["bytes_sent"] > 0
    assert record.details["bytes_received"] == 0
    assert "server_hello" not in record.timings
    assert record.runtime < TIMEOUT + 0.5


async def test_close_before_hello_is_eof() -> None:
    async with FakeSignalingServer("close", hello_answer) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.EOF
    assert record.details["server_hello"] is False


async def test_truncated_hello_is_eof() -> None:
    cut = build_server_hello(payload_len=PAYLOAD_LEN)[:100]
    async with FakeSignalingServer("answer", fixed_answer(cut)) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.EOF
    assert record.details["bytes_received"] == 100


async def test_reset_is_connection_reset() -> None:
    async with FakeSignalingServer("reset", hello_answer) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.CONNECTION_RESET


@pytest.mark.parametrize(
    ("behaviour", "answer", "garbage", "failure"),
    [
        # "HTT" read as a 3-byte length is far beyond a hello
        (
            "garbage",
            hello_answer,
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            Failure.WHATSAPP_BAD_FRAMING,
        ),
        ("answer", fixed_answer(encode_frame(b"\x00")), b"", Failure.WHATSAPP_BAD_RESPONSE),
        ("answer", echo_answer, b"", Failure.WHATSAPP_BAD_RESPONSE),
    ],
    ids=["http", "not_protobuf", "echoed_client_hello"],
)
async def test_wrong_answers_get_the_decoders_failure(
    behaviour: Behaviour, answer: Answer, garbage: bytes, failure: str
) -> None:
    async with FakeSignalingServer(behaviour, answer, garbage=garbage) as srv:
        record = await whatsapp_chat(context(), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == failure
    assert record.details["server_hello"] is False
    assert record.details["error"]


async def test_refused_address_sees_no_connection() -> None:
    ctx = CheckContext(timeout=TIMEOUT, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeSignalingServer("answer", hello_answer) as srv:
        record = await whatsapp_chat(ctx, chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert srv.connections == 0
    assert record.details["bytes_sent"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=st.one_of(st.binary(max_size=300), st.binary(min_size=3, max_size=40).map(encode_frame))
)
async def test_any_reply_is_recorded(reply: bytes) -> None:
    async with FakeSignalingServer("answer", fixed_answer(reply)) as srv:
        record = await whatsapp_chat(context(FUZZ_TIMEOUT), chat_target(srv.port), LOOPBACK, 1)
    assert_valid(record)
    assert record.failure is None or is_known_failure(record.failure)
    assert record.details["bytes_received"] <= len(reply)
