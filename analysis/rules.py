"""The verdict rules: an ordered list of data, evaluated over the feature table; first match wins.

Each ``Rule`` names the verdict, layer and mechanism it gives, a vectorised condition over the
feature table of ``analysis.features`` (one row per run and app) and a vectorised sentence that
states the figures behind it. ``apply_rules`` evaluates every condition at once and picks, per row,
the first rule whose condition holds (``np.select``); the last rule, ``ok``, always holds.

Adding evidence means adding feature columns and rules; the call-path verdicts (calls_blocked,
calls_throttled, calls_cut) slot in after ``partial_failure`` (so signaling works whenever one
fires) reading call-flow, relay and reflector columns, without touching the rules that exist.
The call-flow rules (``CALLFLOW_RULES``) come first among them: a call-shaped flow measured
against its own control is direct evidence of what happens to call media, where a silent relay
only says that one address did not answer. When the flows show nothing (or the run has none,
or the reflector echoed not even the control) the relay rules decide as before. No rule reads
the traces: ``apply_rules`` appends to the sentence of an interference verdict
(``INTERFERENCE_VERDICTS``) where on the path a trace localized it (``trace_clause``). ``RULES`` is
public so a researcher can read, in order, what fires::

    for rule in analysis.RULES:
        print(rule.name, rule.verdict, rule.condition)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

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
    BLOCK_SHARE,
    CONTROL_FAIL_SHARE,
    CUTOFF_MAX_BYTES,
    FAIL_CLASSES,
    PARTIAL_SHARE,
    THROTTLE_MAX_BPS,
    THROTTLE_RATIO,
    UNTHROTTLED_RATIO,
)

# METHOD.md's vocabulary, in its order.
VERDICTS: Final = (
    "ok",
    "blocked",
    "throttled",
    "calls_blocked",
    "calls_throttled",
    "calls_cut",
    "network_degraded",
    "inconclusive",
)
LAYERS: Final = ("dns", "tcp", "tls", "quic", "udp")
MECHANISMS: Final = (
    "dns_spoof",
    "dns_nxdomain",
    "ip_drop",
    "rst",
    # Not in METHOD.md's list: issue 5 names it for a TCP connection that opens while the app's
    # protocol handshake (MTProto resPQ, WhatsApp ServerHello) never answers.
    "handshake_drop",
    "sni",
    "stun_fingerprint",
    "port",
    "rate_cap",
    "byte_cutoff",
    "time_cutoff",
)

Condition = Callable[[pd.DataFrame], "pd.Series[bool]"]
Explain = Callable[[pd.DataFrame], "pd.Series[str]"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: when ``when`` holds for a (run, app) row and no earlier rule did, the row gets
    ``verdict``, ``layer`` and ``mechanism`` (None: NA) and the sentence ``explain`` builds."""

    name: str
    verdict: str
    layer: str | None
    mechanism: str | None
    when: Condition
    explain: Explain
    condition: str
    """The condition in words, for people reading RULES."""


# --- sentence pieces (vectorised: Series of str in, Series of str out) ---------------------------

APP_NAMES: Final = {
    "whatsapp": "WhatsApp",
    "telegram": "Telegram",
    "signal": "Signal",
    "control": "neutral control",
}
_CLASS_TEXT: Final = {c.name: c.text for c in FAIL_CLASSES}


def app_name(apps: pd.Series) -> pd.Series:
    """Display names: WhatsApp, Telegram, Signal; other apps as they are called."""
    return apps.map(APP_NAMES).fillna(apps).astype(str)


def _n(values: pd.Series) -> pd.Series:
    return values.astype("int64").astype(str)


def _kbps(values: pd.Series) -> pd.Series:
    return (values / 1000).round().astype("int64").astype(str) + " kbit/s"


def _when(mask: pd.Series | np.ndarray, text: pd.Series | str, index: pd.Index) -> pd.Series:
    """``text`` where ``mask`` holds, else the empty string."""
    values = text.to_numpy(dtype=object) if isinstance(text, pd.Series) else text
    return pd.Series(np.where(np.asarray(mask, dtype=bool), values, ""), index=index, dtype=object)


def _failed_of(f: pd.DataFrame) -> pd.Series:
    return _n(f["targets_failed"]) + " of " + _n(f["targets"]) + " " + app_name(f["app"])


def _dominant(f: pd.DataFrame) -> pd.Series:
    """The dominant failure in words, with its count when not every failure was of that kind."""
    text = f["dominant_failure"].map(_CLASS_TEXT).fillna("").astype(str)
    partial = f["dominant_count"] < f["targets_failed"]
    share = " (" + _n(f["dominant_count"]) + " of them)"
    return text + _when(partial, share, f.index)


def _controls_answered(f: pd.DataFrame) -> pd.Series:
    answered = f["controls"] - f["controls_failed"]
    return _n(answered) + " of " + _n(f["controls"]) + " neutral controls answered"


