"""The trace check's pure parts (ICMP parsing, outcomes, interference, localization, stopping,
bounds, payloads), a few traces on loopback (no router there: TTL 1 reaches the destination),
and the `ringprobe trace` command's errors. Nothing leaves loopback: the suite's allow-list
(conftest) refuses anything else, and the loopback traces need root or CAP_NET_RAW (skipped
without it, except the test that checks the failure when it is missing)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from probe.allowlist import AllowList
from probe.checks import trace as tr
from probe.checks.base import CheckContext
from probe.cli import cli
from probe.cli import trace as trace_cli
from probe.model import Failure, Target
from probe.protocols import rtp, stun
from probe.reflector.config import Config as ReflectorConfig
from probe.reflector.server import Reflector
from probe.targets import builtin_catalog
from tests.fakes.echo_reflector import Censor, FakeEchoReflector
from tests.fakes.tls_server import FakePKI, FakeTLSServer
from tests.fakes.udp_server import LOOPBACK, LOOPBACK6, FakeUdpServer, closed_udp_port
from tests.recordcheck import assert_valid

DEST = "203.0.113.64"
SECRET = bytes(range(32))
HOP1, HOP2, HOP3 = "198.51.100.1", "198.51.100.5", "198.51.100.9"
COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")


def _hop(outcome: str, hop: str | None = None) -> dict[str, Any]:
    return {"ttl": 0, "outcome": outcome, "hop": hop, "rtt": None, "packets": 1}


def _te(hop: str) -> dict[str, Any]:
    return _hop("time_exceeded", hop)


def _acked(outcome: str) -> dict[str, Any]:
    """A TCP probe whose payload the destination's TCP acknowledged."""
    return {**_hop(outcome), "acked": True}


# --- ICMP parsing ---------------------------------------------------------------------------


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ihl_words: int = 5) -> bytes:
    options = bytes(4 * (ihl_words - 5))
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl_words,
        0,
        20 + len(options) + len(payload),
        0,
        0,
        1,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + options + payload


def _time_exceeded4(router: str, quoted_proto: int, sport: int, dst: str, dport: int) -> bytes:
    quoted = _ipv4("198.51.100.2", dst, quoted_proto, struct.pack("!HH", sport, dport) + bytes(4))
    icmp = bytes([tr.ICMP_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0]) + quoted
    return _ipv4(router, "198.51.100.2", 1, icmp)


def test_parse_icmp4_time_exceeded_names_router_and_quoted_ports() -> None:
    error = tr.parse_icmp4(_time_exceeded4(HOP2, 17, 40000, DEST, 3478))
    assert error == tr.IcmpError("time_exceeded", HOP2, 11, 0, 17, 40000, DEST, 3478)


def test_parse_icmp4_follows_the_quoted_header_length() -> None:
    quoted = _ipv4("198.51.100.2", DEST, 6, struct.pack("!HH", 5555, 443), ihl_words=6)
    icmp = bytes([tr.ICMP_UNREACHABLE, 13, 0, 0, 0, 0, 0, 0]) + quoted
    error = tr.parse_icmp4(_ipv4(HOP1, "198.51.100.2", 1, icmp))
    assert error is not None
    assert (error.kind, error.icmp_code, error.source_port, error.destination_port) == (
        "unreachable",
        13,
        5555,
        443,
    )


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + bytes(18),
        # an echo reply, not an error
        _ipv4(HOP1, "198.51.100.2", 1, bytes([0, 0, 0, 0, 0, 0, 0, 0]) + bytes(28)),
        # a quotation cut before the ports
        _time_exceeded4(HOP1, 17, 1, DEST, 2)[:-8],
    ],
)
def test_parse_icmp4_ignores_what_is_not_a_usable_error(packet: bytes) -> None:
    assert tr.parse_icmp4(packet) is None


