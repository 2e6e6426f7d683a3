"""The relay checks: do the call path's UDP servers give their known answer?

Each check sends one request, as the app's client opens a call, over a connected UDP socket to
``address:target.port`` and waits for the one answer that server gives when nothing interferes
(probe.protocols.stun and probe.protocols.tgcalls do the bytes; this module only moves them):

``stun_binding``   RFC 5389 Binding request with FINGERPRINT -> Binding success with
                   XOR-MAPPED-ADDRESS (Telegram's TURN on UDP 1400, any STUN server);
``stun_allocate``  unauthenticated Allocate for a UDP relay (RFC 5766) -> error 401 with REALM and
                   NONCE (Telegram's TURN answers realm "telegram.org");
``wa_relay_ping``  WhatsApp's STUN-framed ping 0x0801, a bare header -> pong 0x0802 with our
                   transaction id (WhatsApp relays, UDP 3478);
``tg_reflector``   Telegram's 40-byte reflector hello -> a reply starting with our call tag, which
                   is all tgcalls asks of a reflector (UDP 596-599).

A silent relay where its known answer is due is what a censor dropping the call path looks like.

Requests are retransmitted on silence as RFC 5389 §7.2.1 does it: the same datagram (the same
transaction id, the same hello), the wait doubling from an initial RTO, all ``attempts`` sends
fitting in the first half of the check's timeout; after the last one the check listens until its
timeout. The first known answer ends the check. An answer is credited to the latest attempt sent
before it arrived (its ``rtt`` is from that send; a late answer to an earlier one cannot be told
apart, as Karn's algorithm knows). Datagrams of another transaction (or another call tag) are
counted as ``unmatched`` and ignored; datagrams that do not decode are counted as ``invalid`` and
the check keeps listening; a well-formed STUN response to our transaction that is not the known
answer ends the transaction (RFC 5389 §7.3.3), and the check, at once. At most ``MAX_DATAGRAMS``
datagrams are read.

The address a server reflects (XOR-MAPPED-ADDRESS, a reflector's self-info) is the volunteer's
public address: it goes to the run's scrubber and is recorded only as present or not, and its
family.

details (all checks): ``attempts`` (one ``{"sent", "answered", "rtt"}`` per datagram sent:
seconds since the check began, whether the known answer came before the next send, seconds from
this send to it or null), ``answered`` (the known answer came), ``bytes_sent``,
``bytes_received`` (UDP payload bytes, every datagram counted), ``unmatched``, ``invalid``;
the STUN checks also ``response_type`` (the message type of the response to our transaction,
e.g. 0x0101 as 257), ``error_code``, ``software``; ``stun_binding`` ``mapped_address`` (bool) and
``mapped_family`` ("ipv4", "ipv6" or null); ``stun_allocate`` ``realm`` and ``nonce`` (bool);
``tg_reflector`` ``special`` (the reply carries the 12 x FF mark), ``tlid`` (its TL constructor)
and ``self_info`` (bool), ``self_info_family``.
timings: ``answer`` (the known answer); ``response`` (a STUN response that was not).

failures:
``generic_timeout_error``: no answer to any attempt (only silence or unmatched datagrams), also
when ``MAX_DATAGRAMS`` unmatched datagrams came first;
``connection_refused``: ICMP port unreachable (other ICMP errors as base.classify maps them);
``stun_bad_response``: a STUN response to our transaction that is not the known answer (the
details say what it was);
``stun_bad_header``, ``stun_bad_cookie``, ``stun_bad_attribute``, ``stun_bad_fingerprint``,
``reflector_bad_reply``: no known answer came, but datagrams that do not decode did; the failure
is the decoder's string for the first of them;
``address_not_allowed``: the guard refused the address, and nothing was sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.model import Failure, Record, Target
from probe.protocols import DecodeError, stun, tgcalls

CHECK_STUN_BINDING = "stun_binding"
CHECK_STUN_ALLOCATE = "stun_allocate"
CHECK_WA_RELAY_PING = "wa_relay_ping"
CHECK_TG_REFLECTOR = "tg_reflector"

__all__ = [
    "CHECK_STUN_ALLOCATE",
    "CHECK_STUN_BINDING",
    "CHECK_TG_REFLECTOR",
    "CHECK_WA_RELAY_PING",
    "DEFAULT_ATTEMPTS",
    "INITIAL_RTO",
    "MAX_ATTEMPTS",
    "MAX_DATAGRAMS",
    "stun_allocate",
    "stun_binding",
    "tg_reflector",
    "wa_relay_ping",
]

# RFC 5389 §7.2.1: "RTO SHOULD be greater than 500 ms", doubled after each retransmission
INITIAL_RTO: Final = 0.5
# RFC 5389 §7.2.1: Rc, the default number of requests of one transaction, is 7; we send no more
MAX_ATTEMPTS: Final = 7
DEFAULT_ATTEMPTS: Final = 3
# Ours: each known answer is one datagram; a server that sends this many without one is not
# answering us, and a probe must not read whatever it sends.
MAX_DATAGRAMS: Final = 64
# RFC 5766 §6.4 (via RFC 5389 §10.2.2): an unauthenticated Allocate gets 401 Unauthorized
UNAUTHORIZED: Final = 401
# Ours: REALM and SOFTWARE are recorded up to this many characters (a server chooses them)
_TEXT_CHARS: Final = 128

_Kind = Literal["answer", "unmatched", "wrong"]


@dataclass(slots=True, frozen=True)
class _Verdict:
    """What one decoded datagram was to the check: the known answer, not ours, or a response to
    our transaction that is not the known answer (which ends the check)."""

    kind: _Kind
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""


_UNMATCHED: Final = _Verdict("unmatched")

_Judge = Callable[[bytes], _Verdict]
"""Reads one datagram; raises DecodeError (StunError, ReflectorError) when it does not decode."""


# --- the four checks ------------------------------------------------------------------------


async def stun_binding(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Record:
    """Send a Binding request with FINGERPRINT (RFC 5389 §7.1); the known answer is a Binding
    success carrying XOR-MAPPED-ADDRESS (§7.3.1)."""
    txid = os.urandom(stun.TXID_LEN)
    request = stun.binding_request(txid, fingerprint=True)

    def judge(data: bytes) -> _Verdict:
        message = stun.parse(data)
        if message.txid != txid:
            return _UNMATCHED
        details = _stun_details(ctx, message)
        mapped = message.xor_mapped_address
        details.update(
            mapped_address=mapped is not None,
            mapped_family=None if mapped is None else _family(mapped[0]),
        )
        if message.msg_type == stun.BINDING_SUCCESS and mapped is not None:
            return _Verdict("answer", details)
        return _Verdict("wrong", details, _unexpected(message, "a Binding success"))

    initial = {"mapped_address": False, "mapped_family": None, **_STUN_INITIAL}
    return await _run(
        ctx, CHECK_STUN_BINDING, target, address, transaction_id, request, judge, attempts, initial
    )


async def stun_allocate(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Record:
    """Send an unauthenticated Allocate for a UDP relay (RFC 5766 §6.1); the known answer is the
    error 401 with REALM and NONCE (RFC 5389 §10.2.1) that asks for credentials."""
    txid = os.urandom(stun.TXID_LEN)
    request = stun.allocate_request(txid)

    def judge(data: bytes) -> _Verdict:
        message = stun.parse(data)
        if message.txid != txid:
            return _UNMATCHED
        details = _stun_details(ctx, message)
        details.update(realm=_text(message.realm), nonce=bool(message.nonce))
        code = None if message.error_code is None else message.error_code.code
        if (
            message.msg_type == stun.ALLOCATE_ERROR
            and code == UNAUTHORIZED
            and message.realm is not None
            and message.nonce
        ):
            return _Verdict("answer", details)
        return _Verdict("wrong", details, _unexpected(message, "an Allocate 401 with realm, nonce"))

    initial = {"realm": None, "nonce": False, **_STUN_INITIAL}
    return await _run(
        ctx, CHECK_STUN_ALLOCATE, target, address, transaction_id, request, judge, attempts, initial
    )


async def wa_relay_ping(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Record:
    """Send WhatsApp's relay ping, a bare STUN header of type 0x0801 with a random transaction
    id; the known answer is the pong 0x0802 with the same id (wacrg.org/transport/
    warp-stun-relay/)."""
    txid = os.urandom(stun.TXID_LEN)
    request = stun.whatsapp_ping(txid)

    def judge(data: bytes) -> _Verdict:
        message = stun.parse(data)
        if message.txid != txid:
            return _UNMATCHED
        details = _stun_details(ctx, message)
        if message.msg_type == stun.WHATSAPP_PONG:
            return _Verdict("answer", details)
        return _Verdict("wrong", details, _unexpected(message, "a pong (0x0802)"))

    return await _run(
        ctx,
        CHECK_WA_RELAY_PING,
        target,
        address,
        transaction_id,
        request,
        judge,
        attempts,
        dict(_STUN_INITIAL),
    )


async def tg_reflector(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Record:
    """Send Telegram's 40-byte reflector hello for a random call tag; the known answer is any
    reply starting with the tag's first 12 bytes (tgcalls v2/ReflectorPort.cpp
    HandleIncomingPacket), normally the 64-byte self-info."""
    peer_tag = os.urandom(tgcalls.PEER_TAG_LEN)
    request = tgcalls.build_hello(peer_tag, _sender_tag())

    def judge(data: bytes) -> _Verdict:
        try:
            reply = tgcalls.parse_reply(data, peer_tag=peer_tag)
        except tgcalls.ReflectorError as exc:
            if exc.failure == tgcalls.REFLECTOR_TAG_MISMATCH:
                return _UNMATCHED  # tgcalls drops it too: another call's packet
            raise
        info = reply.self_info
        if info is not None:
            ctx.scrubber.add(info.address)  # our public address, as the reflector saw it
        details = {
            "special": reply.special,
            "tlid": reply.tlid,
            "self_info": info is not None,
            "self_info_family": None if info is None else _family(info.address),
        }
        return _Verdict("answer", details)

    initial = {"special": None, "tlid": None, "self_info": False, "self_info_family": None}
    return await _run(
        ctx, CHECK_TG_REFLECTOR, target, address, transaction_id, request, judge, attempts, initial
    )


# --- shared ---------------------------------------------------------------------------------

_STUN_INITIAL: Final[dict[str, Any]] = {"response_type": None, "error_code": None, "software": None}


def _sender_tag() -> bytes:
    # tgcalls v2/ReflectorPort.cpp: the random tag is drawn again while it is zero
    while True:
        tag = os.urandom(tgcalls.SENDER_TAG_LEN)
        if any(tag):
            return tag


def _family(host: str) -> str:
    return "ipv6" if ":" in host else "ipv4"


def _text(value: str | None) -> str | None:
    return None if value is None else value[:_TEXT_CHARS]


def _stun_details(ctx: CheckContext, message: stun.StunMessage) -> dict[str, Any]:
    """What any STUN response to our transaction says, for the record; the addresses it reflects
    are ours and go to the scrubber only."""
    for reflected in (message.xor_mapped_address, message.mapped_address):
        if reflected is not None:
            ctx.scrubber.add(reflected[0])
    return {
        "response_type": message.msg_type,
        "error_code": None if message.error_code is None else message.error_code.code,
        "software": _text(message.software),
    }


def _unexpected(message: stun.StunMessage, wanted: str) -> str:
    error = "" if message.error_code is None else f" (error {message.error_code.code})"
    return f"a response of type {message.msg_type:#06x}{error}, not {wanted}"


class _Receiver(asyncio.DatagramProtocol):
    """Queues what the connected socket hears: datagrams, and ICMP errors as exceptions."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self._queued = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # The reader stops at MAX_DATAGRAMS; more would only fill memory.
        if self._queued < MAX_DATAGRAMS:
            self._queued += 1
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


