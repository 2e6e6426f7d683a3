"""The MTProto cores (probe.protocols.mtproto and .obfuscated2): known answers from the
specification, client <-> server round trips for every framing, and fuzzing of every decoder.

Where each vector comes from is said next to it. Two independent AES implementations check the
stream cipher: ours runs on OpenSSL (``cryptography``); the vectors were computed with pyaes
(pure Python, through Telethon's ``AESModeCTR``), and the derivation is also redone step by step
in the tests with ``cryptography`` directly, following core.telegram.org/mtproto/mtproto-transports.
"""

from __future__ import annotations

import functools
import itertools
import struct
import types
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe import protocols
from probe.protocols import DecodeError, mtproto, obfuscated2
from probe.protocols.mtproto import (
    BAD_FRAMING,
    BAD_INIT,
    BAD_REQUEST,
    BAD_RESPONSE,
    NONCE_MISMATCH,
    REQ_PQ,
    REQ_PQ_MULTI,
    TRANSPORT_ERROR,
    MTProtoError,
    build_req_pq_multi,
    build_res_pq,
    client_msg_id,
    decode_plain,
    encode_plain,
    parse_req_pq_multi,
    parse_res_pq,
    server_msg_id,
    tl_bytes,
)
from probe.protocols.obfuscated2 import (
    FORBIDDEN_FIRST_WORDS,
    MAX_PAYLOAD_LEN,
    FrameDecoder,
    Framing,
    ObfuscatedClient,
    ObfuscatedServer,
    derive_keys,
    encode_dc_id,
    encode_frame,
    make_init,
)
from tests import fuzzing

T = TypeVar("T")
MTPROTO_FAILURES = {
    BAD_FRAMING,
    BAD_INIT,
    BAD_REQUEST,
    BAD_RESPONSE,
    NONCE_MISMATCH,
    TRANSPORT_ERROR,
}

# --- vectors from core.telegram.org/mtproto/samples-auth_key ("Auth key generation example") ------

# Step 1, "Client sends query to server": the payload excluding transport headers, copied from the
# page's hex dump (auth_key_id 0, message_id 64F70D00FCC0AB65, length 0x14, req_pq_multi, nonce).
DOC_REQ_PQ_MULTI = bytes.fromhex(
    "0000000000000000" "64F70D00FCC0AB65" "14000000" "F18E7EBE"
    "15A084B3B9CA2A17F03925F44B78FE68"
)  # fmt: skip
DOC_MSG_ID = 0x65ABC0FC000DF764  # the little-endian bytes 64F70D00FCC0AB65
DOC_NONCE = bytes.fromhex("15A084B3B9CA2A17F03925F44B78FE68")

# Step 2, "Server sends response": the page's hex dump. Its message_length field says 0xB8 (184)
# but the dump holds 80 bytes of message data, which is also what the field-by-field table that
# follows adds up to (4 + 16 + 16 + 12 + 4 + 4 + 3 * 8); so the published bytes are kept as they
# are (a truncated message must be rejected) and a corrected copy with length 0x50 is the vector.
DOC_RES_PQ_PUBLISHED = bytes.fromhex(
    "0000000000000000" "01C46FBEFCC0AB65" "B8000000" "63241605"
    "15A084B3B9CA2A17F03925F44B78FE68" "D6701FCD212CEB87C966E5318F5564A8"
    "081460E7D3FA727791000000" "15C4B51C" "03000000"
    "A5B7F709355FC30B" "216BE86C022BB4C3" "85FD64DE851D9DD0"
)  # fmt: skip
DOC_RES_PQ = DOC_RES_PQ_PUBLISHED[:16] + struct.pack("<i", 80) + DOC_RES_PQ_PUBLISHED[20:]
DOC_SERVER_MSG_ID = 0x65ABC0FCBE6FC401
DOC_SERVER_NONCE = bytes.fromhex("D6701FCD212CEB87C966E5318F5564A8")
DOC_PQ = bytes.fromhex("1460E7D3FA727791")  # TL string 08 1460E7D3FA727791 000000 in the dump
DOC_PQ_INT = 1468428376148703121  # the page: "=> bigendian conversion to decimal"
# The fingerprints as TL longs: the dump's 8 bytes each, read little-endian and signed.
DOC_FINGERPRINTS = tuple(
    struct.unpack("<q", bytes.fromhex(h))[0]
    for h in ("A5B7F709355FC30B", "216BE86C022BB4C3", "85FD64DE851D9DD0")
)


