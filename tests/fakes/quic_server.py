"""A loopback HTTP/3 server (aioquic) for the tests of the quic check, and two UDP stand-ins for
what a censor leaves of one.

Every connection a ``FakeQUICServer`` accepts gets the server's one behaviour:

    complete  QUIC handshake (a leaf of the fake PKI), then each GET gets ``status`` and
              ``body_size`` bytes of ``body_bytes()``
    refuse    CONNECTION_CLOSE with CONNECTION_REFUSED (RFC 9000 §20.1) in answer to the first
              Initial, before any handshake
    close     handshake, then CONNECTION_CLOSE with ``close_code`` when the request arrives
    reset     handshake, then RESET_STREAM (H3_REQUEST_REJECTED) on the request stream

``SilentUDP`` is a bound socket that counts datagrams and never answers. ``InitialDropProxy``
relays datagrams between one client and a server and drops those from the client of ``drop_from``
bytes or more: the filter Russian networks applied to QUIC v1 Initials, which clients pad to at
least 1200 bytes (RFC 9000 §14.1). Each counts what it received, so a test can assert that a
check the guard refused sent nothing. Certificates come from the TLS fakes' ``FakePKI`` (trustme);
only loopback is ever bound (127.0.0.1, or ::1 where a test asks for it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicProtocolVersion
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.fakes.tls_server import LOOPBACK, CertKind, FakePKI, body_bytes

Behaviour = Literal["complete", "refuse", "close", "reset"]

# What the Russian filter matched: UDP payloads of this many bytes or more (the lab's
# quic-initial-drop scenario, after net4people/bbs#108).
INITIAL_DROP_FROM = 1001


class FakeQUICServer:
    """``async with FakeQUICServer("complete", pki) as srv:``, then send to ``srv.port``."""

    def __init__(
        self,
        behaviour: Behaviour,
        pki: FakePKI,
        *,
        host: Literal["127.0.0.1", "::1"] = LOOPBACK,
        cert: CertKind = "valid",
        status: int = 200,
        body_size: int = 1024,
        close_code: int = ErrorCode.H3_INTERNAL_ERROR,
        alpn: Sequence[str] = tuple(H3_ALPN),
        versions: Sequence[int] = (QuicProtocolVersion.VERSION_1,),
    ) -> None:
        self.behaviour = behaviour
        self.host = host
        self.status = status
        self.body = body_bytes(body_size)
        self.close_code = close_code
        self._configuration = _server_configuration(pki, cert, alpn, versions)
        self.port = 0
        self.datagrams = 0
        """Datagrams received, from any client."""
        self.bytes_received = 0
        """UDP payload bytes received, from any client."""
        self.connections = 0
        """QUIC connections begun (a client Initial the server accepted)."""
        self.requests: list[dict[bytes, bytes]] = []
        """Header fields of each request received (pseudo-headers included)."""
        self._server: _CountingServer | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        create = functools.partial(_H3ServerProtocol, fake=self)
        transport, server = await loop.create_datagram_endpoint(
            lambda: _CountingServer(
                self, configuration=self._configuration, create_protocol=create
            ),
            local_addr=(self.host, 0),
        )
        self._server = server
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()  # CONNECTION_CLOSE to live clients, then the socket
            await self._server.lost

    def _answer(
        self, protocol: _H3ServerProtocol, h3: H3Connection, event: HeadersReceived
    ) -> None:
        self.requests.append(dict(event.headers))
        if self.behaviour == "close":
            protocol.close(error_code=self.close_code, reason_phrase="closed by the test server")
            return
        if self.behaviour == "reset":
            protocol.reset(event.stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        h3.send_headers(
            event.stream_id,
            [
                (b":status", str(self.status).encode()),
                (b"server", b"ringprobe-fake"),
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(self.body)).encode()),
            ],
        )
        h3.send_data(event.stream_id, self.body, end_stream=True)
        protocol.transmit()


def _server_configuration(
    pki: FakePKI, cert: CertKind, alpn: Sequence[str], versions: Sequence[int]
) -> QuicConfiguration:
    leaf = pki.leaves[cert]
    chain = [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=list(alpn), supported_versions=list(versions)
    )
    configuration.certificate = chain[0]
    configuration.certificate_chain = chain[1:]
    configuration.private_key = serialization.load_pem_private_key(
        leaf.private_key_pem.bytes(), password=None
    )
    return configuration


class _CountingServer(QuicServer):
    """aioquic's server, counting datagrams before it handles them."""

    def __init__(self, fake: FakeQUICServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fake = fake
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self._fake.datagrams += 1
        self._fake.bytes_received += len(data)
        super().datagram_received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class _H3ServerProtocol(QuicConnectionProtocol):
    """One server connection: HTTP/3 once ALPN says h3, answered as the fake's behaviour says."""

    def __init__(
        self, quic: QuicConnection, stream_handler: Any = None, *, fake: FakeQUICServer
    ) -> None:
        super().__init__(quic, stream_handler)
        fake.connections += 1
        self._fake = fake
        self._h3: H3Connection | None = None

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if self._fake.behaviour == "refuse":
            # Read the Initial (so its keys exist), then answer it with nothing but the close.
            self._quic.receive_datagram(cast(bytes, data), addr, now=self._loop.time())
            self._quic.close(
                error_code=QuicErrorCode.CONNECTION_REFUSED,
                frame_type=QuicFrameType.PADDING,  # a transport close: None would make it the app's
                reason_phrase="refused by the test server",
            )
            self.transmit()
            return
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._fake._answer(self, self._h3, h3_event)

    def reset(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)
        self.transmit()


class _Recorder(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self._on_datagram = on_datagram
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._on_datagram(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _close(transport: asyncio.DatagramTransport | None, protocol: _Recorder | None) -> None:
    if transport is not None and protocol is not None:
        transport.close()
        await protocol.lost


class SilentUDP:
    """A bound UDP port that reads and counts every datagram and answers none."""

    host = LOOPBACK

    def __init__(self) -> None:
        self.port = 0
        self.sizes: list[int] = []
        """The size of each datagram received."""
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Recorder | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._transport, self._protocol = await loop.create_datagram_endpoint(
            lambda: _Recorder(lambda data, _addr: self.sizes.append(len(data))),
            local_addr=(LOOPBACK, 0),
        )
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _close(self._transport, self._protocol)


class InitialDropProxy:
    """A UDP relay for one client in front of ``upstream_port``; datagrams from the client of
    ``drop_from`` bytes or more are dropped (None: relay everything, the control)."""

    host = LOOPBACK

    def __init__(self, upstream_port: int, drop_from: int | None = INITIAL_DROP_FROM) -> None:
        self.upstream_port = upstream_port
        self.drop_from = drop_from
        self.port = 0
        self.forwarded = 0
        """Datagrams relayed from the client to the server."""
        self.dropped: list[int] = []
        """The size of each datagram from the client that was dropped."""
        self._client: Any = None
        self._down: asyncio.DatagramTransport | None = None
        self._down_protocol: _Recorder | None = None
        self._up: asyncio.DatagramTransport | None = None
        self._up_protocol: _Recorder | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._up, self._up_protocol = await loop.create_datagram_endpoint(
            lambda: _Recorder(self._from_server), remote_addr=(LOOPBACK, self.upstream_port)
        )
        self._down, self._down_protocol = await loop.create_datagram_endpoint(
            lambda: _Recorder(self._from_client), local_addr=(LOOPBACK, 0)
        )
        self.port = self._down.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _close(self._down, self._down_protocol)
        await _close(self._up, self._up_protocol)

    def _from_client(self, data: bytes, addr: Any) -> None:
        self._client = addr
        if self.drop_from is not None and len(data) >= self.drop_from:
            self.dropped.append(len(data))
            return
        assert self._up is not None
        self.forwarded += 1
        self._up.sendto(data)

    def _from_server(self, data: bytes, _addr: Any) -> None:
        if self._client is not None and self._down is not None:
            self._down.sendto(data, self._client)
