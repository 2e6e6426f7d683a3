"""Benchmark: records per second the collector validates, stores (fsync) and indexes.

Starts ``ringprobe collector`` as a subprocess on 127.0.0.1 with a temporary data directory, writes
N hand-built records (tests/recordsets.py runs over the built-in catalog) to a records file, and
uploads it with ``probe.upload`` in batches; prints the records stored per second, then uploads the
same file again (every record a duplicate) and prints that rate too. Nothing leaves loopback.

    .venv/bin/python bench/bench_collector.py [--records 20000] [--batch 500] [--clients 1]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe.allowlist import AllowList  # noqa: E402 - after the path setup above
from probe.upload import UploadOptions, state_path, upload  # noqa: E402
from tests.recordsets import run_records  # noqa: E402


def write_records(directory: Path, count: int, files: int) -> list[Path]:
    """``count`` records over ``files`` files, run after run (285 records a run)."""
    paths = [directory / f"records-{n}.jsonl" for n in range(files)]
    outs = [path.open("w") for path in paths]
    written = 0
    ccs = ("RU", "BY", "KZ", "UZ", "AM")
    try:
        while written < count:
            for record in run_records(cc=ccs[written % len(ccs)]):
                if written == count:
                    break
                outs[written % files].write(record.to_json() + "\n")
                written += 1
    finally:
        for out in outs:
            out.close()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1, help="files uploaded at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_records(work, args.records, args.clients)
        process = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "collector", "--data", str(work / "data"),
             "--port", "0", "--rate", "100000", "--burst", "100000", "--log-level", "warning"],
            stderr=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            port = None
            for line in process.stderr:
                found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise SystemExit("the collector did not start")
            url = f"http://127.0.0.1:{port}"
            allow = AllowList.from_sources(["127.0.0.0/8"], environ={})
            options = UploadOptions(batch_records=args.batch, batch_bytes=8 * 1024 * 1024)

            async def send() -> float:
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(upload([path], url, allow, options) for path in paths)
                )
                elapsed = time.perf_counter() - started
                failed = [r.error for rs in results for r in rs if not r.ok]
                if failed:
                    raise SystemExit(f"upload failed: {failed[0]}")
                return elapsed

            first = asyncio.run(send())
            for path in paths:
                state_path(path).unlink()
            again = asyncio.run(send())
            with sqlite3.connect(work / "data" / "index.sqlite") as db:
                (stored,) = db.execute("SELECT count(*) FROM records").fetchone()
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()
    print(f"records: {args.records} in batches of {args.batch}, {args.clients} client(s)")
    rate, dup_rate = args.records / first, args.records / again
    print(f"stored:     {stored} records in {first:.2f} s = {rate:,.0f} records/s")
    print(f"duplicates: {args.records} records in {again:.2f} s = {dup_rate:,.0f} records/s")


if __name__ == "__main__":
    main()
