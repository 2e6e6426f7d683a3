"""Features: what the records say, per target and then per (run, app), as columns the rules read.

Two levels, both vectorised (integer codes, NumPy scatter and bincount; no Python loop over
records):

1. **Per target** (run, app, target_id), for targets whose ``expect`` is not ``unknown``: the
   outcome of each step of its transaction (system resolver, TCP connect, TLS and HTTPS GET with
   the real and the neutral SNI, the app's own handshake, or QUIC for HTTP/3 targets), then the
   target's *status* (``TARGET_STATUSES``) and, for a failed target, its *failure class*
   (``FAIL_CLASSES``: a layer and a mechanism). The order in
   which ``_status`` reads the steps is the interpretation; it is spelled out there.
2. **Per (run, app)**: counts over the targets that are evidence, the dominant failure class,
   the SNI throughput comparison, the run's neutral controls and the run's metadata
   (``app_features``; its columns are ``FEATURE_COLUMNS``).

Call-path evidence arrives as more level-2 columns computed from its own checks and read by more
rules: the relays' known answers (``relays``, ``udp_controls``) from level 1, and the call-flow
figures (``callflow_tests``, ``call_*``, ``control_*``, ``neutral_*``) from the ``call_flow``
records' per-bin counts (``callflow_features``, statistics in ``analysis.callflow``). Where on the
path interference happens (``traces``, ``trace_*``) comes from the ``trace`` records
(``trace_features``); no rule reads it, the interference verdicts' sentences state it.

The scalar helpers (``failure_kind``, ``step_of``) and the thresholds are shared with the naive
reference implementation in ``bench/naive_verdicts.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from analysis import callflow as cf
from analysis.load import CALL_FLOW_CHECK
from probe.model import Failure

# --- thresholds (each is what a rule compares with; the rules cite them by name) ----------------

# Apps try their endpoints in turn, so an app is unusable only when nearly all fail; the margin
# leaves room for an endpoint or two that is down for ordinary reasons.
BLOCK_SHARE: Final = 0.8
# Below this share, failures are the background noise of a healthy network (a stale endpoint);
# between it and BLOCK_SHARE the evidence is too mixed to call either way.
PARTIAL_SHARE: Final = 0.2
# Neutral controls failing this much mean the network, not a censor of the app, is at fault.
CONTROL_FAIL_SHARE: Final = 0.5
# Real-SNI throughput below this fraction of the neutral SNI's to the same address is policing:
# Censored Planet's 2021 Twitter throttling cut rates far below half (IMC 2021).
THROTTLE_RATIO: Final = 0.5
# ... and below this rate in absolute terms. Field policing is far slower (Twitter 2021: 130-150
# kbit/s); on a fast path the ratio of the two concurrent 256 KiB GETs, which finish within
# milliseconds, is scheduling noise: the lab's open network gave ratios down to 0.2 at 17-30
# Mbit/s. 1 Mbit/s keeps a margin of ~7 over the reported rates.
THROTTLE_MAX_BPS: Final = 1_000_000
# A target served at least this fraction of the neutral rate contradicts a throttling claim;
# between the two ratios a target is noise, neither evidence nor contradiction.
UNTHROTTLED_RATIO: Final = 0.8
# Bytes both GETs must have read before their rates are compared: below this, TCP slow start and
# buffering dominate the rate (the first 14-34 KB of a flow also pass Russia's "TCP 16-20" cut).
MIN_THROUGHPUT_BYTES: Final = 32 * 1024
# A GET that stalls after a partial body of at most this many bytes, with the app's and a neutral
# SNI alike, was stopped by a byte counter on the path: Russia's "TCP 16-20" froze connections to
# foreign hosting after ~14-34 KB (METHOD.md). Twice the top of that range leaves room for where
# the cut lands in the body (the handshake's bytes count towards it too).
CUTOFF_MAX_BYTES: Final = 64 * 1024
# ... and the bytes before the stall came at least this fast (or in one read, no rate measured):
# a cut-off delivers at the path's rate and then nothing, where an address-wide rate cap
# delivers slowly until the timeout. Any broadband or 4G link is faster than this.
CUTOFF_MIN_BPS: Final = 1_000_000
# A check succeeding in fewer than this share of baseline records normally fails from uncensored
# vantage points too, so its failure elsewhere is not evidence.
BASELINE_OK_SHARE: Final = 0.5
# Baseline runs needed before a target's baseline failure is believed; one clean vantage already
# shows that the endpoint itself is down or stale.
MIN_BASELINE_RUNS: Final = 1

# --- the failure vocabulary, folded into kinds ---------------------------------------------------

ABSENT: Final = -1  # no record of this step
OK: Final = 0
TIMEOUT: Final = 1
HOST_UNREACH: Final = 2
NET_UNREACH: Final = 3
RESET: Final = 4
REFUSED: Final = 5
EOF: Final = 6
SSL: Final = 7
DNS_DENY: Final = 8
DNS_BOGON: Final = 9
DNS_MISBEHAVING: Final = 10
HTTP: Final = 11
INTERRUPTED: Final = 12
NOT_ALLOWED: Final = 13
OTHER: Final = 14
PROTOCOL: Final = 15  # the server answered, but not as its protocol says (mtproto_*, stun_*, ...)

FAILURE_KINDS: Final[dict[str, int]] = {
    Failure.GENERIC_TIMEOUT: TIMEOUT,
    Failure.HOST_UNREACHABLE: HOST_UNREACH,
    Failure.NETWORK_UNREACHABLE: NET_UNREACH,
    Failure.CONNECTION_RESET: RESET,
    # An abort is the local stack's reaction to a reset or an ICMP error mid-connection.
    Failure.CONNECTION_ABORTED: RESET,
    Failure.CONNECTION_REFUSED: REFUSED,
    Failure.EOF: EOF,
    Failure.SSL_INVALID_HOSTNAME: SSL,
    Failure.SSL_UNKNOWN_AUTHORITY: SSL,
    Failure.SSL_INVALID_CERTIFICATE: SSL,
    Failure.SSL_FAILED_HANDSHAKE: SSL,
    # The resolver denies the name: it does not exist, has no address, or may not be asked.
    Failure.DNS_NXDOMAIN: DNS_DENY,
    Failure.DNS_NO_ANSWER: DNS_DENY,
    Failure.DNS_REFUSED: DNS_DENY,
    Failure.DNS_SERVFAIL: DNS_DENY,
    Failure.DNS_BOGON: DNS_BOGON,
    Failure.DNS_SERVER_MISBEHAVING: DNS_MISBEHAVING,
    Failure.HTTP_REQUEST_FAILED: HTTP,
    Failure.INTERRUPTED: INTERRUPTED,
    Failure.ADDRESS_NOT_ALLOWED: NOT_ALLOWED,
    **{
        value: PROTOCOL
        for name, value in vars(Failure).items()
        if name.startswith(("MTPROTO_", "WHATSAPP_", "STUN_", "REFLECTOR_", "QUIC_"))
    },
}

# Kinds that say nothing about the network: the run's deadline or the allow-list ended the step.
NOT_EVIDENCE_KINDS: Final = frozenset({INTERRUPTED, NOT_ALLOWED})


def failure_kind(failure: str | None) -> int:
    """The kind of a failure string (OK for None; OTHER for ``unknown_failure: ...``)."""
    if failure is None:
        return OK
    return FAILURE_KINDS.get(failure, OTHER)


# --- steps of a transaction ----------------------------------------------------------------------

STEP_DNS: Final = 0  # dns_system: what the app itself would be told
STEP_TCP: Final = 1
STEP_TLS_REAL: Final = 2
STEP_TLS_NEUTRAL: Final = 3
STEP_HTTP_REAL: Final = 4
STEP_HTTP_NEUTRAL: Final = 5
STEP_HANDSHAKE: Final = 6  # the app's first round trip after the TCP connect
STEP_QUIC: Final = 7  # QUIC handshake and HTTP/3 GET of an "http3" target
STEP_RELAY: Final = 8  # the call path's known-answer checks (probe.checks.relay)
STEPS: Final = (
    ("dns_system", None),
    ("tcp_connect", None),
    ("tls_handshake", "real"),
    ("tls_handshake", "neutral"),
    ("http_get|sni_stream", "real"),
    ("http_get|sni_stream", "neutral"),
    ("mtproto|whatsapp_chat", None),
    ("quic", None),
    ("stun_binding|stun_allocate|wa_relay_ping|tg_reflector", None),
)
# Checks of STEP_HANDSHAKE: each app's own opening exchange (probe.checks.mtproto, .whatsapp).
HANDSHAKE_CHECKS: Final = ("mtproto", "whatsapp_chat")
HANDSHAKE_EXPECTS: Final = ("mtproto", "whatsapp")
# Checks of STEP_RELAY, and the expects of the call-path targets they are planned for.
CALL_CHECKS: Final = ("stun_binding", "stun_allocate", "wa_relay_ping", "tg_reflector")
CALL_EXPECTS: Final = ("stun", "turn", "wa_relay", "reflector")
# The TLS streams from the ringprobe reflector (probe.checks.sni_stream): read as the HTTPS GET
# steps, so the reflector's TLS port is compared real SNI vs neutral SNI like an HTTPS target.
SNI_STREAM_CHECK: Final = "sni_stream"
# The expect of the ringprobe reflector's targets (probe.runner): its UDP ports (call_flow
# records, which no step reads) and its TLS port (sni_stream records, the GET steps).
STREAM_EXPECTS: Final = ("echo",)


def step_of(check: str | None, sni_kind: str | None) -> int:
    """The step a record is (ABSENT for checks the signaling rules do not read: the other
    resolvers, whose agreement is already in ``dns_consistent``, and future call-path checks)."""
    if check == "dns_system":
        return STEP_DNS
    if check == "tcp_connect":
        return STEP_TCP
    if check in HANDSHAKE_CHECKS:
        return STEP_HANDSHAKE
    if check == "quic":
        return STEP_QUIC
    if check in CALL_CHECKS:
        return STEP_RELAY
    neutral = sni_kind == "neutral"
    if check == "tls_handshake":
        return STEP_TLS_NEUTRAL if neutral else STEP_TLS_REAL
    if check in ("http_get", SNI_STREAM_CHECK):
        return STEP_HTTP_NEUTRAL if neutral else STEP_HTTP_REAL
    return ABSENT


# --- target statuses and failure classes ---------------------------------------------------------

TARGET_STATUSES: Final = (
    "ok",  # the target answered as it normally does
    "throttled",  # answered, but real-SNI HTTPS ran far slower than the neutral SNI's
    "failed",  # evidence of interference; see its failure class
    "interrupted",  # the run's deadline cut the deciding step: no evidence either way
    "not_allowed",  # the allow-list refused the address: nothing was sent
    "no_route",  # no IPv6 route on the volunteer's side: says nothing about the app
    "unmeasured",  # no step past DNS was recorded (a check this version does not run)
    "excluded",  # failed, but the same step fails from the baseline too
)
S_OK, S_THROTTLED, S_FAILED, S_INTERRUPTED, S_NOT_ALLOWED, S_NO_ROUTE, S_UNMEASURED, S_EXCLUDED = (
    range(len(TARGET_STATUSES))
)
# Statuses that count as evidence (the denominator of share_failed).
EVIDENCE_STATUSES: Final = (S_OK, S_THROTTLED, S_FAILED)


@dataclass(frozen=True, slots=True)
class FailClass:
    """How a target failed: the layer and mechanism a verdict reports, and a clause for humans."""

    name: str
    layer: str
    mechanism: str | None
    text: str
    step: int
    """The step whose failure this is, for the baseline comparison."""


# Order is the tie-break of the dominant class: the earlier step, then the more specific mechanism.
FAIL_CLASSES: Final = (
    FailClass(
        "dns_spoof",
        "dns",
        "dns_spoof",
        "the system resolver answered bogus addresses or ones the other resolvers disagree with",
        STEP_DNS,
    ),
    FailClass(
        "dns_nxdomain",
        "dns",
        "dns_nxdomain",
        "the system resolver denied the name (NXDOMAIN, no answer, SERVFAIL or REFUSED)",
        STEP_DNS,
    ),
    FailClass("dns_other", "dns", None, "the system resolver gave no usable answer", STEP_DNS),
    FailClass(
        "tcp_ip_drop",
        "tcp",
        "ip_drop",
        "TCP connect timed out or was unreachable (no answer to SYN)",
        STEP_TCP,
    ),
    FailClass("tcp_rst", "tcp", "rst", "TCP connect was reset or refused", STEP_TCP),
    FailClass("tcp_other", "tcp", None, "TCP connect failed", STEP_TCP),
    # The app's own handshake on a connection that opened: a censor matching the protocol, not
    # the address (issue 5: DPI that lets the TCP handshake through and drops the session).
    FailClass(
        "handshake_drop",
        "tcp",
        "handshake_drop",
        "TCP connected but the app's handshake (MTProto resPQ, WhatsApp ServerHello) never came",
        STEP_HANDSHAKE,
    ),
    FailClass(
        "handshake_rst",
        "tcp",
        "rst",
        "TCP connected but the app's handshake was reset",
        STEP_HANDSHAKE,
    ),
    FailClass(
        "handshake_other",
        "tcp",
        None,
        "TCP connected but the app's handshake got an answer its protocol does not allow",
        STEP_HANDSHAKE,
    ),
    FailClass(
        "tls_rst", "tls", "rst", "the TLS handshake with the app's SNI was reset", STEP_TLS_REAL
    ),
    FailClass(
        "tls_sni",
        "tls",
        "sni",
        "the TLS handshake with the app's SNI stalled while a neutral SNI to the same address "
        "completed",
        STEP_TLS_REAL,
    ),
    FailClass(
        "tls_other", "tls", None, "the TLS handshake with the app's SNI failed", STEP_TLS_REAL
    ),
    # HTTPS rides on TLS: a censor acting after a good handshake acts on the TLS stream.
    FailClass(
        "http_rst", "tls", "rst", "the HTTPS GET with the app's SNI was reset", STEP_HTTP_REAL
    ),
    FailClass(
        "http_sni",
        "tls",
        "sni",
        "the HTTPS GET with the app's SNI stalled while the neutral SNI's completed",
        STEP_HTTP_REAL,
    ),
    # A byte counter acts below TLS, on every connection to the address whatever its SNI.
    FailClass(
        "http_cutoff",
        "tcp",
        "byte_cutoff",
        "the HTTPS GETs with the app's and a neutral SNI both stalled after a few KB of body",
        STEP_HTTP_REAL,
    ),
    FailClass("http_other", "tls", None, "the HTTPS GET with the app's SNI failed", STEP_HTTP_REAL),
    # Never a judged endpoint's class: HTTP/3 targets are a detail (quic_failed), see app_features.
    FailClass("quic_failed", "quic", None, "the QUIC handshake or HTTP/3 GET failed", STEP_QUIC),
    # The call path: judged by the call rules (relays, udp_controls), never as signaling.
    FailClass(
        "relay_silent",
        "udp",
        None,
        "the call servers never gave their known answer (STUN, relay ping, reflector hello)",
        STEP_RELAY,
    ),
    FailClass(
        "relay_refused",
        "udp",
        None,
        "the call servers' port was unreachable (ICMP) or refused",
        STEP_RELAY,
    ),
    FailClass(
        "relay_other",
        "udp",
        None,
        "the call servers answered, but not as their protocol says",
        STEP_RELAY,
    ),
)
CLASS_INDEX: Final = {c.name: i for i, c in enumerate(FAIL_CLASSES)}
(
    C_DNS_SPOOF,
    C_DNS_NXDOMAIN,
    C_DNS_OTHER,
    C_TCP_DROP,
    C_TCP_RST,
    C_TCP_OTHER,
    C_HS_DROP,
    C_HS_RST,
    C_HS_OTHER,
    C_TLS_RST,
    C_TLS_SNI,
    C_TLS_OTHER,
    C_HTTP_RST,
    C_HTTP_SNI,
    C_HTTP_CUTOFF,
    C_HTTP_OTHER,
    C_QUIC,
    C_RELAY_SILENT,
    C_RELAY_REFUSED,
    C_RELAY_OTHER,
) = range(len(FAIL_CLASSES))

# Roles whose failure says the app as a whole is unusable; web endpoints stand in only for apps
# (and the neutral controls) without signaling endpoints. Call-path roles (relay, reflector,
# turn) are for the call rules, never for "blocked".
SIGNALING_ROLES: Final = ("signaling",)
FALLBACK_ROLES: Final = ("web", "control")
CALL_ROLES: Final = ("relay", "reflector", "turn")
CONTROL_APP: Final = "control"
BASELINE_VANTAGE: Final = "baseline"


# --- level 1: per target -------------------------------------------------------------------------


def _cat(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes (-1 for NA) and categories of a column, categorised first if it is not already."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype("category")
    codes = np.asarray(series.cat.codes.to_numpy(), dtype=np.int64)
    return codes, pd.Index(series.cat.categories.astype(str))


def _lookup(codes: np.ndarray, table: Iterable[object], na: object, dtype: type) -> np.ndarray:
    """Map category codes through a per-category table; code -1 (NA) maps to ``na``."""
    lut: np.ndarray = np.array([*table, na], dtype=dtype)
    mapped: np.ndarray = lut[codes]
    return mapped


def _scatter_max(n: int, index: np.ndarray, values: np.ndarray, fill: int) -> np.ndarray:
    """Per group, the largest value (``fill`` where a group has none): deterministic whatever the
    row order, even if a step were recorded twice."""
    out = np.full(n, fill, dtype=np.int64)
    np.maximum.at(out, index, values)
    return out


def _scatter_fmax(n: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    np.fmax.at(out, index, values)
    return out


@dataclass(slots=True)
class Targets:
    """The per-target table as arrays (one element per target), plus the category tables that
    decode its codes."""

    run: np.ndarray
    app: np.ndarray
    target: np.ndarray
    role: np.ndarray
    """Role names (object array)."""
    status: np.ndarray
    fail_class: np.ndarray
    """Index into FAIL_CLASSES, -1 when the target did not fail."""
    measurable: np.ndarray
    """Both HTTPS GETs read enough bytes for their rates to be compared."""
    ratio: np.ndarray
    real_bps: np.ndarray
    neutral_bps: np.ndarray
    bulk: np.ndarray
    """The target's checks move more than a handshake (expect https: a GET of up to 256 KiB),
    so a byte cut-off can show on it."""
    http3: np.ndarray
    """An HTTP/3 target (expect http3): a detail of reachability, never a judged endpoint."""
    call: np.ndarray
    """A call-path target (expect stun, turn, wa_relay, reflector): judged by the call rules."""
    stream: np.ndarray
    """A ringprobe reflector target (expect echo): never judged, but its TLS streams count in
    the SNI throughput comparison although its role is a call role."""
    cutoff_bytes: np.ndarray
    """Body bytes read before both GETs stalled (the larger of the two), NaN unless cut."""
    dns_mismatch: np.ndarray
    """The system resolver answered addresses the other resolvers disagree with."""
    run_cats: pd.Index
    app_cats: pd.Index
    target_cats: pd.Index

    def frame(self) -> pd.DataFrame:
        """The table for humans: one row per target, strings decoded."""
        names = np.array([c.name for c in FAIL_CLASSES] + [None], dtype=object)
        return pd.DataFrame(
            {
                "run_id": self.run_cats[self.run].astype(str),
                "app": self.app_cats[self.app].astype(str),
                "target_id": self.target_cats[self.target].astype(str),
                "role": self.role,
                "status": np.array(TARGET_STATUSES, dtype=object)[self.status],
                "failure_class": names[self.fail_class],
                "throughput_real_bps": self.real_bps,
                "throughput_neutral_bps": self.neutral_bps,
                "throughput_ratio": self.ratio,
                "cutoff_bytes": self.cutoff_bytes,
                "dns_mismatch": self.dns_mismatch,
            }
        )


def dedup(df: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement: the same record read from two files (or twice) counts once."""
    if df["measurement_id"].duplicated().any():
        return df.drop_duplicates("measurement_id", ignore_index=True)
    return df