def _explain_interrupted(f: pd.DataFrame) -> pd.Series:
    return (
        "no "
        + app_name(f["app"])
        + " endpoint could be judged: "
        + _n(f["targets_interrupted"])
        + " were cut short by the run's deadline"
    )


def _explain_no_evidence(f: pd.DataFrame) -> pd.Series:
    unjudged = f["targets_unjudged"] > 0
    excluded = f["excluded_by_baseline"] > 0
    return (
        "no "
        + app_name(f["app"])
        + " endpoint could be judged"
        + _when(
            unjudged,
            ": " + _n(f["targets_unjudged"]) + " refused by the allow-list, without an IPv6 "
            "route or not measured",
            f.index,
        )
        + _when(
            excluded,
            np.where(unjudged, "; ", ": ") + _n(f["excluded_by_baseline"]) + " fail from the "
            "baseline too",
            f.index,
        )
        + _when(~unjudged & ~excluded, ": none has a known normal answer", f.index)
    )


def _explain_control_failed(f: pd.DataFrame) -> pd.Series:
    return (
        _n(f["targets_failed"])
        + " of "
        + _n(f["targets"])
        + " neutral controls failed: "
        + _dominant(f)
        + "; the network itself is impaired"
    )


def _explain_control_ok(f: pd.DataFrame) -> pd.Series:
    return (
        _n(f["targets"] - f["targets_failed"])
        + " of "
        + _n(f["targets"])
        + " neutral controls answered"
    )


def _explain_no_controls(f: pd.DataFrame) -> pd.Series:
    return (
        _failed_of(f)
        + " endpoints failed: "
        + _dominant(f)
        + "; the run has no neutral controls to tell the app from the network"
    )


def _explain_degraded(f: pd.DataFrame) -> pd.Series:
    return (
        _failed_of(f)
        + " endpoints failed: "
        + _dominant(f)
        + "; so did "
        + _n(f["controls_failed"])
        + " of "
        + _n(f["controls"])
        + " neutral controls"
    )


def _explain_blocked(f: pd.DataFrame) -> pd.Series:
    return _failed_of(f) + " endpoints unusable: " + _dominant(f) + "; " + _controls_answered(f)


def _explain_partial(f: pd.DataFrame) -> pd.Series:
    return (
        _failed_of(f)
        + " endpoints failed: "
        + _dominant(f)
        + f"; a share between {PARTIAL_SHARE:.0%} and {BLOCK_SHARE:.0%} is too mixed to call"
    )


def _throughput(f: pd.DataFrame) -> pd.Series:
    return (
        "HTTPS with the app's SNI at "
        + _kbps(f["throughput_real_bps"])
        + " vs "
        + _kbps(f["throughput_neutral_bps"])
        + " with a neutral SNI to the same address (ratio "
        + f["throughput_ratio"].round(2).astype(str)
        + ")"
    )


def _explain_contradicted(f: pd.DataFrame) -> pd.Series:
    return (
        _throughput(f)
        + " on "
        + _n(f["targets_throttled"])
        + " "
        + app_name(f["app"])
        + " endpoint(s), but "
        + _n(f["targets_fast"])
        + " other(s) got at least "
        + f"{UNTHROTTLED_RATIO:.0%} of the neutral rate"
    )


def _explain_throttled(f: pd.DataFrame) -> pd.Series:
    return (
        _throughput(f)
        + "; "
        + _n(f["targets_throttled"])
        + " of "
        + _n(f["throughput_targets"])
        + " comparable "
        + app_name(f["app"])
        + " endpoints below "
        + f"{THROTTLE_RATIO:.0%} of the neutral rate and {THROTTLE_MAX_BPS // 1000} kbit/s"
    )


def _kb(values: pd.Series) -> pd.Series:
    return (values / 1000).round().astype("int64").astype(str) + " KB"


def _explain_cutoff(f: pd.DataFrame) -> pd.Series:
    others = f["targets"] - f["bulk_targets"]
    return (
        _n(f["targets_cut"])
        + " of "
        + _n(f["bulk_targets"])
        + " "
        + app_name(f["app"])
        + " endpoints that carry more than a handshake stalled after at most "
        + _kb(f["cutoff_bytes"])
        + " of body, with the app's and a neutral SNI alike (a byte cut-off on the path)"
        + _when(
            others > 0,
            "; " + _n(others) + " handshake-only endpoint(s), too small to reach it",
            f.index,
        )
        + "; "
        + _controls_answered(f)
    )


def _explain_ok(f: pd.DataFrame) -> pd.Series:
    worked = _n(f["targets"] - f["targets_failed"]) + " of " + _n(f["targets"])
    return worked + " " + app_name(f["app"]) + " endpoints worked"


