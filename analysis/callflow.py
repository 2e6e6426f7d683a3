"""Call-flow statistics: pure functions over one call test (docs/callflow.md).

A *call test* is the three flows the probe's ``call_flow`` check sends for one app: ``call`` (the
app's framing to the app's port), ``control`` (same sizes and send times, random bytes, same
port) and ``call_neutral_port`` (the call framing to a neutral high port). Each flow's record
holds per-bin counts (``bin_width`` seconds of send time, 0.25 s): datagrams sent, echoed and seen
by the reflector, and the bin's median RTT. Everything here reads those arrays and returns
figures; ``analysis.features`` turns them into per-(run, app) columns and ``analysis.rules``
decides.

The statistics (METHOD.md, "Statistics"):

* **Delivery**: per bin, ``echoed / sent`` (bins with nothing sent are left out); a flow's overall
  delivery is its echoed datagrams over its sent ones.
* **Area** (Wehe's effect size): ``(mean_control - mean_call) / max(mean_control, mean_call)``
  over the per-bin deliveries: 0 when the call fares as its control, 1 when the call gets nothing
  through while the control does, negative when the call fares better.
* **Mann-Whitney U**, two-sided, normal approximation with tie and continuity corrections
  (``mann_whitney``): is the call's per-bin delivery drawn from the control's distribution?
* **Cut**: the call's echoes stop well before its last send while the control's go on
  (``cut_point``); a cut within the first second is a block (the call never started), and so is
  a call whose opening datagrams alone never came back (``opening_lost``).
* **Upstream vs downstream loss**: sent vs ``reflector_rx`` (lost on the way out) vs echoed
  (lost on the way back).
* **Policing vs shaping**: a policer drops (loss without a rising RTT), a shaper queues (RTT
  rising over the bins); ``rtt_slope`` is the least-squares slope of the per-bin median RTT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# --- thresholds (each is what a rule or a figure compares with) ----------------------------------

# A flow delivering at least this share of its datagrams is fine: voice codecs conceal a few per
# cent of loss (Opus in-band FEC, packet-loss concealment), and the lab's open path echoes ~100%;
# beyond 10% loss a call is audibly broken whichever app makes it.
FLOW_OK_DELIVERY: Final = 0.9
# A port carrying at most this share of both the call flow and its random-bytes control is
# dropped (the loss a working flow may have, the other way round): with the call framing
# delivered on a neutral port, what is dropped is the port, not a content or the network.
PORT_DEAD_DELIVERY: Final = 1 - FLOW_OK_DELIVERY
# Wehe flags a differentiated flow at |area| >= 0.5 with p < 0.01 (Li et al., "A large-scale
# analysis of deployed traffic differentiation practices", SIGCOMM 2019). The p-value bounds false
# positives on its own (the call and its control share path, sizes and send times); the area only
# keeps tiny, significant differences out. 0.5 misses METHOD.md's target, a cap at half the call's
# rate: a token-bucket policer at half the mean byte rate passes the small datagrams more often and
# delivers ~53% of them, area 0.45-0.48, just under 0.5 (tests/unit/test_callflow_stats.py
# simulates it). 0.3 leaves a margin, with Wehe's p < 0.01; random loss alike on both flows stays
# far below it.
AREA_THRESHOLD: Final = 0.3
P_THRESHOLD: Final = 0.01
# A cut is the call's last echo at least this long before its last send ...
CUT_MIN_S: Final = 1.0
# ... with at least this many bins of sends after it and not one echo: at the voice profile's
# 60 ms interval that is >= 16 datagrams lost in a row, which 20% random loss does with
# probability 0.2**16 ~ 7e-12.
CUT_MIN_BINS: Final = 4
# The control must be echoed to within this long of its own last send for a cut to be the
# call's: otherwise the reflector or the whole path went away.
CONTROL_TAIL_S: Final = 1.0
# Echoes that stop (or never come) within this long of the flow's start are a block, not a cut:
# the opening datagrams (3 STUN or reflector hellos, 60 ms apart) may pass before a DPI box
# decides, and a call whose media dies within a second never started.
BLOCK_WITHIN_S: Final = 1.0
# docs/callflow.md "App framings": a call opens with 3 datagrams (WhatsApp: a STUN Allocate and two
# 0x0801 pings; Telegram: 3 reflector hellos). Unanswered, they stop the call before any media:
# the client gets no relay allocation or keeps sending hellos (METHOD.md).
OPENING: Final = 3
# An RTT rising at least this fast over the test is a queue filling (shaping): 20 ms/s adds
# 0.2 s over the probe's 10 s flows, far above the jitter of a bin's median RTT on a working path.
SHAPING_SLOPE_MS_S: Final = 20.0
# Fewest bins with an RTT for a slope to be fitted.
MIN_RTT_BINS: Final = 3

FLOWS: Final = ("call", "control", "call_neutral_port")


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow's record, as arrays (one element per bin) and totals."""

    sent: np.ndarray
    """Datagrams sent in each bin."""
    sent_bytes: np.ndarray
    echoed: np.ndarray
    """Datagrams sent in each bin whose echo came back."""
    echoed_bytes: np.ndarray
    reflector_rx: np.ndarray
    """Highest rx_count among the echoes of datagrams sent up to the end of the bin (NaN: none)."""
    rtt_ms: np.ndarray
    """Median round trip of the bin's echoed datagrams (NaN: none echoed)."""
    bin_width: float
    last_echo_s: float
    """Send time of the last echoed datagram (NaN: no echo)."""
    last_echo_seq: float
    """Sequence number of the last echoed datagram (NaN: no echo)."""
    first_echo_s: float = np.nan
    """Send time of the first echoed datagram (NaN: no echo)."""
    interval_s: float = np.nan
    """Nominal send interval (NaN: not recorded)."""


