"""Figures of verdict tables and call flows: functions that return a matplotlib ``Figure``.

    import analysis.plots as plots
    table = analysis.verdicts(analysis.load("results/"))
    fig = plots.verdict_share_over_time(table, app="whatsapp")
    fig.savefig("whatsapp.png")

Every function builds its own ``matplotlib.figure.Figure`` and returns it: no pyplot state, nothing
shown or saved behind the caller's back, so the functions work in scripts, notebooks (a Figure
displays itself) and ``analysis.report`` alike. Shares come from ``analysis.shares.aggregate``, so
a figure says what the tables say: groups with fewer than ``min_runs`` runs are drawn as hatched
"not enough data", never as shares. Each verdict has one colour everywhere (``VERDICT_COLORS``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from analysis import callflow as cf
from analysis.load import CALL_FLOW_CHECK
from analysis.shares import CALL_VERDICTS, DERIVED_KEYS, MIN_RUNS, NOT_ENOUGH, aggregate
from analysis.verdicts import APP_ORDER

# One colour per verdict (ColorBrewer Set1 and neighbours, distinguishable in print): green for
# working, reds and oranges for app-level restrictions, purples and browns for the call path.
VERDICT_COLORS: Final[dict[str, str]] = {
    "ok": "#4daf4a",
    "blocked": "#e41a1c",
    "throttled": "#ff7f00",
    "calls_blocked": "#984ea3",
    "calls_throttled": "#f781bf",
    "calls_cut": "#a65628",
    "network_degraded": "#377eb8",
    "inconclusive": "#999999",
    # The name analysis.aggregate's docstring uses for CALL_VERDICTS collapsed together.
    "calls": "#6a3d9a",
}
# Verdicts of a researcher's own rules take these, in order of appearance.
_SPARE_COLORS: Final = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
# The flows of a call test (docs/callflow.md), and how each is drawn in a timeline.
FLOW_COLORS: Final[dict[str, str]] = {
    "call": "#984ea3",
    "control": "#377eb8",
    "call_neutral_port": "#ff7f00",
}
FLOW_LABELS: Final[dict[str, str]] = {
    "call": "call flow (app framing, app port)",
    "control": "control flow (random bytes, app port)",
    "call_neutral_port": "call framing on the neutral port",
}
NOT_ENOUGH_HATCH: Final = "///"
NOT_ENOUGH_COLOR: Final = "#bbbbbb"
FREQS: Final = ("day", "week")
# Heat-map cells are labelled with their share only while they stay legible.
_MAX_LABELLED_CELLS: Final = 300
# A time axis has at most this many labelled ticks.
_MAX_DATE_TICKS: Final = 15


def verdict_color(verdict: str, known: Sequence[str] = ()) -> str:
    """The colour of a verdict: VERDICT_COLORS, else a spare colour by its place in ``known``."""
    if verdict in VERDICT_COLORS:
        return VERDICT_COLORS[verdict]
    extra = [v for v in known if v not in VERDICT_COLORS]
    index = extra.index(verdict) if verdict in extra else 0
    return _SPARE_COLORS[index % len(_SPARE_COLORS)]


def _apps(table: pd.DataFrame, app: str | None) -> list[str]:
    if app is not None:
        return [app]
    present = {str(a) for a in table["app"].dropna().unique()}
    return [a for a in APP_ORDER if a in present] + sorted(present - set(APP_ORDER))


def _of_app(table: pd.DataFrame, app: str | None) -> pd.DataFrame:
    if app is None:
        return table
    return table[table["app"].astype(object) == app]


def _nothing(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _day_offsets(values: pd.Series, origin: pd.Timestamp) -> np.ndarray:
    """Days from ``origin`` to each UTC timestamp: a time axis without matplotlib date units."""
    offsets: np.ndarray = ((values - origin) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    return offsets


def _period_ticks(ax: Axes, centres: np.ndarray, starts: pd.Series) -> None:
    """Periods labelled by their first day: each one while they fit, else every k-th."""
    step = max(1, -(-centres.size // _MAX_DATE_TICKS))
    labels = [stamp.strftime("%Y-%m-%d") for stamp in pd.DatetimeIndex(starts)]
    ax.set_xticks(centres[::step], labels[::step], rotation=30, ha="right")


# --- shares over time ----------------------------------------------------------------------------


def verdict_share_over_time(
    table: pd.DataFrame,
    app: str | None = None,
    freq: str = "day",
    min_runs: int = MIN_RUNS,
) -> Figure:
    """Stacked shares of verdicts per day (or ISO week) of ``app``, one panel per app when
    ``app`` is None; from ``aggregate(table, by=["app", freq], min_runs=min_runs)``.

    Each period's bar stacks the shares of its verdicts (one bar container per verdict, labelled
    with it, holding the periods with enough runs); a period with fewer than ``min_runs`` runs is
    a full-height hatched bar labelled NOT_ENOUGH, and a period without runs is a gap.
    """
    if freq not in FREQS:
        raise ValueError(f"freq must be one of {', '.join(FREQS)}, not {freq!r}")
    apps = _apps(table, app) if not table.empty else [app or "all apps"]
    fig = Figure(figsize=(9, 2.6 * len(apps) + 0.8), layout="constrained")
    axes = fig.subplots(len(apps), 1, sharex=True, squeeze=False)[:, 0]
    days = 7 if freq == "week" else 1
    shown = _of_app(table, app)
    # One time axis for every panel: periods as days from the first period of any panel.
    starts = DERIVED_KEYS[freq](shown).dropna() if not shown.empty else None
    periods = pd.Series(sorted(set(starts))) if starts is not None and not starts.empty else None
    for ax, name in zip(axes, apps, strict=True):
        rows = _of_app(shown, name) if periods is not None else shown
        ax.set_title(f"{name}: share of runs per verdict, per {freq} (UTC)", loc="left")
        if periods is None or rows.empty:
            _nothing(ax, f"no runs of {name}" + (" with a start time" if len(rows) else ""))
            continue
        shares = aggregate(rows, by=[freq], min_runs=min_runs)
        _stacked_shares(ax, shares, freq, periods.iloc[0], min_runs)
    if periods is not None:
        _period_ticks(axes[-1], _day_offsets(periods, periods.iloc[0]) + days / 2, periods)
        axes[-1].set_xlabel(f"{freq} (UTC, first day); the number above a bar is its runs")
    fig.suptitle("Verdicts over time")
    return fig


def _stacked_shares(
    ax: Axes, shares: pd.DataFrame, freq: str, origin: pd.Timestamp, min_runs: int
) -> None:
    """One bar per period, centred on it (a period starts at its UTC midnight)."""
    days = 7 if freq == "week" else 1
    shares = shares[shares[freq].notna()]  # no start time, no place on a time axis
    periods = shares.drop_duplicates(freq)
    x_all = _day_offsets(periods[freq], origin) + days / 2
    width = 0.8 * days
    enough = (periods["status"] != NOT_ENOUGH).to_numpy(dtype=bool)
    order = list(dict.fromkeys(shares["verdict"]))
    bottom = np.zeros(int(enough.sum()))
    x = x_all[enough]
    for verdict in order:
        rows = shares[(shares["verdict"] == verdict) & (shares["status"] != NOT_ENOUGH)]
        heights = rows["share"].to_numpy(dtype=np.float64)
        if not heights.size or not heights.any():
            continue  # a verdict no period has stays out of the legend
        ax.bar(
            x,
            heights,
            width,
            bottom=bottom,
            color=verdict_color(verdict, order),
            label=verdict,
            edgecolor="white",
            linewidth=0.3,
        )
        bottom = bottom + heights
    if (~enough).any():
        ax.bar(
            x_all[~enough],
            np.ones(int((~enough).sum())),
            width,
            color="none",
            edgecolor=NOT_ENOUGH_COLOR,
            hatch=NOT_ENOUGH_HATCH,
            label=f"{NOT_ENOUGH} (< {min_runs} runs)",
        )
    runs = periods["runs"].to_numpy(dtype=np.int64)
    for xi, n in zip(x_all, runs, strict=True):
        ax.text(xi, 1.01, str(n), ha="center", va="bottom", fontsize=7, color="0.35")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share of runs (0-1)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)


# --- ASN x day heat map --------------------------------------------------------------------------

SELECTED: Final = "selected verdicts"


def asn_day_heatmap(
    table: pd.DataFrame,
    verdicts: Sequence[str] = CALL_VERDICTS,
    app: str | None = None,
    min_runs: int = MIN_RUNS,
) -> Figure:
    """A heat map of the share of runs (of ``app``, or of every app) whose verdict is one of
    ``verdicts``, per network (rows, ASN) and UTC day (columns, every day of the span).

    The image's array is a masked array: cells with fewer than ``min_runs`` runs (or none) are
    masked and show the hatched background, not a colour.
    """
    if isinstance(verdicts, str):
        raise TypeError("verdicts must be a list of verdicts, not a string")
    chosen = list(verdicts)
    if not chosen:
        raise ValueError("give at least one verdict")
    rows = _of_app(table, app)
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    who = app or "all apps"
    ax.set_title(f"{who}: share of runs with {' / '.join(chosen)}, per network and day", loc="left")
    if rows.empty:
        _nothing(ax, f"no runs of {who}")
        return fig
    shares = aggregate(rows, by=["asn", "day"], collapse={SELECTED: chosen}, min_runs=min_runs)
    # Rows without a start time have no day: they are in the tables, not on a time axis.
    shares = shares[(shares["verdict"] == SELECTED) & shares["day"].notna()]
    if shares.empty:
        _nothing(ax, f"no runs of {who} with a start time")
        return fig
    asns = sorted({str(a) for a in shares["asn"]})
    first, last = shares["day"].min(), shares["day"].max()
    days = pd.date_range(first, last, freq="D")
    grid = (
        shares.assign(asn=shares["asn"].astype(str))
        .pivot(index="asn", columns="day", values="share")
        .reindex(index=asns, columns=days)
    )
    values = grid.to_numpy(dtype=np.float64)
    image = np.ma.masked_invalid(values)
    cmap = colormaps["Reds"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    # Masked cells are transparent over a hatched background: "not enough data" is not a share.
    ax.add_patch(
        Rectangle(
            (-0.5, -0.5),
            len(days),
            len(asns),
            facecolor="white",
            edgecolor=NOT_ENOUGH_COLOR,
            hatch=NOT_ENOUGH_HATCH,
            zorder=0,
        )
    )
    mapped = ax.imshow(
        image, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest", zorder=1
    )
    colorbar = fig.colorbar(mapped, ax=ax)
    colorbar.set_label("share of runs (0-1)")
    ax.set_yticks(range(len(asns)), asns)
    step = max(1, len(days) // 15)
    ticks = list(range(0, len(days), step))
    ax.set_xticks(ticks, [days[i].strftime("%Y-%m-%d") for i in ticks], rotation=45, ha="right")
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("network (ASN)")
    if values.size <= _MAX_LABELLED_CELLS:
        for (i, j), share in np.ndenumerate(values):
            if not np.isnan(share):
                colour = "white" if share > 0.6 else "black"
                ax.text(j, i, f"{share:.0%}", ha="center", va="center", fontsize=7, color=colour)
    ax.legend(
        handles=[
            Patch(
                facecolor="white",
                edgecolor=NOT_ENOUGH_COLOR,
                hatch=NOT_ENOUGH_HATCH,
                label=f"{NOT_ENOUGH} (< {min_runs} runs) or no runs",
            )
        ],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.22),
        fontsize=8,
        frameon=False,
    )
    return fig


# --- one run's call flows ------------------------------------------------------------------------


def call_flows(
    records: pd.DataFrame, run_id: str, app: str, profile: str = "voice"
) -> dict[str, cf.Flow]:
    """The flows of one call test (flow name -> Flow) of ``run_id`` and ``app`` in loaded
    records: the first (by t0) call_flow record of each flow with that profile."""
    if "call_flow" not in records.columns or records.empty:
        return {}
    mask = (
        records["call_flow"].notna().to_numpy(dtype=bool)
        & (records["run_id"].astype(object) == run_id).to_numpy(dtype=bool)
        & (records["app"].astype(object) == app).to_numpy(dtype=bool)
        & (records["check"].astype(object) == CALL_FLOW_CHECK).to_numpy(dtype=bool)
    )
    rows = records.loc[mask, ["t0", "call_flow"]].sort_values("t0", kind="stable")
    flows: dict[str, cf.Flow] = {}
    for text in rows["call_flow"]:
        details: Any = json.loads(text)
        if not isinstance(details, dict) or details.get("profile", "voice") != profile:
            continue
        name = details.get("flow")
        if name in cf.FLOWS and name not in flows:
            flows[str(name)] = cf.flow_from_details(details)
    return flows


def reached_per_bin(flow: cf.Flow) -> np.ndarray:
    """Datagrams per bin that reached the reflector, from its cumulative ``reflector_rx``: the
    increase over the last bin where it was known (NaN while unknown, before the first echo)."""
    rx = flow.reflector_rx
    out = np.full(rx.shape, np.nan)
    previous = 0.0
    for i, value in enumerate(rx):
        if np.isnan(value):
            continue
        out[i] = max(value - previous, 0.0)
        previous = max(previous, value)
    return out


def flow_timeline(records: pd.DataFrame, run_id: str, app: str, profile: str = "voice") -> Figure:
    """One run's call test of ``app``: per 250 ms bin of send time, the datagrams each flow
    (call, control, and the neutral-port flow when there is one) sent, that reached the reflector
    (when known, from its receive counter), and whose echo came back; below, each flow's median
    RTT. ``records``: ``analysis.load`` output (its ``call_flow`` column). Each line's gid is
    ``"<flow>:<series>"`` (series ``sent``, ``reached``, ``echoed``, ``rtt``); its y data are the
    record's bins. ValueError when the run has no such call test."""
    flows = call_flows(records, run_id, app, profile)
    if "call" not in flows:
        raise ValueError(f"no {profile} call_flow records of {app} in run {run_id}")
    names = [name for name in cf.FLOWS if name in flows]
    fig = Figure(figsize=(9, 2.0 * (len(names) + 1) + 0.8), layout="constrained")
    axes = fig.subplots(len(names) + 1, 1, sharex=True, squeeze=False)[:, 0]
    ymax = max(float(flows[n].sent.max(initial=0.0)) for n in names)
    for ax, name in zip(axes[:-1], names, strict=True):
        flow = flows[name]
        x = (np.arange(flow.sent.size) + 0.5) * flow.bin_width
        colour = FLOW_COLORS[name]
        ax.plot(
            x,
            flow.sent,
            drawstyle="steps-mid",
            color="0.55",
            lw=1.2,
            label="sent",
            gid=f"{name}:sent",
        )
        reached = reached_per_bin(flow)
        if not np.isnan(reached).all():
            ax.plot(
                x,
                reached,
                drawstyle="steps-mid",
                color=colour,
                ls="--",
                lw=1.0,
                label="reached the reflector",
                gid=f"{name}:reached",
            )
        ax.plot(
            x,
            flow.echoed,
            drawstyle="steps-mid",
            color=colour,
            lw=1.8,
            label="echoed back",
            gid=f"{name}:echoed",
        )
        if not np.isnan(flow.last_echo_s):
            ax.axvline(flow.last_echo_s, color=colour, ls=":", lw=0.8)
        sent, echoed = int(flow.sent.sum()), int(flow.echoed.sum())
        share = f"{echoed / sent:.0%}" if sent else "n/a"
        ax.set_title(
            f"{FLOW_LABELS[name]}: {echoed}/{sent} echoed ({share})", loc="left", fontsize=9
        )
        ax.set_ylabel(f"datagrams per\n{flow.bin_width * 1000:.0f} ms bin")
        ax.set_ylim(0, ymax * 1.15 + 0.5)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    rtt_ax = axes[-1]
    for name in names:
        flow = flows[name]
        x = (np.arange(flow.rtt_ms.size) + 0.5) * flow.bin_width
        rtt_ax.plot(
            x,
            flow.rtt_ms,
            marker=".",
            ms=3,
            lw=1.0,
            color=FLOW_COLORS[name],
            label=name,
            gid=f"{name}:rtt",
        )
    rtt_ax.set_title(
        "median round-trip time per bin (gaps: nothing echoed)", loc="left", fontsize=9
    )
    rtt_ax.set_ylabel("RTT (ms)")
    rtt_ax.set_xlabel("send time from the flow's start (s)")
    rtt_ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(f"{app} {profile} call test, run {run_id}")
    return fig


