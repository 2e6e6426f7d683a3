"""STUN (RFC 5389) and the unauthenticated TURN Allocate (RFC 5766), sans-IO: the relay probes of
the call path, for both sides (client requests, and the answers a lab emulator gives).

A message is a 20-byte header followed by attributes (RFC 5389 §6, §15)::

    |0 0| message type (14 bits) |  message length (16 bits)  |
    |             magic cookie 0x2112A442 (32 bits)            |
    |              transaction id (96 bits)                    |
    | attribute type (16) | value length (16) | value, padded to 4 bytes | ...

all big-endian. The message type packs a 12-bit method and a 2-bit class (request, indication,
success, error) as RFC 5389 §6 draws it; :func:`split_type` and :func:`message_type` convert.

Beyond the RFCs, WhatsApp's relays speak a STUN dialect (wacrg.org/transport/warp-stun-relay/):
a bare 20-byte header of type 0x0801 is a keep-alive ping and 0x0802 its pong, and the Allocate
carries private attributes 0x4000 (relay token), 0x4024 and 0x4025 whose values we pass through raw.

MESSAGE-INTEGRITY is neither computed nor checked (our probes are unauthenticated); it parses as
a raw attribute like any other. FINGERPRINT is checked whenever present. Decoders raise only
:class:`StunError`, whose ``failure`` is one of the strings below.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from probe.protocols import DecodeError

__all__ = [
    "ALLOCATE",
    "ALLOCATE_ERROR",
    "ALLOCATE_REQUEST",
    "BINDING",
    "BINDING_ERROR",
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "CLASS_ERROR",
    "CLASS_INDICATION",
    "CLASS_REQUEST",
    "CLASS_SUCCESS",
    "ERROR_CODE",
    "FINGERPRINT",
    "FINGERPRINT_XOR",
    "HEADER_LEN",
    "LIFETIME",
    "MAGIC_COOKIE",
    "MAPPED_ADDRESS",
    "MESSAGE_INTEGRITY",
    "NONCE",
    "REALM",
    "REQUESTED_TRANSPORT",
    "SOFTWARE",
    "STUN_BAD_ATTRIBUTE",
    "STUN_BAD_COOKIE",
    "STUN_BAD_FINGERPRINT",
    "STUN_BAD_HEADER",
    "STUN_TXID_MISMATCH",
    "TRANSPORT_UDP",
    "TXID_LEN",
    "UNKNOWN_ATTRIBUTES",
    "USERNAME",
    "WHATSAPP_ATTR_4024",
    "WHATSAPP_ATTR_4025",
    "WHATSAPP_PING",
    "WHATSAPP_PONG",
    "WHATSAPP_TOKEN",
    "XOR_MAPPED_ADDRESS",
    "XOR_RELAYED_ADDRESS",
    "Attribute",
    "ErrorCode",
    "HostPort",
    "StunError",
    "StunMessage",
    "add_fingerprint",
    "address_value",
    "allocate_request",
    "binding_request",
    "binding_success",
    "encode",
    "error_code_value",
    "error_response",
    "is_stun",
    "message_type",
    "parse",
    "split_type",
    "whatsapp_ping",
    "whatsapp_pong",
    "xor_address_value",
]

# Failure strings (records store them; checks pass them on through ProtocolError).
STUN_BAD_HEADER: Final = "stun_bad_header"
"""Too short for a header, a non-zero leading bit pair, or a length field that does not match the
datagram: not a STUN message."""
STUN_BAD_COOKIE: Final = "stun_bad_cookie"
"""The header is shaped right but lacks the magic cookie (e.g. classic RFC 3489 STUN)."""
STUN_BAD_ATTRIBUTE: Final = "stun_bad_attribute"
"""An attribute is truncated, follows FINGERPRINT, or has a value its type cannot hold."""
STUN_BAD_FINGERPRINT: Final = "stun_bad_fingerprint"
"""FINGERPRINT is present but does not match the message: corrupted or rewritten on the way."""
STUN_TXID_MISMATCH: Final = "stun_txid_mismatch"
"""A well-formed message that does not carry the transaction id we sent: not our answer."""

# RFC 5389 §6: the fixed value in bytes 4-8 of every message
MAGIC_COOKIE: Final = 0x2112A442
# RFC 5389 §6: type, length, cookie, transaction id
HEADER_LEN: Final = 20
# RFC 5389 §6: the transaction id is 96 bits
TXID_LEN: Final = 12
# RFC 5389 §15.5: FINGERPRINT is the CRC-32 of the message XOR'ed with 0x5354554e ("STUN")
FINGERPRINT_XOR: Final = 0x5354554E

# RFC 5389 §6: the two class bits, C1 C0
CLASS_REQUEST: Final = 0b00
CLASS_INDICATION: Final = 0b01
CLASS_SUCCESS: Final = 0b10
CLASS_ERROR: Final = 0b11

# RFC 5389 §18.1: method 0x001 is Binding
BINDING: Final = 0x001
# RFC 5766 §13: method 0x003 is Allocate
ALLOCATE: Final = 0x003

# The message types these methods and classes make (RFC 5389 §6 bit layout)
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
BINDING_ERROR: Final = 0x0111
ALLOCATE_REQUEST: Final = 0x0003
ALLOCATE_ERROR: Final = 0x0113
# wacrg.org/transport/warp-stun-relay/: WhatsApp relay keep-alive ping, a bare 20-byte header
WHATSAPP_PING: Final = 0x0801
# wacrg.org/transport/warp-stun-relay/: the relay's pong to it, also a bare header
WHATSAPP_PONG: Final = 0x0802

# RFC 5389 §18.2 attribute types
MAPPED_ADDRESS: Final = 0x0001
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
UNKNOWN_ATTRIBUTES: Final = 0x000A
REALM: Final = 0x0014
NONCE: Final = 0x0015
XOR_MAPPED_ADDRESS: Final = 0x0020
SOFTWARE: Final = 0x8022
FINGERPRINT: Final = 0x8028
# RFC 5766 §14 attribute types
LIFETIME: Final = 0x000D
XOR_RELAYED_ADDRESS: Final = 0x0016
REQUESTED_TRANSPORT: Final = 0x0019
# wacrg.org/transport/warp-stun-relay/: WhatsApp's Allocate attributes (protobuf values; 0x4000
# holds the relay token)
WHATSAPP_TOKEN: Final = 0x4000
WHATSAPP_ATTR_4024: Final = 0x4024
WHATSAPP_ATTR_4025: Final = 0x4025

# RFC 5766 §14.7: REQUESTED-TRANSPORT carries an IANA protocol number; 17 is UDP
TRANSPORT_UDP: Final = 17

# RFC 5389 §15.1: address families of (XOR-)MAPPED-ADDRESS
_FAMILY_IPV4: Final = 0x01
_FAMILY_IPV6: Final = 0x02
# RFC 5389 §15.6: ERROR-CODE classes run from 3 to 6 (codes 300-699), numbers from 0 to 99
_ERROR_CLASSES: Final = range(3, 7)

_HEADER: Final = struct.Struct(">HHI")  # type, length, cookie; the 12-byte txid follows
_ATTR_HEADER: Final = struct.Struct(">HH")
# A value length and the message length are 16-bit fields.
_MAX_LEN: Final = 0xFFFF

_T = TypeVar("_T")

HostPort = tuple[str, int]
"""An address as sockets give it: ``(host, port)``, the host in its compressed text form."""


class StunError(DecodeError):
    """Bytes that are not the STUN expected. ``failure`` is one of this module's failure strings."""