def _number(value: Any) -> float:
    """A finite JSON number as a float; anything else (null, a string, a boolean, Infinity) is
    NaN."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return np.nan


def _array(bins: list[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([_number(b.get(key)) for b in bins], dtype=np.float64)


def flow_from_details(details: Mapping[str, Any]) -> Flow:
    """A Flow from a ``call_flow`` record's details (docs/callflow.md); absent figures are NaN
    (counts 0)."""
    raw = details.get("bins")
    bins = [b for b in raw if isinstance(b, Mapping)] if isinstance(raw, list) else []

    def counts(key: str) -> np.ndarray:
        # Counts are never negative or infinite; a damaged one counts as nothing.
        values = _array(bins, key)
        clean: np.ndarray = np.where(np.isfinite(values) & (values > 0), values, 0.0)
        return clean

    sent = counts("sent")
    echoed = np.minimum(counts("echoed"), sent)  # a bin cannot echo more than it sent
    width = _number(details.get("bin_width"))
    width = width if np.isfinite(width) and width > 0 else 0.25
    last = _number(details.get("last_echo_s"))
    if np.isnan(last) and echoed.any():
        # No exact time recorded: the end of the last bin with an echo, an upper bound.
        last = (np.flatnonzero(echoed > 0)[-1] + 1) * width
    return Flow(
        sent=sent,
        sent_bytes=counts("sent_bytes"),
        echoed=echoed,
        echoed_bytes=counts("echoed_bytes"),
        reflector_rx=_array(bins, "reflector_rx"),
        rtt_ms=_array(bins, "rtt_ms"),
        bin_width=width,
        last_echo_s=last,
        last_echo_seq=_number(details.get("last_echo_seq")),
        first_echo_s=_number(details.get("first_echo_s")),
        interval_s=_number(details.get("interval_ms")) / 1000,
    )


# --- per-flow figures ----------------------------------------------------------------------------


def bin_delivery(flow: Flow) -> np.ndarray:
    """Per bin, echoed / sent; bins where nothing was sent are dropped."""
    keep = flow.sent > 0
    ratio: np.ndarray = flow.echoed[keep] / flow.sent[keep]
    return ratio


def echo_rate_bps(flow: Flow) -> np.ndarray:
    """Per bin, the echoed bytes as a rate in bit/s (bins where nothing was sent dropped)."""
    keep = flow.sent > 0
    rate: np.ndarray = flow.echoed_bytes[keep] * 8 / flow.bin_width
    return rate


def mean_echo_rate(flow: Flow) -> float:
    """The echoed bit rate averaged over the bins with a send (NaN: nothing sent)."""
    rates = echo_rate_bps(flow)
    return float(rates.mean()) if rates.size else np.nan


def delivery(flow: Flow) -> float:
    """Echoed datagrams / sent datagrams over the whole flow (NaN: nothing sent)."""
    sent = float(flow.sent.sum())
    return float(flow.echoed.sum()) / sent if sent > 0 else np.nan


def last_send_s(flow: Flow) -> float:
    """End of the last bin with a send (bin resolution; NaN: nothing sent)."""
    sent = np.flatnonzero(flow.sent > 0)
    return float((sent[-1] + 1) * flow.bin_width) if sent.size else np.nan


def path_loss(flow: Flow) -> tuple[float, float]:
    """(upstream, downstream) loss shares: datagrams that never reached the reflector over those
    sent, and echoes that never came back over those the reflector got. ``reflector_rx`` is the
    highest count among the echoes, so echoes lost at the very end shift loss upstream. NaN when
    the flow has no reflector count (no echo at all: the two cannot be told apart)."""
    sent = float(flow.sent.sum())
    rx_values = flow.reflector_rx[~np.isnan(flow.reflector_rx)]
    if sent <= 0 or rx_values.size == 0:
        return np.nan, np.nan
    rx = min(float(rx_values.max()), sent)
    up = 1.0 - rx / sent
    down = 1.0 - float(flow.echoed.sum()) / rx if rx > 0 else np.nan
    return up, max(down, 0.0)


def rtt_slope(flow: Flow) -> float:
    """Least-squares slope of the per-bin median RTT over the bins' times, in ms per second
    (NaN with fewer than MIN_RTT_BINS bins that have an RTT)."""
    times = (np.arange(flow.rtt_ms.size) + 0.5) * flow.bin_width
    keep = ~np.isnan(flow.rtt_ms)
    if keep.sum() < MIN_RTT_BINS:
        return np.nan
    t, y = times[keep], flow.rtt_ms[keep]
    dt = t - t.mean()
    return float((dt * (y - y.mean())).sum() / (dt * dt).sum())


# --- two flows -----------------------------------------------------------------------------------


def area(control: np.ndarray, call: np.ndarray) -> float:
    """Wehe's area: (mean(control) - mean(call)) / max(mean(control), mean(call)); NaN when a
    sample is empty or both means are 0 (nothing to compare)."""
    if control.size == 0 or call.size == 0:
        return np.nan
    m_control, m_call = float(control.mean()), float(call.mean())
    top = max(m_control, m_call)
    return (m_control - m_call) / top if top > 0 else np.nan


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of sample ``x`` against ``y`` and its two-sided p-value.

    Mann & Whitney (1947), "On a test of whether one of two random variables is stochastically
    larger than the other", Ann. Math. Statist. 18(1); normal approximation with the tie
    correction (e.g. Hollander & Wolfe, "Nonparametric Statistical Methods", sec. 4.1):

        U = R_x - n_x (n_x + 1) / 2          (R_x: sum of x's mid-ranks in the pooled sample)
        mu = n_x n_y / 2
        sigma^2 = n_x n_y / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))   (t: size of each tie)
        z = (|U - mu| - 1/2) / sigma          (continuity correction)
        p = erfc(z / sqrt 2)                  (two-sided)

    The same as SciPy's ``mannwhitneyu(x, y, method="asymptotic")``. NaN values are dropped;
    p is NaN when a sample is empty and 1 when every value is tied (sigma = 0).
    """
    x = x[~np.isnan(x)]
    y = y[~np.isnan(y)]
    n_x, n_y = x.size, y.size
    if n_x == 0 or n_y == 0:
        return np.nan, np.nan
    pooled = np.concatenate((x, y))
    n = pooled.size
    order = np.argsort(pooled, kind="mergesort")
    _, starts, ties = np.unique(pooled[order], return_index=True, return_counts=True)
    mid = starts + (ties + 1) / 2.0  # 1-based mid-rank of each tie group
    ranks = np.empty(n)
    ranks[order] = np.repeat(mid, ties)
    u = float(ranks[:n_x].sum()) - n_x * (n_x + 1) / 2.0
    mu = n_x * n_y / 2.0
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum())
    variance = n_x * n_y / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return u, 1.0
    z = max(abs(u - mu) - 0.5, 0.0) / math.sqrt(variance)
    return u, min(math.erfc(z / math.sqrt(2.0)), 1.0)


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a call flow stopped being echoed."""

    seconds: float
    """Send time of the last echoed datagram, from the flow's start."""
    packets: float
    """Datagrams sent up to and including it (its sequence number + 1)."""
    bytes: float
    """Bytes sent up to the end of its bin (bin resolution)."""


