"""Benchmark: how often the call-flow analysis detects a rate cap and a cut, and how often it
cries wolf on a lossy network, with what traffic and time per run.

Issue 6's targets: in the lab, N runs (default 30) each of

1. ``cap``: call-shaped flows policed to 50% of the voice flow's rate (per flow; the flows are
   recognised by their first datagram, as in the built-in ``calls-police-half``);
2. ``cut``: call-shaped flows dropped after 5 s of sending (``ct original packets``, as in
   ``calls-cut-after-n``);
3. ``loss``: 20% of all UDP lost at random (``numgen``), call and control alike;

>= 95% detection of the cap (``calls_throttled``) and of the cut (``calls_cut``), <= 1 false
``calls_*`` verdict in the lossy runs, <= 1 MB of call-test traffic per app per run. Each run is
one ``ringprobe run`` in the lab's client namespace with call tests against the lab's reflector
(WhatsApp and Telegram); verdicts come from the records through ``analysis``, as for any
scenario. Traffic is counted from the run's ``call_flow`` and ``sni_stream`` records (datagrams
and bytes sent and echoed; stream bytes), per app.

Needs root (the lab). The lab ``bench-calls`` is brought up at the start and down at the end.

    .venv/bin/python bench/bench_calls.py [--runs 30] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probe.lab import Lab  # noqa: E402 - after the path fix for direct runs
from probe.lab import scenario as sc  # noqa: E402

APPS = ("whatsapp", "telegram")
INTERVAL = 0.06  # the voice profile: one datagram per 60 ms (docs/callflow.md)
OPENING = 3  # the STUN / reflector-hello datagrams before the media (docs/callflow.md)
# The voice flow's rate as nft counts it (IP packets): 90-170-byte UDP payloads, 130 on average,
# plus 28 bytes of IPv4 and UDP headers, one per 60 ms.
VOICE_BPS = (130 + 28) / INTERVAL
CUT_AFTER_S = 5.0
LOSS_PERCENT = 20
DETECTION_TARGET = 0.95
MAX_FALSE = 1
TRAFFIC_TARGET = 1_000_000

# The first datagram of a call-shaped flow: WhatsApp's STUN Allocate (magic cookie at byte 4) or
# Telegram's reflector hello (12 x FF, then FE FF FF FF, from byte 24); both as calls-police-half.
_MARK = [
    "{ip} daddr @reflector{six} udp dport {{ 3478, 597, 40000 }} ct state new "
    "@th,96,32 0x2112a442 ct mark set 0x63",
    "{ip} daddr @reflector{six} udp dport {{ 3478, 597, 40000 }} ct state new "
    "@th,192,128 0xfffffffffffffffffffffffffeffffff ct mark set 0x63",
]


def _both_families(rules: list[str]) -> list[str]:
    return [r.format(ip=ip, six=six) for ip, six in (("ip", ""), ("ip6", "6")) for r in rules]


def conditions(duration: float) -> dict[str, tuple[str, list[str]]]:
    """Condition -> (the verdict that detects it, or "" for none wanted; the nft rules)."""
    half = round(VOICE_BPS / 2)
    cut_packets = OPENING + round(CUT_AFTER_S / INTERVAL)
    if duration <= CUT_AFTER_S + 1:
        raise SystemExit(f"--duration must exceed {CUT_AFTER_S + 1:g} s for a cut after 5 s")
    return {
        "cap": (
            "calls_throttled",
            _both_families(
                [
                    *_MARK,
                    "{ip} daddr @reflector{six} ct mark 0x63 meter call_police{six} "
                    f"{{{{ {{ip}} saddr . udp sport limit rate over {half} bytes/second }}}} drop",
                ]
            ),
        ),
        "cut": (
            "calls_cut",
            _both_families(
                [
                    *_MARK,
                    f"{{ip}} daddr @reflector{{six}} ct mark 0x63 ct original packets gt "
                    f"{cut_packets} drop",
                ]
            ),
        ),
        "loss": ("", [f"meta l4proto udp numgen random mod 100 < {LOSS_PERCENT} drop"]),
    }


def scenario_text(name: str, rules: list[str], duration: float) -> str:
    lines = [f'name = "bench-{name}"', f'summary = "bench_calls: {name}"', "call_flows = true"]
    lines.append(f"call_duration = {duration:g}")
    lines.append("nft = [" + ", ".join(json.dumps(r) for r in rules) + "]")
    lines += ["", "[expect]", 'control = "ok"']  # the parser wants an expectation; unused here
    return "\n".join(lines) + "\n"


def traffic(records_path: Path) -> dict[str, int]:
    """Per app, bytes of the call test: call_flow datagrams sent and echoed, sni_stream bytes."""
    total: Counter[str] = Counter()
    for line in records_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        details = record["details"]
        if record["check"] == "call_flow":
            total[record["app"]] += int(details.get("bytes_sent") or 0)
            total[record["app"]] += int(details.get("bytes_echoed") or 0)
        elif record["check"] == "sni_stream":
            total[record["app"]] += int(details.get("body_bytes") or 0)
    return dict(total)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30, help="runs per condition")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per call flow")
    parser.add_argument("--name", default="bench-calls", help="lab name")
    parser.add_argument(
        "--only", choices=("cap", "cut", "loss"), action="append", help="conditions to run"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    wanted = conditions(args.duration)
    chosen = args.only or list(wanted)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    lab = Lab(args.name)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    try:
        up = lab.up()
        print(
            f"lab {args.name!r} up in {up.elapsed:.1f} s; {args.runs} run(s) per condition, "
            f"call flows of {args.duration:g} s"
        )
        for n in range(args.runs):
            for name in chosen:
                rules = wanted[name][1]
                scenario = sc.parse_scenario(
                    scenario_text(name, rules, args.duration), f"bench_calls:{name}"
                )
                result = sc.run_scenario(lab, scenario)
                verdicts = {a.app: (a.verdict or "-", a.mechanism) for a in result.apps}
                results[name].append(
                    {
                        "verdicts": verdicts,
                        "traffic": traffic(result.records_path),
                        "elapsed": result.elapsed,
                    }
                )
                print(
                    f"  run {n + 1} {name}: "
                    + ", ".join(f"{app} {verdicts.get(app, ('-', None))[0]}" for app in APPS),
                    flush=True,
                )
    finally:
        lab.down()
    report(results, wanted)


def report(
    results: dict[str, list[dict[str, Any]]], wanted: dict[str, tuple[str, list[str]]]
) -> None:
    print(
        f"\n{'condition':9} {'app':9} {'runs':>4} {'detected':>9} {'false calls_*':>13} "
        f"{'traffic med KB':>14} {'max KB':>7} {'run med s':>9}"
    )
    for name, runs in results.items():
        detects = wanted[name][0]
        for app in APPS:
            verdicts = [r["verdicts"].get(app, ("-", None))[0] for r in runs]
            sizes = [r["traffic"].get(app, 0) for r in runs]
            detected = sum(v == detects for v in verdicts) if detects else 0
            false = 0 if detects else sum(v.startswith("calls_") for v in verdicts)
            rate = f"{detected}/{len(runs)}" if detects else "-"
            print(
                f"{name:9} {app:9} {len(runs):>4} {rate:>9} "
                f"{false if not detects else '-':>13} {statistics.median(sizes) / 1000:>14.1f} "
                f"{max(sizes) / 1000:>7.1f} {statistics.median(r['elapsed'] for r in runs):>9.1f}"
            )
        mix = Counter(
            f"{app} {r['verdicts'].get(app, ('-', None))[0]}" for r in runs for app in APPS
        )
        print(f"{'':9} verdicts: " + ", ".join(f"{k} x{v}" for k, v in sorted(mix.items())))
    print(
        f"\ntargets: detection >= {DETECTION_TARGET:.0%} (cap, cut); <= {MAX_FALSE} false calls_* "
        f"verdict in the lossy runs; <= {TRAFFIC_TARGET / 1e6:g} MB per app per run"
    )


if __name__ == "__main__":
    main()
