"""The call_flow check: does call-shaped UDP traffic get through, all of it, at its rate?

One flow of a *call test* (docs/callflow.md): datagrams that open as the app's client opens a call
and then keep the app's sizes and timing, sent over a connected UDP socket to a ringprobe
reflector, which echoes each one that reaches it (probe.protocols.echo does the trailer; stun,
rtp and tgcalls the framings; this module only moves bytes). A test has three flows, planned by
the runner side by side and interleaved: ``call`` on the app's port, ``control`` (the same sizes
and send times, the framing replaced by random bytes) on the same port, and ``call_neutral_port``
(the call's bytes on the reflector's neutral high port). Call and control share one
:class:`Schedule`, so only content differs between them; the neutral port separates port-based
from content-based treatment.

Framings (docs/callflow.md "App framings"):

``whatsapp_rtp``        a STUN Allocate (0x0003, magic cookie, random transaction id; a whole
                        STUN message: REQUESTED-TRANSPORT, then WhatsApp's token attribute 0x4000
                        carrying the filler and the trailer), two 0x0801 pings (bare 20-byte
                        headers, then the trailer), then RTP v2 with the extension bit (first byte
                        0x90), payload type 120, sequence +1 and timestamp +960 per packet;
``telegram_reflector``  three 40-byte reflector hellos (then the trailer), then data packets:
                        16-byte peer tag, sender tag, length of the rest (filler and trailer).

Sends are scheduled at absolute times of the monotonic clock (a late send does not delay the next
ones). Echoes are read concurrently, as they come; each is checked with parse_echo against the
flow's secret, session and kind. After the last send the check listens ``LISTEN_AFTER`` seconds,
or less when every datagram sent has been echoed. An ICMP error ends the flow at once.

Time: a flow takes its own budget, ``time_budget(duration)`` (its start delay, the sending, the
listening and ``MARGIN``), not the run's per-check timeout: a 10-second flow under a 10-second
check timeout would otherwise be cut, which reads exactly like a censor's cut.

details: ``flow``, ``profile``, ``framing``, ``session`` (hex), ``interval_ms``, ``duration``,
``bin_width``, ``bins`` (per 0.25 s of send time: ``sent``, ``sent_bytes``, ``echoed``,
``echoed_bytes``, ``reflector_rx``, ``rtt_ms``), ``packets_sent``, ``bytes_sent``,
``packets_echoed``, ``bytes_echoed``, ``reflector_rx``, ``first_echo_s``, ``last_echo_s``,
``last_echo_seq``, ``invalid`` (docs/callflow.md, "The call_flow record", says what each means).
Bins, ``first_echo_s`` and ``last_echo_s`` use each datagram's scheduled send time, so a call's
and its control's bins line up exactly; ``rtt_ms`` is measured from the actual send. A datagram
echoed twice counts once; the copy is neither an echo nor invalid.
timings: ``first_echo`` (seconds from the start of the check to the first valid echo).

failures:
``generic_timeout_error``: no echo came back (only silence);
``echo_bad_datagram``: no valid echo came back, but datagrams that are not one did (a wrong
secret, a rewriting middlebox);
``connection_refused``: ICMP port unreachable (other ICMP errors as base.classify maps them),
whatever came before it;
``address_not_allowed``: the guard refused the address, and nothing was sent.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Final

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.model import Failure, Record, Target
from probe.protocols import echo, rtp, stun, tgcalls

CHECK = "call_flow"

__all__ = [
    "BIN_WIDTH",
    "CHECK",
    "DEFAULT_DURATION",
    "FLOWS",
    "FRAMINGS",
    "LISTEN_AFTER",
    "MARGIN",
    "MAX_DURATION",
    "PROFILES",
    "Schedule",
    "call_flow",
    "make_schedule",
    "time_budget",
]

FLOWS: Final[dict[str, echo.FlowKind]] = {
    "call": echo.FlowKind.CALL,
    "control": echo.FlowKind.CONTROL,
    "call_neutral_port": echo.FlowKind.CALL_NEUTRAL_PORT,
}
FRAMINGS: Final = ("whatsapp_rtp", "telegram_reflector")


@dataclass(frozen=True, slots=True)
class _ProfileSpec:
    interval: float
    size_min: int
    size_max: int


# docs/callflow.md "App framings": voice one packet every 60 ms of 90-170 bytes (METHOD.md, wire
# facts; probe.protocols.rtp); video one every 20 ms of 900-1200 bytes. Sizes include the trailer.
PROFILES: Final[dict[str, _ProfileSpec]] = {
    "voice": _ProfileSpec(rtp.VOICE_INTERVAL, rtp.VOICE_SIZE_MIN, rtp.VOICE_SIZE_MAX),
    "video": _ProfileSpec(0.020, 900, 1200),
}

# METHOD.md "Statistics": the aim is to see a cap at half the call's rate, or a cut, with at most
# 20 s of voice-profile traffic per app. A call test sends two flows on the app's port (call and
# control), so 10 s each keeps the pair at 20 s per app, and 10 s still holds 40 bins of 0.25 s
# (about 167 voice packets) per flow: enough for the rate comparison and to place a cut-off after
# the first seconds (the "TCP 16-20"-style cuts come after some kilobytes, here ~2 KB/s).
DEFAULT_DURATION: Final = 10.0
# Ours: a flow longer than a minute is a load test, not a probe (the CLI caps --call-duration).
MAX_DURATION: Final = 60.0
# docs/callflow.md: the echo of a datagram counts until 2 s after the last send.
LISTEN_AFTER: Final = 2.0
# Ours: socket set-up and a loaded event loop, on top of the sending and listening.
MARGIN: Final = 1.0
# docs/callflow.md: bins of 0.25 s of send time (METHOD.md "Statistics": flows are binned 250 ms).
BIN_WIDTH: Final = 0.25
# docs/callflow.md "App framings": the opening is 3 datagrams (STUN Allocate and 2 pings; or 3
# reflector hellos).
OPENING: Final = 3
# RFC 3550 §5.1 via docs/callflow.md: WhatsApp's timestamp advances 960 per packet (60 ms at 16 kHz)
RTP_TIMESTAMP_STEP: Final = 960
# Ours: datagrams read from the socket per datagram sent, beyond which the rest are only counted
# (a reflector answers each datagram once; duplicates and junk must not cost unbounded work).
_READS_PER_SEND: Final = 4
_READS_SLACK: Final = 64

_TRAILER: Final = echo.TRAILER_LEN
# A STUN Allocate spanning the datagram: header, REQUESTED-TRANSPORT (4 + 4), the 0x4000 token
# attribute's header (4); the token's value holds the filler and the trailer.
_ALLOCATE_HEAD: Final = stun.HEADER_LEN + 8 + 4


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a flow sends and when: one per call test, shared by its call and control flows so
    that only their content differs."""

    framing: str
    profile: str
    duration: float
    """Seconds of sending: datagram ``i`` goes at ``i * interval`` while that is below this."""
    sizes: tuple[int, ...]
    """UDP payload size of each datagram, trailer included."""

    @property
    def interval(self) -> float:
        return PROFILES[self.profile].interval

    def offset(self, seq: int) -> float:
        """Seconds from the flow's first send to datagram ``seq``'s."""
        return seq * self.interval

    @property
    def bins(self) -> int:
        # A hair below the exact ratio, so 1.5 / 0.25 is 6 bins, not 7 from float rounding.
        return max(1, math.ceil(self.duration / BIN_WIDTH - 1e-9))


