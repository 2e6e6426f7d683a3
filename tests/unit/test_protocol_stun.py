"""The STUN core (probe.protocols.stun): the RFC 5769 test vectors, the builders' exact bytes,
every failure string on a targeted malformation, round trips, and fuzzing of the decoder.

The vectors are RFC 5769 ("Test Vectors for STUN", April 2010) §2.1-2.3, typed in from the RFC's
hex dumps. Two checks that do not go through our code confirm they were typed right: their
MESSAGE-INTEGRITY is recomputed here with the stdlib's HMAC-SHA1 under the RFC's password, and
their FINGERPRINT with ``binascii.crc32``. The real-server counterpart is test_stun_coturn.py.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.protocols import DecodeError, stun
from probe.protocols.stun import (
    ALLOCATE,
    ALLOCATE_ERROR,
    ALLOCATE_REQUEST,
    BINDING,
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    CLASS_ERROR,
    CLASS_INDICATION,
    CLASS_REQUEST,
    CLASS_SUCCESS,
    ERROR_CODE,
    FINGERPRINT,
    MAPPED_ADDRESS,
    MESSAGE_INTEGRITY,
    NONCE,
    REALM,
    REQUESTED_TRANSPORT,
    SOFTWARE,
    STUN_BAD_ATTRIBUTE,
    STUN_BAD_COOKIE,
    STUN_BAD_FINGERPRINT,
    STUN_BAD_HEADER,
    STUN_TXID_MISMATCH,
    UNKNOWN_ATTRIBUTES,
    USERNAME,
    WHATSAPP_ATTR_4024,
    WHATSAPP_ATTR_4025,
    WHATSAPP_PING,
    WHATSAPP_PONG,
    WHATSAPP_TOKEN,
    XOR_MAPPED_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Attribute,
    ErrorCode,
    StunError,
    add_fingerprint,
    address_value,
    allocate_request,
    binding_request,
    binding_success,
    encode,
    error_response,
    is_stun,
    message_type,
    parse,
    split_type,
    whatsapp_ping,
    whatsapp_pong,
    xor_address_value,
)
from tests import fuzzing

T = TypeVar("T")
STUN_FAILURES = {
    STUN_BAD_ATTRIBUTE,
    STUN_BAD_COOKIE,
    STUN_BAD_FINGERPRINT,
    STUN_BAD_HEADER,
    STUN_TXID_MISMATCH,
}


def hexdump(text: str) -> bytes:
    """Bytes from a hex dump as RFCs print it (spaces and line breaks)."""
    return bytes.fromhex("".join(text.split()))


# --- RFC 5769 §2: the vectors ------------------------------------------------------------------

# §2: "The short-term credential password is ... VOkJxbRl1RmTxUk/WvJxBt" (request and responses)
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_TXID = hexdump("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")

# §2.1 Sample Request: SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED, USERNAME
# "evtj:h6vY" (padded with spaces, which the RFC does on purpose), MESSAGE-INTEGRITY, FINGERPRINT.
RFC5769_REQUEST = hexdump("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")

# §2.2 Sample IPv4 Response: SOFTWARE "test vector" (11 bytes, padded with a space),
# XOR-MAPPED-ADDRESS 192.0.2.1 port 32853, MESSAGE-INTEGRITY, FINGERPRINT.
RFC5769_IPV4_RESPONSE = hexdump("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
""")

