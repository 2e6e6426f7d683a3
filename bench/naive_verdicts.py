"""The verdict rules written the obvious way: json.loads per line, dicts, loops.

A reference for the benchmark (and a guard of its honesty): the same statuses, the same rules
in the same order and the same thresholds as ``analysis.features`` / ``analysis.rules``, with the
thresholds and the failure vocabulary imported from there, but no pandas and no NumPy. A test
(tests/unit/test_naive_agrees.py) checks that both give the same verdict and rule per (run, app).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import features as af
from analysis.features import (
    BASELINE_OK_SHARE,
    BLOCK_SHARE,
    CALL_ROLES,
    CONTROL_APP,
    CONTROL_FAIL_SHARE,
    CUTOFF_MAX_BYTES,
    CUTOFF_MIN_BPS,
    FAIL_CLASSES,
    FALLBACK_ROLES,
    MIN_BASELINE_RUNS,
    MIN_THROUGHPUT_BYTES,
    PARTIAL_SHARE,
    SIGNALING_ROLES,
    THROTTLE_MAX_BPS,
    THROTTLE_RATIO,
    UNTHROTTLED_RATIO,
    failure_kind,
    step_of,
)

STEPS = (
    "dns",
    "tcp",
    "tls_real",
    "tls_neutral",
    "http_real",
    "http_neutral",
    "handshake",
    "quic",
    "relay",
)
CALL_EXPECTS = ("stun", "turn", "wa_relay", "reflector")


def iter_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every record of the files, one json.loads per line; a record read twice counts once."""
    seen: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                if record["measurement_id"] in seen:
                    continue
                seen.add(record["measurement_id"])
                yield record


def read_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """All records of the files in a list (for timing the rules apart from the reading)."""
    return list(iter_records(paths))


@dataclass
class _Target:
    role: str = ""
    expect: str = ""
    steps: dict[str, int] = field(default_factory=dict)
    bogus_only: bool = False
    mismatch: bool = False
    from_catalog: bool = False
    from_system: bool = False
    ipv6: bool = False
    baseline: bool = False
    body: dict[str, float] = field(default_factory=dict)
    bps: dict[str, float] = field(default_factory=dict)


def _step_name(record: dict[str, Any]) -> str | None:
    step = step_of(record["check"], record["details"].get("sni_kind"))
    return None if step < 0 else STEPS[step]


