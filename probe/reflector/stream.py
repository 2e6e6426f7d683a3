"""The TLS stream request of the SNI-throttling test, sans-IO.

After the TLS handshake (any SNI) the client sends one line::

    RPS1 <nonce> <n> <mac>\\n

- ``nonce``: 16 random bytes as 32 lowercase hex digits (one per request);
- ``n``: the bytes wanted, decimal, no sign, at most 10 digits;
- ``mac``: HMAC-SHA256(secret, ``b"RPS1 " + nonce + b" " + n``) (the line's bytes before the
  last space), first 16 bytes as 32 lowercase hex digits.

The reflector then sends ``min(n, max_stream_bytes)`` bytes of random-looking data and closes
(TLS close_notify); a line that is not exactly this, or whose MAC does not verify, gets the
connection closed with no application data sent. The line is ours (no standard covers it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from probe.protocols import DecodeError

__all__ = [
    "MAX_LINE",
    "NONCE_LEN",
    "STREAM_MAGIC",
    "StreamRequest",
    "StreamRequestError",
    "build_stream_request",
    "parse_stream_request",
]

STREAM_MAGIC: Final = b"RPS1"
NONCE_LEN: Final = 16
MAC_LEN: Final = 16
MAX_N: Final = 9_999_999_999  # 10 decimal digits
# "RPS1" + 3 spaces + 32 + 10 + 32 hex/decimal digits + "\n"
MAX_LINE: Final = len(STREAM_MAGIC) + 3 + 2 * NONCE_LEN + 10 + 2 * MAC_LEN + 1
_LINE: Final = re.compile(rb"RPS1 ([0-9a-f]{32}) (0|[1-9][0-9]{0,9}) ([0-9a-f]{32})\n")
# The failure string of a line that is not a valid request.
STREAM_BAD_REQUEST: Final = "stream_bad_request"


class StreamRequestError(DecodeError):
    """Not a valid stream request line: wrong shape or a MAC that does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__(STREAM_BAD_REQUEST, message)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    nonce: bytes
    n: int
    """Bytes the client asked for (before the reflector's cap)."""


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, signed, hashlib.sha256).digest()[:MAC_LEN]


def build_stream_request(secret: bytes, nonce: bytes, n: int) -> bytes:
    """The request line for ``n`` bytes, newline included."""
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"a nonce is {NONCE_LEN} bytes")
    if not 0 <= n <= MAX_N:
        raise ValueError(f"n must be in 0..{MAX_N}")
    signed = STREAM_MAGIC + b" " + nonce.hex().encode() + b" " + str(n).encode()
    return signed + b" " + _mac(secret, signed).hex().encode() + b"\n"


def parse_stream_request(secret: bytes, line: bytes) -> StreamRequest:
    """The request of a line whose MAC verifies under ``secret``; StreamRequestError otherwise."""
    match = _LINE.fullmatch(line)
    if match is None:
        raise StreamRequestError("not an RPS1 request line")
    signed = line[: match.start(3) - 1]
    if not hmac.compare_digest(bytes.fromhex(match[3].decode()), _mac(secret, signed)):
        raise StreamRequestError("stream request MAC does not verify")
    return StreamRequest(bytes.fromhex(match[1].decode()), int(match[2]))