class Attribute(NamedTuple):
    """One attribute as it is on the wire: its type and its value without padding."""

    type: int
    value: bytes


@dataclass(slots=True, frozen=True)
class ErrorCode:
    """An ERROR-CODE attribute (RFC 5389 §15.6)."""

    code: int
    """300-699: the class times 100 plus the number (e.g. 401)."""
    reason: str
    """The reason phrase (e.g. "Unauthorized"); invalid UTF-8 is replaced, not rejected."""


@dataclass(slots=True, frozen=True)
class StunMessage:
    """A parsed STUN message. The decoded attribute fields hold the first occurrence of each type
    (RFC 5389 §15: a receiver need only process the first); all occurrences are in
    ``attributes``."""

    msg_type: int
    """The 14-bit message type as sent (e.g. 0x0101, or WhatsApp's 0x0801)."""
    method: int
    """The 12-bit method encoded in the type (BINDING, ALLOCATE, ...)."""
    message_class: int
    """CLASS_REQUEST, CLASS_INDICATION, CLASS_SUCCESS or CLASS_ERROR."""
    txid: bytes
    """The 12-byte transaction id."""
    attributes: tuple[Attribute, ...]
    """Every attribute in order, FINGERPRINT and MESSAGE-INTEGRITY included, values unpadded."""
    fingerprint: bool
    """A FINGERPRINT was present (and matched: parse raises otherwise)."""
    xor_mapped_address: HostPort | None
    """XOR-MAPPED-ADDRESS: the source address the server saw."""
    mapped_address: HostPort | None
    """MAPPED-ADDRESS: the same, un-XOR'ed, as RFC 3489 servers send it."""
    xor_relayed_address: HostPort | None
    """XOR-RELAYED-ADDRESS: the relayed address of a successful Allocate (RFC 5766 §14.5)."""
    error_code: ErrorCode | None
    realm: str | None
    nonce: bytes | None
    """NONCE as its raw bytes: opaque, and echoed verbatim when a client authenticates."""
    software: str | None
    unknown_attributes: tuple[int, ...] | None
    """UNKNOWN-ATTRIBUTES of a 420 answer: the types the server did not understand."""
    requested_transport: int | None
    """REQUESTED-TRANSPORT's protocol number (17 for UDP), as a server reads an Allocate."""

    def attribute(self, attr_type: int) -> bytes | None:
        """The raw value of the first attribute of ``attr_type``, or None."""
        for attribute in self.attributes:
            if attribute.type == attr_type:
                return attribute.value
        return None

    @property
    def is_success(self) -> bool:
        return self.message_class == CLASS_SUCCESS

    @property
    def is_error(self) -> bool:
        return self.message_class == CLASS_ERROR


