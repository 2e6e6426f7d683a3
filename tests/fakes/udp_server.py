"""A loopback UDP server for the relay checks: it counts what it receives and answers each
datagram as a test asks (in the manner of dnspython's tests/nanonameserver.py).

The handler gets each datagram and its index (0 for the first) and returns the reply, several
replies, or None for silence; every reply is sent ``repeat`` times. Ready-made handlers:

    silent()             never answer
    fixed(data)          answer every datagram with the same bytes (garbage, or a canned answer)
    from_nth(n, handler) stay silent for the first ``n`` datagrams, then answer as ``handler``

Nothing here sends anywhere but to the client that wrote, on loopback; the server answers at
most ``MAX_DATAGRAMS`` datagrams, whatever the client does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, cast

LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"

Reply = bytes | Sequence[bytes] | None
Handler = Callable[[bytes, int], Reply]
"""(datagram, its index) -> one reply, several, or None to stay silent."""

MAX_DATAGRAMS: Final = 1000  # answered at most; later ones are counted, not answered


def silent() -> Handler:
    return lambda _data, _index: None


def fixed(reply: Reply) -> Handler:
    return lambda _data, _index: reply


def from_nth(n: int, handler: Handler) -> Handler:
    """Silent for datagrams 0 .. n-1, then ``handler``."""
    return lambda data, index: handler(data, index) if index >= n else None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: LoopbackUdpServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.server.errors.append(exc)


class LoopbackUdpServer:
    """A UDP socket on ``host`` (port chosen by the kernel) for the length of an ``async with``;
    subclasses say what to do with each datagram (``_receive``) and answer with ``_send``."""

    def __init__(self, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = 0
        self.errors: list[BaseException] = []
        """What a handler raised, and ICMP errors the socket reported."""
        self._protocol: _Protocol | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0), family=family
        )
        self._protocol = protocol
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()

    def _receive(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError

    def _send(self, data: bytes, addr: Any) -> None:
        assert self._protocol is not None
        assert self._protocol.transport is not None
        self._protocol.transport.sendto(data, addr)


class FakeUdpServer(LoopbackUdpServer):
    """``async with FakeUdpServer(handler) as srv:``, then send to ``(srv.host, srv.port)``."""

    def __init__(self, handler: Handler, *, repeat: int = 1, host: str = LOOPBACK) -> None:
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        super().__init__(host)
        self.handler = handler
        self.repeat = repeat
        self.received: list[bytes] = []
        """Every datagram received, in order."""
        self.sent: list[bytes] = []
        """Every datagram sent back, in order."""

    @property
    def count(self) -> int:
        """Datagrams received so far."""
        return len(self.received)

    def _receive(self, data: bytes, addr: Any) -> None:
        index = len(self.received)
        self.received.append(data)
        if index >= MAX_DATAGRAMS:
            return
        try:
            reply = self.handler(data, index)
        except Exception as exc:  # a handler that rejects the request: the test will say
            self.errors.append(exc)
            return
        if reply is None:
            return
        replies = [reply] if isinstance(reply, bytes) else list(reply)
        for _ in range(self.repeat):
            for datagram in replies:
                self._send(datagram, addr)
                self.sent.append(datagram)


def closed_udp_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on (bound, then released): a datagram to it gets ICMP port
    unreachable from the loopback kernel."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