def test_req_pq_multi_matches_the_documented_bytes() -> None:
    assert build_req_pq_multi(DOC_NONCE, DOC_MSG_ID) == DOC_REQ_PQ_MULTI
    parsed = parse_req_pq_multi(DOC_REQ_PQ_MULTI)
    assert (parsed.msg_id, parsed.nonce, parsed.constructor) == (
        DOC_MSG_ID,
        DOC_NONCE,
        REQ_PQ_MULTI,
    )


def test_res_pq_parses_the_documented_answer() -> None:
    res = parse_res_pq(DOC_RES_PQ, nonce=DOC_NONCE)
    assert res.msg_id == DOC_SERVER_MSG_ID
    assert res.msg_id % 4 == 1  # the docs' server id is a response id
    assert res.nonce == DOC_NONCE
    assert res.server_nonce == DOC_SERVER_NONCE
    assert res.pq == DOC_PQ
    assert res.pq_int == DOC_PQ_INT == 1008949199 * 1455403679  # the page's factorization
    assert res.fingerprints == DOC_FINGERPRINTS


def test_build_res_pq_reproduces_the_documented_answer() -> None:
    built = build_res_pq(
        DOC_NONCE, DOC_SERVER_NONCE, DOC_PQ, DOC_FINGERPRINTS, msg_id=DOC_SERVER_MSG_ID
    )
    assert built == DOC_RES_PQ
    # Fingerprints may be given unsigned too (as the page writes them, hex): same bytes.
    unsigned = [f & 0xFFFF_FFFF_FFFF_FFFF for f in DOC_FINGERPRINTS]
    assert build_res_pq(
        DOC_NONCE, DOC_SERVER_NONCE, DOC_PQ, unsigned, msg_id=DOC_SERVER_MSG_ID
    ) == (DOC_RES_PQ)


def test_the_published_res_pq_length_is_rejected_as_truncated() -> None:
    with pytest.raises(MTProtoError) as caught:
        parse_res_pq(DOC_RES_PQ_PUBLISHED)
    assert caught.value.failure == BAD_RESPONSE
    assert "184" in str(caught.value)


def test_padding_after_the_message_is_ignored() -> None:
    # Padded framing can leave whole words of padding after message_data (see FrameDecoder).
    assert parse_res_pq(DOC_RES_PQ + bytes(12), nonce=DOC_NONCE).fingerprints == DOC_FINGERPRINTS
    assert parse_req_pq_multi(DOC_REQ_PQ_MULTI + bytes(8)).nonce == DOC_NONCE


def test_old_req_pq_is_understood_by_the_server_side() -> None:
    # req_pq#60469778 (core.telegram.org/mtproto/auth_key) has the same shape.
    old = encode_plain(DOC_MSG_ID, struct.pack("<I", 0x60469778) + DOC_NONCE)
    assert parse_req_pq_multi(old).constructor == REQ_PQ


def test_nonce_mismatch_is_its_own_failure() -> None:
    with pytest.raises(MTProtoError) as caught:
        parse_res_pq(DOC_RES_PQ, nonce=bytes(16))
    assert caught.value.failure == NONCE_MISMATCH


