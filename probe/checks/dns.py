"""The DNS checks: the system resolver (``dns_system``) and an explicit resolver (``dns_udp``), plus
what other checks share: the bogon test, the comparison of resolvers' answers, and a guarded
host-name resolver for aiohttp.

Both checks ask for A and AAAA at once. dnspython encodes and decodes the messages; the exchange is
ours, so that every datagram goes to an address the guard allowed and every reply that arrived is
recorded. Each query gets a fresh connected UDP socket (as OONI's internal/netxlite/dnsoverudp.go
does: a censor that blocks the client's port for a while hurts one query only, and ICMP errors
surface). Replies that do not parse or do not answer our question are counted and ignored, as a
stub resolver ignores them, so an injected packet that races the real answer does not hide it; a
server that sends nothing but such replies is ``dns_server_misbehaving``. A truncated reply is
retried over TCP.

details (shared with ``dns_doh``): ``resolver`` (system, udp, doh), ``server``, ``answers`` (list of
{type, value, ttl} for A, AAAA and CNAME records of the answer sections), ``addresses`` (the A then
AAAA addresses of the queried name after its CNAME chain, deduplicated), ``bogus`` (the bogons among
them), ``rcode`` (of the reply that decided the outcome, when one did), ``queries`` (per query type:
``type``, ``rcode``, ``failure`` and ``attempts``, one per server and transport tried: ``server``,
``transport``, UDP datagrams ``sent``, ``unusable_replies`` (count) and ``unusable`` (the first
few, described), ``elapsed`` seconds to the usable reply, ``truncated``, the attempt's ``failure``).
dns_system adds ``servers`` (from resolv.conf) and ``port``; dns_udp adds ``port``.
``compare_answers`` adds ``consistent`` and ``compared_with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp.abc
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from probe.checks.base import (
    NETWORK_ERRORS,
    CheckContext,
    ProtocolError,
    classify,
    measured,
)
from probe.errors import NotAllowedError, OptionError
from probe.model import Failure, Record, Target

CHECK_SYSTEM: Final = "dns_system"
CHECK_UDP: Final = "dns_udp"

DNS_PORT: Final = 53  # RFC 1035 §4.2
# glibc reads at most this many name servers from resolv.conf (resolv.h MAXNS; resolv.conf(5)).
MAX_NAMESERVERS: Final = 3
# Datagrams per query and server: the first and one retransmission, glibc's default
# ``attempts:2`` (resolv.conf(5)), so one lost packet is not read as a block.
SENDS_PER_SERVER: Final = 2
# Share of the check's timeout spent listening for replies: what is left lets the check record
# "only unusable replies" before the step's own timeout fires and calls it silence.
LISTEN_SHARE: Final = 0.9
# Unusable replies tolerated per query before the server is called misbehaving; bounds the work a
# flood of junk can cause.
MAX_UNUSABLE: Final = 16
# Unusable replies described in a record (the rest are only counted); keeps records small.
MAX_DESCRIBED: Final = 4
# The two-byte length prefix of DNS over TCP (RFC 1035 §4.2.2).
TCP_LENGTH: Final = struct.Struct("!H")

QUERY_TYPES: Final = (dns.rdatatype.A, dns.rdatatype.AAAA)

# Addresses no public name should resolve to. Explicit, because ipaddress.is_private also covers
# the documentation blocks (RFC 5737, RFC 3849), which the lab uses as real addresses.
BOGON_NETWORKS: Final[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network", RFC 6890 §2.2.2
        "10.0.0.0/8",  # private use, RFC 1918
        "100.64.0.0/10",  # shared address space (CGN), RFC 6598
        "127.0.0.0/8",  # loopback, RFC 6890 §2.2.2
        "169.254.0.0/16",  # link local, RFC 3927
        "172.16.0.0/12",  # private use, RFC 1918
        "192.168.0.0/16",  # private use, RFC 1918
        "224.0.0.0/4",  # multicast, RFC 5771
        "240.0.0.0/4",  # reserved and limited broadcast, RFC 1112 §4, RFC 919
        "::/128",  # unspecified, RFC 4291 §2.5.2
        "::1/128",  # loopback, RFC 4291 §2.5.3
        "fc00::/7",  # unique local, RFC 4193
        "fe80::/10",  # link local, RFC 4291 §2.5.6
        "ff00::/8",  # multicast, RFC 4291 §2.7
    )
)

__all__ = [
    "BOGON_NETWORKS",
    "CHECK_SYSTEM",
    "CHECK_UDP",
    "LISTEN_SHARE",
    "Exchange",
    "GuardedResolver",
    "Lookup",
    "compare_answers",
    "dns_system",
    "dns_udp",
    "exchange_tcp",
    "exchange_udp",
    "is_bogon",
    "lookup",
    "parse_reply",
    "parse_resolver",
    "query_name",
    "read_nameservers",
    "system_exchange",
    "system_servers",
]


# --- pure helpers -------------------------------------------------------------------------------


def is_bogon(address: str) -> bool:
    """True when the address lies in a range no public name should resolve to (BOGON_NETWORKS),
    IPv4-mapped IPv6 forms included. Something that is not an address is not a bogon."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 reaches 10.0.0.1 (RFC 4291 §2.5.5.2)
    return any(ip.version == net.version and ip in net for net in BOGON_NETWORKS)