def record_steps(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per record: its step (STEPS index or ABSENT) and its failure kind."""
    check, check_cats = _cat(df["check"])
    sni, sni_cats = _cat(df["sni_kind"])
    neutral = _lookup(sni, (s == "neutral" for s in sni_cats), False, bool)
    step_real = _lookup(check, (step_of(c, "real") for c in check_cats), ABSENT, np.int64)
    step_neutral = _lookup(check, (step_of(c, "neutral") for c in check_cats), ABSENT, np.int64)
    step = np.where(neutral, step_neutral, step_real)
    failure, failure_cats = _cat(df["failure"])
    kind = _lookup(failure, (failure_kind(f) for f in failure_cats), OK, np.int64)
    return step, kind


def baseline_failures(frames: Iterable[pd.DataFrame]) -> dict[int, frozenset[str]]:
    """Per step, the target ids whose step succeeds in fewer than BASELINE_OK_SHARE of the
    baseline's records (over at least MIN_BASELINE_RUNS runs). A record present in several
    frames counts once; steps cut by the deadline or the allow-list count neither way."""
    parts: list[pd.DataFrame] = []
    for frame in frames:
        if frame.empty:
            continue
        step, kind = record_steps(frame)
        keep = (step != ABSENT) & ~np.isin(kind, list(NOT_EVIDENCE_KINDS))

        def text(name: str, frame: pd.DataFrame = frame, keep: np.ndarray = keep) -> np.ndarray:
            values: np.ndarray = np.asarray(frame[name].astype(str).to_numpy(dtype=object))
            kept: np.ndarray = values[keep]
            return kept

        parts.append(
            pd.DataFrame(
                {
                    "measurement_id": text("measurement_id"),
                    "run_id": text("run_id"),
                    "target_id": text("target_id"),
                    "step": step[keep],
                    "ok": kind[keep] == OK,
                }
            )
        )
    if not parts:
        return {}
    pool = pd.concat(parts, ignore_index=True).drop_duplicates("measurement_id")
    stats = pool.groupby(["target_id", "step"]).agg(
        share=("ok", "mean"), runs=("run_id", "nunique")
    )
    bad = stats[(stats["share"] < BASELINE_OK_SHARE) & (stats["runs"] >= MIN_BASELINE_RUNS)]
    out: dict[int, set[str]] = {}
    for target_id, s in bad.index:
        out.setdefault(int(s), set()).add(str(target_id))
    return {s: frozenset(ids) for s, ids in out.items()}


def target_table(df: pd.DataFrame, baseline_bad: dict[int, frozenset[str]]) -> Targets:
    """Level 1: each target's status and failure class, from deduplicated records.

    ``baseline_bad`` (from ``baseline_failures``) excludes a failed target of a non-baseline run
    when the step it failed at fails from the baseline too.
    """
    run_all, run_cats = _cat(df["run_id"])
    app_all, app_cats = _cat(df["app"])
    tid_all, tid_cats = _cat(df["target_id"])
    expect, expect_cats = _cat(df["expect"])
    # Only targets with a known normal answer are evidence; NA counts as unknown.
    known = _lookup(expect, (e != "unknown" for e in expect_cats), False, bool)
    rows = np.flatnonzero(known)
    key = (run_all[rows] * len(app_cats) + app_all[rows]) * max(len(tid_cats), 1) + tid_all[rows]
    tidx, keys = pd.factorize(key)
    keys = np.asarray(keys, dtype=np.int64)
    n = len(keys)
    t_target = keys % max(len(tid_cats), 1)
    t_app = (keys // max(len(tid_cats), 1)) % len(app_cats)
    t_run = keys // max(len(tid_cats), 1) // len(app_cats)

    step_all, kind_all = record_steps(df)
    step, kind = step_all[rows], kind_all[rows]

    def outcome(s: int) -> np.ndarray:
        sel = step == s
        return _scatter_max(n, tidx[sel], kind[sel], ABSENT)

    dns, tcp = outcome(STEP_DNS), outcome(STEP_TCP)
    tls_real, tls_neutral = outcome(STEP_TLS_REAL), outcome(STEP_TLS_NEUTRAL)
    http_real, http_neutral = outcome(STEP_HTTP_REAL), outcome(STEP_HTTP_NEUTRAL)
    handshake, quic, relay = outcome(STEP_HANDSHAKE), outcome(STEP_QUIC), outcome(STEP_RELAY)

    role_c, role_cats = _cat(df["role"])
    t_role_code = _scatter_max(n, tidx, role_c[rows], -1)
    t_role = np.array([*role_cats, ""], dtype=object)[t_role_code]
    expect_t = np.array([*expect_cats, ""], dtype=object)[_scatter_max(n, tidx, expect[rows], -1)]

    # What the system resolver said, beyond its failure string.
    is_dns = step == STEP_DNS
    bogus = df["dns_bogus"].to_numpy(dtype=np.float64, na_value=0.0)[rows]
    # Every answered address is a bogon: the app has nothing real to connect to. Addresses are
    # counted only where some are bogus (few rows: string work stays off the hot path).
    bogus_only = is_dns & (kind == OK) & (bogus > 0)
    if bogus_only.any():
        answered = df["dns_addresses"].iloc[rows[bogus_only]].str.split().str.len()
        bogus_only[bogus_only] = bogus[bogus_only] >= answered.to_numpy(np.float64, na_value=0.0)
    consistent = df["dns_consistent"].to_numpy(dtype=bool, na_value=True)[rows]
    mismatch = is_dns & (kind == OK) & ~consistent
    t_bogus_only = _scatter_max(n, tidx, bogus_only.astype(np.int64), 0) > 0
    t_mismatch = _scatter_max(n, tidx, mismatch.astype(np.int64), 0) > 0

    # Where the contacted address came from, and whether it is IPv6 (for the no-route case).
    # The step that contacts the address.
    is_tcp = np.isin(step, (STEP_TCP, STEP_QUIC, STEP_RELAY))
    source, source_cats = _cat(df["address_source"])
    from_catalog = _lookup(source, (s == "catalog" for s in source_cats), False, bool)[rows]
    from_system = _lookup(source, (s == "system" for s in source_cats), False, bool)[rows]
    address, address_cats = _cat(df["address"])
    ipv6 = _lookup(address, (":" in a for a in address_cats), False, bool)[rows]
    t_catalog = _scatter_max(n, tidx, (is_tcp & from_catalog).astype(np.int64), 0) > 0
    t_system = _scatter_max(n, tidx, (is_tcp & from_system).astype(np.int64), 0) > 0
    t_ipv6 = _scatter_max(n, tidx, (is_tcp & ipv6).astype(np.int64), 0) > 0

    # Throughput of the two GETs, failed ones included: a throttled GET often times out with
    # its bytes recorded (http_get keeps body figures when a timeout cuts the read).
    body = df["body_bytes"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    bps = df["throughput_bps"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]

    def figure(values: np.ndarray, s: int) -> np.ndarray:
        sel = step == s
        return _scatter_fmax(n, tidx[sel], values[sel])

    real_bytes, neutral_bytes = figure(body, STEP_HTTP_REAL), figure(body, STEP_HTTP_NEUTRAL)
    real_bps, neutral_bps = figure(bps, STEP_HTTP_REAL), figure(bps, STEP_HTTP_NEUTRAL)
    with np.errstate(invalid="ignore", divide="ignore"):
        measurable = (
            (real_bytes >= MIN_THROUGHPUT_BYTES)
            & (neutral_bytes >= MIN_THROUGHPUT_BYTES)
            & (real_bps > 0)
            & (neutral_bps > 0)
        )
        ratio = np.where(measurable, real_bps / neutral_bps, np.nan)
    throttled = measurable & (ratio < THROTTLE_RATIO) & (real_bps < THROTTLE_MAX_BPS)

    def stalled_early(size: np.ndarray, rate: np.ndarray) -> np.ndarray:
        # NaN compares False: a GET without body figures never counts as cut.
        fast = np.isnan(rate) | (rate >= CUTOFF_MIN_BPS)
        early: np.ndarray = (size > 0) & (size <= CUTOFF_MAX_BYTES) & fast
        return early

    # Both GETs to the address got a few KB quickly, then nothing: a byte cut-off if both then
    # timed out (_status checks the failures).
    stalled = stalled_early(real_bytes, real_bps) & stalled_early(neutral_bytes, neutral_bps)

    status, fail_class = _status(
        expect_t,
        dns,
        tcp,
        tls_real,
        tls_neutral,
        http_real,
        http_neutral,
        handshake,
        quic,
        relay,
        bogus_only=t_bogus_only,
        mismatch=t_mismatch,
        from_catalog=t_catalog,
        from_system=t_system,
        ipv6=t_ipv6,
        throttled=throttled,
        stalled=stalled,
    )

    if baseline_bad:
        vantage, vantage_cats = _cat(df["vantage"])
        is_base = _lookup(vantage, (v == BASELINE_VANTAGE for v in vantage_cats), False, bool)
        t_base = _scatter_max(n, tidx, is_base[rows].astype(np.int64), 0) > 0
        fail_step = np.array([c.step for c in FAIL_CLASSES] + [ABSENT])[fail_class]
        excluded = np.zeros(n, dtype=bool)
        for s, ids in baseline_bad.items():
            bad_target = np.append(tid_cats.isin(list(ids)), False)[t_target]
            excluded |= bad_target & (fail_step == s)
        # Baseline runs are judged as they are: they are the reference, not the judged.
        excluded &= (status == S_FAILED) & ~t_base
        status = np.where(excluded, S_EXCLUDED, status)

    return Targets(
        run=t_run,
        app=t_app,
        target=t_target,
        role=t_role,
        status=status,
        fail_class=fail_class,
        measurable=measurable,
        ratio=ratio,
        real_bps=real_bps,
        neutral_bps=neutral_bps,
        bulk=expect_t == "https",
        http3=expect_t == "http3",
        call=np.isin(expect_t, CALL_EXPECTS),
        stream=np.isin(expect_t, STREAM_EXPECTS),
        cutoff_bytes=np.where(
            fail_class == C_HTTP_CUTOFF, np.fmax(real_bytes, neutral_bytes), np.nan
        ),
        dns_mismatch=t_mismatch,
        run_cats=run_cats,
        app_cats=app_cats,
        target_cats=tid_cats,
    )


def _status(
    expect: np.ndarray,
    dns: np.ndarray,
    tcp: np.ndarray,
    tls_real: np.ndarray,
    tls_neutral: np.ndarray,
    http_real: np.ndarray,
    http_neutral: np.ndarray,
    handshake: np.ndarray,
    quic: np.ndarray,
    relay: np.ndarray,
    *,
    bogus_only: np.ndarray,
    mismatch: np.ndarray,
    from_catalog: np.ndarray,
    from_system: np.ndarray,
    ipv6: np.ndarray,
    throttled: np.ndarray,
    stalled: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A target's status and failure class from its steps' outcomes; first match wins.

    0. A step with no record but a later step recorded counts as having worked.

    1. The system resolver denied the name, answered only bogons, or failed otherwise, and the
       target has no fixed address: failed at DNS (the app asks the same resolver). A target
       with a catalog address is judged by its connection instead: the app can use it.
    1b. UDP targets (no TCP steps): expect "http3" is decided by the QUIC step, the call path's
       expects (stun, turn, wa_relay, reflector) by their relay checks (the worst of them):
       allow-list / deadline / no record; then for HTTP/3 any failure is quic_failed; for the
       call path no known answer (timeout, unreachable) is relay_silent, ICMP refusal
       relay_refused, a wrong answer relay_other; else ok.
    2. TCP connect: allow-list / deadline / no record; an IPv6 network-unreachable is the
       volunteer's missing IPv6 route (no_route); timeout or unreachable is ip_drop; reset or
       refused is rst; anything else is tcp other. Expect "tcp": done, ok.
    2b. Expect "mtproto" / "whatsapp": the app's handshake on a fresh connection: allow-list /
       deadline / no record; reset or refused is handshake_rst; timeout or EOF (no answer, or the
       server's side closed) is handshake_drop; any other failure (an answer the protocol does
       not allow) is handshake_other; else ok.
    3. TLS with the real SNI: reset is rst; timeout or EOF while the neutral twin to the same
       address completed is sni; any other failure is tls other. Expect "tls": done, ok.
    4. HTTPS GET: real-SNI throughput below THROTTLE_RATIO of the neutral's and below
       THROTTLE_MAX_BPS is throttled (even if the slow GET then timed out); else as TLS, with
       the neutral GET as the twin, except that both GETs timing out after a partial body of
       at most CUTOFF_MAX_BYTES that came fast (``stalled``) is a byte cut-off (tcp,
       byte_cutoff): the same stall whatever the SNI.
    4b. Expect "echo" (the ringprobe reflector) is read as "https" from step 3 on: its
       ``sni_stream`` records are the GET steps (the TLS handshakes are theirs, so step 0 counts
       them as done); throttled when the app-SNI stream is slow as above, else as the GETs.
       Its call_flow records (UDP ports) are no step: such a target stays unmeasured. The
       reflector's role is a call role, so none of this judges the app (app_features).
    5. A connection that failed to the address the system resolver gave, when the other
       resolvers disagreed with that answer, is DNS spoofing, not a failure of the real server.
    """

    def failed(outcome: np.ndarray) -> np.ndarray:
        mask: np.ndarray = (outcome > OK) & (outcome != INTERRUPTED) & (outcome != NOT_ALLOWED)
        return mask

    # A later step's record implies the earlier ones worked (a handshake needs a connection).
    # ringprobe always records every step, but imported data (OONI) may key the steps of one
    # endpoint apart, or skip the connect.
    tls_real = np.where((tls_real == ABSENT) & (http_real != ABSENT), OK, tls_real)
    later = (tls_real != ABSENT) | (tls_neutral != ABSENT) | (handshake != ABSENT)
    tcp = np.where((tcp == ABSENT) & later, OK, tcp)

    # Step 1: DNS.
    dns_nx = dns == DNS_DENY
    dns_spoof = (dns == DNS_BOGON) | ((dns == OK) & bogus_only)
    dns_failed = (dns_nx | dns_spoof | failed(dns)) & ~from_catalog
    # A step that never ran because an earlier one was cut: the deciding outcome is the cut.
    tcp_absent = tcp == ABSENT
    # The reflector's TLS streams (expect echo) go through the TLS and GET rules as "https".
    stream = np.isin(expect, STREAM_EXPECTS)
    deep = np.isin(expect, ("tls", "https")) | stream
    http = (expect == "https") | stream
    app_handshake = np.isin(expect, HANDSHAKE_EXPECTS)
    http3 = expect == "http3"
    call = np.isin(expect, CALL_EXPECTS)
    udp = http3 | call
    udp_step = np.where(http3, quic, relay)
    udp_absent = udp_step == ABSENT
    tls_ok = tls_real == OK

    tcp_ok = tcp == OK
    # (condition, status, failure class); the first that holds decides.
    rules: list[tuple[np.ndarray, int, int]] = [
        (dns_failed & dns_nx, S_FAILED, C_DNS_NXDOMAIN),
        (dns_failed & dns_spoof, S_FAILED, C_DNS_SPOOF),
        (dns_failed, S_FAILED, C_DNS_OTHER),
        # UDP targets (HTTP/3, the call path): one step, no TCP.
        (udp & ((udp_step == NOT_ALLOWED) | udp_absent & (dns == NOT_ALLOWED)), S_NOT_ALLOWED, -1),
        (udp & ((udp_step == INTERRUPTED) | udp_absent & (dns == INTERRUPTED)), S_INTERRUPTED, -1),
        (udp & udp_absent, S_UNMEASURED, -1),
        (http3 & failed(udp_step), S_FAILED, C_QUIC),
        (call & np.isin(udp_step, (TIMEOUT, HOST_UNREACH, NET_UNREACH)), S_FAILED, C_RELAY_SILENT),
        (call & np.isin(udp_step, (REFUSED, RESET)), S_FAILED, C_RELAY_REFUSED),
        (call & failed(udp_step), S_FAILED, C_RELAY_OTHER),
        (udp, S_OK, -1),
        (tcp_absent & (dns == NOT_ALLOWED), S_NOT_ALLOWED, -1),
        (tcp_absent & (dns == INTERRUPTED), S_INTERRUPTED, -1),
        (tcp_absent, S_UNMEASURED, -1),
        (tcp == NOT_ALLOWED, S_NOT_ALLOWED, -1),
        (tcp == INTERRUPTED, S_INTERRUPTED, -1),
        ((tcp == NET_UNREACH) & ipv6, S_NO_ROUTE, -1),
        (np.isin(tcp, (TIMEOUT, HOST_UNREACH, NET_UNREACH)), S_FAILED, C_TCP_DROP),
        (np.isin(tcp, (RESET, REFUSED)), S_FAILED, C_TCP_RST),
        (~tcp_ok, S_FAILED, C_TCP_OTHER),
        (app_handshake & (handshake == NOT_ALLOWED), S_NOT_ALLOWED, -1),
        (app_handshake & np.isin(handshake, (INTERRUPTED, ABSENT)), S_INTERRUPTED, -1),
        (app_handshake & np.isin(handshake, (RESET, REFUSED)), S_FAILED, C_HS_RST),
        (app_handshake & np.isin(handshake, (TIMEOUT, EOF)), S_FAILED, C_HS_DROP),
        (app_handshake & (handshake != OK), S_FAILED, C_HS_OTHER),
        (app_handshake, S_OK, -1),
        (~deep, S_OK, -1),
        (tls_real == NOT_ALLOWED, S_NOT_ALLOWED, -1),
        (np.isin(tls_real, (INTERRUPTED, ABSENT)), S_INTERRUPTED, -1),
        (np.isin(tls_real, (RESET, REFUSED)), S_FAILED, C_TLS_RST),
        (np.isin(tls_real, (TIMEOUT, EOF)) & (tls_neutral == OK), S_FAILED, C_TLS_SNI),
        (~tls_ok, S_FAILED, C_TLS_OTHER),
        (~http, S_OK, -1),
        (throttled, S_THROTTLED, -1),
        (http_real == NOT_ALLOWED, S_NOT_ALLOWED, -1),
        (np.isin(http_real, (INTERRUPTED, ABSENT)), S_INTERRUPTED, -1),
        (np.isin(http_real, (RESET, REFUSED)), S_FAILED, C_HTTP_RST),
        (np.isin(http_real, (TIMEOUT, EOF)) & (http_neutral == OK), S_FAILED, C_HTTP_SNI),
        (
            (http_real == TIMEOUT) & (http_neutral == TIMEOUT) & stalled,
            S_FAILED,
            C_HTTP_CUTOFF,
        ),
        (http_real != OK, S_FAILED, C_HTTP_OTHER),
    ]
    conditions = [c for c, _, _ in rules]
    outcomes = [(status, fail_class) for _, status, fail_class in rules]
    status = np.select(conditions, [s for s, _ in outcomes], default=S_OK)
    fail_class = np.select(conditions, [c for _, c in outcomes], default=-1)
    # Step 5: a failed connection to a disputed system answer is the answer's fault.
    spoofed = (status == S_FAILED) & (fail_class > C_DNS_OTHER) & mismatch & from_system
    fail_class = np.where(spoofed, C_DNS_SPOOF, fail_class)
    return status.astype(np.int64), fail_class.astype(np.int64)


# --- call flows: per (run, app), from the call_flow records --------------------------------------

# Flow records that say nothing about the network: cut by the deadline, or refused by the
# allow-list before anything was sent.
_NOT_EVIDENCE_FAILURES: Final = (Failure.INTERRUPTED, Failure.ADDRESS_NOT_ALLOWED)

# name -> (dtype, meaning); NA (NaN), 0 or False on rows without a call test. The figures are
# those of the app's test whose call flow fared worst against its control (largest area).
CALLFLOW_COLUMNS: Final[dict[str, tuple[str, str]]] = {
    "callflow_tests": (
        "int64",
        "call tests (a call flow and its control, from call_flow records) that are evidence",
    ),
    "call_delivery": ("float64", "call flow: echoed / sent datagrams"),
    "control_delivery": ("float64", "its control flow (random bytes, same sizes and times)"),
    "call_rate_bps": (
        "float64",
        "call flow: echoed bit/s, averaged over the 0.25 s bins it sent in",
    ),
    "control_rate_bps": ("float64", "the same for its control"),
    "neutral_delivery": ("float64", "the call framing on the neutral port (NA: not run)"),
    "call_area": (
        "float64",
        "Wehe's area over per-bin delivery: (mean control - mean call) / max of the two",
    ),
    "call_p": ("float64", "two-sided Mann-Whitney p-value, call vs control per-bin delivery"),
    "call_blocked": (
        "bool",
        f"the call flow got no echo after its first {cf.BLOCK_WITHIN_S:g} s while the control "
        "was echoed to its end, or its opening alone never came back (call_opening_lost)",
    ),
    "call_opening_lost": (
        "bool",
        f"none of the call flow's first {cf.OPENING} datagrams (STUN Allocate and pings, "
        "reflector hellos) came back, while the control's did and the rest of the call flow was "
        "delivered",
    ),
    "neutral_blocked": ("bool", "call_blocked for the call framing on the neutral port"),
    "call_cut_s": (
        "float64",
        "seconds from the call flow's start to its last echoed datagram, when it was cut (its "
        "echoes stopped >= 1 s before its last send while the control's went on); NA otherwise",
    ),
    "call_cut_packets": ("float64", "datagrams sent up to the cut (NA: not cut)"),
    "call_cut_bytes": ("float64", "bytes sent up to the cut, at bin resolution (NA: not cut)"),
    "call_loss_up": ("float64", "share of the call's datagrams that never reached the reflector"),
    "call_loss_down": ("float64", "share of those the reflector got whose echo never came back"),
    "call_policing": (
        "bool",
        "the call flow lost datagrams without its RTT rising (drops, not delays: policing)",
    ),
    "call_loss_bursts": ("int64", "runs of consecutive bins in which the call flow lost datagrams"),
    "call_rtt_slope_ms_s": ("float64", "slope of the call flow's per-bin median RTT, ms per s"),
    "control_rtt_slope_ms_s": ("float64", "the same for its control"),
}
# The value a per-app column takes on a row without a call test (or trace), by dtype.
_EMPTY: Final = {"int64": 0, "float64": np.nan, "bool": False, "string": None}


def _flow_tests(
    flows: dict[str, list[tuple[float, str, cf.Flow]]],
) -> list[dict[str, float | bool | None]]:
    """The summaries of one (run, app, profile)'s tests: the k-th call flow (in start order)
    with the k-th control and the k-th neutral-port flow."""
    ordered = {name: sorted(items, key=lambda i: (i[0], i[1])) for name, items in flows.items()}
    calls, controls = ordered.get("call", []), ordered.get("control", [])
    neutrals = ordered.get("call_neutral_port", [])
    out = []
    for k in range(min(len(calls), len(controls))):
        neutral = neutrals[k][2] if k < len(neutrals) else None
        out.append(cf.summarize(calls[k][2], controls[k][2], neutral))
    return out


def callflow_features(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, app) with at least one call test: run_id, app and CALLFLOW_COLUMNS.

    A test is a ``call`` flow and its ``control`` of the same run, app, profile and transaction
    (probe.runner writes a test's three flows under one transaction id; the k-th of each in start
    order should a transaction hold more), with the ``call_neutral_port`` flow if there is one.
    Flow records cut by the deadline or refused by the allow-list are not evidence. Each
    record's per-bin counts are parsed from the ``call_flow`` column (a few records per run, so a
    Python loop over them; the statistics per flow are NumPy).
    """
    columns = ["run_id", "app", *CALLFLOW_COLUMNS]
    empty = pd.DataFrame({name: [] for name in columns})
    if "call_flow" not in df.columns:
        return empty
    # Only call_flow records carry the column: the rest of the frame is never looked at.
    rows = np.flatnonzero(df["call_flow"].notna().to_numpy(dtype=bool))
    if rows.size == 0:
        return empty
    records = df.iloc[rows]
    is_flow = records["check"].astype(object).eq(CALL_FLOW_CHECK).to_numpy(bool, na_value=False)
    usable = ~records["failure"].astype(object).isin(_NOT_EVIDENCE_FAILURES).to_numpy(bool)
    names = ["run_id", "app", "transaction_id", "t0", "measurement_id", "call_flow"]
    sub = records.loc[is_flow & usable, names]
    groups: dict[tuple[str, str, str, int], dict[str, list[tuple[float, str, cf.Flow]]]] = {}
    for run_id, app, tx, t0, mid, text in sub.itertuples(index=False, name=None):
        details = json.loads(text)
        if not isinstance(details, dict) or details.get("flow") not in cf.FLOWS:
            continue
        key = (str(run_id), str(app), str(details.get("profile")), -1 if pd.isna(tx) else int(tx))
        start = float(t0) if pd.notna(t0) else 0.0
        item = (start, str(mid), cf.flow_from_details(details))
        groups.setdefault(key, {}).setdefault(str(details["flow"]), []).append(item)
    per_app: dict[tuple[str, str], list[dict[str, float | bool | None]]] = {}
    for (run_id, app, _profile, _tx), flows in sorted(groups.items()):
        per_app.setdefault((run_id, app), []).extend(_flow_tests(flows))
    found = []
    for (run_id, app), tests in per_app.items():
        if not tests:
            continue
        # The worst test: the largest area (NaN lowest); ties to the first (profile, transaction).
        areas = np.array([t["call_area"] for t in tests], dtype=np.float64)
        scores = np.where(np.isnan(areas), -np.inf, areas)
        worst = tests[int(np.argmax(scores))]
        found.append({"run_id": run_id, "app": app, **worst, "callflow_tests": len(tests)})
    if not found:
        return empty
    return pd.DataFrame(found)[columns]


def _merge_per_app(
    table: pd.DataFrame, found: pd.DataFrame, columns: dict[str, tuple[str, str]]
) -> dict[str, np.ndarray]:
    """``columns`` of ``found`` (run_id, app, ...) for the rows of ``table`` (run_id, app), rows
    without a match filled with their dtype's empty value (_EMPTY)."""
    n = len(table)
    merged = None if found.empty else table.merge(found, on=["run_id", "app"], how="left")
    out = {}
    for name, (dtype, _meaning) in columns.items():
        kind = object if dtype == "string" else np.float64 if dtype == "float64" else dtype
        if merged is None:
            out[name] = np.full(n, _EMPTY[dtype], dtype=kind)
            continue
        column = merged[name].astype(object)
        out[name] = column.where(column.notna(), _EMPTY[dtype]).to_numpy(dtype=kind)
    return out


