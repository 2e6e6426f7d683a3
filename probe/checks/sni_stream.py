"""The ``sni_stream`` check: a TLS stream from the ringprobe reflector, with a chosen SNI.

SNI-triggered policing (METHOD.md) shows as TLS with the app's SNI running far slower than TLS
with a neutral SNI to the same server. The app's own servers cannot be asked for a large body
(their pages are small, their hosts are theirs); the reflector (docs/callflow.md, "The
reflector") accepts any SNI on its TLS port and, after the handshake, streams as many bytes as a
MAC'd request line asks for (probe.reflector.stream). So the runner makes two of these checks to
the same reflector, one with the app's web host as SNI and one with ``ctx.neutral_sni``, and the
analysis compares their ``throughput_bps`` as it compares an HTTPS target's two GETs.

**The certificate is not verified**, whatever the SNI: the reflector answers every name, so no
certificate can match them all. The request line's MAC authenticates us to the reflector, not
the reverse; the comparison rests on throughput only, which an impostor could make look fine or
slow, as the network itself can. The peer certificate's fingerprint is recorded (a middlebox
that intercepts one SNI and not the other shows as two fingerprints).

details: ``sni``, ``sni_kind``, ``requested`` (bytes asked for), ``body_bytes`` (bytes read, at
most ``requested``), ``throughput_bps`` (as http_get computes it, over the bytes after the first
read; None below http's MIN_THROUGHPUT_BYTES), and after the handshake ``tls_version``,
``cipher``, ``alpn`` and the certificate summary (probe.checks.tls.session_details).
timings: ``connect``, ``handshake``, ``first_byte`` (first byte of the stream), ``done``.

Failures as tls_handshake / http_get classify them; a stream that ends (EOF) before its first
byte, which is what the reflector does with a request whose MAC does not verify, is
``eof_error``. A stream the reflector caps below ``requested`` is no failure (its end comes as a
clean close after some bytes). ``body_bytes`` and ``throughput_bps`` are recorded even when a
timeout cuts the read (a throttled stream often runs out of time).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Final

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.checks.http import MIN_THROUGHPUT_BYTES
from probe.checks.tls import CLOSE_GRACE, SNI_KINDS, session_details, upgrade
from probe.model import Failure, Record, Target
from probe.reflector.stream import NONCE_LEN, build_stream_request

CHECK = "sni_stream"
# http_get's body cap: the same bytes per stream as per GET, so the two comparisons are alike.
DEFAULT_SIZE: Final = 256 * 1024
_READ_SIZE: Final = 16 * 1024

__all__ = ["CHECK", "DEFAULT_SIZE", "sni_stream"]


class _Raw(asyncio.Protocol):
    """The TCP connection until start_tls takes it over: the reflector sends nothing before
    our ClientHello, so there is nothing to read here."""


async def sni_stream(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    sni: str,
    sni_kind: str,
    secret: bytes,
    size: int = DEFAULT_SIZE,
) -> Record:
    """TLS to ``address:target.port`` with server name ``sni`` (certificate not verified), ask
    the reflector for ``size`` bytes and read them until EOF or ``size`` (module docstring)."""
    if sni_kind not in SNI_KINDS:
        raise ValueError(f"sni_kind must be one of {SNI_KINDS}, not {sni_kind!r}")
    request = build_stream_request(secret, os.urandom(NONCE_LEN), size)
    ssl_context = ctx.ssl_context(verify=False)
    loop = asyncio.get_running_loop()
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(sni=sni, sni_kind=sni_kind, requested=size)
        ctx.guard(address)  # before any socket exists: a refused address sees no SYN
        raw, _ = await loop.create_connection(_Raw, address, target.port)
        step.mark("connect")
        ctx.note_local(raw.get_extra_info("sockname"))
        reader = asyncio.StreamReader(limit=2 * _READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        tls = await upgrade(raw, protocol, ssl_context, sni)
        # start_tls does not call connection_made on the new protocol (CPython sslproto).
        protocol.connection_made(tls)
        writer = asyncio.StreamWriter(tls, protocol, reader, loop)
        step.mark("handshake")
        try:
            step.details.update(session_details(tls.get_extra_info("ssl_object")))
            writer.write(request)
            await writer.drain()
            await _read_stream(reader, size, step)
            step.mark("done")
        finally:
            await _hang_up(writer, step.timeout - step.since_start())
    return step.record


async def _read_stream(reader: asyncio.StreamReader, size: int, step: Step) -> None:
    """Read up to ``size`` bytes or to EOF, filling the body details even when cut short."""
    total = 0
    first_at: float | None = None
    first_len = 0
    last_at = 0.0
    try:
        while total < size:  # each pass reads at least one byte or ends at EOF
            chunk = await reader.read(min(_READ_SIZE, size - total))
            if not chunk:
                break
            last_at = time.monotonic()
            if first_at is None:
                first_at, first_len = last_at, len(chunk)
                step.mark("first_byte")
            total += len(chunk)
    finally:
        step.details.update(
            body_bytes=total, throughput_bps=_throughput(total - first_len, first_at, last_at)
        )
    if total == 0:
        # The reflector's answer to a request it does not accept (or a path that ended it).
        raise ProtocolError(Failure.EOF, "the stream ended before its first byte")


def _throughput(later_bytes: int, first_at: float | None, last_at: float) -> int | None:
    """Bits per second over the bytes after the first read, exactly as http_get computes it
    (probe.checks.http._throughput): the first read's bytes arrived at an unknown time."""
    if first_at is None or later_bytes < MIN_THROUGHPUT_BYTES or last_at <= first_at:
        return None
    return round(later_bytes * 8 / (last_at - first_at))


async def _hang_up(writer: asyncio.StreamWriter, budget: float) -> None:
    """close_notify, then at most CLOSE_GRACE (and what the check's timeout leaves) for the peer;
    a slow goodbye must not turn a finished stream into a timeout."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), max(0.0, min(CLOSE_GRACE, budget - 0.05)))
    except (OSError, TimeoutError):
        writer.transport.abort()  # no goodbye in time (or a broken one): drop the link
