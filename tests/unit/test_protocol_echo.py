"""The echo protocol (docs/callflow.md): requests and echoes round-trip, the echo is exactly as
long as its request, anything else is an EchoError, and the layout is the documented one."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.protocols import DecodeError
from probe.protocols.echo import (
    ECHO_MAGIC,
    MAX_DATAGRAM,
    MAX_RX_COUNT,
    REQUEST_MAGIC,
    TRAILER_LEN,
    EchoError,
    FlowKind,
    build_echo,
    build_request,
    parse_echo,
    parse_request,
)

SECRET = b"s" * 32
SESSION = bytes(range(8))


def test_request_layout_is_the_documented_one() -> None:
    body = b"\x90\x78" + b"x" * 60
    datagram = build_request(SECRET, body, SESSION, 7, FlowKind.CONTROL)
    assert len(datagram) == len(body) + TRAILER_LEN
    trailer = datagram[len(body) :]
    assert trailer[:4] == REQUEST_MAGIC
    assert trailer[4:12] == SESSION
    assert struct.unpack("!I", trailer[12:16]) == (7,)
    assert trailer[16:20] == b"\x01\x00\x00\x00"
    expected = hmac.new(SECRET, datagram[:-12], hashlib.sha256).digest()[:12]
    assert trailer[20:] == expected
    assert datagram.startswith(body)  # the app framing comes first, untouched


def test_echo_is_as_long_as_the_request_and_keeps_its_body() -> None:
    body = b"\x00\x03\x00\x00" + b"y" * 100
    request = build_request(SECRET, body, SESSION, 41)
    echo = build_echo(SECRET, request, rx_count=3, rx_ms=1250)
    assert len(echo) == len(request)
    assert echo[: len(body)] == body
    assert echo[len(body) : len(body) + 4] == ECHO_MAGIC
    trailer = parse_echo(SECRET, echo)
    assert (trailer.session, trailer.seq, trailer.kind) == (SESSION, 41, FlowKind.CALL)
    assert (trailer.rx_count, trailer.rx_ms) == (3, 1250)


def test_rx_count_saturates() -> None:
    request = build_request(SECRET, b"", SESSION, 0)
    assert parse_echo(SECRET, build_echo(SECRET, request, 1 << 30, 5)).rx_count == MAX_RX_COUNT


def test_a_request_under_another_secret_is_refused() -> None:
    request = build_request(SECRET, b"abc", SESSION, 1)
    with pytest.raises(EchoError, match="MAC"):
        parse_request(b"other", request)
    with pytest.raises(EchoError):
        build_echo(b"other", request, 1, 0)


def test_a_request_is_not_an_echo_and_an_echo_not_a_request() -> None:
    request = build_request(SECRET, b"abc", SESSION, 1)
    echo = build_echo(SECRET, request, 1, 0)
    with pytest.raises(EchoError):
        parse_echo(SECRET, request)
    with pytest.raises(EchoError):
        parse_request(SECRET, echo)


def test_any_changed_byte_is_caught() -> None:
    request = build_request(SECRET, b"call-shaped bytes", SESSION, 9)
    for i in range(len(request)):
        tampered = bytearray(request)
        tampered[i] ^= 0x01
        with pytest.raises(EchoError):
            parse_request(SECRET, bytes(tampered))


@pytest.mark.parametrize("size", [0, TRAILER_LEN - 1, MAX_DATAGRAM + 1])
def test_sizes_out_of_range_are_refused(size: int) -> None:
    with pytest.raises(EchoError, match="bytes"):
        parse_request(SECRET, b"\x00" * size)
    with pytest.raises(EchoError, match="bytes"):
        parse_echo(SECRET, b"\x00" * size)


def test_encoders_refuse_what_they_cannot_encode() -> None:
    with pytest.raises(ValueError, match="session"):
        build_request(SECRET, b"", b"short", 0)
    with pytest.raises(ValueError, match="uint32"):
        build_request(SECRET, b"", SESSION, 1 << 32)
    with pytest.raises(EchoError):
        build_request(SECRET, b"x" * MAX_DATAGRAM, SESSION, 0)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=MAX_DATAGRAM + 40))
def test_decoders_take_any_bytes(data: bytes) -> None:
    failures = set()
    for parse in (parse_request, parse_echo):
        try:
            parse(SECRET, data)
        except DecodeError as exc:
            failures.add(exc.failure)
    assert failures <= {"echo_bad_datagram"}


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=MAX_DATAGRAM - TRAILER_LEN),
    seq=st.integers(0, 0xFFFFFFFF),
    kind=st.sampled_from(list(FlowKind)),
    rx=st.integers(0, MAX_RX_COUNT),
    ms=st.integers(0, 0xFFFFFFFF),
)
def test_round_trip(body: bytes, seq: int, kind: FlowKind, rx: int, ms: int) -> None:
    request = build_request(SECRET, body, SESSION, seq, kind)
    got = parse_request(SECRET, request)
    assert (got.session, got.seq, got.kind) == (SESSION, seq, kind)
    echo = parse_echo(SECRET, build_echo(SECRET, request, rx, ms))
    assert (echo.seq, echo.kind, echo.rx_count, echo.rx_ms) == (seq, kind, rx, ms)
