"""The ``dns_doh`` check: A and AAAA for the target's host over DNS-over-HTTPS (RFC 8484, POST).

The DoH server's own name is resolved first, through the system resolver and the guard (so a
tampered system resolver shows here as a failure with ``failed_operation: "doh_server_lookup"``),
then pinned, so aiohttp connects only to the guarded address. Its certificate is verified
against the system store plus ``ctx.ca_file``.

details: those of the DNS checks (see probe.checks.dns) with ``resolver: "doh"`` and ``server``
the URL; ``doh_server_address`` (what was contacted); ``http_status`` when a reply decided the
outcome; each query's attempts carry their ``http_status``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import string
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import dns.message

from probe.checks.base import CheckContext, ProtocolError, measured
from probe.checks.dns import (
    LISTEN_SHARE,
    Exchange,
    GuardedResolver,
    lookup,
    parse_reply,
    query_name,
)
from probe.errors import OptionError
from probe.model import Failure, Record, Target

CHECK: Final = "dns_doh"

MEDIA_TYPE: Final = "application/dns-message"  # RFC 8484 §4.1, defined in §6
# The largest DNS message (two-byte length, RFC 1035 §4.2.2); a longer body is not a DNS reply.
MAX_BODY: Final = 65535
HTTPS_PORT: Final = 443  # the https scheme's default port, RFC 9110 §4.2.2

__all__ = ["CHECK", "MEDIA_TYPE", "dns_doh", "parse_doh_url"]

_HOST_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_.")


def parse_doh_url(text: str) -> str:
    """Check a DoH URL: https, a host (a name in ASCII or an IP literal), an optional port, no
    credentials or fragment. Returns it with the scheme and host lower-cased and ``/`` as the path
    when none was given; OptionError says what is wrong."""
    value = text.strip()
    if not value:
        raise OptionError("DoH URL: empty; give e.g. https://dns.example/dns-query")
    if any(c.isspace() or not c.isprintable() for c in value):
        # urllib silently drops tabs and newlines (WHATWG URL parsing): refuse them instead.
        raise OptionError(f"DoH URL {text!r}: contains white space or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise OptionError(f"DoH URL {text!r}: {exc}") from None
    if parts.scheme.lower() != "https":
        raise OptionError(f"DoH URL {text!r}: must start with https:// (RFC 8484 §5)")
    if parts.username is not None or parts.password is not None:
        raise OptionError(f"DoH URL {text!r}: credentials in the URL are not supported")
    if parts.fragment:
        raise OptionError(f"DoH URL {text!r}: a fragment has no meaning here")
    host = parts.hostname
    if not host:
        raise OptionError(f"DoH URL {text!r}: no host")
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise OptionError(f"DoH URL {text!r}: {host!r} is not an IPv6 address") from None
        netloc_host = f"[{host}]"
    else:
        _check_host_name(text, host)
        netloc_host = host
    if port == 0:
        raise OptionError(f"DoH URL {text!r}: port 0 cannot be contacted")
    netloc = netloc_host if port is None else f"{netloc_host}:{port}"
    return parts._replace(scheme="https", netloc=netloc, path=parts.path or "/").geturl()


def _check_host_name(text: str, host: str) -> None:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if (
        not set(host) <= _HOST_CHARS
        or len(host) > 253  # RFC 1035 §2.3.4 (255 octets on the wire)
        or any(not 1 <= len(label) <= 63 for label in labels)  # RFC 1035 §2.3.4
    ):
        raise OptionError(
            f"DoH URL {text!r}: {host!r} is not a host name (non-ASCII names: use the xn-- form)"
        )


async def dns_doh(ctx: CheckContext, target: Target, transaction_id: int) -> Record:
    """Resolve the target's host (A and AAAA) through ``ctx.doh_url``. OptionError (raised, not
    recorded) when the URL is unset or unusable: the command line validates it first."""
    if ctx.doh_url is None:
        raise OptionError("dns_doh needs a DoH URL (ctx.doh_url)")
    url = parse_doh_url(ctx.doh_url)
    if target.host is None:
        raise ValueError(f"target {target.id!r} has no host name to resolve")
    async with measured(ctx, CHECK, target, None, transaction_id) as step:
        step.details.update(resolver="doh", server=url)
        deadline = asyncio.get_running_loop().time() + step.timeout * LISTEN_SHARE
        name = query_name(target.host)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or HTTPS_PORT
        step.details["failed_operation"] = "doh_server_lookup"
        async with asyncio.timeout_at(deadline):
            found = await GuardedResolver(ctx).resolve(host, port, socket.AF_UNSPEC)
        address = found[0]["host"]
        step.details["doh_server_address"] = address
        step.details["failed_operation"] = "doh_round_trip"
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(ctx, pinned={host: address}),
            ssl=ctx.ssl_context(verify=True),
            use_dns_cache=False,
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            result = await lookup(name, _exchange(session, url), deadline)
        step.details.update(result.details())
        if result.decisive["attempts"]:
            status = result.decisive["attempts"][-1].get("http_status")
            if status is not None:
                step.details["http_status"] = status
        if result.error is not None:
            raise result.error
        del step.details["failed_operation"]
    return step.record


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """The body, read up to one byte past MAX_BODY (enough to tell it is too long)."""
    body = bytearray()
    while len(body) <= MAX_BODY:
        chunk = await response.content.read(MAX_BODY + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _exchange(session: aiohttp.ClientSession, url: str) -> Exchange:
    async def exchange(
        query: dns.message.QueryMessage, deadline: float, attempts: list[dict[str, Any]]
    ) -> dns.message.Message:
        query.id = 0  # RFC 8484 §4.1: a DNS ID of 0 keeps requests cache-friendly
        attempt: dict[str, Any] = {"server": url, "transport": "https"}
        attempts.append(attempt)
        headers = {"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}  # RFC 8484 §4.1
        started = asyncio.get_running_loop().time()
        try:
            async with (
                asyncio.timeout_at(deadline),
                session.post(url, data=query.to_wire(), headers=headers) as response,
            ):
                attempt["http_status"] = response.status
                attempt["content_type"] = response.headers.get("Content-Type", "")
                body = await _read_body(response)
                attempt["elapsed"] = round(asyncio.get_running_loop().time() - started, 6)
        except aiohttp.ClientError as exc:
            raise _translate(exc) from exc
        # RFC 8484 §4.2.1: any 2xx answer carries a DNS response; anything else is not one.
        if not 200 <= response.status < 300:
            raise ProtocolError(
                Failure.DNS_SERVER_MISBEHAVING, f"DoH server answered HTTP {response.status}"
            )
        reply = _parse(query, body)
        if isinstance(reply, str):
            attempt["unusable"] = [reply]
            raise ProtocolError(Failure.DNS_SERVER_MISBEHAVING, f"DoH body: {reply}")
        return reply

    return exchange


def _parse(query: dns.message.Message, body: bytes) -> dns.message.Message | str:
    if len(body) > MAX_BODY:
        return f"longer than any DNS message (over {MAX_BODY} bytes)"
    return parse_reply(query, body)


def _translate(exc: aiohttp.ClientError) -> BaseException:
    """aiohttp's exception as the error it wraps, so base.classify names it as for other checks."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return exc.certificate_error
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error  # connection refused, TLS errors, our resolver's errors (OSError)
    if isinstance(exc, OSError):
        # ClientOSError keeps its errno, ClientConnectionResetError is a reset, ServerTimeoutError
        # is a TimeoutError: classify reads them as they are.
        return exc
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return EOFError(f"DoH server closed the connection: {exc}")
    return ProtocolError(Failure.HTTP_REQUEST_FAILED, f"{type(exc).__name__}: {exc}")
