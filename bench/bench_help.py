"""Benchmark: wall time of `ringprobe --help` (target <= 0.3 s), and which heavy modules it loads.

.venv/bin/python bench/bench_help.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("aiohttp", "dns", "scapy", "aioquic", "pandas", "rich")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("ringprobe")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "probe.cli", "--help"]
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = f"import sys, probe.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"`ringprobe --help` over {args.repeat} runs: "
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )
    print(f"heavy modules loaded by the CLI: {loaded or 'none'}")


if __name__ == "__main__":
    main()
