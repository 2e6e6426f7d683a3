"""analysis.plots: each figure draws what the tables say (shares from aggregate, masked cells for
too few runs, a call test's bins, cut times), on plain Figures rendered with the Agg canvas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import plots
from analysis.load import load
from analysis.shares import NOT_ENOUGH, aggregate
from analysis.verdicts import verdicts
from probe.model import Record
from tests.recordsets import DROP, START, CallTest, FlowFate, by_app, run_records, write_runs

APPS = ("whatsapp", "telegram", "control")
CUTRUN = "c" * 32  # run ids are 32 hex digits (the record schema)
R1 = "1" * 32


def campaign() -> list[list[Record]]:
    """24 runs over three days (10, 10 and 4 runs): WhatsApp calls cut in every other run (at
    2-6 s), Telegram blocked in every third; AS1 in three runs of four, AS2 in the fourth."""
    runs = []
    for i in range(24):
        call = FlowFate(cut_s=2.0 + i % 5) if i % 2 else FlowFate()
        runs.append(
            run_records(
                by_app({"telegram": DROP}) if i % 3 == 0 else None,
                apps=APPS,
                calls={"whatsapp": CallTest(call=call, seed=i)},
                start=START + pd.Timedelta(days=i // 10, minutes=i),
                asn="AS2" if i % 4 == 0 else "AS1",
            )
        )
    return runs


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The campaign's records, loaded, and their verdict table."""
    records = load(write_runs(tmp_path_factory.mktemp("campaign"), *campaign()))
    return records, verdicts(records)


def render(fig: Figure) -> None:
    """Draw with Agg: a figure that fails to render fails here."""
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig).draw()


def bars(ax: object) -> dict[str, BarContainer]:
    containers = getattr(ax, "containers", [])
    return {str(c.get_label()): c for c in containers if isinstance(c, BarContainer)}


def synthetic(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    """A verdict table with the columns the plots read: (verdict, app, day, asn) per row."""
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(rows))],
            "app": [r[1] for r in rows],
            "verdict": [r[0] for r in rows],
            "probe_asn": [r[3] for r in rows],
            "probe_cc": ["RU"] * len(rows),
            "probe_network_type": ["wired"] * len(rows),
            "start_time": [START + pd.Timedelta(days=r[2], hours=3) for r in rows],
            "call_cut_s": [np.nan] * len(rows),
        }
    )


# --- shares over time ----------------------------------------------------------------------------