_PORT_RE = re.compile(r"[0-9]{1,5}")


def parse_resolver(text: str) -> tuple[str, int]:
    """Parse ``ADDR``, ``ADDR:PORT`` (IPv4), ``V6`` or ``[V6]:PORT`` into (address, port).

    The address must be an IP literal: a resolver named by a host name would need a resolver to
    find it, and the guard judges addresses. A bare IPv6 address takes port 53. OptionError says
    what is wrong.
    """
    value = text.strip()
    if not value:
        raise OptionError("resolver: empty; give ADDR, ADDR:PORT or [IPv6]:PORT")
    port_text: str | None = None
    if value.startswith("["):
        close = value.find("]")
        if close < 0:
            raise OptionError(f"resolver {text!r}: '[' without ']'")
        host, rest = value[1:close], value[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise OptionError(f"resolver {text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        if ":" not in host:
            raise OptionError(f"resolver {text!r}: brackets are for IPv6 addresses only")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host = value
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise OptionError(
            f"resolver {text!r}: {host!r} is not an IP address (a resolver is given by address)"
        ) from None
    port = DNS_PORT
    if port_text is not None:
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise OptionError(f"resolver {text!r}: port must be a number from 1 to 65535")
        port = int(port_text)
    return str(ip), port


def read_nameservers(text: str) -> list[str]:
    """The name server addresses of a resolv.conf text, as glibc reads them (resolv.conf(5)):
    ``nameserver ADDR`` lines, comments after ``#`` or ``;``, entries that are not IP addresses
    skipped, at most MAX_NAMESERVERS."""
    servers: list[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(tokens[1].split("%", 1)[0])
        except ValueError:
            continue
        # Keep a zone index (fe80::1%eth0): a link-local server is unreachable without it.
        zone = tokens[1].partition("%")[2]
        servers.append(f"{ip}%{zone}" if zone else str(ip))
        if len(servers) == MAX_NAMESERVERS:
            break
    return servers


def compare_answers(records: list[Record]) -> None:
    """Annotate each successful DNS record of one target with ``consistent``: whether its address
    set overlaps the union of the other successful resolvers' sets (None when no other resolver
    succeeded), and ``compared_with``: the names of those resolvers. Failed records are left as
    they are. Overlap, not equality: CDNs legitimately hand different resolvers different
    addresses from one pool."""
    ok = [r for r in records if r.failure is None]
    for record in ok:
        others = [r for r in ok if r is not record]
        record.details["compared_with"] = [_resolver_name(r) for r in others]
        if not others:
            record.details["consistent"] = None
            continue
        union = {a for r in others for a in r.details.get("addresses", [])}
        record.details["consistent"] = bool(union & set(record.details.get("addresses", [])))


def _resolver_name(record: Record) -> str:
    return str(record.details.get("resolver", record.check))


# --- one lookup: A and AAAA through an exchange -------------------------------------------------

# An exchange sends one query and returns the first usable reply; it appends what it did to the
# ``attempts`` list it is given and raises a network error when no usable reply came by the
# deadline (a loop.time() value). What the reply *says* is read by _read_reply.
Exchange = Callable[
    [dns.message.QueryMessage, float, list[dict[str, Any]]], Awaitable[dns.message.Message]
]


@dataclass(slots=True)
class _QueryResult:
    """One query type's outcome: its record entry, its answer and addresses, or its error."""

    entry: dict[str, Any]
    answers: list[dict[str, Any]] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def failed(self, exc: BaseException) -> _QueryResult:
        self.error = exc
        self.entry["failure"] = classify(exc)
        return self


@dataclass(slots=True)
class Lookup:
    """The outcome of asking one resolver for A and AAAA: observations for ``details``, and the
    error that decides the failure (None when some address came back)."""

    answers: list[dict[str, Any]]
    addresses: list[str]
    queries: list[dict[str, Any]]
    """One entry per query type: type, rcode, failure, attempts."""
    decisive: dict[str, Any]
    """The entry of ``queries`` that decided the outcome."""
    error: BaseException | None

    @property
    def rcode(self) -> str | None:
        return self.decisive.get("rcode")

    @property
    def server(self) -> str | None:
        """The server whose reply decided, when one did (the last attempt is the one that
        answered)."""
        if "rcode" not in self.decisive or not self.decisive["attempts"]:
            return None
        return str(self.decisive["attempts"][-1]["server"])

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answers": self.answers,
            "addresses": self.addresses,
            "bogus": [a for a in self.addresses if is_bogon(a)],
            "queries": self.queries,
        }
        if self.rcode is not None:
            out["rcode"] = self.rcode
        return out


def query_name(host: str) -> dns.name.Name:
    """The absolute DNS name of a catalog host; ProtocolError when it cannot be one."""
    try:
        return dns.name.from_text(host)
    except dns.exception.DNSException as exc:
        raise ProtocolError(
            f"{Failure.UNKNOWN_PREFIX}invalid host name {host!r}: {exc}", str(exc)
        ) from exc


async def lookup(
    name: dns.name.Name,
    exchange: Exchange,
    deadline: float,
    qtypes: Iterable[dns.rdatatype.RdataType] = QUERY_TYPES,
) -> Lookup:
    """Ask for each query type at once through ``exchange``; never raises a network error (it is
    returned in ``Lookup.error``). One type with addresses is a success whatever the other did."""
    # A TaskGroup, so that a bug in one query cancels and awaits the other: no orphan task.
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_ask(name, t, exchange, deadline)) for t in qtypes]
    results = [task.result() for task in tasks]
    answers = [a for r in results for a in r.answers]
    addresses = list(dict.fromkeys(a for r in results for a in r.addresses))
    error: BaseException | None = None
    if addresses:
        decisive = next(r for r in results if r.addresses)
    else:
        # A failure of one type outweighs "no data" of the other; between two failures the
        # first type (A) decides, as the address most apps would use.
        failed = [r for r in results if r.error is not None]
        decisive = failed[0] if failed else results[0]
        error = decisive.error or ProtocolError(
            Failure.DNS_NO_ANSWER, "no A or AAAA records for the name"
        )
    return Lookup(
        answers=answers,
        addresses=addresses,
        queries=[r.entry for r in results],
        decisive=decisive.entry,
        error=error,
    )


