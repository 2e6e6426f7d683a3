"""analysis.aggregate: shares of verdicts per group, Wilson intervals, the minimum-runs rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analysis
from analysis.rules import VERDICTS
from analysis.shares import AGGREGATE_COLUMNS, NOT_ENOUGH, aggregate, wilson
from tests.recordsets import DROP, START, by_app, run_records
from tests.unit.test_verdicts import judge


def _table(verdicts: list[str], apps: list[str], days: list[int], asns: list[str]) -> pd.DataFrame:
    """A verdict table with only the columns aggregate reads."""
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(verdicts))],
            "app": apps,
            "verdict": verdicts,
            "probe_asn": asns,
            "probe_cc": ["RU"] * len(verdicts),
            "probe_network_type": ["wired"] * len(verdicts),
            "start_time": [START + pd.Timedelta(days=d, hours=5) for d in days],
        }
    )


def test_known_wilson_intervals() -> None:
    # 5 of 10 at 95% is 0.2366-0.7634; at 0 of n the upper end is z^2 / (n + z^2), at n of n the
    # lower end n / (n + z^2) (Wilson 1927; z = 1.95996).
    low, high = wilson(np.array([5, 0, 10]), np.array([10, 10, 10]))
    z2 = 1.959964**2
    assert low == pytest.approx([0.23659, 0.0, 10 / (10 + z2)], abs=1e-4)
    assert high == pytest.approx([0.76341, z2 / (10 + z2), 1.0], abs=1e-4)
    low, high = wilson(np.array([0]), np.array([0]))
    assert np.isnan(low[0])
    assert np.isnan(high[0])
    with pytest.raises(ValueError, match="confidence"):
        wilson(np.array([1]), np.array([2]), confidence=1.0)


def test_shares_per_app_and_day_from_real_verdicts(tmp_path: Path) -> None:
    # Telegram blocked in the first of every three runs, four runs a day over three days.
    runs = [
        run_records(
            by_app({"telegram": DROP}) if i % 3 == 0 else None,
            start=START + pd.Timedelta(days=i // 4),
        )
        for i in range(12)
    ]
    table = judge(tmp_path, *runs)
    shares = analysis.aggregate(table, by=["app"], min_runs=10)
    assert list(shares.columns) == ["app", *AGGREGATE_COLUMNS]
    tg = shares[shares["app"] == "telegram"].set_index("verdict")
    assert (tg.loc["blocked", "count"], tg.loc["blocked", "runs"]) == (4, 12)
    assert tg.loc["blocked", "share"] == pytest.approx(4 / 12)
    assert tg.loc["ok", "share"] == pytest.approx(8 / 12)
    assert list(tg.index) == list(VERDICTS)  # every verdict listed, zeros too, in order
    daily = analysis.aggregate(table, by=["app", "day"], min_runs=10)
    assert set(daily["status"]) == {NOT_ENOUGH}  # 4 runs a day is not enough at 10
    assert daily["share"].isna().all()
    assert daily["count"].sum() == len(table)  # counts kept all the same


def test_collapsed_verdicts_are_counted_together() -> None:
    verdicts = ["calls_blocked", "calls_cut", "ok", "calls_throttled", "ok"]
    table = _table(verdicts, ["whatsapp"] * 5, [0] * 5, ["AS1"] * 5)
    out = aggregate(table, by=["app"], collapse={"calls": analysis.CALL_VERDICTS}, min_runs=1)
    expected = ["ok", "blocked", "throttled", "calls", "network_degraded", "inconclusive"]
    assert list(out["verdict"]) == expected
    calls = out.set_index("verdict").loc["calls"]
    assert (calls["count"], calls["runs"], calls["share"]) == (3, 5, 0.6)
    with pytest.raises(ValueError, match="collapsed twice"):
        aggregate(table, collapse={"a": ["ok"], "b": ["ok"]})
    with pytest.raises(TypeError, match="list of verdicts"):
        aggregate(table, collapse={"a": "ok"})


def test_baseline_runs_are_counted_only_in_their_own_groups() -> None:
    # One volunteer run blocked, three baseline runs (uncensored networks) blocked too (the
    # endpoint was down): the volunteers' share is of the volunteers' run alone.
    table = _table(["blocked", "blocked", "blocked", "ok"], ["telegram"] * 4, [0] * 4, ["AS1"] * 4)
    table["vantage"] = ["volunteer", "baseline", "baseline", "baseline"]
    out = aggregate(table, by=["app"], min_runs=1).set_index("verdict")
    assert (out.loc["blocked", "count"], out.loc["blocked", "runs"]) == (1, 1)
    apart = aggregate(table, by=["app", "vantage"], min_runs=1)
    blocked = apart[apart["verdict"] == "blocked"].set_index("vantage")
    assert blocked.loc["baseline", ["count", "runs"]].tolist() == [2, 3]
    assert blocked.loc["volunteer", ["count", "runs"]].tolist() == [1, 1]


def test_derived_keys_and_bad_keys() -> None:
    table = _table(["ok", "blocked", "ok"], ["telegram"] * 3, [0, 1, 8], ["AS1", "AS2", "AS1"])
    out = aggregate(table, by=["asn", "week", "country", "network_type"], min_runs=1)
    weeks = sorted(set(out["week"]))
    assert all(w.weekday() == 0 for w in weeks)  # Mondays
    assert len(weeks) == 2
    assert set(out["asn"]) == {"AS1", "AS2"}
    with pytest.raises(ValueError, match="cannot group by 'nowhere'"):
        aggregate(table, by=["nowhere"])
    with pytest.raises(ValueError, match="what is counted"):
        aggregate(table, by=["verdict"])
    with pytest.raises(ValueError, match="min_runs"):
        aggregate(table, min_runs=0)


def test_an_empty_table_gives_an_empty_aggregate() -> None:
    out = aggregate(_table([], [], [], []), by=["app", "day"])
    assert out.empty
    assert list(out.columns) == ["app", "day", *AGGREGATE_COLUMNS]


def test_verdicts_of_a_researchers_own_rules_are_kept() -> None:
    table = _table(["ok", "maybe"], ["signal"] * 2, [0, 0], ["AS1"] * 2)
    out = aggregate(table, by=["app"], min_runs=1)
    assert out["verdict"].iloc[-1] == "maybe"
    assert out["count"].sum() == 2


_rows = st.lists(
    st.tuples(
        st.sampled_from(VERDICTS),
        st.sampled_from(["whatsapp", "telegram"]),
        st.integers(0, 3),
        st.sampled_from(["AS1", "AS2"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(rows=_rows, min_runs=st.integers(1, 12))
def test_aggregation_invariants(rows: list[tuple[str, str, int, str]], min_runs: int) -> None:
    verdicts, apps, days, asns = (list(column) for column in zip(*rows, strict=True))
    out = aggregate(_table(verdicts, apps, days, asns), by=["app", "asn", "day"], min_runs=min_runs)
    groups = out.groupby(["app", "asn", "day"], sort=False)
    assert groups.ngroups == len({(a, s, d) for _, a, d, s in rows})
    for _, group in groups:
        assert len(group) == len(VERDICTS)
        runs = group["runs"].iloc[0]
        assert (group["runs"] == runs).all()
        assert group["count"].sum() == runs
        if runs >= min_runs:
            assert group["share"].sum() == pytest.approx(1.0)
            assert (group["ci_low"] <= group["share"] + 1e-12).all()
            assert (group["share"] <= group["ci_high"] + 1e-12).all()
            assert ((group["ci_low"] >= 0) & (group["ci_high"] <= 1)).all()
        else:
            assert group["share"].isna().all()
            assert (group["status"] == NOT_ENOUGH).all()
    assert out["count"].sum() == len(rows)
