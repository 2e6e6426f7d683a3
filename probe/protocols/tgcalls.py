"""Telegram call reflectors (UDP 596-599), sans-IO: the hello a client sends until a reflector
answers, the answer, and the data packets that carry a call through the reflector.

There is no written specification; the layout is read from Telegram's own client code:

- tgcalls ``tgcalls/v2/ReflectorPort.cpp`` (github.com/TelegramMessenger/tgcalls), the reflector
  transport of current clients: ``ReflectorPort::ReflectorPort`` builds the 16-byte tag,
  ``SendReflectorHello`` the hello, ``SendTo`` a data packet, ``HandleIncomingPacket`` reads
  what comes back;
- libtgvoip (github.com/telegramdesktop/libtgvoip), the older VoIP library, for the reflector's
  answer: ``VoIPController::SendUdpPing`` sends the same request shape,
  ``VoIPController::ProcessIncomingPacket`` reads the reply, and the ``UdpReflectorSelfInfo``
  struct in ``tests/MockReflector.cpp`` is the reply a reflector builds.

A hello is 40 bytes::

    call tag[0:12] | sender tag (4 random, non-zero) | FF x 12 | FE FF FF FF | query id (8)

tgcalls writes the query id, 123, with WebRTC's ``rtc::ByteBufferWriter::WriteUInt64``, which is
network byte order (``rtc_base/byte_buffer.h``): ``00 00 00 00 00 00 00 7B``. (libtgvoip wrote a
random id little-endian; reflectors echo the 8 bytes without reading them.) ``FE FF FF FF`` is the
int32 -2 little-endian, the "self info" request of libtgvoip's ``SendUdpPing``.

The reflector answers with a "special" packet, marked by 12 bytes of FF after the tag; the
self-info answer is 64 bytes, all little-endian as libtgvoip reads it::

    tag (16, echoed) | FF x 12 | 0xC01572C7 | date (int32) | query id (8, echoed) |
    our address as IPv6 (16; IPv4 mapped as ::ffff:a.b.c.d) | our port (int32)

tgcalls itself counts any packet of 16 bytes or more whose first 12 bytes match the call tag as
"the reflector is there"; :func:`parse_reply` reports what it can read beyond that.

A data packet is the 16-byte tag (the call tag's first 12 bytes and the recipient's 4-byte tag),
the sender's 4-byte tag, the payload length (uint32, big-endian), the payload, and zero padding
to a multiple of 4.

Decoders raise only :class:`ReflectorError`, whose ``failure`` is one of the strings below.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from probe.protocols import DecodeError

__all__ = [
    "DATA_HEADER_LEN",
    "HELLO_LEN",
    "HELLO_QUERY_ID",
    "PEER_TAG_LEN",
    "REFLECTOR_BAD_HELLO",
    "REFLECTOR_BAD_PACKET",
    "REFLECTOR_BAD_REPLY",
    "REFLECTOR_TAG_MISMATCH",
    "SELF_INFO_LEN",
    "SELF_INFO_REQUEST",
    "SENDER_TAG_LEN",
    "SPECIAL_MARK",
    "TAG_PREFIX_LEN",
    "TLID_UDP_REFLECTOR_SELF_INFO",
    "DataPacket",
    "Hello",
    "ReflectorError",
    "ReflectorReply",
    "SelfInfo",
    "build_data",
    "build_hello",
    "build_self_info",
    "parse_data",
    "parse_hello",
    "parse_reply",
]

# Failure strings (records store them; checks pass them on through ProtocolError).
REFLECTOR_BAD_REPLY: Final = "reflector_bad_reply"
"""An answer too short to carry a tag, or a special packet too short for what it announces."""
REFLECTOR_TAG_MISMATCH: Final = "reflector_tag_mismatch"
"""An answer whose first 12 bytes are not our call tag: tgcalls would drop it."""
REFLECTOR_BAD_HELLO: Final = "reflector_bad_hello"
"""Server side: 40 bytes that are not a reflector hello."""
REFLECTOR_BAD_PACKET: Final = "reflector_bad_packet"
"""Not a data packet: too short, a special packet, or a length beyond the datagram."""

# tgcalls v2/ReflectorPort.cpp PrepareAddress: allocation needs a 16-byte peer tag
PEER_TAG_LEN: Final = 16
# tgcalls v2/ReflectorPort.cpp ReflectorPort(): the call tag's first size - 4 bytes are kept, and
# HandleIncomingPacket compares 16 - 4 bytes
TAG_PREFIX_LEN: Final = 12
# tgcalls v2/ReflectorPort.cpp: randomTag_ is a uint32, copied into packets as 4 raw bytes
SENDER_TAG_LEN: Final = 4
# tgcalls v2/ReflectorPort.cpp SendReflectorHello: 12 x 0xff; HandleIncomingPacket: isSpecialPacket
SPECIAL_MARK: Final = b"\xff" * 12
# tgcalls v2/ReflectorPort.cpp SendReflectorHello: 0xfe, 0xff x 3; libtgvoip SendUdpPing: the
# same bytes as WriteInt32(-2)
SELF_INFO_REQUEST: Final = b"\xfe\xff\xff\xff"
# tgcalls v2/ReflectorPort.cpp SendReflectorHello: bufferWriter.WriteUInt64(123)
HELLO_QUERY_ID: Final = 123
# tag 16 + mark 12 + request 4 + query id 8 (tgcalls pads to 4, which 40 already is)
HELLO_LEN: Final = 40
# tgcalls v2/ReflectorPort.cpp SendTo: tag 16, sender tag 4, WriteUInt32(size)
DATA_HEADER_LEN: Final = 24
# libtgvoip VoIPController.cpp (and its PrivateDefines): TLID_UDP_REFLECTOR_SELF_INFO
TLID_UDP_REFLECTOR_SELF_INFO: Final = 0xC01572C7
# libtgvoip tests/MockReflector.cpp, packed struct UdpReflectorSelfInfo: 16+12+4+4+8+8+4+4+4
SELF_INFO_LEN: Final = 64

# After the tag and mark of a self-info: TL id, date, query id (raw 8), address (16), port;
# libtgvoip reads them with its little-endian BufferInputStream
_SELF_INFO_BODY: Final = struct.Struct("<Ii8s16si")
_QUERY_ID: Final = struct.Struct(">Q")  # as tgcalls writes it (network order)
_LENGTH: Final = struct.Struct(">I")  # tgcalls SendTo WriteUInt32; HandleIncomingPacket be32toh
_SPECIAL_END: Final = PEER_TAG_LEN + len(SPECIAL_MARK)


class ReflectorError(DecodeError):
    """Bytes that are not the reflector framing expected. ``failure`` is one of this module's
    failure strings."""


@dataclass(slots=True, frozen=True)
class Hello:
    """A reflector hello, as a reflector (or our emulator) reads it."""

    peer_tag: bytes
    """The 16 bytes it starts with: the call tag's first 12, then the sender's tag."""
    query_id: int
    """The 8-byte query id read big-endian, as tgcalls writes it (123)."""

    @property
    def tag_prefix(self) -> bytes:
        return self.peer_tag[:TAG_PREFIX_LEN]

    @property
    def sender_tag(self) -> bytes:
        return self.peer_tag[TAG_PREFIX_LEN:]


@dataclass(slots=True, frozen=True)
class SelfInfo:
    """A reflector's self-info answer: what it saw of us."""

    date: int
    """The reflector's clock, Unix seconds."""
    query_id: int
    """The echoed query id, read big-endian like the hello's."""
    address: str
    """Our address as the reflector saw it; IPv4 when it was sent IPv4-mapped."""
    port: int
    """Our source port as the reflector saw it."""


