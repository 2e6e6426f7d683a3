"""MTProto transport over obfuscated2, sans-IO, for both ends of a TCP connection.

A client opens with a 64-byte init (core.telegram.org/mtproto/mtproto-transports#transport-
obfuscation)::

    bytes  0..8    random; the first byte is not 0xef, the first four are no other protocol's
                   opening word, bytes 4..8 are not zero (each would name another transport)
    bytes  8..40   AES-256-CTR key, client -> server
    bytes 40..56   its IV (the initial 128-bit big-endian counter block)
    bytes 56..60   transport tag: 0xefefefef abridged, 0xeeeeeeee intermediate,
                   0xdddddddd padded intermediate
    bytes 60..62   DC id, signed little-endian int16 (+10000 for test DCs, negative for media
                   DCs); required only by MTProxies, sent by tdlib whenever it knows the DC
    bytes 62..64   random

The same 64 bytes reversed give the server -> client key (reversed bytes 8..40) and IV (reversed
bytes 40..56). The client encrypts the whole init with its stream and sends the plaintext init
with bytes 56..64 replaced by their ciphertext, so tag and DC id travel encrypted while the
key material stays readable to the server. Both streams then run on for the whole connection:
every frame is framed first, then encrypted.

Framings (same page): abridged (length / 4 in one byte, or 0x7f and three little-endian bytes),
intermediate (4-byte little-endian length), padded intermediate (like intermediate, with 0-15
random bytes after the payload, counted in the length).

Decoders raise only ``MTProtoError`` (from ``probe.protocols.mtproto``): ``BAD_FRAMING`` for an
envelope that cannot be right, ``BAD_INIT`` for an init a server cannot use.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from probe.protocols.mtproto import BAD_FRAMING, BAD_INIT, MTProtoError

__all__ = [
    "FORBIDDEN_FIRST_WORDS",
    "INIT_LEN",
    "MAX_PAYLOAD_LEN",
    "FrameDecoder",
    "Framing",
    "ObfuscatedClient",
    "ObfuscatedServer",
    "derive_keys",
    "encode_dc_id",
    "encode_frame",
    "make_init",
]

RandomBytes = Callable[[int], bytes]

# core.telegram.org/mtproto/mtproto-transports#transport-obfuscation: "a 64-byte (512-bit) random
# initialization payload"
INIT_LEN: Final = 64
# Same section: key at bytes 8-40, IV at 40-56, protocol identifier at 56, DC id at 60.
_KEY: Final = slice(8, 40)
_IV: Final = slice(40, 56)
_TAG: Final = slice(56, 60)
_DC: Final = slice(60, 62)
_ENCRYPTED_TAIL: Final = slice(56, 64)
# Same section: the first byte must not be 0xef (it announces plain abridged).
_ABRIDGED_MARK: Final = 0xEF
# First four bytes an init must not start with, each another protocol a DC's port accepts: HTTP
# methods (HEAD, POST, GET, OPTI[ONS]), the plain intermediate and padded-intermediate tags, and
# a TLS handshake record (16 03 01 02). Source: the obfuscation section's pseudocode and tdlib
# td/mtproto/TcpTransport.cpp ObfuscatedTransport::init. b"PVrG" is avoided by Telethon
# (telethon/network/connection/tcpobfuscated.py) and costs nothing to avoid too.
FORBIDDEN_FIRST_WORDS: Final = frozenset(
    {
        b"HEAD",
        b"POST",
        b"GET ",
        b"OPTI",
        b"\xdd\xdd\xdd\xdd",
        b"\xee\xee\xee\xee",
        b"\x16\x03\x01\x02",
        b"PVrG",
    }
)
# Same section: bytes 4-8 all zero would announce the full transport with TCP seqno 0.
_FULL_TRANSPORT_SEQ0: Final = b"\x00\x00\x00\x00"
# Four forbidden words and one forbidden byte reject about 1 draw in 250; a source of random
# bytes that keeps failing this many times in a row is broken, not unlucky.
_MAX_INIT_DRAWS: Final = 1000

# core.telegram.org/mtproto/mtproto-transports#quick-ack: the length's most significant bit
_QUICK_ACK_BIT: Final = 0x8000_0000
# core.telegram.org/mtproto/mtproto-transports#abridged: one length byte up to 0x7e, else 0x7f
# followed by 3 little-endian bytes; both count 4-byte words.
_ABRIDGED_LONG: Final = 0x7F
_ABRIDGED_MAX_WORDS: Final = (1 << 24) - 1
# core.telegram.org/mtproto/mtproto-transports#padded-intermediate: "random padding string of
# length 0-15"; tdlib IntermediateTransport::write_prepare_inplace draws it as random % 16.
_MAX_PADDING: Final = 15
# Ours: the largest payload a decoder waits for. Telegram's largest messages (file parts of
# 512 KiB plus headers) fit with room to spare; a bigger declared length means garbage, usually a
# stream decrypted with the wrong key, and is reported at once rather than waited for.
MAX_PAYLOAD_LEN: Final = 1 << 21


class Framing(enum.Enum):
    """The MTProto transport inside the obfuscation; the value is what records store."""

    ABRIDGED = "abridged"
    INTERMEDIATE = "intermediate"
    PADDED_INTERMEDIATE = "padded_intermediate"

    @property
    def tag(self) -> bytes:
        """The 4-byte protocol identifier placed at init bytes 56..60."""
        return _TAGS[self]

    @classmethod
    def from_tag(cls, tag: bytes) -> Framing | None:
        return _FRAMINGS.get(tag)


_TAGS: Final = {
    # core.telegram.org/mtproto/mtproto-transports#transport-obfuscation: 0xef padded to 4 bytes
    Framing.ABRIDGED: b"\xef\xef\xef\xef",
    # core.telegram.org/mtproto/mtproto-transports#intermediate: 0xeeeeeeee
    Framing.INTERMEDIATE: b"\xee\xee\xee\xee",
    # core.telegram.org/mtproto/mtproto-transports#padded-intermediate: 0xdddddddd
    Framing.PADDED_INTERMEDIATE: b"\xdd\xdd\xdd\xdd",
}
_FRAMINGS: Final = {tag: framing for framing, tag in _TAGS.items()}


def encode_dc_id(dc: int, *, test: bool = False, media: bool = False) -> int:
    """The DC id as init bytes 60..62 carry it (core.telegram.org/mtproto/mtproto-transports#
    transport-obfuscation): 10000 added for test servers, negated for media DCs."""
    value = dc + 10000 if test else dc
    value = -value if media else value
    if not -(1 << 15) <= value < (1 << 15):
        raise ValueError(f"DC id {value} does not fit a signed 16-bit field")
    return value


def _ctr(key: bytes, iv: bytes) -> CipherContext:
    # AES-256-CTR with the IV as the full 128-bit big-endian counter block, as OpenSSL's CTR mode
    # (which tdlib and the docs' pseudocode use) and cryptography's CTR both do.
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


def derive_keys(init: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """``(key, iv)`` of the client -> server stream, then of the server -> client stream, from
    a 64-byte init (plaintext or as sent: the bytes used are 8..56, which travel in clear)."""
    if len(init) != INIT_LEN:
        raise ValueError(f"an init is {INIT_LEN} bytes, not {len(init)}")
    reverse = init[::-1]
    return init[_KEY], init[_IV], reverse[_KEY], reverse[_IV]


def _init_problem(init: bytes) -> str | None:
    """Why ``init`` cannot open an obfuscated2 connection, or None when it can."""
    if init[0] == _ABRIDGED_MARK:
        return "first byte 0xef announces plain abridged"
    if init[:4] in FORBIDDEN_FIRST_WORDS:
        return f"first word {init[:4]!r} announces another protocol"
    if init[4:8] == _FULL_TRANSPORT_SEQ0:
        return "bytes 4..8 are zero, which announces the full transport"
    return None


def make_init(
    framing: Framing, dc_id: int | None = None, *, random_bytes: RandomBytes = os.urandom
) -> bytes:
    """A plaintext 64-byte init: random bytes redrawn until no other transport could be read
    into them, with the framing's tag at 56..60 and, when given, ``dc_id`` at 60..62 (None
    leaves those bytes random, as Telethon does)."""
    for _ in range(_MAX_INIT_DRAWS):
        init = bytearray(random_bytes(INIT_LEN))
        if len(init) != INIT_LEN:
            raise ValueError(f"random_bytes returned {len(init)} bytes, not {INIT_LEN}")
        init[_TAG] = framing.tag
        if dc_id is not None:
            init[_DC] = dc_id.to_bytes(2, "little", signed=True)
        if _init_problem(bytes(init)) is None:
            return bytes(init)
    raise RuntimeError(f"random_bytes gave no usable init in {_MAX_INIT_DRAWS} draws")


def encode_frame(
    framing: Framing, payload: bytes, *, random_bytes: RandomBytes = os.urandom
) -> bytes:
    """One payload in the framing's envelope (not yet encrypted)."""
    if framing is Framing.ABRIDGED:
        words, remainder = divmod(len(payload), 4)
        if remainder:
            raise ValueError(f"abridged frames hold whole 4-byte words, not {len(payload)} bytes")
        if words > _ABRIDGED_MAX_WORDS:
            raise ValueError(f"{len(payload)} bytes exceed the abridged length field")
        if words < _ABRIDGED_LONG:
            return bytes([words]) + payload
        return bytes([_ABRIDGED_LONG]) + words.to_bytes(3, "little") + payload
    padding = b""
    if framing is Framing.PADDED_INTERMEDIATE:
        padding = random_bytes(random_bytes(1)[0] % (_MAX_PADDING + 1))
    total = len(payload) + len(padding)
    if total >= _QUICK_ACK_BIT:
        raise ValueError(f"{len(payload)} bytes exceed the intermediate length field")
    return total.to_bytes(4, "little") + payload + padding