class _Baseline:
    """Success counts per (target id, step) over baseline records, each record counted once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.ok: dict[tuple[str, str], int] = defaultdict(int)
        self.total: dict[tuple[str, str], int] = defaultdict(int)
        self.runs: dict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, record: dict[str, Any]) -> None:
        if record["measurement_id"] in self.seen:
            return
        self.seen.add(record["measurement_id"])
        step = _step_name(record)
        kind = failure_kind(record["failure"])
        if step is None or kind in (af.INTERRUPTED, af.NOT_ALLOWED):
            return
        key = (record["target"]["id"], step)
        self.total[key] += 1
        self.ok[key] += kind == af.OK
        self.runs[key].add(record["run_id"])

    def bad(self) -> set[tuple[str, str]]:
        """Pairs that succeed in fewer than BASELINE_OK_SHARE of their baseline records."""
        return {
            key
            for key, total in self.total.items()
            if self.ok[key] / total < BASELINE_OK_SHARE and len(self.runs[key]) >= MIN_BASELINE_RUNS
        }


def _failed(kind: int) -> bool:
    return kind > af.OK and kind not in (af.INTERRUPTED, af.NOT_ALLOWED)


def _status(t: _Target) -> tuple[str, str | None]:
    """Status and failure class of one target, in the order analysis.features._status reads."""
    dns = t.steps.get("dns", -1)
    tcp = t.steps.get("tcp", -1)
    tls_real = t.steps.get("tls_real", -1)
    tls_neutral = t.steps.get("tls_neutral", -1)
    http_real = t.steps.get("http_real", -1)
    http_neutral = t.steps.get("http_neutral", -1)
    handshake = t.steps.get("handshake", -1)
    quic = t.steps.get("quic", -1)
    # A later step's record implies the earlier ones worked, as analysis.features reads it.
    if tls_real == -1 and http_real != -1:
        tls_real = af.OK
    if tcp == -1 and (tls_real != -1 or tls_neutral != -1 or handshake != -1):
        tcp = af.OK
    dns_nx = dns == af.DNS_DENY
    dns_spoof = dns == af.DNS_BOGON or (dns == af.OK and t.bogus_only)
    if (dns_nx or dns_spoof or _failed(dns)) and not t.from_catalog:
        if dns_nx:
            return "failed", "dns_nxdomain"
        if dns_spoof:
            return "failed", "dns_spoof"
        return "failed", "dns_other"
    if t.expect == "http3" or t.expect in CALL_EXPECTS:
        udp = quic if t.expect == "http3" else t.steps.get("relay", -1)
        if udp == af.NOT_ALLOWED or (udp == -1 and dns == af.NOT_ALLOWED):
            return "not_allowed", None
        if udp == af.INTERRUPTED or (udp == -1 and dns == af.INTERRUPTED):
            return "interrupted", None
        if udp == -1:
            return "unmeasured", None
        if t.expect == "http3" and _failed(udp):
            return _spoofed(t, ("failed", "quic_failed"))
        if udp in (af.TIMEOUT, af.HOST_UNREACH, af.NET_UNREACH):
            return _spoofed(t, ("failed", "relay_silent"))
        if udp in (af.REFUSED, af.RESET):
            return _spoofed(t, ("failed", "relay_refused"))
        if _failed(udp):
            return _spoofed(t, ("failed", "relay_other"))
        return "ok", None
    if tcp == -1:
        if dns == af.NOT_ALLOWED:
            return "not_allowed", None
        if dns == af.INTERRUPTED:
            return "interrupted", None
        return "unmeasured", None
    if tcp == af.NOT_ALLOWED:
        return "not_allowed", None
    if tcp == af.INTERRUPTED:
        return "interrupted", None
    if tcp == af.NET_UNREACH and t.ipv6:
        return "no_route", None
    result: tuple[str, str | None]
    if tcp in (af.TIMEOUT, af.HOST_UNREACH, af.NET_UNREACH):
        result = ("failed", "tcp_ip_drop")
    elif tcp in (af.RESET, af.REFUSED):
        result = ("failed", "tcp_rst")
    elif tcp != af.OK:
        result = ("failed", "tcp_other")
    elif t.expect in ("mtproto", "whatsapp"):
        if handshake == af.NOT_ALLOWED:
            return "not_allowed", None
        if handshake in (af.INTERRUPTED, -1):
            return "interrupted", None
        if handshake in (af.RESET, af.REFUSED):
            result = ("failed", "handshake_rst")
        elif handshake in (af.TIMEOUT, af.EOF):
            result = ("failed", "handshake_drop")
        elif handshake != af.OK:
            result = ("failed", "handshake_other")
        else:
            return "ok", None
    elif t.expect not in ("tls", "https"):
        return "ok", None
    elif tls_real == af.NOT_ALLOWED:
        return "not_allowed", None
    elif tls_real in (af.INTERRUPTED, -1):
        return "interrupted", None
    elif tls_real in (af.RESET, af.REFUSED):
        result = ("failed", "tls_rst")
    elif tls_real in (af.TIMEOUT, af.EOF) and tls_neutral == af.OK:
        result = ("failed", "tls_sni")
    elif tls_real != af.OK:
        result = ("failed", "tls_other")
    elif t.expect != "https":
        return "ok", None
    elif _throttled(t):
        return "throttled", None
    elif http_real == af.NOT_ALLOWED:
        return "not_allowed", None
    elif http_real in (af.INTERRUPTED, -1):
        return "interrupted", None
    elif http_real in (af.RESET, af.REFUSED):
        result = ("failed", "http_rst")
    elif http_real in (af.TIMEOUT, af.EOF) and http_neutral == af.OK:
        result = ("failed", "http_sni")
    elif http_real == af.TIMEOUT and http_neutral == af.TIMEOUT and _stalled(t):
        result = ("failed", "http_cutoff")
    elif http_real != af.OK:
        result = ("failed", "http_other")
    else:
        return "ok", None
    return _spoofed(t, result)


def _spoofed(t: _Target, result: tuple[str, str | None]) -> tuple[str, str | None]:
    """A failed connection to a system answer the other resolvers disputed is DNS spoofing."""
    if t.mismatch and t.from_system:
        return "failed", "dns_spoof"
    return result


def _ratio(t: _Target) -> float | None:
    real_bytes = t.body.get("http_real")
    neutral_bytes = t.body.get("http_neutral")
    real = t.bps.get("http_real")
    neutral = t.bps.get("http_neutral")
    if real_bytes is None or neutral_bytes is None or real is None or neutral is None:
        return None
    if real_bytes < MIN_THROUGHPUT_BYTES or neutral_bytes < MIN_THROUGHPUT_BYTES:
        return None
    if real <= 0 or neutral <= 0:
        return None
    return real / neutral


def _stalled_early(t: _Target, step: str) -> bool:
    """The GET read a partial body of at most CUTOFF_MAX_BYTES, fast (or in one read)."""
    size = t.body.get(step)
    rate = t.bps.get(step)
    if size is None or not 0 < size <= CUTOFF_MAX_BYTES:
        return False
    return rate is None or rate >= CUTOFF_MIN_BPS


def _stalled(t: _Target) -> bool:
    return _stalled_early(t, "http_real") and _stalled_early(t, "http_neutral")


def _throttled(t: _Target) -> bool:
    ratio = _ratio(t)
    slow = t.bps.get("http_real", float("inf")) < THROTTLE_MAX_BPS
    return ratio is not None and ratio < THROTTLE_RATIO and slow


_CLASSES = {c.name: c for c in FAIL_CLASSES}
_CLASS_ORDER = {c.name: i for i, c in enumerate(FAIL_CLASSES)}


def judge(
    records: Iterable[dict[str, Any]], baseline: Iterable[dict[str, Any]] = ()
) -> dict[tuple[str, str], tuple[str, str]]:
    """(verdict, rule) per (run_id, app), from deduplicated records, in one pass over them (so
    a generator of records is never held in memory at once)."""
    pool = _Baseline()
    for record in baseline:
        pool.add(record)

    apps: set[tuple[str, str]] = set()
    targets: dict[tuple[str, str, str], _Target] = {}
    for record in records:
        run_id, app = record["run_id"], record["app"]
        apps.add((run_id, app))
        if record["probe"]["vantage"] == "baseline":
            pool.add(record)
        ref = record["target"]
        if ref.get("expect") in (None, "unknown"):
            continue
        t = targets.setdefault((run_id, app, ref["id"]), _Target())
        t.role = max(t.role, ref.get("role") or "")
        t.expect = max(t.expect, ref.get("expect") or "")
        details = record["details"]
        if record["probe"]["vantage"] == "baseline":
            t.baseline = True
        step = _step_name(record)
        if step is None:
            continue
        kind = failure_kind(record["failure"])
        t.steps[step] = max(t.steps.get(step, -1), kind)
        if step == "dns" and kind == af.OK:
            bogus = details.get("bogus") or []
            if bogus and len(bogus) >= len(details.get("addresses") or []):
                t.bogus_only = True
            if details.get("consistent") is False:
                t.mismatch = True
        if step in ("tcp", "quic", "relay"):  # the step that contacts the address
            source = details.get("address_source")
            t.from_catalog |= source == "catalog"
            t.from_system |= source == "system"
            t.ipv6 |= ":" in (ref.get("address") or "")
        if step in ("http_real", "http_neutral"):
            for name, store in (("body_bytes", t.body), ("throughput_bps", t.bps)):
                value = details.get(name)
                if value is not None:
                    store[step] = max(store.get(step, float("-inf")), float(value))
    bad = pool.bad()

    # Per (run, app) figures.
    figures: dict[tuple[str, str], dict[str, Any]] = {
        key: {
            "targets": 0,
            "failed": 0,
            "interrupted": 0,
            "classes": defaultdict(int),
            "throttled": 0,
            "fast": 0,
            "bulk": 0,
            "cut": 0,
            "quic": 0,
            "quic_failed": 0,
            "relays": 0,
            "relays_failed": 0,
            "signaling": False,
        }
        for key in apps
    }
    statuses: list[tuple[tuple[str, str], _Target, str, str | None]] = []
    for (run_id, app, target_id), t in targets.items():
        status, cls = _status(t)
        failed_here = status == "failed" and not t.baseline and cls is not None
        if failed_here and (target_id, _step_of_class(str(cls))) in bad:
            status = "excluded"
        statuses.append(((run_id, app), t, status, cls))
        if t.role in SIGNALING_ROLES:
            figures[(run_id, app)]["signaling"] = True
    for key, t, status, cls in statuses:
        f = figures[key]
        if t.expect == "http3":
            # A detail of the verdict, never judged (analysis.features.app_features).
            f["quic"] += status in ("ok", "throttled", "failed")
            f["quic_failed"] += status == "failed"
            continue
        if t.expect in CALL_EXPECTS:
            # The call path: its own rules (analysis.features.app_features).
            f["relays"] += status in ("ok", "throttled", "failed")
            f["relays_failed"] += status == "failed"
            continue
        judged = t.role in SIGNALING_ROLES or (not f["signaling"] and t.role in FALLBACK_ROLES)
        if judged and status in ("ok", "throttled", "failed"):
            f["targets"] += 1
            f["bulk"] += t.expect == "https"
        if judged and status == "failed" and cls == "http_cutoff":
            f["cut"] += 1
        if judged and status == "failed" and cls is not None:
            f["failed"] += 1
            f["classes"][cls] += 1
        if judged and status == "interrupted":
            f["interrupted"] += 1
        if t.role not in CALL_ROLES and status in ("ok", "throttled"):
            ratio = _ratio(t)
            if status == "throttled":
                f["throttled"] += 1
            elif ratio is not None and ratio >= UNTHROTTLED_RATIO:
                f["fast"] += 1

    controls: dict[str, tuple[int, int]] = {}
    udp_controls: dict[str, tuple[int, int]] = {}
    for (run_id, app), f in figures.items():
        if app == CONTROL_APP:
            controls[run_id] = (f["targets"], f["failed"])
            udp_controls[run_id] = (f["relays"], f["relays_failed"])

    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (run_id, app), f in figures.items():
        out[(run_id, app)] = _rules(
            app, f, controls.get(run_id, (0, 0)), udp_controls.get(run_id, (0, 0))
        )
    return out


def _step_of_class(name: str) -> str:
    return STEPS[_CLASSES[name].step]


def _rules(
    app: str, f: dict[str, Any], controls: tuple[int, int], udp_controls: tuple[int, int]
) -> tuple[str, str]:
    """The rules of analysis.rules, as an if/elif chain in the same order."""
    n, failed = f["targets"], f["failed"]
    share = failed / n if n else None
    c_n, c_failed = controls
    control_share = c_failed / c_n if c_n else None
    dominant = None
    if f["classes"]:
        # Most failures; ties to the earlier class, as analysis.features does.
        dominant = min(f["classes"], key=lambda c: (-f["classes"][c], _CLASS_ORDER[c]))
    if n == 0 and f["interrupted"] > 0:
        return "inconclusive", "interrupted"
    if n == 0 or share is None:
        return "inconclusive", "no_evidence"
    quic_failed = f["quic"] > 0 and f["quic_failed"] >= BLOCK_SHARE * f["quic"]
    u_n, u_failed = udp_controls
    udp_controls_failing = u_n > 0 and u_failed >= CONTROL_FAIL_SHARE * u_n

    def relays_failing(share: float) -> bool:
        return bool(f["relays"] > 0 and f["relays_failed"] >= share * f["relays"])

    if app == CONTROL_APP:
        if share >= CONTROL_FAIL_SHARE:
            return "network_degraded", "control_failed"
        if udp_controls_failing:
            return "network_degraded", "control_udp_failed"
        if quic_failed:
            return "ok", "control_ok_http3_failed"
        return "ok", "control_ok"
    if share >= PARTIAL_SHARE and c_n == 0:
        return "inconclusive", "no_controls"
    if share >= PARTIAL_SHARE and control_share is not None and control_share >= CONTROL_FAIL_SHARE:
        return "network_degraded", "network_degraded"
    if share >= BLOCK_SHARE and dominant is not None:
        cls = _CLASSES[dominant]
        mechanism = cls.mechanism
        # The byte cut-off is judged by its own rule, below.
        if (cls.layer, mechanism) != ("tcp", "byte_cutoff"):
            short = mechanism.removeprefix(f"{cls.layer}_") if mechanism else "other"
            return "blocked", f"blocked_{cls.layer}_{short}"
    cut = f["cut"]
    if cut > 0 and cut >= BLOCK_SHARE * f["bulk"] and failed - cut < PARTIAL_SHARE * n:
        return "blocked", "blocked_tcp_byte_cutoff"
    if share >= PARTIAL_SHARE:
        return "inconclusive", "partial_failure"
    if relays_failing(BLOCK_SHARE) and udp_controls_failing:
        return "network_degraded", "calls_network_degraded"
    if relays_failing(PARTIAL_SHARE) and u_n == 0:
        return "inconclusive", "calls_no_udp_controls"
    if relays_failing(BLOCK_SHARE):
        return "calls_blocked", "calls_relays_silent"
    if relays_failing(PARTIAL_SHARE):
        return "inconclusive", "calls_relays_partial"
    if f["throttled"] > 0 and f["fast"] > 0:
        return "inconclusive", "throttle_contradicted"
    if f["throttled"] > 0:
        return "throttled", "sni_throttled"
    if quic_failed:
        return "ok", "ok_http3_failed"
    return "ok", "ok"


def naive_verdicts(
    paths: Iterable[Path], baseline_paths: Iterable[Path] = ()
) -> dict[tuple[str, str], tuple[str, str]]:
    """Read the files and judge them as they stream by: (verdict, rule) per (run_id, app)."""
    return judge(iter_records(paths), iter_records(baseline_paths))


__all__ = ["iter_records", "judge", "naive_verdicts", "read_records"]