def test_stacked_bars_are_aggregates_shares(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _records, table = loaded
    fig = plots.verdict_share_over_time(table, app="whatsapp", min_runs=10)
    render(fig)
    (ax,) = fig.axes
    expected = aggregate(table[table["app"] == "whatsapp"], by=["day"], min_runs=10)
    enough = expected[expected["status"] != NOT_ENOUGH]
    days = sorted(set(expected["day"]))
    assert len(days) == 3
    drawn = bars(ax)
    # Only verdicts some day has are drawn; their bars are the shares of the days with enough runs.
    present = [
        v
        for v in dict.fromkeys(enough["verdict"])
        if enough.loc[enough["verdict"] == v, "share"].any()
    ]
    assert set(present) == {"ok", "calls_cut"}
    assert [label for label in drawn if not label.startswith(NOT_ENOUGH)] == present
    bottom = np.zeros(2)
    for verdict in present:
        share = enough.loc[enough["verdict"] == verdict, "share"].to_numpy()
        patches = drawn[verdict].patches
        assert [p.get_height() for p in patches] == pytest.approx(share)
        assert [p.get_y() for p in patches] == pytest.approx(bottom)  # stacked on the ones below
        assert all(p.get_facecolor() == to_rgba(plots.VERDICT_COLORS[verdict]) for p in patches)
        bottom += share
    assert bottom == pytest.approx([1.0, 1.0])
    # The third day has 4 runs: one hatched full-height bar, no share drawn for it.
    (hatched,) = [c for label, c in drawn.items() if label.startswith(NOT_ENOUGH)]
    (patch,) = hatched.patches
    assert patch.get_hatch() == plots.NOT_ENOUGH_HATCH
    assert patch.get_height() == 1.0
    assert patch.get_x() + patch.get_width() / 2 == pytest.approx(2.5)  # day 3, centred
    share_centres = {round(p.get_x() + p.get_width() / 2, 6) for p in drawn["ok"].patches}
    assert share_centres == {0.5, 1.5}
    assert "runs" in ax.get_xlabel()
    assert "share" in ax.get_ylabel()


def test_one_panel_per_app_in_app_order(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _records, table = loaded
    fig = plots.verdict_share_over_time(table, min_runs=5)
    render(fig)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split(":")[0] for t in titles] == list(APPS)
    telegram = bars(fig.axes[1])
    expected = aggregate(table[table["app"] == "telegram"], by=["day"], min_runs=5)
    blocked = expected[(expected["verdict"] == "blocked") & (expected["status"] != NOT_ENOUGH)]
    assert len(blocked) == 2  # the third day's 4 runs are fewer than 5
    assert [p.get_height() for p in telegram["blocked"].patches] == pytest.approx(blocked["share"])
    assert f"{NOT_ENOUGH} (< 5 runs)" in telegram


def test_days_without_runs_are_gaps_and_weeks_work() -> None:
    table = synthetic([("ok", "signal", d, "AS1") for d in (0, 0, 3, 3)])
    fig = plots.verdict_share_over_time(table, app="signal", min_runs=2)
    render(fig)
    (ax,) = fig.axes
    centres = [p.get_x() + p.get_width() / 2 for p in bars(ax)["ok"].patches]
    assert centres == pytest.approx([0.5, 3.5])  # nothing at days 1 and 2
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["2026-11-28", "2026-12-01"]
    weekly = plots.verdict_share_over_time(table, freq="week", min_runs=2)
    render(weekly)
    weeks = bars(weekly.axes[0])["ok"].patches  # Saturday 28 November, Tuesday 1 December
    assert [p.get_x() + p.get_width() / 2 for p in weeks] == pytest.approx([3.5, 10.5])
    assert [p.get_width() for p in weeks] == pytest.approx([5.6, 5.6])
    ticks = [t.get_text() for t in weekly.axes[0].get_xticklabels()]
    assert ticks == ["2026-11-23", "2026-11-30"]  # ISO weeks start on Monday
    with pytest.raises(ValueError, match="freq"):
        plots.verdict_share_over_time(table, freq="month")


def test_empty_table_and_unknown_app_draw_a_message() -> None:
    empty = synthetic([])
    for fig in (
        plots.verdict_share_over_time(empty),
        plots.verdict_share_over_time(synthetic([("ok", "signal", 0, "AS1")]), app="whatsapp"),
        plots.asn_day_heatmap(empty),
        plots.time_to_cut(empty),
    ):
        render(fig)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any(text.startswith("no ") for text in texts), texts


# --- ASN x day heat map --------------------------------------------------------------------------


def test_heatmap_cells_are_shares_and_too_few_runs_are_masked() -> None:
    rows = [("calls_cut" if i < 3 else "ok", "whatsapp", 0, "AS1") for i in range(10)]
    rows += [("calls_blocked", "whatsapp", 0, "AS2")] * 2  # 2 runs: not enough
    rows += [("calls_throttled" if i < 5 else "blocked", "whatsapp", 2, "AS2") for i in range(10)]
    rows += [("calls_cut", "telegram", 2, "AS1")] * 10  # another app: left out below
    table = synthetic(rows)
    fig = plots.asn_day_heatmap(table, app="whatsapp", min_runs=10)
    render(fig)
    ax = fig.axes[0]
    (image,) = ax.images
    data = image.get_array()
    assert isinstance(data, np.ma.MaskedArray)
    # Rows AS1, AS2; columns every day of the span (the day without runs too).
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AS1", "AS2"]
    assert data.shape == (2, 3)
    assert data.mask.tolist() == [[False, True, True], [True, True, False]]
    assert data[0, 0] == pytest.approx(0.3)
    assert data[1, 2] == pytest.approx(0.5)
    # The same as aggregate's shares with the call verdicts collapsed.
    expected = aggregate(
        table[table["app"] == "whatsapp"],
        by=["asn", "day"],
        collapse={"x": ["calls_blocked", "calls_throttled", "calls_cut"]},
        min_runs=10,
    )
    shares = expected.loc[(expected["verdict"] == "x") & (expected["status"] != NOT_ENOUGH)]
    assert sorted(data.compressed().tolist()) == pytest.approx(sorted(shares["share"]))
    assert [t.get_text() for t in ax.texts] == ["30%", "50%"]
    assert ax.get_xlabel() == "day (UTC)"
    assert "ASN" in ax.get_ylabel()
    everyone = plots.asn_day_heatmap(table, verdicts=["blocked"], min_runs=10)
    render(everyone)
    (image,) = everyone.axes[0].images
    assert image.get_array()[1, 2] == pytest.approx(0.5)  # 5 blocked of 10 whatsapp runs
    assert image.get_array()[0, 2] == pytest.approx(0.0)  # telegram's cuts are not "blocked"
    with pytest.raises(TypeError, match="list of verdicts"):
        plots.asn_day_heatmap(table, verdicts="calls_cut")


def test_heatmap_of_real_verdicts(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _records, table = loaded
    fig = plots.asn_day_heatmap(table, app="whatsapp", min_runs=3)
    render(fig)
    data = fig.axes[0].images[0].get_array()
    cut = table[(table["app"] == "whatsapp") & (table["probe_asn"] == "AS1")]
    first_day = cut[cut["start_time"] < START + pd.Timedelta(days=1)]
    assert data[0, 0] == pytest.approx((first_day["verdict"] == "calls_cut").mean())


# --- call-flow timeline --------------------------------------------------------------------------


def _bins(records: pd.DataFrame, run_id: str, flow: str) -> list[dict[str, object]]:
    rows = records[(records["run_id"] == run_id) & records["call_flow"].notna()]
    for text in rows["call_flow"]:
        details = json.loads(text)
        if details["flow"] == flow:
            bins: list[dict[str, object]] = details["bins"]
            return bins
    raise AssertionError(f"no {flow} flow")


def _lines(fig: Figure) -> dict[str, Line2D]:
    return {
        str(line.get_gid()): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()
    }


def test_timeline_lines_are_the_records_bins(tmp_path: Path) -> None:
    records = load(
        write_runs(
            tmp_path,
            run_records(
                apps=APPS, run_id=CUTRUN, calls={"whatsapp": CallTest(call=FlowFate(cut_s=5.0))}
            ),
        )
    )
    fig = plots.flow_timeline(records, CUTRUN, "whatsapp")
    render(fig)
    assert len(fig.axes) == 4  # call, control, neutral port, RTT
    lines = _lines(fig)
    for flow in ("call", "control", "call_neutral_port"):
        bins = _bins(records, CUTRUN, flow)
        x = (np.arange(len(bins)) + 0.5) * 0.25
        for series in ("sent", "echoed"):
            line = lines[f"{flow}:{series}"]
            assert line.get_xdata() == pytest.approx(x)
            assert list(line.get_ydata()) == [b[series] for b in bins]
        rtt = [np.nan if b["rtt_ms"] is None else b["rtt_ms"] for b in bins]
        np.testing.assert_array_equal(lines[f"{flow}:rtt"].get_ydata(), rtt)
        cumulative = np.array([b["reflector_rx"] for b in bins], dtype=float)
        reached = np.asarray(lines[f"{flow}:reached"].get_ydata(), dtype=float)
        assert reached.sum() == pytest.approx(np.nanmax(cumulative))
        np.testing.assert_array_equal(np.nancumsum(reached), cumulative)
    call_echoed = np.asarray(lines["call:echoed"].get_ydata())
    assert call_echoed[20:].sum() == 0  # nothing after the cut at 5 s (bin 20)
    assert call_echoed[:20].all()
    assert list(lines["control:echoed"].get_ydata()) == list(lines["control:sent"].get_ydata())
    assert fig.axes[-1].get_xlabel() == "send time from the flow's start (s)"
    assert fig.axes[-1].get_ylabel() == "RTT (ms)"
    assert CUTRUN in fig.get_suptitle()


def test_timeline_without_neutral_flow_and_missing_runs(tmp_path: Path) -> None:
    records = load(
        write_runs(
            tmp_path,
            run_records(apps=APPS, run_id=R1, calls={"telegram": CallTest(neutral=None)}),
        )
    )
    fig = plots.flow_timeline(records, R1, "telegram")
    render(fig)
    assert len(fig.axes) == 3
    assert not any(gid.startswith("call_neutral_port") for gid in _lines(fig))
    with pytest.raises(ValueError, match="no voice call_flow records of whatsapp"):
        plots.flow_timeline(records, R1, "whatsapp")
    with pytest.raises(ValueError, match="video"):
        plots.flow_timeline(records, R1, "telegram", profile="video")


def test_reached_per_bin_from_the_cumulative_counter() -> None:
    details = {"bins": [{"sent": 4, "reflector_rx": r} for r in (None, 3, 3, 9, None)]}
    from analysis.callflow import flow_from_details

    reached = plots.reached_per_bin(flow_from_details(details))
    np.testing.assert_array_equal(reached, [np.nan, 3.0, 0.0, 6.0, np.nan])


# --- time to cut ---------------------------------------------------------------------------------


def test_time_to_cut_draws_the_cut_rows(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _records, table = loaded
    cut = table[table["verdict"] == "calls_cut"]
    assert len(cut) == 12
    fig = plots.time_to_cut(table)
    render(fig)
    hist_ax, _ecdf = fig.axes
    assert sum(p.get_height() for p in hist_ax.patches) == len(cut)
    line = _lines(fig)["ecdf:whatsapp"]
    assert list(line.get_xdata()) == pytest.approx(sorted(cut["call_cut_s"]))
    assert list(line.get_ydata()) == pytest.approx(np.arange(1, 13) / 12)
    assert hist_ax.get_xlabel() == "time to cut (s)"
    assert "12 cut calls" in fig.get_suptitle()


def test_time_to_cut_per_app_and_only_cut_rows() -> None:
    table = synthetic(
        [("calls_cut", "whatsapp", 0, "AS1")] * 3
        + [("calls_cut", "telegram", 0, "AS1")] * 2
        + [("ok", "whatsapp", 0, "AS1")]
    )
    table["call_cut_s"] = [3.0, 1.5, 7.25, 2.0, 4.0, 9.0]  # the ok row's value is not a cut
    fig = plots.time_to_cut(table)
    render(fig)
    lines = _lines(fig)
    assert list(lines["ecdf:whatsapp"].get_xdata()) == [1.5, 3.0, 7.25]
    assert list(lines["ecdf:telegram"].get_xdata()) == [2.0, 4.0]
    only = plots.time_to_cut(table, app="telegram", bin_s=1.0)
    assert set(_lines(only)) == {"ecdf:telegram"}
    assert sum(p.get_height() for p in only.axes[0].patches) == 2
    with pytest.raises(ValueError, match="bin_s"):
        plots.time_to_cut(table, bin_s=0)


# --- figures only --------------------------------------------------------------------------------


def test_verdict_colours_cover_every_verdict() -> None:
    from analysis.rules import VERDICTS

    assert set(VERDICTS) <= set(plots.VERDICT_COLORS)
    assert len(set(plots.VERDICT_COLORS.values())) == len(plots.VERDICT_COLORS)
    assert plots.verdict_color("mine", ["ok", "mine"]) not in plots.VERDICT_COLORS.values()


def test_no_pyplot_state() -> None:
    code = (
        "import sys, analysis.plots, analysis.report\nprint('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
