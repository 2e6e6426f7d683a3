"""Unencrypted MTProto messages, sans-IO: the ``req_pq_multi`` a client opens with and the
``resPQ`` a data center answers, for both sides.

An unencrypted message (core.telegram.org/mtproto/description#unencrypted-message) is::

    auth_key_id:int64 = 0 | message_id:int64 | message_data_length:int32 | message_data

all little-endian, and ``message_data`` is a TL-serialized object (core.telegram.org/mtproto/
serialize). The worked example at core.telegram.org/mtproto/samples-auth_key shows both messages
byte by byte; the tests use it as their known-answer vector.

The transport carrying these payloads (framing and obfuscation) is ``probe.protocols.obfuscated2``.
Decoders raise only :class:`MTProtoError`, whose ``failure`` is one of the strings below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from probe.protocols import DecodeError

__all__ = [
    "BAD_FRAMING",
    "BAD_INIT",
    "BAD_REQUEST",
    "BAD_RESPONSE",
    "NONCE_LEN",
    "NONCE_MISMATCH",
    "REQ_PQ",
    "REQ_PQ_MULTI",
    "RES_PQ",
    "TRANSPORT_ERROR",
    "VECTOR",
    "MTProtoError",
    "PlainMessage",
    "ReqPQ",
    "ResPQ",
    "build_req_pq_multi",
    "build_res_pq",
    "client_msg_id",
    "decode_plain",
    "encode_plain",
    "parse_req_pq_multi",
    "parse_res_pq",
    "server_msg_id",
    "tl_bytes",
]

# Failure strings (records store them; checks pass them on through ProtocolError).
BAD_RESPONSE: Final = "mtproto_bad_response"
"""The server's payload is not a well-formed unencrypted resPQ."""
NONCE_MISMATCH: Final = "mtproto_nonce_mismatch"
"""A resPQ arrived but does not echo our nonce: not an answer to our request."""
TRANSPORT_ERROR: Final = "mtproto_transport_error"
"""The server sent a transport error code (e.g. 404, 429, 444) instead of a message."""
BAD_FRAMING: Final = "mtproto_bad_framing"
"""The transport envelope is invalid (impossible length, unrequested quick-ack): usually the
stream was not obfuscated2 under the keys we derived."""
BAD_INIT: Final = "mtproto_bad_init"
"""Server side: a client's 64-byte obfuscated2 init is unusable."""
BAD_REQUEST: Final = "mtproto_bad_request"
"""Server side: a client's payload is not a well-formed unencrypted req_pq_multi."""

# core.telegram.org/mtproto/auth_key: req_pq_multi#be7e8ef1 nonce:int128 = ResPQ;
REQ_PQ_MULTI: Final = 0xBE7E8EF1
# core.telegram.org/mtproto/auth_key: the deprecated req_pq#60469778, same shape
REQ_PQ: Final = 0x60469778
# core.telegram.org/mtproto/auth_key: resPQ#05162463 nonce:int128 server_nonce:int128 pq:string
# server_public_key_fingerprints:Vector<long> = ResPQ;
RES_PQ: Final = 0x05162463
# core.telegram.org/mtproto/serialize: vector#1cb5c415 {t:Type} # [ t ] = Vector t;
VECTOR: Final = 0x1CB5C415
# int128 in the TL schema above: 16 bytes, sent as they are
NONCE_LEN: Final = 16

# auth_key_id, message_id, message_data_length
# (core.telegram.org/mtproto/description#unencrypted-message). The message id is read unsigned:
# from 2038 on, Unix seconds no longer fit the upper half of a signed int64.
_PLAIN_HEADER: Final = struct.Struct("<qQi")
_U32: Final = struct.Struct("<I")
_I32: Final = struct.Struct("<i")
_U64: Final = struct.Struct("<Q")
_I64: Final = struct.Struct("<q")
# core.telegram.org/mtproto/serialize: a TL string of >= 254 bytes starts with 254, then 3
# length bytes
_TL_LONG_STRING: Final = 254
# What a 3-byte TL length can say; longer strings cannot be serialized.
_TL_MAX_STRING: Final = (1 << 24) - 1
# A resPQ lists a handful of keys (3 in the docs' example); more than this in one answer is garbage,
# and the cap keeps a hostile count from costing time.
_MAX_FINGERPRINTS: Final = 64


class MTProtoError(DecodeError):
    """Bytes that are not the MTProto expected. ``failure`` is one of this module's failure
    strings; ``code`` is the (positive) error code of a transport error, otherwise None."""

    def __init__(self, failure: str, message: str, *, code: int | None = None) -> None:
        super().__init__(failure, message)
        self.code = code


def client_msg_id(now: float) -> int:
    """A client message id for Unix time ``now``: about ``now * 2**32`` and divisible by 4
    (core.telegram.org/mtproto/description#message-identifier-msg-id). Ids must grow within a
    connection; callers that send several messages in the same instant add 4 themselves."""
    return _time_msg_id(now) & ~3