class FrameDecoder:
    """Incremental decoder of one direction of a framed stream (already decrypted).

    ``from_client`` says whose bytes these are: a client may set the quick-ack bit on a
    request's length (core.telegram.org/mtproto/mtproto-transports#quick-ack), which is
    stripped and counted in ``quick_ack_requests``; a server's quick-ack token only ever
    answers such a request, and since our client never asks, one from a server is an error.
    After an error the stream is out of step for good: every later ``feed`` raises it again.
    """

    __slots__ = ("_buffer", "_error", "framing", "from_client", "max_payload", "quick_ack_requests")

    def __init__(
        self, framing: Framing, *, from_client: bool, max_payload: int = MAX_PAYLOAD_LEN
    ) -> None:
        self.framing = framing
        self.from_client = from_client
        self.max_payload = max_payload
        self.quick_ack_requests = 0
        self._buffer = bytearray()
        self._error: MTProtoError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every payload now complete, in order."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        payloads: list[bytes] = []
        try:
            while (payload := self._next()) is not None:
                payloads.append(payload)
        except MTProtoError as exc:
            self._error = exc
            raise
        return payloads

    def _next(self) -> bytes | None:
        if self.framing is Framing.ABRIDGED:
            header = self._abridged_header()
        else:
            header = self._intermediate_header()
        if header is None:
            return None
        header_len, length = header
        if length > self.max_payload:
            raise MTProtoError(
                BAD_FRAMING, f"{self.framing.value} frame of {length} bytes exceeds the limit"
            )
        end = header_len + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[header_len:end])
        del self._buffer[:end]
        if self.framing is Framing.PADDED_INTERMEDIATE:
            # MTProto payloads are whole 4-byte words, so an unaligned tail is padding for sure;
            # aligned padding cannot be told from payload here and is left to the message
            # parser, which reads message_data_length (Telethon strips the same way).
            payload = payload[: len(payload) - len(payload) % 4]
        return payload

    def _abridged_header(self) -> tuple[int, int] | None:
        buf = self._buffer
        if not buf:
            return None
        first = buf[0]
        if first & 0x80:
            if not self.from_client:
                raise MTProtoError(BAD_FRAMING, "server sent a quick-ack token; none was asked")
            self.quick_ack_requests += 1
            first &= 0x7F
        if first < _ABRIDGED_LONG:
            return 1, first * 4
        if len(buf) < 4:
            return None
        return 4, int.from_bytes(buf[1:4], "little") * 4

    def _intermediate_header(self) -> tuple[int, int] | None:
        buf = self._buffer
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "little")
        if length & _QUICK_ACK_BIT:
            if not self.from_client:
                raise MTProtoError(BAD_FRAMING, "server sent a quick-ack token; none was asked")
            self.quick_ack_requests += 1
            length &= ~_QUICK_ACK_BIT
        return 4, length