# --- message type ---------------------------------------------------------------------------


def message_type(method: int, message_class: int) -> int:
    """The 14-bit type for a method and class, interleaved as RFC 5389 §6 draws it:
    M11-M7 in bits 13-9, C1 in bit 8, M6-M4 in bits 7-5, C0 in bit 4, M3-M0 in bits 3-0."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"a STUN method has 12 bits, {method:#x} does not fit")
    if not 0 <= message_class <= 0b11:
        raise ValueError(f"a STUN class has 2 bits, {message_class} does not fit")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def split_type(msg_type: int) -> tuple[int, int]:
    """``(method, class)`` of a 14-bit message type; the inverse of :func:`message_type`."""
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    message_class = ((msg_type & 0x0100) >> 7) | ((msg_type & 0x0010) >> 4)
    return method, message_class


# --- encoding -------------------------------------------------------------------------------


def _check_txid(txid: bytes) -> None:
    if len(txid) != TXID_LEN:
        raise ValueError(f"a STUN transaction id is {TXID_LEN} bytes, not {len(txid)}")


def _encode_attributes(attributes: Iterable[tuple[int, bytes]]) -> bytes:
    parts = []
    for attr_type, value in attributes:
        if not 0 <= attr_type <= 0xFFFF:
            raise ValueError(f"attribute type {attr_type:#x} does not fit 16 bits")
        if len(value) > _MAX_LEN:
            raise ValueError(f"attribute {attr_type:#06x}: {len(value)} bytes do not fit 16 bits")
        # RFC 5389 §15: values are padded to a multiple of 4; we pad with zeros
        parts.append(_ATTR_HEADER.pack(attr_type, len(value)) + value + b"\x00" * (-len(value) % 4))
    return b"".join(parts)


def _fingerprint(prefix: bytes) -> int:
    # RFC 5389 §15.5: CRC-32 (the one zlib computes) of everything before the attribute
    return zlib.crc32(prefix) ^ FINGERPRINT_XOR


def add_fingerprint(message: bytes) -> bytes:
    """Append FINGERPRINT to an encoded message: the header length grows by the 8 bytes it
    takes first, since the CRC covers the header as it will be sent (RFC 5389 §15.5)."""
    if len(message) < HEADER_LEN or (len(message) - HEADER_LEN) % 4:
        raise ValueError("not an encoded STUN message")
    length = len(message) - HEADER_LEN + 8
    if length > _MAX_LEN:
        raise ValueError(f"a {length}-byte body does not fit the 16-bit length field")
    prefix = message[:2] + length.to_bytes(2, "big") + message[4:]
    return prefix + _ATTR_HEADER.pack(FINGERPRINT, 4) + _fingerprint(prefix).to_bytes(4, "big")


def encode(
    msg_type: int,
    txid: bytes,
    attributes: Iterable[tuple[int, bytes]] = (),
    *,
    fingerprint: bool = False,
) -> bytes:
    """Any STUN message: the header, the attributes in order (zero-padded), then FINGERPRINT if
    asked. Attributes are ``(type, value)`` pairs; an :class:`Attribute` is one."""
    _check_txid(txid)
    if not 0 <= msg_type <= 0x3FFF:
        raise ValueError(f"a STUN message type has 14 bits, {msg_type:#x} does not fit")
    body = _encode_attributes(attributes)
    if len(body) > _MAX_LEN:
        raise ValueError(f"a {len(body)}-byte body does not fit the 16-bit length field")
    message = _HEADER.pack(msg_type, len(body), MAGIC_COOKIE) + txid + body
    return add_fingerprint(message) if fingerprint else message


def _pack_address(address: HostPort) -> tuple[int, bytes, int]:
    host, port = address
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    ip = ipaddress.ip_address(host)
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return family, ip.packed, port


def address_value(address: HostPort) -> bytes:
    """The value of a MAPPED-ADDRESS: zero byte, family, port, address (RFC 5389 §15.1)."""
    family, packed, port = _pack_address(address)
    return bytes((0, family)) + port.to_bytes(2, "big") + packed


def _xor_key(txid: bytes) -> bytes:
    # RFC 5389 §15.2: IPv4 is XOR'ed with the cookie; IPv6 with the cookie and the transaction id
    return MAGIC_COOKIE.to_bytes(4, "big") + txid


def xor_address_value(address: HostPort, txid: bytes) -> bytes:
    """The value of an XOR-MAPPED-ADDRESS (or XOR-RELAYED-ADDRESS) for a message with ``txid``:
    the port XOR'ed with the cookie's top 16 bits, the address with the cookie (and for IPv6 the
    transaction id after it), RFC 5389 §15.2."""
    _check_txid(txid)
    family, packed, port = _pack_address(address)
    xport = port ^ (MAGIC_COOKIE >> 16)
    xaddr = bytes(a ^ k for a, k in zip(packed, _xor_key(txid), strict=False))
    return bytes((0, family)) + xport.to_bytes(2, "big") + xaddr


def error_code_value(code: int, reason: str) -> bytes:
    """The value of an ERROR-CODE: 21 zero bits, the class (3 bits), the number (8 bits), the
    UTF-8 reason phrase (RFC 5389 §15.6)."""
    if code // 100 not in _ERROR_CLASSES:
        raise ValueError(f"error code {code} is not in 300-699")
    reason_bytes = reason.encode()
    # RFC 5389 §15.6: the reason phrase is under 128 characters, at most 763 bytes
    if len(reason_bytes) > 763:
        raise ValueError("the reason phrase is longer than 763 bytes")
    return bytes((0, 0, code // 100, code % 100)) + reason_bytes


def binding_request(txid: bytes, *, software: str | None = None, fingerprint: bool = True) -> bytes:
    """A Binding request, as a client's first packet to a STUN or TURN server (RFC 5389 §7.1)."""
    attributes = [] if software is None else [(SOFTWARE, software.encode())]
    return encode(BINDING_REQUEST, txid, attributes, fingerprint=fingerprint)


