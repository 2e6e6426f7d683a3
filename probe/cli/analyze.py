"""`ringprobe analyze`: verdicts per run and app from records (ours, and OONI's), their shares per
group (``--by``) and an HTML report (``--report``)."""

from __future__ import annotations

import difflib
import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "json", "csv")
# analysis.shares.MIN_RUNS, spelled out so that --help imports no pandas (a test checks).
MIN_RUNS = 10
# Columns every output format leads with; the figures follow.
LEAD = ("run_id", "app", "verdict", "layer", "mechanism", "rule", "evidence")


@click.command("analyze")
@click.argument("paths", nargs=-1)
@click.option(
    "--ooni",
    "ooni_paths",
    multiple=True,
    metavar="PATH",
    help="OONI whatsapp/telegram/signal measurements (.json, .jsonl, .jsonl.gz) to analyse too.",
)
@click.option(
    "--baseline",
    "baseline_paths",
    multiple=True,
    metavar="PATH",
    help="Records from uncensored vantage points: targets silent there are not evidence.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--by",
    "by",
    metavar="KEY[,KEY...]",
    callback=lambda _ctx, _param, value: parse_by(value),
    help="Print the share of runs per verdict in each group of these keys (with Wilson "
    "intervals) instead of a line per run: verdict-table columns (app, probe_asn, vantage, ...) "
    "or day, week, asn, country, network_type.",
)
@click.option(
    "--min-runs",
    type=click.IntRange(min=1),
    default=MIN_RUNS,
    show_default=True,
    help="Groups with fewer runs get counts but no share ('not enough data').",
)
@click.option(
    "--report",
    "report_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write an HTML report (tables and figures in one index.html) to DIR instead of the "
    "per-run lines. DIR must be new, empty, or a previous report.",
)
def command(
    paths: tuple[str, ...],
    ooni_paths: tuple[str, ...],
    baseline_paths: tuple[str, ...],
    fmt: str,
    by: list[str] | None,
    min_runs: int,
    report_dir: str | None,
) -> None:
    """Compute a verdict per run and app from ringprobe records.

    PATHS are .jsonl or .jsonl.gz files, directories (searched recursively) or glob patterns.
    Verdicts are ok, blocked, throttled, network_degraded or inconclusive (calls_* once the
    call path is measured), each with its layer, mechanism, the rule that fired and the figures.
    With --by, the output is the share of runs per verdict in each group instead; with
    --report, an HTML report is written (grouped by the --by keys, app and day by default) and
    its path printed.
    """
    if not paths and not ooni_paths:
        raise click.UsageError("give record PATHS, or OONI files with --ooni")
    records, baseline = load_records(paths, ooni_paths, baseline_paths)
    table = judge(records, baseline)
    if by is not None:
        print_frame(shares(table, by, min_runs), fmt)
    if report_dir is not None:
        path = write_report(table, report_dir, by, records, min_runs)
        click.echo(f"report written to {path}", err=True)  # stdout stays the --by output
    if by is None and report_dir is None:
        print_frame(table, fmt)


def parse_by(value: str | None) -> list[str] | None:
    """The keys of ``--by``; click.BadParameter (a usage error) for an empty or unknown key."""
    if value is None:
        return None
    from analysis.shares import DERIVED_KEYS
    from analysis.verdicts import VERDICT_COLUMNS

    known = {*VERDICT_COLUMNS, *DERIVED_KEYS} - {"verdict"}
    keys = [key.strip() for key in value.split(",")]
    for key in keys:
        if not key:
            raise click.BadParameter(f"empty key in {value!r}; give KEY[,KEY...]")
        if key == "verdict":
            raise click.BadParameter("'verdict' is what is counted; it cannot be a key")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise click.BadParameter(
                f"unknown key {key!r}; {hint}keys are {', '.join(DERIVED_KEYS)} or a column of "
                "the verdict table (app, vantage, probe_asn, layer, mechanism, rule, ...)"
            )
    return list(dict.fromkeys(keys))


