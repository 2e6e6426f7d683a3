"""Verdicts: one row per (run, app), the single place where records are interpreted.

``verdicts(df)`` takes the flat table of ``analysis.load`` (or ``load_ooni``) and returns, per run
and app, a verdict from METHOD.md's vocabulary with its layer, mechanism, the rule that fired, a
sentence with the figures, and the figures as columns. It is a pure function of the records:
duplicated records (same ``measurement_id``) count once, and row order never matters.

How it reads the records (details in ``analysis.features`` and ``analysis.rules``):

* Only targets whose ``expect`` is not ``unknown`` are evidence. Each gets a status from its
  transaction's steps: failed at DNS, TCP, TLS or HTTPS (with a mechanism), ok, throttled, or not
  evidence (interrupted by the deadline, refused by the allow-list, no IPv6 route, unmeasured).
* Per (run, app), the share of the app's signaling endpoints that failed (web ones for apps with
  none; the controls' own for the ``control`` row) is compared with the run's neutral controls,
  and the ordered ``RULES`` decide.
* **Baselines.** Records from vantage ``baseline`` (passed as ``baseline``, or mixed into ``df``)
  give each (target, step) a success share; a failed target of another run whose failing step
  succeeds in fewer than half of the baseline's records is not evidence (``excluded_by_baseline``).
  Only failed targets are ever excluded, so adding a baseline never turns ``ok`` into a failure.
  Baseline runs found in ``df`` are verdicted too, as runs in their own right and without
  exclusion (they are the reference; a baseline run that is not ``ok`` is itself worth a look,
  and ``ringprobe run --ci`` from a baseline vantage wants its verdicts). Filter on ``vantage``
  to leave them out of aggregates.
* **Traces** (``trace`` records, ``ringprobe run --localize``) decide nothing: they add where on
  the path interference happens (``traces``, ``trace_hops``, ``trace_hop_min``/``_max``,
  ``trace_split``; features.TRACE_COLUMNS) and, for an interference verdict, a clause saying so
  at the end of ``evidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pandas as pd
from pandas.api.types import pandas_dtype

from analysis.features import (
    BASELINE_VANTAGE,
    CALLFLOW_COLUMNS,
    FAIL_CLASSES,
    FEATURE_COLUMNS,
    TRACE_COLUMNS,
    Targets,
    app_features,
    baseline_failures,
    dedup,
    target_table,
)
from analysis.rules import LAYERS, MECHANISMS, RULE_NAMES, RULES, VERDICTS, Rule, apply_rules

# Rows come out in this app order within a run (then other apps alphabetically).
APP_ORDER: Final = ("whatsapp", "telegram", "signal", "control")

# Output columns and dtypes: the rule's result, then the figures, then the run's metadata.
VERDICT_COLUMNS: Final[dict[str, str]] = {
    "run_id": "string",
    "app": "string",
    "verdict": "category",
    "layer": "category",
    "mechanism": "category",
    "rule": "category",
    "evidence": "string",
    "targets": "int64",
    "targets_failed": "int64",
    "share_failed": "float64",
    "dominant_failure": "category",
    "dominant_count": "int64",
    "targets_interrupted": "int64",
    "targets_unjudged": "int64",
    "excluded_by_baseline": "int64",
    "dns_mismatch": "int64",
    "throughput_targets": "int64",
    "targets_throttled": "int64",
    "targets_fast": "int64",
    "throughput_real_bps": "float64",
    "throughput_neutral_bps": "float64",
    "throughput_ratio": "float64",
    "bulk_targets": "int64",
    "targets_cut": "int64",
    "cutoff_bytes": "float64",
    "quic_targets": "int64",
    "quic_failed": "int64",
    "relays": "int64",
    "relays_failed": "int64",
    "relay_roles": "int64",
    "relay_roles_silent": "int64",
    "silent_roles": "string",
    "udp_controls": "int64",
    "udp_controls_failed": "int64",
    "run_control_delivery": "float64",
    "controls": "int64",
    "controls_failed": "int64",
    # The call-flow figures (features.CALLFLOW_COLUMNS says what each means).
    **{name: dtype for name, (dtype, _meaning) in CALLFLOW_COLUMNS.items()},
    # Where on the path interference happens (features.TRACE_COLUMNS).
    **{name: dtype for name, (dtype, _meaning) in TRACE_COLUMNS.items()},
    "probe_cc": "string",
    "probe_asn": "string",
    "probe_network_type": "string",
    "vantage": "string",
    "start_time": "datetime64[ns, UTC]",
}
# Fixed categories, so value counts show every verdict (zeros too) and frames concatenate.
_CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "verdict": VERDICTS,
    "layer": LAYERS,
    "mechanism": MECHANISMS,
    "rule": RULE_NAMES,
    "dominant_failure": tuple(c.name for c in FAIL_CLASSES),
}


def _typed(table: pd.DataFrame, rules: Sequence[Rule] = RULES) -> pd.DataFrame:
    categories = {**_CATEGORIES, "rule": tuple(rule.name for rule in rules)}
    out: dict[str, pd.Series | pd.Categorical] = {}
    for name, dtype in VERDICT_COLUMNS.items():
        column = table[name]
        if name in categories:
            out[name] = pd.Categorical(column, categories=list(categories[name]))
        elif dtype == "datetime64[ns, UTC]":
            out[name] = pd.to_datetime(column, utc=True).astype(pandas_dtype(dtype))
        else:
            out[name] = column.astype(pandas_dtype(dtype))
    return pd.DataFrame(out, index=pd.RangeIndex(len(table)))


def _app_rank(apps: pd.Series) -> pd.Series:
    return apps.map({app: i for i, app in enumerate(APP_ORDER)}).fillna(len(APP_ORDER))


def _targets(df: pd.DataFrame, baseline: pd.DataFrame | None) -> tuple[pd.DataFrame, Targets]:
    """Deduplicated records and their target table, baseline-bad targets excluded."""
    records = dedup(df)
    pool = [records[records["vantage"] == BASELINE_VANTAGE]]
    if baseline is not None:
        pool.append(baseline)
    return records, target_table(records, baseline_failures(pool))


def features(df: pd.DataFrame, baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feature table the rules read: one row per (run, app), columns FEATURE_COLUMNS.

    Useful to see why a rule fired, or to try a rule of one's own with ``apply_rules``.
    """
    records, targets = _targets(df, baseline)
    return app_features(records, targets)


