"""The ``whatsapp_chat`` check: does a WhatsApp chat server answer the client's prologue?

The opening of WhatsApp's chat protocol as its clients send it: the ``WA`` connection header and
the Noise XX first message (an ephemeral key) in one write, then the server's first frame, which
must have the ServerHello's shape (probe.protocols.whatsapp does the bytes; this module only
moves them). The handshake is never completed: the shape of the answer is the measurement.

details: ``server_hello`` (bool), ``bytes_sent``, ``bytes_received``; after a ServerHello also
``frame_length``, ``static_length`` and ``payload_length`` (null when a field was absent).
timings: ``connect``, ``server_hello``.
failures: the network ones (base.classify); ``eof_error`` when the server hangs up first;
``generic_timeout_error`` when it stays silent; the decoder's ``whatsapp_*`` string otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.model import Failure, Record, Target
from probe.protocols.whatsapp import (
    MAX_HELLO_LEN,
    ServerHello,
    WhatsAppError,
    build_client_prologue,
    new_ephemeral_key,
    parse_server_hello,
)

CHECK = "whatsapp_chat"

__all__ = ["CHECK", "whatsapp_chat"]

# The largest first frame the decoder accepts, with its 3-byte length (whatsmeow
# socket/framesocket.go FrameLengthSize): more bytes than this can never complete a hello.
MAX_READ: Final = MAX_HELLO_LEN + 3
_CHUNK: Final = 4096


async def whatsapp_chat(
    ctx: CheckContext, target: Target, address: str, transaction_id: int
) -> Record:
    """Connect to ``address:target.port``, send the prologue, and read until the server's first
    frame parses as a ServerHello (or the check's timeout)."""
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(server_hello=False, bytes_sent=0, bytes_received=0)
        ctx.guard(address)  # before any socket exists: a refused address sees no SYN
        reader, writer = await asyncio.open_connection(address, target.port)
        step.mark("connect")
        try:
            ctx.note_local(writer.get_extra_info("sockname"))
            wire = build_client_prologue(new_ephemeral_key())
            writer.write(wire)
            await writer.drain()
            step.details["bytes_sent"] = len(wire)
            hello = await _read_server_hello(reader, step)
            step.mark("server_hello")
            step.details.update(
                server_hello=True,
                frame_length=hello.frame_length,
                static_length=hello.static_length,
                payload_length=hello.payload_length,
            )
        finally:
            writer.close()
            # The answer is what was measured; a reset while hanging up does not undo it.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return step.record


async def _read_server_hello(reader: asyncio.StreamReader, step: Step) -> ServerHello:
    """Read until the buffered bytes hold the server's whole first frame, then parse it."""
    buffer = b""
    while len(buffer) < MAX_READ:
        data = await reader.read(min(_CHUNK, MAX_READ - len(buffer)))
        if not data:
            raise EOFError("connection closed before the server hello")
        buffer += data
        step.details["bytes_received"] = len(buffer)
        try:
            hello = parse_server_hello(buffer)
        except WhatsAppError as exc:
            raise ProtocolError(exc.failure, str(exc)) from exc
        if hello is not None:
            return hello
    # Unreachable while MAX_READ covers the largest frame decode_frame accepts; kept so a change
    # there cannot turn this loop into an unbounded one.
    raise ProtocolError(Failure.WHATSAPP_BAD_FRAMING, f"no whole frame in {MAX_READ} bytes")
