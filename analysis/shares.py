"""Shares of verdicts over many runs: how often each verdict came out, per group, with intervals.

    import analysis
    table = analysis.verdicts(analysis.load("results/"))
    shares = analysis.aggregate(table, by=["app", "asn", "day"])
    calls = analysis.aggregate(table, by=["app", "day"], collapse={"calls": CALL_VERDICTS})

A row of the verdict table is one app in one run, so a share is "of the runs that measured this
app in this group, the fraction that gave this verdict". Each share carries a Wilson score
interval (Wilson 1927; Brown, Cai and DasGupta, "Interval estimation for a binomial proportion",
Statistical Science 2001, recommend it over the normal interval for small n and shares near 0 or
1, which is where censorship shares live). Groups with fewer than ``min_runs`` runs keep their
counts but no share: their status says "not enough data" (METHOD.md, "Aggregation over many
runs": share of runs per verdict by (app, ASN, day) with Wilson intervals).

Baseline runs (``vantage`` "baseline": scheduled runs from uncensored networks) are the reference
the rules compare volunteers' runs with, not a sample of the networks measured: ``aggregate``
leaves them out unless ``vantage`` is one of the grouping keys, which keeps them in their own
groups. ``analysis.onsets`` does the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Final

import numpy as np
import pandas as pd

from analysis.features import BASELINE_VANTAGE
from analysis.rules import VERDICTS

# The verdicts of a restricted call path (METHOD.md): what an onset of call restrictions shows.
CALL_VERDICTS: Final = ("calls_blocked", "calls_throttled", "calls_cut")
# Below this many runs a share is not reported. At 10 runs a share near one half has a 95% Wilson
# interval of about +-0.26; fewer runs say little, and a single run's share is 0 or 1, which
# reads as certainty.
MIN_RUNS: Final = 10
CONFIDENCE: Final = 0.95
ENOUGH: Final = "ok"
NOT_ENOUGH: Final = "not enough data"


# Grouping keys that are not columns of the verdict table, and how each is derived from it.
def _day(table: pd.DataFrame) -> pd.Series:
    day: pd.Series = table["start_time"].dt.tz_convert("UTC").dt.floor("D")
    return day


def _week(table: pd.DataFrame) -> pd.Series:
    day = _day(table)
    monday: pd.Series = day - pd.to_timedelta(day.dt.day_of_week, unit="D")  # ISO 8601 weeks
    return monday


DERIVED_KEYS: Final[dict[str, Callable[[pd.DataFrame], pd.Series]]] = {
    "day": _day,
    "week": _week,
    "asn": lambda t: t["probe_asn"],
    "country": lambda t: t["probe_cc"],
    "network_type": lambda t: t["probe_network_type"],
}

AGGREGATE_COLUMNS: Final[dict[str, str]] = {
    "verdict": "the verdict (or the name of a collapsed set of verdicts)",
    "count": "rows of the group with that verdict",
    "runs": "rows of the group (one per run and app)",
    "share": "count / runs; NA when runs < min_runs",
    "ci_low": "lower bound of the Wilson score interval of the share (NA as share)",
    "ci_high": "upper bound (NA as share)",
    "status": f"{ENOUGH!r}, or {NOT_ENOUGH!r} when runs < min_runs",
}


def group_keys(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The grouping columns for ``by``: columns of ``table`` as they are, DERIVED_KEYS computed.
    Raises ValueError naming a key that is neither."""
    keys: dict[str, pd.Series] = {}
    for name in by:
        if name in DERIVED_KEYS:
            keys[name] = DERIVED_KEYS[name](table)
        elif name in table.columns:
            keys[name] = table[name]
        else:
            known = sorted({*table.columns, *DERIVED_KEYS})
            raise ValueError(f"cannot group by {name!r}: not a column ({', '.join(known)})")
    return pd.DataFrame(keys, index=table.index)


