"""Benchmark: load + verdicts over a million records, beside a naive per-record implementation.

Generates synthetic runs over the whole built-in catalog (every target, with the DNS, TCP, TLS and
HTTPS steps the runner plans) in a realistic mix — clean runs, apps blocked by DNS spoofing,
NXDOMAIN, IP drop, RST or SNI, SNI throttling, partial failures, degraded networks, runs cut by
the deadline, networks without IPv6, runs without controls, a few baseline runs — across many
ASNs, countries and days, and writes them as JSON Lines (one file per batch of runs). Then, each
in a fresh child process so peak memory is its own:

* vectorised: ``analysis.load`` + ``analysis.verdicts.verdicts`` (pandas / NumPy);
* naive: ``bench/naive_verdicts.py`` (json.loads per line, dicts and loops, the same rules and
  thresholds, imported from ``analysis``).

Prints wall time and peak RSS of each (end to end, and the rules alone on already-parsed data),
the speedups, and how many (run, app) verdicts agree. Targets: >= 20x faster than naive and
<= 30 s for 1M records on a 2-core machine.

    .venv/bin/python bench/bench_analysis.py [--records 1000000] [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probe.model import Failure, Target  # noqa: E402 - after the path fix for direct runs
from probe.runner import RELAY_CHECKS  # noqa: E402
from probe.targets import builtin_catalog  # noqa: E402
from tests.recordsets import BODY, Fate  # noqa: E402 - the tests' model of a target's fate

CATALOG: tuple[Target, ...] = tuple(builtin_catalog().targets)
NEUTRAL_SNI = "example.org"
EPOCH = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 60
COUNTRIES = ("RU", "RU", "RU", "IR", "TR", "BY", "KZ", "DE")
ASNS = tuple(f"AS{n}" for n in range(12000, 12060))
# Endpoints that fail from everywhere, baseline included (stale catalog entries): the baseline
# must keep their failures out of the evidence.
STALE: dict[str, dict[str, Any]] = {
    "wa-g-5222": {"tcp": Failure.GENERIC_TIMEOUT},
    "sig-storage-443": {"tls_real": Failure.SSL_UNKNOWN_AUTHORITY},
}


# --- fates: what the network does to each target -------------------------------------------------


FateFor = Callable[[Target, random.Random], Fate]


def _blocked(mechanism: str) -> FateFor:
    def fate(target: Target, rng: random.Random) -> Fate:
        if mechanism == "dns_spoof" and target.host:
            return Fate(dns_bogus=True)
        if mechanism == "dns_nxdomain" and target.host:
            return Fate(dns=Failure.DNS_NXDOMAIN)
        if mechanism == "dns_mismatch" and target.host:
            return Fate(dns_mismatch=True, tcp=Failure.GENERIC_TIMEOUT)
        if mechanism == "ip_drop":
            return Fate(tcp=Failure.GENERIC_TIMEOUT)
        if mechanism == "rst":
            return Fate(tcp=Failure.CONNECTION_RESET)
        if mechanism == "tls_rst":
            return Fate(tls_real=Failure.CONNECTION_RESET)
        if mechanism == "tls_sni":
            return Fate(tls_real=Failure.GENERIC_TIMEOUT)
        if mechanism == "handshake_drop":
            return Fate(handshake=Failure.GENERIC_TIMEOUT)
        if mechanism == "handshake_rst":
            return Fate(handshake=Failure.CONNECTION_RESET)
        # Address-only targets cannot be DNS-blocked: the censor drops them instead.
        return Fate(tcp=Failure.GENERIC_TIMEOUT)

    return fate


def _throttled(target: Target, rng: random.Random) -> Fate:
    rate = rng.uniform(120_000, 160_000)
    # At ~140 kbit/s the 256 KiB body outlasts the 10 s timeout: the GET fails with its bytes.
    return Fate(
        real_bps=rate,
        real_bytes=int(rate / 8 * 10),
        http_real=Failure.GENERIC_TIMEOUT,
        neutral_bps=rng.uniform(4e6, 20e6),
    )


def _partial(target: Target, rng: random.Random) -> Fate:
    return Fate(tcp=Failure.GENERIC_TIMEOUT) if rng.random() < 0.5 else Fate()


def _degraded(target: Target, rng: random.Random) -> Fate:
    lost = Fate(
        tcp=Failure.GENERIC_TIMEOUT, quic=Failure.GENERIC_TIMEOUT, relay=Failure.GENERIC_TIMEOUT
    )
    return lost if rng.random() < 0.85 else Fate()


def _calls_blocked(target: Target, rng: random.Random) -> Fate:
    # Call servers silent, signaling untouched (Russia from August 2025, METHOD.md).
    return Fate(relay=Failure.GENERIC_TIMEOUT)


def _udp_dropped(target: Target, rng: random.Random) -> Fate:
    # A mobile network dropping unknown UDP: call servers, STUN controls and QUIC alike.
    return Fate(relay=Failure.GENERIC_TIMEOUT, quic=Failure.GENERIC_TIMEOUT)


def _quic_dropped(target: Target, rng: random.Random) -> Fate:
    # QUIC v1 Initials dropped network-wide (METHOD.md, 2022): HTTP/3 fails, TCP is untouched.
    return Fate(quic=Failure.GENERIC_TIMEOUT)


def _ok(target: Target, rng: random.Random) -> Fate:
    # A healthy network still loses the odd connection.
    return Fate(tcp=Failure.GENERIC_TIMEOUT) if rng.random() < 0.01 else Fate()


@dataclass(slots=True)
class Scenario:
    """A run's story: a fate per app (others ok), and run-wide twists."""

    name: str
    per_app: dict[str, FateFor]
    apps: tuple[str, ...] = ("whatsapp", "telegram", "signal", "control")
    deadline_cut: float = 0.0
    no_ipv6: bool = False
    everyone: FateFor | None = None