@dataclass(slots=True, frozen=True)
class ReflectorReply:
    """What a reflector sent back to a hello."""

    peer_tag: bytes
    """The first 16 bytes: the call tag's 12, then the 4 bytes the reflector put there."""
    special: bool
    """Marked by 12 bytes of FF after the tag: a reflector's own message, not relayed data."""
    tlid: int | None
    """The TL constructor of a special packet (TLID_UDP_REFLECTOR_SELF_INFO for the answer to a
    hello); None for relayed data."""
    self_info: SelfInfo | None
    """The self-info fields, when ``tlid`` says that is what came."""


@dataclass(slots=True, frozen=True)
class DataPacket:
    """A data packet through a reflector."""

    peer_tag: bytes
    """16 bytes: the call tag's first 12, then the recipient's tag."""
    sender_tag: bytes
    """The sender's 4-byte tag."""
    payload: bytes


def _check_tags(peer_tag: bytes, sender_tag: bytes) -> None:
    if len(peer_tag) != PEER_TAG_LEN:
        raise ValueError(f"a peer tag is {PEER_TAG_LEN} bytes, not {len(peer_tag)}")
    if len(sender_tag) != SENDER_TAG_LEN:
        raise ValueError(f"a sender tag is {SENDER_TAG_LEN} bytes, not {len(sender_tag)}")
    # tgcalls draws its tag until it is non-zero: 0 means "no tag" in its candidate names
    if sender_tag == bytes(SENDER_TAG_LEN):
        raise ValueError("the sender tag must not be zero")