def target_status(df: pd.DataFrame, baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, app, target) with the target's status and failure class: what the
    per-app figures count. For looking at which endpoints failed and how."""
    _records, targets = _targets(df, baseline)
    frame = targets.frame()
    return frame.sort_values(["run_id", "app", "target_id"], ignore_index=True)


def verdicts(
    df: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    rules: Sequence[Rule] = RULES,
) -> pd.DataFrame:
    """One row per (run, app) in ``df``: verdict, layer, mechanism, rule, evidence, the figures
    (VERDICT_COLUMNS) and the run's probe_cc, probe_asn, probe_network_type, vantage and
    start_time (its earliest record). Rows are sorted by run start, run id, then app (whatsapp,
    telegram, signal, control, others). ``baseline``: records from uncensored vantage points
    (see the module docstring). ``rules``: the rule list, RULES unless a researcher tries their
    own.
    """
    if df.empty:
        return _typed(pd.DataFrame({name: [] for name in VERDICT_COLUMNS}), rules)
    table = features(df, baseline)
    decided = apply_rules(table, rules)
    out = pd.concat([table, decided], axis=1)
    out["_rank"] = _app_rank(out["app"])
    out = out.sort_values(["start_time", "run_id", "_rank", "app"], kind="stable")
    return _typed(out.reset_index(drop=True), rules)


__all__ = [
    "APP_ORDER",
    "FEATURE_COLUMNS",
    "LAYERS",
    "MECHANISMS",
    "RULES",
    "VERDICTS",
    "VERDICT_COLUMNS",
    "Rule",
    "features",
    "target_status",
    "verdicts",
]