@pytest.mark.parametrize(
    ("code", "wire"), [(404, "6cfeffff"), (429, "53feffff"), (444, "44feffff")]
)
def test_transport_errors_carry_their_code(code: int, wire: str) -> None:
    # core.telegram.org/mtproto/mtproto-transports#transport-errors: a 4-byte signed
    # little-endian number whose absolute value is the code; -404 is 0xfffffe6c.
    with pytest.raises(MTProtoError) as caught:
        parse_res_pq(bytes.fromhex(wire))
    assert (caught.value.failure, caught.value.code) == (TRANSPORT_ERROR, code)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "shorter than"),
        (DOC_RES_PQ[:19], "shorter than"),
        (b"\x01" + DOC_RES_PQ[1:], "encrypted"),
        (DOC_RES_PQ[:16] + struct.pack("<i", -4) + DOC_RES_PQ[20:], "message_data_length -4"),
        (DOC_REQ_PQ_MULTI, "not resPQ"),
        (DOC_RES_PQ[:16] + struct.pack("<i", 30) + DOC_RES_PQ[20:50], "nonces truncated"),
        (DOC_RES_PQ[:56] + b"\xff" + DOC_RES_PQ[57:], "invalid prefix"),
        (DOC_RES_PQ[:68] + b"\x00\x00\x00\x00" + DOC_RES_PQ[72:], "not vector"),
        (DOC_RES_PQ[:72] + struct.pack("<i", 4) + DOC_RES_PQ[76:], "4 fingerprints"),
        (DOC_RES_PQ[:72] + struct.pack("<i", -1) + DOC_RES_PQ[76:], "count -1"),
    ],
)
def test_malformed_res_pq_is_a_bad_response(payload: bytes, fragment: str) -> None:
    with pytest.raises(MTProtoError) as caught:
        parse_res_pq(payload)
    assert caught.value.failure == BAD_RESPONSE
    assert fragment in str(caught.value)


def test_malformed_requests_are_bad_requests() -> None:
    for payload in (b"", DOC_RES_PQ, DOC_REQ_PQ_MULTI[:30], b"\x6c\xfe\xff\xff"):
        with pytest.raises(MTProtoError) as caught:
            parse_req_pq_multi(payload)
        assert caught.value.failure == BAD_REQUEST


def test_mtproto_error_is_a_decode_error_and_a_value_error() -> None:
    error = MTProtoError(BAD_RESPONSE, "x")
    assert isinstance(error, DecodeError)
    assert isinstance(error, ValueError)
    assert error.code is None


# --- TL strings (core.telegram.org/mtproto/serialize, "bytes" / "string") ------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # The docs' pq: "Single-byte prefix denoting length, an 8-byte string, and three bytes of
        # padding" (samples-auth_key).
        (DOC_PQ, "08" + DOC_PQ.hex() + "000000"),
        # Empty: the length byte and three bytes of padding.
        (b"", "00000000"),
        # 3 bytes: length byte + 3 = 4, no padding.
        (b"abc", "03616263"),
        # 253 bytes: the longest short form; 254 total, 2 bytes of padding.
        (b"\xaa" * 253, "fd" + "aa" * 253 + "0000"),
        # 254 bytes: the long form, 0xfe and a 3-byte little-endian length, then 2 of padding.
        (b"\xbb" * 254, "fefe0000" + "bb" * 254 + "0000"),
        # 300 bytes: fe 2c 01 00, 304 bytes in all, no padding.
        (b"\xcc" * 300, "fe2c0100" + "cc" * 300),
    ],
)
def test_tl_bytes_serialization(data: bytes, expected: str) -> None:
    assert tl_bytes(data).hex() == expected
    # and it parses back inside a resPQ
    payload = build_res_pq(DOC_NONCE, DOC_SERVER_NONCE, data, [1], msg_id=1)
    assert parse_res_pq(payload).pq == data


# --- message ids (core.telegram.org/mtproto/description#message-identifier-msg-id) ----------------


def test_message_ids_follow_time() -> None:
    # 1705754876 is the docs' sample second (0x65ABC0FC); .25 of a second is 0x40000000 / 2**32.
    assert client_msg_id(1705754876.25) == 0x65ABC0FC_40000000
    assert server_msg_id(1705754876.25) == 0x65ABC0FC_40000001


@given(now=st.floats(min_value=1.0e9, max_value=4.0e9, allow_nan=False))
def test_message_ids_have_the_right_remainders(now: float) -> None:
    assert client_msg_id(now) % 4 == 0
    assert server_msg_id(now) % 4 == 1
    assert client_msg_id(now) >> 32 == int(now)


