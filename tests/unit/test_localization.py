"""Where interference happens: trace records, end to end (Record, JSONL, load, verdicts).

Trace records are written the way probe.checks.trace writes them (a trigger record and its
control's, one transaction); the verdicts must not change with them, only gain the hop range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.columns import COLUMNS
from analysis.features import TRACE_COLUMNS
from analysis.load import load
from analysis.parquet import load_parquet, to_parquet
from analysis.rules import trace_clause
from analysis.verdicts import FEATURE_COLUMNS, VERDICT_COLUMNS, verdicts
from bench.naive_verdicts import naive_verdicts
from probe.model import Failure, Record, TargetRef, new_id
from tests.recordcheck import assert_valid
from tests.recordsets import CATALOG, RST, Fate, by_app, real_address, run_records, write_runs

ROUTERS = ("198.51.100.1", "198.51.100.5", "198.51.100.9", "198.51.100.13", "198.51.100.17")
TRANSPORTS = {"tls": "tcp", "whatsapp": "tcp", "stun": "udp", "call": "udp"}
TRACE_FIELDS = [
    "trace_trigger",
    "trace_control",
    "trace_interference",
    "trace_localized_hop",
    "trace_localized_address",
]


def _te(ttl: int) -> dict[str, Any]:
    return {
        "ttl": ttl,
        "outcome": "time_exceeded",
        "hop": ROUTERS[ttl - 1],
        "rtt": 0.01 * ttl,
        "packets": 1,
        "interference": None,
    }


def _details(trigger: str, control: bool, at: int | None, mechanism: str) -> dict[str, Any]:
    """A trace's details (probe.checks.trace._describe): met ``mechanism`` after hop ``at``
    (None: reached the destination at TTL 4)."""
    if at is None:
        hops = [_te(ttl) for ttl in range(1, 4)]
        hops.append({**_te(4), "outcome": "answered", "hop": None})
        found: dict[str, Any] = {
            "first_interfering_ttl": None,
            "interference": None,
            "localized_hop": None,
            "localized_address": None,
        }
    else:
        outcome = {"rst": "reset", "drop": "silent"}[mechanism]
        stop = {"ttl": at + 1, "outcome": outcome, "hop": None, "rtt": None, "packets": 1}
        hops = [*(_te(ttl) for ttl in range(1, at + 1)), {**stop, "interference": mechanism}]
        found = {
            "first_interfering_ttl": at + 1,
            "interference": mechanism,
            "localized_hop": at,
            "localized_address": ROUTERS[at - 1] if at else None,
        }
    details: dict[str, Any] = {
        "trigger": trigger,
        "control": control,
        "transport": TRANSPORTS[trigger],
        "payload_bytes": 517,
        "max_ttl": 30,
        "wait": 2.0,
        "hops": hops,
        **found,
        "reached": at is None,
        "destination_ttl": 4 if at is None else None,
        "ttls_traced": len(hops),
        "packets_sent": len(hops),
    }
    if trigger == "tls":
        details["sni"] = "example.org" if control else "chat.signal.org"
    return details


def trace(
    run: list[Record],
    target_id: str,
    trigger: str,
    *,
    at: int | None,
    mechanism: str = "rst",
    control_at: int | None = None,
    failure: str | None = None,
) -> list[Record]:
    """The two records of one trace in ``run`` (its run id and probe): the trigger's, localized
    after hop ``at`` (None: not localized), and its control's (``control_at``). As probe.runner
    writes them: under the transaction id of the endpoint's own checks."""
    target = next(t for t in CATALOG if t.id == target_id)
    address = target.address or real_address(str(target.host))
    first = run[0]
    tx = next(r.transaction_id for r in run if r.target.id == target_id)
    out = []
    for control, hop in ((True, control_at), (False, at)):
        details = _details(trigger, control, hop, mechanism)
        if failure is not None:
            details["error"] = f"simulated {failure}"
        record = Record(
            measurement_id=new_id(),
            run_id=first.run_id,
            start_time=first.start_time,
            runtime=1.5,
            t0=100.0 + len(out),
            probe=first.probe,
            app=target.app,
            target=TargetRef.of(target, address),
            check="trace",
            transaction_id=tx,
            failure=failure,
            timings={},
            details=details,
            software_version="0.1.0",
        )
        assert_valid(record)
        out.append(record)
    return out


def judge(directory: Path, *runs: list[Record]) -> pd.DataFrame:
    return verdicts(load(write_runs(directory, *runs)))


def row(table: pd.DataFrame, app: str) -> pd.Series:
    rows = table[table["app"] == app]
    assert len(rows) == 1
    return rows.iloc[0]


