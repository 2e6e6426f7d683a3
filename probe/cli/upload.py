"""`ringprobe upload`: send records files to a collector, resumably (docs/upload.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from probe.cli.common import allow_net_option

if TYPE_CHECKING:
    from probe.upload import FileResult

# probe.upload's defaults, written out so that --help imports nothing heavy; a test keeps them
# equal.
DEFAULT_BATCH_RECORDS = 500
DEFAULT_BATCH_BYTES = 1024 * 1024
DEFAULT_ATTEMPTS = 6
DEFAULT_MAX_TIME = 300.0
EXIT_FAILED = 1


@click.command("upload")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="The collector's base URL (http:// or https://); records go to URL/v1/records.",
)
@allow_net_option
@click.option(
    "--delete-after",
    is_flag=True,
    help="Delete each records file once the collector confirmed every record in it.",
)
@click.option(
    "--batch-records",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_BATCH_RECORDS,
    show_default=True,
    help="Most records in one request.",
)
@click.option(
    "--batch-bytes",
    type=click.IntRange(1024),
    default=DEFAULT_BATCH_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Most bytes in one request (a longer record goes alone).",
)
@click.option(
    "--attempts",
    type=click.IntRange(1, 100),
    default=DEFAULT_ATTEMPTS,
    show_default=True,
    help="Tries per batch on a connection error, timeout, 408, 429 or 5xx.",
)
@click.option(
    "--max-time",
    type=click.FloatRange(1, 24 * 3600),
    default=DEFAULT_MAX_TIME,
    show_default=True,
    metavar="SECONDS",
    help="Seconds one file may take, waits for retries included.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra certificate authorities (PEM) to trust for an https:// collector.",
)
def command(
    paths: tuple[Path, ...],
    url: str,
    allow_net: tuple[str, ...],
    delete_after: bool,
    batch_records: int,
    batch_bytes: int,
    attempts: int,
    max_time: float,
    ca_file: Path | None,
) -> None:
    """Upload records files (or every *.jsonl under a directory) to a ringprobe collector.

    Sends batches, retries transient failures with backoff, and remembers per file how far the
    collector confirmed (FILE.upload.json), so a rerun resumes there. A file is deleted only with
    --delete-after and only once all its records are confirmed. The collector's address must pass
    the allow-list (--allow-net, RINGPROBE_ALLOW_NETS). Exit status: 0 all uploaded, 1 some file
    failed, 2 usage error.
    """
    from probe.allowlist import AllowList
    from probe.upload import UploadOptions, find_record_files, parse_collector_url, run_upload

    allow = AllowList.from_sources(allow_net)
    base = parse_collector_url(url)
    files = find_record_files(paths)
    if not files:
        raise click.UsageError("no records files (*.jsonl) in " + ", ".join(map(str, paths)))
    options = UploadOptions(
        batch_records=batch_records,
        batch_bytes=batch_bytes,
        attempts=attempts,
        max_time=max_time,
        delete_after=delete_after,
        ca_file=str(ca_file) if ca_file else None,
    )
    results, signum = run_upload(files, base, allow, options, report)
    if signum is not None:
        click.echo("ringprobe: upload interrupted; rerun the same command to resume", err=True)
        sys.exit(128 + signum)
    if not all(result.ok and result.error is None for result in results):
        sys.exit(EXIT_FAILED)


def report(result: FileResult) -> None:
    """One line per file: what the collector confirmed, or why the file failed."""
    counts = f"{result.records} records sent ({result.stored} stored, {result.duplicates} "
    counts += "already there)"
    if result.resumed_at:
        counts += f", resumed after line {result.resumed_at}"
    if result.ok and result.error is None:
        tail = ", deleted" if result.deleted else ""
        click.echo(f"{result.path}: uploaded: {counts}{tail}")
        return
    if result.ok:  # uploaded, but the delete failed
        click.echo(f"ringprobe: {result.path}: {result.error}", err=True)
        return
    kind = "refused by the collector" if result.permanent else "failed"
    advice = "file kept" if result.permanent else "file kept; rerun to resume"
    click.echo(
        f"ringprobe: {result.path}: {kind}: {result.error} ({result.confirmed_lines} lines "
        f"confirmed, {advice})",
        err=True,
    )
