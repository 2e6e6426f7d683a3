"""The WhatsApp chat prologue core (probe.protocols.whatsapp): byte-exact vectors assembled by hand
from the public sources cited in the module, both sides' parsers, and fuzzing of every decoder.

How the vectors are built: protobuf keys are ``field_number << 3 | wire_type`` with wire type 2
(length-delimited) for every field here (protobuf.dev/programming-guides/encoding), so
HandshakeMessage.clientHello (field 2) is key 0x12, serverHello (3) is 0x1a, and the hellos'
ephemeral (1), static (2) and payload (3) are 0x0a, 0x12, 0x1a; lengths are varints (150 ->
96 01, the encoding guide's own example). Frames are a 3-byte big-endian length and the frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.protocols import DecodeError, whatsapp
from probe.protocols.whatsapp import (
    BAD_FRAMING,
    BAD_PROLOGUE,
    BAD_RESPONSE,
    CONN_HEADER,
    MAX_HELLO_LEN,
    WA_VERSION,
    ClientPrologue,
    ServerHello,
    WhatsAppError,
    build_client_prologue,
    build_server_hello,
    decode_frame,
    encode_client_hello,
    encode_frame,
    encode_server_hello,
    new_ephemeral_key,
    parse_client_prologue,
    parse_server_hello,
)
from tests import fuzzing

T = TypeVar("T")
WHATSAPP_FAILURES = {BAD_FRAMING, BAD_PROLOGUE, BAD_RESPONSE}

EPHEMERAL = bytes(range(32))
# An edge-routing blob in the shape nDPI's WhatsApp signature expects (4 bytes, first 0x08);
# real ones are whatever the server handed out on an earlier connection.
ROUTING = bytes.fromhex("08031e05")

# 'W' 'A', WAMagicValue 6, DictVersion 3 (whatsmeow socket/constants.go, binary/token/token.go)
HEADER = bytes.fromhex("57410603")
# HandshakeMessage{clientHello{ephemeral}}: 12 22 (clientHello, 34 bytes) 0a 20 (ephemeral, 32)
CLIENT_HELLO = bytes.fromhex("12220a20") + EPHEMERAL
# ... framed: 36 = 0x000024
CLIENT_PROLOGUE = HEADER + bytes.fromhex("000024") + CLIENT_HELLO
# with the pre-intro: 'E' 'D' 00 01, length 000004, the routing info, then the above
ROUTED_PROLOGUE = bytes.fromhex("45440001000004") + ROUTING + CLIENT_PROLOGUE

SERVER_EPHEMERAL = bytes(range(100, 132))
SERVER_STATIC = b"S" * 48  # 32-byte key + 16-byte AES-GCM tag
SERVER_PAYLOAD = b"P" * 150
# serverHello body: 0a 20 <32> | 12 30 <48> | 1a 96 01 <150>  = 34 + 50 + 153 = 237 (0xed 0x01)
SERVER_HELLO_BODY = (
    bytes.fromhex("0a20") + SERVER_EPHEMERAL
    + bytes.fromhex("1230") + SERVER_STATIC
    + bytes.fromhex("1a9601") + SERVER_PAYLOAD
)  # fmt: skip
# HandshakeMessage{serverHello}: 1a ed 01 <237> = 240 bytes, framed with 0000f0
SERVER_HELLO = bytes.fromhex("1aed01") + SERVER_HELLO_BODY
SERVER_FRAME = bytes.fromhex("0000f0") + SERVER_HELLO


def test_connection_header_is_wa_6_3() -> None:
    assert CONN_HEADER == HEADER == b"WA\x06\x03"
    assert WA_VERSION == (6, 3)


def test_client_prologue_known_answer() -> None:
    assert encode_client_hello(EPHEMERAL) == CLIENT_HELLO
    assert build_client_prologue(EPHEMERAL) == CLIENT_PROLOGUE
    assert build_client_prologue(EPHEMERAL, routing=ROUTING) == ROUTED_PROLOGUE
    assert build_client_prologue(EPHEMERAL, version=(5, 2))[:4] == b"WA\x05\x02"


def test_client_prologue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        build_client_prologue(bytes(31))
    with pytest.raises(ValueError, match="routing"):
        build_client_prologue(EPHEMERAL, routing=b"")


def test_new_ephemeral_key_is_a_fresh_x25519_public_key() -> None:
    first, second = new_ephemeral_key(), new_ephemeral_key()
    assert len(first) == len(second) == 32
    assert first != second
    X25519PublicKey.from_public_bytes(first)  # raises unless a valid X25519 public key
    assert parse_client_prologue(build_client_prologue(first)) is not None


def test_server_hello_known_answer() -> None:
    assert encode_server_hello(SERVER_EPHEMERAL, SERVER_STATIC, SERVER_PAYLOAD) == SERVER_HELLO
    assert encode_frame(SERVER_HELLO) == SERVER_FRAME
    assert parse_server_hello(SERVER_FRAME) == ServerHello(
        frame_length=240,
        ephemeral=SERVER_EPHEMERAL,
        static_length=48,
        payload_length=150,
        consumed=243,
    )


def test_server_hello_may_be_followed_by_more_bytes() -> None:
    hello = parse_server_hello(SERVER_FRAME + b"\x00\x00\x10more")
    assert hello is not None
    assert hello.consumed == len(SERVER_FRAME)


def test_every_prefix_of_a_server_hello_waits_for_more() -> None:
    for cut in range(len(SERVER_FRAME)):
        assert parse_server_hello(SERVER_FRAME[:cut]) is None


def test_server_hello_without_static_and_payload_reports_none() -> None:
    bare = encode_frame(bytes.fromhex("1a220a20") + SERVER_EPHEMERAL)
    hello = parse_server_hello(bare)
    assert hello is not None
    assert (hello.static_length, hello.payload_length) == (None, None)


def test_unknown_fields_are_skipped() -> None:
    # A varint field 9 (key 0x48), a fixed64 field 10 (0x51) and a fixed32 field 11 (0x5d)
    # before the serverHello: protobuf readers skip what they do not know.
    extra = bytes.fromhex("480151" + "00" * 8 + "5d" + "00" * 4)
    hello = parse_server_hello(encode_frame(extra + SERVER_HELLO))
    assert hello is not None
    assert hello.ephemeral == SERVER_EPHEMERAL


@pytest.mark.parametrize(
    ("data", "failure", "fragment"),
    [
        (b"\x00\x00\x00", BAD_FRAMING, "frame length 0"),
        ((MAX_HELLO_LEN + 1).to_bytes(3, "big"), BAD_FRAMING, "frame length"),
        # TLS alert / HTTP answer instead of a hello: the length makes no sense
        (b"HTTP/1.1 400 Bad Request\r\n", BAD_FRAMING, "frame length"),
        # a middlebox echoing the client's hello back
        (CLIENT_PROLOGUE[4:], BAD_RESPONSE, "no serverHello"),
        (encode_frame(bytes.fromhex("1a210a1f") + bytes(31)), BAD_RESPONSE, "31 bytes"),
        (encode_frame(bytes.fromhex("1a021200")), BAD_RESPONSE, "none"),
        (encode_frame(bytes.fromhex("1a050a20")), BAD_RESPONSE, "truncated"),
        (encode_frame(bytes.fromhex("1b00")), BAD_RESPONSE, "wire type 3"),
        (encode_frame(bytes.fromhex("0200")), BAD_RESPONSE, "field number 0"),
        (encode_frame(bytes.fromhex("1a") + b"\xff" * 11), BAD_RESPONSE, "longer than 10"),
        (encode_frame(bytes.fromhex("1a") + b"\xff" * 3), BAD_RESPONSE, "truncated"),
        (encode_frame(bytes.fromhex("51") + bytes(5)), BAD_RESPONSE, "truncated"),
    ],
)
def test_bad_server_frames(data: bytes, failure: str, fragment: str) -> None:
    with pytest.raises(WhatsAppError) as caught:
        parse_server_hello(data)
    assert caught.value.failure == failure
    assert fragment in str(caught.value)
    assert isinstance(caught.value, DecodeError)


def test_decode_frame_walks_frames() -> None:
    data = encode_frame(b"one") + encode_frame(b"two!") + b"\x00"
    first = decode_frame(data)
    assert first == (b"one", 6)
    second = decode_frame(data, first[1])
    assert second == (b"two!", 13)
    assert decode_frame(data, second[1]) is None


# --- server side ---------------------------------------------------------------------------------


def test_server_side_parses_client_prologues() -> None:
    assert parse_client_prologue(CLIENT_PROLOGUE) == ClientPrologue(
        routing=None,
        version=(6, 3),
        ephemeral=EPHEMERAL,
        static_length=None,
        payload_length=None,
        consumed=len(CLIENT_PROLOGUE),
    )
    routed = parse_client_prologue(ROUTED_PROLOGUE)
    assert routed is not None
    assert routed.routing == ROUTING
    assert routed.consumed == len(ROUTED_PROLOGUE)
    other = parse_client_prologue(build_client_prologue(EPHEMERAL, version=(4, 0)))
    assert other is not None
    assert other.version == (4, 0)


def test_server_side_reads_an_ik_style_hello() -> None:
    hello = encode_client_hello(EPHEMERAL, static=bytes(48), payload=bytes(200))
    parsed = parse_client_prologue(HEADER + encode_frame(hello))
    assert parsed is not None
    assert (parsed.static_length, parsed.payload_length) == (48, 200)


def test_every_prefix_of_a_client_prologue_waits_for_more() -> None:
    for prologue in (CLIENT_PROLOGUE, ROUTED_PROLOGUE):
        for cut in range(len(prologue)):
            assert parse_client_prologue(prologue[:cut]) is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (bytes.fromhex("160301020001"), "WA header"),  # a TLS ClientHello record
        (b"GET / HTTP/1.1\r\n", "WA header"),
        (b"EX", "ED 00 01"),
        (b"ED\x00\x02", "ED 00 01"),
        (b"ED\x00\x01\x00\x00\x01\x08XA", "WA header"),
        (b"ED\x00\x01\x00\x00\x00", "frame length 0"),
        (b"ED\x00\x01\x7f\xff\xff", "frame length"),
        (HEADER + b"\x00\x00\x00", "frame length 0"),
        (HEADER + SERVER_FRAME, "no clientHello"),
        (HEADER + encode_frame(bytes.fromhex("12020a00")), "0 bytes"),
        (HEADER + encode_frame(bytes.fromhex("1205")), "truncated"),
    ],
)
def test_server_side_rejects_other_openings(data: bytes, fragment: str) -> None:
    with pytest.raises(WhatsAppError) as caught:
        parse_client_prologue(data)
    assert caught.value.failure == BAD_PROLOGUE
    assert fragment in str(caught.value)


def test_built_server_hellos_parse_as_server_hellos() -> None:
    lengths = set()
    for _ in range(50):
        frame = build_server_hello()
        hello = parse_server_hello(frame)
        assert hello is not None
        assert hello.consumed == len(frame)
        assert hello.static_length == 48
        assert hello.payload_length is not None
        assert 120 <= hello.payload_length < 600
        lengths.add(hello.payload_length)
    assert len(lengths) > 10  # the payload length varies
    fixed = parse_server_hello(build_server_hello(payload_len=300))
    assert fixed is not None
    assert fixed.payload_length == 300


def test_emulator_answers_a_client() -> None:
    """The pair as the lab will use it: client prologue in, server hello out, client reads it."""
    prologue = build_client_prologue(new_ephemeral_key(), routing=ROUTING)
    seen = parse_client_prologue(prologue)
    assert seen is not None
    assert seen.routing == ROUTING
    assert parse_server_hello(build_server_hello()) is not None


# --- fuzzing: any bytes give a parse, None (need more), or a WhatsAppError --------------------

fuzz = settings(max_examples=200, deadline=None)
garbage = st.binary(max_size=2048)


def parse_or_error(call: Callable[[], T]) -> T | None:
    return fuzzing.parse_or_error(call, WhatsAppError, WHATSAPP_FAILURES)


mutations = fuzzing.mutations


@fuzz
@given(data=st.one_of(garbage, mutations(SERVER_FRAME)))
def test_fuzz_parse_server_hello(data: bytes) -> None:
    hello = parse_or_error(lambda: parse_server_hello(data))
    if hello is not None:
        assert len(hello.ephemeral) == 32
        assert hello.consumed <= len(data)


@fuzz
@given(data=st.one_of(garbage, mutations(ROUTED_PROLOGUE), mutations(CLIENT_PROLOGUE)))
def test_fuzz_parse_client_prologue(data: bytes) -> None:
    prologue = parse_or_error(lambda: parse_client_prologue(data))
    if prologue is not None:
        assert len(prologue.ephemeral) == 32
        assert prologue.consumed <= len(data)


@fuzz
@given(data=garbage, offset=st.integers(0, 64))
def test_fuzz_decode_frame(data: bytes, offset: int) -> None:
    framed = parse_or_error(lambda: decode_frame(data, offset))
    if framed is not None:
        frame, end = framed
        assert end == offset + 3 + len(frame) <= len(data)


def test_exported_names_exist() -> None:
    for name in whatsapp.__all__:
        assert hasattr(whatsapp, name), name