def build_hello(peer_tag: bytes, sender_tag: bytes, *, query_id: int = HELLO_QUERY_ID) -> bytes:
    """The 40-byte hello: the call's 16-byte ``peer_tag`` keeps its first 12 bytes and ends in
    our 4 random ``sender_tag`` bytes instead, then the self-info request and ``query_id``."""
    _check_tags(peer_tag, sender_tag)
    if not 0 <= query_id < 1 << 64:
        raise ValueError(f"query id {query_id} does not fit 64 bits")
    return b"".join(
        (
            peer_tag[:TAG_PREFIX_LEN],
            sender_tag,
            SPECIAL_MARK,
            SELF_INFO_REQUEST,
            _QUERY_ID.pack(query_id),
        )
    )


def parse_hello(data: bytes | bytearray | memoryview) -> Hello:
    """Server side: read a hello. Raises ``ReflectorError(REFLECTOR_BAD_HELLO)``."""
    data = bytes(data)
    if len(data) != HELLO_LEN:
        raise ReflectorError(REFLECTOR_BAD_HELLO, f"{len(data)} bytes, a hello is {HELLO_LEN}")
    if data[PEER_TAG_LEN:_SPECIAL_END] != SPECIAL_MARK:
        raise ReflectorError(REFLECTOR_BAD_HELLO, "bytes 16-28 are not the 12 x FF mark")
    if data[_SPECIAL_END : _SPECIAL_END + 4] != SELF_INFO_REQUEST:
        raise ReflectorError(REFLECTOR_BAD_HELLO, "bytes 28-32 are not the self-info request")
    (query_id,) = _QUERY_ID.unpack_from(data, _SPECIAL_END + 4)
    return Hello(data[:PEER_TAG_LEN], query_id)


def build_self_info(peer_tag: bytes, *, query_id: int, date: int, address: str, port: int) -> bytes:
    """Server side: the 64-byte answer to a hello, echoing its 16-byte ``peer_tag`` and
    ``query_id``, reporting the ``address``/``port`` the hello came from and the ``date``."""
    if len(peer_tag) != PEER_TAG_LEN:
        raise ValueError(f"a peer tag is {PEER_TAG_LEN} bytes, not {len(peer_tag)}")
    ip = ipaddress.ip_address(address)
    # libtgvoip MockReflector: 8 zero bytes, 0xFFFF0000 (bytes 00 00 FF FF), then the IPv4
    # address in network order: the IPv4-mapped IPv6 address
    packed = (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip).packed
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    if not -(1 << 31) <= date < 1 << 31:
        raise ValueError(f"date {date} does not fit an int32")
    if not 0 <= query_id < 1 << 64:
        raise ValueError(f"query id {query_id} does not fit 64 bits")
    body = _SELF_INFO_BODY.pack(
        TLID_UDP_REFLECTOR_SELF_INFO, date, _QUERY_ID.pack(query_id), packed, port
    )
    return peer_tag + SPECIAL_MARK + body


