"""A loopback TCP/TLS server for the tests of the TCP, TLS and HTTPS checks.

Every connection a server accepts gets the server's one behaviour:

    complete  TLS handshake (leaf chosen by SNI), then one small HTTP/1.1 response
    trickle   as ``complete``, but the response leaves a few bytes at a time; past its time budget
              the body stops short (close_notify and FIN, or RST: ``trickle_end``)
    deaf      TLS handshake, then silence: nothing read, nothing answered, close_notify ignored
    reset     read the ClientHello, then RST (SO_LINGER 0 and close)
    close     read the ClientHello, then EOF (FIN) and no TLS answer
    hang      accept and read, never answer
    garbage   read the ClientHello, send the given bytes, then EOF
    refuse    nothing listens: the port is bound but not listening, so a connect is refused

TLS is driven sans-IO (``ssl.MemoryBIO``) over the raw socket, so the fake decides every byte and
its shutdown never waits on the client. Certificates are made at test time with trustme
(``FakePKI``). The server counts accepted connections and received bytes, so a test can assert that
a check the guard refused sent nothing. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http
import socket
import ssl
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import trustme

from probe.allowlist import AllowList
from probe.checks.base import CheckContext
from probe.model import Target

Behaviour = Literal["complete", "trickle", "deaf", "reset", "close", "hang", "garbage", "refuse"]
CertKind = Literal["valid", "wrong_host", "expired", "untrusted"]

LOOPBACK = "127.0.0.1"
# Names the valid leaf covers; the neutral leaf is served for any other SNI.
DEFAULT_HOSTS = ("web.whatsapp.com", "web.telegram.org")
NEUTRAL_HOST = "example.org"
WRONG_HOST = "wrong.host.invalid"

_RECV = 65536
_MAX_REQUEST = 65536
_MAX_HANDSHAKE_ROUNDS = 32


def web_target(port: int, host: str = DEFAULT_HOSTS[0], path: str = "/") -> Target:
    """The catalog entry the tests point at a fake server (contacted as 127.0.0.1)."""
    return Target(
        id="t",
        app="whatsapp",
        role="web",
        port=port,
        transport="tcp",
        expect="https",
        source="test",
        date="2026-11-28",
        host=host,
        path=path,
    )


def client_context(pki: FakePKI, timeout: float = 0.5, **kwargs: Any) -> CheckContext:
    """A check context trusting the fake PKI. The suite's allow-list (conftest) applies unless a
    test brings its own, so a slip cannot leave loopback."""
    kwargs.setdefault("allow", AllowList.from_sources())
    return CheckContext(timeout=timeout, ca_file=str(pki.ca_file), **kwargs)


def body_bytes(size: int) -> bytes:
    """The deterministic body a ``complete``/``trickle`` server sends, so tests can hash it."""
    pattern = bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


class FakePKI:
    """A trusted test CA (its PEM in ``ca_file``), an untrusted one, and leaves of every kind."""

    def __init__(self, directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> None:
        self.hosts = tuple(hosts)
        self.ca = trustme.CA(organization_name="ringprobe test CA")
        self.untrusted_ca = trustme.CA(organization_name="ringprobe untrusted CA")
        self.ca_file = directory / "ringprobe-test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        now = datetime.datetime.now(datetime.UTC)
        self.leaves: dict[str, trustme.LeafCert] = {
            "valid": self.ca.issue_cert(*self.hosts, common_name=self.hosts[0]),
            "neutral": self.ca.issue_cert(NEUTRAL_HOST, common_name=NEUTRAL_HOST),
            "wrong_host": self.ca.issue_cert(WRONG_HOST, common_name=WRONG_HOST),
            "expired": self.ca.issue_cert(
                *self.hosts,
                common_name=self.hosts[0],
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
            "untrusted": self.untrusted_ca.issue_cert(*self.hosts, common_name=self.hosts[0]),
        }

    def _context_for(self, leaf: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaves[leaf].configure_cert(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def server_context(self, cert: CertKind) -> ssl.SSLContext:
        """A server context presenting ``cert``; the valid one switches to the neutral leaf when
        the SNI names none of the test hosts, as a real multi-site server would."""
        ctx = self._context_for(cert)
        if cert == "valid":
            neutral = self._context_for("neutral")
            hosts = set(self.hosts)

            def choose(obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
                if name not in hosts:
                    obj.context = neutral

            ctx.sni_callback = choose
        return ctx


class _TLSChannel:
    """Server side of TLS over a non-blocking socket, driven through memory BIOs."""

    def __init__(self, server: FakeTLSServer, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self._server = server
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self._sock, data)

    async def _fill(self) -> bool:
        data = await self._server._recv(self._sock)
        if data:
            self._in.write(data)
            return True
        self._in.write_eof()
        return False

    async def handshake(self) -> None:
        for _ in range(_MAX_HANDSHAKE_ROUNDS):
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionAbortedError("client left during the handshake") from None
            else:
                await self._flush()  # the last flight and TLS 1.3 session tickets
                return
        raise ssl.SSLError("handshake did not finish")

    async def recv(self) -> bytes:
        """Decrypted bytes; b"" at end of stream (close_notify or plain EOF)."""
        for _ in range(_MAX_HANDSHAKE_ROUNDS):
            try:
                return self._obj.read(_RECV)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    continue  # the BIO now has EOF: the next read says how the stream ended
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
        return b""

    async def send(self, data: bytes) -> None:
        self._obj.write(data)
        await self._flush()

    async def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()  # queues our close_notify; the client's answer is not awaited
        with contextlib.suppress(OSError):
            await self._flush()


class FakeTLSServer:
    """``async with FakeTLSServer("complete", pki) as srv:``, then connect to ``srv.port``."""

    host = LOOPBACK

    def __init__(
        self,
        behaviour: Behaviour,
        pki: FakePKI | None = None,
        *,
        cert: CertKind = "valid",
        status: int = 200,
        body_size: int = 1024,
        headers: Mapping[str, str] | None = None,
        trickle_chunk: int = 512,
        trickle_delay: float = 0.02,
        trickle_budget: float = 3.0,
        trickle_end: Literal["close", "reset"] = "close",
        garbage: bytes = b"",
        hold: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if behaviour in ("complete", "trickle", "deaf") and pki is None:
            raise ValueError(f"behaviour {behaviour!r} needs a FakePKI")
        self.behaviour = behaviour
        self.status = status
        self.body = body_bytes(body_size)
        self.headers = dict(headers or {})
        self.trickle_chunk = trickle_chunk
        self.trickle_delay = trickle_delay
        self.trickle_budget = trickle_budget
        self.trickle_end = trickle_end
        """How a trickle out of budget ends: close_notify and FIN, or RST mid-body."""
        self.garbage = garbage
        self.hold = hold
        """Seconds any one connection may live, whatever the client does."""
        self.max_connections = max_connections
        self._ssl = pki.server_context(cert) if pki is not None else None
        self.port = 0
        self.connections = 0
        """Connections accepted (for ``refuse``: always 0)."""
        self.bytes_received = 0
        """Raw bytes read from all connections, TLS records included."""
        self.requests: list[bytes] = []
        """HTTP request heads received by ``complete``/``trickle``."""
        self.errors: list[BaseException] = []
        """What ended connections early (client alerts, resets); for debugging tests."""
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []  # kept, so their errors reach __aexit__

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((LOOPBACK, 0))
        self._listener = sock
        self.port = sock.getsockname()[1]
        if self.behaviour != "refuse":  # a bound socket that never listens answers SYN with RST
            sock.listen(16)
            self._accepting = asyncio.create_task(self._accept_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks = [t for t in (self._accepting, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        # Expected endings were caught in _serve; anything else is a bug in the fake.
        for result in results:
            if isinstance(result, Exception) and exc is None:
                raise result

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        for _ in range(self.max_connections):
            conn, _peer = await loop.sock_accept(self._listener)
            self.connections += 1
            self._tasks.append(asyncio.create_task(self._serve(conn)))

    async def _recv(self, sock: socket.socket) -> bytes:
        data = await asyncio.get_running_loop().sock_recv(sock, _RECV)
        self.bytes_received += len(data)
        return data

    async def _drain_until_eof(self, sock: socket.socket) -> None:
        while await self._recv(sock):  # bounded by ``hold``
            pass

    async def _serve(self, sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(self.hold):
                await self._behave(sock)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.errors.append(exc)
        finally:
            sock.close()

    async def _behave(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if self.behaviour == "hang":
            await self._drain_until_eof(sock)
        elif self.behaviour == "reset":
            await self._recv(sock)
            _linger_zero(sock)
        elif self.behaviour in ("close", "garbage"):
            await self._recv(sock)
            if self.garbage and self.behaviour == "garbage":
                await loop.sock_sendall(sock, self.garbage)
            sock.shutdown(socket.SHUT_WR)
            # Wait for the client to hang up, so unread bytes never turn our FIN into a RST.
            await self._drain_until_eof(sock)
        else:
            await self._serve_http(sock)

    async def _serve_http(self, sock: socket.socket) -> None:
        assert self._ssl is not None
        channel = _TLSChannel(self, sock, self._ssl)
        await channel.handshake()
        if self.behaviour == "deaf":
            await asyncio.Event().wait()  # until ``hold`` runs out or the server closes
        request = b""
        while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
            data = await channel.recv()
            if not data:
                return  # a bare handshake check: it hangs up without a request
            request += data
        self.requests.append(request.split(b"\r\n\r\n", 1)[0])
        response = self._response_head() + self.body
        if self.behaviour == "complete":
            await channel.send(response)
        elif not await self._trickle(channel, response) and self.trickle_end == "reset":
            _linger_zero(sock)
            return
        await channel.close_notify()

    def _response_head(self) -> bytes:
        reason = http.HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            "Server: ringprobe-fake",
            "Content-Type: application/octet-stream",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _trickle(self, channel: _TLSChannel, response: bytes) -> bool:
        """Send the head, then the body piece by piece; False when the budget ran out first."""
        head_end = response.index(b"\r\n\r\n") + 4
        await channel.send(response[:head_end])
        stop_at = time.monotonic() + self.trickle_budget
        for offset in range(head_end, len(response), self.trickle_chunk):
            if time.monotonic() > stop_at:
                return False  # the client sees a body shorter than its Content-Length
            await channel.send(response[offset : offset + self.trickle_chunk])
            await asyncio.sleep(self.trickle_delay)
        return True


def _linger_zero(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
