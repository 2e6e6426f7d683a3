"""WhatsApp chat prologue, sans-IO: what a client sends first on e1..e16.whatsapp.net (443, 5222)
and the shape of the server's first frame, for both ends; the Noise handshake is never completed.

What a client sends first::

    [ 'E' 'D' 00 01 | length:3 BE | routing info ]    optional edge-routing pre-intro
    'W' 'A' 06 03                                     connection header
    length:3 BE | HandshakeMessage{clientHello{ephemeral}}

- Edge-routing pre-intro: whatsmeow socket/constants.go ``EdgeRoutingPreIntro`` ("ED", 0, 1,
  a 3-byte big-endian length, then the routing info), Baileys' noise handler likewise. The
  routing info is opaque: bytes the server handed the client on an earlier connection (the
  ``edge_routing`` node after login), sent back verbatim. nDPI's WhatsApp signature matches
  this prefix, which is why a probe may want to send it.
- Connection header: whatsmeow socket/constants.go ``WAConnHeader = {'W', 'A', WAMagicValue,
  token.DictVersion}`` with ``WAMagicValue = 6`` and ``DictVersion = 3`` (binary/token/token.go);
  Baileys' ``NOISE_WA_HEADER`` is the same four bytes. Native apps have sent other versions
  (e.g. ``WA 05 02``, ``WA 04 00``), so the server side accepts any two version bytes.
- Frames: a 3-byte big-endian length, then the frame (whatsmeow socket/framesocket.go,
  ``FrameLengthSize = 3``).
- The first frame is Noise_XX_25519_AESGCM_SHA256 message 1 (``-> e``) wrapped in protobuf:
  ``HandshakeMessage`` from WAProto (Baileys WAProto/WAWa6/WAWa6.proto)::

      message HandshakeMessage {
        message ClientHello  { optional bytes ephemeral = 1; optional bytes static = 2;
                               optional bytes payload = 3; }
        message ServerHello  { optional bytes ephemeral = 1; optional bytes static = 2;
                               optional bytes payload = 3; }
        message ClientFinish { optional bytes static = 1; optional bytes payload = 2; }
        optional ClientHello clientHello = 2;
        optional ServerHello serverHello = 3;
        optional ClientFinish clientFinish = 4;
      }

  The ephemeral key is an X25519 public key (32 bytes). The server answers with message 2
  (``<- e, ee, s, es``): its ephemeral in clear, its static key and a certificate payload
  encrypted with AES-GCM (so static is 32 + 16 tag bytes).

Decoders raise only :class:`WhatsAppError`; ``None`` from a parser means "a valid beginning:
read more bytes".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from probe.protocols import DecodeError

__all__ = [
    "BAD_FRAMING",
    "BAD_PROLOGUE",
    "BAD_RESPONSE",
    "CONN_HEADER",
    "EDGE_ROUTING_MAGIC",
    "KEY_LEN",
    "MAX_HELLO_LEN",
    "WA_VERSION",
    "ClientPrologue",
    "ServerHello",
    "WhatsAppError",
    "build_client_prologue",
    "build_server_hello",
    "decode_frame",
    "encode_client_hello",
    "encode_frame",
    "encode_server_hello",
    "new_ephemeral_key",
    "parse_client_prologue",
    "parse_server_hello",
]

RandomBytes = Callable[[int], bytes]

# Failure strings.
BAD_FRAMING: Final = "whatsapp_bad_framing"
"""A frame's length is impossible for a handshake frame (zero, or beyond MAX_HELLO_LEN)."""
BAD_RESPONSE: Final = "whatsapp_bad_response"
"""The server's first frame is not a HandshakeMessage carrying a serverHello."""
BAD_PROLOGUE: Final = "whatsapp_bad_prologue"
"""Server side: a client's first bytes are not the WA prologue and a clientHello."""

