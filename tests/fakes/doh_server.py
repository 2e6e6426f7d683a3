"""A loopback DNS-over-HTTPS server for tests (RFC 8484 POST), with a certificate made at test time.

An aiohttp web server on 127.0.0.1, port chosen by the kernel, TLS with a certificate that
``trustme`` issues for ``127.0.0.1``, ``localhost`` and ``doh.test``; the CA is written to a file
for ``ctx.ca_file``. A *handler* gets each parsed query (a ``dns.message.Message``) and returns:

- a ``dns.message.Message``: HTTP 200 with it as the body;
- ``bytes``: HTTP 200 with these bytes as the body (garbage);
- ``Status(code)``: that HTTP status with an empty body;
- ``HANG``: never answer (until the server shuts down).

    async with FakeDoHServer(doh_answer(a=["192.0.2.1"]), tmp_path) as server:
        ...  # server.url, server.ca_file, server.queries
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Final

import dns.message
import dns.rcode
import trustme
from aiohttp import web

from tests.fakes.dns_server import Query, build_answer

MEDIA_TYPE: Final = "application/dns-message"  # RFC 8484 §6
PATH: Final = "/dns-query"  # the path RFC 8484 §4.1.1's examples use
CERT_NAMES: Final = ("127.0.0.1", "localhost", "doh.test")
# A hanging handler is released at shutdown; this bounds it should the test forget to shut down.
MAX_HANG: Final = 30.0


@dataclass(frozen=True, slots=True)
class Status:
    """Answer with this HTTP status and no body."""

    code: int


class _Hang:
    """Never answer."""


HANG: Final = _Hang()

DoHReply = dns.message.Message | bytes | Status | _Hang
DoHHandler = Callable[[dns.message.Message], DoHReply]


@cache
def _authority() -> tuple[trustme.CA, trustme.LeafCert]:
    # One CA per test session: issuing keys is the slow part, and tests share nothing else.
    ca = trustme.CA()
    return ca, ca.issue_cert(*CERT_NAMES)


class FakeDoHServer:
    """See the module docstring. ``directory`` receives the CA file."""

    def __init__(self, handler: DoHHandler, directory: Path, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.queries: list[dns.message.Message | None] = []
        """Every request body received, parsed (None when it did not parse)."""
        self.ca_file = str(directory / "doh-ca.pem")
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    def url_for(self, host: str | None = None) -> str:
        """The DoH URL of this server, under ``host`` (one of CERT_NAMES) if given."""
        return f"https://{host or self.host}:{self.port}{PATH}"

    @property
    def url(self) -> str:
        return self.url_for()

    async def __aenter__(self) -> FakeDoHServer:
        ca, leaf = _authority()
        ca.cert_pem.write_to_path(self.ca_file)
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ssl_context)
        app = web.Application()
        app.router.add_post(PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            query: dns.message.Message | None = dns.message.from_wire(body)
        except Exception:  # a bad request is recorded, and answered as a server would
            query = None
        self.queries.append(query)
        if query is None:
            return web.Response(status=400)
        reply = self.handler(query)
        if isinstance(reply, _Hang):
            try:
                async with asyncio.timeout(MAX_HANG):
                    await self._release.wait()
            except TimeoutError:
                pass
            return web.Response(status=503)
        if isinstance(reply, Status):
            return web.Response(status=reply.code)
        data = reply.to_wire() if isinstance(reply, dns.message.Message) else reply
        return web.Response(body=data, content_type=MEDIA_TYPE)


# --- ready-made handlers ------------------------------------------------------------------------


def _as_query(message: dns.message.Message) -> Query:
    return Query("tcp", b"", message)


def doh_answer(a: Sequence[str] = (), aaaa: Sequence[str] = (), ttl: int = 300) -> DoHHandler:
    return lambda query: build_answer(_as_query(query), a, aaaa, ttl)


def doh_rcode(code: dns.rcode.Rcode) -> DoHHandler:
    def reply(query: dns.message.Message) -> DoHReply:
        response = dns.message.make_response(query)
        response.set_rcode(code)
        return response

    return reply


def doh_status(code: int) -> DoHHandler:
    return lambda query: Status(code)


def doh_garbage(data: bytes = b"<html>blocked</html>") -> DoHHandler:
    return lambda query: data


def doh_hang() -> DoHHandler:
    return lambda query: HANG