class _ObfuscatedStream:
    """The state both ends share: an outgoing and an incoming AES-CTR stream and a decoder."""

    __slots__ = ("_decoder", "_decryptor", "_encryptor", "_random_bytes", "framing")

    def __init__(
        self,
        framing: Framing,
        encryptor: CipherContext,
        decryptor: CipherContext,
        *,
        peer_is_client: bool,
        random_bytes: RandomBytes,
    ) -> None:
        self.framing = framing
        self._encryptor = encryptor
        self._decryptor = decryptor
        self._decoder = FrameDecoder(framing, from_client=peer_is_client)
        self._random_bytes = random_bytes

    @property
    def quick_ack_requests(self) -> int:
        """Quick acks the peer asked for (server side only; a client never accepts them)."""
        return self._decoder.quick_ack_requests

    def encrypt(self, payload: bytes) -> bytes:
        """The wire bytes for one payload: framed, then encrypted with the outgoing stream."""
        frame = encode_frame(self.framing, payload, random_bytes=self._random_bytes)
        return self._encryptor.update(frame)

    def feed(self, data: bytes) -> list[bytes]:
        """Decrypt received wire bytes; return every payload now complete. Raises
        ``MTProtoError(BAD_FRAMING)`` when the decrypted stream cannot be framed."""
        return self._decoder.feed(self._decryptor.update(data))