# whatsmeow socket/constants.go EdgeRoutingPreIntro: 'E', 'D', 0, 1
EDGE_ROUTING_MAGIC: Final = b"ED\x00\x01"
# whatsmeow socket/constants.go WAConnHeader: 'W', 'A', then the two version bytes
_CONN_MAGIC: Final = b"WA"
# whatsmeow socket/constants.go WAMagicValue = 6; binary/token/token.go DictVersion = 3
WA_VERSION: Final = (6, 3)
CONN_HEADER: Final = _CONN_MAGIC + bytes(WA_VERSION)
# whatsmeow socket/constants.go FrameLengthSize = 3 (big-endian, socket/framesocket.go)
_LENGTH_SIZE: Final = 3
_MAX_FRAME: Final = (1 << 24) - 1
# Noise_XX_25519: DH public keys are 32 bytes (X25519, RFC 7748)
KEY_LEN: Final = 32
# Noise spec section 5.2 EncryptAndHash: AES-GCM appends a 16-byte tag to the encrypted static key
_GCM_TAG_LEN: Final = 16
# Ours: a handshake frame larger than this is not one (a ServerHello is a few hundred bytes: two
# keys and a certificate chain); say so at once rather than wait for megabytes.
MAX_HELLO_LEN: Final = 64 * 1024
# Ours: routing info is a few bytes; a server-side parser gives up on a prefix claiming more.
_MAX_ROUTING_LEN: Final = 64 * 1024
# Ours, for the emulator: the encrypted certificate payload's length is drawn from this range;
# real ones vary with the certificate chain.
_SERVER_PAYLOAD_LEN: Final = range(120, 600)

# WAProto WAWa6.proto HandshakeMessage field numbers (Baileys WAProto/WAWa6/WAWa6.proto)
_CLIENT_HELLO: Final = 2
_SERVER_HELLO: Final = 3
# ... and of ClientHello / ServerHello
_EPHEMERAL: Final = 1
_STATIC: Final = 2
_PAYLOAD: Final = 3

# Protobuf wire types (protobuf.dev/programming-guides/encoding: VARINT, I64, LEN, SGROUP,
# EGROUP, I32)
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5
# protobuf.dev encoding: a varint is at most 10 bytes (64 bits, 7 per byte)
_MAX_VARINT_BYTES: Final = 10


class WhatsAppError(DecodeError):
    """Bytes that are not the WhatsApp chat prologue or handshake expected."""


def new_ephemeral_key() -> bytes:
    """A fresh X25519 public key (raw 32 bytes). The private half is dropped: the probe never
    completes the handshake, it only needs the server to see a well-formed hello."""
    return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- protobuf, by hand: only length-delimited fields are written ------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(value)) + value