def server_msg_id(now: float) -> int:
    """A server message id answering a client message: ``now * 2**32`` with remainder 1 modulo 4
    (core.telegram.org/mtproto/description#message-identifier-msg-id: responses are 1 mod 4)."""
    return (_time_msg_id(now) & ~3) | 1


def _time_msg_id(now: float) -> int:
    # Integer seconds in the upper half, the fraction in the lower: a float product would lose
    # the low bits (now * 2**32 is beyond a double's 53-bit mantissa).
    seconds = int(now)
    fraction = int((now - seconds) * (1 << 32))
    return ((seconds << 32) | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def tl_bytes(data: bytes) -> bytes:
    """TL serialization of ``bytes``/``string`` (core.telegram.org/mtproto/serialize): a length
    prefix of 1 byte (< 254) or 254 + 3 bytes, the data, and zero padding to a multiple of 4."""
    if len(data) > _TL_MAX_STRING:
        raise ValueError(f"a TL string holds at most {_TL_MAX_STRING} bytes, not {len(data)}")
    if len(data) < _TL_LONG_STRING:
        head = bytes([len(data)])
    else:
        head = bytes([_TL_LONG_STRING]) + len(data).to_bytes(3, "little")
    body = head + data
    return body + b"\x00" * (-len(body) % 4)


def _read_tl_bytes(buf: bytes, offset: int, failure: str) -> tuple[bytes, int]:
    """The TL string at ``offset`` and the offset after it (padding included)."""
    if offset >= len(buf):
        raise MTProtoError(failure, f"TL string at byte {offset} is missing")
    first = buf[offset]
    if first < _TL_LONG_STRING:
        start, length = offset + 1, first
    elif first == _TL_LONG_STRING:
        if offset + 4 > len(buf):
            raise MTProtoError(failure, f"TL string at byte {offset} has a truncated length")
        start, length = offset + 4, int.from_bytes(buf[offset + 1 : offset + 4], "little")
    else:  # 255 is no valid prefix
        raise MTProtoError(failure, f"TL string at byte {offset} has the invalid prefix 0xff")
    end = start + length
    padded_end = end + (-(end - offset) % 4)
    if padded_end > len(buf):
        raise MTProtoError(
            failure, f"TL string at byte {offset} needs {padded_end - offset} bytes, has fewer"
        )
    return buf[start:end], padded_end


@dataclass(slots=True, frozen=True)
class PlainMessage:
    """An unencrypted MTProto message."""

    msg_id: int
    """The sender's message id."""
    body: bytes
    """``message_data``: exactly ``message_data_length`` bytes (transport padding removed)."""


def encode_plain(msg_id: int, body: bytes) -> bytes:
    """An unencrypted message: auth_key_id 0, ``msg_id``, the body's length, the body."""
    return _PLAIN_HEADER.pack(0, msg_id, len(body)) + body


def decode_plain(payload: bytes, *, from_server: bool = True) -> PlainMessage:
    """Parse one transport payload as an unencrypted message.

    From a server, a 4-byte payload holding a negative number is a transport error
    (core.telegram.org/mtproto/mtproto-transports#transport-errors) and raises
    ``MTProtoError(TRANSPORT_ERROR, code=...)``. Bytes after ``message_data_length`` are
    accepted and dropped: padded framing leaves padding there that the transport cannot tell
    from payload.
    """
    failure = BAD_RESPONSE if from_server else BAD_REQUEST
    if from_server and len(payload) == _I32.size:
        (value,) = _I32.unpack(payload)
        if value < 0:
            raise MTProtoError(TRANSPORT_ERROR, f"transport error {-value}", code=-value)
    if len(payload) < _PLAIN_HEADER.size:
        raise MTProtoError(
            failure, f"{len(payload)} bytes: shorter than an unencrypted message header (20)"
        )
    auth_key_id, msg_id, length = _PLAIN_HEADER.unpack_from(payload)
    if auth_key_id != 0:
        key_id = auth_key_id & 0xFFFF_FFFF_FFFF_FFFF
        raise MTProtoError(failure, f"auth_key_id {key_id:#018x}: an encrypted message, not plain")
    available = len(payload) - _PLAIN_HEADER.size
    if not 0 <= length <= available:
        raise MTProtoError(
            failure, f"message_data_length {length} but {available} bytes follow the header"
        )
    return PlainMessage(msg_id, payload[_PLAIN_HEADER.size : _PLAIN_HEADER.size + length])


@dataclass(slots=True, frozen=True)
class ReqPQ:
    """A client's ``req_pq_multi`` (or the older ``req_pq``), as a server reads it."""

    msg_id: int
    nonce: bytes
    """The client's 16-byte nonce, which the answer must echo."""
    constructor: int
    """REQ_PQ_MULTI or REQ_PQ."""


def build_req_pq_multi(nonce: bytes, msg_id: int) -> bytes:
    """The unencrypted message carrying ``req_pq_multi`` (the payload to frame and send)."""
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"the nonce is {NONCE_LEN} bytes, not {len(nonce)}")
    return encode_plain(msg_id, _U32.pack(REQ_PQ_MULTI) + nonce)