def shares(table: pd.DataFrame, by: list[str], min_runs: int) -> pd.DataFrame:
    """analysis.aggregate of the verdict table (without the per-run summary line)."""
    import analysis

    return analysis.aggregate(table.drop(columns="summary"), by=by, min_runs=min_runs)


def write_report(
    table: pd.DataFrame,
    directory: str,
    by: list[str] | None,
    records: pd.DataFrame,
    min_runs: int,
) -> str:
    """analysis.report.write_report; a directory it refuses is a usage error."""
    from analysis.report import DEFAULT_BY
    from analysis.report import write_report as write

    keys = by if by is not None else list(DEFAULT_BY)
    try:
        path = write(
            table.drop(columns="summary"), directory, by=keys, records=records, min_runs=min_runs
        )
    except FileExistsError as exc:
        raise click.UsageError(f"--report: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"--report: cannot write {directory}: {exc}") from exc
    return str(path)


def print_frame(frame: pd.DataFrame, fmt: str) -> None:
    """A verdict table (a block per run) or an aggregate (aligned columns) in ``fmt``."""
    if fmt == "json":
        click.echo(json.dumps(as_rows(frame), indent=2, sort_keys=False))
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif "summary" in frame.columns:
        print_table(frame)
    else:
        print_aggregate(frame)


def compute(
    paths: tuple[str, ...], ooni_paths: tuple[str, ...], baseline_paths: tuple[str, ...]
) -> pd.DataFrame:
    """Load, verdict, and add the plain-language line; a user error becomes one line, exit 2."""
    return judge(*load_records(paths, ooni_paths, baseline_paths))


def load_records(
    paths: tuple[str, ...], ooni_paths: tuple[str, ...], baseline_paths: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The records and the baseline's; a user error becomes one line, exit 2."""

    import analysis

    try:
        frames = [analysis.load(list(paths))] if paths else []
        if ooni_paths:
            frames.append(analysis.load_ooni(list(ooni_paths)))
        records = analysis.concat(frames)
        baseline = analysis.load(list(baseline_paths)) if baseline_paths else None
    except analysis.AnalysisError as exc:
        raise click.UsageError(str(exc)) from exc
    if records.empty:
        raise click.UsageError("no records found in " + ", ".join((*paths, *ooni_paths)))
    return records, baseline


def judge(records: pd.DataFrame, baseline: pd.DataFrame | None) -> pd.DataFrame:
    """Verdicts, and the plain-language line of each (column ``summary``)."""
    import analysis

    table = analysis.verdicts(records, baseline=baseline)
    table["summary"] = analysis.explain(table)
    return table


def as_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NA as null, times as ISO 8601 strings."""
    rows = json.loads(table.to_json(orient="records", date_format="iso", default_handler=str))
    return [{k: _clean(v) for k, v in row.items()} for row in rows]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def print_table(table: pd.DataFrame) -> None:
    """A block per run: who and when, then one line per app."""
    for run_id, rows in table.groupby("run_id", sort=False, observed=True):
        first = rows.iloc[0]
        when = first["start_time"].strftime("%Y-%m-%d %H:%M UTC") if "start_time" in rows else ""
        click.echo(
            f"run {str(run_id)[:12]}  {first.get('probe_asn', '')} {first.get('probe_cc', '')}  "
            f"{first.get('vantage', '')}  {when}"
        )
        for line in rows["summary"]:
            click.echo(f"  {line}")
        click.echo("")


def print_aggregate(frame: pd.DataFrame) -> None:
    """An aggregate as aligned columns: days as dates, shares to three decimals, NA blank."""
    import pandas as pd

    shown = frame.copy()
    for name in shown.columns:
        column = shown[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            shown[name] = column.dt.strftime("%Y-%m-%d")
        elif column.dtype.kind == "f":
            shown[name] = column.map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
    click.echo(shown.to_string(index=False))
