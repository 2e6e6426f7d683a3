"""The call_flow check and the runner's call tests, against a loopback ringprobe reflector
(tests/fakes/echo_reflector.py) whose knobs emulate a censor on the way: a cut after N packets,
first-bytes matching, policing. Nothing leaves loopback: the suite's allow-list (conftest) refuses
anything else, and every flow is short (DURATION) and bounded by its own time budget."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe import runner as runner_module
from probe.allowlist import AllowList, parse_networks
from probe.checks import call_flow
from probe.checks.base import CheckContext
from probe.cli import cli
from probe.model import Failure, Record, Target
from probe.protocols import echo, rtp, stun, tgcalls
from probe.runner import Limits, RunOutput, execute
from tests.fakes.echo_reflector import Censor, FakeEchoReflector
from tests.fakes.udp_server import LOOPBACK, LOOPBACK6, FakeUdpServer, closed_udp_port, silent
from tests.recordcheck import assert_valid
from tests.unit.test_runner import closed_port

SECRET = bytes(range(32))
# Seconds of sending per flow: 25 voice packets, 6 bins. Flows that are not echoed in full listen
# LISTEN_AFTER (2 s) more; SHORT is for those.
DURATION = 1.5
SHORT = 1.0
# Below every flow's duration: a flow keeps its own time budget, whatever the per-check timeout.
CHECK_TIMEOUT = 0.5
COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")


def _target(port: int, app: str = "whatsapp", host: str = LOOPBACK) -> Target:
    return Target(
        id=f"{app}-reflector-{port}", app=app, role="reflector", port=port, transport="udp",
        expect="echo", source="test", date="2026-11-28", address=host,
    )  # fmt: skip


def _ctx(**changes: Any) -> CheckContext:
    return CheckContext(timeout=CHECK_TIMEOUT, allow=AllowList.from_sources(), **changes)


async def _flow(
    port: int,
    *,
    flow: str = "call",
    framing: str = "whatsapp_rtp",
    schedule: call_flow.Schedule | None = None,
    duration: float = DURATION,
    start_at: float | None = None,
    seed: int = 1,
    ctx: CheckContext | None = None,
    host: str = LOOPBACK,
) -> Record:
    app = "whatsapp" if framing == "whatsapp_rtp" else "telegram"
    schedule = schedule or call_flow.make_schedule(framing, "voice", duration, seed=seed)
    started = time.monotonic()
    record = await call_flow.call_flow(
        ctx or _ctx(), _target(port, app, host), host, 7,
        secret=SECRET, flow=flow, framing=framing, schedule=schedule, start_at=start_at,
        rng=random.Random(seed),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert elapsed <= call_flow.time_budget(schedule.duration) + 0.5
    assert_valid(record)
    assert record.check == "call_flow"
    return record


def _assert_bins_consistent(details: dict[str, Any]) -> None:
    bins = details["bins"]
    assert len(bins) == math.ceil(details["duration"] / details["bin_width"] - 1e-9)
    assert sum(b["sent"] for b in bins) == details["packets_sent"]
    assert sum(b["sent_bytes"] for b in bins) == details["bytes_sent"]
    assert sum(b["echoed"] for b in bins) == details["packets_echoed"]
    assert sum(b["echoed_bytes"] for b in bins) == details["bytes_echoed"]
    assert all(b["echoed"] <= b["sent"] for b in bins)
    rx = [b["reflector_rx"] for b in bins]
    seen = [value for value in rx if value is not None]
    # null until the first echo, then a running maximum that ends at the total
    assert rx == [None] * (len(rx) - len(seen)) + seen
    assert seen == sorted(seen)
    assert (seen[-1] if seen else None) == details["reflector_rx"]
    for b in bins:
        assert (b["rtt_ms"] is None) == (b["echoed"] == 0)


def _sessions(refl: FakeEchoReflector, *records: Record) -> list[list[bytes]]:
    return [refl.received(bytes.fromhex(r.details["session"])) for r in records]


# --- schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", call_flow.FRAMINGS)
@pytest.mark.parametrize("profile", ["voice", "video"])
def test_a_schedule_keeps_the_apps_sizes_and_is_reproducible(framing: str, profile: str) -> None:
    schedule = call_flow.make_schedule(framing, profile, 10.0, seed=3)
    assert schedule == call_flow.make_schedule(framing, profile, 10.0, seed=3)
    assert schedule != call_flow.make_schedule(framing, profile, 10.0, seed=4)
    spec = call_flow.PROFILES[profile]
    assert len(schedule.sizes) == math.ceil(10.0 / spec.interval)
    assert schedule.bins == 40
    opening, data = schedule.sizes[:3], schedule.sizes[3:]
    if framing == "whatsapp_rtp":
        assert opening[0] % 4 == 0
        assert rtp.VOICE_SIZE_MIN <= opening[0] <= rtp.VOICE_SIZE_MAX
        assert opening[1:] == (stun.HEADER_LEN + echo.TRAILER_LEN,) * 2
    else:
        assert opening == (tgcalls.HELLO_LEN + echo.TRAILER_LEN,) * 3
        assert all(size % 4 == 0 for size in data)
    assert all(spec.size_min <= size <= spec.size_max for size in data)


def test_the_default_duration_is_the_clis_and_the_contexts() -> None:
    params = {p.name: p.default for p in cli.commands["run"].params}
    assert params["call_duration"] == call_flow.DEFAULT_DURATION
    assert CheckContext().call_duration == call_flow.DEFAULT_DURATION
    # METHOD.md: at most 20 s of voice-profile traffic per app (call and control on its port)
    assert 2 * call_flow.DEFAULT_DURATION <= 20


# --- the check on an open path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "host"),
    [("whatsapp_rtp", LOOPBACK), ("telegram_reflector", LOOPBACK), ("whatsapp_rtp", LOOPBACK6)],
)
async def test_an_open_path_echoes_every_datagram(framing: str, host: str) -> None:
    async with FakeEchoReflector(SECRET, host=host) as refl:
        started = time.monotonic()
        record = await _flow(refl.port, framing=framing, host=host)
        elapsed = time.monotonic() - started
    details = record.details
    assert record.failure is None
    # The flow ran its whole duration, past the per-check timeout, and ended at the last echo.
    assert DURATION - 0.1 < elapsed < DURATION + 1.0
    sent = details["packets_sent"]
    assert sent == 25 == refl.echoed
    assert details["packets_echoed"] == sent
    assert details["bytes_echoed"] == details["bytes_sent"]
    assert details["reflector_rx"] == sent
    assert details["first_echo_s"] == 0.0
    assert details["last_echo_seq"] == sent - 1
    assert details["last_echo_s"] == pytest.approx((sent - 1) * 0.060)
    assert details["invalid"] == 0
    assert details["interval_ms"] == 60.0
    assert (details["flow"], details["profile"], details["framing"]) == ("call", "voice", framing)
    assert details["bin_width"] == 0.25
    assert [b["sent"] for b in details["bins"]] == [5, 4, 4, 4, 4, 4]
    _assert_bins_consistent(details)
    assert "first_echo" in record.timings
    (datagrams,) = _sessions(refl, record)
    assert len(datagrams) == sent
    assert sum(len(d) for d in datagrams) == details["bytes_sent"]
    assert record.target.role == "reflector"
    assert record.target.expect == "echo"


async def test_a_video_flow_sends_big_packets_every_20_ms() -> None:
    schedule = call_flow.make_schedule("telegram_reflector", "video", 0.5, seed=4)
    async with FakeEchoReflector(SECRET) as refl:
        record = await call_flow.call_flow(
            _ctx(), _target(refl.port, "telegram"), LOOPBACK, 7, secret=SECRET, flow="call",
            framing="telegram_reflector", profile="video", schedule=schedule,
        )  # fmt: skip
    assert_valid(record)
    details = record.details
    assert record.failure is None
    assert (details["profile"], details["interval_ms"]) == ("video", 20.0)
    assert details["packets_sent"] == details["packets_echoed"] == 25
    assert [len(d) for d in refl.received()] == list(schedule.sizes)
    assert all(900 <= size <= 1200 for size in schedule.sizes[3:])
    _assert_bins_consistent(details)


async def _pair(framing: str) -> tuple[Record, Record, list[bytes], list[bytes], list[float]]:
    """A call and its control, side by side on one schedule, the control half an interval later;
    returns both records, what the reflector got of each, and its arrival offsets."""
    schedule = call_flow.make_schedule(framing, "voice", DURATION, seed=11)
    async with FakeEchoReflector(SECRET) as refl:
        start = time.monotonic() + 0.1
        call, control = await asyncio.gather(
            _flow(refl.port, framing=framing, schedule=schedule, start_at=start, seed=1),
            _flow(
                refl.port, flow="control", framing=framing, schedule=schedule,
                start_at=start + schedule.interval / 2, seed=2,
            ),
        )  # fmt: skip
    got_call, got_control = _sessions(refl, call, control)
    times = {a.data: a.at for a in refl.arrivals}
    call_times = [times[d] - times[got_call[0]] for d in got_call]
    control_times = [times[d] - times[got_control[0]] for d in got_control]
    drift = [abs(a - b) for a, b in zip(call_times, control_times, strict=True)]
    lag = times[got_control[0]] - times[got_call[0]]
    assert 0.01 < lag < 0.06  # interleaved: half an interval (30 ms) apart
    for record in (call, control):
        assert record.failure is None
        assert record.details["packets_echoed"] == len(schedule.sizes)
    # Only content differs: the same sizes, the same send offsets, the same bins.
    assert [len(d) for d in got_call] == [len(d) for d in got_control] == list(schedule.sizes)
    assert statistics.median(drift) < 0.01
    strip = [{k: b[k] for k in ("sent", "sent_bytes")} for b in call.details["bins"]]
    assert strip == [{k: b[k] for k in ("sent", "sent_bytes")} for b in control.details["bins"]]
    assert call.details["session"] != control.details["session"]
    assert {echo.parse_request(SECRET, d).kind for d in got_control} == {echo.FlowKind.CONTROL}
    return call, control, got_call, got_control, drift


async def test_a_whatsapp_call_opens_with_stun_then_rtp_and_its_control_does_not() -> None:
    _, _, got_call, got_control, _ = await _pair("whatsapp_rtp")
    allocate = stun.parse(got_call[0])  # the whole datagram is one STUN message
    assert allocate.msg_type == stun.ALLOCATE_REQUEST
    assert allocate.requested_transport == stun.TRANSPORT_UDP
    assert allocate.attribute(stun.WHATSAPP_TOKEN) is not None
    for ping in got_call[1:3]:
        header = stun.parse(ping[: stun.HEADER_LEN])  # a bare header, then the trailer
        assert header.msg_type == stun.WHATSAPP_PING
        assert header.txid == allocate.txid
    packets = [rtp.parse_rtp(d) for d in got_call[3:]]
    assert {d[0] for d in got_call[3:]} == {0x90}
    assert {p.payload_type for p in packets} == {rtp.WHATSAPP_PAYLOAD_TYPE}
    assert len({p.ssrc for p in packets}) == 1
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        assert after.timestamp == (before.timestamp + 960) & 0xFFFF_FFFF
    for seq, datagram in enumerate(got_call):
        assert echo.parse_request(SECRET, datagram) == echo.RequestTrailer(
            echo.parse_request(SECRET, datagram).session, seq, echo.FlowKind.CALL
        )
    # The control's first bytes are random (the RNG is seeded, so this cannot flake).
    for datagram in got_control[:3]:
        assert not stun.is_stun(datagram)
        assert datagram[4:8] != COOKIE
    assert not any(d[0] == 0x90 and d[1] & 0x7F == rtp.WHATSAPP_PAYLOAD_TYPE for d in got_control)


async def test_a_telegram_call_opens_with_hellos_then_tagged_data_and_its_control_does_not() -> (
    None
):
    _, _, got_call, got_control, _ = await _pair("telegram_reflector")
    hellos = [tgcalls.parse_hello(d[: tgcalls.HELLO_LEN]) for d in got_call[:3]]
    assert {len(d) for d in got_call[:3]} == {tgcalls.HELLO_LEN + echo.TRAILER_LEN}
    assert {h.query_id for h in hellos} == {tgcalls.HELLO_QUERY_ID}
    assert len({h.peer_tag for h in hellos}) == 1
    for datagram in got_call[3:]:
        data = tgcalls.parse_data(datagram)
        assert data.peer_tag[: tgcalls.TAG_PREFIX_LEN] == hellos[0].tag_prefix
        assert data.sender_tag == hellos[0].sender_tag
        assert len(data.payload) == len(datagram) - tgcalls.DATA_HEADER_LEN
    for datagram in got_control:
        assert datagram[16:28] != tgcalls.SPECIAL_MARK
        assert datagram[: tgcalls.TAG_PREFIX_LEN] != hellos[0].tag_prefix


# --- an emulated censor ---------------------------------------------------------------------


async def test_a_cut_after_n_packets_shows_as_the_last_echo() -> None:
    async with FakeEchoReflector(SECRET, censor=Censor(drop_after=10)) as refl:
        record = await _flow(refl.port, duration=SHORT)
    details = record.details
    assert record.failure is None  # some echoes came: the cut is in the details
    assert details["packets_sent"] == 17
    assert details["packets_echoed"] == details["reflector_rx"] == 10
    assert details["last_echo_seq"] == 9
    assert details["last_echo_s"] == pytest.approx(9 * 0.060)
    # 9 * 60 ms = 0.54 s is in the third bin; nothing sent after it came back
    assert [b["echoed"] for b in details["bins"]] == [5, 4, 1, 0]
    assert [b["reflector_rx"] for b in details["bins"]] == [5, 9, 10, 10]
    _assert_bins_consistent(details)


async def test_first_bytes_matching_drops_the_calls_framing_but_not_its_control() -> None:
    stun_dpi = Censor(drop_prefixes=[(4, COOKIE)])
    rtp_dpi = Censor(drop_prefixes=[(0, b"\x90")])
    schedule = call_flow.make_schedule("whatsapp_rtp", "voice", SHORT, seed=5)
    async with (
        FakeEchoReflector(SECRET, censor=stun_dpi) as on_stun,
        FakeEchoReflector(SECRET, censor=rtp_dpi) as on_rtp,
    ):
        by_stun, control, by_rtp = await asyncio.gather(
            _flow(on_stun.port, schedule=schedule),
            _flow(on_stun.port, flow="control", schedule=schedule, seed=2),
            _flow(on_rtp.port, schedule=schedule),
        )
    sent = len(schedule.sizes)
    # STUN-matching DPI: the opening (Allocate, two pings) never reaches the reflector.
    assert by_stun.details["packets_echoed"] == sent - 3
    assert by_stun.details["first_echo_s"] == pytest.approx(3 * 0.060)
    assert by_stun.details["bins"][0]["echoed"] == 2
    # RTP-matching DPI: only the opening comes back, a cut right after it.
    assert by_rtp.details["packets_echoed"] == 3
    assert by_rtp.details["last_echo_seq"] == 2
    # The control, same sizes and times, random bytes: untouched.
    assert control.details["packets_echoed"] == sent
    for record in (by_stun, control, by_rtp):
        assert record.failure is None
        _assert_bins_consistent(record.details)


async def test_policing_to_half_the_rate_echoes_about_half() -> None:
    schedule = call_flow.make_schedule("telegram_reflector", "voice", DURATION, seed=9)
    rate = sum(schedule.sizes) / DURATION / 2
    censor = Censor(rate=rate, burst=max(schedule.sizes))
    async with FakeEchoReflector(SECRET, censor=censor) as refl:
        record = await _flow(refl.port, framing="telegram_reflector", schedule=schedule)
    details = record.details
    assert record.failure is None
    share = details["bytes_echoed"] / details["bytes_sent"]
    assert 0.35 < share < 0.65, share
    assert details["reflector_rx"] == details["packets_echoed"]  # lost on the way there
    _assert_bins_consistent(details)


# --- failures -------------------------------------------------------------------------------


async def test_a_silent_reflector_is_a_timeout_after_the_whole_flow() -> None:
    async with FakeUdpServer(silent()) as srv:
        started = time.monotonic()
        record = await _flow(srv.port, duration=SHORT)
        elapsed = time.monotonic() - started
    details = record.details
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert details["packets_sent"] == srv.count == 17
    assert details["packets_echoed"] == 0
    for key in ("reflector_rx", "first_echo_s", "last_echo_s", "last_echo_seq"):
        assert details[key] is None
    assert {b["reflector_rx"] for b in details["bins"]} == {None}
    # It listened LISTEN_AFTER past the last send, and no longer.
    assert SHORT + call_flow.LISTEN_AFTER - 0.2 < elapsed < SHORT + call_flow.LISTEN_AFTER + 0.5
    _assert_bins_consistent(details)


async def test_echoes_under_another_secret_are_counted_invalid() -> None:
    async with FakeEchoReflector(SECRET, echo_secret=b"not the secret " * 2) as refl:
        record = await _flow(refl.port, duration=SHORT)
    details = record.details
    assert refl.echoed == details["packets_sent"] == details["invalid"] == 17
    assert details["packets_echoed"] == 0
    assert record.failure == Failure.ECHO_BAD_DATAGRAM


async def test_a_closed_port_is_connection_refused_and_ends_the_flow() -> None:
    record = await _flow(closed_udp_port(), duration=SHORT)
    details = record.details
    assert record.failure == Failure.CONNECTION_REFUSED
    assert 1 <= details["packets_sent"] < 17
    assert details["packets_echoed"] == 0
    assert record.runtime < 1.0
    _assert_bins_consistent(details)


async def test_the_guard_refuses_before_any_datagram() -> None:
    ctx = CheckContext(timeout=CHECK_TIMEOUT, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeEchoReflector(SECRET) as refl:
        record = await _flow(refl.port, ctx=ctx)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert record.details["packets_sent"] == 0
    assert len(record.details["bins"]) == 6
    assert refl.arrivals == []
    assert record.runtime < 0.5


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="flow"):
        await call_flow.call_flow(
            _ctx(), _target(9), LOOPBACK, 1, secret=SECRET, flow="video", framing="whatsapp_rtp"
        )
    with pytest.raises(ValueError, match="secret"):
        await call_flow.call_flow(
            _ctx(), _target(9), LOOPBACK, 1, secret=b"", flow="call", framing="whatsapp_rtp"
        )
    with pytest.raises(ValueError, match="framing"):
        call_flow.make_schedule("signal", "voice", 1.0)
    with pytest.raises(ValueError, match="at most"):
        call_flow.make_schedule("whatsapp_rtp", "voice", call_flow.MAX_DURATION + 1)


# --- the runner's call tests ----------------------------------------------------------------


def _app_targets() -> list[Target]:
    # Catalog entries that make the run include both calling apps and send nothing themselves.
    return [_quiet_target("whatsapp"), _quiet_target("telegram")]


def _quiet_target(app: str) -> Target:
    return Target(
        id=f"{app}-x", app=app, role="relay", port=9, transport="udp", expect="unknown",
        source="test", date="2026-11-28", address=LOOPBACK,
    )  # fmt: skip


def _lines(path: Path) -> list[dict[str, Any]]:
    return [assert_valid(line) for line in path.read_text().splitlines()]


async def test_a_run_with_a_reflector_makes_one_call_test_per_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        FakeEchoReflector(SECRET) as wa,
        FakeEchoReflector(SECRET) as tg,
        FakeEchoReflector(SECRET) as neutral,
    ):
        monkeypatch.setitem(runner_module.CALL_TESTS, "whatsapp", ("whatsapp_rtp", wa.port))
        monkeypatch.setitem(runner_module.CALL_TESTS, "telegram", ("telegram_reflector", tg.port))
        monkeypatch.setattr(runner_module, "NEUTRAL_PORT", neutral.port)
        # The SNI streams that follow go to a port nothing listens on, never to 443.
        monkeypatch.setattr(runner_module, "REFLECTOR_TLS_PORT", closed_port())
        ctx = _ctx(reflector=LOOPBACK, reflector_secret=SECRET, call_duration=SHORT)
        output = RunOutput(tmp_path, ctx, 2, {})
        result = await execute(_app_targets(), ctx, output)
    assert result.status == "complete"
    rows = [row for row in _lines(result.records_path) if row["check"] == "call_flow"]
    assert len(rows) == 6
    by_app: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_app.setdefault(row["app"], []).append(row)
    assert {app: len(flows) for app, flows in by_app.items()} == {"whatsapp": 3, "telegram": 3}
    ports = {"whatsapp": wa.port, "telegram": tg.port}
    transactions = set()
    for app, flows in by_app.items():
        assert len({row["transaction_id"] for row in flows}) == 1
        transactions.add(flows[0]["transaction_id"])
        kinds = {row["details"]["flow"]: row for row in flows}
        assert set(kinds) == {"call", "control", "call_neutral_port"}
        assert kinds["call"]["target"]["port"] == kinds["control"]["target"]["port"] == ports[app]
        assert kinds["call_neutral_port"]["target"]["port"] == neutral.port
        for row in flows:
            assert row["failure"] is None
            assert row["details"]["packets_echoed"] == row["details"]["packets_sent"] == 17
            assert row["target"]["id"] == f"{app}-reflector-{row['target']['port']}"
            assert (row["target"]["role"], row["target"]["expect"]) == ("reflector", "echo")
            assert row["target"]["address"] == LOOPBACK
        # one schedule for the test's three flows
        sizes = {json.dumps([b["sent_bytes"] for b in row["details"]["bins"]]) for row in flows}
        assert len(sizes) == 1
    assert len(transactions) == 2
    assert not any(entry["reason"] == runner_module.SKIP_CALL_FLOWS for entry in result.skipped)
    # Call and control on each app's port, both neutral-port flows on the neutral one.
    assert wa.echoed == tg.echoed == neutral.echoed == 2 * 17


async def test_each_call_profile_asked_for_is_a_test_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeEchoReflector(SECRET) as refl:
        monkeypatch.setitem(runner_module.CALL_TESTS, "whatsapp", ("whatsapp_rtp", refl.port))
        monkeypatch.setattr(runner_module, "NEUTRAL_PORT", refl.port)
        monkeypatch.setattr(runner_module, "REFLECTOR_TLS_PORT", closed_port())
        ctx = _ctx(
            reflector=LOOPBACK,
            reflector_secret=SECRET,
            call_duration=SHORT,
            call_profiles=("voice", "video"),
        )
        output = RunOutput(tmp_path, ctx, 1, {})
        result = await execute([_quiet_target("whatsapp")], ctx, output)
    rows = [row for row in _lines(result.records_path) if row["check"] == "call_flow"]
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_profile.setdefault(row["details"]["profile"], []).append(row)
    assert sorted(by_profile) == ["video", "voice"]
    for profile, interval_ms in (("voice", 60), ("video", 20)):
        flows = by_profile[profile]
        assert sorted(row["details"]["flow"] for row in flows) == [
            "call",
            "call_neutral_port",
            "control",
        ]
        assert {row["details"]["interval_ms"] for row in flows} == {interval_ms}
        assert all(row["failure"] is None for row in flows)
    # One transaction for the app's whole call test, voice before video.
    assert len({row["transaction_id"] for row in rows}) == 1
    assert [row["details"]["profile"] for row in rows][:3] == ["voice"] * 3
    streams = [row for row in _lines(result.records_path) if row["check"] == "sni_stream"]
    assert len(streams) == 2  # once per app, after every profile


async def test_a_run_without_a_reflector_plans_no_call_flow_and_says_so_once(
    tmp_path: Path,
) -> None:
    ctx = _ctx()
    output = RunOutput(tmp_path, ctx, 2, {})
    result = await execute(_app_targets(), ctx, output)
    assert not any(row["check"] == "call_flow" for row in _lines(result.records_path))
    skips = [entry for entry in result.skipped if entry["target"] == "call_flow"]
    assert skips == [{"target": "call_flow", "reason": runner_module.SKIP_CALL_FLOWS}]
    manifest = json.loads(result.manifest_path.read_text())
    assert {"target": "call_flow", "reason": runner_module.SKIP_CALL_FLOWS} in manifest["skipped"]


async def test_a_run_of_apps_that_make_no_calls_notes_no_skip(tmp_path: Path) -> None:
    ctx = _ctx()
    result = await execute([_quiet_target("control")], ctx, RunOutput(tmp_path, ctx, 1, {}))
    assert not any(entry["target"] == "call_flow" for entry in result.skipped)


async def test_a_call_test_the_deadline_cannot_hold_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeEchoReflector(SECRET) as refl:
        monkeypatch.setitem(runner_module.CALL_TESTS, "whatsapp", ("whatsapp_rtp", refl.port))
        monkeypatch.setitem(runner_module.CALL_TESTS, "telegram", ("telegram_reflector", refl.port))
        monkeypatch.setattr(runner_module, "NEUTRAL_PORT", refl.port)
        monkeypatch.setattr(runner_module, "REFLECTOR_TLS_PORT", closed_port())
        ctx = _ctx(reflector=LOOPBACK, reflector_secret=SECRET, call_duration=SHORT)
        output = RunOutput(tmp_path, ctx, 2, {})
        # The flows need SHORT + 2 s of listening + margin: more than the whole run has.
        result = await execute(_app_targets(), ctx, output, Limits(deadline=2.0))
    assert result.status == "deadline_reached"
    assert not any(row["check"] == "call_flow" for row in _lines(result.records_path))
    assert refl.arrivals == []


def test_a_reflector_without_its_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        runner_module.Runner(CheckContext(reflector=LOOPBACK), None)  # type: ignore[arg-type]


# --- the command line -----------------------------------------------------------------------

_SAFE = ["run", "--allow-net", "127.0.0.1/32", "--no-doh", "--deadline", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reflector", "reflector.example.org"], "not an IP address"),
        (["--reflector", "192.0.2.7"], "needs the shared secret"),
        (["--reflector", "192.0.2.7", "--call-duration", "0.5"], "--call-duration"),
        (["--reflector", "192.0.2.7", "--call-duration", "61"], "--call-duration"),
        (["--reflector", "192.0.2.7", "--call-profile", "screen"], "--call-profile"),
    ],
)
def test_reflector_options_are_checked_before_anything_runs(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RINGPROBE_REFLECTOR_SECRET", raising=False)
    result = CliRunner().invoke(cli, [*_SAFE, "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list(tmp_path.iterdir())  # refused before the run: no records, no manifest


def test_a_missing_secret_is_one_line() -> None:
    env = {"RINGPROBE_REFLECTOR_SECRET": ""}
    result = CliRunner().invoke(cli, [*_SAFE, "--reflector", "192.0.2.7"], env=env)
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("ringprobe: error: --reflector needs the shared secret")


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (SECRET.hex().encode() + b"\n", SECRET),
        (b"\xff" * 20, b"\xff" * 20),  # not hex: the raw bytes
    ],
)
def test_the_secret_file_holds_hex_or_raw_bytes(
    content: bytes, secret: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from probe.cli.common import reflector_from

    monkeypatch.delenv("RINGPROBE_REFLECTOR_SECRET", raising=False)
    path = tmp_path / "secret"
    path.write_bytes(content)
    options = {"reflector": "2001:db8::0:7", "reflector_secret_file": path}
    assert reflector_from(options) == ("2001:db8::7", secret)
    monkeypatch.setenv("RINGPROBE_REFLECTOR_SECRET", SECRET.hex())
    options["reflector_secret_file"] = None
    assert reflector_from(options) == ("2001:db8::7", SECRET)
    path.write_bytes(b"00" * 8)
    options["reflector_secret_file"] = path
    with pytest.raises(Exception, match="at least 16"):
        reflector_from(options)


def test_run_help_names_the_reflector_options() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--reflector", "--reflector-secret-file", "--call-duration", "--call-profile"):
        assert option in result.output


def test_call_profiles_are_recorded_once_each_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline (1 s) is shorter than any call test, so nothing is sent to the reflector.
    monkeypatch.setenv("RINGPROBE_REFLECTOR_SECRET", SECRET.hex())
    args = ["--reflector", LOOPBACK, "--out", str(tmp_path)]
    args += ["--call-profile", "video", "--call-profile", "voice", "--call-profile", "video"]
    result = CliRunner().invoke(cli, [*_SAFE, *args])
    assert result.exit_code in (0, 1), result.output
    (manifest,) = tmp_path.glob("*.manifest.json")
    settings = json.loads(manifest.read_text())["settings"]
    assert settings["call_profiles"] == ["video", "voice"]