def _quic_failed(f: pd.DataFrame) -> pd.Series:
    return (
        "; HTTP/3 failed on "
        + _n(f["quic_failed"])
        + " of "
        + _n(f["quic_targets"])
        + " endpoints while TCP worked (a detail: browsers and apps fall back to TCP)"
    )


def _explain_ok_quic(f: pd.DataFrame) -> pd.Series:
    return _explain_ok(f) + _quic_failed(f)


def _explain_control_ok_quic(f: pd.DataFrame) -> pd.Series:
    return _explain_control_ok(f) + _quic_failed(f)


def _calls_failed_of(f: pd.DataFrame) -> pd.Series:
    return (
        _n(f["relays_failed"])
        + " of "
        + _n(f["relays"])
        + " "
        + app_name(f["app"])
        + " call servers gave no known answer (STUN, relay ping, reflector hello)"
    )


def _udp_controls_text(f: pd.DataFrame) -> pd.Series:
    failed = _n(f["udp_controls_failed"]) + " of " + _n(f["udp_controls"])
    return failed + " neutral STUN servers failed too"


def _explain_calls_degraded(f: pd.DataFrame) -> pd.Series:
    return _calls_failed_of(f) + "; " + _udp_controls_text(f) + ": the network fails UDP"


def _explain_control_udp(f: pd.DataFrame) -> pd.Series:
    return _udp_controls_text(f).str.replace(" too", "", regex=False) + ": the network fails UDP"


def _explain_calls_no_controls(f: pd.DataFrame) -> pd.Series:
    return (
        _calls_failed_of(f)
        + "; the run has no neutral STUN server to tell a censor from the network"
    )


def _explain_calls_blocked(f: pd.DataFrame) -> pd.Series:
    worked = _n(f["targets"] - f["targets_failed"]) + " of " + _n(f["targets"])
    return (
        _calls_failed_of(f)
        + " while "
        + worked
        + " signaling endpoints worked and "
        + _n(f["udp_controls"] - f["udp_controls_failed"])
        + " of "
        + _n(f["udp_controls"])
        + " neutral STUN servers answered"
        + _when(_udp_echoed(f), "; " + _udp_echoed_text(f), f.index)
    )


def _explain_calls_partial(f: pd.DataFrame) -> pd.Series:
    return _calls_failed_of(f) + ": too many to be noise, too few to call the calls blocked"


def _udp_echoed_text(f: pd.DataFrame) -> pd.Series:
    return (
        "the run's random-bytes control flows were echoed by the ringprobe reflector (best "
        + _pct(f["run_control_delivery"])
        + ")"
    )


def _silent_roles_text(f: pd.DataFrame) -> pd.Series:
    return (
        "; silent roles: "
        + f["silent_roles"].astype(object).fillna("none").astype(str)
        + f" (a role is silent at >= {BLOCK_SHARE:.0%} of its servers)"
    )


def _explain_control_stun_failed(f: pd.DataFrame) -> pd.Series:
    return (
        _udp_controls_text(f).str.replace(" too", "", regex=False)
        + ", but "
        + _udp_echoed_text(f)
        + ": UDP works; STUN to those servers is filtered (by content or by address)"
    )


def _explain_calls_ok_flow(f: pd.DataFrame) -> pd.Series:
    return (
        _flow_app(f)
        + " delivered "
        + _pct(f["call_delivery"])
        + " and "
        + _control_echoed(f)
        + ": call-shaped traffic gets through; "
        + _calls_failed_of(f)
        + _silent_roles_text(f)
        + ": a restriction of some of the app's call servers only"
    )


def _explain_calls_role_silent(f: pd.DataFrame) -> pd.Series:
    return (
        _calls_failed_of(f)
        + _silent_roles_text(f)
        + ", while its other call servers answer: a call may still connect through those"
        + _when(~_flows(f), "; a call test (--reflector) would tell", f.index)
    )


# --- the call-flow rules -------------------------------------------------------------------------


def _pct(values: pd.Series) -> pd.Series:
    return (values.astype("float64") * 100).round().astype("Int64").astype(str) + "%"


def _g2(values: pd.Series) -> pd.Series:
    return values.astype("float64").map(lambda v: f"{v:.2g}").astype(str)


def _flow_app(f: pd.DataFrame) -> pd.Series:
    return app_name(f["app"]) + " call-shaped flow"


def _control_echoed(f: pd.DataFrame) -> pd.Series:
    return "its control (random bytes, same sizes and times) delivered " + _pct(
        f["control_delivery"]
    )


def _explain_flow_blocked(f: pd.DataFrame) -> pd.Series:
    neutral_ran = f["neutral_delivery"].notna()
    opening = f["call_opening_lost"].astype(bool)
    return (
        _flow_app(f)
        + _when(
            opening,
            f": its opening (the first {OPENING} datagrams, as the app's client starts a call) "
            "never came back on the app's port, the rest did",
            f.index,
        )
        + _when(
            ~opening,
            f" got no echo after its first {BLOCK_WITHIN_S:g} s on the app's port",
            f.index,
        )
        + _when(
            f["neutral_blocked"],
            ", nor did the same framing on a neutral port (the content is recognised)",
            f.index,
        )
        + _when(
            ~f["neutral_blocked"].astype(bool) & neutral_ran,
            "; the same framing on a neutral port delivered " + _pct(f["neutral_delivery"]),
            f.index,
        )
        + "; "
        + _control_echoed(f)
        + ", echoed to its end"
    )


