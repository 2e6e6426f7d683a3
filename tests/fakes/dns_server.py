"""A loopback DNS server for tests, in the spirit of dnspython's tests/nanonameserver.py.

It listens on UDP and TCP (same port) on 127.0.0.1 (or ::1), port chosen by the kernel, inside the
test's own event loop, as an async context manager. A *handler* gets each parsed query and returns
what to send back:

- a ``dns.message.Message``: sent as is (its id may be wrong on purpose);
- ``bytes``: sent raw (garbage);
- ``None``: nothing (silence);
- a list of those: each in turn (answering twice).

Queries that do not parse are recorded and not handed to the handler. Every query received is in
``server.queries``, so a test can assert that nothing was sent.

    async with FakeDNSServer(answer(a=["192.0.2.1"])) as server:
        ...  # server.address, server.port, server.write_resolv_conf(path)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Reply = dns.message.Message | bytes | None
HandlerResult = Reply | list[Reply]
Transport = Literal["udp", "tcp"]

_LENGTH = struct.Struct("!H")  # DNS over TCP length prefix, RFC 1035 §4.2.2
BIND_TRIES = 10


@dataclass(frozen=True, slots=True)
class Query:
    """A query the server received."""

    transport: Transport
    raw: bytes
    message: dns.message.Message | None
    """None when the bytes did not parse."""

    @property
    def qname(self) -> str | None:
        if self.message is None or not self.message.question:
            return None
        return self.message.question[0].name.to_text(omit_final_dot=True)

    @property
    def qtype(self) -> str | None:
        if self.message is None or not self.message.question:
            return None
        return dns.rdatatype.to_text(self.message.question[0].rdtype)


Handler = Callable[[Query], HandlerResult]


class FakeDNSServer:
    """UDP and TCP DNS on a loopback address; see the module docstring. ``port=0`` lets the
    kernel choose; a fixed port serves a second fake on another loopback address (127.0.0.2) at
    the port of the first, as resolv.conf's servers share one port."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", port: int = 0, tcp: bool = True
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.queries: list[Query] = []
        self.errors: list[Exception] = []
        """Exceptions the handler raised; the first is raised again by aclose()."""
        self._tcp = tcp
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_closed: asyncio.Future[None] | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return self.host

    @property
    def resolver(self) -> str:
        """The ``ctx.resolver`` text that reaches this server."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def write_resolv_conf(self, path: Path) -> Path:
        """A resolv.conf naming this server (its port goes in ctx.system_dns_port)."""
        path.write_text(f"# written by a test\nnameserver {self.host}\n")
        return path

    async def __aenter__(self) -> FakeDNSServer:
        wanted = self.port
        # UDP and TCP must share a port the kernel chose for UDP; the TCP side may be taken (a
        # client connection's local port), so try a few ports, then give up.
        for _ in range(BIND_TRIES if wanted == 0 else 1):
            await self._bind_udp(wanted)
            if not self._tcp:
                return self
            try:
                self._tcp_server = await asyncio.start_server(self._serve_tcp, self.host, self.port)
            except OSError as exc:
                await self.aclose()
                error = exc
                continue
            return self
        raise error

    async def _bind_udp(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UDP(self, closed), local_addr=(self.host, port)
        )
        self._udp_transport, self._udp_closed = transport, closed
        self.port = transport.get_extra_info("sockname")[1]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        if self._udp_transport is not None and self._udp_closed is not None:
            self._udp_transport.close()
            await self._udp_closed
            self._udp_transport = None
        if self.errors:
            raise RuntimeError("the fake DNS server's handler failed") from self.errors[0]

    def _receive(self, transport: Transport, raw: bytes) -> list[bytes]:
        try:
            message: dns.message.Message | None = dns.message.from_wire(raw)
        except Exception:  # whatever the client sent, the fake records it and stays up
            message = None
        query = Query(transport, raw, message)
        self.queries.append(query)
        if message is None:
            return []
        try:
            result = self.handler(query)
        except Exception as exc:
            # Raised again when the server closes, so the test fails with the real cause
            # rather than with the timeout the client sees.
            self.errors.append(exc)
            return []
        replies = result if isinstance(result, list) else [result]
        out = []
        for reply in replies:
            if isinstance(reply, dns.message.Message):
                out.append(reply.to_wire())
            elif isinstance(reply, bytes):
                out.append(reply)
        return out

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            # One connection carries a bounded number of queries: a test never needs more.
            for _ in range(16):
                (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                raw = await reader.readexactly(length)
                for data in self._receive("tcp", raw):
                    writer.write(_LENGTH.pack(len(data)) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDNSServer, closed: asyncio.Future[None]) -> None:
        self.server = server
        self.closed = closed
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        for reply in self.server._receive("udp", data):
            self.transport.sendto(reply, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


# --- ready-made handlers ------------------------------------------------------------------------


def _response(query: Query, code: dns.rcode.Rcode = dns.rcode.NOERROR) -> dns.message.Message:
    assert query.message is not None
    response = dns.message.make_response(query.message)
    response.set_rcode(code)
    return response


def build_answer(
    query: Query,
    a: Sequence[str] = (),
    aaaa: Sequence[str] = (),
    ttl: int = 300,
    cname: str | None = None,
) -> dns.message.Message:
    """The response a correct server gives: the records of the asked type (after ``cname``, when
    given, as a CNAME from the asked name)."""
    response = _response(query)
    assert query.message is not None
    question = query.message.question[0]
    owner = question.name
    if cname is not None:
        target = dns.name.from_text(cname)
        response.answer.append(
            dns.rrset.from_text(
                owner, ttl, dns.rdataclass.IN, dns.rdatatype.CNAME, target.to_text()
            )
        )
        owner = target
    values = {dns.rdatatype.A: a, dns.rdatatype.AAAA: aaaa}.get(question.rdtype, ())
    if values:
        response.answer.append(
            dns.rrset.from_text_list(owner, ttl, dns.rdataclass.IN, question.rdtype, list(values))
        )
    return response


def answer(
    a: Sequence[str] = (), aaaa: Sequence[str] = (), ttl: int = 300, cname: str | None = None
) -> Handler:
    """Answer A and AAAA queries with these addresses (a type without addresses: no data)."""
    return lambda query: build_answer(query, a, aaaa, ttl, cname)


def spoof(address: str = "10.10.34.34") -> Handler:
    """What an injecting censor sends: one bogus A record, whatever the name; AAAA gets no data
    (a blockpage address; 10.10.34.34 is the one reported from Iran)."""
    return answer(a=[address])


def rcode(code: dns.rcode.Rcode) -> Handler:
    """Answer every query with this rcode and no records."""
    return lambda query: _response(query, code)


def nxdomain() -> Handler:
    return rcode(dns.rcode.NXDOMAIN)


def refused() -> Handler:
    return rcode(dns.rcode.REFUSED)


def servfail() -> Handler:
    return rcode(dns.rcode.SERVFAIL)


def silent() -> Handler:
    """Receive and never answer (a dropped query)."""
    return lambda query: None


def garbage(data: bytes = b"\x00\x01not a dns message") -> Handler:
    """Answer with bytes that are not a DNS message."""
    return lambda query: data


def wrong_id(handler: Handler) -> Handler:
    """The handler's reply with a transaction id that does not match the query."""

    def reply(query: Query) -> HandlerResult:
        result = handler(query)
        assert isinstance(result, dns.message.Message)
        result.id = (result.id + 1) % 65536
        return result

    return reply


def twice(first: Handler, second: Handler) -> Handler:
    """Two replies to each query: ``first``'s then ``second``'s (an injector racing the server)."""

    def reply(query: Query) -> HandlerResult:
        out: list[Reply] = []
        for handler in (first, second):
            result = handler(query)
            out.extend(result if isinstance(result, list) else [result])
        return out

    return reply


def truncating(handler: Handler) -> Handler:
    """Over UDP, an empty reply with the TC flag set; over TCP, the handler's reply."""

    def reply(query: Query) -> HandlerResult:
        if query.transport == "tcp":
            return handler(query)
        response = _response(query)
        response.flags |= dns.flags.TC
        return response

    return reply
