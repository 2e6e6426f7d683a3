"""Make the sample data sets of measurements/samples/ by running the lab.

Every record comes from a real ``ringprobe run`` in the lab's client namespace, through the
lab's emulated censor (a built-in scenario's rules on the tspu). The runs are spread over
simulated days, networks and network types by the probe's own metadata options (``--lab-date``,
``--asn``, ``--cc``, ``--network-type``, all recorded with ``vantage = "lab"``); no record is
edited afterwards. Each data set gets a METADATA file saying how it was made: the commit, the
scenario of every (network, day), the run counts, and the command line.

Data sets (``--only`` picks some):

* ``onset``: two Russian networks (documentation ASNs, RFC 5398) over 16 days. AS64500 (mobile)
  is open until 2025-08-12 and has its call servers dropped by address from 2025-08-13 on
  (``call-relays-ip-drop``: messaging keeps working); AS64501 (wired) stays open apart from two
  days of 99% UDP loss (``udp-random-loss``). Four runs per network and day. The case-study
  notebook finds the onset in this data.
* ``callflows``: call tests against the lab's reflector (call flows on): an open path, a cut
  after ~2 s and a policer at about half the voice rate, three runs each, for the flow views
  (timelines, time to cut, call vs control).

Needs root (the lab). Takes about 15 minutes on a 2-core machine.

    .venv/bin/python measurements/samples/make_samples.py [--only onset] [--runs 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probe.lab import Lab  # noqa: E402 - after the path fix for direct runs
from probe.lab import scenario as sc  # noqa: E402

HERE = Path(__file__).resolve().parent
LAB_NAME = "samples"
# The first day of the onset data set and its length; Roskomnadzor announced the restriction of
# WhatsApp and Telegram calls on 2025-08-13 (METHOD.md, "Calls (Aug 2025 on)"): the simulated
# onset sits on that day.
FIRST_DAY = date(2025, 8, 5)
DAYS = 16
ONSET_DAY = date(2025, 8, 13)
LOSSY_DAYS = (date(2025, 8, 9), date(2025, 8, 10))


@dataclass(frozen=True)
class Network:
    asn: str
    network_type: str
    cc: str = "RU"


MOBILE = Network("AS64500", "mobile")
WIRED = Network("AS64501", "wired")
REFLECTOR_NET = Network("AS64502", "wifi")


def onset_plan() -> list[tuple[Network, date, str]]:
    """(network, day, scenario) for every cell of the onset data set."""
    plan = []
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        plan.append((MOBILE, day, "call-relays-ip-drop" if day >= ONSET_DAY else "open-network"))
        plan.append((WIRED, day, "udp-random-loss" if day in LOSSY_DAYS else "open-network"))
    return plan


def callflows_plan() -> list[tuple[Network, date, str]]:
    day = date(2025, 8, 20)
    return [
        (REFLECTOR_NET, day, name)
        for name in ("calls-open-reflector", "calls-cut-after-n", "calls-police-half")
    ]


PLANS = {"onset": onset_plan, "callflows": callflows_plan}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(  # noqa: S603 - fixed arguments, our own repository
            ["git", "-C", str(ROOT), *args],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def commit() -> str:
    """The commit the data are made with, read before the first run, and whether the probe,
    the lab or this script differed from it then (they are what makes the records)."""
    head = _git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    changed = _git("status", "--porcelain", "--", "probe", "measurements/samples/make_samples.py")
    if changed:
        return f"{head}, with uncommitted changes to: " + ", ".join(
            line[3:] for line in changed.splitlines()
        )
    return head


def make(name: str, lab: Lab, runs: int, made_with: str) -> None:
    """Run every cell of data set ``name`` ``runs`` times; write records.jsonl.gz and METADATA."""
    plan = PLANS[name]()
    target = HERE / name
    cells: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix=f"samples-{name}-") as tmp:
        files: list[Path] = []
        for n, (network, day, scenario_name) in enumerate(plan, 1):
            scenario = sc.load_builtin(scenario_name)
            got: list[dict[str, str | None]] = []
            for k in range(runs):
                args = [
                    "--asn", network.asn, "--cc", network.cc,
                    "--network-type", network.network_type, "--lab-date", day.isoformat(),
                ]  # fmt: skip
                keep = Path(tmp) / f"{n:03d}-{k}"
                result = sc.run_scenario(lab, scenario, keep_records=keep, probe_args=args)
                files.append(result.records_path)
                got.append({a.app: a.verdict for a in result.apps})
            cells.append(
                {
                    "asn": network.asn,
                    "network_type": network.network_type,
                    "cc": network.cc,
                    "day": day.isoformat(),
                    "scenario": scenario_name,
                    "runs": runs,
                }
            )
            print(
                f"  {name} {n}/{len(plan)}: {network.asn} {day} {scenario_name}: "
                + "; ".join(", ".join(f"{app} {v}" for app, v in g.items()) for g in got[:1]),
                flush=True,
            )
        # Replaced only now, so an interrupted run leaves the previous data set as it was.
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        records = target / "records.jsonl.gz"
        lines = 0
        # mtime=0: the same records give the same bytes.
        with gzip.GzipFile(records, "wb", mtime=0) as out:
            for path in files:
                data = path.read_bytes()
                lines += data.count(b"\n")
                out.write(data)
    write_metadata(target, name, cells, runs, lines, made_with)


def write_metadata(
    target: Path,
    name: str,
    cells: list[dict[str, object]],
    runs: int,
    lines: int,
    made_with: str,
) -> None:
    header = [
        f"ringprobe sample data set {name!r}: records of real probe runs in the ringprobe lab.",
        "Made by: .venv/bin/python measurements/samples/make_samples.py "
        + " ".join(sys.argv[1:])
        + f" ({runs} runs per cell)",
        f"Commit: {made_with}",
        f"Made on: {date.today().isoformat()} (the records' dates are the simulated days below)",
        f"Records: {lines} in records.jsonl.gz ({len(cells) * runs} runs)",
        "How: each run is `ringprobe run` in the lab's client namespace against the lab catalog,",
        "through the built-in scenario named below (probe/lab/scenarios/<name>.toml) on the tspu.",
        "The network, country, network type and day come from the probe's own options (--asn,",
        "--cc, --network-type, --lab-date), recorded with vantage 'lab'; no record was edited.",
        "The ASNs are documentation ASNs (RFC 5398); every address is in the lab's documentation",
        "ranges (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). Licence: CC0 (made here).",
        "",
        "cells (asn network_type cc day scenario runs):",
    ]
    body = [
        f"  {c['asn']} {c['network_type']} {c['cc']} {c['day']} {c['scenario']} {c['runs']}"
        for c in cells
    ]
    (target / "METADATA").write_text("\n".join([*header, *body]) + "\n", encoding="utf-8")
    (target / "cells.json").write_text(json.dumps(cells, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(PLANS), action="append", help="data sets")
    parser.add_argument("--runs", type=int, default=4, help="runs per cell (network, day)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = args.only or list(PLANS)
    made_with = commit()
    lab = Lab(LAB_NAME)
    started = time.monotonic()
    try:
        lab.up()
        for name in names:
            runs = args.runs if name == "onset" else max(1, args.runs - 1)
            make(name, lab, runs, made_with)
    finally:
        lab.down()
    print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
