"""The verdict rules written the obvious way: json.loads per line, dicts, loops.

A reference for the benchmark (and a guard of its honesty): the same statuses, the same rules
in the same order and the same thresholds as ``analysis.features`` / ``analysis.rules``, with the
thresholds and the failure vocabulary imported from there, but no pandas and no NumPy. A test
(tests/unit/test_naive_agrees.py) checks that both give the same verdict and rule per (run, app).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import features as af
from analysis.callflow import (
    AREA_THRESHOLD,
    BLOCK_WITHIN_S,
    CONTROL_TAIL_S,
    CUT_MIN_BINS,
    CUT_MIN_S,
    FLOW_OK_DELIVERY,
    OPENING,
    P_THRESHOLD,
    PORT_DEAD_DELIVERY,
)
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
    STREAM_EXPECTS,
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
    elif t.expect not in ("tls", "https", *STREAM_EXPECTS):
        # The reflector's TLS streams (expect echo, sni_stream records) are read as "https".
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
    elif t.expect not in ("https", *STREAM_EXPECTS):
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


# --- call flows, written out again with lists (analysis.callflow has the NumPy version) ----------

_FLOWS = ("call", "control", "call_neutral_port")


@dataclass
class _Flow:
    sent: list[float]
    sent_bytes: list[float]
    echoed: list[float]
    width: float
    last_echo: float | None
    first_echo: float | None
    interval: float | None


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _flow(details: dict[str, Any]) -> _Flow:
    raw = details.get("bins")
    bins = [b for b in raw if isinstance(b, dict)] if isinstance(raw, list) else []

    def counts(key: str) -> list[float]:
        return [max(_num(b.get(key)) or 0.0, 0.0) for b in bins]

    sent, echoed = counts("sent"), counts("echoed")
    echoed = [min(e, s) for e, s in zip(echoed, sent, strict=True)]
    width = _num(details.get("bin_width"))
    width = width if width is not None and width > 0 else 0.25
    last = _num(details.get("last_echo_s"))
    if last is None and any(echoed):
        last = (max(i for i, e in enumerate(echoed) if e > 0) + 1) * width
    interval = _num(details.get("interval_ms"))
    first = _num(details.get("first_echo_s"))
    seconds = interval / 1000 if interval is not None else None
    return _Flow(sent, counts("sent_bytes"), echoed, width, last, first, seconds)


def _ratios(flow: _Flow) -> list[float]:
    return [e / s for e, s in zip(flow.echoed, flow.sent, strict=True) if s > 0]


def _delivery(flow: _Flow | None) -> float | None:
    if flow is None or sum(flow.sent) <= 0:
        return None
    return sum(flow.echoed) / sum(flow.sent)


def _area(control: list[float], call: list[float]) -> float | None:
    if not control or not call:
        return None
    m_control, m_call = sum(control) / len(control), sum(call) / len(call)
    top = max(m_control, m_call)
    return (m_control - m_call) / top if top > 0 else None


def _mann_whitney_p(x: list[float], y: list[float]) -> float | None:
    """Two-sided Mann-Whitney p: mid-ranks, tie-corrected normal approximation, continuity
    correction."""
    if not x or not y:
        return None
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    n = len(pooled)
    rank_x = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j < n and pooled[j][0] == pooled[i][0]:
            j += 1
        mid = (i + 1 + j) / 2  # ranks i+1 .. j
        rank_x += mid * sum(1 for k in range(i, j) if pooled[k][1] == 0)
        t = j - i
        tie_term += t**3 - t
        i = j
    n_x, n_y = len(x), len(y)
    u = rank_x - n_x * (n_x + 1) / 2
    variance = n_x * n_y / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return 1.0
    z = max(abs(u - n_x * n_y / 2) - 0.5, 0.0) / math.sqrt(variance)
    return min(math.erfc(z / math.sqrt(2)), 1.0)


def _last_send(flow: _Flow) -> float | None:
    sent = [i for i, s in enumerate(flow.sent) if s > 0]
    return (sent[-1] + 1) * flow.width if sent else None


def _cut_s(call: _Flow, control: _Flow) -> float | None:
    """Seconds to the call's last echo when it was cut (0: never echoed), as cut_point."""
    control_end = _last_send(control)
    if control_end is None or control.last_echo is None:
        return None
    if control.last_echo < control_end - CONTROL_TAIL_S:
        return None
    end = _last_send(call)
    if end is None:
        return None
    echoed = [i for i, e in enumerate(call.echoed) if e > 0]
    after = echoed[-1] + 1 if echoed else 0
    silent = sum(1 for s in call.sent[after:] if s > 0)
    last = call.last_echo if call.last_echo is not None else 0.0
    if end - last < CUT_MIN_S or silent < CUT_MIN_BINS:
        return None
    return last if echoed else 0.0