def pick_scenario(rng: random.Random) -> Scenario:
    """The mix of runs: mostly clean, then the ways a censor or a network fails an app."""
    roll = rng.random()
    app = rng.choice(("whatsapp", "telegram", "signal"))
    if roll < 0.40:
        return Scenario("ok", {}, no_ipv6=rng.random() < 0.3)
    if roll < 0.62:
        mechanism = rng.choice(
            (
                "dns_spoof",
                "dns_nxdomain",
                "dns_mismatch",
                "ip_drop",
                "rst",
                "tls_rst",
                "tls_sni",
                "handshake_drop",
                "handshake_rst",
            )
        )
        if mechanism.startswith("tls"):
            app = "signal"  # the only app whose signaling speaks TLS
        if mechanism.startswith("handshake"):
            app = rng.choice(("whatsapp", "telegram"))  # the apps with a protocol handshake
        return Scenario(f"blocked:{app}:{mechanism}", {app: _blocked(mechanism)})
    if roll < 0.67:
        return Scenario(f"throttled:{app}", {app: _throttled})
    if roll < 0.70:
        calls_app = rng.choice(("whatsapp", "telegram"))
        return Scenario(f"calls_blocked:{calls_app}", {calls_app: _calls_blocked})
    if roll < 0.72:
        return Scenario("udp_dropped", {}, everyone=_udp_dropped)
    if roll < 0.78:
        return Scenario(f"partial:{app}", {app: _partial})
    if roll < 0.82:
        return Scenario("degraded", {}, everyone=_degraded)
    if roll < 0.85:
        return Scenario("quic_dropped", {}, everyone=_quic_dropped)
    if roll < 0.92:
        return Scenario("deadline", {}, deadline_cut=rng.uniform(0.3, 1.0))
    if roll < 0.96:
        return Scenario(
            f"no_controls:{app}",
            {app: _blocked("ip_drop")},
            apps=("whatsapp", "telegram", "signal"),
        )
    return Scenario("ok-no-ipv6", {}, no_ipv6=True)


# --- records -------------------------------------------------------------------------------------


def _address(host: str, salt: str) -> str:
    digest = hashlib.blake2b(f"{host}/{salt}".encode(), digest_size=2).digest()
    return f"203.0.113.{1 + digest[0] % 250}"


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


