"""The RTP core (probe.protocols.rtp): hand-built vectors, round trips, each failure string,
fuzzing of the decoder, and the voice-size helper.

The vectors were assembled by hand from the header drawings of RFC 3550 §5.1 and §5.3.1 and of
RFC 8285 §4.2 (the one-byte form), field by field as commented, not produced by our encoder.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.protocols import DecodeError, rtp
from probe.protocols.rtp import (
    ONE_BYTE_PROFILE,
    RTP_BAD_EXTENSION,
    RTP_BAD_HEADER,
    RTP_BAD_PADDING,
    VOICE_SIZE_MAX,
    VOICE_SIZE_MIN,
    WHATSAPP_PAYLOAD_TYPE,
    RtpError,
    RtpPacket,
    build_rtp,
    parse_rtp,
    voice_packet_sizes,
)
from tests import fuzzing

T = TypeVar("T")
RTP_FAILURES = {RTP_BAD_EXTENSION, RTP_BAD_HEADER, RTP_BAD_PADDING}

# A WhatsApp-shaped voice packet with one one-byte extension element.
VOICE = bytes.fromhex(
    "90"  # V=2, P=0, X=1, CC=0 (RFC 3550 §5.1): the 0x90 of METHOD.md
    "78"  # M=0, PT=120
    "1234"  # sequence number
    "deadbeef"  # timestamp
    "01020304"  # SSRC
    "bede" "0001"  # RFC 8285 §4.2: profile 0xBEDE, length 1 word
    "10" "7f" "0000"  # element ID=1 L=0 (1 byte: 0x7f), then 2 padding bytes
    "010203"  # payload
)  # fmt: skip
VOICE_FIELDS = RtpPacket(
    payload_type=120,
    sequence=0x1234,
    timestamp=0xDEADBEEF,
    ssrc=0x01020304,
    payload=b"\x01\x02\x03",
    extension_profile=ONE_BYTE_PROFILE,
    extension_data=bytes.fromhex("107f0000"),
    extensions=((1, b"\x7f"),),
)

# The RFC 8285 §4.2 example's shape (ID L=0, ID L=1, two padding bytes, ID L=3) with ids 1-3,
# plus a marker bit, two CSRCs and 3 bytes of RTP padding.
MIXED = bytes.fromhex(
    "b2"  # V=2, P=1, X=1, CC=2
    "e0"  # M=1, PT=96
    "ffff" "00000000" "cafebabe"  # sequence, timestamp, SSRC
    "00000011" "00000022"  # the two CSRCs
    "bede" "0003"  # profile 0xBEDE, 3 words
    "10" "aa"  # ID=1 L=0: 1 byte
    "21" "bbbb"  # ID=2 L=1: 2 bytes
    "0000"  # padding between elements
    "33" "cccccccc"  # ID=3 L=3: 4 bytes
    "5a5a"  # payload
    "000003"  # RTP padding: 3 bytes, the last one the count
)  # fmt: skip


def test_voice_vector_parses() -> None:
    packet = parse_rtp(VOICE)
    assert packet == VOICE_FIELDS
    assert packet.first_byte == VOICE[0] == 0x90


def test_voice_vector_builds() -> None:
    built = build_rtp(
        WHATSAPP_PAYLOAD_TYPE,
        0x1234,
        0xDEADBEEF,
        0x01020304,
        b"\x01\x02\x03",
        extensions=[(1, b"\x7f")],
    )
    assert built == VOICE


def test_mixed_vector_parses() -> None:
    packet = parse_rtp(MIXED)
    assert packet.marker
    assert packet.payload_type == 96
    assert (packet.sequence, packet.timestamp, packet.ssrc) == (0xFFFF, 0, 0xCAFEBABE)
    assert packet.csrcs == (0x11, 0x22)
    assert packet.extensions == ((1, b"\xaa"), (2, b"\xbb\xbb"), (3, b"\xcc" * 4))
    assert packet.payload == b"\x5a\x5a"
    assert packet.padding == 3
    assert packet.first_byte == 0xB2


def test_mixed_round_trips_through_the_encoder() -> None:
    packet = parse_rtp(MIXED)
    rebuilt = build_rtp(
        packet.payload_type,
        packet.sequence,
        packet.timestamp,
        packet.ssrc,
        packet.payload,
        marker=packet.marker,
        csrcs=packet.csrcs,
        extensions=packet.extensions,
        padding=packet.padding,
    )
    # Our encoder puts no padding between elements, so the bytes differ; the parse does not.
    assert parse_rtp(rebuilt) == dataclasses.replace(
        packet, extension_data=bytes.fromhex("10aa21bbbb33cccccccc0000")
    )


def test_empty_extension_and_no_extension() -> None:
    empty = build_rtp(120, 1, 2, 3, b"x")
    assert empty[:1] == b"\x90"
    assert empty[12:16] == bytes.fromhex("bede0000")
    assert parse_rtp(empty).extension_profile == ONE_BYTE_PROFILE
    plain = build_rtp(111, 1, 2, 3, b"x", extensions=None)
    assert plain == bytes.fromhex("806f0001000000020000000378")
    assert parse_rtp(plain).extension_profile is None


def test_other_profiles_are_kept_raw() -> None:
    """WhatsApp's WARP profile 0xDEBE (wacrg.org) and RFC 8285's two-byte form 0x1000 are not
    read element by element, but their data is kept."""
    for profile in ("debe", "1000"):
        data = bytes.fromhex("9078 0001 00000002 00000003" + profile + "0001 01020304 ff")
        packet = parse_rtp(data)
        assert packet.extension_profile == int(profile, 16)
        assert packet.extension_data == bytes.fromhex("01020304")
        assert packet.extensions == ()
        assert packet.payload == b"\xff"


def test_id_15_ends_the_elements() -> None:
    """RFC 8285 §4.2: on ID 15 "processing of the entire extension MUST terminate"."""
    data = bytes.fromhex("9078 0001 00000002 00000003 bede 0002 107f f0 ffffff 21aaaa00")
    assert parse_rtp(data).extensions == ((1, b"\x7f"),)


def test_padding_of_one_byte() -> None:
    packet = build_rtp(120, 0, 0, 0, b"ab", padding=1)
    assert packet[-1:] == b"\x01"
    assert parse_rtp(packet).payload == b"ab"


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (b"", RTP_BAD_HEADER),
        (VOICE[:11], RTP_BAD_HEADER),
        (b"\x50" + VOICE[1:], RTP_BAD_HEADER),  # version 1
        (b"\x10" + VOICE[1:], RTP_BAD_HEADER),  # version 0
        (b"\x83" + VOICE[1:12] + b"\x00" * 8, RTP_BAD_HEADER),  # 3 CSRCs, room for 2
        (VOICE[:14], RTP_BAD_EXTENSION),  # X set, extension header cut
        (VOICE[:12] + bytes.fromhex("bede0002107f0000"), RTP_BAD_EXTENSION),  # 2 words, 1 there
        (VOICE[:12] + bytes.fromhex("bede0001137f0000"), RTP_BAD_EXTENSION),  # element of 4 bytes
        (b"\xb0" + VOICE[1:-1] + b"\x00", RTP_BAD_PADDING),  # count 0
        (b"\xb0" + VOICE[1:-1] + b"\x05", RTP_BAD_PADDING),  # 5, only 3 bytes of payload
        (b"\xa0" + VOICE[1:12], RTP_BAD_PADDING),  # P set, nothing after the header
    ],
)
def test_malformed(data: bytes, failure: str) -> None:
    with pytest.raises(RtpError) as caught:
        parse_rtp(data)
    assert caught.value.failure == failure
    assert isinstance(caught.value, DecodeError)
    assert str(caught.value)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_rtp(128, 0, 0, 0, b""), "payload type"),
        (lambda: build_rtp(0, 1 << 16, 0, 0, b""), "sequence"),
        (lambda: build_rtp(0, 0, 1 << 32, 0, b""), "32-bit"),
        (lambda: build_rtp(0, 0, 0, -1, b""), "32-bit"),
        (lambda: build_rtp(0, 0, 0, 0, b"", csrcs=[0] * 16), "CSRC"),
        (lambda: build_rtp(0, 0, 0, 0, b"", extensions=[(0, b"x")]), "ids"),
        (lambda: build_rtp(0, 0, 0, 0, b"", extensions=[(15, b"x")]), "ids"),
        (lambda: build_rtp(0, 0, 0, 0, b"", extensions=[(1, b"")]), "1-16"),
        (lambda: build_rtp(0, 0, 0, 0, b"", extensions=[(1, b"x" * 17)]), "1-16"),
        (lambda: build_rtp(0, 0, 0, 0, b"", padding=256), "padding"),
    ],
)
def test_encoder_rejects_what_cannot_be_encoded(call: Callable[[], bytes], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- voice sizes -------------------------------------------------------------------------------


def test_voice_packet_sizes() -> None:
    sizes = voice_packet_sizes(random.Random(7), 5000)
    assert len(sizes) == 5000
    assert min(sizes) == VOICE_SIZE_MIN == 90
    assert max(sizes) == VOICE_SIZE_MAX == 170
    # uniform: each of the 81 sizes about 62 times; none far off
    counts = [sizes.count(size) for size in range(90, 171)]
    assert min(counts) > 30
    assert max(counts) < 100
    assert voice_packet_sizes(random.Random(7), 5000) == sizes  # the rng decides
    assert voice_packet_sizes(random.Random(7), 0) == []
    with pytest.raises(ValueError, match="-1"):
        voice_packet_sizes(random.Random(7), -1)


def test_exported_names_exist() -> None:
    for name in rtp.__all__:
        assert hasattr(rtp, name), name


# --- properties and fuzzing --------------------------------------------------------------------

fuzz = settings(max_examples=200, deadline=None)
elements = st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=5)


@fuzz
@given(
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFF_FFFF),
    ssrc=st.integers(0, 0xFFFF_FFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFF_FFFF), max_size=15),
    extensions=st.one_of(st.none(), elements),
    padding=st.integers(0, 255),
)
def test_round_trip(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: list[int],
    extensions: list[tuple[int, bytes]] | None,
    padding: int,
) -> None:
    data = build_rtp(
        payload_type,
        sequence,
        timestamp,
        ssrc,
        payload,
        marker=marker,
        csrcs=csrcs,
        extensions=extensions,
        padding=padding,
    )
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        payload_type,
        sequence,
        timestamp,
        ssrc,
    )
    assert (packet.payload, packet.marker, packet.csrcs, packet.padding) == (
        payload,
        marker,
        tuple(csrcs),
        padding,
    )
    assert packet.extensions == tuple(extensions or ())
    assert packet.first_byte == data[0]


def parse_or_error(call: Callable[[], T]) -> T | None:
    return fuzzing.parse_or_error(call, RtpError, RTP_FAILURES)


mutations = fuzzing.mutations


@fuzz
@given(data=st.one_of(st.binary(max_size=256), mutations(VOICE), mutations(MIXED)))
def test_fuzz_parse_rtp(data: bytes) -> None:
    packet = parse_or_error(lambda: parse_rtp(data))
    if packet is not None:
        header = 12 + 4 * len(packet.csrcs)
        if packet.extension_profile is not None:
            header += 4 + len(packet.extension_data)
        assert header + len(packet.payload) + packet.padding == len(data)
        for element_id, value in packet.extensions:
            assert 1 <= element_id <= 14
            assert 1 <= len(value) <= 16