def test_parse_icmp6_time_exceeded() -> None:
    quoted = (
        bytes([0x60, 0, 0, 0, 0, 8, 17, 1])
        + socket.inet_pton(socket.AF_INET6, "2001:db8:0:1::2")
        + socket.inet_pton(socket.AF_INET6, "2001:db8:203:113::64")
        + struct.pack("!HHHH", 40001, 3478, 8, 0)
    )
    message = bytes([tr.ICMP6_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0]) + quoted
    error = tr.parse_icmp6(message, "2001:db8:0:2::1%eth0")
    assert error == tr.IcmpError(
        "time_exceeded", "2001:db8:0:2::1", 3, 0, 17, 40001, "2001:db8:203:113::64", 3478
    )
    assert tr.parse_icmp6(bytes([128, 0, 0, 0, 0, 0, 0, 0]) + quoted, "::1") is None  # echo
    assert tr.parse_icmp6(message[:50], "::1") is None


@given(st.binary(max_size=120))
def test_icmp_parsers_never_raise(data: bytes) -> None:
    tr.parse_icmp4(data)
    tr.parse_icmp6(data, "2001:db8::1")


# --- outcomes, interference, localization -----------------------------------------------------


def _icmp(kind: str, offender: str) -> tr.IcmpError:
    return tr.IcmpError(kind, offender, 11, 0, 17, 1, DEST, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], ("silent", None, None)),
        ([("icmp", 0.01, _icmp("time_exceeded", HOP1))], ("time_exceeded", HOP1, 0.01)),
        # an injector that lets the packet on and resets it: the reset wins, the hop is kept
        (
            [("icmp", 0.01, _icmp("time_exceeded", HOP2)), ("reset", 0.02, None)],
            ("reset", HOP2, 0.02),
        ),
        ([("data", 0.03, 100), ("closed", 0.04, None)], ("answered", None, 0.03)),
        ([("icmp", 0.01, _icmp("unreachable", DEST))], ("unreachable", DEST, 0.01)),
        ([("refused", 0.01, None)], ("unreachable", None, 0.01)),
        ([("closed", 0.05, None)], ("closed", None, 0.05)),
    ],
)
def test_outcome_of(events: list[tr.Event], expected: tuple[str, str | None, float | None]) -> None:
    assert tr.outcome_of(events) == expected


@pytest.mark.parametrize(
    ("result", "reference", "expects_answer", "expected"),
    [
        (_hop("silent"), _te(HOP3), False, "drop"),
        (_hop("reset"), _te(HOP3), True, "rst"),
        (_hop("closed"), _te(HOP3), True, "fin"),
        (_hop("unreachable", HOP2), _te(HOP3), False, "reject"),
        # the destination's own port unreachable is no interference
        (_hop("unreachable", DEST), _te(HOP3), False, None),
        (_te(HOP3), _te(HOP3), False, None),
        # another router at the same TTL (a load balancer) is no interference
        (_te(HOP2), _te(HOP3), False, None),
        # both lost: nothing to compare with
        (_hop("silent"), _hop("silent"), True, None),
        (_hop("reset"), _hop("reset"), True, None),
        # at the destination: silence means something only for a probe that expects an answer
        (_hop("silent"), _hop("answered"), True, "drop"),
        (_hop("silent"), _hop("answered"), False, None),
        (_hop("reset"), _hop("answered"), False, None),
        (_hop("answered"), _hop("silent"), True, None),
        # at the destination, TCP: a reference whose payload was acknowledged reached it, even
        # when the server refused it (random bytes closed or reset by the chat server)
        (_hop("reset"), _acked("closed"), True, "rst"),
        (_hop("silent"), _acked("silent"), True, "drop"),
        (_hop("reset"), _acked("reset"), False, "rst"),
        # a probe acknowledged itself reached the server: its silence or close is the server's
        (_acked("silent"), _acked("closed"), True, None),
        (_acked("closed"), _acked("answered"), False, None),
        (_acked("reset"), _acked("answered"), False, None),
        # ... but a reset instead of the answer it expects may be an injector's
        (_acked("reset"), _acked("closed"), True, "rst"),
    ],
)
def test_interference(
    result: dict[str, Any], reference: dict[str, Any], expects_answer: bool, expected: str | None
) -> None:
    found = tr.interference(result, reference, expects_answer=expects_answer, destination=DEST)
    assert found == expected