@dataclass(slots=True)
class _Exchange:
    """One request/answer exchange in progress, filling the step's details."""

    step: Step
    judge: _Judge
    receiver: _Receiver
    datagrams: int = 0
    first_invalid: ProtocolError | None = None

    async def listen(self, deadline: float | None) -> bool:
        """Read datagrams until the known answer (True) or ``deadline``, loop time (False); None
        waits for ever (the check's timeout ends it). Raises what ends the check."""
        details = self.step.details
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self.receiver.queue.get()
            except TimeoutError:
                return False
            if isinstance(item, Exception):
                raise item  # ICMP errors, as the connected socket reports them
            self.datagrams += 1
            details["bytes_received"] += len(item)
            try:
                verdict = self.judge(item)
            except DecodeError as exc:
                details["invalid"] += 1
                if self.first_invalid is None:
                    self.first_invalid = ProtocolError(exc.failure, str(exc))
            else:
                if verdict.kind == "unmatched":
                    details["unmatched"] += 1
                else:
                    details.update(verdict.details)
                    if verdict.kind == "wrong":
                        self.step.mark("response")
                        raise ProtocolError(Failure.STUN_BAD_RESPONSE, verdict.message)
                    return True
            if self.datagrams >= MAX_DATAGRAMS:
                if self.first_invalid is not None:
                    raise self.first_invalid
                raise TimeoutError(f"no answer to us among the first {MAX_DATAGRAMS} datagrams")


