"""analysis.onsets: change points in the daily share of restricted runs, on synthetic tables.

Each synthetic day has 15-25 runs (uniform), each restricted (``calls_blocked``) with the day's
true share, from a seeded NumPy generator: the tables, and so the counts below, are fixed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.onset import ALPHA, END, ONSET, ONSET_COLUMNS, onsets

START = pd.Timestamp("2026-08-01", tz="UTC")
# A change is found at the true day, or one day off: on the day a restriction starts, part of
# the day's runs may come before it, so the day's share lies between the two.
TOLERANCE_DAYS = 1


def _table(
    shares: list[float],
    seed: int,
    *,
    runs: tuple[int, int] = (15, 26),
    app: str = "whatsapp",
    asn: str = "AS1",
    first_day: int = 0,
) -> pd.DataFrame:
    """A verdict table with only the columns onsets reads: day i restricts each run with
    probability shares[i]; runs spread over the day (every 50 min)."""
    rng = np.random.default_rng(seed)
    verdicts: list[str] = []
    times: list[pd.Timestamp] = []
    for day, share in enumerate(shares, start=first_day):
        n = int(rng.integers(*runs))
        restricted = rng.random(n) < share
        verdicts += ["calls_blocked" if hit else "ok" for hit in restricted]
        times += [START + pd.Timedelta(days=day, minutes=50 * i) for i in range(n)]
    return pd.DataFrame(
        {
            "app": [app] * len(verdicts),
            "probe_asn": [asn] * len(verdicts),
            "verdict": verdicts,
            "start_time": pd.to_datetime(times, utc=True),
        }
    )


def _day(timestamp: pd.Timestamp) -> int:
    return int((timestamp - START).days)


@pytest.mark.parametrize("seed", range(20))
def test_an_onset_is_found_at_its_day(seed: int) -> None:
    out = onsets(_table([0.02] * 20 + [0.7] * 15, seed))
    assert len(out) == 1
    change = out.iloc[0]
    assert change["kind"] == ONSET
    assert abs(_day(change["first_day_after"]) - 20) <= TOLERANCE_DAYS
    assert _day(change["first_day_after"]) - _day(change["last_day_before"]) == 1
    assert change["share_before"] < 0.1 < 0.5 < change["share_after"]
    assert change["change"] == pytest.approx(change["share_after"] - change["share_before"])
    assert change["days_before"] + change["days_after"] == 35
    assert change["p_value"] < ALPHA


def test_onsets_are_found_at_the_exact_day_when_the_days_are_clean() -> None:
    # With the change at midnight, every seed of the test above finds day 20 itself.
    tables = [_table([0.02] * 20 + [0.7] * 15, seed) for seed in range(20)]
    found = [_day(onsets(table)["first_day_after"].iloc[0]) for table in tables]
    assert found == [20] * 20


@pytest.mark.parametrize("seed", range(10))
def test_a_change_in_the_middle_of_a_day_is_within_a_day(seed: int) -> None:
    # Day 20 is half restricted (the restriction starts at noon): either side is right.
    out = onsets(_table([0.02] * 20 + [0.36] + [0.7] * 14, seed))
    assert list(out["kind"]) == [ONSET]
    assert _day(out["first_day_after"].iloc[0]) in {20, 21}


@pytest.mark.parametrize("seed", range(10))
def test_an_end_is_found_as_an_end(seed: int) -> None:
    out = onsets(_table([0.6] * 15 + [0.05] * 20, seed))
    assert list(out["kind"]) == [END]
    assert abs(_day(out["first_day_after"].iloc[0]) - 15) <= TOLERANCE_DAYS
    assert out["change"].iloc[0] < -0.4


@pytest.mark.parametrize("seed", range(10))
def test_an_onset_and_its_end(seed: int) -> None:
    out = onsets(_table([0.02] * 12 + [0.5] * 10 + [0.02] * 12, seed))
    assert list(out["kind"]) == [ONSET, END]
    assert abs(_day(out["first_day_after"].iloc[0]) - 12) <= TOLERANCE_DAYS
    assert abs(_day(out["first_day_after"].iloc[1]) - 22) <= TOLERANCE_DAYS
    # The segment between the two is the same one seen from either side.
    assert out["share_after"].iloc[0] == out["share_before"].iloc[1]
    assert out["runs_after"].iloc[0] == out["runs_before"].iloc[1]


def test_a_smaller_onset_is_found_most_of_the_time() -> None:
    # 0.05 -> 0.25 at ~20 runs a day: measured 96 of 100 seeds found at the day (+-1), none wrong.
    found = 0
    for seed in range(100):
        out = onsets(_table([0.05] * 20 + [0.25] * 15, 7000 + seed))
        assert len(out) <= 1
        found += len(out) == 1 and abs(_day(out["first_day_after"].iloc[0]) - 20) <= 1
    assert found >= 90


# False detections in stationary series: 50 seeds at each of three shares, 35 days each, at the
# defaults (alpha 0.001 per group, a jump of at least 0.1, 3 days a side). Measured: 0 of 150.
@pytest.mark.parametrize("share", [0.02, 0.3, 0.6])
def test_no_change_is_found_in_stationary_series(share: float) -> None:
    false = sum(len(onsets(_table([share] * 35, 1000 + seed))) for seed in range(50))
    assert false == 0


def test_the_test_alone_keeps_its_level() -> None:
    # Without the minimum jump, the likelihood-ratio test with its Bonferroni bound is what stands
    # between noise and a reported change: at alpha = 0.05 at most 5% of stationary groups may
    # show one. Bonferroni is conservative; measured: 8 of 400 at share 0.02, 3 of 400 at 0.3.
    for share in (0.02, 0.3):
        tables = [_table([share] * 35, 2000 + seed) for seed in range(400)]
        false = sum(len(onsets(t, alpha=0.05, min_change=0)) > 0 for t in tables)
        assert false <= 0.05 * 400


def test_groups_are_independent() -> None:
    changing = _table([0.02] * 20 + [0.7] * 15, 7, asn="AS1")
    steady = _table([0.7] * 35, 8, asn="AS2")
    other_app = _table([0.5] * 10 + [0.0] * 25, 9, app="telegram", asn="AS1")
    table = pd.concat([steady, other_app, changing], ignore_index=True)
    out = onsets(table)
    assert list(out.columns) == ["app", "asn", *ONSET_COLUMNS]
    assert list(zip(out["app"], out["asn"], out["kind"], strict=True)) == [
        ("telegram", "AS1", END),
        ("whatsapp", "AS1", ONSET),
    ]
    alone = onsets(changing)
    pd.testing.assert_frame_equal(out.iloc[[1]].reset_index(drop=True), alone)
    # Pooled over ASNs, the steady network dilutes the onset but it is still there.
    pooled = onsets(table, by=["app"])
    assert list(pooled["kind"]) == [END, ONSET]
    assert pooled["share_before"].iloc[1] > alone["share_before"].iloc[0]


def test_row_order_does_not_matter() -> None:
    table = pd.concat(
        [_table([0.02] * 20 + [0.7] * 15, 1), _table([0.6] * 15 + [0.05] * 20, 2, asn="AS9")],
        ignore_index=True,
    )
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(onsets(table), onsets(shuffled))


def test_days_with_too_few_runs_are_skipped() -> None:
    # Days 18-22 have 3 runs each: below min_runs_per_day (10) they are left out, so the change
    # lies somewhere between day 17 and day 23, and their runs are in no segment.
    shares = [0.02] * 20 + [0.7] * 15
    full = _table(shares, 4)
    day = (full["start_time"] - START).dt.days
    thin = full[~day.between(18, 22) | (full.groupby(day).cumcount() < 3)]
    out = onsets(thin)
    assert list(out["kind"]) == [ONSET]
    change = out.iloc[0]
    assert (_day(change["last_day_before"]), _day(change["first_day_after"])) == (17, 23)
    assert change["days_before"] + change["days_after"] == 30
    assert change["runs_before"] + change["runs_after"] == len(thin) - 5 * 3
    # With the threshold lowered the thin days count again, weighted by their 3 runs.
    low = onsets(thin, min_runs_per_day=3)
    assert low["days_before"].iloc[0] + low["days_after"].iloc[0] == 35


def test_too_little_data_gives_no_change() -> None:
    # Five days cannot hold two segments of three days, however clear the change.
    assert onsets(_table([0.0, 0.0, 1.0, 1.0, 1.0], 5)).empty
    # Six can.
    assert list(onsets(_table([0.0] * 3 + [1.0] * 3, 5))["kind"]) == [ONSET]
    # Every day below the minimum of runs: nothing to segment.
    assert onsets(_table([0.0] * 20 + [1.0] * 20, 5, runs=(2, 9))).empty
    # A group with too little data has no rows; the others are not affected.
    table = pd.concat(
        [_table([0.0, 1.0, 1.0], 6, asn="AS2"), _table([0.0] * 10 + [0.9] * 10, 6)],
        ignore_index=True,
    )
    assert list(onsets(table)["asn"]) == ["AS1"]


def test_small_changes_are_not_reported() -> None:
    # 0.30 -> 0.36 over 4000 runs a side is significant, but below min_change (0.1).
    table = _table([0.3] * 20 + [0.36] * 20, 10, runs=(200, 201))
    assert onsets(table).empty
    assert list(onsets(table, min_change=0.05)["kind"]) == [ONSET]


def test_an_empty_table_gives_no_changes() -> None:
    out = onsets(_table([], 0))
    assert out.empty
    assert list(out.columns) == ["app", "asn", *ONSET_COLUMNS]
    assert list(onsets(_table([], 0), by=[]).columns) == list(ONSET_COLUMNS)


def test_other_verdicts_and_rows_without_a_time() -> None:
    table = _table([0.0] * 10 + [0.8] * 10, 11)
    blocked = table["verdict"] == "calls_blocked"
    table.loc[blocked, "verdict"] = "blocked"
    assert onsets(table).empty  # "blocked" is not one of the call verdicts
    assert list(onsets(table, verdicts=["blocked"])["kind"]) == [ONSET]
    table.loc[blocked, "start_time"] = pd.NaT
    assert onsets(table, verdicts=["blocked"]).empty  # the restricted runs have no day


def test_bad_arguments() -> None:
    table = _table([0.1] * 6, 0)
    with pytest.raises(ValueError, match="along the days"):
        onsets(table, by=["app", "day"])
    with pytest.raises(ValueError, match="cannot group by 'nowhere'"):
        onsets(table, by=["nowhere"])
    with pytest.raises(TypeError, match="list of verdicts"):
        onsets(table, verdicts="calls_blocked")
    with pytest.raises(ValueError, match="alpha"):
        onsets(table, alpha=0)
    with pytest.raises(ValueError, match="min_runs_per_day"):
        onsets(table, min_runs_per_day=0)
    with pytest.raises(ValueError, match="min_segment_days"):
        onsets(table, min_segment_days=0)
    with pytest.raises(ValueError, match="min_change"):
        onsets(table, min_change=1.0)


@settings(max_examples=40, deadline=None)
@given(
    shares=st.lists(st.sampled_from([0.0, 0.05, 0.5, 0.9, 1.0]), min_size=0, max_size=30),
    seed=st.integers(0, 2**16),
    min_segment_days=st.integers(1, 4),
)
def test_changes_are_consistent(shares: list[float], seed: int, min_segment_days: int) -> None:
    table = _table(shares, seed, runs=(5, 20))
    out = onsets(table, min_segment_days=min_segment_days, min_runs_per_day=8)
    assert (out["first_day_after"] > out["last_day_before"]).all()
    after = out["first_day_after"].iloc[:-1].to_numpy()
    assert (out["last_day_before"].iloc[1:].to_numpy() >= after).all()  # changes in time order
    assert (out["change"].abs() >= 0.1).all()
    assert ((out["kind"] == ONSET) == (out["change"] > 0)).all()
    assert (out[["days_before", "days_after"]] >= min_segment_days).all().all()
    assert (out["p_value"] < ALPHA).all()
    assert (out["count_before"] <= out["runs_before"]).all()
    day = (table["start_time"] - START).dt.days
    assert (out["runs_before"] + out["runs_after"] <= len(table)).all()
    assert len(out) <= max(0, day.nunique() // min_segment_days - 1)
