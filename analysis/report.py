"""A self-contained HTML report of a verdict table: the aggregate tables and the figures.

    import analysis
    from analysis.report import write_report
    records = analysis.load("results/")
    table = analysis.verdicts(records)
    path = write_report(table, "report/", by=("app", "day"), records=records)

The report is one file, ``index.html``: tables from ``analysis.aggregate`` as HTML, the figures
of ``analysis.plots`` as PNG images embedded as base64 ``data:`` URIs (it opens offline, can be
mailed, and nothing is fetched), and a short explanation of each. Every value from the data
(app names, ASNs, verdicts, run ids) is HTML-escaped.

Overwriting: the report is written into ``directory``, created if missing. A directory that holds
anything is refused (FileExistsError) unless it is a previous report: it holds ``index.html``
and nothing else, and that file carries the generator marker (``REPORT_MARKER``, a ``<meta>``
tag every report writes in its head). So a report never replaces a directory of records or
someone's notes, and rerunning a report over its own output just refreshes it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis import plots
from analysis.differential import differential
from analysis.onset import onsets
from analysis.shares import CALL_VERDICTS, MIN_RUNS, NOT_ENOUGH, aggregate

INDEX: Final = "index.html"
# Written in every report's <head>; a directory is a previous report only if its index has it.
REPORT_MARKER: Final = '<meta name="generator" content="ringprobe analysis.report">'
# How far into an existing index.html the marker is looked for (it sits in the <head>).
_MARKER_WITHIN: Final = 4096
DEFAULT_BY: Final = ("app", "day")
# At most this many call-flow timelines: one per (app, call verdict), the most recent run.
MAX_TIMELINES: Final = 6
PNG_DPI: Final = 100

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.not-enough td { color: #888; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
figcaption, p.note { color: #444; max-width: 60em; }
"""


@dataclass(frozen=True, slots=True)
class _Figure:
    title: str
    explanation: str
    figure: Figure


