"""RTP (RFC 3550) with RFC 8285 header extensions, sans-IO: the media packets a call-shaped flow
sends once the relay answered, and their parse on the echo side.

The fixed header (RFC 3550 §5.1), big-endian::

    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers (CC x 4)    |
    | profile (16)                  | extension length in words (16)|  <- if X (RFC 3550 §5.3.1)
    | extension data ...                                            |
    | payload ...                         | padding ... | pad count |  <- padding if P

WhatsApp's media is RTP v2 with the extension bit set, so its first byte is 0x90, with payload
type 120 (METHOD.md; wacrg.org/transport/warp-stun-relay/). :func:`build_rtp` writes the
extension in RFC 8285's one-byte form (profile 0xBEDE); :func:`parse_rtp` reads elements of that
form and keeps any other profile's data raw (WhatsApp's own WARP profile, 0xDEBE per wacrg.org,
among them).

Decoders raise only :class:`RtpError`, whose ``failure`` is one of the strings below.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from probe.protocols import DecodeError

__all__ = [
    "HEADER_LEN",
    "ONE_BYTE_PROFILE",
    "RTP_BAD_EXTENSION",
    "RTP_BAD_HEADER",
    "RTP_BAD_PADDING",
    "RTP_VERSION",
    "VOICE_INTERVAL",
    "VOICE_SIZE_MAX",
    "VOICE_SIZE_MIN",
    "WHATSAPP_PAYLOAD_TYPE",
    "RtpError",
    "RtpPacket",
    "build_rtp",
    "parse_rtp",
    "voice_packet_sizes",
]

# Failure strings (records store them; checks pass them on through ProtocolError).
RTP_BAD_HEADER: Final = "rtp_bad_header"
"""Shorter than the fixed header and its CSRCs, or not version 2."""
RTP_BAD_EXTENSION: Final = "rtp_bad_extension"
"""The X bit is set but the extension is truncated, or a one-byte element overruns it."""
RTP_BAD_PADDING: Final = "rtp_bad_padding"
"""The P bit is set but the padding count is zero or larger than what follows the header."""

# RFC 3550 §5.1: V=2
RTP_VERSION: Final = 2
# RFC 3550 §5.1: the fixed header up to and including the SSRC
HEADER_LEN: Final = 12
# RFC 8285 §4.2: the "defined by profile" field of the one-byte header form
ONE_BYTE_PROFILE: Final = 0xBEDE
# METHOD.md "Wire facts"; wacrg.org/transport/warp-stun-relay/: WhatsApp audio payload type
WHATSAPP_PAYLOAD_TYPE: Final = 120
# METHOD.md "Wire facts": WhatsApp voice packets carry 90-170 bytes
VOICE_SIZE_MIN: Final = 90
VOICE_SIZE_MAX: Final = 170
# METHOD.md "Wire facts": one packet every 60 ms
VOICE_INTERVAL: Final = 0.060

# RFC 8285 §4.2: element ids 1-14; 15 ends processing; the length nibble is the size minus 1
_MAX_ELEMENT_ID: Final = 14
_STOP_ID: Final = 15
_MAX_ELEMENT_LEN: Final = 16

_FIXED: Final = struct.Struct(">BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXTENSION_HEADER: Final = struct.Struct(">HH")  # profile, length in 32-bit words


class RtpError(DecodeError):
    """Bytes that are not the RTP expected. ``failure`` is one of this module's failure strings."""


@dataclass(slots=True, frozen=True)
class RtpPacket:
    """A parsed RTP packet."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    """The payload, padding removed."""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    """The extension's "defined by profile" field, or None when the X bit is clear."""
    extension_data: bytes = b""
    """The extension's data as sent (whole 32-bit words), whatever the profile."""
    extensions: tuple[tuple[int, bytes], ...] = ()
    """``(id, data)`` of each RFC 8285 one-byte element (profile 0xBEDE only)."""
    padding: int = 0
    """How many padding bytes followed the payload (the P bit; RFC 3550 §5.1)."""

    @property
    def first_byte(self) -> int:
        """V, P, X and CC as on the wire: 0x90 for version 2 with an extension and no CSRCs."""
        return (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension_profile is not None else 0)
            | len(self.csrcs)
        )