def _explain_flow_cut(f: pd.DataFrame) -> pd.Series:
    return (
        _flow_app(f)
        + " stopped being echoed "
        + f["call_cut_s"].round(1).astype(str)
        + " s after it started ("
        + f["call_cut_packets"].astype("int64").astype(str)
        + " datagrams, "
        + _kb(f["call_cut_bytes"])
        + " sent) while "
        + _control_echoed(f)
        + ", echoed to its end; at one send rate a byte counter and a timer look alike"
    )


def _flow_comparison(f: pd.DataFrame) -> pd.Series:
    return (
        _flow_app(f)
        + " delivered "
        + _pct(f["call_delivery"])
        + " of its datagrams, "
        + _control_echoed(f)
        + " (area "
        + f["call_area"].round(2).astype(str)
        + ", Mann-Whitney p = "
        + _g2(f["call_p"])
        + ")"
    )


def _explain_flow_throttled(f: pd.DataFrame) -> pd.Series:
    lost = f["call_loss_up"].notna()
    return (
        _flow_comparison(f)
        + _when(
            lost,
            "; lost "
            + _pct(f["call_loss_up"])
            + " on the way out, "
            + _pct(f["call_loss_down"])
            + " on the way back",
            f.index,
        )
        + _when(f["call_policing"], "; drops without a rising RTT (policing)", f.index)
        + _when(
            ~f["call_policing"].astype(bool) & f["call_rtt_slope_ms_s"].notna(),
            "; RTT slope " + f["call_rtt_slope_ms_s"].round(1).astype(str) + " ms/s",
            f.index,
        )
    )


def _explain_flow_degraded(f: pd.DataFrame) -> pd.Series:
    return _flow_comparison(f) + ": the network loses UDP whatever its content"


def _explain_flow_unclear(f: pd.DataFrame) -> pd.Series:
    control_bad = f["control_delivery"] < FLOW_OK_DELIVERY
    return (
        _flow_comparison(f)
        + _when(control_bad, ": worse than the control, but the control lost too", f.index)
        + _when(~control_bad, ": a difference the test cannot confirm", f.index)
    )


def _explain_port_dropped(f: pd.DataFrame) -> pd.Series:
    return (
        _flow_app(f)
        + " delivered "
        + _pct(f["call_delivery"])
        + " and its control (random bytes) "
        + _pct(f["control_delivery"])
        + " on the app's port, while the same call framing on a neutral port delivered "
        + _pct(f["neutral_delivery"])
        + ": the app's call port is dropped, whatever the content"
    )


def _flows(f: pd.DataFrame) -> pd.Series[bool]:
    return f["callflow_tests"] > 0


def _flow_blocked(f: pd.DataFrame) -> pd.Series[bool]:
    return _flows(f) & f["call_blocked"].astype(bool)


def _neutral_fine(f: pd.DataFrame) -> pd.Series[bool]:
    # The neutral-port flow delivers about as well as the control: only the app's port is hit.
    return ~f["neutral_blocked"].astype(bool) & (
        f["neutral_delivery"] >= FLOW_OK_DELIVERY * f["control_delivery"]
    )


def _control_fine(f: pd.DataFrame) -> pd.Series[bool]:
    return f["control_delivery"] >= FLOW_OK_DELIVERY