@dataclass(slots=True)
class _Writer:
    rng: random.Random
    run_id: str
    probe: dict[str, str]
    start: datetime
    lines: list[str]
    clock: float = 0.0

    def add(
        self,
        target: Target,
        address: str | None,
        check: str,
        tx: int,
        failure: str | None,
        details: dict[str, Any],
        timings: dict[str, float],
    ) -> None:
        self.clock += self.rng.uniform(0.001, 0.05)
        if failure is not None:
            details["error"] = f"[Errno 110] {failure} ({target.host or address})"
            if failure == Failure.INTERRUPTED:
                details["deadline_cut"] = True
        record = {
            "schema_version": 1,
            "measurement_id": _hex(self.rng),
            "run_id": self.run_id,
            "software_name": "ringprobe",
            "software_version": "0.1.0",
            "start_time": (self.start + timedelta(seconds=self.clock)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "runtime": round(self.rng.uniform(0.01, 0.4), 6),
            "t0": round(self.clock, 6),
            "probe": self.probe,
            "app": target.app,
            "target": {
                "id": target.id,
                "role": target.role,
                "host": target.host,
                "address": address,
                "port": target.port,
                "transport": target.transport,
                "expect": target.expect,
            },
            "check": check,
            "transaction_id": tx,
            "failure": failure,
            "timings": timings,
            "details": details,
        }
        self.lines.append(json.dumps(record, separators=(",", ":")))


def _dns_details(resolver: str, host: str, addrs: list[str], rcode: str | None) -> dict[str, Any]:
    server = "192.0.2.53" if resolver == "system" else "https://1.1.1.1/dns-query"
    details: dict[str, Any] = {
        "resolver": resolver,
        "server": server,
        "answers": [{"type": "A", "value": a, "ttl": 300} for a in addrs],
        "addresses": addrs,
        "bogus": [a for a in addrs if a.startswith("10.")],
        "queries": [
            {"type": t, "rcode": rcode, "failure": None, "attempts": [{"server": server}]}
            for t in ("A", "AAAA")
        ],
    }
    if rcode is not None:
        details["rcode"] = rcode
    return details


def _quic(
    w: _Writer, target: Target, address: str, tx: int, failure: str | None, source: str
) -> None:
    details: dict[str, Any] = {"address_source": source, "handshake_done": failure is None}
    if failure is None:
        details.update(quic_version=1, alpn="h3", status_code=200, body_bytes=1256)
    w.add(target, address, "quic", tx, failure, details, {"handshake": 0.05})


def _relay(
    w: _Writer,
    target: Target,
    address: str,
    tx: int,
    check: str,
    failure: str | None,
    source: str,
) -> None:
    answered = failure is None
    attempts = [{"sent": 0.0, "answered": answered, "rtt": 0.03 if answered else None}]
    if not answered:
        attempts += [{"sent": t, "answered": False, "rtt": None} for t in (0.5, 1.5)]
    details: dict[str, Any] = {
        "address_source": source,
        "answered": answered,
        "attempts": attempts,
        "bytes_sent": 20 * len(attempts),
        "bytes_received": 32 if answered else 0,
        "unmatched": 0,
        "invalid": 0,
    }
    w.add(target, address, check, tx, failure, details, {"answer": 0.03} if answered else {})


def _handshake(w: _Writer, target: Target, address: str, tx: int, failure: str | None) -> None:
    answered = failure is None
    if target.expect == "mtproto":
        check = "mtproto"
        details: dict[str, Any] = {
            "framing": "intermediate",
            "dc_id": target.dc,
            "res_pq": answered,
        }
        details["bytes_sent"] = 108
    else:
        check = "whatsapp_chat"
        details = {"server_hello": answered, "bytes_sent": 43}
    details["bytes_received"] = 84 if answered else 0
    w.add(target, address, check, tx, failure, details, {"connect": 0.03, "answer": 0.06})


def _transaction(w: _Writer, target: Target, tx: int, fate: Fate, cut: bool) -> None:
    """The records the runner writes for one target (see probe/runner.py _measure_target)."""
    address = target.address
    if target.host is not None:
        real = _address(target.host, w.probe["asn"])
        if fate.dns_bogus:
            system = ["10.10.34.35"]
        elif fate.dns_mismatch:
            system = [_address(target.host, "spoof").replace("203.0.113", "198.51.100")]
        else:
            system = [real]
        answers = {"system": [] if fate.dns is not None else system, "doh": [real]}
        for name, addrs in answers.items():
            failure = fate.dns if name == "system" else None
            rcode = None if failure is not None else "NOERROR"
            if failure == Failure.DNS_NXDOMAIN:
                rcode = "NXDOMAIN"
            details = _dns_details(name, target.host, addrs, rcode)
            if failure is None:
                other = "doh" if name == "system" else "system"
                if answers[other]:
                    details["compared_with"] = [other]
                    details["consistent"] = bool(set(answers[other]) & set(addrs))
                else:
                    details["compared_with"] = []
                    details["consistent"] = None
            check = "dns_system" if name == "system" else "dns_doh"
            w.add(target, None, check, tx, failure, details, {"done": 0.02})
        if address is None:
            usable = [a for a in answers["system"] if not a.startswith("10.")] or answers["doh"]
            address = usable[0] if usable else None
    if address is None:
        return
    source = "catalog" if target.address else ("system" if not fate.dns_bogus else "doh")
    if target.address is None and fate.dns is not None:
        source = "doh"
    if target.transport == "udp":
        if target.expect == "http3":
            _quic(w, target, address, tx, Failure.INTERRUPTED if cut else fate.quic, source)
        for check in RELAY_CHECKS.get(target.expect, ()):
            _relay(
                w, target, address, tx, check, Failure.INTERRUPTED if cut else fate.relay, source
            )
        return
    tcp = Failure.INTERRUPTED if cut else fate.tcp
    w.add(target, address, "tcp_connect", tx, tcp, {"address_source": source}, {"connect": 0.03})
    if tcp is None and target.expect in ("mtproto", "whatsapp"):
        _handshake(w, target, address, tx, fate.handshake)
    if tcp is not None or target.expect not in ("tls", "https"):
        return
    handshakes = {"real": fate.tls_real, "neutral": fate.tls_neutral}
    for kind, failure in handshakes.items():
        sni = target.host if kind == "real" else NEUTRAL_SNI
        details = {"sni": sni, "sni_kind": kind}
        if failure is None:
            details.update(
                tls_version="TLSv1.3",
                cipher="TLS_AES_128_GCM_SHA256",
                alpn="h2",
                cert_subject_cn=target.host,
                cert_issuer_cn="Example CA",
                cert_san=[target.host],
                cert_not_after="2027-03-01T00:00:00Z",
                cert_sha256=hashlib.sha256(str(target.host).encode()).hexdigest(),
            )
        w.add(target, address, "tls_handshake", tx, failure, details, {"handshake": 0.08})
    if target.expect != "https":
        return
    gets = {
        "real": (fate.http_real, fate.real_bps, fate.real_bytes, fate.tls_real),
        "neutral": (fate.http_neutral, fate.neutral_bps, fate.neutral_bytes, fate.tls_neutral),
    }
    for kind, (failure, bps, size, handshake) in gets.items():
        if handshake is not None:
            continue  # the runner GETs only over a handshake that worked
        details = {
            "sni": target.host if kind == "real" else NEUTRAL_SNI,
            "sni_kind": kind,
            "status": 200,
            "http_version": "HTTP/1.1",
            "headers": {"server": "nginx", "content-type": "text/html"},
            "body_bytes": size,
            "truncated": size >= BODY,
            "body_sha256": "0123456789abcdef",
            "throughput_bps": round(bps, 1),
        }
        w.add(target, address, "http_get", tx, failure, details, {"first_byte": 0.1, "done": 1.0})


def run_lines(rng: random.Random, scenario: Scenario, vantage: str = "volunteer") -> list[str]:
    """Every record line of one run under ``scenario``."""
    day = rng.randrange(DAYS)
    start = EPOCH + timedelta(days=day, seconds=rng.randrange(86_400))
    cc = "DE" if vantage == "baseline" else rng.choice(COUNTRIES)
    asn = "AS3320" if vantage == "baseline" else rng.choice(ASNS)
    probe = {"cc": cc, "asn": asn, "network_type": "wired", "vantage": vantage}
    w = _Writer(rng, _hex(rng), probe, start, [])
    targets = [t for t in CATALOG if t.app in scenario.apps]
    # The deadline cuts the last transactions the runner started (in catalog order here).
    cut_from = int(len(targets) * (1 - scenario.deadline_cut)) if scenario.deadline_cut else None
    for tx, target in enumerate(targets, 1):
        if scenario.everyone is not None:
            fate = scenario.everyone(target, rng)
        elif target.app in scenario.per_app:
            fate = scenario.per_app[target.app](target, rng)
        else:
            fate = _ok(target, rng)
        if target.id in STALE:
            fate = Fate(**STALE[target.id])
        if scenario.no_ipv6 and target.address and ":" in target.address:
            fate = Fate(tcp=Failure.NETWORK_UNREACHABLE)
        cut = cut_from is not None and tx > cut_from
        _transaction(w, target, tx, fate, cut)
    return w.lines


def generate(directory: Path, records: int, seed: int = 1, runs_per_file: int = 50) -> int:
    """Write about ``records`` records (whole runs) as JSON Lines files under ``directory``;
    returns the number written. About 3% of runs are baseline runs."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    batch: list[str] = []
    runs_in_batch = 0
    index = 0

    def flush() -> None:
        nonlocal batch, runs_in_batch, index
        if batch:
            path = directory / f"ringprobe-batch-{index:05d}.jsonl"
            path.write_text("\n".join(batch) + "\n", encoding="utf-8")
            index += 1
        batch, runs_in_batch = [], 0

    while written < records:
        if rng.random() < 0.03:
            lines = run_lines(rng, Scenario("baseline", {}), vantage="baseline")
        else:
            lines = run_lines(rng, pick_scenario(rng))
        lines = lines[: records - written]  # the last run may be cut short, as a deadline would
        batch.extend(lines)
        written += len(lines)
        runs_in_batch += 1
        if runs_in_batch >= runs_per_file:
            flush()
    flush()
    return written


# --- measuring, each side in its own process -----------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_vectorised(directory: Path, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    import pandas as pd  # imported inside the timing: start-up is part of the cost

    from analysis.load import load
    from analysis.verdicts import verdicts

    t1 = time.perf_counter()
    df = load(directory)
    t2 = time.perf_counter()
    table = verdicts(df)
    t3 = time.perf_counter()
    table[["run_id", "app", "verdict", "rule"]].to_csv(out, index=False)
    peak = _peak_rss_mb()
    # For comparison only: the same table cached as Parquet, as a notebook would keep it.
    cached = out.with_suffix(".parquet")
    df.to_parquet(cached)
    del df
    t4 = time.perf_counter()
    again = verdicts(pd.read_parquet(cached))
    t5 = time.perf_counter()
    assert again[["run_id", "app", "verdict", "rule"]].equals(
        table[["run_id", "app", "verdict", "rule"]]
    )
    return {
        "import": t1 - t0,
        "load": t2 - t1,
        "rules": t3 - t2,
        "total": t3 - t0,
        "parquet_total": t5 - t4,
        "rows": float(len(table)),
        "peak_rss_mb": peak,
    }


def _child_naive(directory: Path, out: Path) -> dict[str, float]:
    """The naive implementation as one would run it: stream the files through the rules."""
    from bench.naive_verdicts import iter_records, judge

    t0 = time.perf_counter()
    result = judge(iter_records(sorted(directory.glob("*.jsonl"))))
    t1 = time.perf_counter()
    with out.open("w", encoding="utf-8") as handle:
        handle.write("run_id,app,verdict,rule\n")
        for (run_id, app), (verdict, rule) in sorted(result.items()):
            handle.write(f"{run_id},{app},{verdict},{rule}\n")
    return {"total": t1 - t0, "rows": float(len(result)), "peak_rss_mb": _peak_rss_mb()}


def _child_naive_rules(directory: Path, out: Path) -> dict[str, float]:
    """The naive rules alone, over records already parsed into a list (json time excluded)."""
    from bench.naive_verdicts import judge, read_records

    records = read_records(sorted(directory.glob("*.jsonl")))
    t0 = time.perf_counter()
    result = judge(records)
    t1 = time.perf_counter()
    return {"rules": t1 - t0, "rows": float(len(result)), "peak_rss_mb": _peak_rss_mb()}


CHILDREN = {
    "vectorised": _child_vectorised,
    "naive": _child_naive,
    "naive-rules": _child_naive_rules,
}


def _measure(side: str, directory: Path, out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", side, "--dir", str(directory), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _read_csv(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        run_id, app, verdict, rule = line.split(",")
        rows[(run_id, app)] = (verdict, rule)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs-per-file", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    parser.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.dir, args.out)))
        return

    with tempfile.TemporaryDirectory(prefix="ringprobe-bench-") as tmp:
        directory = args.keep or Path(tmp) / "records"
        t0 = time.perf_counter()
        written = generate(directory, args.records, args.seed, args.runs_per_file)
        size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
        files = len(list(directory.glob("*.jsonl")))
        print(
            f"generated {written:,} records in {files} files, {size / 1e6:.0f} MB, "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        vec = _measure("vectorised", directory, Path(tmp) / "vectorised.csv")
        naive = _measure("naive", directory, Path(tmp) / "naive.csv")
        rules = _measure("naive-rules", directory, Path(tmp) / "unused.csv")
        ours_s = vec["load"] + vec["rules"]
        print(
            f"vectorised: load {vec['load']:.2f} s + verdicts {vec['rules']:.2f} s = "
            f"{ours_s:.2f} s (pandas/analysis import {vec['import']:.2f} s more); "
            f"peak RSS {vec['peak_rss_mb']:.0f} MB; {vec['rows']:.0f} verdict rows"
        )
        print(
            f"naive:      {naive['total']:.2f} s streaming (json.loads + rules); "
            f"peak RSS {naive['peak_rss_mb']:.0f} MB; {naive['rows']:.0f} verdict rows"
        )
        print(
            f"naive rules alone, records already parsed: {rules['rules']:.2f} s "
            f"(peak RSS {rules['peak_rss_mb']:.0f} MB with every record held as dicts)"
        )
        print(
            f"same table cached as Parquet: read_parquet + verdicts {vec['parquet_total']:.2f} s, "
            f"{naive['total'] / vec['parquet_total']:.1f}x faster than naive (JSON not re-parsed)"
        )
        print(
            f"speedup: load+verdicts {naive['total'] / ours_s:.1f}x "
            f"(with the import {naive['total'] / vec['total']:.1f}x); "
            f"verdicts alone vs naive rules alone {rules['rules'] / vec['rules']:.1f}x"
        )
        ours = _read_csv(Path(tmp) / "vectorised.csv")
        theirs = _read_csv(Path(tmp) / "naive.csv")
        keys = set(ours) | set(theirs)
        same = sum(1 for k in keys if ours.get(k) == theirs.get(k))
        print(f"agreement: {same} of {len(keys)} (run, app) verdicts and rules identical")
        verdict_counts: dict[str, int] = {}
        for verdict, _rule in ours.values():
            verdict_counts[verdict] = verdict_counts.get(verdict, 0) + 1
        print("verdict mix: " + ", ".join(f"{k} {v}" for k, v in sorted(verdict_counts.items())))
        budget = "within" if ours_s <= 30 else "OVER"
        print(f"load+verdicts {ours_s:.2f} s: {budget} the 30 s budget")
        if same != len(keys):
            for k in sorted(keys):
                if ours.get(k) != theirs.get(k):
                    print(f"  differs: {k}: vectorised {ours.get(k)} naive {theirs.get(k)}")
                    break
            sys.exit(1)


if __name__ == "__main__":
    main()