async def _ask(
    name: dns.name.Name, qtype: dns.rdatatype.RdataType, exchange: Exchange, deadline: float
) -> _QueryResult:
    query = dns.message.make_query(name, qtype)  # random id, RD set, no EDNS: a stub's query
    result = _QueryResult({"type": dns.rdatatype.to_text(qtype), "attempts": []})
    try:
        reply = await exchange(query, deadline, result.entry["attempts"])
    except NETWORK_ERRORS as exc:
        _mark_last_attempt(result.entry["attempts"], exc)
        return result.failed(exc)
    result.entry["rcode"] = dns.rcode.to_text(reply.rcode())
    try:
        result.answers, result.addresses = _read_reply(reply)
    except ProtocolError as exc:
        return result.failed(exc)
    result.entry["failure"] = None
    return result


def _mark_last_attempt(attempts: list[dict[str, Any]], exc: BaseException) -> None:
    """Note on the attempt that ended in ``exc`` how it failed (if it is not noted yet)."""
    if attempts:
        attempts[-1].setdefault("failure", classify(exc))


_RCODE_FAILURES: Final = {
    dns.rcode.NXDOMAIN: Failure.DNS_NXDOMAIN,
    dns.rcode.REFUSED: Failure.DNS_REFUSED,
    dns.rcode.SERVFAIL: Failure.DNS_SERVFAIL,
}


