"""The reflector's sockets, asyncio: UDP echo on the call ports, TLS streams on one port.

UDP: every datagram goes to ``EchoCore`` (probe.reflector.core), whose echo, if any, goes back to
the sender; while asyncio's send buffer is above its high-water mark (64 KiB, when the kernel
cannot take echoes as fast as they come) echoes are dropped and counted, not buffered, so memory
stays bounded under any load. A periodic sweep forgets idle sessions and sources.

TLS: the server accepts any SNI (no SNI callback, so nothing is rejected by name) and any ALPN
offer (it selects none). The connection caps apply on accept, before the handshake, so a flood
of half-open handshakes costs no more than they allow; a handshake has HANDSHAKE_SECONDS. Then
the client sends one request line (probe.reflector.stream) and gets the bytes it asked for,
capped, then close_notify. The certificate is the operator's (cert_file, key_file) or, by
default, a self-signed one made at start.

**What the probe must and must not verify:** nothing about the certificate. The reflector
answers every SNI, so no certificate can match them all; the SNI test's neutral handshake is
unverified by design, and the app-SNI one is compared with it by throughput only. The request
line's MAC authenticates the probe to the reflector, not the reverse; no result rests on the
server's identity (an impostor could only make a stream look fine or slow, as the network itself
can).

Logging: counts and errors only, never an address: operation needs none (the limits work on
in-memory keys), and a volunteer's address is the most identifying thing the reflector sees. The
loop's exception handler (``quiet_exception_handler``) keeps asyncio from logging peers either.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast

from probe.reflector.config import Config, ConfigError, ReflectorError
from probe.reflector.core import EchoCore, source_key
from probe.reflector.stream import MAX_LINE, StreamRequestError, parse_stream_request

__all__ = ["BindError", "Reflector", "quiet_exception_handler", "self_signed_context"]

log = logging.getLogger("probe.reflector")

# Ours: seconds a TLS handshake may take (within tls_timeout), and a close.
HANDSHAKE_SECONDS: Final = 10.0
CLOSE_SECONDS: Final = 2.0
# Ours: how long the sweep may wait between runs, at most.
SWEEP_SECONDS: Final = 5.0
_CHUNK: Final = 16 * 1024
# One random block, sent over and over: TLS encrypts it, so the wire looks random either way.
_BLOCK_LEN: Final = 64 * 1024


class BindError(ReflectorError):
    """A listening socket could not be bound."""

    def __init__(self, transport: str, address: str, port: int, exc: OSError) -> None:
        self.transport = transport
        self.address = address
        self.port = port
        self.permission = isinstance(exc, PermissionError)
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        reason = exc.strerror or str(exc)
        message = f"cannot bind {transport} {where}: {reason}"
        if self.permission:
            message += (
                f"; port {port} is below 1024: run as root, or grant the interpreter "
                "CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the real python "
                "binary), or choose ports above 1023"
            )
        super().__init__(message)


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log what went wrong without asyncio's context (which may hold a peer's address)."""
    exc = context.get("exception")
    detail = f": {type(exc).__name__}" if exc is not None else ""
    log.error("%s%s", context.get("message", "unexpected error"), detail)


def self_signed_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed EC P-256 certificate (made in milliseconds).

    Its subject names no product: with TLS 1.2 the certificate crosses the network in clear, and a
    name that marks the server as ringprobe's would let a censor single it out."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory(prefix="ringprobe-reflector-") as tmp:
        cert_path = Path(tmp) / "cert.pem"
        key_path = Path(tmp) / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return _context(cert_path, key_path)


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _tls_context(config: Config) -> ssl.SSLContext:
    if config.cert_file is None or config.key_file is None:
        return self_signed_context()
    try:
        return _context(config.cert_file, config.key_file)
    except (OSError, ValueError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"{config.cert_file}", f"cannot load certificate and key: {problem}"
        ) from exc


