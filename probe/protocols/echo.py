"""The echo protocol between the probe's call-shaped flows and the ringprobe reflector, sans-IO.

ringprobe's own format (docs/callflow.md): every probe datagram ends with a 32-byte trailer
(magic ``RPq1``, session id, sequence number, flow kind, a truncated HMAC-SHA256 under the shared
secret over everything before the MAC); the reflector answers a datagram whose MAC verifies with
an echo of exactly the same length: the request's bytes up to the trailer, then an echo trailer
(magic ``RPe1``, the same session, sequence and flow kind, the reflector's ``rx_count`` and
``rx_ms``, its own truncated MAC). The trailer sits at the end so that a censor reading the start
of a datagram sees only the app's framing.

Decoders take any bytes and either return the parsed trailer or raise ``EchoError`` (a
``DecodeError``); they never raise anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from probe.protocols import DecodeError

__all__ = [
    "ECHO_MAGIC",
    "MAX_DATAGRAM",
    "REQUEST_MAGIC",
    "TRAILER_LEN",
    "EchoError",
    "EchoTrailer",
    "FlowKind",
    "RequestTrailer",
    "build_echo",
    "build_request",
    "parse_echo",
    "parse_request",
]

REQUEST_MAGIC: Final = b"RPq1"  # docs/callflow.md, "Datagrams"
ECHO_MAGIC: Final = b"RPe1"
TRAILER_LEN: Final = 32
SESSION_LEN: Final = 8
REQUEST_MAC_LEN: Final = 12
ECHO_MAC_LEN: Final = 8
# 1500-byte Ethernet MTU minus 20 (IPv4) and 8 (UDP) header bytes (RFC 791, RFC 768).
MAX_DATAGRAM: Final = 1472
MAX_RX_COUNT: Final = 0xFFFFFF  # uint24, saturating
MAX_RX_MS: Final = 0xFFFFFFFF
# The failure string of a datagram that is not a valid echo (probe.model.Failure).
ECHO_BAD_DATAGRAM: Final = "echo_bad_datagram"

# magic, session, sequence, flow kind, 3 zero bytes; the MAC follows.
_REQUEST_HEAD: Final = struct.Struct("!4s8sIB3x")
# magic, session, sequence, flow kind, rx_count (uint24 as 3 bytes), rx_ms; the MAC follows.
_ECHO_HEAD: Final = struct.Struct("!4s8sIB3sI")


class FlowKind(IntEnum):
    """Which of a test's flows a datagram belongs to (docs/callflow.md)."""

    CALL = 0
    CONTROL = 1
    CALL_NEUTRAL_PORT = 2


class EchoError(DecodeError):
    """Not a valid request or echo: too short or long, wrong magic, unknown flow kind, bad MAC."""

    def __init__(self, message: str) -> None:
        super().__init__(ECHO_BAD_DATAGRAM, message)


@dataclass(frozen=True, slots=True)
class RequestTrailer:
    session: bytes
    seq: int
    kind: FlowKind


@dataclass(frozen=True, slots=True)
class EchoTrailer:
    session: bytes
    seq: int
    kind: FlowKind
    rx_count: int
    """Datagrams of the session the reflector accepted so far, this one included."""
    rx_ms: int
    """Milliseconds from the session's first accepted datagram to this one, at the reflector."""


def _mac(secret: bytes, data: bytes, length: int) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()[:length]


def _check_length(size: int) -> None:
    if size < TRAILER_LEN:
        raise EchoError(f"{size} bytes: shorter than the {TRAILER_LEN}-byte trailer")
    if size > MAX_DATAGRAM:
        raise EchoError(f"{size} bytes: longer than {MAX_DATAGRAM}")


def _kind(value: int) -> FlowKind:
    try:
        return FlowKind(value)
    except ValueError:
        raise EchoError(f"unknown flow kind {value}") from None


def build_request(
    secret: bytes, body: bytes, session: bytes, seq: int, kind: FlowKind = FlowKind.CALL
) -> bytes:
    """``body`` (the app framing and filler) followed by the request trailer."""
    if len(session) != SESSION_LEN:
        raise ValueError(f"a session id is {SESSION_LEN} bytes")
    if not 0 <= seq <= 0xFFFFFFFF:
        raise ValueError("sequence numbers are uint32")
    head = body + _REQUEST_HEAD.pack(REQUEST_MAGIC, session, seq, int(kind))
    datagram = head + _mac(secret, head, REQUEST_MAC_LEN)
    _check_length(len(datagram))
    return datagram


def parse_request(secret: bytes, datagram: bytes) -> RequestTrailer:
    """The trailer of a request whose MAC verifies under ``secret``."""
    _check_length(len(datagram))
    start = len(datagram) - TRAILER_LEN
    mac_at = len(datagram) - REQUEST_MAC_LEN
    magic, session, seq, kind = _REQUEST_HEAD.unpack_from(datagram, start)
    if magic != REQUEST_MAGIC:
        raise EchoError("not a request trailer")
    if not hmac.compare_digest(datagram[mac_at:], _mac(secret, datagram[:mac_at], REQUEST_MAC_LEN)):
        raise EchoError("request MAC does not verify")
    return RequestTrailer(session, seq, _kind(kind))


def build_echo(secret: bytes, request: bytes, rx_count: int, rx_ms: int) -> bytes:
    """The echo of a verified ``request``: its bytes before the trailer, then the echo trailer;
    exactly as long as the request."""
    trailer = parse_request(secret, request)
    count = min(max(rx_count, 0), MAX_RX_COUNT)
    ms = min(max(rx_ms, 0), MAX_RX_MS)
    head = request[: len(request) - TRAILER_LEN] + _ECHO_HEAD.pack(
        ECHO_MAGIC, trailer.session, trailer.seq, int(trailer.kind), count.to_bytes(3, "big"), ms
    )
    return head + _mac(secret, head, ECHO_MAC_LEN)


def parse_echo(secret: bytes, datagram: bytes) -> EchoTrailer:
    """The trailer of an echo whose MAC verifies under ``secret``."""
    _check_length(len(datagram))
    start = len(datagram) - TRAILER_LEN
    mac_at = len(datagram) - ECHO_MAC_LEN
    magic, session, seq, kind, count, ms = _ECHO_HEAD.unpack_from(datagram, start)
    if magic != ECHO_MAGIC:
        raise EchoError("not an echo trailer")
    if not hmac.compare_digest(datagram[mac_at:], _mac(secret, datagram[:mac_at], ECHO_MAC_LEN)):
        raise EchoError("echo MAC does not verify")
    return EchoTrailer(session, seq, _kind(kind), int.from_bytes(count, "big"), ms)