def test_localize_a_drop_after_hop_2() -> None:
    trigger = [_te(HOP1), _te(HOP2), _hop("silent"), _hop("silent"), _hop("silent")]
    control = [_te(HOP1), _te(HOP2), _te(HOP3), _hop("silent"), _hop("silent")]
    found = tr.localize(trigger, control, expects_answer=True, destination=DEST)
    assert found == tr.Localization(3, "drop", 2, HOP2)
    assert [h["interference"] for h in trigger] == [None, None, "drop", None, None]
    # the control, judged against the trigger, is not localized
    back = tr.localize(control, trigger, expects_answer=False, destination=DEST)
    assert back == tr.Localization(None, None, None, None)


def test_localize_a_reset_and_the_first_router() -> None:
    trigger = [_te(HOP1), _te(HOP2), _hop("reset"), _hop("reset")]
    control = [_te(HOP1), _te(HOP2), _te(HOP3), _hop("answered")]
    assert tr.localize(trigger, control, expects_answer=True, destination=DEST) == (
        tr.Localization(3, "rst", 2, HOP2)
    )
    at_once = tr.localize([_hop("reset")], [_te(HOP1)], expects_answer=True, destination=DEST)
    assert at_once == tr.Localization(1, "rst", 0, None)


def test_localize_takes_the_hop_from_the_control_when_the_trigger_lost_it() -> None:
    trigger = [_te(HOP1), _hop("silent"), _hop("silent")]
    control = [_te(HOP1), _te(HOP2), _te(HOP3)]
    trigger_copy = [dict(h) for h in trigger]
    found = tr.localize(trigger_copy, control, expects_answer=False, destination=DEST)
    assert found == tr.Localization(2, "drop", 1, HOP1)


def test_localize_a_reset_at_the_last_router_by_the_controls_acknowledgement() -> None:
    # The chat server refuses random bytes (closes) but its TCP acknowledged them: the path
    # goes on past hop 3 for the control, and the trigger is reset at TTL 4.
    trigger = [_te(HOP1), _te(HOP2), _te(HOP3), _hop("reset")]
    control = [_te(HOP1), _te(HOP2), _te(HOP3), _acked("closed")]
    found = tr.localize(trigger, control, expects_answer=True, destination=DEST)
    assert found == tr.Localization(4, "rst", 3, HOP3)
    back = tr.localize(control, trigger, expects_answer=False, destination=DEST)
    assert back == tr.Localization(None, None, None, None)
    assert tr.reached_at(control, DEST) == 4
    assert tr.reached_at(trigger, DEST) is None


def test_should_stop() -> None:
    kwargs: dict[str, Any] = {"destination": DEST, "stop_after_dark": 2}
    assert not tr.should_stop([], [], **kwargs)
    assert tr.should_stop([_hop("reset")], [_acked("silent")], **kwargs)
    assert not tr.should_stop([_te(HOP1)], [_te(HOP1)], **kwargs)
    assert tr.should_stop([_hop("reset")], [_hop("answered")], **kwargs)
    assert tr.should_stop([_hop("answered")], [_hop("silent")], **kwargs)
    assert tr.should_stop([_hop("silent")], [_hop("unreachable", DEST)], **kwargs)
    dark = [_hop("silent"), _hop("silent")]
    assert tr.should_stop(dark, dark, **kwargs)
    assert not tr.should_stop(dark, [_te(HOP3), _hop("silent")], **kwargs)


def test_tcp_segments_out() -> None:
    info = bytearray(232)
    struct.pack_into("=I", info, 136, 7)
    struct.pack_into("=I", info, 100, 3)
    assert tr.tcp_segments_out(bytes(info)) == 7
    assert tr.tcp_segments_out(bytes(info[:120])) == 6  # an old kernel: 2 + 1 + 3 retransmits
    assert tr.tcp_segments_out(b"\x01") is None


def test_tcp_bytes_acked() -> None:
    info = bytearray(232)
    struct.pack_into("=Q", info, 120, 517)
    assert tr.tcp_bytes_acked(bytes(info)) == 517
    assert tr.tcp_bytes_acked(bytes(info[:120])) is None  # before Linux 4.1


