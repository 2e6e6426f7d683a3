"""Where a run is made from, as a network (ASN) and a country, without keeping the address.

Records say which network a run measured (``probe.asn``, ``probe.cc``): the analysis groups runs
by network, and a censor acts per network. The volunteer's address itself must never be stored
(docs/DESIGN.md, safety rules), so it is learned, used and forgotten here:

1. ``public_address``: one STUN Binding transaction (RFC 5389 §7.2) to a neutral STUN server;
   its XOR-MAPPED-ADDRESS (§15.2) is the address the internet sees (behind a NAT, not the
   socket's own). It goes to the run's scrubber before it is returned.
2. ``cymru_origin``: Team Cymru's IP-to-ASN mapping over DNS, a TXT query for the reversed
   address under ``origin.asn.cymru.com`` (``origin6`` for IPv6), through the system resolver.
3. ``locate``: both; only the ASN and the country leave this module.

Who sees what: the STUN server sees the address (every server the probe contacts does); the
Cymru query name carries it to the system resolver and on to Team Cymru's name servers (the ISP's
resolver knows it anyway). ``ringprobe run --asn AS... --cc XX`` makes no lookup at all.

Every step goes through ``ctx.guard`` before a datagram is sent, is bounded in datagrams and in
time (``ctx.timeout`` per step), and a failure of the network is a ``LocateError`` with an OONI
failure string, never a crash; its message never names the address.

    RingprobeError (probe.errors)
    └── LocateError     the lookup could not be made (``failure``: why, as a failure string)
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from probe.config import DEFAULT_STUN_SERVER, STUN_PORT, parse_host_port
from probe.errors import NotAllowedError, OptionError, RingprobeError

if TYPE_CHECKING:
    import dns.message

    from probe.checks.base import CheckContext
    from probe.protocols.stun import StunMessage

__all__ = [
    "DEFAULT_STUN_SERVER",
    "STUN_PORT",
    "LocateError",
    "Location",
    "Origin",
    "cymru_name",
    "cymru_origin",
    "locate",
    "parse_origin_txt",
    "parse_stun_server",
    "public_address",
]

# RFC 5389 §7.2.1: the first RTO, doubled after each retransmission (probe.checks.relay's too)
INITIAL_RTO: Final = 0.5
# Ours: three Binding requests (RFC 5389 §7.2.1's Rc is 7), as the relay checks send by default;
# a server that ignores three is not worth the rest of the check's time.
ATTEMPTS: Final = 3
# Ours: a Binding answer is one datagram; this many that are not it means we are not answered.
MAX_DATAGRAMS: Final = 16
# https://www.team-cymru.com/ip-asn-mapping ("DNS" section): the zones of the origin lookups
CYMRU_V4_ZONE: Final = "origin.asn.cymru.com"
CYMRU_V6_ZONE: Final = "origin6.asn.cymru.com"
# RFC 6793 §2: AS numbers are 32-bit
MAX_ASN: Final = 2**32 - 1
# OONI's conventions for "unknown" (probe.model.ProbeMeta)
UNKNOWN_ASN: Final = "AS0"
UNKNOWN_CC: Final = "ZZ"
# Ours: a Cymru answer is one short line; anything longer is not one (and is not parsed).
MAX_TXT_CHARS: Final = 512

_COUNTRY = re.compile(r"[A-Z]{2}")
_DIGITS = re.compile(r"[0-9]{1,10}")


class LocateError(RingprobeError):
    """The probe's network could not be looked up. ``failure`` is an OONI failure string (or ours,
    ``locate_*``); the message says why in words, and never contains the probe's address."""

    def __init__(self, failure: str, message: str) -> None:
        self.failure = failure
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Origin:
    """What Team Cymru's mapping says of one address."""

    asn: str
    """The origin AS of the most specific announced prefix, e.g. ``AS64500``."""
    cc: str
    """The country of the prefix's registration (ISO 3166 alpha-2), ``ZZ`` when none is given."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a run was made from: all that a run keeps of its public address."""

    asn: str
    cc: str


# --- the STUN server's address and the Binding transaction -----------------------------------


