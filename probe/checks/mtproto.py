"""The ``mtproto`` check: does a Telegram data center answer ``req_pq_multi`` with ``resPQ``?

The first round trip of MTProto as the official apps make it: an obfuscated2 init and an
unencrypted ``req_pq_multi`` in one write, then the server's ``resPQ`` (probe.protocols.obfuscated2
and probe.protocols.mtproto do the bytes; this module only moves them). A TCP connect that
succeeds while this answer never comes is what a censor dropping MTProto by payload looks like.

details: ``framing``, ``dc_id`` (when given), ``res_pq`` (bool), ``bytes_sent``,
``bytes_received``; after a resPQ also ``server_nonce`` (hex) and ``fingerprints`` (count).
timings: ``connect``, ``res_pq``.
failures: the network ones (base.classify); ``eof_error`` when the server hangs up first;
``generic_timeout_error`` when it stays silent; the decoder's ``mtproto_*`` string otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Final

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.model import Failure, Record, Target
from probe.protocols.mtproto import (
    NONCE_LEN,
    MTProtoError,
    ResPQ,
    build_req_pq_multi,
    client_msg_id,
    parse_res_pq,
)
from probe.protocols.obfuscated2 import Framing, ObfuscatedClient

CHECK = "mtproto"

__all__ = ["CHECK", "mtproto_handshake"]

# Ours: a resPQ is under 100 bytes (two nonces, pq, a few fingerprints); a server that sends
# this much without one is not answering us, and a probe must not download whatever it sends.
MAX_READ: Final = 64 * 1024
_CHUNK: Final = 4096


async def mtproto_handshake(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    framing: Framing = Framing.INTERMEDIATE,
    dc_id: int | None = None,
) -> Record:
    """Connect to ``address:target.port``, send the obfuscated2 init and ``req_pq_multi``, and
    read until one ``resPQ`` echoing our nonce is decoded (or the check's timeout)."""
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(framing=framing.value, res_pq=False, bytes_sent=0, bytes_received=0)
        if dc_id is not None:
            step.details["dc_id"] = dc_id
        ctx.guard(address)  # before any socket exists: a refused address sees no SYN
        reader, writer = await asyncio.open_connection(address, target.port)
        step.mark("connect")
        try:
            ctx.note_local(writer.get_extra_info("sockname"))
            client = ObfuscatedClient(framing, dc_id)
            nonce = os.urandom(NONCE_LEN)
            request = build_req_pq_multi(nonce, client_msg_id(time.time()))
            wire = client.init_bytes() + client.encrypt(request)
            writer.write(wire)
            await writer.drain()
            step.details["bytes_sent"] = len(wire)
            res_pq = await _read_res_pq(reader, client, nonce, step)
            step.mark("res_pq")
            step.details.update(
                res_pq=True,
                server_nonce=res_pq.server_nonce.hex(),
                fingerprints=len(res_pq.fingerprints),
            )
        finally:
            writer.close()
            # The answer is what was measured; a reset while hanging up does not undo it.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return step.record


async def _read_res_pq(
    reader: asyncio.StreamReader, client: ObfuscatedClient, nonce: bytes, step: Step
) -> ResPQ:
    """Feed the server's bytes to the client until its first payload is complete; parse that
    payload as the resPQ (a data center's first message on a new connection)."""
    received = 0
    while received < MAX_READ:
        data = await reader.read(min(_CHUNK, MAX_READ - received))
        if not data:
            raise EOFError("connection closed before resPQ")
        received += len(data)
        step.details["bytes_received"] = received
        try:
            payloads = client.feed(data)
            if payloads:
                return parse_res_pq(payloads[0], nonce=nonce)
        except MTProtoError as exc:
            if exc.code is not None:
                step.details["transport_error"] = exc.code
            raise ProtocolError(exc.failure, str(exc)) from exc
    raise ProtocolError(Failure.MTPROTO_BAD_RESPONSE, f"no resPQ in the first {MAX_READ} bytes")
