"""Call-path verdicts from the known-answer relay checks, end to end over hand-built runs of the
real catalog (Record, JSONL, load, verdicts), each also checked against the naive reference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.verdicts import target_status
from bench.naive_verdicts import naive_verdicts
from probe.model import Failure, Target
from tests.recordsets import DROP, OK, Fate, catalog, run_records, where, write_runs
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