def parse_reply(
    data: bytes | bytearray | memoryview, *, peer_tag: bytes | None = None
) -> ReflectorReply:
    """Client side: read what came back from a reflector. With ``peer_tag`` (the call's 16-byte
    tag) given, a packet not starting with its first 12 bytes raises REFLECTOR_TAG_MISMATCH;
    a packet under 16 bytes, or a special packet too short for its TL id or its self-info,
    REFLECTOR_BAD_REPLY. Relayed data (no FF mark) parses with ``special`` False."""
    data = bytes(data)
    # tgcalls HandleIncomingPacket: "The message must be at least 16 bytes (peer tag)."
    if len(data) < PEER_TAG_LEN:
        raise ReflectorError(REFLECTOR_BAD_REPLY, f"{len(data)} bytes: shorter than a peer tag")
    if peer_tag is not None and data[:TAG_PREFIX_LEN] != peer_tag[:TAG_PREFIX_LEN]:
        raise ReflectorError(
            REFLECTOR_TAG_MISMATCH,
            f"tag {data[:TAG_PREFIX_LEN].hex()}, ours is {peer_tag[:TAG_PREFIX_LEN].hex()}",
        )
    tag = data[:PEER_TAG_LEN]
    if data[PEER_TAG_LEN:_SPECIAL_END] != SPECIAL_MARK:
        return ReflectorReply(tag, special=False, tlid=None, self_info=None)
    if len(data) < _SPECIAL_END + 4:
        raise ReflectorError(REFLECTOR_BAD_REPLY, f"{len(data)}-byte special packet: no TL id")
    tlid = int.from_bytes(data[_SPECIAL_END : _SPECIAL_END + 4], "little")
    if tlid != TLID_UDP_REFLECTOR_SELF_INFO:
        return ReflectorReply(tag, special=True, tlid=tlid, self_info=None)
    if len(data) < SELF_INFO_LEN:
        raise ReflectorError(
            REFLECTOR_BAD_REPLY, f"{len(data)}-byte self-info, it takes {SELF_INFO_LEN}"
        )
    _, date, raw_query_id, packed, port = _SELF_INFO_BODY.unpack_from(data, _SPECIAL_END)
    ip = ipaddress.IPv6Address(packed)
    address = str(ip.ipv4_mapped or ip)
    (query_id,) = _QUERY_ID.unpack(raw_query_id)
    # libtgvoip reads the port as an int32; anything outside 0-65535 is no port
    if not 0 <= port <= 0xFFFF:
        raise ReflectorError(REFLECTOR_BAD_REPLY, f"self-info port {port} out of range")
    return ReflectorReply(tag, True, tlid, SelfInfo(date, query_id, address, port))


def build_data(peer_tag: bytes, sender_tag: bytes, payload: bytes) -> bytes:
    """A data packet for the peer whose tag ends ``peer_tag``, from ``sender_tag``."""
    _check_tags(peer_tag, sender_tag)
    if len(payload) > 0xFFFF_FFFF:
        raise ValueError("the payload does not fit a 32-bit length")
    body = peer_tag + sender_tag + _LENGTH.pack(len(payload)) + payload
    return body + b"\x00" * (-len(body) % 4)  # tgcalls SendTo: "while (Length() % 4 != 0)"


def parse_data(data: bytes | bytearray | memoryview) -> DataPacket:
    """Read a data packet. Bytes after the payload (the padding) are ignored, as tgcalls does.
    Raises ``ReflectorError(REFLECTOR_BAD_PACKET)``."""
    data = bytes(data)
    if len(data) < DATA_HEADER_LEN:
        raise ReflectorError(
            REFLECTOR_BAD_PACKET, f"{len(data)} bytes: shorter than a data header (24)"
        )
    if data[PEER_TAG_LEN:_SPECIAL_END] == SPECIAL_MARK:
        # tgcalls HandleIncomingPacket: 12 x FF after the tag is a reflector's special packet
        raise ReflectorError(REFLECTOR_BAD_PACKET, "a special packet (12 x FF), not data")
    (length,) = _LENGTH.unpack_from(data, PEER_TAG_LEN + SENDER_TAG_LEN)
    if length > len(data) - DATA_HEADER_LEN:
        raise ReflectorError(
            REFLECTOR_BAD_PACKET,
            f"length {length} but {len(data) - DATA_HEADER_LEN} bytes follow the header",
        )
    return DataPacket(
        data[:PEER_TAG_LEN],
        data[PEER_TAG_LEN : PEER_TAG_LEN + SENDER_TAG_LEN],
        data[DATA_HEADER_LEN : DATA_HEADER_LEN + length],
    )