def _echoed_to_end(flow: Flow) -> bool:
    """The flow was echoed to within CONTROL_TAIL_S of its last send."""
    end = last_send_s(flow)
    return bool(flow.last_echo_s >= end - CONTROL_TAIL_S) if not np.isnan(end) else False


def cut_point(call: Flow, control: Flow) -> Cut | None:
    """The call flow's cut, or None: its last echo at least CUT_MIN_S before its last send, with
    at least CUT_MIN_BINS bins of sends after the last echoed bin, while the control flow is
    echoed to within CONTROL_TAIL_S of its own last send. A call never echoed is cut at 0."""
    if not _echoed_to_end(control):
        return None
    end = last_send_s(call)
    if np.isnan(end):
        return None
    echoed_bins = np.flatnonzero(call.echoed > 0)
    after = echoed_bins[-1] + 1 if echoed_bins.size else 0
    silent_bins = int((call.sent[after:] > 0).sum())
    last = 0.0 if np.isnan(call.last_echo_s) else call.last_echo_s
    if end - last < CUT_MIN_S or silent_bins < CUT_MIN_BINS:
        return None
    if echoed_bins.size == 0:
        return Cut(seconds=0.0, packets=0.0, bytes=0.0)
    packets = (
        call.last_echo_seq + 1
        if not np.isnan(call.last_echo_seq)
        else float(call.sent[:after].sum())
    )
    return Cut(seconds=last, packets=packets, bytes=float(call.sent_bytes[:after].sum()))


