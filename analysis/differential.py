"""Call flow vs its control, over many runs: how differently a network treats call-shaped traffic.

    import analysis
    table = analysis.verdicts(analysis.load("results/"))
    figures = analysis.differential(table, by=["app", "asn"])   # one row per group

Each run's call test sends a call-shaped flow and a control flow of random bytes with the same
sizes and send times (METHOD.md, "Statistics"; ``analysis.features.CALLFLOW_COLUMNS``). A verdict
says what one run showed; this table says how the figures behind the verdicts are spread over a
group's runs: the call flow's and the control's delivery (and loss, 1 - delivery), their per-run
difference, Wehe's area, and when cut calls were cut. Only rows with at least one call test
(``callflow_tests > 0``) count. Quantiles are pandas' (linear interpolation between order
statistics) over the rows where the figure is known; a figure known in no row is NA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from analysis.callflow import AREA_THRESHOLD, P_THRESHOLD
from analysis.shares import group_keys

# The spread of a figure over a group's runs: the middle and both tails, 10% cut off each side
# so that a single odd run in ten does not set the range.
QUANTILES: Final[dict[str, float]] = {"p10": 0.1, "median": 0.5, "p90": 0.9}

# Per-run figures whose quantiles are reported, and what each is.
FIGURES: Final[dict[str, str]] = {
    "call_delivery": "call flow: echoed / sent datagrams",
    "control_delivery": "control flow: echoed / sent datagrams",
    "call_loss": "call flow: 1 - call_delivery",
    "control_loss": "control flow: 1 - control_delivery",
    "delivery_gap": "control_delivery - call_delivery of the same run: > 0 when the call flow "
    "lost more than its control",
    "call_rate_bps": "call flow: echoed bit/s, averaged over the bins it sent in",
    "control_rate_bps": "control flow: the same",
    "call_area": "Wehe's area, (mean control - mean call) / max of the two, per-bin delivery",
    "call_cut_s": "seconds from the call flow's start to its last echo, over the cut runs only",
}

DIFFERENTIAL_COLUMNS: Final[dict[str, str]] = {
    "runs": "rows with at least one call test (callflow_tests > 0)",
    "tests": "call tests in those rows (sum of callflow_tests)",
    "runs_differentiated": f"rows with call_area >= {AREA_THRESHOLD} and call_p < {P_THRESHOLD} "
    "(the call flow treated worse than its control, as the verdict rules read it)",
    "runs_cut": "rows whose call flow was cut (call_cut_s known)",
    **{
        f"{figure}_{label}": f"{q:.0%} quantile of {figure} ({meaning})"
        if label != "median"
        else f"median of {figure} ({meaning})"
        for figure, meaning in FIGURES.items()
        for label, q in QUANTILES.items()
    },
}


def differential(table: pd.DataFrame, by: Sequence[str] = ("app", "asn")) -> pd.DataFrame:
    """Spread of the call-flow figures over the runs of each group of ``by``.

    ``table``: ``analysis.verdicts`` output, or any frame with the call-flow columns
    (callflow_tests, call_delivery, control_delivery, call_area, call_p, call_cut_s) and the
    columns ``by`` names (or the derived keys ``day``, ``week``, ``asn``, ``country``,
    ``network_type`` of ``analysis.aggregate``). Returns the ``by`` columns, then
    DIFFERENTIAL_COLUMNS: one row per group with at least one call test, in sorted order.
    """
    by = list(by)
    columns = [*by, *DIFFERENTIAL_COLUMNS]
    tested = table[(table["callflow_tests"].fillna(0) > 0).to_numpy(dtype=bool)]
    if tested.empty:
        return pd.DataFrame({name: [] for name in columns})
    frame = group_keys(tested, by)
    group_cols = by or ["_all"]
    if not by:
        frame["_all"] = 0
    call, control = _floats(tested["call_delivery"]), _floats(tested["control_delivery"])
    area, cut = _floats(tested["call_area"]), _floats(tested["call_cut_s"])
    frame["tests"] = tested["callflow_tests"].to_numpy(dtype=np.int64)
    # NaN compares False: a row without an area or a p-value is not counted as differentiated.
    differentiated = (area >= AREA_THRESHOLD) & (_floats(tested["call_p"]) < P_THRESHOLD)
    frame["runs_differentiated"] = differentiated.astype(np.int64)
    frame["runs_cut"] = (~np.isnan(cut)).astype(np.int64)
    figures = {
        "call_delivery": call,
        "control_delivery": control,
        "call_loss": 1.0 - call,
        "control_loss": 1.0 - control,
        "delivery_gap": control - call,
        "call_rate_bps": _floats(tested["call_rate_bps"]),
        "control_rate_bps": _floats(tested["control_rate_bps"]),
        "call_area": area,
        "call_cut_s": cut,
    }
    for name, values in figures.items():
        frame[name] = values
    groups = frame.groupby(group_cols, dropna=False, sort=True)
    out = groups.agg(
        runs=("tests", "size"),
        tests=("tests", "sum"),
        runs_differentiated=("runs_differentiated", "sum"),
        runs_cut=("runs_cut", "sum"),
    )
    for name in FIGURES:
        for label, q in QUANTILES.items():
            out[f"{name}_{label}"] = groups[name].quantile(q)
    return out.reset_index()[columns]


def _floats(column: pd.Series) -> np.ndarray:
    """The column as float64, NA (of any kind) as NaN."""
    values: np.ndarray = column.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return values


__all__ = ["DIFFERENTIAL_COLUMNS", "FIGURES", "QUANTILES", "differential"]