# --- bounds and payloads ----------------------------------------------------------------------


@pytest.mark.parametrize(("max_ttl", "wait"), [(0, 1.0), (33, 1.0), (8, 0.0), (8, 5.5)])
def test_bounds(max_ttl: int, wait: float) -> None:
    with pytest.raises(ValueError, match=r"max_ttl|wait"):
        tr.check_bounds(max_ttl, wait)


def test_time_budget_bounds_a_trace() -> None:
    # 32 TTLs of two TCP probes, each a 10 s connect, a 5 s wait and the grace
    assert tr.time_budget(tr.MAX_TTL, tr.MAX_WAIT, 10.0) == pytest.approx(
        32 * 2 * (15 + tr.GRACE) + 1
    )


def test_payloads_and_their_controls() -> None:
    rng = random.Random(7)
    stun_trigger = tr.build_probe("stun", control=False, app="whatsapp", rng=rng)
    assert stun.is_stun(stun_trigger.payload)
    assert stun_trigger.payload[4:8] == COOKIE
    assert len(stun_trigger.payload) == 20  # a bare Binding request: only the cookie differs
    for _ in range(50):
        ctrl = tr.build_probe("stun", control=True, app="whatsapp", rng=rng)
        assert len(ctrl.payload) == len(stun_trigger.payload)
        assert ctrl.payload[:4] == stun_trigger.payload[:4]  # Binding, no attributes
        assert ctrl.payload[4:8] != COOKIE  # RFC 3489: transaction id where the cookie was
        assert not ctrl.expects_answer
    wa = tr.build_probe("whatsapp", control=False, app="whatsapp", rng=rng)
    wa_ctrl = tr.build_probe("whatsapp", control=True, app="whatsapp", rng=rng)
    assert wa.payload.startswith(b"WA")
    assert not wa_ctrl.payload.startswith(b"WA")
    assert len(wa_ctrl.payload) == len(wa.payload)
    tls = tr.build_probe("tls", control=False, app="signal", sni="chat.signal.org")
    neutral = tr.build_probe("tls", control=True, app="signal", sni="example.org")
    assert tls.payload[0] == 0x16  # a TLS handshake record (RFC 8446 §5.1)
    assert b"chat.signal.org" in tls.payload
    assert b"chat.signal.org" not in neutral.payload
    assert b"example.org" in neutral.payload
    assert tls.expects_answer
    assert neutral.expects_answer
    for app in ("whatsapp", "telegram"):
        call = tr.build_probe("call", control=False, app=app, rng=rng)
        ctrl = tr.build_probe("call", control=True, app=app, call_size=len(call.payload), rng=rng)
        assert len(ctrl.payload) == len(call.payload)
        assert call.payload != ctrl.payload
    call = tr.build_probe("call", control=False, app="whatsapp", rng=rng)
    assert call.payload[4:8] == COOKIE  # WhatsApp's call opens with a STUN Allocate