# §2.3 Sample IPv6 Response: the same with XOR-MAPPED-ADDRESS
# 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
RFC5769_IPV6_RESPONSE = hexdump("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
""")

RFC5769_VECTORS = [RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE]
RFC5769_MAPPED_V4 = ("192.0.2.1", 32853)
RFC5769_MAPPED_V6 = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def _independent_integrity(message: bytes) -> bool:
    """RFC 5389 §15.4 redone with the stdlib: HMAC-SHA1 over the message up to
    MESSAGE-INTEGRITY, the header length counting up to and including that attribute."""
    at = message.index(b"\x00\x08\x00\x14", 20)
    prefix = message[:2] + struct.pack(">H", at + 24 - 20) + message[4:at]
    mac = hmac.new(RFC5769_PASSWORD, prefix, hashlib.sha1).digest()
    return hmac.compare_digest(mac, message[at + 4 : at + 24])


@pytest.mark.parametrize("vector", RFC5769_VECTORS, ids=["request", "ipv4", "ipv6"])
def test_vectors_check_out_independently(vector: bytes) -> None:
    """The typed-in vectors are the RFC's: their HMAC and CRC hold without our code."""
    assert _independent_integrity(vector)
    fingerprint = binascii.crc32(vector[:-8]) ^ 0x5354554E
    assert vector[-8:] == b"\x80\x28\x00\x04" + fingerprint.to_bytes(4, "big")


def test_rfc5769_sample_request() -> None:
    message = parse(RFC5769_REQUEST, txid=RFC5769_TXID)
    assert (message.msg_type, message.method, message.message_class) == (
        BINDING_REQUEST,
        BINDING,
        CLASS_REQUEST,
    )
    assert message.txid == RFC5769_TXID
    assert message.software == "STUN test client"
    assert message.fingerprint
    assert message.attribute(USERNAME) == b"evtj:h6vY"  # the padding is not part of it
    assert message.attribute(0x0024) == bytes.fromhex("6e0001ff")  # PRIORITY
    assert message.attribute(0x8029) == bytes.fromhex("932ff9b151263b36")  # ICE-CONTROLLED
    integrity = message.attribute(MESSAGE_INTEGRITY)  # kept raw, not checked
    assert integrity is not None
    assert len(integrity) == 20
    assert [a.type for a in message.attributes] == [
        SOFTWARE,
        0x0024,
        0x8029,
        USERNAME,
        MESSAGE_INTEGRITY,
        FINGERPRINT,
    ]
    assert message.xor_mapped_address is None
    assert message.error_code is None


@pytest.mark.parametrize(
    ("vector", "mapped"),
    [(RFC5769_IPV4_RESPONSE, RFC5769_MAPPED_V4), (RFC5769_IPV6_RESPONSE, RFC5769_MAPPED_V6)],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_sample_responses(vector: bytes, mapped: tuple[str, int]) -> None:
    message = parse(vector, txid=RFC5769_TXID)
    assert (message.msg_type, message.method, message.message_class) == (
        BINDING_SUCCESS,
        BINDING,
        CLASS_SUCCESS,
    )
    assert message.is_success
    assert not message.is_error
    assert message.xor_mapped_address == mapped
    assert message.software == "test vector"  # 11 bytes; the 12th, a space, is padding
    assert message.fingerprint
    assert message.attribute(MESSAGE_INTEGRITY) is not None


@pytest.mark.parametrize(
    ("mapped", "value"),
    [
        (RFC5769_MAPPED_V4, "0001a147e112a643"),
        (RFC5769_MAPPED_V6, "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"),
    ],
)
def test_xor_address_encoder_matches_rfc5769(mapped: tuple[str, int], value: str) -> None:
    """Our encoder produces the XOR-MAPPED-ADDRESS values printed in §2.2 and §2.3."""
    assert xor_address_value(mapped, RFC5769_TXID) == bytes.fromhex(value)


@pytest.mark.parametrize("vector", RFC5769_VECTORS, ids=["request", "ipv4", "ipv6"])
def test_add_fingerprint_reproduces_rfc5769(vector: bytes) -> None:
    """Strip each vector's FINGERPRINT (and its 8 bytes from the length); adding it back with
    our encoder gives the RFC's bytes."""
    length = struct.unpack_from(">H", vector, 2)[0] - 8
    stripped = vector[:2] + struct.pack(">H", length) + vector[4:-8]
    assert add_fingerprint(stripped) == vector


@pytest.mark.parametrize("vector", RFC5769_VECTORS, ids=["request", "ipv4", "ipv6"])
def test_flipped_bit_breaks_the_fingerprint(vector: bytes) -> None:
    for index in (0x0B, len(vector) // 2, len(vector) - 9):  # txid, middle, before the CRC
        damaged = bytearray(vector)
        damaged[index] ^= 0x01
        with pytest.raises(StunError) as caught:
            parse(bytes(damaged))
        assert caught.value.failure == STUN_BAD_FINGERPRINT


# --- message types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg_type", "method", "message_class"),
    [
        (0x0001, BINDING, CLASS_REQUEST),
        (0x0011, BINDING, CLASS_INDICATION),
        (0x0101, BINDING, CLASS_SUCCESS),
        (0x0111, BINDING, CLASS_ERROR),
        (0x0003, ALLOCATE, CLASS_REQUEST),
        (0x0103, ALLOCATE, CLASS_SUCCESS),
        (0x0113, ALLOCATE, CLASS_ERROR),
        # WhatsApp's types, read with RFC 5389 §6's layout: bit 11 is M9
        (WHATSAPP_PING, 0x201, CLASS_REQUEST),
        (WHATSAPP_PONG, 0x202, CLASS_REQUEST),
        (0x3EEF, 0xFFF, CLASS_REQUEST),  # every method bit set
    ],
)
def test_type_split(msg_type: int, method: int, message_class: int) -> None:
    assert split_type(msg_type) == (method, message_class)
    assert message_type(method, message_class) == msg_type


def test_type_split_is_a_bijection() -> None:
    """All 4096 methods x 4 classes map to distinct 14-bit types and back."""
    seen = set()
    for method in range(0x1000):
        for message_class in range(4):
            msg_type = message_type(method, message_class)
            assert msg_type & 0xC000 == 0
            assert split_type(msg_type) == (method, message_class)
            seen.add(msg_type)
    assert len(seen) == 1 << 14


def test_named_types_agree_with_the_split() -> None:
    assert message_type(BINDING, CLASS_REQUEST) == BINDING_REQUEST
    assert message_type(BINDING, CLASS_SUCCESS) == BINDING_SUCCESS
    assert message_type(BINDING, CLASS_ERROR) == BINDING_ERROR
    assert message_type(ALLOCATE, CLASS_REQUEST) == ALLOCATE_REQUEST
    assert message_type(ALLOCATE, CLASS_ERROR) == ALLOCATE_ERROR


@pytest.mark.parametrize(("method", "message_class"), [(0x1000, 0), (-1, 0), (1, 4)])
def test_type_out_of_range(method: int, message_class: int) -> None:
    with pytest.raises(ValueError, match="bits"):
        message_type(method, message_class)


# --- builders: exact bytes ---------------------------------------------------------------------

TXID = bytes(range(1, 13))


def test_whatsapp_ping_is_a_bare_header() -> None:
    ping = whatsapp_ping(TXID)
    assert ping == bytes.fromhex("0801 0000 2112a442") + TXID
    assert whatsapp_pong(TXID) == bytes.fromhex("0802 0000 2112a442") + TXID
    message = parse(ping, txid=TXID)
    assert message.msg_type == WHATSAPP_PING
    assert message.attributes == ()
    assert not message.fingerprint
    assert is_stun(ping)


def test_binding_request_bytes() -> None:
    request = binding_request(TXID, software="ringprobe")
    # header (length 24), SOFTWARE "ringprobe" (9 bytes + 3 zero pad), FINGERPRINT
    body = bytes.fromhex("8022 0009") + b"ringprobe" + b"\x00" * 3
    header = bytes.fromhex("0001 0018 2112a442") + TXID
    crc = binascii.crc32(header + body) ^ 0x5354554E
    assert request == header + body + bytes.fromhex("8028 0004") + crc.to_bytes(4, "big")
    message = parse(request, txid=TXID)
    assert message.software == "ringprobe"
    assert message.fingerprint


def test_binding_request_minimal() -> None:
    assert binding_request(TXID, fingerprint=False) == bytes.fromhex("0001 0000 2112a442") + TXID
    assert len(binding_request(TXID)) == 28  # header + FINGERPRINT


def test_allocate_request_carries_udp_transport_and_extras() -> None:
    token = b"\x0a\x05token"  # 7 bytes: padded to 8
    request = allocate_request(
        TXID,
        extra_attributes=[
            (WHATSAPP_TOKEN, token),
            (WHATSAPP_ATTR_4024, b"\x01"),
            Attribute(WHATSAPP_ATTR_4025, b"\x02\x03"),
        ],
    )
    assert request[:2] == b"\x00\x03"
    # RFC 5766 §14.7: REQUESTED-TRANSPORT right after the header: 17 (UDP) and 3 zero bytes
    assert request[20:28] == bytes.fromhex("0019 0004 11000000")
    assert request[28:40] == bytes.fromhex("4000 0007") + token + b"\x00"
    message = parse(request, txid=TXID)
    assert message.method == ALLOCATE
    assert message.message_class == CLASS_REQUEST
    assert message.requested_transport == 17
    assert [a.type for a in message.attributes] == [
        REQUESTED_TRANSPORT,
        WHATSAPP_TOKEN,
        WHATSAPP_ATTR_4024,
        WHATSAPP_ATTR_4025,
        FINGERPRINT,
    ]
    assert message.attribute(WHATSAPP_TOKEN) == token
    assert message.attribute(WHATSAPP_ATTR_4025) == b"\x02\x03"


def test_allocate_request_without_fingerprint() -> None:
    request = allocate_request(TXID, fingerprint=False)
    assert request == bytes.fromhex("0003 0008 2112a442") + TXID + bytes.fromhex("0019000411000000")


@pytest.mark.parametrize("mapped", [("198.51.100.7", 3478), ("2001:db8::42", 1400), ("::", 0)])
def test_binding_success_round_trip(mapped: tuple[str, int]) -> None:
    answer = binding_success(TXID, mapped, software="Coturn-like")
    message = parse(answer, txid=TXID)
    assert message.msg_type == BINDING_SUCCESS
    assert message.xor_mapped_address == mapped
    assert message.mapped_address is None
    assert message.software == "Coturn-like"
    assert message.fingerprint


def test_error_response_401_with_realm_and_nonce() -> None:
    answer = error_response(
        ALLOCATE, TXID, 401, "Unauthorized", realm="telegram.org", nonce="abc123"
    )
    assert answer[:2] == b"\x01\x13"
    message = parse(answer, txid=TXID)
    assert message.is_error
    assert message.method == ALLOCATE
    assert message.error_code == ErrorCode(401, "Unauthorized")
    assert message.realm == "telegram.org"
    assert message.nonce == b"abc123"
    # RFC 5389 §15.6: 21 zero bits, class 4, number 1
    assert message.attribute(ERROR_CODE) == b"\x00\x00\x04\x01Unauthorized"


def test_error_response_420_unknown_attributes() -> None:
    answer = error_response(
        BINDING, TXID, 420, "Unknown Attribute", unknown_attributes=[0x4000, 0x4024, 0x4025]
    )
    message = parse(answer)
    assert message.msg_type == BINDING_ERROR
    assert message.error_code == ErrorCode(420, "Unknown Attribute")
    assert message.unknown_attributes == (0x4000, 0x4024, 0x4025)
    # three 16-bit types: 6 bytes, padded to 8
    at = answer.index(b"\x00\x0a\x00\x06")
    assert answer[at : at + 12] == bytes.fromhex("000a 0006 4000 4024 4025 0000")


def test_mapped_address_and_relayed_address_decode() -> None:
    answer = encode(
        message_type(ALLOCATE, CLASS_SUCCESS),
        TXID,
        [
            (MAPPED_ADDRESS, address_value(("203.0.113.9", 40000))),
            (XOR_RELAYED_ADDRESS, xor_address_value(("2001:db8::9", 50000), TXID)),
            (XOR_MAPPED_ADDRESS, xor_address_value(("203.0.113.9", 40000), TXID)),
            (XOR_MAPPED_ADDRESS, xor_address_value(("192.0.2.200", 1), TXID)),  # not the first
        ],
    )
    message = parse(answer)
    assert message.mapped_address == ("203.0.113.9", 40000)
    assert message.xor_relayed_address == ("2001:db8::9", 50000)
    assert message.xor_mapped_address == ("203.0.113.9", 40000)
    assert address_value(("203.0.113.9", 40000)) == bytes.fromhex("0001 9c40 cb007109")


def test_text_attributes_are_read_leniently() -> None:
    answer = encode(BINDING_SUCCESS, TXID, [(SOFTWARE, b"caf\xe9"), (REALM, b"r\xff")])
    message = parse(answer)
    assert message.software == "caf\ufffd"
    assert message.realm == "r\ufffd"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: binding_request(b"short"), "transaction id"),
        (lambda: encode(0x4000, TXID), "14 bits"),
        (lambda: encode(1, TXID, [(0x10000, b"")]), "16 bits"),
        (lambda: encode(1, TXID, [(1, b"x" * 0x10000)]), "16 bits"),
        (lambda: encode(1, TXID, [(1, b"x" * 0xFFF0)] * 2), "length field"),
        (lambda: binding_success(TXID, ("192.0.2.1", 70000)), "port"),
        (lambda: binding_success(TXID, ("not-an-ip", 1)), "does not appear"),
        (lambda: error_response(BINDING, TXID, 200, "OK"), "300-699"),
        (lambda: error_response(BINDING, TXID, 400, "x" * 764), "763"),
        (lambda: add_fingerprint(b"short"), "not an encoded"),
    ],
)
def test_encoders_reject_what_cannot_be_encoded(call: Callable[[], bytes], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- the decoder: each failure -----------------------------------------------------------------

GOOD = error_response(ALLOCATE, TXID, 401, "Unauthorized", realm="r", nonce="n", fingerprint=False)


def with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack(">H", length) + data[4:]


def header(msg_type: int = BINDING_SUCCESS, length: int = 0) -> bytes:
    return struct.pack(">HHI", msg_type, length, stun.MAGIC_COOKIE) + TXID


def after_fingerprint() -> bytes:
    """A valid FINGERPRINT (computed over the final length) followed by an empty SOFTWARE."""
    prefix = header(length=12)
    crc = binascii.crc32(prefix) ^ 0x5354554E
    return prefix + bytes.fromhex("8028 0004") + crc.to_bytes(4, "big") + bytes.fromhex("80220000")


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (b"", STUN_BAD_HEADER),
        (header()[:19], STUN_BAD_HEADER),
        (b"\x40" + header()[1:], STUN_BAD_HEADER),  # a leading bit set (RTP-ish)
        (b"\x80" + header()[1:], STUN_BAD_HEADER),
        (header()[:4] + b"\x00\x00\x00\x00" + TXID, STUN_BAD_COOKIE),  # RFC 3489 style
        (with_length(GOOD, len(GOOD) - 20 + 4), STUN_BAD_HEADER),  # says more than there is
        (with_length(GOOD, len(GOOD) - 20 - 4), STUN_BAD_HEADER),  # says less
        (GOOD + b"\x00\x00\x00\x00", STUN_BAD_HEADER),  # trailing bytes
        (header(length=2) + b"\x00\x00", STUN_BAD_HEADER),  # not a multiple of 4
        # an attribute claiming 8 bytes with 4 left
        (header(length=8) + bytes.fromhex("8022 0008 61626364"), STUN_BAD_ATTRIBUTE),
        # FINGERPRINT of the wrong size
        (header(length=12) + bytes.fromhex("8028 0008") + bytes(8), STUN_BAD_ATTRIBUTE),
        # an attribute after FINGERPRINT
        (after_fingerprint(), STUN_BAD_ATTRIBUTE),
        # XOR-MAPPED-ADDRESS with an unknown family, or the wrong size for its family
        (encode(BINDING_SUCCESS, TXID, [(XOR_MAPPED_ADDRESS, bytes(8))]), STUN_BAD_ATTRIBUTE),
        (
            encode(BINDING_SUCCESS, TXID, [(XOR_MAPPED_ADDRESS, b"\x00\x02" + bytes(6))]),
            STUN_BAD_ATTRIBUTE,
        ),
        (encode(BINDING_SUCCESS, TXID, [(MAPPED_ADDRESS, b"\x00\x01")]), STUN_BAD_ATTRIBUTE),
        # ERROR-CODE class 2 (a success code), number 100, or too short
        (encode(BINDING_ERROR, TXID, [(ERROR_CODE, b"\x00\x00\x02\x00")]), STUN_BAD_ATTRIBUTE),
        (encode(BINDING_ERROR, TXID, [(ERROR_CODE, b"\x00\x00\x04\x64")]), STUN_BAD_ATTRIBUTE),
        (encode(BINDING_ERROR, TXID, [(ERROR_CODE, b"\x00\x04")]), STUN_BAD_ATTRIBUTE),
        (encode(BINDING_ERROR, TXID, [(UNKNOWN_ATTRIBUTES, b"\x40")]), STUN_BAD_ATTRIBUTE),
        (encode(ALLOCATE_REQUEST, TXID, [(REQUESTED_TRANSPORT, b"\x11")]), STUN_BAD_ATTRIBUTE),
    ],
)
def test_malformed(data: bytes, failure: str) -> None:
    with pytest.raises(StunError) as caught:
        parse(data)
    assert caught.value.failure == failure
    assert isinstance(caught.value, DecodeError)
    assert str(caught.value)