def parse_req_pq_multi(payload: bytes) -> ReqPQ:
    """Server side: parse a client's first payload. Raises ``MTProtoError(BAD_REQUEST)``."""
    message = decode_plain(payload, from_server=False)
    body = message.body
    if len(body) < _U32.size + NONCE_LEN:
        raise MTProtoError(BAD_REQUEST, f"{len(body)}-byte body: too short for req_pq_multi")
    (constructor,) = _U32.unpack_from(body)
    if constructor not in (REQ_PQ_MULTI, REQ_PQ):
        raise MTProtoError(BAD_REQUEST, f"constructor {constructor:#010x}, not req_pq_multi")
    return ReqPQ(message.msg_id, body[4 : 4 + NONCE_LEN], constructor)


@dataclass(slots=True, frozen=True)
class ResPQ:
    """A data center's ``resPQ``: proof that MTProto got through and back."""

    msg_id: int
    nonce: bytes
    """Echo of the client's nonce."""
    server_nonce: bytes
    """16 bytes the server chose."""
    pq: bytes
    """The number to factor, big-endian (a TL string)."""
    fingerprints: tuple[int, ...]
    """``server_public_key_fingerprints`` as TL longs (signed 64-bit)."""

    @property
    def pq_int(self) -> int:
        return int.from_bytes(self.pq, "big")


def build_res_pq(
    nonce: bytes,
    server_nonce: bytes,
    pq: bytes,
    fingerprints: tuple[int, ...] | list[int],
    *,
    msg_id: int,
) -> bytes:
    """Server side: the unencrypted message carrying ``resPQ``. Fingerprints may be given signed
    or unsigned; they are sent as 8 little-endian bytes either way."""
    if len(nonce) != NONCE_LEN or len(server_nonce) != NONCE_LEN:
        raise ValueError(f"nonce and server_nonce are {NONCE_LEN} bytes each")
    for fingerprint in fingerprints:
        if not -(1 << 63) <= fingerprint < (1 << 64):
            raise ValueError(f"fingerprint {fingerprint} does not fit 64 bits")
    body = b"".join(
        (
            _U32.pack(RES_PQ),
            nonce,
            server_nonce,
            tl_bytes(pq),
            _U32.pack(VECTOR),
            _I32.pack(len(fingerprints)),
            *(_U64.pack(fingerprint & 0xFFFF_FFFF_FFFF_FFFF) for fingerprint in fingerprints),
        )
    )
    return encode_plain(msg_id, body)


def parse_res_pq(payload: bytes, *, nonce: bytes | None = None) -> ResPQ:
    """Client side: parse the server's answer to ``req_pq_multi``.

    With ``nonce`` given, an answer that does not echo it raises ``NONCE_MISMATCH``; any other
    malformation raises ``BAD_RESPONSE``, a transport error ``TRANSPORT_ERROR``.
    """
    message = decode_plain(payload, from_server=True)
    body = message.body
    if len(body) < _U32.size:
        raise MTProtoError(BAD_RESPONSE, f"{len(body)}-byte body: no constructor")
    (constructor,) = _U32.unpack_from(body)
    if constructor != RES_PQ:
        raise MTProtoError(BAD_RESPONSE, f"constructor {constructor:#010x}, not resPQ")
    offset = _U32.size + 2 * NONCE_LEN
    if len(body) < offset:
        raise MTProtoError(BAD_RESPONSE, f"{len(body)}-byte resPQ: nonces truncated")
    got_nonce = body[4 : 4 + NONCE_LEN]
    server_nonce = body[4 + NONCE_LEN : offset]
    pq, offset = _read_tl_bytes(body, offset, BAD_RESPONSE)
    if len(body) < offset + 8:
        raise MTProtoError(BAD_RESPONSE, "resPQ ends before its fingerprint vector")
    (vector,) = _U32.unpack_from(body, offset)
    (count,) = _I32.unpack_from(body, offset + 4)
    offset += 8
    if vector != VECTOR:
        raise MTProtoError(BAD_RESPONSE, f"fingerprints: constructor {vector:#010x}, not vector")
    if not 0 <= count <= _MAX_FINGERPRINTS:
        raise MTProtoError(BAD_RESPONSE, f"fingerprint count {count} out of range")
    if len(body) < offset + 8 * count:
        raise MTProtoError(BAD_RESPONSE, f"{count} fingerprints announced, fewer present")
    fingerprints = tuple(_I64.unpack_from(body, offset + 8 * i)[0] for i in range(count))
    if nonce is not None and got_nonce != nonce:
        raise MTProtoError(
            NONCE_MISMATCH, f"resPQ echoes nonce {got_nonce.hex()}, we sent {nonce.hex()}"
        )
    return ResPQ(message.msg_id, got_nonce, server_nonce, pq, fingerprints)
