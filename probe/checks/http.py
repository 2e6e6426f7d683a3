"""The ``http_get`` check: one HTTPS GET of the target's path, pinned to the address under test.

The URL names the real host (so the Host header is real); the connection goes to ``address`` only.
With ``sni_kind="neutral"`` the TLS layer sends ``ctx.neutral_sni`` and verifies nothing, so a
real/neutral pair to the same address shows SNI-triggered throttling as a difference in
``throughput_bps``. Redirects are recorded, never followed. At most ``MAX_BODY_BYTES`` of body are
read; a status other than 2xx is an observation, not a failure.

details: ``sni``, ``sni_kind``, ``status``, ``http_version``, ``headers`` (a few), ``body_bytes``,
``truncated``, ``body_sha256`` (first 16 hex digits), ``throughput_bps``. timings: ``first_byte``
(response head received), ``done``. Body figures are recorded even when a timeout cuts the read.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp

from probe.checks.base import CheckContext, ProtocolError, Step, classify, measured
from probe.checks.dns import GuardedResolver
from probe.checks.tls import is_handshake_eof, sni_for
from probe.model import Failure, Record, Target

CHECK = "http_get"
MAX_BODY_BYTES: Final = 256 * 1024
# Below this many bytes after the first read, a rate says more about buffering than the path.
MIN_THROUGHPUT_BYTES: Final = 4096
HEADERS_KEPT: Final = ("server", "content-type", "content-length", "location")
_READ_SIZE: Final = 16 * 1024
_SHA_DIGITS: Final = 16

__all__ = ["CHECK", "HEADERS_KEPT", "MAX_BODY_BYTES", "MIN_THROUGHPUT_BYTES", "http_get"]


async def http_get(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    sni_kind: str = "real",
) -> Record:
    """GET ``https://{target.host}:{target.port}{target.path}`` from ``address``."""
    sni = sni_for(ctx, target, sni_kind)
    if target.host is None:
        raise ValueError(f"target {target.id!r} has no host to put in the URL")
    url = f"https://{target.host}:{target.port}{target.path}"
    ssl_context = ctx.ssl_context(verify=sni_kind == "real")
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(sni=sni, sni_kind=sni_kind)
        ctx.guard(address)  # before the session exists; the resolver guards again
        socket_factory, trace = _noting_local_addresses(ctx)
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(ctx, pinned={target.host: address}),
            ssl=ssl_context,
            use_dns_cache=False,
            force_close=True,  # one request, one connection: nothing pooled past the check
            limit=1,
            socket_factory=socket_factory,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # measured() owns the clock; a second one would only blur which timeout fired.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
            # Count bytes as they crossed the network, and never inflate a compressed body.
            auto_decompress=False,
            trace_configs=[trace],
        )
        async with session:
            try:
                async with session.get(
                    url,
                    allow_redirects=False,
                    server_hostname=sni if sni_kind == "neutral" else None,
                ) as response:
                    step.mark("first_byte")
                    step.details.update(
                        status=response.status,
                        http_version=_version(response.version),
                        headers={
                            name: response.headers[name]
                            for name in HEADERS_KEPT
                            if name in response.headers
                        },
                    )
                    await _read_body(response, step)
                    step.mark("done")
            except aiohttp.ClientError as exc:
                raise _translate(exc) from exc
    return step.record


def _noting_local_addresses(
    ctx: CheckContext,
) -> tuple[Callable[[tuple[Any, ...]], socket.socket], aiohttp.TraceConfig]:
    """A socket factory and a trace that hand the local address of aiohttp's connection to the
    scrubber once it is established (the response may arrive after aiohttp let go of it)."""
    opened: list[socket.socket] = []

    def open_socket(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto = addr_info[:3]
        sock = socket.socket(family=family, type=kind, proto=proto)
        opened.append(sock)
        return sock

    async def connected(_: aiohttp.ClientSession, __: Any, ___: Any) -> None:
        for sock in opened:
            with contextlib.suppress(OSError):  # a socket already closed has no name
                ctx.note_local(sock.getsockname())

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(connected)
    return open_socket, trace


async def _read_body(response: aiohttp.ClientResponse, step: Step) -> None:
    """Read up to MAX_BODY_BYTES, filling the body details even when the read is cut short."""
    digest = hashlib.sha256()
    total = 0
    first_at: float | None = None
    first_len = 0
    last_at = 0.0
    try:
        while total < MAX_BODY_BYTES:  # each pass reads at least one byte or ends at EOF
            chunk = await response.content.read(min(_READ_SIZE, MAX_BODY_BYTES - total))
            if not chunk:
                break
            last_at = time.monotonic()
            if first_at is None:
                first_at, first_len = last_at, len(chunk)
            total += len(chunk)
            digest.update(chunk)
    finally:
        step.details.update(
            body_bytes=total,
            truncated=total >= MAX_BODY_BYTES and not response.content.at_eof(),
            body_sha256=digest.hexdigest()[:_SHA_DIGITS],
            throughput_bps=_throughput(total - first_len, first_at, last_at),
        )


def _throughput(later_bytes: int, first_at: float | None, last_at: float) -> int | None:
    """Bits per second over the bytes that arrived after the first read; the first read's bytes
    arrived at an unknown time before it, so they are not counted."""
    if first_at is None or later_bytes < MIN_THROUGHPUT_BYTES or last_at <= first_at:
        return None
    return round(later_bytes * 8 / (last_at - first_at))


def _translate(exc: aiohttp.ClientError) -> ProtocolError:
    """An aiohttp error as the failure the TLS check would record for the same event."""
    cause: BaseException | None = None
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    elif isinstance(exc, OSError):  # ClientOSError and friends carry the socket's errno
        cause = exc
    elif isinstance(exc, aiohttp.ClientPayloadError) and isinstance(exc.__cause__, OSError):
        cause = exc.__cause__
    if cause is not None:
        if is_handshake_eof(cause):
            return ProtocolError(Failure.EOF, "EOF during the TLS handshake")
        return ProtocolError(classify(cause), _describe(cause))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ProtocolError(Failure.EOF, _describe(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ProtocolError(_body_cut_failure(str(exc)), _describe(exc))
    return ProtocolError(Failure.HTTP_REQUEST_FAILED, _describe(exc))


def _body_cut_failure(message: str) -> str:
    """How a body ended early. aiohttp keeps the transport's error only in the message
    (aiohttp/client_proto.py, connection_lost: "... is not completed: <parser error>. <repr>")."""
    if "ConnectionResetError(" in message:
        return Failure.CONNECTION_RESET
    if "payload is not completed" in message:
        return Failure.EOF  # the stream ended cleanly before the body did
    return Failure.HTTP_REQUEST_FAILED


def _version(version: aiohttp.HttpVersion | None) -> str | None:
    return None if version is None else f"HTTP/{version.major}.{version.minor}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