def test_txid_mismatch_is_reported_for_a_valid_message() -> None:
    with pytest.raises(StunError) as caught:
        parse(RFC5769_IPV4_RESPONSE, txid=TXID)
    assert caught.value.failure == STUN_TXID_MISMATCH


def test_the_parser_takes_any_bytes_like() -> None:
    assert parse(bytearray(RFC5769_IPV4_RESPONSE)).xor_mapped_address == RFC5769_MAPPED_V4
    assert parse(memoryview(GOOD)).realm == "r"


def test_padding_values_are_ignored() -> None:
    """RFC 5389 §15: padding "may be any value" (the RFC 5769 request pads USERNAME with
    spaces); only the FINGERPRINT, which covers it, cares."""
    data = bytearray(encode(BINDING_SUCCESS, TXID, [(SOFTWARE, b"abc"), (NONCE, b"n")]))
    data[20 + 4 + 3] = 0xEE
    data[-1] = 0x55
    message = parse(bytes(data))
    assert (message.software, message.nonce) == ("abc", b"n")


def test_is_stun() -> None:
    for vector in [*RFC5769_VECTORS, GOOD, whatsapp_ping(TXID)]:
        assert is_stun(vector)
    assert not is_stun(b"")
    assert not is_stun(GOOD[:-4])
    assert not is_stun(b"\x90\x78" + GOOD[2:])  # an RTP first byte
    assert not is_stun(header()[:4] + b"\x21\x12\xa4\x43" + TXID)  # cookie off by one