def make_schedule(
    framing: str,
    profile: str = "voice",
    duration: float = DEFAULT_DURATION,
    *,
    seed: int | None = None,
) -> Schedule:
    """Sizes and send times of one call test's flows, drawn from ``seed`` (random when None).

    The opening follows the app: WhatsApp's Allocate is a whole STUN message, so its size is a
    multiple of 4 (RFC 5389 §6 pads attributes to 4 bytes) within the voice range, and each ping is
    the bare 20-byte header and the trailer; Telegram's hellos are 40 bytes and the trailer. Then
    the profile's sizes, drawn uniformly; Telegram's are multiples of 4 (tgcalls SendTo pads data
    packets to 4 bytes).
    """
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"a flow lasts more than 0 and at most {MAX_DURATION} s, not {duration}")
    spec = PROFILES[profile]
    rng = random.Random(seed)
    count = max(1, math.ceil(duration / spec.interval - 1e-9))
    voice = PROFILES["voice"]

    def aligned(low: int, high: int) -> int:
        return 4 * rng.randint(-(-low // 4), high // 4)

    sizes: list[int] = []
    for seq in range(count):
        if framing == "whatsapp_rtp" and seq == 0:
            sizes.append(aligned(voice.size_min, voice.size_max))
        elif framing == "whatsapp_rtp" and seq < OPENING:
            sizes.append(stun.HEADER_LEN + _TRAILER)
        elif framing == "telegram_reflector" and seq < OPENING:
            sizes.append(tgcalls.HELLO_LEN + _TRAILER)
        elif framing == "telegram_reflector":
            sizes.append(aligned(spec.size_min, spec.size_max))
        else:
            sizes.append(rng.randint(spec.size_min, spec.size_max))
    return Schedule(framing, profile, float(duration), tuple(sizes))


def time_budget(duration: float, start_delay: float = 0.0) -> float:
    """Seconds a flow of ``duration`` may take in all, whatever the run's per-check timeout."""
    return max(start_delay, 0.0) + duration + LISTEN_AFTER + MARGIN


# --- the framings: the bytes before the trailer -----------------------------------------------


class _Framer:
    """Builds the body (framing and filler) of each datagram of one flow."""

    def __init__(self, framing: str, control: bool, rng: random.Random) -> None:
        self.framing = framing
        self.control = control
        self.rng = rng
        # WhatsApp: one STUN transaction id for the opening, one RTP stream (RFC 3550 §5.1:
        # random SSRC, sequence and timestamp origins).
        self.txid = rng.randbytes(stun.TXID_LEN)
        self.ssrc = rng.getrandbits(32)
        self.rtp_seq = rng.getrandbits(16)
        self.rtp_ts = rng.getrandbits(32)
        # Telegram: the call's 16-byte peer tag (tgcalls v2/ReflectorPort.cpp: the call tag's
        # first 12 bytes, then the recipient's 4), and our own non-zero sender tag.
        self.peer_tag = rng.randbytes(tgcalls.TAG_PREFIX_LEN) + self._tag()
        self.sender_tag = self._tag()

    def _tag(self) -> bytes:
        # tgcalls v2/ReflectorPort.cpp: the random tag is drawn again while it is zero
        while True:
            tag = self.rng.randbytes(tgcalls.SENDER_TAG_LEN)
            if any(tag):
                return tag

    def body(self, seq: int, size: int) -> bytes:
        """``size - TRAILER_LEN`` bytes: the framing (random bytes of its length for a control),
        then random filler."""
        length = size - _TRAILER
        framing = self._framing(seq, length)
        if self.control:
            framing = self.rng.randbytes(len(framing))
        return framing + self.rng.randbytes(length - len(framing))

    def _framing(self, seq: int, length: int) -> bytes:
        if self.framing == "whatsapp_rtp":
            if seq == 0:
                # The whole datagram is one STUN message: the token attribute's value runs to the
                # end, so its length field covers the filler and the trailer.
                token = length + _TRAILER - _ALLOCATE_HEAD
                message = stun.allocate_request(
                    self.txid,
                    fingerprint=False,
                    extra_attributes=[(stun.WHATSAPP_TOKEN, bytes(token))],
                )
                return message[:_ALLOCATE_HEAD]
            if seq < OPENING:
                return stun.whatsapp_ping(self.txid)
            n = seq - OPENING
            return rtp.build_rtp(
                rtp.WHATSAPP_PAYLOAD_TYPE,
                (self.rtp_seq + n) & 0xFFFF,
                (self.rtp_ts + n * RTP_TIMESTAMP_STEP) & 0xFFFF_FFFF,
                self.ssrc,
                b"",
            )
        if seq < OPENING:
            return tgcalls.build_hello(self.peer_tag, self.sender_tag)
        # The length field covers the rest of the datagram (filler and trailer): sizes are
        # multiples of 4, so tgcalls' padding adds nothing.
        payload = length + _TRAILER - tgcalls.DATA_HEADER_LEN
        return tgcalls.build_data(self.peer_tag, self.sender_tag, bytes(payload))[
            : tgcalls.DATA_HEADER_LEN
        ]


# --- the flow's bookkeeping -----------------------------------------------------------------


@dataclass(slots=True)
class _Flow:
    """What was sent and what came back, per sequence number."""

    schedule: Schedule
    secret: bytes
    session: bytes
    kind: echo.FlowKind
    sent_at: dict[int, float] = field(default_factory=dict)
    """seq -> monotonic time of the send."""
    echoes: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    """seq -> (monotonic time of the echo, its length, its rx_count)."""
    invalid: int = 0
    reads: int = 0

    def receive(self, data: bytes, now: float) -> bool:
        """Book one datagram; True when it is a new valid echo."""
        self.reads += 1
        try:
            trailer = echo.parse_echo(self.secret, data)
        except echo.EchoError:
            self.invalid += 1
            return False
        seq = trailer.seq
        if trailer.session != self.session or trailer.kind != self.kind or seq not in self.sent_at:
            self.invalid += 1
            return False
        if len(data) != self.schedule.sizes[seq]:
            self.invalid += 1  # an echo is exactly as long as its request (docs/callflow.md)
            return False
        if seq in self.echoes:
            return False  # a duplicate: the echo already counted
        self.echoes[seq] = (now, len(data), trailer.rx_count)
        return True

    def details(self) -> dict[str, Any]:
        schedule = self.schedule
        bins: list[dict[str, Any]] = [
            {"sent": 0, "sent_bytes": 0, "echoed": 0, "echoed_bytes": 0, "rx": 0, "rtts": []}
            for _ in range(schedule.bins)
        ]
        for seq in self.sent_at:
            entry = bins[self._bin(seq)]
            entry["sent"] += 1
            entry["sent_bytes"] += schedule.sizes[seq]
        for seq, (at, size, rx_count) in self.echoes.items():
            entry = bins[self._bin(seq)]
            entry["echoed"] += 1
            entry["echoed_bytes"] += size
            entry["rx"] = max(entry["rx"], rx_count)
            entry["rtts"].append(at - self.sent_at[seq])
        highest = 0
        out = []
        for entry in bins:
            highest = max(highest, entry["rx"])
            rtts = entry["rtts"]
            out.append(
                {
                    "sent": entry["sent"],
                    "sent_bytes": entry["sent_bytes"],
                    "echoed": entry["echoed"],
                    "echoed_bytes": entry["echoed_bytes"],
                    # echoes of datagrams sent up to the end of this bin: a running maximum
                    "reflector_rx": highest or None,
                    "rtt_ms": round(statistics.median(rtts) * 1000, 3) if rtts else None,
                }
            )
        echoed = sorted(self.echoes)
        return {
            "bins": out,
            "packets_sent": len(self.sent_at),
            "bytes_sent": sum(schedule.sizes[seq] for seq in self.sent_at),
            "packets_echoed": len(self.echoes),
            "bytes_echoed": sum(size for _, size, _ in self.echoes.values()),
            "reflector_rx": max((rx for _, _, rx in self.echoes.values()), default=None),
            "first_echo_s": round(schedule.offset(echoed[0]), 6) if echoed else None,
            "last_echo_s": round(schedule.offset(echoed[-1]), 6) if echoed else None,
            "last_echo_seq": echoed[-1] if echoed else None,
            "invalid": self.invalid,
        }

    def _bin(self, seq: int) -> int:
        # Binned by scheduled send time: call and control bins line up exactly.
        return min(int(self.schedule.offset(seq) / BIN_WIDTH + 1e-9), self.schedule.bins - 1)


class _Receiver(asyncio.DatagramProtocol):
    """Books echoes as they arrive on the connected socket; keeps the first ICMP error."""

    def __init__(self, flow: _Flow, step: Step, limit: int) -> None:
        self.flow = flow
        self.step = step
        self.limit = limit
        self.error: Exception | None = None
        self.wake = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.flow.reads >= self.limit:
            return  # bounded work: a reflector sends one echo per datagram, not this many
        if self.flow.receive(data, time.monotonic()):
            if "first_echo" not in self.step.timings:
                self.step.mark("first_echo")
            self.wake.set()

    def error_received(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.wake.set()

    async def wait(self, until: float, *, echo: bool = False) -> None:
        """Sleep until ``until`` (monotonic), or with ``echo`` until the next new echo; an ICMP
        error ends the wait, and is raised."""
        while self.error is None:
            left = until - time.monotonic()
            if left <= 0:
                return
            self.wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self.wake.wait()
            except TimeoutError:
                return
            if echo:
                break
        if self.error is not None:
            raise self.error


# --- the check ------------------------------------------------------------------------------


async def call_flow(
    ctx: CheckContext,
    target: Target,
    address: str,
    transaction_id: int,
    *,
    secret: bytes,
    flow: str,
    framing: str,
    profile: str = "voice",
    duration: float = DEFAULT_DURATION,
    schedule: Schedule | None = None,
    start_at: float | None = None,
    rng: random.Random | None = None,
) -> Record:
    """Send one call-shaped flow (or its control) to a ringprobe reflector and book its echoes.

    ``schedule`` is the call test's shared sizes and times (made here from ``framing``,
    ``profile`` and ``duration`` when None). ``start_at`` is the monotonic time of the first send
    (the runner interleaves a test's flows with it; a time already past means now). ``rng`` draws
    the flow's bytes and ids (tests fix it; random otherwise).
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}")
    if not secret:
        raise ValueError("a reflector flow needs the shared secret")
    if schedule is None:
        schedule = make_schedule(framing, profile, duration)
    elif (schedule.framing, schedule.profile) != (framing, profile):
        raise ValueError("the schedule was made for another framing or profile")
    rng = rng or random.Random()
    state = _Flow(schedule, secret, rng.randbytes(echo.SESSION_LEN), FLOWS[flow])
    framer = _Framer(framing, flow == "control", rng)
    delay = 0.0 if start_at is None else max(0.0, start_at - time.monotonic())
    budget = time_budget(schedule.duration, delay)
    async with measured(ctx, CHECK, target, address, transaction_id, timeout=budget) as step:
        step.details.update(
            flow=flow,
            profile=profile,
            framing=framing,
            session=state.session.hex(),
            interval_ms=round(schedule.interval * 1000, 3),
            duration=schedule.duration,
            bin_width=BIN_WIDTH,
        )
        try:
            ctx.guard(address)  # before any socket exists: a refused address sees no datagram
            limit = len(schedule.sizes) * _READS_PER_SEND + _READS_SLACK
            # A literal address: asyncio looks nothing up, and the connected socket hears ICMP.
            loop = asyncio.get_running_loop()
            transport, receiver = await loop.create_datagram_endpoint(
                lambda: _Receiver(state, step, limit), remote_addr=(address, target.port)
            )
            try:
                ctx.note_local(transport.get_extra_info("sockname"))
                await _exchange(transport, receiver, state, framer, delay)
            finally:
                transport.close()
        finally:
            step.details.update(state.details())
        _judge(step, state)
    return step.record


async def _exchange(
    transport: asyncio.DatagramTransport,
    receiver: _Receiver,
    state: _Flow,
    framer: _Framer,
    delay: float,
) -> None:
    """Send on schedule, then listen until LISTEN_AFTER past the last send or every echo."""
    schedule = state.schedule
    origin = time.monotonic() + delay
    for seq, size in enumerate(schedule.sizes):
        await receiver.wait(origin + schedule.offset(seq))
        datagram = echo.build_request(
            state.secret, framer.body(seq, size), state.session, seq, state.kind
        )
        transport.sendto(datagram)
        state.sent_at[seq] = time.monotonic()
    end = time.monotonic() + LISTEN_AFTER
    while len(state.echoes) < len(state.sent_at) and time.monotonic() < end:
        await receiver.wait(end, echo=True)


def _judge(step: Step, state: _Flow) -> None:
    """The failure of a flow that ended without an exception: none with at least one echo."""
    if step.failure is not None or state.echoes:
        return
    if state.invalid:
        raise ProtocolError(
            Failure.ECHO_BAD_DATAGRAM,
            f"{state.invalid} datagrams came back, none a valid echo of this flow",
        )
    raise TimeoutError(f"no echo of {len(state.sent_at)} datagrams")