# Evaluated in this order, after partial_failure and before the relay rules (module docstring).
CALLFLOW_RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "calls_flow_blocked_fingerprint",
        "calls_blocked",
        "udp",
        "stun_fingerprint",
        lambda f: _flow_blocked(f) & f["neutral_blocked"].astype(bool),
        _explain_flow_blocked,
        f"the call flow got no echo after its first {BLOCK_WITHIN_S} s, or none of its first "
        f"{OPENING} datagrams while the rest came (call_blocked), nor did the call framing on a "
        "neutral port (neutral_blocked), while the control was echoed: content-based",
    ),
    Rule(
        "calls_flow_blocked_port",
        "calls_blocked",
        "udp",
        "port",
        lambda f: _flow_blocked(f) & _neutral_fine(f),
        _explain_flow_blocked,
        "call_blocked, while the call framing on a neutral port delivered >= "
        f"{FLOW_OK_DELIVERY} x control_delivery: port-based",
    ),
    Rule(
        "calls_flow_blocked",
        "calls_blocked",
        "udp",
        None,
        _flow_blocked,
        _explain_flow_blocked,
        "call_blocked, and the neutral-port flow neither blocked nor fine (or not run)",
    ),
    Rule(
        "calls_flow_port_dropped",
        "calls_blocked",
        "udp",
        "port",
        lambda f: (
            _flows(f)
            & (f["call_delivery"] <= PORT_DEAD_DELIVERY)
            & (f["control_delivery"] <= PORT_DEAD_DELIVERY)
            & (f["neutral_delivery"] >= FLOW_OK_DELIVERY)
        ),
        _explain_port_dropped,
        f"the call flow and its control on the app's port both delivered <= {PORT_DEAD_DELIVERY} "
        f"while the call framing on a neutral port delivered >= {FLOW_OK_DELIVERY}: the port "
        "itself is dropped, whatever the content",
    ),
    Rule(
        "calls_flow_cut",
        "calls_cut",
        "udp",
        "time_cutoff",
        lambda f: _flows(f) & f["call_cut_s"].notna(),
        _explain_flow_cut,
        f"the call flow's last echo >= {CUT_MIN_S} s and >= {CUT_MIN_BINS} bins before its last "
        f"send, after its first {BLOCK_WITHIN_S} s, while the control was echoed to within "
        f"{CONTROL_TAIL_S} s of its end (call_cut_s); "
        "one send rate cannot tell a byte counter from a timer, so time_cutoff, with the bytes",
    ),
    Rule(
        "calls_flow_throttled",
        "calls_throttled",
        "udp",
        "rate_cap",
        lambda f: (
            _flows(f)
            & (f["call_area"] >= AREA_THRESHOLD)
            & (f["call_p"] < P_THRESHOLD)
            & _control_fine(f)
        ),
        _explain_flow_throttled,
        f"call_area >= {AREA_THRESHOLD} and call_p < {P_THRESHOLD} (Wehe), with "
        f"control_delivery >= {FLOW_OK_DELIVERY}",
    ),
    Rule(
        "calls_flow_degraded",
        "network_degraded",
        "udp",
        None,
        lambda f: (
            _flows(f)
            & (f["control_delivery"] > 0)
            & (f["control_delivery"] < FLOW_OK_DELIVERY)
            & (f["call_delivery"] < FLOW_OK_DELIVERY)
            & (f["call_area"].abs() < AREA_THRESHOLD)
        ),
        _explain_flow_degraded,
        f"call_delivery and control_delivery both < {FLOW_OK_DELIVERY} (the control echoed at "
        f"all) and |call_area| < {AREA_THRESHOLD}: the control degrades as much as the call",
    ),
    Rule(
        "calls_flow_unclear",
        "inconclusive",
        None,
        None,
        lambda f: _flows(f) & (f["call_area"] >= AREA_THRESHOLD),
        _explain_flow_unclear,
        f"call_area >= {AREA_THRESHOLD} but not a throttle: the control delivered < "
        f"{FLOW_OK_DELIVERY} or call_p >= {P_THRESHOLD}",
    ),
)


def _relays_failing(share: float) -> Condition:
    def when(f: pd.DataFrame) -> pd.Series[bool]:
        return (f["relays"] > 0) & (f["relays_failed"] >= share * f["relays"])

    return when


def _udp_controls_failing(f: pd.DataFrame) -> pd.Series[bool]:
    return (f["udp_controls"] > 0) & (
        f["udp_controls_failed"] >= CONTROL_FAIL_SHARE * f["udp_controls"]
    )


def _udp_echoed(f: pd.DataFrame) -> pd.Series[bool]:
    # Some call test's random-bytes control got through: the network carries UDP of no known
    # protocol, so STUN servers failing is about STUN, not about the network.
    return f["run_control_delivery"].fillna(0.0) >= FLOW_OK_DELIVERY


def _all_roles_silent(f: pd.DataFrame) -> pd.Series[bool]:
    return (f["relay_roles"] > 0) & (f["relay_roles_silent"] == f["relay_roles"])


def _flow_healthy(f: pd.DataFrame) -> pd.Series[bool]:
    return _flows(f) & _control_fine(f) & (f["call_delivery"] >= FLOW_OK_DELIVERY)


def _http3_failed(f: pd.DataFrame) -> pd.Series[bool]:
    return (f["quic_targets"] > 0) & (f["quic_failed"] >= BLOCK_SHARE * f["quic_targets"])


# --- conditions -----------------------------------------------------------------------------------


def _blocked_when(layer: str, mechanism: str | None) -> Condition:
    def when(f: pd.DataFrame) -> pd.Series[bool]:
        same_mechanism = (
            f["dominant_mechanism"].isna()
            if mechanism is None
            else f["dominant_mechanism"].eq(mechanism)
        )
        return (f["share_failed"] >= BLOCK_SHARE) & f["dominant_layer"].eq(layer) & same_mechanism

    return when


