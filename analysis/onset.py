"""Onsets and ends of call restrictions: change points in the daily share of restricted runs.

    import analysis
    table = analysis.verdicts(analysis.load("results/"))
    changes = analysis.onsets(table, by=["app", "asn"])   # one row per detected change

Per group (by default app x ASN) each UTC day d gives k_d, the rows whose verdict is in
``verdicts`` (the call verdicts by default), and n_d, the rows. The days are segmented where the
share k/n changes, under a binomial model: within a segment every run is restricted with the same
probability, and a change point is where that probability jumps (METHOD.md, "Aggregation over
many runs": onset detection as a change point in the daily share).

How, and why that way:

* **Days with too few runs are skipped**, not imputed: a day with fewer than ``min_runs_per_day``
  rows is left out of the series (the same rule as ``aggregate``'s ``min_runs``, so the days the
  segmentation sees are the days whose share ``aggregate`` reports). The days kept are weighted
  by their runs, which is what the binomial likelihood does by itself: a day of 40 runs counts
  twice a day of 20. A change across a skipped day is reported between the kept days on either
  side, so its date range widens rather than pretending to a precision the data lacks.
* **Binary segmentation** (Scott and Knott, Biometrics 1974; Vostrikova, Soviet Math. Dokl.
  1981): the stretch of days is split where the likelihood ratio of "two shares" over "one
  share" is largest, if that split passes the test below; each part is then searched again.
* **The test** is Worsley's for a change in a binomial probability at an unknown day (Worsley,
  "The power of likelihood ratio and cumulative sum tests for a change in a binomial
  probability", Biometrika 1983): the statistic is LR = 2 (log L(two shares) - log L(one share)),
  chi-square with 1 degree of freedom at a fixed day, and the search over the C candidate days
  is paid for with a Bonferroni bound, p = min(1, C x P(chi2_1 > LR)). This is the penalty of the
  segmentation: a change is accepted when LR exceeds the chi2_1 critical value at alpha / C
  (about 17 for 30 candidate days at alpha = 0.001, stricter than BIC's 2 log(runs) ~ 13 for 700
  runs). A stretch is searched again only after a change in it was accepted, so under a
  constant share the chance of any change reported for a group is the first test's, at most
  about ``alpha`` (Bonferroni is conservative: tests/unit/test_onset.py measures 8 and 3 of 400
  stationary series at alpha = 0.05, shares 0.02 and 0.3, ~20 runs a day for 35 days).
* **Minimum segment length** ``min_segment_days`` kept days on either side of a change, and a
  **minimum size** ``min_change`` of the jump: a significant but small change is not an onset
  (splits with a smaller jump are not candidates, so one cannot hide a larger change).
  After the segmentation, a change whose neighbouring segments ended up closer than
  ``min_change`` is dropped and the two merged.

The model ignores overdispersion: real daily shares vary more than binomially (probes come and
go, networks have bad days). ``min_segment_days`` and ``min_change`` keep most such wobbles out
(a true share of 0.3 wandering with a day-to-day standard deviation of 0.05 gave no change in 200
simulated groups, 0.1 gave 6); the p-values are only as good as the binomial model, so read them
as a ranking, not a guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

import numpy as np
import pandas as pd

from analysis.shares import CALL_VERDICTS, MIN_RUNS, group_keys, without_baseline

# A day with fewer runs has no reported share in ``aggregate`` either; one probe's bad hour would
# set it (below 10 runs the share moves in steps of 0.1 or more).
MIN_RUNS_PER_DAY: Final = MIN_RUNS
# A change must hold for 3 days with data on each side: one odd day (an outage, a probe on a bad
# network, a holiday) is not the onset of a restriction.
MIN_SEGMENT_DAYS: Final = 3
# Family-wise level per group: with many groups (apps x ASNs) scanned, 100 stationary groups give
# about 0.1 false changes between them.
ALPHA: Final = 0.001
# A change of the share by less than this is not an onset or end of a restriction, however
# significant: with hundreds of runs tiny shifts (a new probe, overdispersion) test significant.
MIN_CHANGE: Final = 0.1
ONSET: Final = "onset"
END: Final = "end"

ONSET_COLUMNS: Final[dict[str, str]] = {
    "kind": f"{ONSET!r} when the share rises at the change, {END!r} when it falls",
    "last_day_before": "the last day (UTC, with enough runs) of the segment before the change",
    "first_day_after": "the first day (UTC, with enough runs) of the segment after: the change "
    "happened after the start of last_day_before and by the end of first_day_after",
    "share_before": "count_before / runs_before: share of restricted runs in the segment before",
    "share_after": "the same for the segment after",
    "change": "share_after - share_before",
    "days_before": "days with enough runs in the segment before",
    "days_after": "days with enough runs in the segment after",
    "runs_before": "rows (runs of the app) in the segment before",
    "runs_after": "rows in the segment after",
    "count_before": "rows in the segment before whose verdict is one of ``verdicts``",
    "count_after": "the same in the segment after",
    "statistic": "likelihood ratio 2 (log L(two shares) - log L(one share)) of the test that "
    "accepted the change, on the stretch of days being split then",
    "p_value": "its Bonferroni-bounded p-value: min(1, candidate days x P(chi2_1 > statistic))",
}


@dataclass(frozen=True, slots=True)
class _Split:
    """A change accepted by the segmentation."""

    at: int
    """Index of the first kept day after the change."""
    statistic: float
    """The likelihood ratio when it was accepted."""
    p_value: float
    """Its Bonferroni-bounded p-value."""


def onsets(
    table: pd.DataFrame,
    *,
    verdicts: Sequence[str] = CALL_VERDICTS,
    by: Sequence[str] = ("app", "asn"),
    min_runs_per_day: int = MIN_RUNS_PER_DAY,
    min_segment_days: int = MIN_SEGMENT_DAYS,
    alpha: float = ALPHA,
    min_change: float = MIN_CHANGE,
) -> pd.DataFrame:
    """Changes of the daily share of runs with a verdict in ``verdicts``, per group of ``by``.

    ``table``: ``analysis.verdicts`` output, or any frame with ``verdict``, ``start_time`` (UTC
    aware) and the columns ``by`` names (or the derived keys ``asn``, ``country``,
    ``network_type`` of ``analysis.aggregate``; not ``day`` or ``week``, the time axis). Rows
    without a verdict or a start time are left out. Returns the ``by`` columns, then
    ONSET_COLUMNS: one row per detected change, groups in sorted order, changes in time order.
    A group with fewer than 2 x ``min_segment_days`` days of ``min_runs_per_day`` runs cannot
    show a change and has no rows; ``aggregate(table, by=[*by, "day"])`` shows what data it has.
    Baseline runs are left out unless ``by`` has ``vantage``, as ``aggregate`` does.
    The module docstring says how changes are found and tested.
    """
    if isinstance(verdicts, str):
        raise TypeError(f"verdicts must be a list of verdicts, not the string {verdicts!r}")
    by = list(by)
    for name in ("day", "week", "verdict"):
        if name in by:
            raise ValueError(f"{name!r} cannot be a grouping key: onsets are found along the days")
    if min_runs_per_day < 1:
        raise ValueError(f"min_runs_per_day must be at least 1, not {min_runs_per_day}")
    if min_segment_days < 1:
        raise ValueError(f"min_segment_days must be at least 1, not {min_segment_days}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if not 0 <= min_change < 1:
        raise ValueError(f"min_change must be in [0, 1), not {min_change}")
    columns = [*by, *ONSET_COLUMNS]
    daily = _daily(without_baseline(table, by), verdicts, by)
    daily = daily[daily["runs"] >= min_runs_per_day]
    rows: list[dict[str, object]] = []
    group_cols = by or ["_all"]
    for _key, days in daily.groupby(group_cols, dropna=False, sort=True):
        k = days["count"].to_numpy(dtype=np.int64)
        n = days["runs"].to_numpy(dtype=np.int64)
        splits = _segment(k, n, min_segment_days, alpha, min_change)
        keys = {name: days[name].iloc[0] for name in by}
        day = list(days["day"])
        bounds = [0, *(s.at for s in splits), len(k)]
        for i, split in enumerate(splits):
            before = slice(bounds[i], split.at)
            after = slice(split.at, bounds[i + 2])
            kb, nb = int(k[before].sum()), int(n[before].sum())
            ka, na = int(k[after].sum()), int(n[after].sum())
            rows.append(
                {
                    **keys,
                    "kind": ONSET if ka / na > kb / nb else END,
                    "last_day_before": day[split.at - 1],
                    "first_day_after": day[split.at],
                    "share_before": kb / nb,
                    "share_after": ka / na,
                    "change": ka / na - kb / nb,
                    "days_before": split.at - bounds[i],
                    "days_after": bounds[i + 2] - split.at,
                    "runs_before": nb,
                    "runs_after": na,
                    "count_before": kb,
                    "count_after": ka,
                    "statistic": split.statistic,
                    "p_value": split.p_value,
                }
            )
    if not rows:
        return pd.DataFrame({name: [] for name in columns})
    return pd.DataFrame(rows, columns=columns)


def _daily(table: pd.DataFrame, verdicts: Sequence[str], by: list[str]) -> pd.DataFrame:
    """Per (group, day): ``count`` of rows with a verdict in ``verdicts`` and ``runs``, sorted."""
    if table.empty:
        return pd.DataFrame({name: [] for name in [*(by or ["_all"]), "day", "count", "runs"]})
    keys = group_keys(table, [*by, "day"])
    verdict = table["verdict"].astype(object)
    keys["hit"] = verdict.isin(list(verdicts)).to_numpy(dtype=np.int64)
    if not by:
        keys["_all"] = 0
    usable = (verdict.notna() & keys["day"].notna()).to_numpy(dtype=bool)
    counted = keys[usable].groupby([*(by or ["_all"]), "day"], dropna=False, sort=True)
    daily = counted["hit"].agg(["sum", "size"]).rename(columns={"sum": "count", "size": "runs"})
    return daily.reset_index()


def _loglik(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood at the MLE share k / n (0 log 0 = 0), the binomial coefficients
    left out (they cancel in every ratio)."""
    kf = k.astype(np.float64)
    nf = n.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = np.where(kf > 0, kf * np.log(kf / nf), 0.0)
        misses = np.where(nf - kf > 0, (nf - kf) * np.log((nf - kf) / nf), 0.0)
    result: np.ndarray = hits + misses
    return result