def _encode_one_byte_elements(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    parts = []
    for element_id, data in extensions:
        if not 1 <= element_id <= _MAX_ELEMENT_ID:
            raise ValueError(f"one-byte extension ids are 1-14, not {element_id}")
        if not 1 <= len(data) <= _MAX_ELEMENT_LEN:
            raise ValueError(f"one-byte extension elements hold 1-16 bytes, not {len(data)}")
        parts.append(bytes(((element_id << 4) | (len(data) - 1),)) + data)
    block = b"".join(parts)
    # RFC 8285 §4 (and RFC 3550 §5.3.1): zero bytes pad the block to whole 32-bit words
    return block + b"\x00" * (-len(block) % 4)


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: Sequence[int] = (),
    extensions: Sequence[tuple[int, bytes]] | None = (),
    padding: int = 0,
) -> bytes:
    """An RTP v2 packet. ``extensions`` are RFC 8285 one-byte elements ``(id 1-14, 1-16 bytes)``
    under profile 0xBEDE; the default, an empty list, still sets the X bit with an empty
    extension (first byte 0x90, like WhatsApp's media), and None leaves the extension out.
    ``padding`` adds that many bytes (the last one the count) and sets the P bit."""
    if not 0 <= payload_type <= 0x7F:
        raise ValueError(f"payload type {payload_type} does not fit 7 bits")
    if not 0 <= sequence <= 0xFFFF:
        raise ValueError(f"sequence {sequence} does not fit 16 bits")
    if not (0 <= timestamp <= 0xFFFF_FFFF and 0 <= ssrc <= 0xFFFF_FFFF):
        raise ValueError("timestamp and SSRC are 32-bit")
    if len(csrcs) > 15 or not all(0 <= c <= 0xFFFF_FFFF for c in csrcs):
        raise ValueError("at most 15 CSRCs, each 32-bit")
    if not 0 <= padding <= 0xFF:
        raise ValueError(f"padding of {padding} bytes: the count is one byte")
    first = (RTP_VERSION << 6) | (0x20 if padding else 0) | len(csrcs)
    parts = []
    if extensions is not None:
        first |= 0x10
        block = _encode_one_byte_elements(extensions)
        parts.append(_EXTENSION_HEADER.pack(ONE_BYTE_PROFILE, len(block) // 4) + block)
    header = _FIXED.pack(
        first, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc
    ) + b"".join(c.to_bytes(4, "big") for c in csrcs)
    tail = b"\x00" * (padding - 1) + bytes((padding,)) if padding else b""
    return header + b"".join(parts) + payload + tail


def _parse_one_byte_elements(block: bytes) -> tuple[tuple[int, bytes], ...]:
    elements = []
    offset = 0
    while offset < len(block):
        byte = block[offset]
        element_id, size = byte >> 4, (byte & 0x0F) + 1
        if element_id == 0:
            # RFC 8285 §4: padding bytes are 0 and may sit between elements; a byte with id 0
            # is skipped alone, whatever its length nibble, so no element hides behind it
            offset += 1
            continue
        if element_id == _STOP_ID:
            # RFC 8285 §4.2: id 15 ends processing; only the elements before it count
            break
        if offset + 1 + size > len(block):
            raise RtpError(
                RTP_BAD_EXTENSION,
                f"element {element_id} at byte {offset} needs {size} bytes, "
                f"{len(block) - offset - 1} remain",
            )
        elements.append((element_id, block[offset + 1 : offset + 1 + size]))
        offset += 1 + size
    return tuple(elements)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one datagram as an RTP v2 packet. Raises :class:`RtpError` and nothing else."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise RtpError(RTP_BAD_HEADER, f"{len(data)} bytes: shorter than an RTP header (12)")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(RTP_BAD_HEADER, f"version {version}, not 2")
    count = first & 0x0F
    offset = HEADER_LEN + 4 * count
    if offset > len(data):
        raise RtpError(RTP_BAD_HEADER, f"{count} CSRCs announced, the packet ends before them")
    csrcs = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(HEADER_LEN, offset, 4))
    profile: int | None = None
    extension_data = b""
    extensions: tuple[tuple[int, bytes], ...] = ()
    if first & 0x10:
        if offset + _EXTENSION_HEADER.size > len(data):
            raise RtpError(RTP_BAD_EXTENSION, "X bit set, the packet ends before the extension")
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        start = offset + _EXTENSION_HEADER.size
        offset = start + 4 * words
        if offset > len(data):
            raise RtpError(
                RTP_BAD_EXTENSION,
                f"extension of {4 * words} bytes, {len(data) - start} remain",
            )
        extension_data = data[start:offset]
        if profile == ONE_BYTE_PROFILE:
            extensions = _parse_one_byte_elements(extension_data)
    end = len(data)
    padding = 0
    if first & 0x20:
        # RFC 3550 §5.1: the last byte counts the padding bytes, itself included
        padding = data[-1] if end > offset else 0
        if padding == 0 or padding > end - offset:
            raise RtpError(
                RTP_BAD_PADDING, f"padding count {padding}, {end - offset} bytes after the header"
            )
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=data[offset:end],
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension_profile=profile,
        extension_data=extension_data,
        extensions=extensions,
        padding=padding,
    )


def voice_packet_sizes(rng: random.Random, n: int) -> list[int]:
    """``n`` UDP payload sizes drawn uniformly from 90-170 bytes inclusive, the spread of
    WhatsApp voice packets (METHOD.md). The caller's ``rng`` makes runs reproducible."""
    if n < 0:
        raise ValueError(f"cannot draw {n} sizes")
    return [rng.randint(VOICE_SIZE_MIN, VOICE_SIZE_MAX) for _ in range(n)]
