"""Benchmark: the lab's cold `up`, each built-in scenario, and the whole `ringprobe lab demo`.

Targets (issue 4): `lab up` <= 10 s from nothing; the demo over every built-in scenario <= 5 min.

1. Cold `up`: a lab of its own name is taken down, then built from nothing (namespaces, nft
   sets, certificates, every server listening), ``--ups`` times; `down` is timed too.
2. The demo, ``--demos`` times, as a user runs it: ``ringprobe lab demo --json`` in a child
   process on a lab that is down, so each includes interpreter start-up, `up`, every scenario and
   `down`. Prints each scenario's time and, over the repeats, how often each (scenario, app)
   expectation was met: a flaky scenario shows as a count below the number of demos.

Needs root (the lab); everything stays inside the lab's namespaces.

    .venv/bin/python bench/bench_lab.py [--ups 3] [--demos 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from probe.lab import Lab

UP_TARGET = 10.0
DEMO_TARGET = 300.0
# Bound on one demo run: ten times its target means something is broken.
DEMO_TIMEOUT = 10 * DEMO_TARGET


def cold_ups(lab: Lab, count: int) -> tuple[list[float], list[float]]:
    """Seconds of `up` from nothing, and of the `down` that follows each."""
    ups: list[float] = []
    downs: list[float] = []
    lab.down()
    for _ in range(count):
        result = lab.up()
        assert not result.reused
        ups.append(result.elapsed)
        downs.append(lab.down().elapsed)
    return ups, downs


def demo(name: str) -> tuple[float, dict[str, Any], int]:
    """One `ringprobe lab demo --json` from a lab that is down: wall time, summary, exit code."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "probe.cli", "lab", "demo", "--json", "--name", name],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"lab demo failed (exit {done.returncode}): {done.stderr.strip()}")
    return wall, json.loads(done.stdout), done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ups", type=int, default=3, help="cold `up`s to time")
    parser.add_argument("--demos", type=int, default=1, help="whole demos to run")
    args = parser.parse_args()
    name = f"bench-{os.getpid():x}"
    lab = Lab(name)
    try:
        ups, downs = cold_ups(lab, args.ups)
        print(
            f"lab up (cold) over {len(ups)} runs: median {statistics.median(ups):.2f} s, "
            f"max {max(ups):.2f} s (target <= {UP_TARGET:.0f} s); "
            f"lab down: median {statistics.median(downs):.2f} s"
        )
        walls: list[float] = []
        times: dict[str, list[float]] = defaultdict(list)
        met: dict[tuple[str, str], int] = defaultdict(int)
        rows: dict[tuple[str, str], tuple[str, str]] = {}
        for _ in range(args.demos):
            wall, summary, _code = demo(name)
            walls.append(wall)
            for scenario in summary["scenarios"]:
                times[scenario["scenario"]].append(scenario.get("elapsed", float("nan")))
                for app in scenario.get("apps", []):
                    if app["expected"] is None:
                        continue
                    key = (scenario["scenario"], app["app"])
                    met[key] += bool(app["pass"])
                    got = app["got"]
                    rows[key] = (_describe(app["expected"]), _describe(got))
        print(f"\nper scenario over {args.demos} demo(s): seconds (median, max)")
        for scenario, seconds in times.items():
            print(f"  {scenario:22} {statistics.median(seconds):5.1f} {max(seconds):5.1f}")
        print(f"\nexpectations met over {args.demos} demo(s)")
        print(f"  {'scenario':22} {'app':9} {'expected':28} {'got (last)':28} met")
        for (scenario, app), (expected, got) in rows.items():
            count = met[(scenario, app)]
            print(f"  {scenario:22} {app:9} {expected:28} {got:28} {count}/{args.demos}")
        print(
            f"\nwhole `ringprobe lab demo` (start-up, up, {len(times)} scenarios, down) over "
            f"{len(walls)} run(s): median {statistics.median(walls):.1f} s, max {max(walls):.1f} s "
            f"(target <= {DEMO_TARGET:.0f} s)"
        )
    finally:
        lab.down()


def _describe(fields: dict[str, Any]) -> str:
    details = ", ".join(str(fields[k]) for k in ("layer", "mechanism") if fields.get(k))
    return f"{fields['verdict']} ({details})" if details else str(fields["verdict"])


if __name__ == "__main__":
    main()