def _chi2_1_sf(x: float) -> float:
    """P(chi-square with 1 degree of freedom > x): chi2_1 is the square of a standard normal."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2.0))


def _best_split(
    ck: np.ndarray, cn: np.ndarray, a: int, b: int, min_days: int, alpha: float, min_change: float
) -> _Split | None:
    """The accepted split of kept days [a, b) (cumulative counts ck, cn), or None."""
    candidates = np.arange(a + min_days, b - min_days + 1)
    if candidates.size == 0:
        return None
    k_left, n_left = ck[candidates] - ck[a], cn[candidates] - cn[a]
    k_right, n_right = ck[b] - ck[candidates], cn[b] - cn[candidates]
    whole = _loglik(np.array([ck[b] - ck[a]]), np.array([cn[b] - cn[a]]))[0]
    ratio = 2.0 * (_loglik(k_left, n_left) + _loglik(k_right, n_right) - whole)
    jump = np.abs(k_right / n_right - k_left / n_left)
    # Small jumps are not candidates at all, so a significant small one cannot hide a large one.
    ratio = np.where(jump >= min_change, ratio, -np.inf)
    best = int(np.argmax(ratio))  # the first of equal maxima: deterministic
    statistic = float(ratio[best])
    if not math.isfinite(statistic):
        return None
    p_value = min(1.0, candidates.size * _chi2_1_sf(statistic))
    if p_value >= alpha:
        return None
    return _Split(int(candidates[best]), max(statistic, 0.0), p_value)


def _segment(
    k: np.ndarray, n: np.ndarray, min_days: int, alpha: float, min_change: float
) -> list[_Split]:
    """Binary segmentation of the days (counts k of n), then the merge of segments closer than
    min_change. The accepted splits in time order."""
    ck = np.concatenate([[0], np.cumsum(k)])
    cn = np.concatenate([[0], np.cumsum(n)])
    splits: list[_Split] = []
    stretches = [(0, len(k))]
    while stretches:
        a, b = stretches.pop()
        split = _best_split(ck, cn, a, b, min_days, alpha, min_change)
        if split is not None:
            splits.append(split)
            stretches += [(a, split.at), (split.at, b)]
    splits.sort(key=lambda s: s.at)
    # Splitting a stretch again can leave two neighbours of an earlier change with close shares.
    while splits:
        bounds = [0, *(s.at for s in splits), len(k)]
        shares = [(ck[hi] - ck[lo]) / (cn[hi] - cn[lo]) for lo, hi in pairwise(bounds)]
        jumps = [abs(after - before) for before, after in pairwise(shares)]
        smallest = int(np.argmin(jumps))
        if jumps[smallest] >= min_change:
            break
        del splits[smallest]
    return splits


__all__ = [
    "ALPHA",
    "END",
    "MIN_CHANGE",
    "MIN_RUNS_PER_DAY",
    "MIN_SEGMENT_DAYS",
    "ONSET",
    "ONSET_COLUMNS",
    "onsets",
]