def parse_stun_server(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``V6`` or ``[V6]:PORT`` (port STUN_PORT when none is given) into
    (host, port), as the ``stun_server`` setting is checked (probe.config.parse_host_port);
    OptionError says what is wrong."""
    try:
        return parse_host_port(text, STUN_PORT)
    except ValueError:
        raise OptionError(
            f"STUN server {text!r}: give HOST, HOST:PORT or [IPv6]:PORT (port 1 to 65535)"
        ) from None


async def public_address(ctx: CheckContext, server: str) -> str:
    """The probe's public address as the STUN ``server`` (``HOST[:PORT]``) sees it: a Binding
    request, retransmitted as RFC 5389 §7.2.1 says (ATTEMPTS sends, the wait doubling from an RTO
    that fits them in the first half of ``ctx.timeout``), answered by a Binding success with
    XOR-MAPPED-ADDRESS (or, from an RFC 3489 server, MAPPED-ADDRESS). The address is added to
    ``ctx.scrubber`` before it is returned. A host name is resolved through the system resolver
    first, within the same ``ctx.timeout``. LocateError when there is no answer."""
    host, port = parse_stun_server(server)
    try:
        async with asyncio.timeout(ctx.timeout):
            address = await _server_address(ctx, host)
            return await _binding(ctx, address, port)
    except LocateError:
        raise
    except (NotAllowedError, OSError, TimeoutError) as exc:
        raise _network_error(f"STUN server {server}", exc) from exc


async def _server_address(ctx: CheckContext, host: str) -> str:
    """``host`` itself if it is an IP address, else its first A/AAAA answer the guard allows."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    from probe.checks import dns as dns_check
    from probe.checks.base import ProtocolError

    loop = asyncio.get_running_loop()
    try:
        name = dns_check.query_name(host)
        servers = await dns_check.system_servers(ctx)
        # The step's timeout ends the lookup; it must leave time for the Binding.
        deadline = loop.time() + ctx.timeout / 2
        found = await dns_check.lookup(name, dns_check.system_exchange(ctx, servers), deadline)
    except ProtocolError as exc:
        raise LocateError(exc.failure, f"cannot resolve the STUN server {host}: {exc}") from exc
    if found.error is not None:
        raise _network_error(f"resolving the STUN server {host}", found.error)
    for address in found.addresses:
        try:
            ctx.guard(address)
        except NotAllowedError:
            continue
        return address
    raise NotAllowedError(f"every address of {host}")


class _Datagrams(asyncio.DatagramProtocol):
    """What the connected socket hears, bounded: datagrams, and ICMP errors as exceptions."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self.received = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.received < MAX_DATAGRAMS:
            self.received += 1
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def _binding(ctx: CheckContext, address: str, port: int) -> str:
    from probe.protocols import DecodeError, stun

    ctx.guard(address)  # before the socket exists: a refused server sees nothing
    txid = os.urandom(stun.TXID_LEN)
    request = stun.binding_request(txid, fingerprint=True)
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=(address, port)
    )
    try:
        ctx.note_local(transport.get_extra_info("sockname"))
        rto = min(INITIAL_RTO, ctx.timeout / (1 << ATTEMPTS))
        seen = 0
        for attempt in range(ATTEMPTS):
            transport.sendto(request)
            # After the last send, listen until the step's timeout.
            until = None if attempt == ATTEMPTS - 1 else loop.time() + rto * (1 << attempt)
            while True:
                try:
                    async with asyncio.timeout_at(until):
                        item = await receiver.queue.get()
                except TimeoutError:
                    break
                if isinstance(item, Exception):
                    raise item
                seen += 1
                try:
                    message = stun.parse(item)
                except DecodeError:
                    message = None
                if message is not None and message.txid == txid:
                    return _mapped(ctx, message)
                if seen >= MAX_DATAGRAMS:
                    raise LocateError(
                        "locate_no_stun_answer",
                        f"{seen} datagrams from the STUN server, none answering our request",
                    )
    finally:
        transport.close()
    raise TimeoutError("no answer from the STUN server")


def _mapped(ctx: CheckContext, message: StunMessage) -> str:
    from probe.model import Failure
    from probe.protocols import stun

    reflected = message.xor_mapped_address or message.mapped_address
    if reflected is not None:
        ctx.scrubber.add(reflected[0])  # before anything else can see it
    if message.msg_type != stun.BINDING_SUCCESS or reflected is None:
        raise LocateError(
            Failure.STUN_BAD_RESPONSE,
            f"the STUN server answered type {message.msg_type:#06x}, not a Binding success "
            "with the mapped address",
        )
    return str(ipaddress.ip_address(reflected[0]))


# --- Team Cymru's IP-to-ASN mapping over DNS ----------------------------------------------------


def cymru_name(address: str) -> str:
    """The TXT name Team Cymru answers for ``address`` (https://www.team-cymru.com/ip-asn-mapping):
    the IPv4 octets reversed under CYMRU_V4_ZONE, or the 32 nibbles of the IPv6 address reversed
    under CYMRU_V6_ZONE. ValueError for what is not an IP address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the address the IPv4 internet sees
    if isinstance(ip, ipaddress.IPv4Address):
        return ".".join(reversed(str(ip).split("."))) + "." + CYMRU_V4_ZONE
    nibbles = ip.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + CYMRU_V6_ZONE


def parse_origin_txt(text: str) -> Origin | None:
    """One origin TXT answer, ``"ASN [ASN...] | prefix | CC | registry | date"``
    (https://www.team-cymru.com/ip-asn-mapping; a prefix announced by several ASes lists them
    all, and the first is taken): its Origin, or None when the text is not such an answer. An
    empty country is ZZ (unknown); a country that is not two letters makes the answer unusable."""
    if len(text) > MAX_TXT_CHARS:
        return None
    fields = [field.strip() for field in text.split("|")]
    if len(fields) < 3:
        return None
    asns = fields[0].split()
    if not asns or not _DIGITS.fullmatch(asns[0]) or int(asns[0]) > MAX_ASN:
        return None
    cc = fields[2].upper() or UNKNOWN_CC
    if not _COUNTRY.fullmatch(cc):
        return None
    return Origin(asn=f"AS{int(asns[0])}", cc=cc)


def _prefix_length(text: str) -> int:
    """The prefix length of an answer's second field; -1 when it is not a prefix."""
    fields = text.split("|")
    try:
        return ipaddress.ip_network(fields[1].strip(), strict=False).prefixlen
    except (IndexError, ValueError):
        return -1


def _pick_origin(texts: list[str]) -> Origin | None:
    """The origin of the most specific prefix among the answers (as routing picks one), the
    first of equals; None when no answer is usable."""
    usable = [(text, origin) for text in texts if (origin := parse_origin_txt(text)) is not None]
    if not usable:
        return None
    best = max(usable, key=lambda pair: _prefix_length(pair[0]))  # max keeps the first of equals
    return best[1]


def _txt_strings(reply: dns.message.Message) -> list[str]:
    """The TXT answers of a reply to our query (exchange_udp matched its question), each record's
    strings joined as RFC 7208 §3.3 joins them; undecodable ones are left out."""
    import dns.rdatatype

    texts = []
    for rrset in reply.answer:
        if rrset.rdtype != dns.rdatatype.TXT:
            continue
        for rdata in rrset:
            try:
                texts.append(b"".join(rdata.strings).decode("ascii"))
            except UnicodeDecodeError:
                continue
    return texts


async def cymru_origin(ctx: CheckContext, address: str) -> Origin:
    """Ask the system resolver (resolv.conf, each server through ``ctx.guard``) for the TXT
    record of cymru_name(address) and read it (parse_origin_txt); within ``ctx.timeout``.
    LocateError when there is no usable answer."""
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdatatype

    from probe.checks import dns as dns_check
    from probe.checks.base import ProtocolError
    from probe.model import Failure

    name = dns.name.from_text(cymru_name(address))
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    loop = asyncio.get_running_loop()
    # The query name holds the address: no message below may quote it.
    what = "the IP-to-ASN lookup"
    try:
        async with asyncio.timeout(ctx.timeout):
            servers = await dns_check.system_servers(ctx)
            deadline = loop.time() + ctx.timeout * dns_check.LISTEN_SHARE
            reply = await dns_check.system_exchange(ctx, servers)(query, deadline, [])
    except ProtocolError as exc:
        raise LocateError(exc.failure, f"{what}: {exc}") from exc
    except (NotAllowedError, OSError, TimeoutError) as exc:
        raise _network_error(what, exc) from exc
    rcode = reply.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise LocateError(Failure.DNS_NXDOMAIN, f"{what}: no such name (address not announced?)")
    if rcode != dns.rcode.NOERROR:
        failure = {
            dns.rcode.SERVFAIL: Failure.DNS_SERVFAIL,
            dns.rcode.REFUSED: Failure.DNS_REFUSED,
        }.get(rcode, Failure.DNS_SERVER_MISBEHAVING)
        raise LocateError(failure, f"{what}: rcode {dns.rcode.to_text(rcode)}")
    texts = _txt_strings(reply)
    if not texts:
        raise LocateError(Failure.DNS_NO_ANSWER, f"{what}: no TXT record in the answer")
    origin = _pick_origin(texts)
    if origin is None:
        raise LocateError("locate_bad_origin", f"{what}: {len(texts)} TXT answer(s), none readable")
    return origin


def _network_error(what: str, exc: BaseException) -> LocateError:
    from probe.checks.base import classify

    failure = classify(exc)
    if isinstance(exc, NotAllowedError):
        # The guard names the refused address: a server, never ours, but say it plainly.
        return LocateError(failure, f"{what}: {exc}")
    return LocateError(failure, f"{what}: {failure}")


# --- both ----------------------------------------------------------------------------------------


async def locate(ctx: CheckContext, stun_server: str = DEFAULT_STUN_SERVER) -> Location:
    """The run's network: public_address, then cymru_origin of it. The address goes to
    ``ctx.scrubber`` and no further; LocateError when either step fails."""
    address = await public_address(ctx, stun_server)
    origin = await cymru_origin(ctx, address)
    return Location(asn=origin.asn, cc=origin.cc)
