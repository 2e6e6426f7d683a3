"""Call verdicts from call-shaped flows and their controls (docs/callflow.md), end to end over
hand-built runs (Record, JSONL, load, verdicts), each also checked against the naive reference."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.callflow import AREA_THRESHOLD, FLOW_OK_DELIVERY
from analysis.errors import LoadWarning
from analysis.features import CALLFLOW_COLUMNS, FEATURE_COLUMNS
from analysis.load import load
from analysis.verdicts import VERDICT_COLUMNS
from bench.naive_verdicts import naive_verdicts
from probe.model import Failure, Target
from tests.recordsets import DROP, OK, CallTest, Fate, FlowFate, run_records, where, write_runs
from tests.unit.test_verdicts import assert_verdict, judge, row

BLOCKED = FlowFate(cut_s=0.0)
CALL_EXPECTS = ("stun", "turn", "wa_relay", "reflector")
APPS = ("whatsapp", "telegram")


def _agrees_with_naive(tmp_path: Path, table: pd.DataFrame) -> None:
    ours = {(str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule)) for r in table.itertuples()}
    assert ours == naive_verdicts(sorted((tmp_path / "runs").glob("*.jsonl")))


def _judge(tmp_path: Path, app: str, test: CallTest, fates: object = None) -> pd.Series:
    """The app's row of a run whose only call test is ``test``, checked against the naive."""
    table = judge(tmp_path, run_records(fates, calls={app: test}))  # type: ignore[arg-type]
    _agrees_with_naive(tmp_path, table)
    return row(table, app)


def test_the_call_flow_columns_are_documented() -> None:
    for name in CALLFLOW_COLUMNS:
        assert name in FEATURE_COLUMNS
        assert name in VERDICT_COLUMNS


def test_load_keeps_call_flow_details_for_call_flow_records_only(tmp_path: Path) -> None:
    records = run_records(calls={"whatsapp": CallTest()}, apps=("whatsapp",))
    frame = load(write_runs(tmp_path, records))
    flows = frame[frame["check"] == "call_flow"]
    assert len(flows) == 3
    assert frame.loc[frame["check"] != "call_flow", "call_flow"].isna().all()
    by_flow = {json.loads(text)["flow"]: json.loads(text) for text in flows["call_flow"]}
    assert set(by_flow) == {"call", "control", "call_neutral_port"}
    original = next(r for r in records if r.check == "call_flow" and r.details["flow"] == "call")
    assert by_flow["call"] == original.details
    assert frame["details"].isna().all()  # still only on request