@pytest.mark.parametrize(
    ("trigger", "app", "sni", "message"),
    [
        ("ping", "whatsapp", None, "unknown trigger"),
        ("tls", "whatsapp", None, "SNI"),
        ("call", "signal", None, "no call framing"),
    ],
)
def test_probes_that_cannot_be_made(trigger: str, app: str, sni: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tr.build_probe(trigger, control=False, app=app, sni=sni)


def test_pick_target_from_the_builtin_catalog() -> None:
    targets = builtin_catalog().targets
    wa_stun = tr.pick_target(targets, "whatsapp", "stun")
    assert wa_stun is not None
    assert (wa_stun.transport, wa_stun.expect) == ("udp", "wa_relay")
    assert wa_stun.address
    wa_chat = tr.pick_target(targets, "whatsapp", "whatsapp")
    assert wa_chat is not None
    assert wa_chat.expect == "whatsapp"
    tls = tr.pick_target(targets, "whatsapp", "tls")
    assert tls is not None
    assert tls.host
    assert tls.expect in ("tls", "https")
    assert tr.pick_target(targets, "signal", "whatsapp") is None


# --- traces on loopback -------------------------------------------------------------------------


def _raw_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


needs_raw = pytest.mark.skipif(not _raw_allowed(), reason="needs root or CAP_NET_RAW")


def _target(port: int, trigger: str, app: str = "whatsapp", host: str | None = None) -> Target:
    return Target(
        id="t",
        app=app,
        role="relay" if tr.transport_of(trigger) == "udp" else "signaling",
        port=port,
        transport=tr.transport_of(trigger),
        expect="unknown",
        source="test",
        date="2026-12-05",
        host=host,
    )


def _stun_answer(data: bytes, _index: int) -> bytes | None:
    """A STUN server's manner: a Binding request gets a response, anything else nothing."""
    if len(data) >= 20 and data[4:8] == COOKIE:
        return stun.binding_success(data[8:20], ("127.0.0.1", 1))
    return None


@needs_raw
@pytest.mark.parametrize("host", [LOOPBACK, LOOPBACK6])
async def test_stun_trace_on_loopback_reaches_at_ttl_1(host: str) -> None:
    ctx = CheckContext(timeout=1.0)
    async with FakeUdpServer(_stun_answer, host=host) as server:
        pair = await tr.trace(ctx, _target(server.port, "stun"), host, 1, trigger="stun", wait=0.2)
    trigger, control = pair.trigger, pair.control
    for record in (trigger, control):
        assert_valid(record)
        assert record.check == "trace"
        assert record.failure is None
        assert record.details["ttls_traced"] == 1
        assert record.details["packets_sent"] == 1  # one datagram per TTL, one TTL
        assert record.details["first_interfering_ttl"] is None
    assert trigger.details["hops"][0]["outcome"] == "answered"
    assert trigger.details["reached"]
    assert trigger.details["destination_ttl"] == 1
    assert control.details["hops"][0]["outcome"] == "silent"
    assert control.details["control"]
    assert not trigger.details["control"]
    assert server.count == 2  # the trigger and its control, nothing more


@needs_raw
async def test_udp_trace_hears_the_destinations_port_unreachable() -> None:
    ctx = CheckContext(timeout=1.0)
    port = closed_udp_port()
    pair = await tr.trace(ctx, _target(port, "call"), LOOPBACK, 1, trigger="call", wait=0.5)
    for record in (pair.trigger, pair.control):
        assert record.details["hops"] == [
            {
                "ttl": 1,
                "outcome": "unreachable",
                "hop": LOOPBACK,
                "rtt": record.details["hops"][0]["rtt"],
                "packets": 1,
                "acked": None,
                "interference": None,
            }
        ]
        assert record.details["reached"]
    assert pair.trigger.details["payload_bytes"] == pair.control.details["payload_bytes"]


@needs_raw
async def test_tls_trace_on_loopback(tmp_path: Path) -> None:
    ctx = CheckContext(timeout=1.0)
    async with FakeTLSServer("complete", FakePKI(tmp_path)) as server:
        target = _target(server.port, "tls", app="signal", host="chat.signal.org")
        pair = await tr.trace(ctx, target, LOOPBACK, 1, trigger="tls", max_ttl=3, wait=0.3)
    assert pair.trigger.details["sni"] == "chat.signal.org"
    assert pair.control.details["sni"] == "example.org"
    for record in (pair.trigger, pair.control):
        assert_valid(record)
        assert record.failure is None
        assert record.details["hops"][0]["outcome"] == "answered"
        # SYN, ACK, the ClientHello, ACKs of the server's flight, the closing RST
        assert 4 <= record.details["packets_sent"] <= 8
        assert record.runtime < 2.0


@needs_raw
async def test_a_refused_connect_ends_the_trace_and_counts_its_syn() -> None:
    with socket.socket() as closed:
        closed.bind((LOOPBACK, 0))
        port = closed.getsockname()[1]
    ctx = CheckContext(timeout=1.0)
    target = _target(port, "whatsapp")
    pair = await tr.trace(ctx, target, LOOPBACK, 1, trigger="whatsapp", wait=0.2)
    for record in (pair.trigger, pair.control):
        assert_valid(record)
    # the control goes first: its connect is refused, and so is the pair
    assert pair.control.failure == pair.trigger.failure == Failure.CONNECTION_REFUSED
    assert pair.control.details["packets_sent"] == 1  # the SYN
    assert pair.control.details["hops"] == []
    assert pair.trigger.details["packets_sent"] == 0


@needs_raw
async def test_a_server_that_reads_and_says_nothing_acknowledges_both_payloads() -> None:
    # A chat server that takes the prologue and the random bytes alike and answers neither: its
    # TCP acknowledges both, so both reached it at TTL 1 and neither is localized.
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(4096)

    server = await asyncio.start_server(hold, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = CheckContext(timeout=1.0)
        pair = await tr.trace(
            ctx, _target(port, "whatsapp"), LOOPBACK, 1, trigger="whatsapp", wait=0.3
        )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    for record in (pair.trigger, pair.control):
        assert_valid(record)
        hop = record.details["hops"][0]
        assert (hop["outcome"], hop["acked"], hop["interference"]) == ("silent", True, None)
        assert record.details["reached"]
        assert record.details["ttls_traced"] == 1  # the control's acknowledgement ends it
        assert record.details["localized_hop"] is None


@needs_raw
@pytest.mark.parametrize("app", ["whatsapp", "telegram"])
async def test_a_signed_call_trace_is_echoed_by_the_reflector(app: str) -> None:
    secret = SECRET
    config = ReflectorConfig(
        secret=secret, bind=(LOOPBACK,), udp_ports=(0,), tls=False, stats_interval=0
    )
    ctx = CheckContext(timeout=1.0)
    async with Reflector(config) as reflector:
        port = reflector.udp_addresses[0][1]
        pair = await tr.trace(
            ctx,
            _target(port, "call", app=app),
            LOOPBACK,
            1,
            trigger="call",
            wait=0.3,
            secret=secret,
        )
        unsigned = await tr.trace(
            ctx,
            _target(port, "call", app=app),
            LOOPBACK,
            1,
            trigger="call",
            wait=0.3,
            max_ttl=1,
        )
    for record in (pair.trigger, pair.control):
        assert_valid(record)
        assert record.details["signed"] is True
        assert record.details["hops"][0]["outcome"] == "answered"
        assert record.details["reached"]
        assert record.details["packets_sent"] == record.details["ttls_traced"] == 1
    # without the secret the reflector echoes neither: nobody answers a stranger's call
    for record in (unsigned.trigger, unsigned.control):
        assert record.details["signed"] is False
        assert record.details["hops"][0]["outcome"] == "silent"


@needs_raw
async def test_a_cut_trace_primes_the_flow_until_the_call_is_cut() -> None:
    # The emulated path drops WhatsApp's RTP (after the 3-datagram STUN opening) and nothing of
    # the control's random bytes: the prime sees the call's echoes stop while the control's go
    # on, stops early, and the probe at TTL 1, the flow's next RTP datagram, is cut too.
    # RTP version 2 with a header extension (0x90), WhatsApp's payload type (probe.protocols.rtp)
    censor = Censor(drop_prefixes=[(0, bytes([0x90, rtp.WHATSAPP_PAYLOAD_TYPE]))])
    ctx = CheckContext(timeout=1.0)
    async with FakeEchoReflector(SECRET, censor=censor) as refl:
        pair = await tr.trace(
            ctx, _target(refl.port, "cut"), LOOPBACK, 1, trigger="cut", wait=0.3, max_ttl=2,
            secret=SECRET, prime=3.0,
        )  # fmt: skip
    trigger, control = pair.trigger.details, pair.control.details
    for record in (pair.trigger, pair.control):
        assert_valid(record)
        assert record.failure is None
    assert trigger["prime"]["stopped_early"] is True
    assert trigger["prime"]["echoed"] == 3  # the opening, then nothing
    assert trigger["prime"]["last_echoed_seq"] == 2
    assert control["prime"]["echoed"] == control["prime"]["sent"] > 3
    # stopped after about CUT_SILENCE seconds, well before the 3 s prime (50 datagrams)
    assert control["prime"]["sent"] < 40
    assert trigger["hops"][0]["outcome"] == "silent"
    assert control["hops"][0]["outcome"] == "answered"  # the echo of its own probe
    assert trigger["interference"] == "cut"
    assert trigger["hops"][0]["interference"] == "cut"
    assert trigger["localized_hop"] == 0
    assert control["first_interfering_ttl"] is None
    for details in (trigger, control):
        # the prime's datagrams and one probe per TTL traced, on one socket
        assert details["packets_sent"] == details["prime"]["sent"] + details["ttls_traced"]
        assert details["ttls_traced"] == 1  # the control's echo ends the trace


@needs_raw
async def test_an_uncut_flow_is_primed_to_the_end_and_not_localized() -> None:
    ctx = CheckContext(timeout=1.0)
    async with FakeEchoReflector(SECRET) as refl:
        pair = await tr.trace(
            ctx, _target(refl.port, "cut", app="telegram"), LOOPBACK, 1, trigger="cut",
            wait=0.3, secret=SECRET, prime=0.6,
        )  # fmt: skip
    for record in (pair.trigger, pair.control):
        prime = record.details["prime"]
        assert prime["stopped_early"] is False
        assert prime["sent"] == prime["echoed"] == 10  # 0.6 s at one datagram per 60 ms
        assert record.details["hops"][0]["outcome"] == "answered"
        assert record.details["interference"] is None


async def test_the_cut_trigger_needs_the_reflectors_secret() -> None:
    ctx = CheckContext(timeout=1.0)
    with pytest.raises(ValueError, match="give its secret"):
        await tr.trace(ctx, _target(3478, "cut"), LOOPBACK, 1, trigger="cut")
    with pytest.raises(ValueError, match="prime"):
        await tr.trace(
            ctx, _target(3478, "cut"), LOOPBACK, 1, trigger="cut", secret=SECRET, prime=61
        )
    with pytest.raises(ValueError, match="it is signed"):
        tr.build_probe("cut", control=False, app="whatsapp")


def test_only_the_call_trigger_is_signed() -> None:
    with pytest.raises(ValueError, match="only the call trigger"):
        tr.build_probe("stun", control=False, app="whatsapp", signed=True)
    signed = tr.build_probe("call", control=True, app="telegram", signed=True)
    assert signed.signed
    assert signed.expects_answer
    assert not tr.build_probe("call", control=True, app="telegram").expects_answer


def forbid_raw_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the trace check's raw sockets fail as they do without root or CAP_NET_RAW."""
    real_socket = socket.socket

    def no_raw(*args: Any, **kwargs: Any) -> socket.socket:
        if kwargs.get("type", args[1] if len(args) > 1 else None) == socket.SOCK_RAW:
            raise PermissionError(1, "Operation not permitted")
        return real_socket(*args, **kwargs)

    monkeypatch.setattr(tr.socket, "socket", no_raw)


async def test_without_raw_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_raw_sockets(monkeypatch)
    ctx = CheckContext(timeout=1.0)
    async with FakeUdpServer(_stun_answer) as server:
        pair = await tr.trace(ctx, _target(server.port, "stun"), LOOPBACK, 1, trigger="stun")
    for record in (pair.trigger, pair.control):
        assert_valid(record)
        assert record.failure == Failure.RAW_SOCKET_NOT_PERMITTED
        assert "CAP_NET_RAW" in record.details["error"]
        assert record.details["packets_sent"] == 0
    assert server.count == 0


async def test_the_guard_refuses_before_anything_is_sent() -> None:
    ctx = CheckContext(timeout=1.0, allow=AllowList.from_sources(["192.0.2.0/24"], environ={}))
    async with FakeUdpServer(_stun_answer) as server:
        pair = await tr.trace(ctx, _target(server.port, "stun"), LOOPBACK, 1, trigger="stun")
    assert pair.trigger.failure == pair.control.failure == Failure.ADDRESS_NOT_ALLOWED
    assert pair.trigger.details["packets_sent"] == 0
    assert server.count == 0


async def test_bad_arguments_raise() -> None:
    ctx = CheckContext()
    with pytest.raises(ValueError, match="max_ttl"):
        await tr.trace(ctx, _target(1, "stun"), LOOPBACK, 1, trigger="stun", max_ttl=40)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        await tr.trace(ctx, _target(1, "stun"), "localhost", 1, trigger="stun")
    with pytest.raises(ValueError, match="the stun trigger is udp"):
        await tr.trace(ctx, _target(1, "tls"), LOOPBACK, 1, trigger="stun")


# --- the command ------------------------------------------------------------------------------


def test_cli_constants_are_the_checks() -> None:
    assert trace_cli.TRIGGERS == tr.TRIGGERS
    assert trace_cli.DEFAULT_MAX_TTL == tr.DEFAULT_MAX_TTL
    assert trace_cli.MAX_TTL == tr.MAX_TTL
    assert (trace_cli.DEFAULT_WAIT, trace_cli.MIN_WAIT, trace_cli.MAX_WAIT) == (
        tr.DEFAULT_WAIT,
        tr.MIN_WAIT,
        tr.MAX_WAIT,
    )
    assert (trace_cli.DEFAULT_PRIME, trace_cli.MAX_PRIME) == (tr.DEFAULT_PRIME, tr.MAX_PRIME)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace"], "--trigger"),
        (["trace", "--trigger", "ping"], "--trigger"),
        (["trace", "--trigger", "stun", "--max-ttl", "33"], "--max-ttl"),
        (["trace", "--trigger", "stun", "--max-ttl", "0"], "--max-ttl"),
        (["trace", "--trigger", "stun", "--wait", "9"], "--wait"),
        (["trace", "--trigger", "stun", "--target", "relay.example"], "not an IP address"),
        (["trace", "--trigger", "whatsapp", "--app", "telegram"], "--app whatsapp"),
        (["trace", "--trigger", "call", "--app", "signal"], "no call framing"),
        (["trace", "--trigger", "stun", "--allow-net", "10.0.0.0/99"], "not an IP network"),
        (["trace", "--trigger", "stun", "--reflector", "192.0.2.7"], "use --trigger call or cut"),
        (["trace", "--trigger", "cut"], "give --reflector"),
        (["trace", "--trigger", "cut", "--reflector", "192.0.2.7", "--prime", "61"], "--prime"),
        (["trace", "--trigger", "call", "--reflector", "192.0.2.7"], "shared secret"),
        (["trace", "--trigger", "call", "--reflector", "relay.example"], "not an IP address"),
        (
            ["trace", "--trigger", "call", "--reflector", "192.0.2.7", "--target", "192.0.2.8"],
            "give it or --target",
        ),
        (
            ["trace", "--trigger", "stun", "--target", "192.0.2.7", "--allow-net", "127.0.0.0/8"],
            "outside the allow-list",
        ),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "RINGPROBE_ALLOW_NETS": "127.0.0.0/8"},
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ringprobe: error:")
    assert message.lower() in line.lower()


@needs_raw
def test_cli_traces_on_loopback_and_prints_json() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((LOOPBACK, 0))
        port = server.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            ["trace", "--trigger", "stun", "--target", LOOPBACK, "--port", str(port),
             "--wait", "0.1", "--max-ttl", "2", "--allow-net", "127.0.0.0/8", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"trigger", "control"}
    for name, record in out.items():
        assert_valid(record)
        assert record["details"]["control"] is (name == "control")
        # the socket is bound and silent: both probes stay silent, 2 TTLs, 1 datagram each
        assert [h["outcome"] for h in record["details"]["hops"]] == ["silent", "silent"]
        assert record["details"]["packets_sent"] == 2
    text = CliRunner().invoke(
        cli,
        ["trace", "--trigger", "stun", "--target", LOOPBACK, "--port", str(closed_udp_port()),
         "--wait", "0.2", "--allow-net", "127.0.0.0/8"],
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "unreachable 127.0.0.1" in text.output
    assert "trigger: no interference found" in text.output