# --- time to cut ---------------------------------------------------------------------------------


def cut_times(table: pd.DataFrame, app: str | None = None) -> pd.DataFrame:
    """``app`` and ``call_cut_s`` of the ``calls_cut`` rows (of ``app``) with a cut time."""
    rows = _of_app(table, app)
    cut = (rows["verdict"].astype(object) == "calls_cut") & rows["call_cut_s"].notna()
    out = rows.loc[cut, ["app", "call_cut_s"]].astype({"app": object, "call_cut_s": np.float64})
    return out.reset_index(drop=True)


def time_to_cut(table: pd.DataFrame, app: str | None = None, bin_s: float = 0.5) -> Figure:
    """How long calls lasted before they were cut: for the ``calls_cut`` rows (of ``app``, or of
    each app), a histogram of ``call_cut_s`` (the send time of the call flow's last echo) in bins
    of ``bin_s`` seconds, stacked per app, and its empirical CDF (one step line per app, gid
    ``"ecdf:<app>"``, x the sorted cut times)."""
    if bin_s <= 0:
        raise ValueError(f"bin_s must be positive, not {bin_s}")
    cuts = cut_times(table, app) if not table.empty else pd.DataFrame({"app": [], "call_cut_s": []})
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    hist_ax, ecdf_ax = fig.subplots(1, 2)
    who = app or "all apps"
    fig.suptitle(f"{who}: time from the call's start to its cut ({len(cuts)} cut calls)")
    if cuts.empty:
        _nothing(hist_ax, "no calls_cut rows with a cut time")
        _nothing(ecdf_ax, "no calls_cut rows with a cut time")
        return fig
    apps = _apps(cuts, None)
    values = [cuts.loc[cuts["app"] == a, "call_cut_s"].to_numpy(dtype=np.float64) for a in apps]
    colours = (
        [VERDICT_COLORS["calls_cut"]]
        if len(apps) == 1
        else [colormaps["tab10"](i % 10) for i in range(len(apps))]
    )
    top = float(cuts["call_cut_s"].max())
    edges = np.arange(0.0, (np.floor(top / bin_s) + 2) * bin_s, bin_s)
    hist_ax.hist(values, bins=edges, stacked=True, color=colours, label=apps, edgecolor="white")
    hist_ax.set_xlabel("time to cut (s)")
    hist_ax.set_ylabel(f"cut calls per {bin_s:g} s")
    hist_ax.set_title("histogram", loc="left", fontsize=9)
    for name, data, colour in zip(apps, values, colours, strict=True):
        x = np.sort(data)
        y = np.arange(1, x.size + 1) / x.size
        ecdf_ax.plot(
            x,
            y,
            drawstyle="steps-post",
            color=colour,
            label=f"{name} (n={x.size})",
            gid=f"ecdf:{name}",
        )
    ecdf_ax.set_xlim(0, edges[-1])
    ecdf_ax.set_ylim(0, 1.02)
    ecdf_ax.set_xlabel("time to cut (s)")
    ecdf_ax.set_ylabel("share of cut calls cut by then (0-1)")
    ecdf_ax.set_title("empirical CDF", loc="left", fontsize=9)
    for ax in (hist_ax, ecdf_ax):
        ax.legend(fontsize=8, frameon=False)
    return fig


__all__ = [
    "FLOW_COLORS",
    "FREQS",
    "NOT_ENOUGH_HATCH",
    "VERDICT_COLORS",
    "asn_day_heatmap",
    "call_flows",
    "cut_times",
    "flow_timeline",
    "reached_per_bin",
    "time_to_cut",
    "verdict_color",
    "verdict_share_over_time",
]
