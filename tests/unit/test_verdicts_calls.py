"""Call-path verdicts from the known-answer relay checks, end to end over hand-built runs of the
real catalog (Record, JSONL, load, verdicts), each also checked against the naive reference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.callflow import FLOW_OK_DELIVERY
from analysis.load import load
from analysis.verdicts import target_status
from bench.naive_verdicts import naive_verdicts
from probe.model import Failure, Target
from tests.recordsets import (
    DROP,
    OK,
    CallTest,
    Fate,
    FlowFate,
    catalog,
    run_records,
    where,
    write_runs,
)
from tests.unit.test_verdicts import assert_verdict, judge, row

SILENT = Fate(relay=Failure.GENERIC_TIMEOUT)
CALL_EXPECTS = ("stun", "turn", "wa_relay", "reflector")


def _call(target: Target) -> bool:
    return target.expect in CALL_EXPECTS


def _calls_of(app: str) -> object:
    return lambda t: _call(t) and t.app == app


def _agrees_with_naive(tmp_path: Path, table: pd.DataFrame) -> None:
    ours = {(str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule)) for r in table.itertuples()}
    assert ours == naive_verdicts(sorted((tmp_path / "runs").glob("*.jsonl")))


def _relays(app: str) -> int:
    return sum(_call(t) for t in catalog(app))


def test_the_catalog_has_the_call_servers_this_file_relies_on() -> None:
    assert _relays("whatsapp") >= 2
    assert _relays("telegram") >= 2
    assert _relays("control") >= 1  # the neutral STUN server
    assert _relays("signal") == 0


def test_every_call_server_answering_is_ok(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records())
    for app in ("whatsapp", "telegram"):
        r = row(table, app)
        assert_verdict(r, "ok", "ok")
        assert (r["relays"], r["relays_failed"]) == (_relays(app), 0)
        assert (r["udp_controls"], r["udp_controls_failed"]) == (_relays("control"), 0)


@pytest.mark.parametrize("app", ["whatsapp", "telegram"])
def test_silent_call_servers_with_working_signaling_are_calls_blocked(
    tmp_path: Path, app: str
) -> None:
    table = judge(tmp_path, run_records(where(_calls_of(app), SILENT)))
    r = row(table, app)
    assert_verdict(r, "calls_blocked", "calls_relays_silent", "udp", None)
    assert (r["relays"], r["relays_failed"]) == (_relays(app), _relays(app))
    assert r["targets_failed"] == 0
    assert "call servers gave no known answer" in r["evidence"]
    assert "neutral STUN servers answered" in r["evidence"]
    other = "telegram" if app == "whatsapp" else "whatsapp"
    assert_verdict(row(table, other), "ok", "ok")
    assert_verdict(row(table, "control"), "ok", "control_ok")
    _agrees_with_naive(tmp_path, table)


def test_udp_failing_for_the_stun_control_too_is_the_network(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records(where(_call, SILENT)))
    for app in ("whatsapp", "telegram"):
        assert_verdict(row(table, app), "network_degraded", "calls_network_degraded", "udp", None)
    assert_verdict(row(table, "control"), "network_degraded", "control_udp_failed", "udp", None)
    assert_verdict(row(table, "signal"), "ok", "ok")  # no call servers in the catalog
    _agrees_with_naive(tmp_path, table)


def test_without_a_stun_control_silent_relays_are_inconclusive(tmp_path: Path) -> None:
    fates = where(_calls_of("telegram"), SILENT)
    records = [
        r for r in run_records(fates) if not (r.app == "control" and r.target.expect == "stun")
    ]
    table = judge(tmp_path, records)
    r = row(table, "telegram")
    assert_verdict(r, "inconclusive", "calls_no_udp_controls")
    assert r["udp_controls"] == 0


def test_a_few_silent_call_servers_are_neither_noise_nor_a_block(tmp_path: Path) -> None:
    telegram = [t for t in catalog("telegram") if _call(t)]
    half = {t.id for t in telegram[: len(telegram) // 2]}
    table = judge(tmp_path, run_records(where(lambda t: t.id in half, SILENT)))
    assert_verdict(row(table, "telegram"), "inconclusive", "calls_relays_partial")
    _agrees_with_naive(tmp_path, table)


def test_one_silent_call_server_is_noise(tmp_path: Path) -> None:
    first = next(t for t in catalog("telegram") if _call(t))
    table = judge(tmp_path, run_records({first.id: SILENT}))
    r = row(table, "telegram")
    assert_verdict(r, "ok", "ok")
    assert r["relays_failed"] == 1


def test_a_blocked_app_is_blocked_whatever_its_calls_do(tmp_path: Path) -> None:
    def fate(t: Target) -> Fate:
        if t.app != "telegram":
            return OK
        return SILENT if _call(t) else DROP

    table = judge(tmp_path, run_records(fate))
    assert_verdict(row(table, "telegram"), "blocked", "blocked_tcp_ip_drop", "tcp", "ip_drop")
    _agrees_with_naive(tmp_path, table)


def test_call_servers_silent_from_the_baseline_too_are_not_evidence(tmp_path: Path) -> None:
    silent = where(_calls_of("whatsapp"), SILENT)
    table = judge(tmp_path, run_records(silent), baseline=[run_records(silent, vantage="baseline")])
    wa = table[(table["app"] == "whatsapp") & (table["vantage"] != "baseline")].iloc[0]
    assert_verdict(wa, "ok", "ok")
    assert (wa["relays"], wa["relays_failed"]) == (0, 0)


@pytest.mark.parametrize(
    ("fate", "status", "failure_class"),
    [
        (Fate(relay=Failure.GENERIC_TIMEOUT), "failed", "relay_silent"),
        (Fate(relay=Failure.CONNECTION_REFUSED), "failed", "relay_refused"),
        (Fate(relay=Failure.STUN_BAD_RESPONSE), "failed", "relay_other"),
        (Fate(relay=Failure.ADDRESS_NOT_ALLOWED), "not_allowed", None),
        (Fate(relay=Failure.INTERRUPTED), "interrupted", None),
        (Fate(), "ok", None),
    ],
)
def test_target_status_of_a_call_server(
    tmp_path: Path, fate: Fate, status: str, failure_class: str | None
) -> None:
    turn = next(t for t in catalog("telegram") if t.expect == "turn")
    write_runs(tmp_path, run_records({turn.id: fate}, apps=("telegram",)))
    table = target_status(load(tmp_path))
    got = table[table["target_id"] == turn.id].iloc[0]
    cls = None if pd.isna(got["failure_class"]) else got["failure_class"]
    assert (got["status"], cls) == (status, failure_class)


# --- per role, and with a call test to weigh ------------------------------------------------------


def _role(app: str, role: str) -> object:
    return lambda t: _call(t) and t.app == app and t.role == role


def _roles(app: str) -> set[str]:
    return {t.role for t in catalog(app) if _call(t)}


def test_telegram_has_two_call_server_roles() -> None:
    # The per-role tests below need Telegram's reflectors and TURN servers both in the catalog.
    assert _roles("telegram") == {"reflector", "turn"}
    assert _roles("whatsapp") == {"relay"}


def test_one_silent_role_while_another_answers_is_inconclusive(tmp_path: Path) -> None:
    # Telegram's reflectors dropped, its TURN servers answering: calls may still connect.
    table = judge(tmp_path, run_records(where(_role("telegram", "reflector"), SILENT)))
    r = row(table, "telegram")
    assert_verdict(r, "inconclusive", "calls_relays_role_silent")
    assert (r["relay_roles"], r["relay_roles_silent"], r["silent_roles"]) == (2, 1, "reflector")
    assert "silent roles: reflector" in r["evidence"]
    assert "--reflector" in r["evidence"]  # no call test: it says what would tell
    assert_verdict(row(table, "whatsapp"), "ok", "ok")
    _agrees_with_naive(tmp_path, table)


def test_every_role_silent_is_calls_blocked_whatever_the_share(tmp_path: Path) -> None:
    # One reflector spared: each role is still silent at >= BLOCK_SHARE of its servers. All
    # reflectors silent with every TURN server answering is not a block (the previous test).
    telegram = [t for t in catalog("telegram") if _call(t)]
    spared = {next(t.id for t in telegram if t.role == "reflector")}
    table = judge(
        tmp_path,
        run_records(
            where(lambda t: _call(t) and t.app == "telegram" and t.id not in spared, SILENT)
        ),
    )
    r = row(table, "telegram")
    assert_verdict(r, "calls_blocked", "calls_relays_silent", "udp", None)
    assert (r["relay_roles"], r["relay_roles_silent"]) == (2, 2)
    assert r["silent_roles"] == "reflector, turn"
    _agrees_with_naive(tmp_path, table)


def test_a_healthy_call_flow_outweighs_a_silent_role(tmp_path: Path) -> None:
    records = run_records(where(_role("telegram", "turn"), SILENT), calls={"telegram": CallTest()})
    table = judge(tmp_path, records)
    r = row(table, "telegram")
    assert_verdict(r, "ok", "calls_ok_flow_relays_partial", "udp", None)
    assert "call-shaped traffic gets through" in r["evidence"]
    assert "silent roles: turn" in r["evidence"]
    _agrees_with_naive(tmp_path, table)


def test_a_healthy_call_flow_does_not_outweigh_every_call_server_silent(tmp_path: Path) -> None:
    # The relays dropped by address: the ringprobe reflector's path says nothing about them.
    records = run_records(where(_calls_of("telegram"), SILENT), calls={"telegram": CallTest()})
    table = judge(tmp_path, records)
    assert_verdict(row(table, "telegram"), "calls_blocked", "calls_relays_silent", "udp", None)
    _agrees_with_naive(tmp_path, table)


def test_a_lossy_call_flow_does_not_outweigh_a_silent_role(tmp_path: Path) -> None:
    lossy = FlowFate(loss=0.3)
    test = CallTest(call=lossy, control=lossy, neutral=lossy)
    records = run_records(where(_role("telegram", "turn"), SILENT), calls={"telegram": test})
    table = judge(tmp_path, records)
    r = row(table, "telegram")
    assert r["rule"] != "calls_ok_flow_relays_partial"
    assert r["control_delivery"] < FLOW_OK_DELIVERY
    _agrees_with_naive(tmp_path, table)


def _stun_based(t: Target) -> bool:
    # What a STUN magic-cookie filter silences: every call server probed with STUN framing
    # (WhatsApp's relays, Telegram's TURN, the neutral STUN server), not Telegram's reflectors.
    return _call(t) and t.expect in ("stun", "turn", "wa_relay")


def test_stun_filtered_while_random_udp_is_echoed_is_not_the_network(tmp_path: Path) -> None:
    opening_lost = FlowFate(drop_opening=True)
    calls = {
        "whatsapp": CallTest(call=opening_lost, neutral=opening_lost),
        "telegram": CallTest(),
    }
    table = judge(tmp_path, run_records(where(_stun_based, SILENT), calls=calls))
    control = row(table, "control")
    assert_verdict(control, "ok", "control_ok_stun_failed", "udp", None)
    assert control["run_control_delivery"] >= FLOW_OK_DELIVERY
    assert "UDP works" in control["evidence"]
    assert_verdict(
        row(table, "whatsapp"),
        "calls_blocked",
        "calls_flow_blocked_fingerprint",
        "udp",
        "stun_fingerprint",
    )
    assert_verdict(row(table, "telegram"), "ok", "calls_ok_flow_relays_partial", "udp", None)
    _agrees_with_naive(tmp_path, table)


def test_stun_filtered_with_the_relays_silent_is_calls_blocked(tmp_path: Path) -> None:
    # WhatsApp's relays and the STUN control silent, Telegram's call test echoed: UDP works, so
    # WhatsApp's silent relays are its calls blocked, not the network.
    table = judge(tmp_path, run_records(where(_stun_based, SILENT), calls={"telegram": CallTest()}))
    r = row(table, "whatsapp")
    assert_verdict(r, "calls_blocked", "calls_relays_silent", "udp", None)
    assert "random-bytes control flows were echoed" in r["evidence"]
    _agrees_with_naive(tmp_path, table)


def test_udp_gone_for_the_control_flows_too_is_the_network(tmp_path: Path) -> None:
    gone = FlowFate(cut_s=0.0)
    test = CallTest(call=gone, control=gone, neutral=gone)
    table = judge(tmp_path, run_records(where(_call, SILENT), calls={"whatsapp": test}))
    assert_verdict(row(table, "control"), "network_degraded", "control_udp_failed", "udp", None)
    for app in ("whatsapp", "telegram"):
        assert_verdict(row(table, app), "network_degraded", "calls_network_degraded", "udp", None)
    _agrees_with_naive(tmp_path, table)


def test_an_echoed_control_flow_stands_in_for_missing_stun_controls(tmp_path: Path) -> None:
    fates = where(_calls_of("whatsapp"), SILENT)
    records = [
        r
        for r in run_records(fates, calls={"telegram": CallTest()})
        if not (r.app == "control" and r.target.expect == "stun")
    ]
    table = judge(tmp_path, records)
    r = row(table, "whatsapp")
    assert r["udp_controls"] == 0
    assert_verdict(r, "calls_blocked", "calls_relays_silent", "udp", None)
    _agrees_with_naive(tmp_path, table)
