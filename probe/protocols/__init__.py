"""Sans-IO protocol cores: the first steps of each app's own protocol as pure encode/decode.

Nothing here opens a socket, reads a clock or sleeps: callers pass bytes in (and the time, and a
source of random bytes where one is needed) and get bytes or parsed values out. The asyncio code in
``probe.checks`` only moves bytes, and the lab's emulators reuse the same code on the server side.

Modules:
    obfuscated2   MTProto transport: the obfuscated2 init, AES-256-CTR streams, abridged /
                  intermediate / padded-intermediate framing, client and server state
    mtproto       unencrypted MTProto messages: ``req_pq_multi`` and ``resPQ``
    whatsapp      WhatsApp chat prologue: edge-routing prefix, ``WA`` header, the Noise XX first
                  message, and the server's first (ServerHello) frame
    stun          RFC 5389 / 5766 STUN: Binding, Allocate, WhatsApp's 0x0801 ping / 0x0802 pong,
                  XOR-MAPPED-ADDRESS, ERROR-CODE, REALM, FINGERPRINT
    tgcalls       Telegram reflector: the 40-byte hello, the reflector's reply, data packets
    rtp           RTP v2 with the one-byte header extension (RFC 3550, RFC 8285)
    echo          ringprobe's own: the trailer of call-shaped flows and the reflector's echo
                  (docs/callflow.md)

Every decoder accepts any bytes and either returns a parse or raises the module's error, never
anything else (the tests fuzz each one). The errors carry a stable ``failure`` string for records:

    ValueError
    └── DecodeError        bytes that are not the protocol expected; ``.failure`` names how
        ├── MTProtoError   (probe.protocols.mtproto) ``.code`` holds a transport error's code
        ├── WhatsAppError  (probe.protocols.whatsapp)
        ├── StunError      (probe.protocols.stun)
        ├── ReflectorError (probe.protocols.tgcalls)
        ├── RtpError       (probe.protocols.rtp)
        └── EchoError      (probe.protocols.echo)

A check translates them at its boundary: ``raise ProtocolError(exc.failure, str(exc)) from exc``.
Programming errors (an encoder given a value it cannot encode) raise plain ValueError.
"""

from __future__ import annotations

__all__ = ["DecodeError"]


class DecodeError(ValueError):
    """Received bytes are not the protocol expected; ``failure`` is the string a record stores."""

    def __init__(self, failure: str, message: str) -> None:
        self.failure = failure
        super().__init__(message)
