"""Benchmark: a full run over 200 loopback endpoints of which half silently drop.

Prints the wall time of the run at its default concurrency and at concurrency 1, the probe
process's peak RSS, and the ratio of wall time to the per-check timeout (target: <= 1.2).

Silent drops without root: a listening socket with backlog 0 whose accept queue the benchmark
fills itself; Linux then drops further SYNs without answering, exactly as a censor's drop looks.
Every endpoint is on 127.0.x.y (all of 127/8 is loopback on Linux), and the probe runs with its
allow-list set to 127.0.0.0/8, so nothing leaves the machine.

    .venv/bin/python bench/bench_runner.py [--timeout 2] [--endpoints 200] [--skip-serial]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

RINGPROBE = [sys.executable, "-m", "probe.cli"]


def open_endpoints(count: int) -> tuple[list[tuple[str, int, str]], list[socket.socket]]:
    """Half accepting listeners, half SYN-dropping ones; returns (address, port, kind) triples."""
    endpoints: list[tuple[str, int, str]] = []
    sockets: list[socket.socket] = []
    for i in range(count):
        dropping = i % 2 == 1
        address = f"127.0.{2 if dropping else 1}.{i // 2 + 1}"
        server = socket.socket()
        server.bind((address, 0))
        server.listen(0 if dropping else 128)
        sockets.append(server)
        port = server.getsockname()[1]
        if dropping:
            # Fill the one-slot accept queue so later SYNs are dropped silently.
            for _ in range(2):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect((address, port))
                sockets.append(filler)
        else:
            threading.Thread(target=_accept_forever, args=(server,), daemon=True).start()
        endpoints.append((address, port, "drop" if dropping else "open"))
    time.sleep(0.2)
    return endpoints, sockets


def _accept_forever(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.close()


def write_catalog(path: Path, endpoints: list[tuple[str, int, str]]) -> None:
    lines = [
        "[defaults]",
        'app = "control"',
        'role = "control"',
        'transport = "tcp"',
        'expect = "tcp"',
        'source = "bench"',
        'date = "2026-11-28"',
        "",
    ]
    for n, (address, port, kind) in enumerate(endpoints):
        lines += [
            "[[target]]",
            f'id = "bench-{kind}-{n}"',
            f'address = "{address}"',
            f"port = {port}",
            "",
        ]
    path.write_text("\n".join(lines))


def run_probe(
    catalog: Path, out: Path, timeout: float, concurrency: int
) -> tuple[float, dict[str, object]]:
    # The bench's own settings directory, with the consent a volunteer would have given once
    # (`ringprobe consent --agree`): the runs only reach loopback servers.
    config_dir = out.parent / f"{out.name}-config"
    env = dict(os.environ, RINGPROBE_ALLOW_NETS="127.0.0.0/8", RINGPROBE_CONFIG_DIR=str(config_dir))
    subprocess.run(
        [*RINGPROBE, "consent", "--agree"], env=env, capture_output=True, text=True, check=True
    )
    cmd = [
        *RINGPROBE,
        "run",
        "--targets",
        str(catalog),
        "--out",
        str(out),
        "--no-doh",
        "--timeout",
        str(timeout),
        "--deadline",
        "3600",
        "--concurrency",
        str(concurrency),
        "--per-host",
        "4",
        "--json",
    ]
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.monotonic() - start
    summary = json.loads(done.stdout)
    # The run itself, from the manifest: the process's start-up (interpreter, imports) excluded.
    summary["run_seconds"] = (_parse(summary["ended"]) - _parse(summary["started"])).total_seconds()
    return wall, summary


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=256, help="of the full run")
    parser.add_argument("--skip-serial", action="store_true", help="skip the concurrency-1 run")
    args = parser.parse_args()

    endpoints, sockets = open_endpoints(args.endpoints)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            catalog = Path(tmp) / "bench.toml"
            write_catalog(catalog, endpoints)
            wall, summary = run_probe(catalog, Path(tmp) / "full", args.timeout, args.concurrency)
            rss = summary["peak_rss_mb"]
            apps = summary["apps"]
            print(
                f"endpoints: {args.endpoints} ({args.endpoints // 2} silently dropping), "
                f"timeout {args.timeout} s"
            )
            print(
                f"full run (concurrency {args.concurrency}): run {summary['run_seconds']:.2f} s = "
                f"{summary['run_seconds'] / args.timeout:.2f} x timeout "
                f"(process {wall:.2f} s with start-up); "
                f"records {summary['records']}, failures {summary['failures']}; {apps}"
            )
            print(
                f"peak RSS: measuring process {rss['probe']:.1f} MB; "
                f"the closing analysis (child process) {rss['analysis']:.1f} MB"
            )
            if not args.skip_serial:
                serial, _ = run_probe(catalog, Path(tmp) / "serial", args.timeout, 1)
                print(
                    f"same run at concurrency 1: process {serial:.2f} s "
                    f"({serial / wall:.0f}x slower)"
                )
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    main()