# --- obfuscated2: derivation and init -----------------------------------------------------------

# A fixed 64-byte "random" source: bytes 00..3f. Its first byte is not 0xef, its first word
# 00010203 is no forbidden word and bytes 4..8 (04050607) are not zero, so make_init keeps it
# and only writes the abridged tag at 56..60 and DC 2 at 60..62.
FIXED_RANDOM = bytes(range(64))
FIXED_INIT = FIXED_RANDOM[:56] + b"\xef\xef\xef\xef" + b"\x02\x00" + FIXED_RANDOM[62:]
# Computed with pyaes (Telethon's AESModeCTR), key = init[8:40], IV = init[40:56]: the encrypted
# init's bytes 56..64, which replace the plaintext tag and DC id on the wire.
FIXED_WIRE_TAIL = bytes.fromhex("4719245f1c00fd5d")
# ... and the same stream running on over the abridged frame of the docs' req_pq_multi
# (0x0a = 40 / 4, then the 40 bytes).
FIXED_FRAME_CIPHERTEXT = bytes.fromhex(
    "38a9c12838f1654122d567b01d5e72a0c7b2c4add90680859383b698b0f092f9948beba97ed9885359"
)
# ... and the first 48 keystream bytes of the server -> client stream (key and IV from the
# reversed init), i.e. the ciphertext of 48 zero bytes.
FIXED_SERVER_KEYSTREAM = bytes.fromhex(
    "2f9de370decc064095d931e30a267b69d13db6bde5308076ed45f7b11901726e"
    "6449dce83938911a871bed0c2f715924"
)


def fixed_source(*blocks: bytes) -> Callable[[int], bytes]:
    """A random_bytes stand-in that hands out the given blocks, then zeros."""
    queue: Iterator[bytes] = iter(blocks)

    def take(n: int) -> bytes:
        block = next(queue, bytes(n))
        assert len(block) == n, (len(block), n)
        return block

    return take


def aes_ctr(key: bytes, iv: bytes) -> Callable[[bytes], bytes]:
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update


def test_aes_ctr_is_the_nist_one() -> None:
    # NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt, blocks 1-2: the counter block is the whole
    # 128-bit IV, incremented big-endian, as the docs' "OpenSSL AES-256-CTR instances" are.
    encrypt = aes_ctr(
        bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
    )
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    assert encrypt(plain).hex() == (
        "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
    )


def test_make_init_places_tag_and_dc() -> None:
    assert make_init(Framing.ABRIDGED, 2, random_bytes=fixed_source(FIXED_RANDOM)) == FIXED_INIT
    init = make_init(Framing.PADDED_INTERMEDIATE, -10004, random_bytes=fixed_source(FIXED_RANDOM))
    assert init[56:60] == b"\xdd\xdd\xdd\xdd"
    assert init[60:62] == (-10004).to_bytes(2, "little", signed=True)
    # None leaves the DC bytes as drawn
    assert (
        make_init(Framing.INTERMEDIATE, random_bytes=fixed_source(FIXED_RANDOM))[60:]
        == (FIXED_RANDOM[60:])
    )


def test_derive_keys_per_the_docs() -> None:
    enc_key, enc_iv, dec_key, dec_iv = derive_keys(FIXED_INIT)
    assert enc_key == bytes(range(8, 40))
    assert enc_iv == bytes(range(40, 56))
    reverse = FIXED_INIT[::-1]  # the docs' "secondary initialization payload"
    assert (dec_key, dec_iv) == (reverse[8:40], reverse[40:56])