# --- traces: per (run, app), from the trace records ----------------------------------------------

# The check whose records say where on the path a trigger met interference (probe.checks.trace).
TRACE_CHECK: Final = "trace"

# name -> (dtype, meaning); 0, NA (NaN) or False on rows without a trace. A trace is *evidence*
# when its trigger record has no failure and its control record (same run, app, transaction and
# trigger; also without failure) is there and not itself localized: a control that meets
# interference means the path treats neutral content alike, so the trigger's stop says nothing
# about the trigger. A trace sees resets and drops of the one packet it sends per TTL, so it
# locates blocking, and locates throttling only when a policer drops the trigger packet itself.
TRACE_COLUMNS: Final[dict[str, tuple[str, str]]] = {
    "traces": ("int64", "trigger traces that are evidence (trace records; see TRACE_COLUMNS)"),
    "trace_hops": (
        "string",
        "the localized traces as trigger:hop, distinct, sorted by trigger then hop ('tls:2 "
        "stun:2'; hop h: after the h-th router, 0 before the first); NA: none localized",
    ),
    "trace_addresses": (
        "string",
        "the routers at those hops as hop:address, distinct, sorted ('2:198.51.100.5'); NA: "
        "none known",
    ),
    "trace_hop_min": ("float64", "the lowest hop a trace localized interference after (NA: none)"),
    "trace_hop_max": ("float64", "the highest (NA: none)"),
    "trace_split": (
        "bool",
        "two triggers localized at different hops: some two triggers' sets of localized hops "
        "share no hop (e.g. the tls trace after hop 2, the stun trace after hop 3)",
    ),
}