def _read_reply(reply: dns.message.Message) -> tuple[list[dict[str, Any]], list[str]]:
    """The answer records and the queried name's addresses of a reply that matched our query;
    ProtocolError for an error rcode or a reply that cannot be followed."""
    rcode = reply.rcode()
    if rcode in _RCODE_FAILURES:
        raise ProtocolError(_RCODE_FAILURES[rcode], f"rcode {dns.rcode.to_text(rcode)}")
    if rcode != dns.rcode.NOERROR:
        raise ProtocolError(
            Failure.DNS_SERVER_MISBEHAVING, f"unexpected rcode {dns.rcode.to_text(rcode)}"
        )
    answers: list[dict[str, Any]] = []
    for rrset in reply.answer:
        if rrset.rdclass != dns.rdataclass.IN:
            continue
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
                value = str(rdata.address)
            elif isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME):
                value = rdata.target.to_text(omit_final_dot=True)
            else:
                continue
            answers.append(
                {"type": dns.rdatatype.to_text(rrset.rdtype), "value": value, "ttl": rrset.ttl}
            )
    if not isinstance(reply, dns.message.QueryMessage):
        raise ProtocolError(Failure.DNS_SERVER_MISBEHAVING, "reply is not a query response")
    try:
        chain = reply.resolve_chaining()
    except dns.exception.DNSException as exc:
        raise ProtocolError(
            Failure.DNS_SERVER_MISBEHAVING, f"answer cannot be followed: {exc}"
        ) from exc
    addresses = []
    if chain.answer is not None:
        for rdata in chain.answer:
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
                addresses.append(str(ipaddress.ip_address(rdata.address)))
    return answers, addresses


def parse_reply(query: dns.message.Message, wire: bytes) -> dns.message.Message | str:
    """The reply if it answers ``query``, else a short description of why it is unusable (the
    description goes into records). A truncated reply that answers the query is returned with its
    TC flag set."""
    try:
        reply = dns.message.from_wire(wire, raise_on_truncation=True)
    except dns.message.Truncated as exc:
        # Truncated.message() is untyped; the message it returns is stored in kwargs.
        partial = getattr(exc, "kwargs", {}).get("message")
        if isinstance(partial, dns.message.Message) and query.is_response(partial):
            return partial
        return "truncated reply that does not match the query"
    except Exception as exc:  # hostile bytes may break a parser in any way: all are "unusable"
        return f"unparseable ({len(wire)} bytes): {type(exc).__name__}"
    try:
        matches = query.is_response(reply)
    except Exception as exc:  # a parsed but malformed reply: unusable, for the same reason
        return f"reply cannot be matched: {type(exc).__name__}"
    if not matches:
        return f"reply does not match the query (id {reply.id}, expected {query.id})"
    return reply


# --- exchanges over UDP and TCP ------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    """Queues what a connected UDP socket receives (datagrams and ICMP errors), bounded."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue(maxsize=MAX_UNUSABLE + 1)
        self.closed: asyncio.Future[None] = loop.create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a flood beyond the bound is dropped
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def exchange_udp(
    ctx: CheckContext,
    server: str,
    port: int,
    query: dns.message.QueryMessage,
    deadline: float,
    attempts: list[dict[str, Any]],
) -> dns.message.Message:
    """Send ``query`` to server:port over UDP (retransmitted once), return the first reply that
    answers it; over TCP when that reply is truncated. TimeoutError when nothing usable came by
    the deadline, ProtocolError (misbehaving) when only unusable replies came."""
    ctx.guard(server)  # before the socket exists
    loop = asyncio.get_running_loop()
    attempt: dict[str, Any] = {"server": server, "transport": "udp", "sent": 0}
    attempts.append(attempt)
    unusable: list[str] = []
    wire = query.to_wire()
    transport, protocol = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=(server, port)
    )
    try:
        ctx.note_local(transport.get_extra_info("sockname"))
        started = next_send = loop.time()
        interval = max(deadline - started, 0.0) / SENDS_PER_SERVER
        while loop.time() < deadline:
            if attempt["sent"] < SENDS_PER_SERVER and loop.time() >= next_send:
                transport.sendto(wire)
                attempt["sent"] += 1
                next_send = loop.time() + interval
            wait_until = deadline if attempt["sent"] >= SENDS_PER_SERVER else next_send
            try:
                async with asyncio.timeout_at(min(wait_until, deadline)):
                    item = await protocol.queue.get()
            except TimeoutError:
                continue
            if isinstance(item, OSError):
                raise item
            reply = parse_reply(query, item)
            if isinstance(reply, str):
                unusable.append(reply)
                if len(unusable) >= MAX_UNUSABLE:
                    break
                continue
            # Seconds from the first datagram to the reply: an injected answer tends to beat
            # the real one, so the analysis may compare this between resolvers.
            attempt["elapsed"] = round(loop.time() - started, 6)
            if reply.flags & dns.flags.TC:
                attempt["truncated"] = True
                break
            return reply
    finally:
        attempt["unusable_replies"] = len(unusable)
        if unusable:
            attempt["unusable"] = unusable[:MAX_DESCRIBED]
        transport.close()
        await protocol.closed  # the socket is closed once connection_lost has run
    if attempt.get("truncated"):
        return await exchange_tcp(ctx, server, port, query, deadline, attempts)
    if unusable:
        raise ProtocolError(
            Failure.DNS_SERVER_MISBEHAVING,
            f"{len(unusable)} unusable replies from {server}, none answering the query: "
            + unusable[0],
        )
    raise TimeoutError(f"no reply from {server} port {port}")