def _bound_socket(kind: socket.SocketKind, address: str, port: int, v6only: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" alone serves IPv4 too; next to "0.0.0.0" it must leave IPv4 to that socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _EchoProtocol(asyncio.DatagramProtocol):
    """One UDP socket: datagrams to the core, echoes back (or dropped when the kernel is full)."""

    def __init__(self, core: EchoCore, clock: Callable[[], float]) -> None:
        self._core = core
        self._clock = clock
        self._transport: asyncio.DatagramTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport is one, without subclassing DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._transport is None or int(addr[1]) == 0:
            return  # no answer can reach port 0
        echo = self._core.handle(data, str(addr[0]), self._clock())
        if echo is None:
            return
        if self._paused:  # asyncio's buffer passed its high-water mark (64 KiB)
            self._core.send_dropped += 1
            return
        self._transport.sendto(echo, addr)
        self._core.sent(len(echo))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors about earlier echoes: nothing to do

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False


class _TlsGate(asyncio.Protocol):
    """A TCP connection until its TLS layer is in place: reading stays paused (no byte of the
    ClientHello may be read by anyone but the TLS layer) and the reflector decides."""

    def __init__(self, admit: Callable[[asyncio.Transport], None]) -> None:
        self._admit = admit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        tcp.pause_reading()
        self._admit(tcp)


class Reflector:
    """The reflector's sockets and state. ``async with Reflector(config) as r:`` binds every
    socket (BindError if one cannot be) and closes them all on the way out."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.core = EchoCore(config)
        self.udp_addresses: list[tuple[str, int]] = []
        """The bound UDP sockets (address, port): port 0 in the config becomes the real one."""
        self.tls_addresses: list[tuple[str, int]] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._context: ssl.SSLContext | None = None
        self._tls_active = 0
        self._tls_per_source: dict[str, int] = {}
        self._block = os.urandom(_BLOCK_LEN)
        self.tls_connections = 0
        self.tls_refused = 0
        self.tls_invalid = 0
        self.tls_streams = 0
        self.tls_bytes_out = 0

    async def __aenter__(self) -> Reflector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _sockets(self) -> list[tuple[str, bool]]:
        """Each bind address with its IPV6_V6ONLY setting."""
        has_v4_any = "0.0.0.0" in self.config.bind  # noqa: S104 - binding all is the point
        return [(a, a == "::" and has_v4_any) for a in self.config.bind]

    async def start(self) -> None:
        """Bind every socket and start the sweep; on any failure nothing stays open."""
        loop = asyncio.get_running_loop()
        try:
            context = self._context = _tls_context(self.config) if self.config.tls else None
            for address, v6only in self._sockets():
                for port in self.config.udp_ports:
                    try:
                        sock = _bound_socket(socket.SOCK_DGRAM, address, port, v6only)
                    except OSError as exc:
                        raise BindError("UDP", address, port, exc) from exc
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _EchoProtocol(self.core, self._clock), sock=sock
                    )
                    self._transports.append(transport)
                    self.udp_addresses.append((address, sock.getsockname()[1]))
                if context is not None:
                    port = self.config.tls_port
                    try:
                        sock = _bound_socket(socket.SOCK_STREAM, address, port, v6only)
                    except OSError as exc:
                        raise BindError("TCP (TLS)", address, port, exc) from exc
                    server = await loop.create_server(lambda: _TlsGate(self._admit), sock=sock)
                    self._servers.append(server)
                    self.tls_addresses.append((address, sock.getsockname()[1]))
        except BaseException:
            await self.close()
            raise
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Stop listening, end every connection, wait (bounded) until they are gone."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_SECONDS * 2)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_SECONDS)
        self._servers.clear()

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.config.session_timeout / 2, SWEEP_SECONDS))
        stats_every = self.config.stats_interval
        next_stats = self._clock() + stats_every
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            self.core.sweep(now)
            if stats_every and now >= next_stats:
                next_stats = now + stats_every
                log.info("stats %s", " ".join(f"{k}={v}" for k, v in self.stats().items()))

    def stats(self) -> dict[str, int]:
        """Counters since start (UDP from the core, TLS from here) and current table sizes."""
        return {
            **self.core.stats(),
            "tls_active": self._tls_active,
            "tls_connections": self.tls_connections,
            "tls_refused": self.tls_refused,
            "tls_invalid": self.tls_invalid,
            "tls_streams": self.tls_streams,
            "tls_bytes_out": self.tls_bytes_out,
        }

    def _admit(self, transport: asyncio.Transport) -> None:
        """A new TCP connection, before its handshake: over a cap it is dropped at once (so a
        flood of handshakes costs no more than the caps allow), else its TLS task starts."""
        peer = transport.get_extra_info("peername")
        source = source_key(str(peer[0])) if peer else "?"
        if (
            self._context is None
            or self._tls_active >= self.config.max_tls_connections
            or self._tls_per_source.get(source, 0) >= self.config.max_tls_per_source
        ):
            self.tls_refused += 1
            transport.abort()
            return
        self._tls_active += 1
        self._tls_per_source[source] = self._tls_per_source.get(source, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._serve_tls(transport, source, self._context)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tls(
        self, transport: asyncio.Transport, source: str, context: ssl.SSLContext
    ) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            reader = asyncio.StreamReader(limit=MAX_LINE)
            protocol = asyncio.StreamReaderProtocol(reader)
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                tls = await loop.start_tls(
                    transport,
                    protocol,
                    context,
                    server_side=True,
                    ssl_handshake_timeout=HANDSHAKE_SECONDS,
                )
            if tls is None:  # pragma: no cover - only when the transport closed meanwhile
                return
            protocol.connection_made(tls)
            writer = asyncio.StreamWriter(tls, protocol, reader, loop)
            self.tls_connections += 1
            async with asyncio.timeout(self.config.tls_timeout):
                await self._stream(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a failed handshake, a reset, a client that left, the deadline: hang up
        finally:
            self._tls_active -= 1
            left = self._tls_per_source[source] - 1
            if left:
                self._tls_per_source[source] = left
            else:
                del self._tls_per_source[source]
            if writer is None:
                transport.abort()
            else:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readuntil(b"\n")
        try:
            request = parse_stream_request(self.config.secret, line)
        except StreamRequestError:
            self.tls_invalid += 1
            return
        self.tls_streams += 1
        remaining = min(request.n, self.config.max_stream_bytes)
        while remaining:
            chunk = min(remaining, _CHUNK)
            offset = int.from_bytes(os.urandom(2), "big") % (_BLOCK_LEN - chunk + 1)
            writer.write(self._block[offset : offset + chunk])
            await writer.drain()
            remaining -= chunk
            self.tls_bytes_out += chunk