def _read_varint(data: bytes, pos: int, failure: str) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise WhatsAppError(failure, f"protobuf varint at byte {pos} is truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise WhatsAppError(failure, f"protobuf varint at byte {pos} is longer than 10 bytes")


def _len_fields(data: bytes, failure: str) -> dict[int, bytes]:
    """The length-delimited fields of a protobuf message (last occurrence wins, as protobuf
    says for singular fields); other wire types are checked and skipped."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos, failure)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WhatsAppError(failure, "protobuf field number 0")
        if wire_type == _VARINT:
            _, pos = _read_varint(data, pos, failure)
        elif wire_type in (_I64, _I32):
            pos += 8 if wire_type == _I64 else 4
            if pos > len(data):
                raise WhatsAppError(failure, f"protobuf field {number} is truncated")
        elif wire_type == _LEN:
            length, pos = _read_varint(data, pos, failure)
            if length > len(data) - pos:
                raise WhatsAppError(failure, f"protobuf field {number} is truncated")
            fields[number] = data[pos : pos + length]
            pos += length
        else:  # groups (3, 4) are absent from WAProto; 6 and 7 do not exist
            raise WhatsAppError(failure, f"protobuf wire type {wire_type} in field {number}")
    return fields


# --- frames -------------------------------------------------------------------------------------


def encode_frame(data: bytes) -> bytes:
    """A frame: 3-byte big-endian length, then the data."""
    if len(data) > _MAX_FRAME:
        raise ValueError(f"a frame holds at most {_MAX_FRAME} bytes, not {len(data)}")
    return len(data).to_bytes(_LENGTH_SIZE, "big") + data


def decode_frame(
    data: bytes, offset: int = 0, *, max_len: int = MAX_HELLO_LEN, failure: str = BAD_FRAMING
) -> tuple[bytes, int] | None:
    """The frame starting at ``offset`` and the offset after it; None until it is complete.
    An empty frame or one longer than ``max_len`` raises ``WhatsAppError(failure)``."""
    if len(data) < offset + _LENGTH_SIZE:
        return None
    length = int.from_bytes(data[offset : offset + _LENGTH_SIZE], "big")
    if length == 0 or length > max_len:
        raise WhatsAppError(failure, f"frame length {length} (1..{max_len} expected)")
    end = offset + _LENGTH_SIZE + length
    if len(data) < end:
        return None
    return data[offset + _LENGTH_SIZE : end], end


# --- client side --------------------------------------------------------------------------------


def encode_client_hello(
    ephemeral: bytes, *, static: bytes | None = None, payload: bytes | None = None
) -> bytes:
    """``HandshakeMessage{clientHello{ephemeral[, static, payload]}}`` (XX sends the ephemeral
    alone; static and payload appear in the IK resumption hello)."""
    if len(ephemeral) != KEY_LEN:
        raise ValueError(f"the ephemeral key is {KEY_LEN} bytes, not {len(ephemeral)}")
    hello = _field(_EPHEMERAL, ephemeral)
    if static is not None:
        hello += _field(_STATIC, static)
    if payload is not None:
        hello += _field(_PAYLOAD, payload)
    return _field(_CLIENT_HELLO, hello)


def build_client_prologue(
    ephemeral: bytes,
    *,
    routing: bytes | None = None,
    version: tuple[int, int] = WA_VERSION,
) -> bytes:
    """Everything a client sends before the server speaks: the optional edge-routing
    pre-intro, the ``WA`` header and the framed clientHello."""
    prefix = b""
    if routing is not None:
        if not 0 < len(routing) <= _MAX_FRAME:
            # whatsmeow sends no pre-intro at all rather than an empty one
            raise ValueError(f"routing info of {len(routing)} bytes (1..{_MAX_FRAME} allowed)")
        prefix = EDGE_ROUTING_MAGIC + len(routing).to_bytes(_LENGTH_SIZE, "big") + routing
    return prefix + _CONN_MAGIC + bytes(version) + encode_frame(encode_client_hello(ephemeral))


@dataclass(slots=True, frozen=True)
class ServerHello:
    """What the server's first frame showed, short of decrypting anything."""

    frame_length: int
    """Bytes in the frame (the HandshakeMessage)."""
    ephemeral: bytes
    """The server's ephemeral X25519 public key (in clear in XX message 2)."""
    static_length: int | None
    """Length of the encrypted static key (48 expected), None when absent."""
    payload_length: int | None
    """Length of the encrypted certificate payload, None when absent."""
    consumed: int
    """Bytes of the input the frame took (the 3-byte length included)."""


def parse_server_hello(data: bytes) -> ServerHello | None:
    """Client side: parse the server's first frame. None means "valid so far, read more".

    Raises ``WhatsAppError(BAD_FRAMING)`` for an impossible length and
    ``WhatsAppError(BAD_RESPONSE)`` when the frame is not a HandshakeMessage whose serverHello
    holds a 32-byte ephemeral key (e.g. a clientHello echoed back by a middlebox).
    """
    framed = decode_frame(data)
    if framed is None:
        return None
    frame, consumed = framed
    message = _len_fields(frame, BAD_RESPONSE)
    if _SERVER_HELLO not in message:
        present = sorted(message)
        raise WhatsAppError(BAD_RESPONSE, f"no serverHello in the frame (fields {present})")
    hello = _len_fields(message[_SERVER_HELLO], BAD_RESPONSE)
    ephemeral = hello.get(_EPHEMERAL)
    if ephemeral is None or len(ephemeral) != KEY_LEN:
        got = "none" if ephemeral is None else f"{len(ephemeral)} bytes"
        raise WhatsAppError(BAD_RESPONSE, f"serverHello ephemeral key: {got}, not {KEY_LEN}")
    return ServerHello(
        frame_length=len(frame),
        ephemeral=ephemeral,
        static_length=_length(hello.get(_STATIC)),
        payload_length=_length(hello.get(_PAYLOAD)),
        consumed=consumed,
    )


def _length(value: bytes | None) -> int | None:
    return None if value is None else len(value)


# --- server side --------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ClientPrologue:
    """A client's opening as the server side reads it."""

    routing: bytes | None
    """The edge-routing info, None when the pre-intro was absent."""
    version: tuple[int, int]
    """The two bytes after ``WA``."""
    ephemeral: bytes
    """The client's ephemeral X25519 public key."""
    static_length: int | None
    """Encrypted static key length (IK resumption hellos only), None when absent."""
    payload_length: int | None
    """Encrypted payload length (IK resumption hellos only), None when absent."""
    consumed: int
    """Bytes of the input the prologue and hello took."""


def _expect(data: bytes, offset: int, magic: bytes, what: str) -> bool:
    """True when ``magic`` is at ``offset``, False when the data ends inside a matching prefix
    of it; raises when the bytes differ."""
    got = data[offset : offset + len(magic)]
    if not magic.startswith(got):
        raise WhatsAppError(BAD_PROLOGUE, f"byte {offset}: {got.hex()} where {what} belongs")
    return len(got) == len(magic)


def parse_client_prologue(data: bytes) -> ClientPrologue | None:
    """Server side: parse a client's first bytes. None means "valid so far, read more";
    anything else wrong raises ``WhatsAppError(BAD_PROLOGUE)``."""
    offset = 0
    routing: bytes | None = None
    if data[:1] == EDGE_ROUTING_MAGIC[:1]:
        if not _expect(data, 0, EDGE_ROUTING_MAGIC, "the ED 00 01 pre-intro"):
            return None
        framed = decode_frame(
            data, len(EDGE_ROUTING_MAGIC), max_len=_MAX_ROUTING_LEN, failure=BAD_PROLOGUE
        )
        if framed is None:
            return None
        routing, offset = framed
    if not _expect(data, offset, _CONN_MAGIC, "the WA header"):
        return None
    offset += len(_CONN_MAGIC)
    if len(data) < offset + 2:
        return None
    version = (data[offset], data[offset + 1])
    framed = decode_frame(data, offset + 2, failure=BAD_PROLOGUE)
    if framed is None:
        return None
    frame, consumed = framed
    message = _len_fields(frame, BAD_PROLOGUE)
    if _CLIENT_HELLO not in message:
        raise WhatsAppError(BAD_PROLOGUE, f"no clientHello in the frame (fields {sorted(message)})")
    hello = _len_fields(message[_CLIENT_HELLO], BAD_PROLOGUE)
    ephemeral = hello.get(_EPHEMERAL)
    if ephemeral is None or len(ephemeral) != KEY_LEN:
        got = "none" if ephemeral is None else f"{len(ephemeral)} bytes"
        raise WhatsAppError(BAD_PROLOGUE, f"clientHello ephemeral key: {got}, not {KEY_LEN}")
    return ClientPrologue(
        routing=routing,
        version=version,
        ephemeral=ephemeral,
        static_length=_length(hello.get(_STATIC)),
        payload_length=_length(hello.get(_PAYLOAD)),
        consumed=consumed,
    )


def encode_server_hello(ephemeral: bytes, static: bytes, payload: bytes) -> bytes:
    """``HandshakeMessage{serverHello{ephemeral, static, payload}}``."""
    if len(ephemeral) != KEY_LEN:
        raise ValueError(f"the ephemeral key is {KEY_LEN} bytes, not {len(ephemeral)}")
    hello = _field(_EPHEMERAL, ephemeral) + _field(_STATIC, static) + _field(_PAYLOAD, payload)
    return _field(_SERVER_HELLO, hello)


def build_server_hello(
    *, random_bytes: RandomBytes = os.urandom, payload_len: int | None = None
) -> bytes:
    """Server side: a plausible framed ServerHello for the lab's emulator: a random 32-byte
    ephemeral, a random 48-byte "encrypted static key" and a random "encrypted certificate
    payload" (length drawn from a few hundred bytes unless ``payload_len`` is given). A client
    that tried to finish the handshake would fail to decrypt them, which is as intended: the
    probe stops at the shape."""
    if payload_len is None:
        span = len(_SERVER_PAYLOAD_LEN)
        payload_len = _SERVER_PAYLOAD_LEN.start + int.from_bytes(random_bytes(2), "big") % span
    message = encode_server_hello(
        random_bytes(KEY_LEN), random_bytes(KEY_LEN + _GCM_TAG_LEN), random_bytes(payload_len)
    )
    return encode_frame(message)