async def exchange_tcp(
    ctx: CheckContext,
    server: str,
    port: int,
    query: dns.message.QueryMessage,
    deadline: float,
    attempts: list[dict[str, Any]],
) -> dns.message.Message:
    """Send ``query`` over TCP (RFC 1035 §4.2.2 framing) and read one reply."""
    ctx.guard(server)
    attempt: dict[str, Any] = {"server": server, "transport": "tcp"}
    attempts.append(attempt)
    wire = query.to_wire()
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout_at(deadline):
        reader, writer = await asyncio.open_connection(server, port)
        try:
            ctx.note_local(writer.get_extra_info("sockname"))
            writer.write(TCP_LENGTH.pack(len(wire)) + wire)
            await writer.drain()
            (length,) = TCP_LENGTH.unpack(await reader.readexactly(TCP_LENGTH.size))
            data = await reader.readexactly(length)
            attempt["elapsed"] = round(asyncio.get_running_loop().time() - started, 6)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    reply = parse_reply(query, data)
    if isinstance(reply, str):
        attempt["unusable"] = [reply]
        raise ProtocolError(Failure.DNS_SERVER_MISBEHAVING, f"TCP reply from {server}: {reply}")
    return reply


def _listen_deadline(timeout: float) -> float:
    return asyncio.get_running_loop().time() + timeout * LISTEN_SHARE


# --- the system resolver -------------------------------------------------------------------------


async def system_servers(ctx: CheckContext) -> list[str]:
    """The resolv.conf name servers, every one of them allowed by the guard (NotAllowedError
    before anything is sent otherwise); ProtocolError when the file names none."""
    text = await asyncio.to_thread(Path(ctx.resolv_conf).read_text, encoding="utf-8")
    servers = read_nameservers(text)
    if not servers:
        raise ProtocolError(
            f"{Failure.UNKNOWN_PREFIX}no name server in {ctx.resolv_conf}",
            f"no usable nameserver line in {ctx.resolv_conf}",
        )
    for server in servers:
        ctx.guard(server)
    return servers


def system_exchange(ctx: CheckContext, servers: list[str]) -> Exchange:
    """Ask the servers in order, as glibc does, each with an equal share of the time left; the
    next is tried only when one gave no usable reply. The first server's error is reported."""
    port = ctx.system_dns_port

    async def exchange(
        query: dns.message.QueryMessage, deadline: float, attempts: list[dict[str, Any]]
    ) -> dns.message.Message:
        loop = asyncio.get_running_loop()
        first_error: BaseException | None = None
        for index, server in enumerate(servers):
            share = max(deadline - loop.time(), 0.0) / (len(servers) - index)
            try:
                return await exchange_udp(ctx, server, port, query, loop.time() + share, attempts)
            except NETWORK_ERRORS as exc:
                _mark_last_attempt(attempts, exc)
                first_error = first_error or exc
        assert first_error is not None  # servers is never empty
        raise first_error

    return exchange


