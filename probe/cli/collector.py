"""`ringprobe collector`: receive volunteers' uploads and store them raw, validated and once."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from probe.collector import Collector

# probe.collector.server's defaults, written out so that --help imports nothing heavy; a test
# keeps them equal.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_RATE = 5.0
DEFAULT_BURST = 20
LOG_LEVELS = ("debug", "info", "warning", "error")


class _CollectorFailure(click.ClickException):
    """The data directory or the port cannot be used (exit 2, like every input error)."""

    exit_code = 2


@click.command("collector")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the raw records and the index (created if missing).",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port (0 picks a free one; the port is printed).",
)
@click.option(
    "--max-body",
    type=click.IntRange(1024),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    metavar="BYTES",
    help="Largest request body (larger: 413).",
)
@click.option(
    "--max-records",
    type=click.IntRange(1),
    default=DEFAULT_MAX_RECORDS,
    show_default=True,
    help="Most records in one batch (more: 413).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.01, min_open=False),
    default=DEFAULT_RATE,
    show_default=True,
    metavar="N",
    help="Requests per second one client may sustain (faster: 429 with Retry-After).",
)
@click.option(
    "--burst",
    type=click.IntRange(1),
    default=DEFAULT_BURST,
    show_default=True,
    help="Requests one client may send at once before --rate applies.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Logs hold counts and reasons, never a client's address.",
)
def command(
    data_dir: Path,
    host: str,
    port: int,
    max_body: int,
    max_records: int,
    rate: float,
    burst: int,
    log_level: str,
) -> None:
    """Run the collector: accept `POST /v1/records` (JSON Lines) from `ringprobe upload`.

    Every record is checked against the schema (a bad line refuses the whole batch with its
    line number); records are stored once by measurement id, raw, in
    DATA/raw/day=.../cc=.../app=.../, indexed in DATA/index.sqlite, and survive a kill -9 at any
    moment (docs/upload.md). Stops cleanly on Ctrl-C or SIGTERM.
    """
    from probe.collector import Collector, Limits, StorageError

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s ringprobe collector %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    limits = Limits(max_body=max_body, max_records=max_records, rate=rate, burst=burst)
    collector = Collector(data_dir, host, port, limits)
    try:
        asyncio.run(_serve(collector))
    except StorageError as exc:
        raise _CollectorFailure(str(exc)) from exc
    except OSError as exc:
        raise _CollectorFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


async def _serve(collector: Collector) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with collector:
        where = " ".join(_fmt(address, port) for address, port in collector.addresses)
        click.echo(
            f"ringprobe collector: listening on {where}, data in {collector.data_dir}", err=True
        )
        await stop.wait()
        stored = collector.store.count() if collector.store is not None else 0
        logging.getLogger("probe.collector").info("stopping; %d records indexed", stored)


def _fmt(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