def _short(layer: str, mechanism: str | None) -> str:
    """The mechanism without its layer's prefix: blocked_dns_spoof, not blocked_dns_dns_spoof."""
    return mechanism.removeprefix(f"{layer}_") if mechanism else "other"


# Judged over the endpoints a cut can show on, not all of them: BYTE_CUTOFF_RULE.
_OWN_RULE: Final = ("tcp", "byte_cutoff")
# HTTP/3 endpoints are never judged (features.app_features), so no "blocked" rule reads QUIC;
# QUIC failing is reported by the ok rules' quic variants.
_DETAIL_LAYER: Final = "quic"
# The call path's classes are read by the call rules (relays, udp_controls), not by "blocked".
_CALL_LAYER: Final = "udp"


def _blocked_rules() -> list[Rule]:
    """One rule per (layer, mechanism) a failure class can have, in FAIL_CLASSES order (the
    byte cut-off has its own rule)."""
    pairs = [
        pair
        for pair in dict.fromkeys((c.layer, c.mechanism) for c in FAIL_CLASSES)
        if pair != _OWN_RULE and pair[0] not in (_DETAIL_LAYER, _CALL_LAYER)
    ]
    return [
        Rule(
            name=f"blocked_{layer}_{_short(layer, mechanism)}",
            verdict="blocked",
            layer=layer,
            mechanism=mechanism,
            when=_blocked_when(layer, mechanism),
            explain=_explain_blocked,
            condition=(
                f"share_failed >= {BLOCK_SHARE} and the dominant failure is {layer}/"
                f"{mechanism or 'unclassified'} (controls present and mostly working)"
            ),
        )
        for layer, mechanism in pairs
    ]