def allocate_request(
    txid: bytes,
    *,
    fingerprint: bool = True,
    extra_attributes: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """An unauthenticated Allocate for a UDP relay (RFC 5766 §6.1): REQUESTED-TRANSPORT 17, then
    ``extra_attributes`` as given (WhatsApp's 0x4000 token, 0x4024, 0x4025 go here)."""
    # RFC 5766 §14.7: the protocol byte, then 3 RFFU bytes that must be zero
    transport = (REQUESTED_TRANSPORT, bytes((TRANSPORT_UDP, 0, 0, 0)))
    return encode(ALLOCATE_REQUEST, txid, [transport, *extra_attributes], fingerprint=fingerprint)


def whatsapp_ping(txid: bytes) -> bytes:
    """WhatsApp's relay keep-alive: a bare 20-byte header of type 0x0801, no attributes."""
    return encode(WHATSAPP_PING, txid)


def whatsapp_pong(txid: bytes) -> bytes:
    """The relay's answer to :func:`whatsapp_ping` (same transaction id), for emulators."""
    return encode(WHATSAPP_PONG, txid)


def binding_success(
    txid: bytes, mapped: HostPort, *, software: str | None = None, fingerprint: bool = True
) -> bytes:
    """Server side: a Binding success reporting ``mapped`` in XOR-MAPPED-ADDRESS
    (RFC 5389 §7.3.1)."""
    attributes = [(XOR_MAPPED_ADDRESS, xor_address_value(mapped, txid))]
    if software is not None:
        attributes.append((SOFTWARE, software.encode()))
    return encode(BINDING_SUCCESS, txid, attributes, fingerprint=fingerprint)


def error_response(
    method: int,
    txid: bytes,
    code: int,
    reason: str,
    realm: str | None = None,
    nonce: str | bytes | None = None,
    *,
    unknown_attributes: Iterable[int] = (),
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Server side: an error response to ``method``, e.g. the 401 with REALM and NONCE a TURN
    server gives an unauthenticated Allocate (RFC 5389 §10.2.1), or a 420 with
    UNKNOWN-ATTRIBUTES."""
    attributes = [(ERROR_CODE, error_code_value(code, reason))]
    unknown = list(unknown_attributes)
    if unknown:
        attributes.append((UNKNOWN_ATTRIBUTES, b"".join(t.to_bytes(2, "big") for t in unknown)))
    if realm is not None:
        attributes.append((REALM, realm.encode()))
    if nonce is not None:
        attributes.append((NONCE, nonce.encode() if isinstance(nonce, str) else nonce))
    if software is not None:
        attributes.append((SOFTWARE, software.encode()))
    msg_type = message_type(method, CLASS_ERROR)
    return encode(msg_type, txid, attributes, fingerprint=fingerprint)


# --- decoding -------------------------------------------------------------------------------


def is_stun(data: bytes | bytearray | memoryview) -> bool:
    """A cheap test that ``data`` is one STUN message (RFC 5389 §7.3): long enough, leading bits
    zero, the magic cookie, and a 4-aligned length that matches. Attributes are not looked at."""
    if len(data) < HEADER_LEN:
        return False
    msg_type: int
    length: int
    cookie: int
    msg_type, length, cookie = _HEADER.unpack_from(data)
    return (
        msg_type & 0xC000 == 0
        and cookie == MAGIC_COOKIE
        and length % 4 == 0
        and HEADER_LEN + length == len(data)
    )


def parse(data: bytes | bytearray | memoryview, *, txid: bytes | None = None) -> StunMessage:
    """Parse one datagram as a STUN message. Raises :class:`StunError` (and nothing else) when it
    is not well-formed, when its FINGERPRINT does not match, or, with ``txid`` given, when it
    answers another transaction. Unknown attributes are kept raw, never rejected."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise StunError(STUN_BAD_HEADER, f"{len(data)} bytes: shorter than a STUN header (20)")
    msg_type, length, cookie = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError(STUN_BAD_HEADER, f"type {msg_type:#06x}: the two leading bits are not 0")
    if cookie != MAGIC_COOKIE:
        raise StunError(STUN_BAD_COOKIE, f"cookie {cookie:#010x}, not {MAGIC_COOKIE:#010x}")
    if length % 4:
        raise StunError(STUN_BAD_HEADER, f"length {length} is not a multiple of 4")
    if HEADER_LEN + length != len(data):
        raise StunError(
            STUN_BAD_HEADER, f"length field says {length} bytes, {len(data) - HEADER_LEN} follow"
        )
    got_txid = data[8:HEADER_LEN]
    attributes = _parse_attributes(data)
    fingerprint = bool(attributes) and attributes[-1].type == FINGERPRINT
    if txid is not None and got_txid != txid:
        raise StunError(
            STUN_TXID_MISMATCH, f"transaction id {got_txid.hex()}, we sent {txid.hex()}"
        )
    method, message_class = split_type(msg_type)
    first: dict[int, bytes] = {}
    for attribute in attributes:
        first.setdefault(attribute.type, attribute.value)
    return StunMessage(
        msg_type=msg_type,
        method=method,
        message_class=message_class,
        txid=got_txid,
        attributes=tuple(attributes),
        fingerprint=fingerprint,
        xor_mapped_address=_optional(first, XOR_MAPPED_ADDRESS, _xor_reader(got_txid)),
        mapped_address=_optional(first, MAPPED_ADDRESS, _read_address),
        xor_relayed_address=_optional(first, XOR_RELAYED_ADDRESS, _xor_reader(got_txid)),
        error_code=_optional(first, ERROR_CODE, _read_error_code),
        realm=_optional(first, REALM, _read_text),
        nonce=first.get(NONCE),
        software=_optional(first, SOFTWARE, _read_text),
        unknown_attributes=_optional(first, UNKNOWN_ATTRIBUTES, _read_unknown),
        requested_transport=_optional(first, REQUESTED_TRANSPORT, _read_transport),
    )


def _parse_attributes(data: bytes) -> list[Attribute]:
    attributes: list[Attribute] = []
    offset = HEADER_LEN
    while offset < len(data):
        if attributes and attributes[-1].type == FINGERPRINT:
            # RFC 5389 §15.5: FINGERPRINT is the last attribute when present
            raise StunError(STUN_BAD_ATTRIBUTE, f"attribute at byte {offset} follows FINGERPRINT")
        # Offsets stay 4-aligned and the length is a multiple of 4, so 4 header bytes are there.
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, offset)
        start = offset + _ATTR_HEADER.size
        end = start + attr_len
        if end > len(data):
            raise StunError(
                STUN_BAD_ATTRIBUTE,
                f"attribute {attr_type:#06x} at byte {offset} needs {attr_len} bytes, "
                f"{len(data) - start} remain",
            )
        value = data[start:end]
        if attr_type == FINGERPRINT:
            if attr_len != 4:
                raise StunError(STUN_BAD_ATTRIBUTE, f"FINGERPRINT of {attr_len} bytes, not 4")
            expected = _fingerprint(data[:offset])
            got = int.from_bytes(value, "big")
            if got != expected:
                raise StunError(
                    STUN_BAD_FINGERPRINT,
                    f"FINGERPRINT {got:#010x}, the message gives {expected:#010x}",
                )
        attributes.append(Attribute(attr_type, value))
        # The padding ends on a 4-byte boundary, which the aligned length keeps inside the data.
        offset = end + (-attr_len % 4)
    return attributes


def _optional(first: dict[int, bytes], attr_type: int, read: Callable[[bytes], _T]) -> _T | None:
    """Decode the first ``attr_type`` attribute with ``read``, if there is one."""
    value = first.get(attr_type)
    if value is None:
        return None
    try:
        return read(value)
    except ValueError as exc:  # the readers raise ValueError; say which attribute failed
        raise StunError(STUN_BAD_ATTRIBUTE, f"attribute {attr_type:#06x}: {exc}") from exc


def _split_address(value: bytes) -> tuple[int, bytes]:
    """(XOR-)MAPPED-ADDRESS as on the wire: a byte receivers ignore, the family, the port, the
    address (RFC 5389 §15.1). Returns the port and address fields, still XOR'ed if they were."""
    if len(value) < 4:
        raise ValueError(f"{len(value)} bytes: too short for an address")
    family = value[1]
    sizes = {_FAMILY_IPV4: 4, _FAMILY_IPV6: 16}
    if family not in sizes:
        raise ValueError(f"unknown address family {family:#04x}")
    if len(value) != 4 + sizes[family]:
        raise ValueError(f"{len(value)} bytes for a family {family} address")
    return int.from_bytes(value[2:4], "big"), value[4:]


def _host(packed: bytes) -> str:
    return str(ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed))