def test_client_init_and_first_frame_known_answer() -> None:
    client = ObfuscatedClient(Framing.ABRIDGED, dc_id=2, random_bytes=fixed_source(FIXED_RANDOM))
    wire = client.init_bytes()
    assert wire[:56] == FIXED_INIT[:56]
    assert wire[56:] == FIXED_WIRE_TAIL
    assert client.encrypt(DOC_REQ_PQ_MULTI) == FIXED_FRAME_CIPHERTEXT

    # The same, step by step with cryptography per the docs: encrypt the init with
    # (init[8:40], init[40:56]), splice ciphertext bytes 56..64 into the plaintext, and keep the
    # stream running for the frame.
    encrypt = aes_ctr(FIXED_INIT[8:40], FIXED_INIT[40:56])
    assert FIXED_INIT[:56] + encrypt(FIXED_INIT)[56:64] == wire
    assert encrypt(bytes([len(DOC_REQ_PQ_MULTI) // 4]) + DOC_REQ_PQ_MULTI) == FIXED_FRAME_CIPHERTEXT


def test_client_decrypts_with_the_reversed_init_keys() -> None:
    client = ObfuscatedClient(Framing.ABRIDGED, dc_id=2, random_bytes=fixed_source(FIXED_RANDOM))
    # A server frame: abridged header 0x0b (44 bytes), then 44 bytes; on the wire each byte
    # is XORed with the server -> client keystream.
    plain = bytes([11]) + bytes(range(100, 144))
    wire = bytes(a ^ b for a, b in zip(plain, FIXED_SERVER_KEYSTREAM, strict=False))
    assert client.feed(wire) == [bytes(range(100, 144))]


def test_server_reads_the_client_init() -> None:
    server = ObfuscatedServer.from_init(FIXED_INIT[:56] + FIXED_WIRE_TAIL)
    assert server.framing is Framing.ABRIDGED
    assert server.dc_id == 2
    assert server.feed(FIXED_FRAME_CIPHERTEXT) == [DOC_REQ_PQ_MULTI]
    reply = server.encrypt(bytes(range(100, 144)))
    assert reply == bytes(
        a ^ b
        for a, b in zip(bytes([11]) + bytes(range(100, 144)), FIXED_SERVER_KEYSTREAM, strict=False)
    )


@pytest.mark.parametrize("word", sorted(FORBIDDEN_FIRST_WORDS))
def test_make_init_redraws_forbidden_first_words(word: bytes) -> None:
    bad = word + FIXED_RANDOM[4:]
    assert make_init(Framing.ABRIDGED, 2, random_bytes=fixed_source(bad, FIXED_RANDOM)) == (
        FIXED_INIT
    )


@pytest.mark.parametrize(
    "bad",
    [
        b"\xef" + FIXED_RANDOM[1:],  # plain abridged's marker
        FIXED_RANDOM[:4] + bytes(4) + FIXED_RANDOM[8:],  # full transport, seqno 0
        # the words as the docs' pseudocode writes them: little-endian ints
        struct.pack("<I", 0x44414548) + FIXED_RANDOM[4:],  # HEAD
        struct.pack("<I", 0x02010316) + FIXED_RANDOM[4:],  # TLS record 16 03 01 02
    ],
)
def test_make_init_redraws_other_transports(bad: bytes) -> None:
    assert make_init(Framing.ABRIDGED, 2, random_bytes=fixed_source(bad, FIXED_RANDOM)) == (
        FIXED_INIT
    )


def test_make_init_gives_up_on_a_broken_source() -> None:
    with pytest.raises(RuntimeError):
        make_init(Framing.ABRIDGED, random_bytes=lambda n: b"\xef" * n)


@given(seed=st.binary(min_size=64, max_size=64))
def test_every_client_init_is_acceptable(seed: bytes) -> None:
    for framing in Framing:
        init = ObfuscatedClient(framing, random_bytes=fixed_source(seed, FIXED_RANDOM)).init_bytes()
        assert init[0] != 0xEF
        assert init[:4] not in FORBIDDEN_FIRST_WORDS
        assert init[4:8] != bytes(4)
        assert ObfuscatedServer.from_init(init).framing is framing


@pytest.mark.parametrize(
    ("dc", "test", "media", "expected"),
    [(2, False, False, 2), (2, True, False, 10002), (4, False, True, -4), (4, True, True, -10004)],
)
def test_dc_id_encoding(dc: int, test: bool, media: bool, expected: int) -> None:
    # core.telegram.org/mtproto/mtproto-transports#transport-obfuscation: "10000 has to be added
    # to the DC ID to connect to the test servers; it has to be made negative if the DC we're
    # connecting to is a media (not CDN) DC"; the page's example is media DC 4 -> 0xfcff.
    assert encode_dc_id(dc, test=test, media=media) == expected
    client = ObfuscatedClient(Framing.INTERMEDIATE, dc_id=expected)
    assert ObfuscatedServer.from_init(client.init_bytes()).dc_id == expected


def test_docs_media_dc_4_example() -> None:
    assert encode_dc_id(4, media=True).to_bytes(2, "little", signed=True) == b"\xfc\xff"
    with pytest.raises(ValueError, match="16-bit"):
        encode_dc_id(40000)


@pytest.mark.parametrize(
    ("init", "fragment"),
    [
        (FIXED_INIT[:63], "63 bytes"),
        (FIXED_INIT + b"\x00", "65 bytes"),
        (b"\xef" + FIXED_INIT[1:], "0xef"),
        (b"POST" + FIXED_INIT[4:], "POST"),
        (b"\xee\xee\xee\xee" + FIXED_INIT[4:], "another protocol"),
        (FIXED_INIT[:4] + bytes(4) + FIXED_INIT[8:], "full transport"),
        (FIXED_INIT, "unknown transport tag"),  # the tag left unencrypted decrypts to garbage
    ],
)
def test_server_rejects_unusable_inits(init: bytes, fragment: str) -> None:
    with pytest.raises(MTProtoError) as caught:
        ObfuscatedServer.from_init(init)
    assert caught.value.failure == BAD_INIT
    assert fragment in str(caught.value)


# --- framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "payload", "header"),
    [
        # core.telegram.org/mtproto/mtproto-transports#abridged: length / 4 in one byte while
        # it is 0x01..0x7e, else 0x7f and the length / 4 in 3 little-endian bytes.
        (Framing.ABRIDGED, bytes(40), "0a"),
        (Framing.ABRIDGED, bytes(126 * 4), "7e"),
        (Framing.ABRIDGED, bytes(127 * 4), "7f7f0000"),
        (Framing.ABRIDGED, bytes(0x1234 * 4), "7f341200"),
        # ... #intermediate: 4-byte little-endian length.
        (Framing.INTERMEDIATE, bytes(40), "28000000"),
        (Framing.INTERMEDIATE, bytes(0x1234), "34120000"),
    ],
)
def test_frame_headers(framing: Framing, payload: bytes, header: str) -> None:
    frame = encode_frame(framing, payload)
    assert frame.hex() == header + payload.hex()
    for from_client in (True, False):
        assert FrameDecoder(framing, from_client=from_client).feed(frame) == [payload]


def test_padded_intermediate_adds_0_to_15_random_bytes() -> None:
    # core.telegram.org/mtproto/mtproto-transports#padded-intermediate: total length (payload +
    # padding) in 4 little-endian bytes, the payload, 0-15 random bytes. With the length draw
    # 0x1d -> 0x1d % 16 = 13 bytes of padding "PPP...".
    frame = encode_frame(
        Framing.PADDED_INTERMEDIATE, bytes(40), random_bytes=fixed_source(b"\x1d", b"P" * 13)
    )
    assert frame == (53).to_bytes(4, "little") + bytes(40) + b"P" * 13
    # The unaligned tail (1 byte) is surely padding; 12 aligned bytes stay for the message parser.
    assert FrameDecoder(Framing.PADDED_INTERMEDIATE, from_client=True).feed(frame) == [
        bytes(40) + b"P" * 12
    ]
    lengths = {len(encode_frame(Framing.PADDED_INTERMEDIATE, bytes(40))) - 44 for _ in range(400)}
    assert lengths <= set(range(16))
    assert len(lengths) > 8  # random, not fixed


def test_abridged_needs_whole_words() -> None:
    with pytest.raises(ValueError, match="4-byte words"):
        encode_frame(Framing.ABRIDGED, b"abc")


@pytest.mark.parametrize(
    ("framing", "flagged"),
    [
        (Framing.ABRIDGED, b"\x8a"),  # 0x80 | 10 words
        (Framing.ABRIDGED, b"\xff\x0a\x00\x00"),  # 0x80 | 0x7f, long form, 10 words
        (Framing.INTERMEDIATE, (0x8000_0000 | 40).to_bytes(4, "little")),
    ],
)
def test_quick_ack_flag_from_a_client_is_stripped_and_counted(
    framing: Framing, flagged: bytes
) -> None:
    # core.telegram.org/mtproto/mtproto-transports#quick-ack: the client sets the length's
    # highest bit to ask for a quick ack.
    decoder = FrameDecoder(framing, from_client=True)
    assert decoder.feed(flagged + bytes(40)) == [bytes(40)]
    assert decoder.quick_ack_requests == 1
    # From a server it is a quick-ack token, which our client never asks for.
    with pytest.raises(MTProtoError) as caught:
        FrameDecoder(framing, from_client=False).feed(flagged + bytes(40))
    assert caught.value.failure == BAD_FRAMING


def test_oversized_frames_fail_at_once_and_for_good() -> None:
    decoder = FrameDecoder(Framing.INTERMEDIATE, from_client=False)
    with pytest.raises(MTProtoError) as caught:
        decoder.feed((MAX_PAYLOAD_LEN + 4).to_bytes(4, "little"))
    assert caught.value.failure == BAD_FRAMING
    with pytest.raises(MTProtoError):  # the stream is out of step from here on
        decoder.feed(encode_frame(Framing.INTERMEDIATE, bytes(8)))


def test_partial_frames_wait_for_more() -> None:
    frame = encode_frame(Framing.ABRIDGED, bytes(range(200)) * 4)  # long form
    decoder = FrameDecoder(Framing.ABRIDGED, from_client=False)
    for i in range(len(frame) - 1):
        assert decoder.feed(frame[i : i + 1]) == []
    assert decoder.buffered == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [bytes(range(200)) * 4]
    assert decoder.buffered == 0


# --- round trips --------------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def feed_all(feed: Callable[[bytes], list[T]], chunks: list[bytes]) -> list[T]:
    out: list[T] = []
    for chunk in chunks:
        out.extend(feed(chunk))
    return out


payloads = st.lists(
    st.integers(min_value=0, max_value=700).flatmap(
        lambda n: st.binary(min_size=4 * n, max_size=4 * n)
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("framing", list(Framing))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    up=payloads,
    down=payloads,
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8),
    dc_id=st.one_of(st.none(), st.integers(min_value=-(1 << 15), max_value=(1 << 15) - 1)),
)
def test_client_server_round_trip(
    framing: Framing, up: list[bytes], down: list[bytes], cuts: list[int], dc_id: int | None
) -> None:
    client = ObfuscatedClient(framing, dc_id)
    server = ObfuscatedServer.from_init(client.init_bytes())
    assert server.framing is framing
    if dc_id is not None:
        assert server.dc_id == dc_id

    wire = b"".join(client.encrypt(p) for p in up)
    received = feed_all(server.feed, split(wire, cuts))
    wire = b"".join(server.encrypt(p) for p in down)
    answered = feed_all(client.feed, split(wire, cuts))

    if framing is Framing.PADDED_INTERMEDIATE:  # aligned padding stays (see FrameDecoder)
        assert [r[: len(p)] for r, p in zip(received, up, strict=True)] == up
        assert [a[: len(p)] for a, p in zip(answered, down, strict=True)] == down
        assert all(len(r) - len(p) in (0, 4, 8, 12) for r, p in zip(received, up, strict=True))
    else:
        assert received == up
        assert answered == down


@pytest.mark.parametrize("framing", list(Framing))
def test_req_pq_multi_and_res_pq_over_every_framing(framing: Framing) -> None:
    nonce = bytes(range(16))
    client = ObfuscatedClient(framing, dc_id=2)
    server = ObfuscatedServer.from_init(client.init_bytes())
    [request] = server.feed(client.encrypt(build_req_pq_multi(nonce, client_msg_id(1.7e9))))
    req = parse_req_pq_multi(request)
    assert req.nonce == nonce
    answer = build_res_pq(
        req.nonce, DOC_SERVER_NONCE, DOC_PQ, DOC_FINGERPRINTS, msg_id=server_msg_id(1.7e9)
    )
    [reply] = client.feed(server.encrypt(answer))
    res = parse_res_pq(reply, nonce=nonce)
    assert (res.server_nonce, res.pq, res.fingerprints) == (
        DOC_SERVER_NONCE,
        DOC_PQ,
        DOC_FINGERPRINTS,
    )


# --- fuzzing: any bytes give a parse or an MTProtoError, nothing else ------------------------

fuzz = settings(max_examples=200, deadline=None)
garbage = st.binary(max_size=2048)


def parse_or_error(call: Callable[[], T]) -> T | None:
    return fuzzing.parse_or_error(call, MTProtoError, MTPROTO_FAILURES)


mutations = fuzzing.mutations


@fuzz
@given(data=st.one_of(garbage, mutations(DOC_RES_PQ)), nonce=st.sampled_from([None, DOC_NONCE]))
def test_fuzz_parse_res_pq(data: bytes, nonce: bytes | None) -> None:
    res = parse_or_error(lambda: parse_res_pq(data, nonce=nonce))
    if res is not None:
        assert len(res.nonce) == len(res.server_nonce) == 16
        assert len(res.fingerprints) <= 64


@fuzz
@given(data=st.one_of(garbage, mutations(DOC_REQ_PQ_MULTI)))
def test_fuzz_parse_req_pq_multi(data: bytes) -> None:
    req = parse_or_error(lambda: parse_req_pq_multi(data))
    if req is not None:
        assert len(req.nonce) == 16


@fuzz
@given(data=garbage, from_server=st.booleans())
def test_fuzz_decode_plain(data: bytes, from_server: bool) -> None:
    message = parse_or_error(lambda: decode_plain(data, from_server=from_server))
    if message is not None:
        assert len(message.body) <= len(data) - 20


@fuzz
@given(
    framing=st.sampled_from(list(Framing)),
    from_client=st.booleans(),
    chunks=st.lists(garbage, max_size=4),
)
def test_fuzz_frame_decoder(framing: Framing, from_client: bool, chunks: list[bytes]) -> None:
    decoder = FrameDecoder(framing, from_client=from_client)
    total = sum(map(len, chunks))
    payloads = parse_or_error(lambda: feed_all(decoder.feed, chunks))
    if payloads is not None:
        assert sum(map(len, payloads)) + decoder.buffered <= total


@fuzz
@given(framing=st.sampled_from(list(Framing)), chunks=st.lists(garbage, max_size=4))
def test_fuzz_client_feed(framing: Framing, chunks: list[bytes]) -> None:
    # What a censor's box or a wrong server might send back: decrypted, it is random framing.
    client = ObfuscatedClient(framing)
    parse_or_error(lambda: feed_all(client.feed, chunks))


@fuzz
@given(init=st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64)), tail=garbage)
def test_fuzz_server_from_init(init: bytes, tail: bytes) -> None:
    server = parse_or_error(lambda: ObfuscatedServer.from_init(init))
    if server is not None:
        assert server.framing in Framing
        parse_or_error(lambda: server.feed(tail))


@fuzz
@given(framing=st.sampled_from(list(Framing)), tail=garbage)
def test_fuzz_server_after_a_valid_init(framing: Framing, tail: bytes) -> None:
    # Random 64-byte inits rarely carry a valid tag; this one does, so the frames get decoded.
    server = ObfuscatedServer.from_init(ObfuscatedClient(framing).init_bytes())
    for payload in parse_or_error(lambda: server.feed(tail)) or []:
        parse_or_error(functools.partial(parse_req_pq_multi, payload))


@pytest.mark.parametrize("module", [protocols, mtproto, obfuscated2])
def test_exported_names_exist(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name