def png_bytes(figure: Figure, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG, rendered with the Agg canvas (no pyplot, no display)."""
    FigureCanvasAgg(figure)  # attaches itself to the figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def is_previous_report(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a report of this module and nothing else (see the module
    docstring)."""
    path = Path(directory)
    entries = list(path.iterdir())
    if [entry.name for entry in entries] != [INDEX] or not entries[0].is_file():
        return False
    with entries[0].open("rb") as handle:
        head = handle.read(_MARKER_WITHIN)
    return REPORT_MARKER.encode() in head


def _prepare(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()) and not is_previous_report(directory):
        raise FileExistsError(
            f"{directory}: not empty and not a previous report (a report directory holds only "
            f"{INDEX}, written by analysis.report); choose an empty or new directory"
        )


def write_report(
    table: pd.DataFrame,
    directory: str | os.PathLike[str],
    *,
    by: Sequence[str] = DEFAULT_BY,
    records: pd.DataFrame | None = None,
    min_runs: int = MIN_RUNS,
) -> Path:
    """Write ``directory/index.html``, a self-contained report of ``table`` (``analysis.verdicts``
    output), and return its path.

    Tables: the shares of verdicts grouped by ``by`` (``analysis.aggregate`` keys), then by app
    alone, then the restricted-call verdicts collapsed per app, the onsets and ends of restricted
    calls per app and ASN (``analysis.onsets``) and, when the table has call tests, call flows
    against their controls (``analysis.differential``). Figures: verdict shares over time,
    the ASN x day heat map of CALL_VERDICTS, the time to cut, and, with ``records`` (the loaded
    records the table came from), call-flow timelines of a few runs with a call verdict.
    Groups with fewer than ``min_runs`` runs show counts only. Creates ``directory``; raises
    FileExistsError when it holds anything but a previous report, ValueError for a bad ``by``
    key (before anything is written).
    """
    by = list(by)
    tables = _tables(table, by, min_runs)  # a bad key raises before the directory is touched
    path = Path(directory)
    _prepare(path)
    figures = _figures(table, records, min_runs)
    document = _document(table, min_runs, tables, figures)
    index = path / INDEX
    # Written next to its place and renamed: a failure leaves the previous report whole.
    fd, temporary = tempfile.mkstemp(dir=path, prefix=".index-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(document)
        # mkstemp makes the file private (0600); a report is for reading and sharing.
        os.chmod(temporary, 0o644)
        os.replace(temporary, index)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return index


# --- content -------------------------------------------------------------------------------------


def _tables(
    table: pd.DataFrame, by: list[str], min_runs: int
) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, explanation, aggregate) for each table of the report."""
    out = [
        (
            f"Shares of verdicts by {', '.join(by) or 'nothing (all runs)'}",
            "Each row: of the runs that measured the app in this group, how many gave this "
            "verdict, the share and its 95% Wilson score interval.",
            aggregate(table, by=by, min_runs=min_runs),
        )
    ]
    if by != ["app"]:
        out.append(
            (
                "Shares of verdicts by app, all runs",
                "The same, over every run in the table.",
                aggregate(table, by=["app"], min_runs=min_runs),
            )
        )
    out.append(
        (
            "Restricted calls by app",
            "calls_blocked, calls_throttled and calls_cut counted together as 'calls': the "
            "share of runs in which the app's calls did not work while the app itself did.",
            aggregate(table, by=["app"], collapse={"calls": CALL_VERDICTS}, min_runs=min_runs),
        )
    )
    out.append(
        (
            "Onsets and ends of restricted calls, by app and ASN",
            "Change points in the daily share of restricted-call verdicts (analysis.onsets: "
            "binomial likelihood ratio, Bonferroni over the candidate days, p < 0.001, at least 3 "
            f"days each side, days with fewer than {min_runs} runs skipped); none found: no rows.",
            onsets(table, by=["app", "asn"], min_runs_per_day=min_runs),
        )
    )
    tested = table["callflow_tests"].fillna(0) > 0 if "callflow_tests" in table else None
    if tested is not None and bool(tested.any()):
        out.append(
            (
                "Call flows against their controls, by app and ASN",
                "Spread over the runs with a call test (analysis.differential): delivery, loss "
                "and echoed rate of the call-shaped flow and of its random-bytes control.",
                differential(table, by=["app", "asn"]),
            )
        )
    return out


def _figures(table: pd.DataFrame, records: pd.DataFrame | None, min_runs: int) -> list[_Figure]:
    out = [
        _Figure(
            "Verdicts over time",
            "Per app and UTC day, the verdicts' shares of the day's runs, stacked to 1. A "
            f"hatched bar is a day with fewer than {min_runs} runs: its counts are in the tables, "
            "but a share of so few runs says little. A gap is a day without runs.",
            plots.verdict_share_over_time(table, min_runs=min_runs),
        ),
        _Figure(
            "Restricted calls per network and day",
            "Per network (ASN) and UTC day, the share of runs of any app whose verdict is "
            f"{', '.join(CALL_VERDICTS)}. Hatched cells have fewer than {min_runs} runs (or none).",
            plots.asn_day_heatmap(table, CALL_VERDICTS, min_runs=min_runs),
        ),
        _Figure(
            "Time to cut",
            "For the calls_cut runs: how long the call flow was echoed before its echoes "
            "stopped while its control went on (the send time of its last echo).",
            plots.time_to_cut(table),
        ),
    ]
    if records is not None:
        for run_id, app, verdict in _timeline_runs(table):
            try:
                figure = plots.flow_timeline(records, run_id, app)
            except ValueError:
                continue  # the records of that run were not passed
            out.append(
                _Figure(
                    f"Call flows of {app}, run {run_id} ({verdict})",
                    "Per 250 ms bin of send time: datagrams sent, datagrams that reached the "
                    "reflector (from its receive counter, once an echo carried it) and datagrams "
                    "whose echo came back, for the call-shaped flow, its random-bytes control "
                    "on the same port and the call framing on a neutral port; below, the median "
                    "round-trip time. The dotted line is each flow's last echo.",
                    figure,
                )
            )
    return out


def _timeline_runs(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(run_id, app, verdict): the most recent run of each (app, call verdict)."""
    if table.empty:
        return []
    calls = table[table["verdict"].astype(object).isin(CALL_VERDICTS)]
    calls = calls.sort_values("start_time", kind="stable")
    last = calls.drop_duplicates(["app", "verdict"], keep="last")
    picked = [
        (str(r), str(a), str(v))
        for r, a, v in last[["run_id", "app", "verdict"]].itertuples(index=False, name=None)
    ]
    return picked[:MAX_TIMELINES]


# --- HTML ----------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A table cell's text: NA as an empty cell, shares as percentages, days as dates."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):  # type: ignore[call-overload]
        return ""
    if isinstance(value, pd.Timestamp):
        if value == value.normalize():
            return value.strftime("%Y-%m-%d")
        return value.isoformat()
    if isinstance(value, float | np.floating):
        return f"{float(value):.3f}"
    return str(value)


def table_html(frame: pd.DataFrame) -> str:
    """An aggregate (or any frame) as an HTML table, every header and cell escaped; rows whose
    ``status`` is NOT_ENOUGH get class ``not-enough``."""
    numeric = {name for name in frame.columns if pd.api.types.is_numeric_dtype(frame[name])}

    def cls(name: object) -> str:
        return "" if name in numeric else ' class="text"'

    head = "".join(f"<th{cls(n)}>{html.escape(str(n))}</th>" for n in frame.columns)
    lines = [f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>"]
    status = frame["status"].to_numpy(dtype=object) if "status" in frame else None
    for i, row in enumerate(frame.itertuples(index=False, name=None)):
        marked = status is not None and status[i] == NOT_ENOUGH
        cells = "".join(
            f"<td{cls(n)}>{html.escape(_cell(v))}</td>"
            for n, v in zip(frame.columns, row, strict=True)
        )
        lines.append(f'<tr class="not-enough">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    lines.append("</tbody>\n</table>")
    return "\n".join(lines)


def _summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>The verdict table is empty: no runs.</p>"
    runs = table["run_id"].nunique()
    apps = ", ".join(sorted({str(a) for a in table["app"].dropna()}))
    asns = ", ".join(sorted({str(a) for a in table["probe_asn"].dropna()}))
    first, last = table["start_time"].min(), table["start_time"].max()
    when = "%Y-%m-%d %H:%M UTC"
    span = f"{first:{when}} to {last:{when}}" if pd.notna(first) else "unknown times"
    return (
        f"<p>{runs} runs, {len(table)} verdicts (one per run and app), {html.escape(span)}.<br>"
        f"Apps: {html.escape(apps)}.<br>Networks: {html.escape(asns)}.</p>"
    )


def _document(
    table: pd.DataFrame,
    min_runs: int,
    tables: list[tuple[str, str, pd.DataFrame]],
    figures: list[_Figure],
) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        REPORT_MARKER,
        "<title>ringprobe report</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>ringprobe report</h1>",
        f'<p class="note">Generated {generated} by ringprobe\'s analysis package from a verdict '
        "table (one row per run and app). Shares are of runs; a group with fewer than "
        f"{min_runs} runs has counts but no share ({html.escape(NOT_ENOUGH)}).</p>",
        _summary(table),
        "<h2>Tables</h2>",
    ]
    for title, explanation, frame in tables:
        parts += [
            f"<h3>{html.escape(title)}</h3>",
            f'<p class="note">{html.escape(explanation)}</p>',
            table_html(frame),
        ]
    parts.append("<h2>Figures</h2>")
    for item in figures:
        data = base64.b64encode(png_bytes(item.figure)).decode("ascii")
        parts += [
            "<figure>",
            f"<h3>{html.escape(item.title)}</h3>",
            f'<img alt="{html.escape(item.title)}" src="data:image/png;base64,{data}">',
            f"<figcaption>{html.escape(item.explanation)}</figcaption>",
            "</figure>",
        ]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


__all__ = [
    "DEFAULT_BY",
    "INDEX",
    "REPORT_MARKER",
    "is_previous_report",
    "png_bytes",
    "table_html",
    "write_report",
]