class ObfuscatedClient(_ObfuscatedStream):
    """The client end: send ``init_bytes()`` first, then ``encrypt(payload)`` per payload;
    pass whatever arrives to ``feed``.

    The default framing is intermediate: what tdlib (the official apps' library) uses inside
    obfuscation when no proxy asks for padding (td/mtproto/TcpTransport.cpp).
    """

    __slots__ = ("_init", "dc_id")

    def __init__(
        self,
        framing: Framing = Framing.INTERMEDIATE,
        dc_id: int | None = None,
        *,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        plain = make_init(framing, dc_id, random_bytes=random_bytes)
        out_key, out_iv, in_key, in_iv = derive_keys(plain)
        encryptor = _ctr(out_key, out_iv)
        # The init is the first thing the outgoing stream encrypts; only its tail is sent
        # encrypted, and the stream runs on from byte 64 for the frames.
        self._init = plain[: _ENCRYPTED_TAIL.start] + encryptor.update(plain)[_ENCRYPTED_TAIL]
        self.dc_id = dc_id
        super().__init__(
            framing,
            encryptor,
            _ctr(in_key, in_iv),
            peer_is_client=False,
            random_bytes=random_bytes,
        )

    def init_bytes(self) -> bytes:
        """The 64 bytes to send before anything else."""
        return self._init


class ObfuscatedServer(_ObfuscatedStream):
    """The server end, built from the 64 bytes a client opened with (``from_init``): it
    decrypts the client's frames with ``feed`` and encrypts answers with ``encrypt``."""

    __slots__ = ("dc_id",)

    def __init__(
        self,
        framing: Framing,
        dc_id: int,
        encryptor: CipherContext,
        decryptor: CipherContext,
        *,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        self.dc_id = dc_id
        super().__init__(
            framing, encryptor, decryptor, peer_is_client=True, random_bytes=random_bytes
        )

    @classmethod
    def from_init(cls, init: bytes, *, random_bytes: RandomBytes = os.urandom) -> ObfuscatedServer:
        """Derive the mirrored streams from a client's init. Raises ``MTProtoError(BAD_INIT)``
        when the bytes are not an obfuscated2 init: wrong size, another protocol's opening, or
        an unknown transport tag (a sign of a wrong key or of no obfuscation at all).

        ``dc_id`` is whatever bytes 60..62 decrypt to; clients that do not set it (Telethon)
        leave random bytes there.
        """
        if len(init) != INIT_LEN:
            raise MTProtoError(BAD_INIT, f"init of {len(init)} bytes, not {INIT_LEN}")
        problem = _init_problem(init)
        if problem is not None:
            raise MTProtoError(BAD_INIT, f"not an obfuscated2 init: {problem}")
        in_key, in_iv, out_key, out_iv = derive_keys(init)
        decryptor = _ctr(in_key, in_iv)
        plain_tail = decryptor.update(init)[_ENCRYPTED_TAIL]
        tag = plain_tail[:4]
        framing = Framing.from_tag(tag)
        if framing is None:
            raise MTProtoError(BAD_INIT, f"unknown transport tag {tag.hex()} in the init")
        dc_id = int.from_bytes(plain_tail[4:6], "little", signed=True)
        return cls(framing, dc_id, _ctr(out_key, out_iv), decryptor, random_bytes=random_bytes)