def _opening_echoed(flow: Flow) -> bool:
    # The first echo was of one of the opening datagrams (half an interval of slack for rounding).
    return bool(flow.first_echo_s < (OPENING - 0.5) * flow.interval_s)


def opening_lost(call: Flow, control: Flow) -> bool:
    """None of the call flow's OPENING datagrams came back while one of the control's did, and
    the rest of the call flow was delivered (at least FLOW_OK_DELIVERY): the censor drops what
    opens a call (STUN-framed datagrams, reflector hellos) and lets the media through, which
    leaves a call without its start. Random loss takes the whole opening with probability
    loss**3, and a lossy path fails the delivery condition."""
    if np.isnan(call.interval_s) or np.isnan(control.interval_s) or call.sent.sum() <= OPENING:
        return False
    share = delivery(call)
    return (
        not _opening_echoed(call)
        and _opening_echoed(control)
        and not np.isnan(share)
        and share >= FLOW_OK_DELIVERY
    )


def blocked(call: Flow, control: Flow) -> bool:
    """The call never started while its control went through: it got no echo, or none after its
    first BLOCK_WITHIN_S, while the control was echoed to its end (``cut_point``), or its
    opening alone never came back (``opening_lost``)."""
    cut = cut_point(call, control)
    return (cut is not None and cut.seconds < BLOCK_WITHIN_S) or opening_lost(call, control)


