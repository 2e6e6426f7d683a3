"""`ringprobe analyze`: verdicts per run and app from records (ours, and OONI's)."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "json", "csv")
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
def command(
    paths: tuple[str, ...], ooni_paths: tuple[str, ...], baseline_paths: tuple[str, ...], fmt: str
) -> None:
    """Compute a verdict per run and app from ringprobe records.

    PATHS are .jsonl or .jsonl.gz files, directories (searched recursively) or glob patterns.
    Verdicts are ok, blocked, throttled, network_degraded or inconclusive (calls_* once the
    call path is measured), each with its layer, mechanism, the rule that fired and the figures.
    """
    if not paths and not ooni_paths:
        raise click.UsageError("give record PATHS, or OONI files with --ooni")
    table = compute(paths, ooni_paths, baseline_paths)
    if fmt == "json":
        click.echo(json.dumps(as_rows(table), indent=2, sort_keys=False))
    elif fmt == "csv":
        sys.stdout.write(table.to_csv(index=False))
    else:
        print_table(table)


def compute(
    paths: tuple[str, ...], ooni_paths: tuple[str, ...], baseline_paths: tuple[str, ...]
) -> pd.DataFrame:
    """Load, verdict, and add the plain-language line; a user error becomes one line, exit 2."""

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