def _read_address(value: bytes) -> HostPort:
    port, packed = _split_address(value)
    return _host(packed), port


def _xor_reader(txid: bytes) -> Callable[[bytes], HostPort]:
    """A reader of XOR'ed addresses in the message with ``txid`` (RFC 5389 §15.2)."""
    key = _xor_key(txid)

    def read(value: bytes) -> HostPort:
        xport, xaddr = _split_address(value)
        packed = bytes(a ^ k for a, k in zip(xaddr, key, strict=False))
        return _host(packed), xport ^ (MAGIC_COOKIE >> 16)

    return read


def _read_text(value: bytes) -> str:
    # Lenient on purpose: a server that answers with odd bytes in REALM or SOFTWARE has still
    # answered, and that answer is what a probe records.
    return value.decode("utf-8", errors="replace")


def _read_error_code(value: bytes) -> ErrorCode:
    if len(value) < 4:
        raise ValueError(f"{len(value)} bytes: too short for ERROR-CODE")
    error_class, number = value[2] & 0x07, value[3]
    if error_class not in _ERROR_CLASSES or number > 99:
        raise ValueError(f"class {error_class} number {number} is no error code (300-699)")
    return ErrorCode(error_class * 100 + number, _read_text(value[4:]))


def _read_unknown(value: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise ValueError(f"{len(value)} bytes: UNKNOWN-ATTRIBUTES lists 16-bit types")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def _read_transport(value: bytes) -> int:
    if len(value) != 4:
        raise ValueError(f"{len(value)} bytes: REQUESTED-TRANSPORT is 4")
    return value[0]
