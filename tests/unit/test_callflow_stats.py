"""The call-flow statistics (analysis.callflow) on hand-made and simulated flows."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import callflow as cf
from analysis.rules import CALLFLOW_RULES, RULES, apply_rules

WIDTH = 0.25
PER_BIN = 4  # the voice profile sends one datagram every 60 ms: ~4 per 250 ms bin
SIZE = 130


def flow(
    echoed: list[float] | np.ndarray,
    sent: list[float] | np.ndarray | None = None,
    rtt: list[float] | np.ndarray | None = None,
    rx: list[float] | np.ndarray | None = None,
) -> cf.Flow:
    """A Flow from per-bin counts; last echo at the start of the last bin with an echo."""
    e = np.asarray(echoed, dtype=np.float64)
    s = np.full(e.size, PER_BIN, dtype=np.float64) if sent is None else np.asarray(sent, float)
    hit = np.flatnonzero(e > 0)
    return cf.Flow(
        sent=s,
        sent_bytes=s * SIZE,
        echoed=e,
        echoed_bytes=e * SIZE,
        reflector_rx=np.full(e.size, np.nan) if rx is None else np.asarray(rx, float),
        rtt_ms=np.where(e > 0, 40.0, np.nan) if rtt is None else np.asarray(rtt, float),
        bin_width=WIDTH,
        last_echo_s=float(hit[-1] * WIDTH) if hit.size else np.nan,
        last_echo_seq=float(e.sum() - 1) if hit.size else np.nan,
    )


def steady(n: int = 80) -> cf.Flow:
    return flow([PER_BIN] * n)


# --- Mann-Whitney ---------------------------------------------------------------------------------


def test_mann_whitney_without_ties_matches_the_hand_computation() -> None:
    x, y = np.arange(1.0, 6.0), np.arange(6.0, 11.0)
    u, p = cf.mann_whitney(x, y)
    # U = R_x - 5*6/2 = 15 - 15 = 0; mu = 12.5; sigma^2 = 25/12 * 11; z = (12.5 - 0.5) / sigma.
    z = 12.0 / math.sqrt(25 / 12 * 11)
    assert u == 0.0
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    # SciPy 1.17: mannwhitneyu(x, y, method="asymptotic").pvalue
    assert p == pytest.approx(0.012185780355344813, rel=1e-9)


def test_mann_whitney_with_ties_matches_the_hand_computation() -> None:
    x, y = np.array([1.0, 1.0, 2.0]), np.array([2.0, 3.0, 3.0])
    u, p = cf.mann_whitney(x, y)
    # Mid-ranks 1.5 1.5 3.5 | 3.5 5.5 5.5: R_x = 6.5, U = 0.5; three ties of 2: sum(t^3-t) = 18;
    # sigma^2 = 9/12 * (7 - 18/30) = 4.8; z = (4 - 0.5) / sqrt(4.8).
    assert u == 0.5
    assert p == pytest.approx(math.erfc(3.5 / math.sqrt(4.8) / math.sqrt(2)), rel=1e-12)
    assert p == pytest.approx(0.11014892418594699, rel=1e-9)  # SciPy 1.17, asymptotic


def test_mann_whitney_is_symmetric_and_degenerates_safely() -> None:
    x = np.array([3.0, 4, 2, 6, 2, 5])
    y = np.array([9.0, 7, 5, 10, 6, 8])
    u_xy, p_xy = cf.mann_whitney(x, y)
    u_yx, p_yx = cf.mann_whitney(y, x)
    assert u_xy == 2.0
    assert u_xy + u_yx == x.size * y.size
    assert p_xy == pytest.approx(p_yx)
    assert p_xy == pytest.approx(0.012591911490379705, rel=1e-9)  # SciPy 1.17, asymptotic
    assert cf.mann_whitney(np.ones(10), np.ones(12))[1] == 1.0  # all tied: no evidence
    assert math.isnan(cf.mann_whitney(np.array([]), y)[1])
    assert cf.mann_whitney(np.array([1.0, np.nan]), np.array([1.0]))[1] == 1.0  # NaN dropped


# --- area -----------------------------------------------------------------------------------------


def test_area_is_positive_when_the_call_fares_worse() -> None:
    control, call = np.full(10, 1.0), np.full(10, 0.5)
    assert cf.area(control, call) == pytest.approx(0.5)
    assert cf.area(call, control) == pytest.approx(-0.5)
    assert cf.area(control, control) == 0.0
    assert math.isnan(cf.area(np.zeros(3), np.zeros(3)))
    assert math.isnan(cf.area(np.array([]), call))


# --- cut and block --------------------------------------------------------------------------------


def test_a_cut_is_found_at_the_bin_where_the_echoes_stop() -> None:
    call = flow([PER_BIN] * 20 + [0] * 60)  # echoed through bin 19 (5 s), then nothing
    cut = cf.cut_point(call, steady())
    assert cut is not None
    assert cut.seconds == pytest.approx(19 * WIDTH)
    assert cut.packets == 20 * PER_BIN
    assert cut.bytes == 20 * PER_BIN * SIZE
    assert not cf.blocked(call, steady())


def test_steady_and_randomly_lossy_flows_are_not_cut() -> None:
    assert cf.cut_point(steady(), steady()) is None
    rng = np.random.default_rng(1)
    lossy = flow(rng.binomial(PER_BIN, 0.8, size=80).astype(float))
    assert cf.cut_point(lossy, steady()) is None


def test_a_short_silence_at_the_end_is_not_a_cut() -> None:
    # Three silent bins (0.75 s) at the end: below CUT_MIN_S and CUT_MIN_BINS.
    assert cf.cut_point(flow([PER_BIN] * 77 + [0] * 3), steady()) is None
    assert cf.cut_point(flow([PER_BIN] * 75 + [0] * 5), steady()) is not None


def test_no_cut_when_the_control_stops_too() -> None:
    stopped = flow([PER_BIN] * 20 + [0] * 60)
    assert cf.cut_point(stopped, stopped) is None  # the reflector or the path went away


def test_echoes_that_stop_within_the_first_second_are_a_block() -> None:
    never = flow([0] * 80)
    cut = cf.cut_point(never, steady())
    assert cut == cf.Cut(0.0, 0.0, 0.0)
    assert cf.blocked(never, steady())
    opening_only = flow([3] + [0] * 79)  # the 3 opening datagrams passed, then nothing
    assert cf.blocked(opening_only, steady())
    assert not cf.blocked(never, never)


def _opened(f: cf.Flow, first_echo_s: float) -> cf.Flow:
    return dataclasses.replace(f, first_echo_s=first_echo_s, interval_s=0.06)


def test_an_opening_that_never_came_back_is_a_block() -> None:
    # A DPI that drops the 3 STUN-framed datagrams (seq 0-2) and lets the RTP through.
    call = _opened(flow([2] + [PER_BIN] * 79), 3 * 0.06)
    control = _opened(steady(), 0.0)
    assert cf.opening_lost(call, control)
    assert cf.summarize(call, control)["call_blocked"]
    # The opening's last datagram came back: the call started.
    assert not cf.opening_lost(_opened(call, 2 * 0.06), control)
    # The control's opening was lost too: nothing singles the call out.
    assert not cf.opening_lost(call, _opened(steady(), 3 * 0.06))
    # A lossy path that took the opening by chance also loses the rest: no block.
    rng = np.random.default_rng(3)
    lossy = _opened(flow(rng.binomial(PER_BIN, 0.7, size=80).astype(float)), 3 * 0.06)
    assert not cf.opening_lost(lossy, control)
    # Without the interval the opening cannot be placed.
    assert not cf.opening_lost(dataclasses.replace(call, interval_s=np.nan), control)


# --- losses, policing and shaping ---------------------------------------------------------------


def test_upstream_and_downstream_loss() -> None:
    # 320 sent, the reflector saw 240, 180 echoes came back.
    rx = np.linspace(3, 240, 80)
    up, down = cf.path_loss(flow([2.25] * 80, rx=rx))
    assert up == pytest.approx(0.25)
    assert down == pytest.approx(1 - 180 / 240)
    assert all(math.isnan(v) for v in cf.path_loss(flow([0] * 80)))


def test_policing_drops_without_delay() -> None:
    rng = np.random.default_rng(2)
    policed = flow([2] * 80, rtt=40 + rng.normal(0, 3, 80))
    assert cf.policing(policed)
    assert abs(cf.rtt_slope(policed)) < cf.SHAPING_SLOPE_MS_S


def test_shaping_delays_without_loss() -> None:
    times = (np.arange(80) + 0.5) * WIDTH
    shaped = flow([PER_BIN] * 80, rtt=40 + 50 * times)
    assert cf.rtt_slope(shaped) == pytest.approx(50.0)
    assert not cf.policing(shaped)
    # A shaper whose queue overflows loses too, but its RTT rose first: not policing.
    overflowing = flow([3] * 80, rtt=40 + 50 * times)
    assert not cf.policing(overflowing)


def test_loss_bursts_count_runs_of_lossy_bins() -> None:
    assert cf.loss_bursts(flow([4, 4, 0, 0, 0, 4, 4, 1, 4, 4])) == 2
    assert cf.loss_bursts(steady()) == 0


def test_flow_from_details_reads_the_record_format() -> None:
    details = {
        "flow": "call",
        "bin_width": 0.25,
        "bins": [
            {"sent": 4, "sent_bytes": 500, "echoed": 4, "echoed_bytes": 500, "reflector_rx": 4,
             "rtt_ms": 41.5},
            {"sent": 4, "sent_bytes": 520, "echoed": 0, "echoed_bytes": 0, "reflector_rx": None,
             "rtt_ms": None},
        ],
        "last_echo_s": 0.18,
        "last_echo_seq": 3,
    }  # fmt: skip
    f = cf.flow_from_details(details)
    assert list(f.sent) == [4, 4]
    assert list(f.echoed) == [4, 0]
    assert f.reflector_rx[0] == 4
    assert math.isnan(f.reflector_rx[1])
    assert f.rtt_ms[0] == 41.5
    assert math.isnan(f.rtt_ms[1])
    assert (f.last_echo_s, f.last_echo_seq) == (0.18, 3.0)
    assert cf.delivery(f) == 0.5
    assert list(cf.bin_delivery(f)) == [1.0, 0.0]
    assert list(cf.echo_rate_bps(f)) == [500 * 8 / 0.25, 0.0]
    # Without last_echo_s, the end of the last echoed bin stands in for it.
    del details["last_echo_s"]
    assert cf.flow_from_details(details).last_echo_s == 0.25


# --- power and false positives on simulated flows -------------------------------------------------


def _simulated(
    rng: random.Random, cap_bps: float | None = None, loss: float = 0.0, duration: float = 10.0
) -> cf.Flow:
    """A voice-profile flow (60 ms, 90-170 bytes) through a token-bucket policer of
    ``cap_bps`` bytes/s (bucket of two mean datagrams) and random loss."""
    n_bins = int(duration / WIDTH)
    sent, echoed = np.zeros(n_bins), np.zeros(n_bins)
    tokens, depth, last = 0.0, 2 * 130.0, 0.0
    for seq in range(int(duration / 0.06)):
        t = seq * 0.06
        b = min(int(t / WIDTH), n_bins - 1)
        size = rng.randint(90, 170)
        sent[b] += 1
        passed = True
        if cap_bps is not None:
            tokens, last = min(depth, tokens + (t - last) * cap_bps), t
            passed = tokens >= size
            tokens -= size if passed else 0
        if passed and rng.random() >= loss:
            echoed[b] += 1
    return flow(echoed, sent=sent)


def _flagged(call: cf.Flow, control: cf.Flow) -> bool:
    s = cf.summarize(call, control)
    area, p = s["call_area"], s["call_p"]
    assert isinstance(area, float)
    assert isinstance(p, float)
    return area >= cf.AREA_THRESHOLD and p < cf.P_THRESHOLD


def test_a_cap_at_half_the_rate_is_found_and_equal_loss_is_not() -> None:
    # METHOD.md: a cap at half the call's rate with >= 95% power and <= 1% false positives.
    half = 130 / 0.06 / 2
    trials = 100
    found = sum(
        _flagged(
            _simulated(random.Random(k), half, 0.02), _simulated(random.Random(-k), None, 0.02)
        )
        for k in range(trials)
    )
    false = sum(
        _flagged(
            _simulated(random.Random(k), None, 0.05), _simulated(random.Random(-k), None, 0.05)
        )
        for k in range(trials)
    )
    assert found >= 0.95 * trials
    assert false <= 0.01 * trials


# --- property: an improved call is never throttled ------------------------------------------------


def _verdict(call: cf.Flow, control: cf.Flow) -> str:
    row = {**cf.summarize(call, control), "callflow_tests": 1, "app": "whatsapp"}
    frame = pd.DataFrame([{**row, "targets": 1, "targets_failed": 0}])
    decided = apply_rules(frame, (*CALLFLOW_RULES, RULES[-1]))
    return str(decided["verdict"].iloc[0])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
        min_size=8,
        max_size=80,
    )
)
def test_swapping_call_and_control_never_throttles_the_better_flow(
    bins: list[tuple[int, int, int]],
) -> None:
    sent = np.array([max(b) for b in bins], dtype=float)
    low = np.array([min(b[1], b[2]) for b in bins], dtype=float)
    high = np.array([max(b[1], b[2]) for b in bins], dtype=float)
    worse, better = flow(low, sent=sent), flow(high, sent=sent)
    # The call that got at least as much through as its control, bin by bin, is never throttled.
    assert _verdict(better, worse) != "calls_throttled"
    # And whatever the original verdict, the swapped pair cannot be throttled both ways.
    both = {_verdict(worse, better), _verdict(better, worse)}
    assert both != {"calls_throttled"}


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"bins": 5},
        {"bins": "abc", "bin_width": "x"},
        {"bins": [None, 3, {"sent": "4", "echoed": True}], "last_echo_s": "late"},
        {"bins": [{"sent": -4, "echoed": 9}, {"sent": 1e308, "echoed": float("nan")}]},
        {"bins": [{"sent": 4, "echoed": 9}], "bin_width": 0, "last_echo_seq": [1]},
    ],
)
def test_damaged_details_give_figures_not_errors(details: dict[str, object]) -> None:
    f = cf.flow_from_details(details)
    assert f.bin_width > 0
    assert (f.echoed <= f.sent).all()
    summary = cf.summarize(f, f, f)
    assert set(summary) == set(cf.SUMMARY_KEYS)