# A byte cut-off ("TCP 16-20") lets a connection carry a few KB and then freezes it, so only the
# endpoints whose checks move more than that can show it: TCP connects and TLS handshakes pass
# untouched. The share is taken over those (bulk_targets); other failures must be mere noise.
# The app is "blocked": it connects, then every transfer larger than the cut hangs for good.
BYTE_CUTOFF_RULE: Final = Rule(
    "blocked_tcp_byte_cutoff",
    "blocked",
    "tcp",
    "byte_cutoff",
    lambda f: (
        (f["targets_cut"] > 0)
        & (f["targets_cut"] >= BLOCK_SHARE * f["bulk_targets"])
        & ((f["targets_failed"] - f["targets_cut"]) < PARTIAL_SHARE * f["targets"])
    ),
    _explain_cutoff,
    f"targets_cut >= {BLOCK_SHARE} x bulk_targets (both GETs of an endpoint stalled after a "
    f"partial body <= {CUTOFF_MAX_BYTES} bytes, whatever the SNI) and other failures < "
    f"{PARTIAL_SHARE} x targets",
)


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "interrupted",
        "inconclusive",
        None,
        None,
        lambda f: (f["targets"] == 0) & (f["targets_interrupted"] > 0),
        _explain_interrupted,
        "no endpoint is evidence and the run's deadline cut at least one",
    ),
    Rule(
        "no_evidence",
        "inconclusive",
        None,
        None,
        lambda f: f["targets"] == 0,
        _explain_no_evidence,
        "no endpoint is evidence (none with a known answer, not allowed, no route, or excluded "
        "by the baseline)",
    ),
    Rule(
        "control_failed",
        "network_degraded",
        None,
        None,
        lambda f: f["is_control"] & (f["share_failed"] >= CONTROL_FAIL_SHARE),
        _explain_control_failed,
        f"the neutral controls' own row: share_failed >= {CONTROL_FAIL_SHARE}",
    ),
    Rule(
        "control_udp_failed",
        "network_degraded",
        "udp",
        None,
        lambda f: f["is_control"].astype(bool) & _udp_controls_failing(f) & ~_udp_echoed(f),
        _explain_control_udp,
        f"the neutral controls' own row: their STUN servers fail (udp_controls_failed >= "
        f"{CONTROL_FAIL_SHARE} x udp_controls) and no random-bytes control flow of the run "
        f"delivered >= {FLOW_OK_DELIVERY} (or the run has none)",
    ),
    Rule(
        "control_ok_stun_failed",
        "ok",
        "udp",
        None,
        lambda f: f["is_control"].astype(bool) & _udp_controls_failing(f),
        _explain_control_stun_failed,
        "the neutral controls' own row: their STUN servers fail, but a random-bytes control "
        f"flow of the run delivered >= {FLOW_OK_DELIVERY} (run_control_delivery): UDP works",
    ),
    Rule(
        "control_ok_http3_failed",
        "ok",
        "quic",
        None,
        lambda f: f["is_control"].astype(bool) & _http3_failed(f),
        _explain_control_ok_quic,
        f"the neutral controls' own row: share_failed < {CONTROL_FAIL_SHARE}, and HTTP/3 failed "
        f"on >= {BLOCK_SHARE} of the HTTP/3 endpoints",
    ),
    Rule(
        "control_ok",
        "ok",
        None,
        None,
        lambda f: f["is_control"].astype(bool),
        _explain_control_ok,
        f"the neutral controls' own row: share_failed < {CONTROL_FAIL_SHARE}",
    ),
    Rule(
        "no_controls",
        "inconclusive",
        None,
        None,
        lambda f: (f["share_failed"] >= PARTIAL_SHARE) & (f["controls"] == 0),
        _explain_no_controls,
        f"share_failed >= {PARTIAL_SHARE} but the run has no neutral control that is evidence",
    ),
    Rule(
        "network_degraded",
        "network_degraded",
        None,
        None,
        lambda f: (
            (f["share_failed"] >= PARTIAL_SHARE) & (f["control_share_failed"] >= CONTROL_FAIL_SHARE)
        ),
        _explain_degraded,
        f"share_failed >= {PARTIAL_SHARE} and the run's controls fail too "
        f"(control_share_failed >= {CONTROL_FAIL_SHARE})",
    ),
    *_blocked_rules(),
    BYTE_CUTOFF_RULE,
    Rule(
        "partial_failure",
        "inconclusive",
        None,
        None,
        lambda f: f["share_failed"] >= PARTIAL_SHARE,
        _explain_partial,
        f"{PARTIAL_SHARE} <= share_failed < {BLOCK_SHARE}",
    ),
    # The call path, once signaling works (the rules above did not fire): call flows first.
    *CALLFLOW_RULES,
    Rule(
        "calls_network_degraded",
        "network_degraded",
        "udp",
        None,
        lambda f: _relays_failing(BLOCK_SHARE)(f) & _udp_controls_failing(f) & ~_udp_echoed(f),
        _explain_calls_degraded,
        f"relays_failed >= {BLOCK_SHARE} x relays and the run's neutral STUN servers fail too "
        f"(udp_controls_failed >= {CONTROL_FAIL_SHARE} x udp_controls), no random-bytes "
        f"control flow delivered >= {FLOW_OK_DELIVERY}",
    ),
    Rule(
        "calls_no_udp_controls",
        "inconclusive",
        None,
        None,
        lambda f: _relays_failing(PARTIAL_SHARE)(f) & (f["udp_controls"] == 0) & ~_udp_echoed(f),
        _explain_calls_no_controls,
        f"relays_failed >= {PARTIAL_SHARE} x relays but the run has no neutral STUN server "
        "that is evidence, nor a random-bytes control flow that was echoed",
    ),
    Rule(
        "calls_relays_silent",
        "calls_blocked",
        "udp",
        None,
        _all_roles_silent,
        _explain_calls_blocked,
        f"signaling works (share_failed < {PARTIAL_SHARE}), every call-server role of the app "
        f"silent (relays_failed >= {BLOCK_SHARE} x the role's relays), and UDP works (the "
        "neutral STUN servers answer, or a random-bytes control flow was echoed)",
    ),
    Rule(
        "calls_ok_flow_relays_partial",
        "ok",
        "udp",
        None,
        lambda f: (
            _flow_healthy(f) & (_relays_failing(PARTIAL_SHARE)(f) | (f["relay_roles_silent"] > 0))
        ),
        _explain_calls_ok_flow,
        f"the call flow and its control both delivered >= {FLOW_OK_DELIVERY} (no call-flow "
        f"rule fired) while some call servers are silent (relays_failed >= {PARTIAL_SHARE} x "
        "relays, or a silent role): the direct evidence of the call flow decides",
    ),
    Rule(
        "calls_relays_role_silent",
        "inconclusive",
        None,
        None,
        lambda f: f["relay_roles_silent"] > 0,
        _explain_calls_role_silent,
        f"a call-server role silent (relays_failed >= {BLOCK_SHARE} x the role's relays) while "
        "another answers",
    ),
    Rule(
        "calls_relays_partial",
        "inconclusive",
        None,
        None,
        _relays_failing(PARTIAL_SHARE),
        _explain_calls_partial,
        f"{PARTIAL_SHARE} x relays <= relays_failed < {BLOCK_SHARE} x relays",
    ),
    Rule(
        "throttle_contradicted",
        "inconclusive",
        None,
        None,
        lambda f: (f["targets_throttled"] > 0) & (f["targets_fast"] > 0),
        _explain_contradicted,
        f"an endpoint's real-SNI HTTPS rate < {THROTTLE_RATIO} x the neutral SNI's (and < "
        f"{THROTTLE_MAX_BPS} bit/s) while another of the app's gets >= {UNTHROTTLED_RATIO} x",
    ),
    Rule(
        "sni_throttled",
        "throttled",
        "tls",
        "sni",
        lambda f: f["targets_throttled"] > 0,
        _explain_throttled,
        f"signaling works (share_failed < {PARTIAL_SHARE}) and an endpoint's real-SNI HTTPS "
        f"rate < {THROTTLE_RATIO} x the neutral SNI's to the same address and < "
        f"{THROTTLE_MAX_BPS} bit/s (both GETs >= 32 KiB), none contradicting",
    ),
    Rule(
        "ok_http3_failed",
        "ok",
        "quic",
        None,
        _http3_failed,
        _explain_ok_quic,
        f"signaling works, and HTTP/3 failed on >= {BLOCK_SHARE} of the app's HTTP/3 endpoints "
        "(quic_failed / quic_targets): reported as a detail, the app falls back to TCP",
    ),
    Rule(
        "ok",
        "ok",
        None,
        None,
        lambda f: pd.Series(True, index=f.index),
        _explain_ok,
        "nothing above: signaling works",
    ),
)
RULE_NAMES: Final = tuple(rule.name for rule in RULES)