async def dns_system(ctx: CheckContext, target: Target, transaction_id: int) -> Record:
    """Resolve the target's host (A and AAAA) through the name servers of ``ctx.resolv_conf``
    on port ``ctx.system_dns_port``."""
    name = _target_name(target)
    async with measured(ctx, CHECK_SYSTEM, target, None, transaction_id) as step:
        step.details.update(resolver="system", server=None, port=ctx.system_dns_port)
        servers = await system_servers(ctx)
        step.details.update(server=servers[0], servers=servers)
        result = await lookup(
            query_name(name), system_exchange(ctx, servers), _listen_deadline(step.timeout)
        )
        _finish(step.details, result)
    return step.record


# --- an explicit resolver ------------------------------------------------------------------------


async def dns_udp(ctx: CheckContext, target: Target, transaction_id: int) -> Record:
    """Resolve the target's host (A and AAAA) through ``ctx.resolver`` over UDP, TCP on
    truncation. OptionError (raised, not recorded) when ``ctx.resolver`` is unset or unusable:
    the command line validates it before a run starts."""
    if ctx.resolver is None:
        raise OptionError("dns_udp needs a resolver address (ctx.resolver)")
    server, port = parse_resolver(ctx.resolver)
    name = _target_name(target)
    async with measured(ctx, CHECK_UDP, target, None, transaction_id) as step:
        step.details.update(resolver="udp", server=server, port=port)
        ctx.guard(server)

        async def exchange(
            query: dns.message.QueryMessage, deadline: float, attempts: list[dict[str, Any]]
        ) -> dns.message.Message:
            return await exchange_udp(ctx, server, port, query, deadline, attempts)

        result = await lookup(query_name(name), exchange, _listen_deadline(step.timeout))
        _finish(step.details, result)
    return step.record


def _target_name(target: Target) -> str:
    if target.host is None:
        raise ValueError(f"target {target.id!r} has no host name to resolve")
    return target.host


def _finish(details: dict[str, Any], result: Lookup) -> None:
    """Write the lookup's observations into the record, then raise its failure, if any."""
    details.update(result.details())
    if result.server is not None:
        details["server"] = result.server
    if result.error is not None:
        raise result.error


# --- host names for aiohttp ----------------------------------------------------------------------


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's host-name resolution through the guard: a host in ``pinned`` maps to its given
    address, an IP literal to itself, any other name is asked of the system resolver (resolv.conf,
    guarded). Only addresses the guard allows are returned; NotAllowedError when none is.

    Errors are the DNS checks' own (ProtocolError with a dns_* failure, TimeoutError, OSError);
    aiohttp wraps an OSError in ClientConnectorDNSError, whose ``os_error`` is the original.
    aiohttp does not consult a resolver for a URL whose host is an IP literal: guard those
    yourself.
    """

    def __init__(self, ctx: CheckContext, pinned: dict[str, str] | None = None) -> None:
        self._ctx = ctx
        self._pinned = dict(pinned or {})

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        bare = host[:-1] if host.endswith(".") else host
        pinned = self._pinned.get(host, self._pinned.get(bare))
        if pinned is not None:
            candidates = [pinned]
        elif _is_ip(host):
            candidates = [host]
        else:
            candidates = await self._lookup(bare, family)
        allowed = [a for a in candidates if _passes(self._ctx, a)]
        if not allowed:
            raise NotAllowedError(candidates[0])
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in allowed
        ]

    async def _lookup(self, host: str, family: socket.AddressFamily) -> list[str]:
        if family == socket.AF_INET:
            qtypes: tuple[dns.rdatatype.RdataType, ...] = (dns.rdatatype.A,)
        elif family == socket.AF_INET6:
            qtypes = (dns.rdatatype.AAAA,)
        else:
            qtypes = QUERY_TYPES
        servers = await system_servers(self._ctx)
        result = await lookup(
            query_name(host),
            system_exchange(self._ctx, servers),
            _listen_deadline(self._ctx.timeout),
            qtypes,
        )
        if result.error is not None:
            raise result.error
        return result.addresses

    async def close(self) -> None:
        """Nothing to release: every lookup closes its own sockets."""


def _passes(ctx: CheckContext, address: str) -> bool:
    try:
        ctx.guard(address)
    except NotAllowedError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True