def policing(call: Flow) -> bool:
    """Loss without a rising RTT: the call flow lost more than FLOW_OK_DELIVERY allows and its
    RTT did not climb by SHAPING_SLOPE_MS_S (a shaper queues before it drops). Needs echoes."""
    share = delivery(call)
    slope = rtt_slope(call)
    if np.isnan(share) or share <= 0 or share >= FLOW_OK_DELIVERY:
        return False
    return bool(np.isnan(slope) or slope < SHAPING_SLOPE_MS_S)


def loss_bursts(flow: Flow) -> int:
    """Runs of consecutive bins with loss (a policer's empty bucket drops whole bins in a row;
    random loss spreads thin): the number of such runs."""
    lossy = ((flow.sent > 0) & (flow.echoed < flow.sent)).astype(np.int8)
    return int((np.diff(np.concatenate(([0], lossy))) == 1).sum())


# --- one test ------------------------------------------------------------------------------------


def summarize(
    call: Flow, control: Flow, neutral: Flow | None = None
) -> dict[str, float | bool | None]:
    """The figures of one call test (keys as ``SUMMARY_KEYS``)."""
    call_bins, control_bins = bin_delivery(call), bin_delivery(control)
    cut = cut_point(call, control)
    up, down = path_loss(call)
    _u, p = mann_whitney(call_bins, control_bins)
    is_blocked = blocked(call, control)
    # A cut within the first second is reported as the block it is, not as a cut.
    early = cut is not None and cut.seconds < BLOCK_WITHIN_S
    return {
        "call_delivery": delivery(call),
        "control_delivery": delivery(control),
        "call_rate_bps": mean_echo_rate(call),
        "control_rate_bps": mean_echo_rate(control),
        "neutral_delivery": delivery(neutral) if neutral is not None else np.nan,
        "call_area": area(control_bins, call_bins),
        "call_p": p,
        "call_blocked": is_blocked,
        "call_opening_lost": opening_lost(call, control),
        "neutral_blocked": neutral is not None and blocked(neutral, control),
        "call_cut_s": cut.seconds if cut is not None and not early else np.nan,
        "call_cut_packets": cut.packets if cut is not None and not early else np.nan,
        "call_cut_bytes": cut.bytes if cut is not None and not early else np.nan,
        "call_loss_up": up,
        "call_loss_down": down,
        "call_policing": policing(call),
        "call_loss_bursts": float(loss_bursts(call)),
        "call_rtt_slope_ms_s": rtt_slope(call),
        "control_rtt_slope_ms_s": rtt_slope(control),
    }


SUMMARY_KEYS: Final = (
    "call_delivery",
    "control_delivery",
    "call_rate_bps",
    "control_rate_bps",
    "neutral_delivery",
    "call_area",
    "call_p",
    "call_blocked",
    "call_opening_lost",
    "neutral_blocked",
    "call_cut_s",
    "call_cut_packets",
    "call_cut_bytes",
    "call_loss_up",
    "call_loss_down",
    "call_policing",
    "call_loss_bursts",
    "call_rtt_slope_ms_s",
    "control_rtt_slope_ms_s",
)


__all__ = [
    "AREA_THRESHOLD",
    "BLOCK_WITHIN_S",
    "CONTROL_TAIL_S",
    "CUT_MIN_BINS",
    "CUT_MIN_S",
    "FLOWS",
    "FLOW_OK_DELIVERY",
    "OPENING",
    "PORT_DEAD_DELIVERY",
    "P_THRESHOLD",
    "SHAPING_SLOPE_MS_S",
    "SUMMARY_KEYS",
    "Cut",
    "Flow",
    "area",
    "bin_delivery",
    "blocked",
    "cut_point",
    "delivery",
    "echo_rate_bps",
    "flow_from_details",
    "last_send_s",
    "loss_bursts",
    "mann_whitney",
    "mean_echo_rate",
    "opening_lost",
    "path_loss",
    "policing",
    "rtt_slope",
    "summarize",
]
