"""Verdicts from the app handshakes (mtproto, whatsapp_chat) and from HTTP/3 (quic), end to end
over hand-built runs of the real catalog: Record, JSONL, load, verdicts, and the same runs through
the naive reference implementation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.verdicts import target_status
from bench.naive_verdicts import naive_verdicts
from probe.model import Failure, Target
from tests.recordsets import DROP, OK, Fate, catalog, run_records, where, write_runs
from tests.unit.test_verdicts import (
    TELEGRAM_SIGNALING,
    WHATSAPP_SIGNALING,
    assert_verdict,
    judge,
    row,
)

WA_CHAT = 32  # e1..e16 on 443 and 5222: the endpoints that answer the WA prologue
NO_ANSWER = Fate(handshake=Failure.GENERIC_TIMEOUT)
QUIC_DROPPED = Fate(quic=Failure.GENERIC_TIMEOUT)


def _agrees_with_naive(tmp_path: Path, table: pd.DataFrame) -> None:
    ours = {(str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule)) for r in table.itertuples()}
    assert ours == naive_verdicts(sorted((tmp_path / "runs").glob("*.jsonl")))


def _app(app: str) -> object:
    return lambda t: t.app == app


def _http3(target: Target) -> bool:
    return target.expect == "http3"


def test_the_catalog_plans_the_handshakes_this_file_relies_on() -> None:
    assert sum(t.expect == "mtproto" for t in catalog("telegram")) == TELEGRAM_SIGNALING
    assert sum(t.expect == "whatsapp" for t in catalog("whatsapp")) == WA_CHAT
    assert {t.app for t in catalog() if _http3(t)} == {"whatsapp", "telegram", "control"}


def test_connects_without_the_mtproto_answer_block_telegram_as_handshake_drop(
    tmp_path: Path,
) -> None:
    table = judge(tmp_path, run_records(where(lambda t: t.app == "telegram", NO_ANSWER)))
    tg = row(table, "telegram")
    assert_verdict(tg, "blocked", "blocked_tcp_handshake_drop", "tcp", "handshake_drop")
    assert (tg["targets"], tg["targets_failed"]) == (TELEGRAM_SIGNALING, TELEGRAM_SIGNALING)
    assert "TCP connected but the app's handshake" in tg["evidence"]
    for app in ("whatsapp", "signal"):
        assert_verdict(row(table, app), "ok", "ok")
    _agrees_with_naive(tmp_path, table)


def test_a_server_that_hangs_up_before_answering_is_a_handshake_drop_too(tmp_path: Path) -> None:
    eof = Fate(handshake=Failure.EOF)
    table = judge(tmp_path, run_records(where(lambda t: t.app == "telegram", eof)))
    assert_verdict(
        row(table, "telegram"), "blocked", "blocked_tcp_handshake_drop", "tcp", "handshake_drop"
    )


def test_reset_prologues_block_whatsapp_as_rst(tmp_path: Path) -> None:
    reset = Fate(handshake=Failure.CONNECTION_RESET)
    table = judge(tmp_path, run_records(where(lambda t: t.app == "whatsapp", reset)))
    wa = row(table, "whatsapp")
    # g.whatsapp.net (2 endpoints) is a TCP connect only and still works: 32 of 34 failed.
    assert_verdict(wa, "blocked", "blocked_tcp_rst", "tcp", "rst")
    assert (wa["targets"], wa["targets_failed"]) == (WHATSAPP_SIGNALING, WA_CHAT)
    assert wa["dominant_failure"] == "handshake_rst"
    _agrees_with_naive(tmp_path, table)


def test_an_answer_the_protocol_forbids_is_a_block_without_a_mechanism(tmp_path: Path) -> None:
    garbage = Fate(handshake=Failure.MTPROTO_BAD_FRAMING)
    table = judge(tmp_path, run_records(where(lambda t: t.app == "telegram", garbage)))
    tg = row(table, "telegram")
    assert_verdict(tg, "blocked", "blocked_tcp_other", "tcp", None)
    assert tg["dominant_failure"] == "handshake_other"


def test_an_address_drop_stays_an_ip_drop_and_plans_no_handshake(tmp_path: Path) -> None:
    records = run_records(where(lambda t: t.app == "telegram", DROP))
    assert not [r for r in records if r.check == "mtproto"]
    table = judge(tmp_path, records)
    assert_verdict(row(table, "telegram"), "blocked", "blocked_tcp_ip_drop", "tcp", "ip_drop")


def test_a_handshake_cut_by_the_deadline_is_not_evidence(tmp_path: Path) -> None:
    cut = Fate(handshake=Failure.INTERRUPTED)
    table = judge(tmp_path, run_records(where(lambda t: t.app == "telegram", cut)))
    tg = row(table, "telegram")
    assert_verdict(tg, "inconclusive", "interrupted")
    assert tg["targets_interrupted"] == TELEGRAM_SIGNALING
    _agrees_with_naive(tmp_path, table)


def test_a_few_silent_data_centers_are_noise(tmp_path: Path) -> None:
    silent = {"tg-dc1-443", "tg-dc1-80"}
    table = judge(tmp_path, run_records(where(lambda t: t.id in silent, NO_ANSWER)))
    tg = row(table, "telegram")
    assert_verdict(tg, "ok", "ok")
    assert tg["targets_failed"] == len(silent)


def test_handshakes_silent_from_the_baseline_too_are_not_evidence(tmp_path: Path) -> None:
    silent = where(lambda t: t.app == "telegram", NO_ANSWER)
    table = judge(tmp_path, run_records(silent), baseline=[run_records(silent, vantage="baseline")])
    tg = table[(table["app"] == "telegram") & (table["vantage"] != "baseline")].iloc[0]
    assert_verdict(tg, "inconclusive", "no_evidence")
    assert tg["excluded_by_baseline"] == TELEGRAM_SIGNALING


def test_http3_failing_everywhere_is_a_detail_of_ok(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records(where(_http3, QUIC_DROPPED)))
    for app in ("whatsapp", "telegram"):
        r = row(table, app)
        assert_verdict(r, "ok", "ok_http3_failed", "quic", None)
        assert (r["quic_targets"], r["quic_failed"]) == (1, 1)
        assert "HTTP/3 failed on 1 of 1 endpoints while TCP worked" in r["evidence"]
    assert_verdict(row(table, "control"), "ok", "control_ok_http3_failed", "quic", None)
    # Signal has no HTTP/3 endpoint: nothing to report.
    signal = row(table, "signal")
    assert_verdict(signal, "ok", "ok")
    assert signal["quic_targets"] == 0
    _agrees_with_naive(tmp_path, table)


def test_http3_endpoints_never_count_towards_a_block(tmp_path: Path) -> None:
    # Only the HTTP/3 endpoints of WhatsApp fail, with the rest of the app fine: still ok.
    table = judge(tmp_path, run_records(where(lambda t: _http3(t) and t.app == "whatsapp", DROP)))
    wa = row(table, "whatsapp")
    assert wa["targets"] == WHATSAPP_SIGNALING  # the HTTP/3 endpoint is not among them
    assert wa["targets_failed"] == 0


def test_a_blocked_app_stays_blocked_whatever_http3_does(tmp_path: Path) -> None:
    def fate(t: Target) -> Fate:
        if t.app != "telegram":
            return OK
        return QUIC_DROPPED if _http3(t) else NO_ANSWER

    table = judge(tmp_path, run_records(fate))
    tg = row(table, "telegram")
    assert_verdict(tg, "blocked", "blocked_tcp_handshake_drop", "tcp", "handshake_drop")
    assert tg["quic_failed"] == 1
    _agrees_with_naive(tmp_path, table)


def test_http3_working_reports_nothing(tmp_path: Path) -> None:
    table = judge(tmp_path, run_records())
    for app in ("whatsapp", "telegram", "signal"):
        assert_verdict(row(table, app), "ok", "ok")
    assert_verdict(row(table, "control"), "ok", "control_ok")
    assert row(table, "whatsapp")["quic_targets"] == 1


@pytest.mark.parametrize(
    ("fate", "status", "failure_class"),
    [
        (Fate(handshake=Failure.GENERIC_TIMEOUT), "failed", "handshake_drop"),
        (Fate(handshake=Failure.CONNECTION_RESET), "failed", "handshake_rst"),
        (Fate(handshake=Failure.WHATSAPP_BAD_RESPONSE), "failed", "handshake_other"),
        (Fate(handshake=Failure.ADDRESS_NOT_ALLOWED), "not_allowed", None),
        (Fate(handshake=Failure.INTERRUPTED), "interrupted", None),
        (Fate(), "ok", None),
    ],
)
def test_target_status_of_a_whatsapp_chat_server(
    tmp_path: Path, fate: Fate, status: str, failure_class: str | None
) -> None:
    write_runs(tmp_path, run_records({"wa-e1-443": fate}, apps=("whatsapp",)))
    table = target_status(load(tmp_path))
    e1 = table[table["target_id"] == "wa-e1-443"].iloc[0]
    got = None if pd.isna(e1["failure_class"]) else e1["failure_class"]
    assert (e1["status"], got) == (status, failure_class)