def test_call_flow_details_survive_a_damaged_file(tmp_path: Path) -> None:
    # A malformed line sends the file down the line-by-line path; the rows must still match.
    records = run_records(calls={"telegram": CallTest()}, apps=("telegram",))
    lines = [r.to_json() for r in records]
    lines.insert(len(lines) - 2, '{"not json')
    (tmp_path / "damaged.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(LoadWarning):
        frame = load(tmp_path)
    flows = frame[frame["call_flow"].notna()]
    assert list(flows["check"]) == ["call_flow"] * 3
    assert [json.loads(text)["flow"] for text in flows["call_flow"]] == [
        "call",
        "control",
        "call_neutral_port",
    ]
    assert list(flows["measurement_id"]) == [r.measurement_id for r in records[-3:]]


def test_no_call_flows_leaves_the_columns_empty(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records())
    r = row(table, "whatsapp")
    assert r["callflow_tests"] == 0
    assert pd.isna(r["call_area"])
    assert not r["call_blocked"]
    assert_verdict(r, "ok", "ok")


@pytest.mark.parametrize("app", APPS)
def test_open_flows_are_ok(tmp_path: Path, app: str) -> None:
    r = _judge(tmp_path, app, CallTest())
    assert_verdict(r, "ok", "ok")
    assert r["callflow_tests"] == 1
    assert (r["call_delivery"], r["control_delivery"], r["neutral_delivery"]) == (1.0, 1.0, 1.0)
    assert r["call_area"] == 0.0
    assert r["call_p"] == 1.0


@pytest.mark.parametrize("app", APPS)
def test_a_call_cut_after_5_s_while_its_control_continues_is_calls_cut(
    tmp_path: Path, app: str
) -> None:
    r = _judge(tmp_path, app, CallTest(call=FlowFate(cut_s=5.0)))
    assert_verdict(r, "calls_cut", "calls_flow_cut", "udp", "time_cutoff")
    assert r["call_cut_s"] == pytest.approx(5.0, abs=0.1)
    assert r["call_cut_packets"] == 84  # datagrams 0..83, sent every 60 ms up to 4.98 s
    assert 84 * 90 <= r["call_cut_bytes"] <= 88 * 170  # bin resolution: up to the bin's end
    assert r["control_delivery"] == 1.0
    assert "stopped being echoed 5.0 s after it started" in r["evidence"]


@pytest.mark.parametrize("app", APPS)
def test_a_call_at_half_rate_is_calls_throttled(tmp_path: Path, app: str) -> None:
    r = _judge(tmp_path, app, CallTest(call=FlowFate(rate=0.5)))
    assert_verdict(r, "calls_throttled", "calls_flow_throttled", "udp", "rate_cap")
    assert r["call_delivery"] == pytest.approx(0.5, abs=0.01)
    assert r["call_area"] >= AREA_THRESHOLD
    assert r["call_p"] < 1e-6
    assert r["call_policing"]  # drops, RTT flat
    assert r["call_loss_up"] == pytest.approx(0.5, abs=0.01)
    assert "Mann-Whitney p" in r["evidence"]


def test_a_queue_without_loss_is_not_throttled_and_not_policing(tmp_path: Path) -> None:
    r = _judge(tmp_path, "whatsapp", CallTest(call=FlowFate(rtt_slope_ms_s=50.0)))
    assert_verdict(r, "ok", "ok")
    assert r["call_rtt_slope_ms_s"] == pytest.approx(50.0, rel=0.05)
    assert not r["call_policing"]


def test_random_loss_on_all_three_flows_is_the_network(tmp_path: Path) -> None:
    # 20% random loss on the call, its control and the neutral port alike: the call fares as its
    # control (area ~0, p large), so nothing singles the app out; both deliver < 90%, so the
    # network is bad for UDP calls whatever their content: network_degraded (udp), not ok.
    lossy = FlowFate(loss=0.2)
    r = _judge(tmp_path, "whatsapp", CallTest(call=lossy, control=lossy, neutral=lossy))
    assert_verdict(r, "network_degraded", "calls_flow_degraded", "udp", None)
    assert abs(r["call_area"]) < AREA_THRESHOLD
    assert r["call_delivery"] < FLOW_OK_DELIVERY
    assert r["control_delivery"] < FLOW_OK_DELIVERY
    assert "whatever its content" in r["evidence"]


def test_a_call_worse_than_a_lossy_control_is_inconclusive(tmp_path: Path) -> None:
    # The call loses more than half, its control a fifth: the call fares worse (area ~0.4), but
    # calls_throttled asks for a healthy control before blaming the app; on a path this lossy the
    # verdict stays inconclusive rather than guessing.
    test = CallTest(call=FlowFate(rate=0.5, loss=0.2), control=FlowFate(loss=0.2))
    r = _judge(tmp_path, "whatsapp", test)
    assert_verdict(r, "inconclusive", "calls_flow_unclear")
    assert r["call_area"] >= AREA_THRESHOLD
    assert r["control_delivery"] < FLOW_OK_DELIVERY
    assert "the control lost too" in r["evidence"]


@pytest.mark.parametrize("seed", range(5))
def test_random_loss_is_never_calls_throttled(tmp_path: Path, seed: int) -> None:
    lossy = FlowFate(loss=0.2)
    r = _judge(tmp_path, "telegram", CallTest(call=lossy, control=lossy, neutral=lossy, seed=seed))
    assert r["verdict"] != "calls_throttled"


@pytest.mark.parametrize("app", APPS)
def test_call_dropped_on_both_ports_is_blocked_by_content(tmp_path: Path, app: str) -> None:
    r = _judge(tmp_path, app, CallTest(call=BLOCKED, neutral=BLOCKED))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_fingerprint", "udp", "stun_fingerprint")
    assert r["call_blocked"]
    assert r["neutral_blocked"]
    assert pd.isna(r["call_cut_s"])  # a block, not a cut
    assert "nor did the same framing on a neutral port" in r["evidence"]


@pytest.mark.parametrize("app", APPS)
def test_call_dropped_on_the_app_port_only_is_blocked_by_port(tmp_path: Path, app: str) -> None:
    r = _judge(tmp_path, app, CallTest(call=BLOCKED))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_port", "udp", "port")
    assert r["call_blocked"]
    assert not r["neutral_blocked"]
    assert r["neutral_delivery"] == 1.0


@pytest.mark.parametrize("app", APPS)
def test_the_app_port_dropped_whatever_the_content_is_blocked_by_port(
    tmp_path: Path, app: str
) -> None:
    # All UDP to the app's call port dropped (call and random bytes alike), the call framing on
    # the neutral port echoed: the port is blocked, not the content and not the network.
    r = _judge(tmp_path, app, CallTest(call=BLOCKED, control=BLOCKED))
    assert_verdict(r, "calls_blocked", "calls_flow_port_dropped", "udp", "port")
    assert (r["call_delivery"], r["control_delivery"], r["neutral_delivery"]) == (0.0, 0.0, 1.0)
    assert "the app's call port is dropped" in r["evidence"]


def test_the_app_port_dropped_needs_the_neutral_port_to_pass(tmp_path: Path) -> None:
    lossy = FlowFate(loss=0.3)
    r = _judge(tmp_path, "telegram", CallTest(call=BLOCKED, control=BLOCKED, neutral=lossy))
    assert r["rule"] != "calls_flow_port_dropped"
    assert r["neutral_delivery"] < FLOW_OK_DELIVERY


def test_without_the_neutral_port_flow_the_mechanism_is_not_told(tmp_path: Path) -> None:
    r = _judge(tmp_path, "whatsapp", CallTest(call=BLOCKED, neutral=None))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked", "udp", None)
    assert pd.isna(r["neutral_delivery"])


@pytest.mark.parametrize("app", APPS)
def test_only_the_opening_dropped_is_a_block(tmp_path: Path, app: str) -> None:
    # A DPI that drops what opens a call (STUN Allocate and pings; reflector hellos) and nothing
    # else: the media would pass, but the call never gets it started.
    opening = FlowFate(drop_opening=True)
    r = _judge(tmp_path, app, CallTest(call=opening, neutral=opening))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_fingerprint", "udp", "stun_fingerprint")
    assert r["call_opening_lost"]
    assert r["call_delivery"] > FLOW_OK_DELIVERY
    assert "its opening (the first 3 datagrams" in r["evidence"]
    r = _judge(tmp_path / "port", app, CallTest(call=opening))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_port", "udp", "port")


def test_the_opening_packets_passing_is_still_a_block(tmp_path: Path) -> None:
    # DPI that decides after the 3 opening datagrams (180 ms): echoes stop within the first second.
    r = _judge(tmp_path, "whatsapp", CallTest(call=FlowFate(cut_s=0.18)))
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_port", "udp", "port")


@pytest.mark.parametrize(
    "test",
    [
        CallTest(control=FlowFate(rate=0.5)),
        CallTest(control=FlowFate(cut_s=5.0)),
        CallTest(control=BLOCKED),
        CallTest(control=FlowFate(loss=0.3)),
    ],
    ids=["half_rate", "cut", "blocked", "lossy"],
)
def test_swapped_call_and_control_never_blame_the_call(tmp_path: Path, test: CallTest) -> None:
    # The control got the censor's treatment and the call went through: the call is not hurt.
    r = _judge(tmp_path, "whatsapp", test)
    assert r["verdict"] not in ("calls_throttled", "calls_cut", "calls_blocked")
    assert r["call_area"] <= 0 or pd.isna(r["call_area"])


def test_a_silent_reflector_says_nothing(tmp_path: Path) -> None:
    # No flow echoed at all: the reflector is down or unreachable; the relays decide (they answer).
    test = CallTest(call=BLOCKED, control=BLOCKED, neutral=BLOCKED)
    r = _judge(tmp_path, "whatsapp", test)
    assert_verdict(r, "ok", "ok")
    assert r["callflow_tests"] == 1


def test_flows_cut_by_the_deadline_are_not_evidence(tmp_path: Path) -> None:
    r = _judge(tmp_path, "whatsapp", CallTest(call=BLOCKED, failure=Failure.INTERRUPTED))
    assert_verdict(r, "ok", "ok")
    assert r["callflow_tests"] == 0


def test_the_worst_of_two_tests_decides(tmp_path: Path) -> None:
    records = run_records(calls={"whatsapp": CallTest()})
    throttled = run_records(calls={"whatsapp": CallTest(call=FlowFate(rate=0.5), profile="video")})
    run_id = records[0].run_id
    for record in throttled:
        if record.check == "call_flow":
            record.run_id = run_id
            records.append(record)
    table = judge(tmp_path, records)
    _agrees_with_naive(tmp_path, table)
    r = row(table, "whatsapp")
    assert_verdict(r, "calls_throttled", "calls_flow_throttled", "udp", "rate_cap")
    assert r["callflow_tests"] == 2


def test_records_read_twice_count_once(tmp_path: Path) -> None:
    records = run_records(calls={"whatsapp": CallTest(call=FlowFate(cut_s=5.0))})
    table = judge(tmp_path, records, records)
    r = row(table, "whatsapp")
    assert_verdict(r, "calls_cut", "calls_flow_cut", "udp", "time_cutoff")
    assert r["callflow_tests"] == 1


def _call_server(target: Target) -> bool:
    return target.expect in CALL_EXPECTS and target.app == "whatsapp"


def test_flow_evidence_comes_before_the_relays(tmp_path: Path) -> None:
    silent = where(_call_server, Fate(relay=Failure.GENERIC_TIMEOUT))
    r = _judge(tmp_path, "whatsapp", CallTest(call=BLOCKED), silent)
    assert_verdict(r, "calls_blocked", "calls_flow_blocked_port", "udp", "port")


def test_open_flows_leave_silent_relays_to_the_relay_rules(tmp_path: Path) -> None:
    # Our reflector echoes call-shaped traffic, WhatsApp's relays stay silent: blocked by address.
    silent = where(_call_server, Fate(relay=Failure.GENERIC_TIMEOUT))
    r = _judge(tmp_path, "whatsapp", CallTest(), silent)
    assert_verdict(r, "calls_blocked", "calls_relays_silent", "udp", None)


def test_a_blocked_app_is_blocked_whatever_its_call_flows_do(tmp_path: Path) -> None:
    def fate(target: Target) -> Fate:
        return DROP if target.app == "whatsapp" and target.role == "signaling" else OK

    r = _judge(tmp_path, "whatsapp", CallTest(call=BLOCKED), fate)
    assert_verdict(r, "blocked", "blocked_tcp_ip_drop", "tcp", "ip_drop")


def test_the_control_row_has_no_call_flows(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records(calls={"whatsapp": CallTest(call=BLOCKED)}))
    _agrees_with_naive(tmp_path, table)
    control = row(table, "control")
    assert_verdict(control, "ok", "control_ok")
    assert control["callflow_tests"] == 0
    assert_verdict(row(table, "telegram"), "ok", "ok")


def test_damaged_flow_details_are_judged_alike_by_both_implementations(tmp_path: Path) -> None:
    records = run_records(calls={"whatsapp": CallTest(call=FlowFate(rate=0.5))})
    for record in records:
        if record.check == "call_flow" and record.details["flow"] == "call":
            record.details["bins"][3] = {"sent": "four", "echoed": None}
            record.details["last_echo_s"] = None
        if record.check == "call_flow" and record.details["flow"] == "call_neutral_port":
            record.details["bins"] = "garbage"
    table = judge(tmp_path, records)
    _agrees_with_naive(tmp_path, table)
    assert_verdict(
        row(table, "whatsapp"), "calls_throttled", "calls_flow_throttled", "udp", "rate_cap"
    )