def test_exported_names_exist() -> None:
    for name in stun.__all__:
        assert hasattr(stun, name), name


# --- properties --------------------------------------------------------------------------------

txids = st.binary(min_size=12, max_size=12)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 0xFFFF)


@settings(max_examples=200, deadline=None)
@given(txid=txids, host=st.one_of(ipv4, ipv6), port=ports, software=st.text(max_size=40))
def test_binding_success_round_trips(txid: bytes, host: str, port: int, software: str) -> None:
    message = parse(binding_success(txid, (host, port), software=software), txid=txid)
    assert message.xor_mapped_address == (str(ipaddress.ip_address(host)), port)
    assert message.software == software


@settings(max_examples=200, deadline=None)
@given(
    txid=txids,
    method=st.integers(0, 0xFFF),
    message_class=st.integers(0, 3),
    attributes=st.lists(st.tuples(st.integers(0x8030, 0xFFFF), st.binary(max_size=40)), max_size=6),
    fingerprint=st.booleans(),
)
def test_encode_parse_round_trips(
    txid: bytes,
    method: int,
    message_class: int,
    attributes: list[tuple[int, bytes]],
    fingerprint: bool,
) -> None:
    """Arbitrary (comprehension-optional, undecoded) attributes come back as they went in."""
    data = encode(message_type(method, message_class), txid, attributes, fingerprint=fingerprint)
    assert is_stun(data)
    message = parse(data, txid=txid)
    assert (message.method, message.message_class) == (method, message_class)
    got = [(a.type, a.value) for a in message.attributes]
    assert got == attributes + ([(FINGERPRINT, data[-4:])] if fingerprint else [])
    assert message.fingerprint == fingerprint