def _first_rto(timeout: float, attempts: int) -> float:
    """The initial RTO: INITIAL_RTO, or less when the doubling waits between ``attempts`` sends
    would not fit the first half of the check's timeout (r + 2r + ... + 2^(n-2) r < 2^n r / 2),
    which leaves the second half to listen for the answer to the last one."""
    return min(INITIAL_RTO, timeout / (1 << attempts))


async def _run(
    ctx: CheckContext,
    check: str,
    target: Target,
    address: str,
    transaction_id: int,
    request: bytes,
    judge: _Judge,
    attempts: int,
    initial: dict[str, Any],
) -> Record:
    if not 1 <= attempts <= MAX_ATTEMPTS:
        raise ValueError(f"attempts must be 1 to {MAX_ATTEMPTS}, not {attempts}")
    loop = asyncio.get_running_loop()
    exchange: _Exchange | None = None
    async with measured(ctx, check, target, address, transaction_id) as step:
        sent_log: list[dict[str, Any]] = []
        step.details.update(
            attempts=sent_log,
            answered=False,
            bytes_sent=0,
            bytes_received=0,
            unmatched=0,
            invalid=0,
            **initial,
        )
        ctx.guard(address)  # before any socket exists: a refused address sees no datagram
        # A literal address: asyncio looks nothing up, and the connected socket hears ICMP errors.
        transport, receiver = await loop.create_datagram_endpoint(
            _Receiver, remote_addr=(address, target.port)
        )
        try:
            ctx.note_local(transport.get_extra_info("sockname"))
            exchange = _Exchange(step, judge, receiver)
            rto = _first_rto(ctx.timeout, attempts)
            for attempt in range(attempts):
                transport.sendto(request)
                sent_at = step.since_start()
                entry: dict[str, Any] = {"sent": round(sent_at, 6), "answered": False, "rtt": None}
                sent_log.append(entry)
                step.details["bytes_sent"] += len(request)
                last = attempt == attempts - 1
                deadline = None if last else loop.time() + rto * (1 << attempt)
                if await exchange.listen(deadline):
                    step.mark("answer")
                    entry.update(answered=True, rtt=round(step.since_start() - sent_at, 6))
                    step.details["answered"] = True
                    break
        finally:
            transport.close()
    if (
        step.failure == Failure.GENERIC_TIMEOUT
        and exchange is not None
        and exchange.first_invalid is not None
    ):
        # Time ran out, but not in silence: what came is the better evidence.
        step.failure = exchange.first_invalid.failure
        step.details["error"] = ctx.scrubber.scrub(f"ProtocolError: {exchange.first_invalid}")
    return step.record
