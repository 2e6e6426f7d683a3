"""The ``trace`` check: where on the path does a triggering packet meet interference?

A trigger is sent with TTL (IPv6: hop limit) 1, 2, ... up to ``max_ttl``; each router on the path
answers the copy whose TTL runs out with ICMP time-exceeded, from its own address. Its *control*,
the same exchange with neutral content, is traced the same way, interleaved TTL by TTL (control
first), so that both see the same path at the same moment. Where the trigger stops being answered
(or is reset) at a TTL where its control still reaches the next router, the interference starts;
the device acting sits at the last router that answered before it, or on the link after it. This
is traceroute's method applied to one app's opening packet, as Censored Planet's CenTrace does
for censored domains (Raman et al., "Network Measurement Methods for Locating and Examining
Censorship Devices", CoNEXT 2022).

Triggers (``TRIGGERS``) and their controls:

``tls``       a TLS ClientHello (made by the ssl module) naming the app's host as SNI, written on an
              established TCP connection; control: the same with the neutral SNI (ctx.neutral_sni);
``whatsapp``  WhatsApp's chat prologue (probe.protocols.whatsapp) on TCP; control: random bytes of
              its length, not starting with ``WA`` (the server does not answer them, but its TCP
              acknowledges them: see ``acked`` below);
``stun``      a STUN Binding request (RFC 5389 §6, no attributes), UDP; control: the classic
              (RFC 3489) Binding request, the same 20 bytes with a random transaction id where
              the magic cookie was, which servers with backward compatibility still answer;
``call``      the first datagram of the app's call flow (probe.checks.call_flow's framing:
              WhatsApp's STUN Allocate, Telegram's reflector hello), UDP; control: the call flow's
              own control (the framing replaced by random bytes). Sent to a ringprobe reflector
              with its secret (``secret``), both carry a signed echo trailer (probe.protocols.echo,
              a new sequence number per TTL) and both expect the reflector's echo; else the
              trailer is random bytes and nobody answers either.
``cut``       a call flow cut after its first seconds (METHOD.md calls_cut), UDP, to a ringprobe
              reflector only (``secret`` required): the app's call flow and its control are first
              *primed*, each on its own socket, at full TTL and the voice rate (``_prime``), until
              the call's echoes have stopped for CUT_SILENCE seconds while the control's go on
              (or ``prime`` seconds pass); then the TTL-limited probes are the flows' next
              datagrams on the same sockets (the same 5-tuples), so a censor that cut the call's
              connection drops them from its own hop on, while the control's still reach every
              router. Interference found this way is named ``cut``.

Each probe (one payload at one TTL) uses a fresh socket, so the ICMP errors it causes are told
apart by its local port (the cut trigger's probes use their flow's socket, one probe at a time). A
signed probe counts as answered only by the reflector's echo of that probe's own sequence number (a
late echo of the prime is not an answer). TCP: connect with the normal TTL, then set ``IP_TTL`` /
``IPV6_UNICAST_HOPS`` to the probe's TTL and write the payload once (the kernel may retransmit it,
with the same TTL, until the probe's wait ends); at the end the TTL is put back and the connection
is reset (SO_LINGER 0), so the server is not left with a half-open connection. UDP: a connected
socket, one datagram.

How ICMP errors are heard: a raw ICMP (ICMPv6) socket that only receives. Linux queues an ICMP
error with the offending router's address on the sending socket's error queue (IP_RECVERR,
MSG_ERRQUEUE) for UDP, but not for TCP: tcp_v4_err / tcp_v6_err only set the socket's error
number, so the router's address is lost, and a TCP trigger cannot be traced that way. Scapy's
sniffer would need the same privilege (CAP_NET_RAW) for an AF_PACKET socket, a thread beside the
event loop and a BPF compiler (tcpdump or libpcap); a raw ICMP socket needs none of those and is
read from the event loop. Without root or CAP_NET_RAW the check fails at once with
``raw_socket_not_permitted``, before anything is sent.

Per TTL the outcome of a probe is (``outcome_of``): ``reset`` (a TCP RST), ``answered`` (data
from the destination), ``time_exceeded`` (ICMP from a router; ``hop`` is its address),
``unreachable`` (ICMP destination unreachable; ``hop`` is who sent it, or null when only the
socket said so), ``closed`` (the TCP peer closed), ``silent`` (nothing within ``wait`` seconds).
Beside it, ``acked`` (TCP only; null for UDP): the destination's TCP acknowledged the whole
payload (tcpi_bytes_acked grew by its length during the probe), so the payload reached the
server, whatever the server did next. That is what shows the path going on at the last hop for
a control the server does not answer (the whatsapp trigger's random bytes).
Interference at a TTL (``interference``), judged against the other trace of the pair: the
reference's probe at that TTL reached a router (``time_exceeded``), or reached the destination
(its payload ``acked``, or answered while this probe expects an answer too), while this probe
was ``reset`` (``rst``), got nothing (``drop``), was closed (``fin``) or got an unreachable from
someone other than the destination (``reject``). A probe whose own payload was acked met no
interference, unless it expects an answer and was reset instead (an injector that lets the
packet on and resets the connection).

A trace ends early (``should_stop``) once the control reached the destination or the trigger
was answered there, or after ``stop_after_dark`` TTLs in a row at which no router answered
either probe (the path is dark beyond: nothing farther will say more).

Bounds: at most ``max_ttl`` (<= MAX_TTL) TTLs, two probes per TTL (trigger and control), each one
payload write; UDP sends exactly one datagram per probe (the cut trigger first sends its prime: at
most ``prime`` / 0.06 datagrams per flow, ``prime`` <= MAX_PRIME); TCP sends the handshake, the
payload and the kernel's retransmissions of it within ``wait`` seconds, and one RST (the records
count each segment, from TCP_INFO). Time: ``time_budget``.

details (each record): ``trigger``, ``control`` (bool), ``transport``, ``payload_bytes``,
``sni`` (tls), ``signed`` (call, cut: echo trailers under the reflector's secret), ``prime``
(cut: ``duration`` planned, ``interval``, ``sent``, ``echoed``, ``last_echoed_seq``,
``stopped_early``: the call's echoes had stopped while the control's went on), ``max_ttl``,
``wait``, ``hops`` (per TTL traced: ``ttl``, ``outcome``, ``hop``, ``rtt`` (seconds from the
send to what decided the outcome, null when silent), ``packets``, ``acked``, ``interference``
(null or the mechanism)), ``first_interfering_ttl``, ``interference`` (its mechanism),
``localized_hop`` (the TTL of the last router before it: 0 means before the first router),
``localized_address`` (that router's address, null when unknown), ``reached`` (the destination
answered, acknowledged the payload or sent an ICMP error itself), ``destination_ttl``,
``ttls_traced``, ``packets_sent``.
failures: ``raw_socket_not_permitted`` (no root / CAP_NET_RAW: nothing sent);
``address_not_allowed``; a failed TCP connect at full TTL as base.classify names it (the trace
ends there; both records carry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.checks.call_flow import _Framer, make_schedule
from probe.checks.tls import ALPN_OFFER
from probe.model import Failure, Record, Target
from probe.protocols import echo, rtp, stun
from probe.protocols.whatsapp import build_client_prologue, new_ephemeral_key

CHECK: Final = "trace"

__all__ = [
    "CALL_FRAMINGS",
    "CHECK",
    "CUT_SILENCE",
    "DEFAULT_MAX_TTL",
    "DEFAULT_PORTS",
    "DEFAULT_PRIME",
    "DEFAULT_STOP_AFTER_DARK",
    "DEFAULT_WAIT",
    "MAX_PRIME",
    "MAX_TTL",
    "MAX_WAIT",
    "OUTCOMES",
    "SIGNED_TRIGGERS",
    "TCP_TRIGGERS",
    "TRIGGERS",
    "IcmpError",
    "Probe",
    "TracePair",
    "app_triggers",
    "build_probe",
    "default_traces",
    "interference",
    "localize",
    "outcome_of",
    "parse_icmp4",
    "parse_icmp6",
    "pick_target",
    "resolve_host",
    "should_stop",
    "tcp_bytes_acked",
    "tcp_segments_out",
    "time_budget",
    "trace",
    "trace_budget",
    "transport_of",
]

TRIGGERS: Final = ("tls", "stun", "whatsapp", "call", "cut")
TCP_TRIGGERS: Final = ("tls", "whatsapp")
# The triggers a reflector's secret signs; the cut trigger needs it (nothing else echoes a flow).
SIGNED_TRIGGERS: Final = ("call", "cut")
# The call-flow framing of each app that has one (probe.checks.call_flow FRAMINGS).
CALL_FRAMINGS: Final = {"whatsapp": "whatsapp_rtp", "telegram": "telegram_reflector"}

# Ours: a censor sits within a few hops of the volunteer (Russia's TSPU is inside the access ISP);
# 8 TTLs reach past it on most paths. 32 is the most a trace may ask for, as far as paths go.
DEFAULT_MAX_TTL: Final = 8
MAX_TTL: Final = 32
# Seconds a probe waits for its answer: a router's time-exceeded comes back within one RTT.
DEFAULT_WAIT: Final = 1.0
MAX_WAIT: Final = 5.0
MIN_WAIT: Final = 0.05
# Ours: routers that do not answer ICMP exist (traceroute's "* * *"); three silent TTLs in a row
# for both probes means the rest of the path says nothing more.
DEFAULT_STOP_AFTER_DARK: Final = 3
# The cut trigger's prime: the call test's default and longest durations (probe.checks.call_flow
# DEFAULT_DURATION, MAX_DURATION), so a cut the call test sees falls within it.
DEFAULT_PRIME: Final = 10.0
MAX_PRIME: Final = 60.0
# Ours: seconds without an echo of the call while its control is echoed that count as a cut (16
# voice datagrams in a row lost; random loss of that length is as rare as 0.5**16 at 50% loss).
CUT_SILENCE: Final = 1.0
# Seconds to keep listening after the first thing a probe heard: an on-path injector's RST and a
# router's time-exceeded for the same packet arrive together.
GRACE: Final = 0.15
# Ours: a TCP connect at full TTL; the path's verdict on the connect is the tcp_connect check's.
MAX_CONNECT_TIMEOUT: Final = 10.0
# Ours: events one probe books (data reads, ICMP errors); more is a flood, not an answer.
MAX_EVENTS: Final = 64
# Ours: raw ICMP packets read per wake-up of the listener (every ICMP packet of the host reaches
# it, most of them not ours).
_READS_PER_WAKE: Final = 64
_RECV: Final = 65536
_MARGIN: Final = 1.0
# Seconds the cut trigger's prime starts after its sockets are set up, and listens after its
# last send for late echoes.
_PRIME_LEAD: Final = 0.05
_PRIME_TAIL: Final = 0.5

OUTCOMES: Final = ("reset", "answered", "time_exceeded", "unreachable", "closed", "silent")

# RFC 792 (ICMP): 11 time exceeded (code 0: TTL exceeded in transit), 3 destination unreachable.
ICMP_TIME_EXCEEDED: Final = 11
ICMP_UNREACHABLE: Final = 3
# RFC 4443 §3.3 and §3.1 (ICMPv6): 3 time exceeded (code 0: hop limit exceeded), 1 unreachable.
ICMP6_TIME_EXCEEDED: Final = 3
ICMP6_UNREACHABLE: Final = 1
_IPV6_HEADER: Final = 40  # RFC 8200 §3

# struct tcp_info, include/uapi/linux/tcp.h: tcpi_segs_out (u32) at byte 136 since Linux 4.2;
# before it tcpi_total_retrans (u32) at byte 100.
_TCPI_TOTAL_RETRANS: Final = 100
_TCPI_SEGS_OUT: Final = 136
# The same header: tcpi_bytes_acked (u64, RFC 4898 tcpEStatsAppHCThruOctetsAcked) at byte 120
# since Linux 4.1.
_TCPI_BYTES_ACKED: Final = 120
_TCP_CLOSE: Final = 7  # include/net/tcp_states.h


# --- what a trace sends ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """The payload one trace sends at every TTL."""

    trigger: str
    control: bool
    transport: Literal["tcp", "udp"]
    payload: bytes
    expects_answer: bool
    """Whether the destination answers this payload when nothing interferes (a control of
    random bytes gets no answer, so its silence there means nothing)."""
    sni: str | None = None
    signed: bool = False
    """A call probe whose trailer is signed for a ringprobe reflector, afresh at each TTL."""


def build_probe(
    trigger: str,
    *,
    control: bool,
    app: str,
    sni: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    call_size: int | None = None,
    signed: bool = False,
    rng: random.Random | None = None,
) -> Probe:
    """The trigger's payload, or its control's; ValueError for a trigger that cannot be made
    (unknown, a TLS trigger without an SNI, a call trigger for an app without a call framing).
    ``call_size``: the call datagram's length (a control takes its trigger's; drawn from the
    call flow's voice sizes when None). ``signed`` (call only): the probe goes to a ringprobe
    reflector, which echoes it once the trace signs its trailer (trace(secret=...))."""
    rng = rng or random.Random()
    if signed and trigger not in SIGNED_TRIGGERS:
        raise ValueError(f"only the call trigger is signed for a reflector, not {trigger!r}")
    if trigger == "cut" and not signed:
        raise ValueError("the cut trigger primes a call flow with a reflector: it is signed")
    if trigger == "tls":
        if not sni:
            raise ValueError("the tls trigger needs a server name (SNI)")
        return Probe(trigger, control, "tcp", client_hello(sni, ssl_context), True, sni)
    if trigger == "whatsapp":
        wire = build_client_prologue(new_ephemeral_key())
        if control:
            wire = _random_unlike(len(wire), rng, lambda b: b.startswith(b"WA"))
        return Probe(trigger, control, "tcp", wire, not control)
    if trigger == "stun":
        # No FINGERPRINT: trigger and control then differ only in bytes 4-7, the cookie.
        wire = stun.binding_request(rng.randbytes(stun.TXID_LEN), fingerprint=False)
        if control:
            wire = classic_binding_request(rng)
        return Probe(trigger, control, "udp", wire, not control)
    if trigger in SIGNED_TRIGGERS:
        framing = CALL_FRAMINGS.get(app)
        if framing is None:
            raise ValueError(
                f"no call framing for app {app!r} (the call trigger is {', '.join(CALL_FRAMINGS)})"
            )
        # The call flow's own opening datagram and its control (call_flow._Framer), with random
        # bytes where the echo trailer goes: trace() signs it for a reflector (``signed``).
        if call_size is None:
            schedule = make_schedule(framing, "voice", rtp.VOICE_INTERVAL, seed=rng.getrandbits(32))
            call_size = schedule.sizes[0]
        size = call_size
        body = _Framer(framing, control, rng).body(0, size)
        wire = body + rng.randbytes(echo.TRAILER_LEN)
        return Probe(trigger, control, "udp", wire, signed, signed=signed)
    raise ValueError(f"unknown trigger {trigger!r} (one of {', '.join(TRIGGERS)})")


# RFC 3489 §11.1: a classic STUN header is type (2), length (2) and a 16-byte transaction id,
# whose first 4 bytes RFC 5389 §6 later fixed as the magic cookie.
CLASSIC_TXID_LEN: Final = 16


def classic_binding_request(rng: random.Random) -> bytes:
    """The stun trigger's control: an RFC 3489 Binding request, the same message without the
    magic cookie (a random transaction id in its place). Servers that keep RFC 3489 backward
    compatibility (RFC 5389 §12; coturn does by default) answer it, so at the last hop the
    control's answer shows the path goes on where a cookie filter drops the trigger."""
    cookie = stun.MAGIC_COOKIE.to_bytes(4, "big")
    txid = _random_unlike(CLASSIC_TXID_LEN, rng, lambda b: b[:4] == cookie)
    return stun.BINDING_REQUEST.to_bytes(2, "big") + b"\x00\x00" + txid