# --- where: the trace clause of the interference verdicts' sentences -----------------------------

# Verdicts that say something on the path interferes; their sentences say where, when a trace did.
INTERFERENCE_VERDICTS: Final = (
    "blocked",
    "throttled",
    "calls_blocked",
    "calls_throttled",
    "calls_cut",
)


def _after(hop: int, routers: list[str]) -> str:
    if hop == 0:
        return "before the first router"
    return f"after hop {hop}" + (f" ({', '.join(routers)})" if routers else "")


def _by(triggers: list[str]) -> str:
    names = triggers[0] if len(triggers) == 1 else ", ".join(triggers[:-1]) + " and " + triggers[-1]
    return f"by the {names} trace" + ("s" if len(triggers) > 1 else "")


def trace_clause(traces: int, hops: object, addresses: object) -> str:
    """``; interference localized after hop 2 (198.51.100.5) by the tls trace`` from a row's
    ``traces``, ``trace_hops`` and ``trace_addresses`` (features.TRACE_COLUMNS); "" without a
    trace that is evidence."""
    if not traces:
        return ""
    if not isinstance(hops, str) or not hops:
        plural = "s" if traces > 1 else ""
        return f"; {traces} trace{plural} of the path localized no interference"
    at: dict[int, list[str]] = {}
    for item in hops.split():
        trigger, _, hop = item.rpartition(":")
        at.setdefault(int(hop), []).append(trigger)
    routers: dict[int, list[str]] = {}
    if isinstance(addresses, str):
        for item in addresses.split():
            hop, _, address = item.partition(":")
            routers.setdefault(int(hop), []).append(address)
    parts = [f"{_after(hop, routers.get(hop, []))} {_by(sorted(at[hop]))}" for hop in sorted(at)]
    if len(parts) == 1:
        return f"; interference localized {parts[0]}"
    low, high = min(at), max(at)
    return f"; interference localized between hops {low} and {high}: " + ", ".join(parts)


def _trace_clauses(f: pd.DataFrame) -> np.ndarray:
    """The trace clause of each row (a feature table made elsewhere may lack trace_addresses)."""
    none = pd.Series(None, index=f.index, dtype=object)
    hops, addresses = f.get("trace_hops", none), f.get("trace_addresses", none)
    rows = zip(f["traces"].tolist(), hops.tolist(), addresses.tolist(), strict=True)
    return np.array([trace_clause(int(n), h, a) for n, h, a in rows], dtype=object)


def apply_rules(features: pd.DataFrame, rules: Sequence[Rule] = RULES) -> pd.DataFrame:
    """Columns verdict, layer, mechanism, rule and evidence for each row of ``features``
    (same index): the first rule whose condition holds decides."""
    n = len(features)
    conditions = [np.asarray(rule.when(features), dtype=bool) for rule in rules]
    chosen = np.select(conditions, np.arange(len(rules)), default=-1)
    if n and chosen.min() < 0:
        raise AssertionError("no rule matched; the last rule must always hold")
    evidence = np.full(n, "", dtype=object)
    for i, rule in enumerate(rules):
        mask = chosen == i
        if mask.any():
            evidence[mask] = rule.explain(features[mask]).to_numpy(dtype=object)
            if rule.verdict in INTERFERENCE_VERDICTS and "traces" in features.columns:
                evidence[mask] += _trace_clauses(features[mask])

    def pick(values: list[str | None]) -> np.ndarray:
        return np.array([*values, None], dtype=object)[chosen]

    return pd.DataFrame(
        {
            "verdict": pick([r.verdict for r in rules]),
            "layer": pick([r.layer for r in rules]),
            "mechanism": pick([r.mechanism for r in rules]),
            "rule": pick([r.name for r in rules]),
            "evidence": evidence,
        },
        index=features.index,
    )


__all__ = [
    "APP_NAMES",
    "CALLFLOW_RULES",
    "INTERFERENCE_VERDICTS",
    "LAYERS",
    "MECHANISMS",
    "RULES",
    "RULE_NAMES",
    "VERDICTS",
    "Rule",
    "app_name",
    "apply_rules",
    "trace_clause",
]
