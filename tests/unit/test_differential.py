"""analysis.differential: the spread of call-flow vs control-flow figures per group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.differential import DIFFERENTIAL_COLUMNS, FIGURES, QUANTILES, differential
from tests.recordsets import CallTest, FlowFate, run_records
from tests.unit.test_verdicts import judge

NA = np.nan


def _table(rows: list[dict[str, object]]) -> pd.DataFrame:
    """A verdict table with only the columns differential reads; unset figures are NA."""
    defaults: dict[str, object] = {
        "app": "whatsapp",
        "probe_asn": "AS1",
        "callflow_tests": 1,
        "call_delivery": NA,
        "control_delivery": NA,
        "call_rate_bps": NA,
        "control_rate_bps": NA,
        "call_area": NA,
        "call_p": NA,
        "call_cut_s": NA,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows], columns=list(defaults))
    return frame.astype({"callflow_tests": "int64"})


def test_rates_of_a_policed_call_beside_its_control(tmp_path: Path) -> None:
    # Real verdicts: a call at half rate against an open control, the figures from the bins.
    table = judge(tmp_path, run_records(calls={"whatsapp": CallTest(call=FlowFate(rate=0.5))}))
    out = differential(table, by=["app"]).set_index("app").loc["whatsapp"]
    assert out["call_rate_bps_median"] == pytest.approx(out["control_rate_bps_median"] / 2, rel=0.1)
    assert out["control_rate_bps_median"] > 10_000  # voice: ~130 bytes per 60 ms, ~17 kbit/s


def test_quantiles_of_call_and_control_delivery() -> None:
    calls = np.linspace(0.1, 1.0, 10)  # 0.1, 0.2, ..., 1.0
    rows: list[dict[str, object]] = [
        {"call_delivery": c, "control_delivery": 1.0, "call_area": 0.95 - c, "call_p": 0.001}
        for c in calls
    ]
    rows.append({"callflow_tests": 0, "call_delivery": 0.0})  # no call test: not counted
    out = differential(_table(rows))
    assert list(out.columns) == ["app", "asn", *DIFFERENTIAL_COLUMNS]
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["runs"], row["tests"], row["runs_cut"]) == (10, 10, 0)
    for label, q in QUANTILES.items():
        assert row[f"call_delivery_{label}"] == pytest.approx(np.quantile(calls, q))
        assert row[f"call_loss_{label}"] == pytest.approx(np.quantile(1 - calls, q))
        assert row[f"delivery_gap_{label}"] == pytest.approx(np.quantile(1 - calls, q))
        assert row[f"control_delivery_{label}"] == pytest.approx(1.0)
        assert row[f"control_loss_{label}"] == pytest.approx(0.0)
    assert row["call_delivery_median"] == pytest.approx(0.55)
    assert row["call_delivery_p10"] == pytest.approx(0.19)  # linear between 0.1 and 0.2
    # Area >= 0.3 (AREA_THRESHOLD) with p < 0.01: the rows with call delivery 0.1 to 0.6.
    assert row["runs_differentiated"] == 6
    assert np.isnan(row["call_cut_s_median"])  # no run was cut


def test_the_gap_is_per_run_not_a_difference_of_quantiles() -> None:
    # Three runs lose alike on networks of very different quality, one run's call flow loses
    # more: the per-run gap's median is 0, while the medians of the two flows differ by 0.3.
    rows: list[dict[str, object]] = [
        {"call_delivery": d, "control_delivery": d} for d in (0.2, 0.5, 0.99)
    ]
    rows += [{"call_delivery": 0.3, "control_delivery": 0.9}]
    out = differential(_table(rows)).iloc[0]
    assert out["delivery_gap_median"] == pytest.approx(0.0)
    assert out["control_delivery_median"] - out["call_delivery_median"] == pytest.approx(0.3)
    assert out["delivery_gap_p90"] == pytest.approx(0.6 * 0.7)  # linear: 0.7 of the way to 0.6


def test_cut_times_are_over_the_cut_runs_only() -> None:
    rows: list[dict[str, object]] = [{"call_delivery": 0.9, "control_delivery": 1.0}] * 5
    rows += [{"call_delivery": 0.3, "control_delivery": 1.0, "call_cut_s": s} for s in (4, 6, 8)]
    out = differential(_table(rows)).iloc[0]
    assert (out["runs"], out["runs_cut"]) == (8, 3)
    assert out["call_cut_s_median"] == pytest.approx(6.0)
    assert out["call_cut_s_p10"] == pytest.approx(4.4)
    assert out["call_cut_s_p90"] == pytest.approx(7.6)


def test_groups_are_separate_and_sorted() -> None:
    rows: list[dict[str, object]] = [
        {"app": "whatsapp", "probe_asn": "AS2", "call_delivery": 0.2, "control_delivery": 1.0},
        {"app": "telegram", "probe_asn": "AS1", "call_delivery": 1.0, "control_delivery": 1.0},
        {"app": "whatsapp", "probe_asn": "AS1", "call_delivery": 0.9, "control_delivery": 0.9},
        {"app": "whatsapp", "probe_asn": "AS1", "callflow_tests": 2, "call_delivery": 0.7},
        {"app": "signal", "probe_asn": "AS1", "callflow_tests": 0},
    ]
    out = differential(_table(rows))
    assert list(zip(out["app"], out["asn"], strict=True)) == [
        ("telegram", "AS1"),
        ("whatsapp", "AS1"),
        ("whatsapp", "AS2"),
    ]  # signal had no call test: no row
    wa1 = out.iloc[1]
    assert (wa1["runs"], wa1["tests"]) == (2, 3)
    assert wa1["call_delivery_median"] == pytest.approx(0.8)
    assert wa1["control_delivery_median"] == pytest.approx(0.9)  # the NA control left out
    assert wa1["delivery_gap_median"] == pytest.approx(0.0)  # only the run with both
    pooled = differential(_table(rows), by=["app"])
    assert list(pooled["runs"]) == [1, 3]
    everything = differential(_table(rows), by=[])
    assert list(everything.columns) == list(DIFFERENTIAL_COLUMNS)
    assert everything["runs"].iloc[0] == 4


def test_nullable_columns_are_read_as_floats() -> None:
    table = _table([{"call_delivery": 0.5, "control_delivery": 1.0, "call_area": 0.5}])
    table = table.astype({"call_area": "Float64", "call_p": "Float64"})  # call_p is <NA>
    out = differential(table).iloc[0]
    assert out["runs_differentiated"] == 0
    assert out["call_area_median"] == pytest.approx(0.5)


def test_no_call_tests_and_empty_tables() -> None:
    for table in (_table([]), _table([{"callflow_tests": 0, "call_delivery": 1.0}])):
        out = differential(table)
        assert out.empty
        assert list(out.columns) == ["app", "asn", *DIFFERENTIAL_COLUMNS]


def test_every_figure_is_documented() -> None:
    documented = {f"{figure}_{label}" for figure in FIGURES for label in QUANTILES}
    assert documented <= set(DIFFERENTIAL_COLUMNS)
    assert all(meaning for meaning in DIFFERENTIAL_COLUMNS.values())