# --- fuzzing: any bytes give a parse or a StunError --------------------------------------------

fuzz = settings(max_examples=200, deadline=None)
garbage = st.binary(max_size=512)


def parse_or_error(call: Callable[[], T]) -> T | None:
    return fuzzing.parse_or_error(call, StunError, STUN_FAILURES)


mutations = fuzzing.mutations


def stun_shaped(body: bytes) -> bytes:
    """Random attribute bytes behind a valid header whose length matches: gets past the header
    checks so the attribute walk is what gets fuzzed."""
    body = body[: len(body) - len(body) % 4]
    return header(BINDING_ERROR, len(body)) + body


# Messages without FINGERPRINT, so that mutations reach the attribute decoders instead of
# stopping at the CRC.
UNPROTECTED = [
    GOOD,
    binding_success(TXID, RFC5769_MAPPED_V6, fingerprint=False),
    error_response(BINDING, TXID, 420, "U", unknown_attributes=[1, 2, 3], fingerprint=False),
    allocate_request(TXID, fingerprint=False, extra_attributes=[(WHATSAPP_TOKEN, b"t")]),
]


@fuzz
@given(
    data=st.one_of(
        garbage,
        garbage.map(stun_shaped),
        *(mutations(v) for v in RFC5769_VECTORS),
        *(mutations(v) for v in UNPROTECTED),
    )
)
def test_fuzz_parse(data: bytes) -> None:
    assert isinstance(is_stun(data), bool)
    message = parse_or_error(lambda: parse(data))
    if message is not None:
        assert is_stun(data)
        assert len(message.txid) == 12
        assert sum(4 + len(a.value) + (-len(a.value) % 4) for a in message.attributes) == (
            len(data) - 20
        )


@fuzz
@given(data=st.one_of(*(mutations(v) for v in RFC5769_VECTORS)), txid=txids)
def test_fuzz_parse_with_txid(data: bytes, txid: bytes) -> None:
    message = parse_or_error(lambda: parse(data, txid=txid))
    if message is not None:
        assert message.txid == txid