def wilson(
    count: np.ndarray | pd.Series, n: np.ndarray | pd.Series, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval (low, high) of count / n; NaN where n is 0."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    k = np.asarray(count, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        denominator = 1 + z * z / m
        centre = (p + z * z / (2 * m)) / denominator
        half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denominator
    # At p = 0 (or 1) the interval's closed end is exactly 0 (or 1), whatever the rounding.
    low = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(k == m, 1.0, np.clip(centre + half, 0.0, 1.0))
    return np.where(m > 0, low, np.nan), np.where(m > 0, high, np.nan)


def without_baseline(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """``table`` without its baseline runs, unless ``by`` groups by ``vantage`` (module
    docstring); a table without a ``vantage`` column is returned as it is."""
    if "vantage" not in table.columns or "vantage" in by:
        return table
    return table[table["vantage"].astype(object).ne(BASELINE_VANTAGE).to_numpy(bool)]


def aggregate(
    table: pd.DataFrame,
    by: Sequence[str] = ("app", "day"),
    *,
    collapse: Mapping[str, Sequence[str]] | None = None,
    min_runs: int = MIN_RUNS,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Share of rows per verdict within each group of ``by``, every verdict listed (zeros too).

    ``table``: ``analysis.verdicts`` output (or any frame with a ``verdict`` column and the
    columns ``by`` names). ``by``: columns of the table, or the derived keys ``day`` and ``week``
    (UTC, from start_time), ``asn``, ``country``, ``network_type``. ``collapse``: name -> verdicts
    counted together under that name (e.g. ``{"calls": CALL_VERDICTS}``); the other verdicts keep
    their own rows. Returns the ``by`` columns, then AGGREGATE_COLUMNS, one row per (group,
    verdict), groups in sorted order and verdicts in METHOD.md's order (collapsed names first in
    the place of their first member). Baseline runs are left out unless ``by`` has ``vantage``
    (module docstring).
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be at least 1, not {min_runs}")
    by = list(by)
    if "verdict" in by:
        raise ValueError("'verdict' is what is counted; it cannot also be a grouping key")
    labels = _labels(collapse)
    order = list(dict.fromkeys(labels.get(v, v) for v in VERDICTS))
    columns = [*by, *AGGREGATE_COLUMNS]
    table = without_baseline(table, by)
    if table.empty:
        return pd.DataFrame({name: [] for name in columns})
    keys = group_keys(table, by)
    verdict = table["verdict"].astype(object).map(lambda v: labels.get(v, v))
    extra = sorted(set(verdict.dropna()) - set(order))
    order += extra  # a researcher's own rules may add verdicts
    # One row per group that has rows, one column per verdict (zeros filled), then long form:
    # groups x verdicts, never the product of every key's values.
    group_cols = by or ["_all"]
    frame = keys.assign(verdict=verdict.to_numpy(dtype=object))
    if not by:
        frame["_all"] = 0
    sizes = frame.groupby([*group_cols, "verdict"], dropna=False, sort=True).size()
    wide = sizes.unstack("verdict", fill_value=0).reindex(columns=order, fill_value=0)
    wide["runs"] = wide.sum(axis=1)
    out = wide.reset_index().melt(
        id_vars=[*group_cols, "runs"], value_vars=order, var_name="verdict", value_name="count"
    )
    rank = {v: i for i, v in enumerate(order)}
    out["_rank"] = out["verdict"].map(rank)
    out = out.sort_values([*group_cols, "_rank"], kind="stable").reset_index(drop=True)
    out["verdict"] = out["verdict"].astype(str)
    count = out["count"].to_numpy(dtype=np.int64)
    n = out["runs"].to_numpy(dtype=np.int64)
    low, high = wilson(count, n, confidence)
    enough = n >= min_runs
    with np.errstate(invalid="ignore", divide="ignore"):
        share = count / np.maximum(n, 1)
    out["count"] = count
    out["runs"] = n
    out["share"] = np.where(enough, share, np.nan)
    out["ci_low"] = np.where(enough, low, np.nan)
    out["ci_high"] = np.where(enough, high, np.nan)
    out["status"] = np.where(enough, ENOUGH, NOT_ENOUGH)
    return out[columns]


def _labels(collapse: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """verdict -> the name it is counted under."""
    labels: dict[str, str] = {}
    for name, members in (collapse or {}).items():
        if isinstance(members, str):
            raise TypeError(f"collapse[{name!r}] must be a list of verdicts, not a string")
        for verdict in members:
            if verdict in labels:
                raise ValueError(f"verdict {verdict!r} is collapsed twice")
            labels[verdict] = name
    return labels


__all__ = [
    "AGGREGATE_COLUMNS",
    "CALL_VERDICTS",
    "CONFIDENCE",
    "DERIVED_KEYS",
    "ENOUGH",
    "MIN_RUNS",
    "NOT_ENOUGH",
    "aggregate",
    "group_keys",
    "wilson",
]