def _opening_echoed(flow: _Flow) -> bool:
    assert flow.interval is not None
    return flow.first_echo is not None and flow.first_echo < (OPENING - 0.5) * flow.interval


def _opening_lost(call: _Flow, control: _Flow) -> bool:
    """The call's opening datagrams never came back, the control's did, the rest of the call
    was delivered (analysis.callflow.opening_lost)."""
    if call.interval is None or control.interval is None or sum(call.sent) <= OPENING:
        return False
    share = _delivery(call)
    return (
        not _opening_echoed(call)
        and _opening_echoed(control)
        and share is not None
        and share >= FLOW_OK_DELIVERY
    )


def _blocked(flow: _Flow | None, control: _Flow) -> bool:
    if flow is None:
        return False
    cut = _cut_s(flow, control)
    return (cut is not None and cut < BLOCK_WITHIN_S) or _opening_lost(flow, control)


def _call_test(call: _Flow, control: _Flow, neutral: _Flow | None) -> dict[str, Any]:
    call_bins, control_bins = _ratios(call), _ratios(control)
    cut = _cut_s(call, control)
    blocked = _blocked(call, control)
    return {
        "call": _delivery(call),
        "control": _delivery(control),
        "neutral": _delivery(neutral),
        "area": _area(control_bins, call_bins),
        "p": _mann_whitney_p(call_bins, control_bins),
        "blocked": blocked,
        "neutral_blocked": _blocked(neutral, control),
        "cut": cut if cut is not None and cut >= BLOCK_WITHIN_S else None,
    }