def client_hello(sni: str, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """The first flight of a TLS client naming ``sni``, as the ssl module writes it (the same
    ClientHello as the tls_handshake check's, ALPN included)."""
    if ssl_context is None:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl.CERT_NONE
        ssl_context.set_alpn_protocols(list(ALPN_OFFER))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl_context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    if not hello:
        raise ValueError("the ssl module wrote no ClientHello")
    return hello


def _random_unlike(length: int, rng: random.Random, looks_like: Any) -> bytes:
    """Random bytes of ``length`` that do not look like the trigger (a censor's match)."""
    for _ in range(16):  # each draw looks like it with probability 2**-16 at most
        data = rng.randbytes(length)
        if not looks_like(data):
            return data
    raise RuntimeError("could not draw a neutral control in 16 tries")


# --- where a trace goes ----------------------------------------------------------------------

# What each trigger is sent to: catalog entries whose expect says they answer it.
_TRIGGER_EXPECTS: Final = {
    "tls": ("tls", "https"),
    "whatsapp": ("whatsapp",),
    "stun": ("stun", "turn", "wa_relay"),
    "call": ("wa_relay", "reflector", "turn", "stun"),
    "cut": (),  # a ringprobe reflector only (--reflector), never a catalog entry
}
# A trigger's port where no catalog entry gives one (RFC 9110 §4.2.2 HTTPS; RFC 8489 §9 STUN;
# WhatsApp's chat on 443, its relays' STUN port).
DEFAULT_PORTS: Final = {"tls": 443, "whatsapp": 443, "stun": 3478, "call": 3478, "cut": 3478}


def transport_of(trigger: str) -> Literal["tcp", "udp"]:
    """The transport a trigger travels on; ValueError for an unknown trigger."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r} (one of {', '.join(TRIGGERS)})")
    return "tcp" if trigger in TCP_TRIGGERS else "udp"


def pick_target(targets: Sequence[Target], app: str, trigger: str) -> Target | None:
    """The first catalog entry of ``app`` that answers ``trigger`` (a TLS entry must have a host,
    the SNI), or None."""
    transport = transport_of(trigger)
    for target in targets:
        if (
            target.app == app
            and target.transport == transport
            and target.expect in _TRIGGER_EXPECTS[trigger]
            and (trigger != "tls" or target.host is not None)
        ):
            return target
    return None


def app_triggers(app: str) -> tuple[str, ...]:
    """The triggers that can be made for ``app``, in TRIGGERS order: ``whatsapp`` (WhatsApp's
    chat prologue) only for WhatsApp, ``call`` and ``cut`` only for an app with a call framing."""
    return tuple(
        trigger
        for trigger in TRIGGERS
        if (trigger != "whatsapp" or app == "whatsapp")
        and (trigger not in SIGNED_TRIGGERS or app in CALL_FRAMINGS)
    )


def default_traces(targets: Sequence[Target], app: str) -> list[tuple[str, Target]]:
    """What ``ringprobe trace --app APP`` traces by default, for every trigger of the app that
    the catalog has an endpoint for: (trigger, pick_target's entry), in TRIGGERS order (never
    ``cut``, which goes to a reflector)."""
    found = ((trigger, pick_target(targets, app, trigger)) for trigger in app_triggers(app))
    return [(trigger, target) for trigger, target in found if target is not None]


async def resolve_host(ctx: CheckContext, host: str) -> list[str]:
    """The addresses of ``host`` from the system resolver, asked through the guard (as the
    dns_system check asks); a failure as the exception that decided it."""
    from probe.checks import dns as dns_check  # dnspython: only when a name must be resolved

    servers = await dns_check.system_servers(ctx)
    loop = asyncio.get_running_loop()
    result = await dns_check.lookup(
        dns_check.query_name(host),
        dns_check.system_exchange(ctx, servers),
        loop.time() + ctx.timeout,
    )
    if result.error is not None:
        raise result.error
    return result.addresses


# --- ICMP errors (sans-IO) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about one of our packets, as far as its quotation tells."""

    kind: Literal["time_exceeded", "unreachable"]
    offender: str
    """Who sent the ICMP error (a router, or the destination)."""
    icmp_type: int
    icmp_code: int
    protocol: int
    """The quoted packet's transport protocol (6 TCP, 17 UDP)."""
    source_port: int
    destination: str
    destination_port: int


def parse_icmp4(packet: bytes) -> IcmpError | None:
    """A packet from a raw IPv4 ICMP socket (IP header first); None unless it is a time-exceeded
    or destination-unreachable that quotes a TCP or UDP packet's ports (RFC 792: the quotation
    is the IP header and at least 8 bytes of what followed)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    offender = socket.inet_ntop(socket.AF_INET, packet[12:16])
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] not in (ICMP_TIME_EXCEEDED, ICMP_UNREACHABLE):
        return None
    quoted = icmp[8:]
    if len(quoted) < 20 or quoted[0] >> 4 != 4:
        return None
    qihl = (quoted[0] & 0x0F) * 4
    if qihl < 20 or len(quoted) < qihl + 4:
        return None
    sport, dport = struct.unpack_from("!HH", quoted, qihl)
    return IcmpError(
        "time_exceeded" if icmp[0] == ICMP_TIME_EXCEEDED else "unreachable",
        offender,
        icmp[0],
        icmp[1],
        quoted[9],
        sport,
        socket.inet_ntop(socket.AF_INET, quoted[16:20]),
        dport,
    )


def parse_icmp6(message: bytes, offender: str) -> IcmpError | None:
    """An ICMPv6 message from a raw ICMPv6 socket (no IPv6 header: the sender is ``offender``);
    None unless it is a time-exceeded or destination-unreachable quoting a TCP or UDP packet
    right after its IPv6 header (RFC 4443 §3; extension headers are not followed)."""
    if len(message) < 8 or message[0] not in (ICMP6_TIME_EXCEEDED, ICMP6_UNREACHABLE):
        return None
    quoted = message[8:]
    if len(quoted) < _IPV6_HEADER + 4 or quoted[0] >> 4 != 6:
        return None
    sport, dport = struct.unpack_from("!HH", quoted, _IPV6_HEADER)
    return IcmpError(
        "time_exceeded" if message[0] == ICMP6_TIME_EXCEEDED else "unreachable",
        offender.split("%", 1)[0],
        message[0],
        message[1],
        quoted[6],
        sport,
        socket.inet_ntop(socket.AF_INET6, quoted[24:40]),
        dport,
    )


# --- judging (pure) ---------------------------------------------------------------------------

Event = tuple[str, float, Any]
"""What a probe heard: (kind, seconds since its send, value). Kinds: ``icmp`` (an IcmpError),
``data`` (bytes read), ``reset``, ``closed``, ``refused`` (the socket's ICMP port-unreachable),
``error`` (another socket error, its errno)."""


def outcome_of(events: Sequence[Event]) -> tuple[str, str | None, float | None]:
    """A probe's outcome, the address of whoever sent an ICMP error about it (the hop) and the
    seconds from the send to the event that decided. A reset outweighs everything (an injector
    may let the packet on and reset it too), then an answer, then ICMP, then a close."""
    hop: str | None = None
    icmp_kind: str | None = None
    icmp_at: float | None = None
    for kind, at, value in events:
        if kind == "icmp" and hop is None:
            hop, icmp_kind, icmp_at = value.offender, value.kind, at
    for wanted, outcome in (("reset", "reset"), ("data", "answered")):
        for kind, at, _value in events:
            if kind == wanted:
                return outcome, hop, at
    if icmp_kind is not None:
        return icmp_kind, hop, icmp_at
    for kind, at, _value in events:
        if kind in ("refused", "error"):
            return "unreachable", None, at
        if kind == "closed":
            return "closed", None, at
    return "silent", None, None


def interference(
    result: dict[str, Any], reference: dict[str, Any], *, expects_answer: bool, destination: str
) -> str | None:
    """The mechanism of interference with one probe (``result``) judged against the other trace's
    probe at the same TTL (``reference``), or None. Only where the reference got through: to the
    router at this TTL (time-exceeded), or to the destination when this probe expects an answer
    there too, or its payload was acknowledged by the destination's TCP (``acked``); anything
    else tells nothing (both lost, or a control the server ignores)."""
    ref = reference["outcome"]
    passed = (
        ref == "time_exceeded"
        or bool(reference.get("acked"))
        or (ref == "answered" and expects_answer)
    )
    if not passed:
        return None
    outcome = result["outcome"]
    if result.get("acked") and (outcome != "reset" or not expects_answer):
        # Its payload reached the server: silence, a close or a refused control is the server's
        # doing; only a reset instead of an answer may be an injector's that let the packet on.
        return None
    if outcome == "reset":
        return "rst"
    if outcome == "silent":
        return "drop"
    if outcome == "closed":
        return "fin"
    if outcome == "unreachable" and result["hop"] != destination:
        return "reject"
    return None


@dataclass(frozen=True, slots=True)
class Localization:
    """Where a trace first met interference."""

    first_interfering_ttl: int | None
    interference: str | None
    localized_hop: int | None
    """The TTL of the last router before the interference (0: before the first router)."""
    localized_address: str | None


def localize(
    results: Sequence[dict[str, Any]],
    reference: Sequence[dict[str, Any]],
    *,
    expects_answer: bool,
    destination: str,
) -> Localization:
    """The first TTL at which ``results`` meet interference against ``reference`` (both in TTL
    order from 1), and the router before it; sets each result's ``interference``."""
    first: int | None = None
    mechanism: str | None = None
    for index, (result, ref) in enumerate(zip(results, reference, strict=False)):
        found = interference(result, ref, expects_answer=expects_answer, destination=destination)
        result["interference"] = found
        if found is not None and first is None:
            first, mechanism = index + 1, found
    if first is None:
        return Localization(None, None, None, None)
    before = first - 1
    address: str | None = None
    if before >= 1:
        for trace in (results, reference):
            entry = trace[before - 1]
            if entry["outcome"] == "time_exceeded" and entry["hop"]:
                address = entry["hop"]
                break
    return Localization(first, mechanism, before, address)


def reached_at(results: Sequence[dict[str, Any]], destination: str) -> int | None:
    """The first TTL at which the destination answered, acknowledged the payload (TCP) or sent
    an ICMP error itself."""
    for index, entry in enumerate(results):
        if entry["outcome"] == "answered" or entry.get("acked") or entry["hop"] == destination:
            return index + 1
    return None


def should_stop(
    trigger: Sequence[dict[str, Any]],
    control: Sequence[dict[str, Any]],
    *,
    destination: str,
    stop_after_dark: int,
) -> bool:
    """After a TTL: True once the control reached the destination (answered, closed, its payload
    acknowledged, or an ICMP error from it), or the trigger was answered, or no router answered
    either probe for the last ``stop_after_dark`` TTLs."""
    if not trigger or not control:
        return False
    last_c, last_t = control[-1], trigger[-1]
    if (
        last_c["outcome"] in ("answered", "closed")
        or last_c.get("acked")
        or last_c["hop"] == destination
    ):
        return True
    if last_t["outcome"] == "answered":
        return True
    if len(control) < stop_after_dark:
        return False
    recent = zip(trigger[-stop_after_dark:], control[-stop_after_dark:], strict=True)
    return all("time_exceeded" not in (t["outcome"], c["outcome"]) for t, c in recent)


def tcp_segments_out(info: bytes, handshake: int = 2) -> int | None:
    """Segments a TCP socket sent, from its TCP_INFO: tcpi_segs_out where the kernel has it, else
    the handshake, one payload segment and tcpi_total_retrans; None when too short for either."""
    if len(info) >= _TCPI_SEGS_OUT + 4:
        value: int = struct.unpack_from("=I", info, _TCPI_SEGS_OUT)[0]
        return value
    if len(info) >= _TCPI_TOTAL_RETRANS + 4:
        retrans: int = struct.unpack_from("=I", info, _TCPI_TOTAL_RETRANS)[0]
        return handshake + 1 + retrans
    return None


def tcp_bytes_acked(info: bytes) -> int | None:
    """The bytes a TCP socket's peer acknowledged, from its TCP_INFO (tcpi_bytes_acked); None
    for a kernel older than 4.1, whose TCP_INFO stops before it."""
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    value: int = struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)[0]
    return value


def check_bounds(max_ttl: int, wait: float) -> None:
    """ValueError unless 1 <= max_ttl <= MAX_TTL and MIN_WAIT <= wait <= MAX_WAIT."""
    if not 1 <= max_ttl <= MAX_TTL:
        raise ValueError(f"max_ttl must be 1 to {MAX_TTL}, not {max_ttl}")
    if not MIN_WAIT <= wait <= MAX_WAIT:
        raise ValueError(f"wait must be {MIN_WAIT} to {MAX_WAIT} seconds, not {wait}")


def trace_budget(
    trigger: str, *, max_ttl: int, wait: float, timeout: float, prime: float = DEFAULT_PRIME
) -> float:
    """The time budget of one trace of ``trigger`` run with a context whose timeout is
    ``timeout``: time_budget with trace()'s connect timeout (TCP) or none (UDP), and for the cut
    trigger its ``prime`` seconds and the wait for their last echoes."""
    connect = min(timeout, MAX_CONNECT_TIMEOUT) if transport_of(trigger) == "tcp" else 0.0
    extra = prime + _PRIME_TAIL if trigger == "cut" else 0.0
    return time_budget(max_ttl, wait, connect) + extra


def time_budget(max_ttl: int, wait: float, connect_timeout: float) -> float:
    """The most a trace pair may take: two probes per TTL, each a connect (TCP), its wait and
    the grace after the first thing it heard."""
    return max_ttl * 2 * (connect_timeout + wait + GRACE) + _MARGIN


# --- the raw ICMP listener ------------------------------------------------------------------


@dataclass(slots=True)
class _Expected:
    protocol: int
    local_port: int
    destination: str
    port: int
    started: float
    queue: asyncio.Queue[Event]


class _IcmpListener:
    """A receive-only raw ICMP (ICMPv6) socket read from the event loop; hands the errors about
    the current probe's packets to that probe's queue. It never sends."""

    def __init__(self, family: int) -> None:
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        try:
            self.sock = socket.socket(family, socket.SOCK_RAW, proto)
        except PermissionError as exc:
            raise ProtocolError(
                Failure.RAW_SOCKET_NOT_PERMITTED,
                "a trace hears routers' ICMP errors on a raw socket: run as root or with "
                "CAP_NET_RAW",
            ) from exc
        self.family = family
        self.sock.setblocking(False)
        self.expected: _Expected | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        for _ in range(_READS_PER_WAKE):
            try:
                data, source = self.sock.recvfrom(_RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a raw socket's error says nothing about our probe
            if self.family == socket.AF_INET:
                error = parse_icmp4(data)
            else:
                error = parse_icmp6(data, str(source[0]))
            want = self.expected
            if (
                error is not None
                and want is not None
                and (error.protocol, error.source_port, error.destination_port)
                == (want.protocol, want.local_port, want.port)
                and _same_address(error.destination, want.destination)
                and want.queue.qsize() < MAX_EVENTS
            ):
                want.queue.put_nowait(("icmp", time.monotonic() - want.started, error))


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


# --- the check ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TracePair:
    """The two records of one trace: the trigger's and its control's."""

    trigger: Record
    control: Record


@dataclass(slots=True)
class _Trace:
    probe: Probe
    step: Step
    results: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    """Packets sent, those of a probe that failed half-way (a connect) included."""
    secret: bytes | None = None
    session: bytes = b""
    sock: socket.socket | None = None
    """The cut trigger's flow socket, kept from the prime through every probe; else None (a
    fresh socket per probe)."""
    framer: _Framer | None = None
    """The cut trigger's call-flow framing (its prime and probes are the flow's datagrams)."""
    sizes: tuple[int, ...] = ()
    seq_base: int = 0
    """The cut trigger: datagrams the prime sent (the probes' sequence numbers follow)."""

    def seq(self, ttl: int) -> int:
        """The sequence number of the signed probe at ``ttl``: ttl - 1, after the prime's."""
        return self.seq_base + ttl - 1

    def datagram(self, seq: int) -> bytes:
        """Datagram ``seq`` of a signed trace, its trailer signed for the reflector (which
        echoes each sequence number once): the payload's body, or the cut flow's datagram."""
        assert self.secret is not None
        kind = echo.FlowKind.CONTROL if self.probe.control else echo.FlowKind.CALL
        if self.framer is not None:
            body = self.framer.body(seq, self.sizes[seq])
        else:
            body = self.probe.payload[: -echo.TRAILER_LEN]
        return echo.build_request(self.secret, body, self.session, seq, kind)

    def wire(self, ttl: int) -> bytes:
        """What the probe at ``ttl`` sends: the payload, or a signed trace's datagram."""
        if not self.probe.signed or self.secret is None:
            return self.probe.payload
        return self.datagram(self.seq(ttl))

    def echoed_seq(self, data: bytes) -> int | None:
        """The sequence number ``data`` echoes if it is the reflector's echo of this trace's
        session, else None."""
        if self.secret is None:
            return None
        try:
            trailer = echo.parse_echo(self.secret, data)
        except echo.EchoError:
            return None
        return trailer.seq if trailer.session == self.session else None


async def trace(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    trigger: str,
    sni: str | None = None,
    max_ttl: int = DEFAULT_MAX_TTL,
    wait: float = DEFAULT_WAIT,
    stop_after_dark: int = DEFAULT_STOP_AFTER_DARK,
    secret: bytes | None = None,
    prime: float = DEFAULT_PRIME,
    rng: random.Random | None = None,
) -> TracePair:
    """Trace ``trigger`` and its control to ``address:target.port`` (an IP literal), TTL by TTL
    (module docstring). ``sni`` is the tls trigger's server name (default: the target's host).
    ``secret``: the call or cut trigger goes to a ringprobe reflector sharing it, which echoes
    trigger and control alike (the cut trigger needs it). ``prime``: the cut trigger's longest
    prime, seconds. Network failures become the records' failure; bad arguments raise
    ValueError."""
    check_bounds(max_ttl, wait)
    if stop_after_dark < 1:
        raise ValueError(f"stop_after_dark must be at least 1, not {stop_after_dark}")
    if secret is not None and (trigger not in SIGNED_TRIGGERS or not secret):
        raise ValueError("a reflector's secret signs the call and cut triggers only, not empty")
    if trigger == "cut" and secret is None:
        raise ValueError("the cut trigger primes a call flow with a reflector: give its secret")
    if not 0 < prime <= MAX_PRIME:
        raise ValueError(f"prime must be above 0 and at most {MAX_PRIME} seconds, not {prime}")
    version = ipaddress.ip_address(address.split("%", 1)[0]).version  # ValueError for a name
    rng = rng or random.Random()
    sni = sni or target.host
    ssl_context = ctx.ssl_context(verify=False, alpn=ALPN_OFFER) if trigger == "tls" else None
    signed = secret is not None
    triggering = build_probe(
        trigger,
        control=False,
        app=target.app,
        sni=sni,
        ssl_context=ssl_context,
        signed=signed,
        rng=rng,
    )
    control = build_probe(
        trigger,
        control=True,
        app=target.app,
        sni=ctx.neutral_sni,
        ssl_context=ssl_context,
        call_size=len(triggering.payload),
        signed=signed,
        rng=rng,
    )
    probes = [control, triggering]  # the control goes first at each TTL
    if probes[0].transport != target.transport:
        raise ValueError(f"the {trigger} trigger is {probes[0].transport}, the target is not")
    connect_timeout = min(ctx.timeout, MAX_CONNECT_TIMEOUT)
    budget = trace_budget(trigger, max_ttl=max_ttl, wait=wait, timeout=ctx.timeout, prime=prime)
    control_step = Step(ctx, CHECK, target, address, transaction_id, budget)
    async with measured(ctx, CHECK, target, address, transaction_id, timeout=budget) as step:
        traces = [
            _Trace(probe, part, secret=secret, session=rng.randbytes(echo.SESSION_LEN))
            for probe, part in zip(probes, (control_step, step), strict=True)
        ]
        for entry in traces:
            _describe(entry, max_ttl, wait)
        ctx.guard(address)  # before the listener and any socket: a refused address sees nothing
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        listener = _IcmpListener(family)
        try:
            if trigger == "cut":
                framing = CALL_FRAMINGS[target.app]
                interval = rtp.VOICE_INTERVAL
                # The prime's datagrams and then one per TTL, all of the flow's sizes.
                length = prime + (max_ttl + 1) * interval
                schedule = make_schedule(framing, "voice", length, seed=rng.getrandbits(32))
                for entry in traces:
                    entry.framer = _Framer(framing, entry.probe.control, rng)
                    entry.sizes = schedule.sizes
                    entry.sock = _flow_socket(ctx, family, address, target.port)
                count = min(len(schedule.sizes) - max_ttl - 1, round(prime / interval))
                await _prime(traces, count, interval, prime)
            for ttl in range(1, max_ttl + 1):
                for entry in traces:
                    entry.step.details["ttls_traced"] = ttl
                    try:
                        result = await _probe_once(
                            ctx, listener, entry, address, target.port, ttl, wait, connect_timeout
                        )
                    finally:
                        entry.step.details["packets_sent"] = entry.sent
                    entry.results.append(result)
                if should_stop(
                    traces[1].results,
                    traces[0].results,
                    destination=address,
                    stop_after_dark=stop_after_dark,
                ):
                    break
        finally:
            listener.close()
            for entry in traces:
                if entry.sock is not None:
                    entry.sock.close()
    control_step._ended = time.monotonic()
    if step.failure is not None:
        control_step.failure = step.failure
        control_step.details.setdefault("error", step.details.get("error"))
    _conclude(traces, address)
    return TracePair(trigger=step.record, control=control_step.record)


def _flow_socket(ctx: CheckContext, family: int, address: str, port: int) -> socket.socket:
    """A connected UDP socket for one flow of the cut trigger (connecting sends nothing)."""
    ctx.guard(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((address, port))
        ctx.note_local(sock.getsockname())
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class _PrimeBook:
    """One flow's prime: what was sent and which sequence numbers were echoed, when last."""

    sent: int = 0
    echoed: set[int] = field(default_factory=set)
    last_echo: float | None = None


async def _prime(traces: list[_Trace], count: int, interval: float, prime: float) -> None:
    """The cut trigger's prime (module docstring): datagrams 0 .. ``count`` - 1 of each flow
    (the control, then the call half an interval later) at full TTL, one per ``interval``, on
    the flows' own sockets; the echoes booked. It stops early once the call has had no echo for
    CUT_SILENCE seconds while the control had one within them. Writes each trace's ``prime``
    detail and where its probes' sequence numbers start."""
    loop = asyncio.get_running_loop()
    books = [_PrimeBook() for _ in traces]

    def readable(entry: _Trace, book: _PrimeBook) -> None:
        assert entry.sock is not None
        for _ in range(_READS_PER_WAKE):
            try:
                data = entry.sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error the kernel reports: the prime books echoes only
            seq = entry.echoed_seq(data)
            if seq is not None and seq < count:
                book.echoed.add(seq)
                book.last_echo = time.monotonic()

    for entry, book in zip(traces, books, strict=True):
        assert entry.sock is not None
        loop.add_reader(entry.sock.fileno(), readable, entry, book)
    start = time.monotonic() + _PRIME_LEAD
    used = 0
    stopped_early = False
    try:
        for seq in range(count):
            used = seq + 1
            for half, (entry, book) in enumerate(zip(traces, books, strict=True)):
                assert entry.sock is not None
                delay = start + (seq + half / 2) * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    entry.sock.send(entry.datagram(seq))
                except OSError:
                    continue  # a pending ICMP error surfaced here; the datagram was not sent
                book.sent += 1
                entry.sent += 1
            now = time.monotonic()
            control, call = books
            call_quiet = now - (call.last_echo or start) >= CUT_SILENCE
            control_alive = control.last_echo is not None and now - control.last_echo < CUT_SILENCE
            if call_quiet and control_alive:
                stopped_early = True
                break
        await asyncio.sleep(_PRIME_TAIL)  # the last datagrams' echoes
    finally:
        for entry in traces:
            assert entry.sock is not None
            loop.remove_reader(entry.sock.fileno())
    for entry, book in zip(traces, books, strict=True):
        entry.seq_base = used
        entry.step.details["packets_sent"] = entry.sent
        entry.step.details["prime"] = {
            "duration": prime,
            "interval": interval,
            "sent": book.sent,
            "echoed": len(book.echoed),
            "last_echoed_seq": max(book.echoed, default=None),
            "stopped_early": stopped_early,
        }


def _describe(entry: _Trace, max_ttl: int, wait: float) -> None:
    probe = entry.probe
    entry.step.details.update(
        trigger=probe.trigger,
        control=probe.control,
        transport=probe.transport,
        payload_bytes=len(probe.payload),
        max_ttl=max_ttl,
        wait=wait,
        hops=entry.results,
        first_interfering_ttl=None,
        interference=None,
        localized_hop=None,
        localized_address=None,
        reached=False,
        destination_ttl=None,
        ttls_traced=0,
        packets_sent=0,
    )
    if probe.sni is not None:
        entry.step.details["sni"] = probe.sni
    if probe.trigger in SIGNED_TRIGGERS:
        entry.step.details["signed"] = probe.signed


def _conclude(traces: list[_Trace], destination: str) -> None:
    """Judge each trace against the other, TTL by TTL, and write where it met interference."""
    control, trig = traces
    for entry, other in ((trig, control), (control, trig)):
        found = localize(
            entry.results,
            other.results,
            expects_answer=entry.probe.expects_answer,
            destination=destination,
        )
        at = reached_at(entry.results, destination)
        mechanism = found.interference
        prime = entry.step.details.get("prime")
        if mechanism == "drop" and prime is not None and prime["echoed"]:
            # The flow was echoed at first and its later datagrams are dropped: a cut.
            mechanism = "cut"
            for result in entry.results:
                if result["interference"] == "drop":
                    result["interference"] = "cut"
        entry.step.details.update(
            first_interfering_ttl=found.first_interfering_ttl,
            interference=mechanism,
            localized_hop=found.localized_hop,
            localized_address=found.localized_address,
            reached=at is not None,
            destination_ttl=at,
            packets_sent=entry.sent,
        )


def _ttl_option(family: int) -> tuple[int, int]:
    if family == socket.AF_INET:
        return socket.IPPROTO_IP, socket.IP_TTL
    return socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS


async def _probe_once(
    ctx: CheckContext,
    listener: _IcmpListener,
    entry: _Trace,
    address: str,
    port: int,
    ttl: int,
    wait: float,
    connect_timeout: float,
) -> dict[str, Any]:
    """Send the trace's payload once with ``ttl`` on a fresh socket; what came of it. Adds the
    packets sent to ``entry.sent``, also when the probe fails."""
    ctx.guard(address)  # every probe asks: the allow-list is the last word on each send
    probe = entry.probe
    loop = asyncio.get_running_loop()
    family = listener.family
    tcp = probe.transport == "tcp"
    own = entry.sock is None  # else the cut flow's socket, already connected
    if entry.sock is not None:
        sock = entry.sock
    else:
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        sock.setblocking(False)
    level, option = _ttl_option(family)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    events: list[Event] = []
    packets = 0
    reading = False
    normal_ttl: int | None = None
    payload = entry.wire(ttl)
    accept: Callable[[bytes], bool] | None = None
    if probe.signed:
        wanted = entry.seq(ttl)

        def accept(data: bytes) -> bool:
            return entry.echoed_seq(data) == wanted

    acked_before: int | None = None
    acked: bool | None = None
    try:
        if tcp:
            try:
                async with asyncio.timeout(connect_timeout):
                    await loop.sock_connect(sock, (address, port))
            finally:
                packets = _segments(sock, default=1)
        elif own:
            sock.connect((address, port))  # UDP: sends nothing; the socket hears ICMP errors
        ctx.note_local(sock.getsockname())
        if tcp:
            acked_before = _bytes_acked(sock)
        normal_ttl = sock.getsockopt(level, option)
        sock.setsockopt(level, option, ttl)
        started = time.monotonic()
        listener.expected = _Expected(
            socket.IPPROTO_TCP if tcp else socket.IPPROTO_UDP,
            sock.getsockname()[1],
            address,
            port,
            started,
            queue,
        )
        loop.add_reader(sock.fileno(), _readable, sock, queue, started, loop, accept)
        reading = True
        await loop.sock_sendall(sock, payload)
        packets = packets if tcp else 1
        deadline = started + wait
        while len(events) < MAX_EVENTS:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    events.append(await queue.get())
            except TimeoutError:
                break
            deadline = min(deadline, time.monotonic() + GRACE)
    finally:
        listener.expected = None
        if reading:
            loop.remove_reader(sock.fileno())
        if tcp:
            packets = max(packets, _segments(sock, default=packets))
            acked_after = _bytes_acked(sock)
            if acked_before is not None and acked_after is not None:
                acked = acked_after - acked_before >= len(payload)
            packets += _reset(sock, level, option, normal_ttl)
        if own:
            sock.close()
        entry.sent += packets
    outcome, hop, rtt = outcome_of(events)
    return {
        "ttl": ttl,
        "outcome": outcome,
        "hop": hop,
        "rtt": None if rtt is None else round(rtt, 6),
        "packets": packets,
        "acked": acked,
        "interference": None,
    }


def _segments(sock: socket.socket, *, default: int) -> int:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return default
    counted = tcp_segments_out(info)
    return default if counted is None else counted


def _bytes_acked(sock: socket.socket) -> int | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    return tcp_bytes_acked(info)


def _reset(sock: socket.socket, level: int, option: int, normal_ttl: int | None) -> int:
    """Put the normal TTL back and arm an abortive close (RST) for a connection still open, so
    that the server is not left holding it; the segments that close will send (0 or 1)."""
    try:
        sock.getpeername()
        # tcpi_state, include/net/tcp_states.h: after a reset the socket is TCP_CLOSE
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return 0  # never connected, or reset: nothing to close
    if state == _TCP_CLOSE:
        return 0
    with contextlib.suppress(OSError):
        if normal_ttl is not None:
            sock.setsockopt(level, option, normal_ttl)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return 1
    return 0


def _readable(
    sock: socket.socket,
    queue: asyncio.Queue[Event],
    started: float,
    loop: asyncio.AbstractEventLoop,
    accept: Callable[[bytes], bool] | None = None,
) -> None:
    """The probe's own socket has something: data (only what ``accept`` takes, when given), a
    reset, an end, or an ICMP error."""
    at = time.monotonic() - started
    try:
        data = sock.recv(_RECV)
    except (BlockingIOError, InterruptedError):
        return
    except ConnectionResetError:
        event: Event = ("reset", at, None)
    except ConnectionRefusedError:
        event = ("refused", at, None)
    except OSError as exc:  # another ICMP error the kernel reports (host unreachable, ...)
        event = ("error", at, exc.errno)
    else:
        if data:
            if queue.qsize() < MAX_EVENTS and (accept is None or accept(data)):
                queue.put_nowait(("data", at, len(data)))
            return
        event = ("closed", at, None)
    # The socket stays readable after an end or an error: stop watching it.
    loop.remove_reader(sock.fileno())
    queue.put_nowait(event)