def decided(table: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """What the rules gave, row by row (layer/mechanism NA as '')."""
    cols = table[["app", "verdict", "rule", "layer", "mechanism"]].astype(object)
    return [tuple("" if pd.isna(v) else str(v) for v in r) for r in cols.itertuples(index=False)]


SIGNAL_TLS_RST = by_app({"signal": Fate(tls_real=Failure.CONNECTION_RESET)})


# --- load ----------------------------------------------------------------------------------------


def test_load_lifts_the_trace_figures_and_leaves_them_na_elsewhere(tmp_path: Path) -> None:
    run = run_records(apps=["signal", "control"])
    traced = trace(run, "sig-chat-443", "tls", at=2)
    frame = load(write_runs(tmp_path, run + traced))
    for name in TRACE_FIELDS:
        assert str(frame[name].dtype) == COLUMNS[name][0]
    rows = frame[frame["check"] == "trace"].sort_values("trace_control")
    assert rows["trace_trigger"].tolist() == ["tls", "tls"]
    assert rows["trace_control"].tolist() == [False, True]
    trigger, control = rows.iloc[0], rows.iloc[1]
    assert trigger["trace_interference"] == "rst"
    assert trigger["trace_localized_hop"] == 2.0
    assert trigger["trace_localized_address"] == ROUTERS[1]
    assert pd.isna(control["trace_interference"])
    assert np.isnan(control["trace_localized_hop"])
    assert pd.isna(control["trace_localized_address"])
    others = frame[frame["check"] != "trace"]
    assert others[TRACE_FIELDS].isna().all().all()


def test_the_trace_columns_survive_a_parquet_round_trip(tmp_path: Path) -> None:
    run = run_records(apps=["signal"])
    frame = load(write_runs(tmp_path / "jsonl", run + trace(run, "sig-chat-443", "tls", at=0)))
    to_parquet(frame, tmp_path / "parquet")
    back = load_parquet(tmp_path / "parquet")
    key = "measurement_id"
    left = frame.sort_values(key, ignore_index=True)[[key, *TRACE_FIELDS]]
    right = back.sort_values(key, ignore_index=True)[[key, *TRACE_FIELDS]]
    pd.testing.assert_frame_equal(left, right)
    hop = right.loc[right["trace_control"].eq(False).fillna(False), "trace_localized_hop"]
    assert hop.tolist() == [0.0]  # before the first router: 0, not NA


# --- features and evidence -----------------------------------------------------------------------


def test_columns_are_in_the_contracts() -> None:
    for name, (dtype, meaning) in TRACE_COLUMNS.items():
        assert meaning
        assert name in FEATURE_COLUMNS
        assert VERDICT_COLUMNS[name] == dtype


def test_a_localized_trace_gives_the_hop_and_the_sentence_the_place(tmp_path: Path) -> None:
    run = run_records(SIGNAL_TLS_RST)
    without = judge(tmp_path / "without", run)
    table = judge(tmp_path / "with", run + trace(run, "sig-chat-443", "tls", at=2))
    assert decided(table) == decided(without)
    # Every figure but the trace ones is the same with the trace as without.
    figures = [n for n in VERDICT_COLUMNS if n not in TRACE_COLUMNS and n != "evidence"]
    pd.testing.assert_frame_equal(table[figures], without[figures])
    sig = row(table, "signal")
    assert (sig["verdict"], sig["rule"]) == ("blocked", "blocked_tls_rst")
    assert sig["traces"] == 1
    assert sig["trace_hops"] == "tls:2"
    assert sig["trace_addresses"] == f"2:{ROUTERS[1]}"
    assert (sig["trace_hop_min"], sig["trace_hop_max"]) == (2.0, 2.0)
    assert not sig["trace_split"]
    clause = f"; interference localized after hop 2 ({ROUTERS[1]}) by the tls trace"
    assert sig["evidence"] == row(without, "signal")["evidence"] + clause
    # The other apps have no trace: their figures are empty and their sentences unchanged.
    wa = row(table, "whatsapp")
    assert (wa["traces"], pd.isna(wa["trace_hops"]), wa["trace_split"]) == (0, True, False)
    assert np.isnan(wa["trace_hop_min"])
    assert wa["evidence"] == row(without, "whatsapp")["evidence"]


def test_triggers_at_different_hops_are_a_split(tmp_path: Path) -> None:
    run = run_records(by_app({"whatsapp": RST}))
    traces = [
        *trace(run, "wa-e1-443", "tls", at=2),
        *trace(run, "wa-relay1-3478", "stun", at=3, mechanism="drop"),
    ]
    without = judge(tmp_path / "without", run)
    table = judge(tmp_path / "with", run + traces)
    assert decided(table) == decided(without)
    wa = row(table, "whatsapp")
    assert (wa["verdict"], wa["rule"]) == ("blocked", "blocked_tcp_rst")
    assert wa["traces"] == 2
    assert wa["trace_hops"] == "stun:3 tls:2"
    assert wa["trace_addresses"] == f"2:{ROUTERS[1]} 3:{ROUTERS[2]}"
    assert (wa["trace_hop_min"], wa["trace_hop_max"]) == (2.0, 3.0)
    assert wa["trace_split"]
    assert wa["evidence"].endswith(
        f"; interference localized between hops 2 and 3: after hop 2 ({ROUTERS[1]}) by the tls "
        f"trace, after hop 3 ({ROUTERS[2]}) by the stun trace"
    )


def test_triggers_at_the_same_hop_are_not_a_split(tmp_path: Path) -> None:
    run = run_records(by_app({"whatsapp": RST}))
    traces = [
        # Two triggers to one endpoint: one transaction, told apart by trigger.
        *trace(run, "wa-e1-443", "tls", at=2),
        *trace(run, "wa-e1-443", "whatsapp", at=2),
        # A second tls trace, to another endpoint, still shares hop 2 with the whatsapp one.
        *trace(run, "wa-e2-443", "tls", at=3),
    ]
    wa = row(judge(tmp_path, run + traces), "whatsapp")
    assert wa["traces"] == 3
    assert wa["trace_hops"] == "tls:2 tls:3 whatsapp:2"
    assert (wa["trace_hop_min"], wa["trace_hop_max"]) == (2.0, 3.0)
    assert not wa["trace_split"]
    assert f"after hop 2 ({ROUTERS[1]}) by the tls and whatsapp traces" in wa["evidence"]


def test_a_localized_control_makes_the_trace_no_evidence(tmp_path: Path) -> None:
    run = run_records(SIGNAL_TLS_RST)
    without = judge(tmp_path / "without", run)
    table = judge(tmp_path / "with", run + trace(run, "sig-chat-443", "tls", at=2, control_at=1))
    assert decided(table) == decided(without)
    sig = row(table, "signal")
    assert sig["traces"] == 0
    assert pd.isna(sig["trace_hops"])
    assert np.isnan(sig["trace_hop_min"])
    assert sig["evidence"] == row(without, "signal")["evidence"]


@pytest.mark.parametrize(
    "failure", [Failure.RAW_SOCKET_NOT_PERMITTED, Failure.INTERRUPTED, Failure.CONNECTION_REFUSED]
)
def test_a_failed_trace_is_no_evidence(tmp_path: Path, failure: str) -> None:
    run = run_records(SIGNAL_TLS_RST)
    traced = trace(run, "sig-chat-443", "tls", at=None, failure=failure)
    sig = row(judge(tmp_path, run + traced), "signal")
    assert (sig["verdict"], sig["traces"]) == ("blocked", 0)
    assert "localized" not in sig["evidence"]


def test_a_trace_that_met_nothing_says_so(tmp_path: Path) -> None:
    run = run_records(SIGNAL_TLS_RST)
    sig = row(judge(tmp_path, run + trace(run, "sig-chat-443", "tls", at=None)), "signal")
    assert (sig["traces"], pd.isna(sig["trace_hops"]), sig["trace_split"]) == (1, True, False)
    assert sig["evidence"].endswith("; 1 trace of the path localized no interference")


def test_an_ok_verdict_keeps_its_sentence_but_shows_the_trace(tmp_path: Path) -> None:
    run = run_records(apps=["signal", "control"])
    without = judge(tmp_path / "without", run)
    table = judge(tmp_path / "with", run + trace(run, "sig-chat-443", "tls", at=2))
    assert decided(table) == decided(without)
    sig = row(table, "signal")
    assert (sig["verdict"], sig["trace_hops"]) == ("ok", "tls:2")
    assert sig["evidence"] == row(without, "signal")["evidence"]


def test_the_naive_reference_agrees_with_traces_present(tmp_path: Path) -> None:
    run = run_records(by_app({"whatsapp": RST}))
    traces = [
        *trace(run, "wa-e1-443", "tls", at=2),
        *trace(run, "wa-relay1-3478", "stun", at=3, mechanism="drop"),
    ]
    directory = write_runs(tmp_path, run + traces)
    table = verdicts(load(directory))
    vectorised = {
        (str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule))
        for r in table[["run_id", "app", "verdict", "rule"]].itertuples()
    }
    assert naive_verdicts(sorted(directory.glob("*.jsonl"))) == vectorised


@pytest.mark.parametrize(
    ("traces", "hops", "addresses", "expected"),
    [
        (0, None, None, ""),
        (2, None, None, "; 2 traces of the path localized no interference"),
        (1, "call:0", None, "; interference localized before the first router by the call trace"),
        (1, "tls:4", None, "; interference localized after hop 4 by the tls trace"),
        (
            2,
            "stun:0 tls:3",
            "3:192.0.2.1",
            "; interference localized between hops 0 and 3: before the first router by the "
            "stun trace, after hop 3 (192.0.2.1) by the tls trace",
        ),
        (
            3,
            "call:2 stun:2 tls:2",
            "2:192.0.2.1 2:192.0.2.2",
            "; interference localized after hop 2 (192.0.2.1, 192.0.2.2) by the call, stun "
            "and tls traces",
        ),
    ],
)
def test_trace_clause(traces: int, hops: str | None, addresses: str | None, expected: str) -> None:
    assert trace_clause(traces, hops, addresses) == expected
