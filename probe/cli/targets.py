"""`ringprobe targets`: list the endpoint catalog."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from probe.cli.common import catalog_options, load_selected

COLUMNS = ("id", "app", "role", "host", "address", "port", "transport", "expect")


@click.command("targets")
@catalog_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target (JSON Lines).")
def command(apps: tuple[str, ...], targets_file: Path | None, as_json: bool) -> None:
    """List the endpoints a run would contact, with role, expected answer and source."""
    catalog = load_selected(targets_file, apps)
    if as_json:
        for target in catalog:
            click.echo(json.dumps(asdict(target), sort_keys=True))
        return
    rows = [
        [str(getattr(t, c) if getattr(t, c) is not None else "-") for c in COLUMNS] for t in catalog
    ]
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)
    ]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"\n{len(catalog)} targets; sources: " + ", ".join(catalog.sources))