def _worst_tests(
    flows: dict[tuple[str, str, str, int], dict[str, list[tuple[float, str, _Flow]]]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (run, app): the test whose call fared worst against its control, and the count."""
    tests: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (run_id, app, _profile, _tx), by_flow in sorted(flows.items()):
        ordered = {k: sorted(v, key=lambda i: (i[0], i[1])) for k, v in by_flow.items()}
        calls, controls = ordered.get("call", []), ordered.get("control", [])
        neutrals = ordered.get("call_neutral_port", [])
        for k in range(min(len(calls), len(controls))):
            neutral = neutrals[k][2] if k < len(neutrals) else None
            tests[(run_id, app)].append(_call_test(calls[k][2], controls[k][2], neutral))
    out = {}
    for key, found in tests.items():
        worst = found[0]
        for test in found[1:]:
            best = worst["area"] if worst["area"] is not None else float("-inf")
            if test["area"] is not None and test["area"] > best:
                worst = test
        out[key] = {**worst, "tests": len(found)}
    return out


def _callflow_rule(c: dict[str, Any] | None) -> tuple[str, str] | None:
    """The call-flow rules of analysis.rules (CALLFLOW_RULES), in order."""
    if c is None:
        return None
    call, control, neutral, area, p = c["call"], c["control"], c["neutral"], c["area"], c["p"]
    if c["blocked"]:
        if c["neutral_blocked"]:
            return "calls_blocked", "calls_flow_blocked_fingerprint"
        if neutral is not None and control is not None and neutral >= FLOW_OK_DELIVERY * control:
            return "calls_blocked", "calls_flow_blocked_port"
        return "calls_blocked", "calls_flow_blocked"
    if (
        call is not None
        and call <= PORT_DEAD_DELIVERY
        and control is not None
        and control <= PORT_DEAD_DELIVERY
        and neutral is not None
        and neutral >= FLOW_OK_DELIVERY
    ):
        return "calls_blocked", "calls_flow_port_dropped"
    if c["cut"] is not None:
        return "calls_cut", "calls_flow_cut"
    control_fine = control is not None and control >= FLOW_OK_DELIVERY
    significant = p is not None and p < P_THRESHOLD
    if area is not None and area >= AREA_THRESHOLD and significant and control_fine:
        return "calls_throttled", "calls_flow_throttled"
    if (
        control is not None
        and 0 < control < FLOW_OK_DELIVERY
        and call is not None
        and call < FLOW_OK_DELIVERY
        and area is not None
        and abs(area) < AREA_THRESHOLD
    ):
        return "network_degraded", "calls_flow_degraded"
    if area is not None and area >= AREA_THRESHOLD:
        return "inconclusive", "calls_flow_unclear"
    return None


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
    flows: dict[tuple[str, str, str, int], dict[str, list[tuple[float, str, _Flow]]]] = {}
    for record in records:
        run_id, app = record["run_id"], record["app"]
        apps.add((run_id, app))
        if record["probe"]["vantage"] == "baseline":
            pool.add(record)
        flow = record["details"].get("flow")
        if (
            record["check"] == "call_flow"
            and flow in _FLOWS
            and record["failure"] not in ("interrupted", "address_not_allowed")
        ):
            tx = record.get("transaction_id")
            profile = str(record["details"].get("profile"))
            test = (run_id, app, profile, -1 if tx is None else int(tx))
            item = (
                float(record.get("t0") or 0.0),
                record["measurement_id"],
                _flow(record["details"]),
            )
            flows.setdefault(test, {}).setdefault(flow, []).append(item)
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
            "roles": {},
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
            if t.role in CALL_ROLES and status in ("ok", "throttled", "failed"):
                counts = f["roles"].setdefault(t.role, [0, 0])
                counts[0] += 1
                counts[1] += status == "failed"
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
        # The reflector's TLS port (a call role) counts too: its streams are an SNI comparison.
        served = t.role not in CALL_ROLES or t.expect in STREAM_EXPECTS
        if served and status in ("ok", "throttled"):
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

    calls = _worst_tests(flows)
    # The run's best random-bytes control flow (analysis.features: run_control_delivery).
    best_control: dict[str, float] = {}
    for (run_id, _app), test in calls.items():
        if test["control"] is not None:
            best_control[run_id] = max(best_control.get(run_id, 0.0), test["control"])
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (run_id, app), f in figures.items():
        f["callflow"] = calls.get((run_id, app))
        f["udp_echoed"] = best_control.get(run_id, 0.0) >= FLOW_OK_DELIVERY
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

    echoed = f["udp_echoed"]
    silent_roles = sum(bad >= BLOCK_SHARE * total for total, bad in f["roles"].values())
    all_silent = bool(f["roles"]) and silent_roles == len(f["roles"])
    if app == CONTROL_APP:
        if share >= CONTROL_FAIL_SHARE:
            return "network_degraded", "control_failed"
        if udp_controls_failing and not echoed:
            return "network_degraded", "control_udp_failed"
        if udp_controls_failing:
            return "ok", "control_ok_stun_failed"
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
    flow_rule = _callflow_rule(f.get("callflow"))
    if flow_rule is not None:
        return flow_rule
    if relays_failing(BLOCK_SHARE) and udp_controls_failing and not echoed:
        return "network_degraded", "calls_network_degraded"
    if relays_failing(PARTIAL_SHARE) and u_n == 0 and not echoed:
        return "inconclusive", "calls_no_udp_controls"
    if all_silent:
        return "calls_blocked", "calls_relays_silent"
    c = f.get("callflow")
    healthy = (
        c is not None
        and c["control"] is not None
        and c["control"] >= FLOW_OK_DELIVERY
        and c["call"] is not None
        and c["call"] >= FLOW_OK_DELIVERY
    )
    if healthy and (relays_failing(PARTIAL_SHARE) or silent_roles > 0):
        return "ok", "calls_ok_flow_relays_partial"
    if silent_roles > 0:
        return "inconclusive", "calls_relays_role_silent"
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