def _split(hops_by_trigger: dict[str, set[int]]) -> bool:
    sets = list(hops_by_trigger.values())
    return any(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])


def trace_features(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, app) with at least one evidence trace: run_id, app and TRACE_COLUMNS.

    Only ``trace`` records are looked at (a few per run, so pandas groupby). Which traces are
    evidence is said at TRACE_COLUMNS. Hops are TTLs on the path to each trace's own
    destination: triggers traced to different addresses may take different paths, so a split
    is worth checking against ``trace_addresses``.
    """
    columns = ["run_id", "app", *TRACE_COLUMNS]
    empty = pd.DataFrame({name: [] for name in columns})
    if "trace_trigger" not in df.columns:
        return empty
    is_trace = df["check"].astype(object).eq(TRACE_CHECK).to_numpy(bool, na_value=False)
    if not is_trace.any():
        return empty
    names = [
        "run_id",
        "app",
        "transaction_id",
        "trace_trigger",
        "trace_control",
        "failure",
        "trace_localized_hop",
        "trace_localized_address",
    ]
    sub = df.loc[is_trace, names].astype(object)
    sub = sub[sub["failure"].isna() & sub["trace_trigger"].notna() & sub["trace_control"].notna()]
    key = ["run_id", "app", "transaction_id", "trace_trigger"]
    sub["transaction_id"] = sub["transaction_id"].where(sub["transaction_id"].notna(), -1)
    control = sub["trace_control"].astype(bool)
    controls = sub[control].assign(localized=sub["trace_localized_hop"].notna())
    clean = controls.groupby(key)["localized"].any().reset_index()
    clean = clean[~clean["localized"]].drop(columns="localized")
    triggers = sub[~control].merge(clean, on=key, how="inner")
    if triggers.empty:
        return empty
    found = []
    for (run_id, app), group in triggers.groupby(["run_id", "app"], sort=True):
        hops: dict[str, set[int]] = {}
        routers: set[tuple[int, str]] = set()
        for trigger, hop, address in group[
            ["trace_trigger", "trace_localized_hop", "trace_localized_address"]
        ].itertuples(index=False, name=None):
            if pd.isna(hop):
                continue
            hops.setdefault(str(trigger), set()).add(int(hop))
            if pd.notna(address):
                routers.add((int(hop), str(address)))
        every = sorted(set().union(*hops.values())) if hops else []
        pairs = sorted((t, h) for t, hs in hops.items() for h in hs)
        found.append(
            {
                "run_id": run_id,
                "app": app,
                "traces": len(group),
                "trace_hops": " ".join(f"{t}:{h}" for t, h in pairs) if pairs else None,
                "trace_addresses": (
                    " ".join(f"{h}:{a}" for h, a in sorted(routers)) if routers else None
                ),
                "trace_hop_min": float(every[0]) if every else np.nan,
                "trace_hop_max": float(every[-1]) if every else np.nan,
                "trace_split": _split(hops),
            }
        )
    return pd.DataFrame(found)[columns]


# --- level 2: per (run, app) ---------------------------------------------------------------------

# The columns app_features returns, with what each means; verdicts() reports them as figures.
FEATURE_COLUMNS: Final[dict[str, str]] = {
    "run_id": "the run",
    "app": "the app",
    "is_control": "the row is the run's neutral controls",
    "targets": "endpoints that are evidence (judged roles, a usable result, not excluded)",
    "targets_failed": "of those, endpoints that failed",
    "share_failed": "targets_failed / targets (NA without evidence)",
    "dominant_failure": "the most common failure class among failed endpoints (FAIL_CLASSES)",
    "dominant_count": "endpoints that failed with the dominant class",
    "dominant_layer": "layer of the dominant class",
    "dominant_mechanism": "mechanism of the dominant class (NA: not told)",
    "targets_interrupted": "judged endpoints whose deciding step the run's deadline cut",
    "targets_unjudged": "judged endpoints without a usable result (interrupted, not allowed, "
    "no IPv6 route, not measured)",
    "excluded_by_baseline": "failed endpoints whose failing step fails from the baseline too",
    "dns_mismatch": "endpoints whose system-resolver answer the other resolvers disagree with",
    "throughput_targets": "endpoints whose real and neutral HTTPS GETs (or TLS streams from the "
    "ringprobe reflector) can be compared",
    "targets_throttled": "of those, reachable endpoints with ratio < THROTTLE_RATIO and a "
    "real-SNI rate < THROTTLE_MAX_BPS",
    "targets_fast": "of those, reachable endpoints with ratio >= UNTHROTTLED_RATIO",
    "throughput_real_bps": "real-SNI GET rate of the endpoint with the lowest ratio",
    "throughput_neutral_bps": "neutral-SNI GET rate to the same address",
    "throughput_ratio": "their ratio (the lowest of the app's)",
    "bulk_targets": "judged endpoints that are evidence and move more than a handshake (HTTPS "
    "GETs), the ones a byte cut-off can show on",
    "targets_cut": "judged endpoints whose GETs both stalled after a few KB (http_cutoff)",
    "cutoff_bytes": "the most body bytes a cut endpoint's GET read before it stalled (NA: none)",
    "quic_targets": "HTTP/3 endpoints (expect http3) with a usable result; a detail, never judged",
    "quic_failed": "of those, endpoints whose QUIC handshake or HTTP/3 GET failed",
    "relays": "the app's call-path endpoints (relays, reflectors, TURN; for the control row its "
    "STUN servers) with a usable result",
    "relays_failed": "of those, endpoints whose known answer did not come",
    "relay_roles": "call-server roles (relay, reflector, turn) among the app's relays",
    "relay_roles_silent": f"of those, roles with relays_failed >= {BLOCK_SHARE} of the role's",
    "silent_roles": "their names, comma-separated (NA: none)",
    "udp_controls": "the run's neutral STUN servers (app control) with a usable result",
    "udp_controls_failed": "of those, failed",
    "run_control_delivery": "the best delivery among the run's call-test control flows (random "
    "bytes echoed by the ringprobe reflector, any app; NA: no call test)",
    "controls": "the run's neutral control endpoints that are evidence",
    "controls_failed": "of those, failed",
    "control_share_failed": "controls_failed / controls (NA without controls)",
    **{name: meaning for name, (_dtype, meaning) in CALLFLOW_COLUMNS.items()},
    **{name: meaning for name, (_dtype, meaning) in TRACE_COLUMNS.items()},
    "probe_cc": "country of the run",
    "probe_asn": "network of the run",
    "probe_network_type": "wifi, mobile, wired or unknown, as the volunteer said",
    "vantage": "volunteer, baseline, lab or ooni",
    "start_time": "earliest start of the run's records",
}


def _per_run_min_string(run: np.ndarray, n_runs: int, column: pd.Series) -> np.ndarray:
    """Per run, the alphabetically first value of a categorical column (order-independent even
    if a run's records disagreed), NA-free runs first."""
    codes, cats = _cat(column)
    order = np.argsort(np.asarray(cats, dtype=object).astype(str), kind="stable")
    rank = np.empty(len(cats) + 1, dtype=np.int64)
    rank[order] = np.arange(len(cats))
    rank[len(cats)] = len(cats)  # NA sorts last
    best = np.full(n_runs, len(cats), dtype=np.int64)
    np.minimum.at(best, run, rank[codes])
    names = np.array([*np.asarray(cats, dtype=object)[order], None], dtype=object)
    return names[best]


def app_features(df: pd.DataFrame, targets: Targets) -> pd.DataFrame:
    """Level 2: one row per (run, app) present in ``df`` (deduplicated records), columns as
    FEATURE_COLUMNS. Rows are in no particular order; verdicts() sorts them."""
    run_all, run_cats = _cat(df["run_id"])
    app_all, app_cats = _cat(df["app"])
    # The same frame made the targets: their codes index these categories.
    assert run_cats.equals(targets.run_cats)
    assert app_cats.equals(targets.app_cats)
    n_apps_cat = max(len(app_cats), 1)
    _, a_keys = pd.factorize(run_all * n_apps_cat + app_all)
    a_keys = np.asarray(a_keys, dtype=np.int64)
    m = len(a_keys)
    a_run = a_keys // n_apps_cat
    a_app = a_keys % n_apps_cat
    app_names = np.asarray(app_cats, dtype=object)[a_app] if m else np.array([], dtype=object)
    is_control = app_names == CONTROL_APP

    # Which rows each target belongs to.
    t_key = targets.run * n_apps_cat + targets.app
    t_row = pd.Index(a_keys).get_indexer(t_key)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(t_row[mask], minlength=m).astype(np.int64)

    status, role = targets.status, targets.role
    has_signaling = count(np.isin(role, SIGNALING_ROLES)) > 0
    # HTTP/3 endpoints are never judged: browsers and apps fall back to TCP, so QUIC failing is a
    # detail of the verdict (quic_targets, quic_failed), not evidence that the app is blocked.
    # The call path (relays, reflectors, TURN, the neutral STUN controls) has rules of its own.
    judged = (
        ~targets.http3
        & ~targets.call
        & (np.isin(role, SIGNALING_ROLES) | (~has_signaling[t_row] & np.isin(role, FALLBACK_ROLES)))
    )
    evidence = judged & np.isin(status, EVIDENCE_STATUSES)
    failed = judged & (status == S_FAILED)
    n_targets = count(evidence)
    n_failed = count(failed)
    unjudged = np.isin(status, (S_INTERRUPTED, S_NOT_ALLOWED, S_NO_ROUTE, S_UNMEASURED))

    # Dominant failure class: most failed targets; ties go to the earlier class in FAIL_CLASSES.
    k = len(FAIL_CLASSES)
    by_class = np.bincount(t_row[failed] * k + targets.fail_class[failed], minlength=m * k).reshape(
        m, k
    )
    dominant = np.where(n_failed > 0, by_class.argmax(axis=1), -1)
    dominant_count = by_class.max(axis=1, initial=0)
    classes = [*FAIL_CLASSES]
    names = np.array([c.name for c in classes] + [None], dtype=object)
    layers = np.array([c.layer for c in classes] + [None], dtype=object)
    mechanisms = np.array([c.mechanism for c in classes] + [None], dtype=object)

    # Throughput: all of the app's non-call endpoints, judged or not (WhatsApp's are web ones),
    # and the ringprobe reflector's TLS port (role "reflector", a call role, but its sni_stream
    # records are an SNI comparison like an HTTPS target's GETs; its UDP ports are unmeasured).
    served = (~np.isin(role, CALL_ROLES) | targets.stream) & np.isin(status, (S_OK, S_THROTTLED))
    comparable = served & targets.measurable
    n_comparable = count(comparable)
    n_throttled = count(served & (status == S_THROTTLED))
    n_fast = count(comparable & (status == S_OK) & (targets.ratio >= UNTHROTTLED_RATIO))
    real = np.full(m, np.nan)
    neutral = np.full(m, np.nan)
    ratio = np.full(m, np.nan)
    idx = np.flatnonzero(comparable)
    if idx.size:
        # The lowest ratio per row; rate ties broken by the rates, so row order never matters.
        order = np.lexsort(
            (targets.neutral_bps[idx], targets.real_bps[idx], targets.ratio[idx], t_row[idx])
        )
        picked = idx[order]
        rows, first = np.unique(t_row[picked], return_index=True)
        real[rows] = targets.real_bps[picked[first]]
        neutral[rows] = targets.neutral_bps[picked[first]]
        ratio[rows] = targets.ratio[picked[first]]

    # Byte cut-off: counted over the endpoints that move enough bytes to show one.
    n_bulk = count(evidence & targets.bulk)
    is_cut = failed & (targets.fail_class == C_HTTP_CUTOFF)
    cutoff_bytes = np.full(m, np.nan)
    np.fmax.at(cutoff_bytes, t_row[is_cut], targets.cutoff_bytes[is_cut])

    # The run's neutral controls, on every row of the run.
    n_runs = len(run_cats)
    controls = np.zeros(n_runs, dtype=np.int64)
    controls_failed = np.zeros(n_runs, dtype=np.int64)
    controls[a_run[is_control]] = n_targets[is_control]
    controls_failed[a_run[is_control]] = n_failed[is_control]

    # The call path: the app's own call servers, and the run's neutral UDP controls (a STUN
    # server of app "control"), on every row of the run.
    call_evidence = targets.call & np.isin(status, EVIDENCE_STATUSES)
    call_failed = targets.call & (status == S_FAILED)
    n_relays, n_relays_failed = count(call_evidence), count(call_failed)
    udp_controls = np.zeros(n_runs, dtype=np.int64)
    udp_controls_failed = np.zeros(n_runs, dtype=np.int64)
    udp_controls[a_run[is_control]] = n_relays[is_control]
    udp_controls_failed[a_run[is_control]] = n_relays_failed[is_control]
    # Per role (WhatsApp's relays; Telegram's reflectors and its TURN servers): one role silent
    # while another answers is a partial restriction, not the whole call path gone.
    k_roles = len(CALL_ROLES)
    role_code = np.full(len(role), -1, dtype=np.int64)
    for k, name in enumerate(CALL_ROLES):
        role_code[role == name] = k
    in_role = role_code >= 0

    def count_by_role(mask: np.ndarray) -> np.ndarray:
        sel = mask & in_role
        cells = t_row[sel] * k_roles + role_code[sel]
        return np.bincount(cells, minlength=m * k_roles).reshape(m, k_roles)

    by_role = count_by_role(call_evidence)
    role_silent = (by_role > 0) & (count_by_role(call_failed) >= BLOCK_SHARE * by_role)
    silent_roles = np.full(m, None, dtype=object)
    for i in np.flatnonzero(role_silent.any(axis=1)):
        silent_roles[i] = ", ".join(n for n, s in zip(CALL_ROLES, role_silent[i], strict=True) if s)

    # Run metadata, from all of the run's records (informational ones too).
    start = df["start_time"].to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    start[start == np.iinfo(np.int64).min] = np.iinfo(np.int64).max  # NaT never wins the min
    first_start = np.full(n_runs, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_start, run_all, start)
    first_start = np.where(
        first_start == np.iinfo(np.int64).max, np.iinfo(np.int64).min, first_start
    )
    meta = {
        name: _per_run_min_string(run_all, n_runs, df[name])[a_run]
        for name in ("probe_cc", "probe_asn", "probe_network_type", "vantage")
    }

    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_targets > 0, n_failed / np.maximum(n_targets, 1), np.nan)
        c_n, c_f = controls[a_run], controls_failed[a_run]
        control_share = np.where(c_n > 0, c_f / np.maximum(c_n, 1), np.nan)
    keys = pd.DataFrame({"run_id": np.asarray(run_cats, dtype=object)[a_run], "app": app_names})
    calls = _merge_per_app(keys, callflow_features(df), CALLFLOW_COLUMNS)
    traces = _merge_per_app(keys, trace_features(df), TRACE_COLUMNS)
    # The run's best random-bytes control flow: UDP that is neither STUN nor call-shaped, echoed
    # by the ringprobe reflector. It tells a network that fails UDP from one that filters STUN.
    best_control = np.full(n_runs, np.nan)
    np.fmax.at(best_control, a_run, calls["control_delivery"])
    return pd.DataFrame(
        {
            "run_id": np.asarray(run_cats, dtype=object)[a_run],
            "app": app_names,
            "is_control": is_control,
            "targets": n_targets,
            "targets_failed": n_failed,
            "share_failed": share,
            "dominant_failure": names[dominant],
            "dominant_count": dominant_count.astype(np.int64),
            "dominant_layer": layers[dominant],
            "dominant_mechanism": mechanisms[dominant],
            "targets_interrupted": count(judged & (status == S_INTERRUPTED)),
            "targets_unjudged": count(judged & unjudged),
            "excluded_by_baseline": count(judged & (status == S_EXCLUDED)),
            "dns_mismatch": count(targets.dns_mismatch),
            "throughput_targets": n_comparable,
            "targets_throttled": n_throttled,
            "targets_fast": n_fast,
            "throughput_real_bps": real,
            "throughput_neutral_bps": neutral,
            "throughput_ratio": ratio,
            "bulk_targets": n_bulk,
            "quic_targets": count(targets.http3 & np.isin(status, EVIDENCE_STATUSES)),
            "quic_failed": count(targets.http3 & (status == S_FAILED)),
            "relays": n_relays,
            "relays_failed": n_relays_failed,
            "relay_roles": (by_role > 0).sum(axis=1).astype(np.int64),
            "relay_roles_silent": role_silent.sum(axis=1).astype(np.int64),
            "silent_roles": silent_roles,
            "udp_controls": udp_controls[a_run],
            "udp_controls_failed": udp_controls_failed[a_run],
            "run_control_delivery": best_control[a_run],
            "targets_cut": count(is_cut),
            "cutoff_bytes": cutoff_bytes,
            "controls": c_n,
            "controls_failed": c_f,
            "control_share_failed": control_share,
            **calls,
            **traces,
            **meta,
            "start_time": pd.to_datetime(first_start[a_run], utc=True),
        }
    )


__all__ = [
    "BASELINE_OK_SHARE",
    "BLOCK_SHARE",
    "CALLFLOW_COLUMNS",
    "CALL_CHECKS",
    "CALL_EXPECTS",
    "CONTROL_FAIL_SHARE",
    "CUTOFF_MAX_BYTES",
    "CUTOFF_MIN_BPS",
    "FAILURE_KINDS",
    "FAIL_CLASSES",
    "FEATURE_COLUMNS",
    "HANDSHAKE_CHECKS",
    "HANDSHAKE_EXPECTS",
    "MIN_BASELINE_RUNS",
    "MIN_THROUGHPUT_BYTES",
    "PARTIAL_SHARE",
    "SNI_STREAM_CHECK",
    "STEPS",
    "STREAM_EXPECTS",
    "TARGET_STATUSES",
    "THROTTLE_MAX_BPS",
    "THROTTLE_RATIO",
    "TRACE_CHECK",
    "TRACE_COLUMNS",
    "UNTHROTTLED_RATIO",
    "FailClass",
    "Targets",
    "app_features",
    "baseline_failures",
    "callflow_features",
    "dedup",
    "failure_kind",
    "record_steps",
    "step_of",
    "target_table",
    "trace_features",
]
