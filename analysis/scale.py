"""Verdicts over more records than fit in memory: ``analysis.verdicts`` per partition, on Dask.

    from distributed import Client, LocalCluster
    import analysis
    from analysis.scale import verdicts_dask
    analysis.jsonl_to_parquet("results/", "records.parquet")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        table = verdicts_dask("records.parquet")          # == analysis.verdicts(load(...))
    shares = analysis.aggregate(table, by=["app", "asn", "day"])  # the table is small

Why per partition is exact. ``verdicts`` judges a run from that run's records plus the baseline
pool (its module docstring): nothing else crosses runs. So, with

* runs never split: ``to_parquet`` puts every record of a run in the bucket of its ``run_id``
  hash, and a partition here is whole buckets (``partitions``: one bucket of non-baseline
  records, or a few buckets' baseline records); ``verdicts_dask`` checks that each run's rows
  came from one partition;
* the baseline broadcast: every partition is judged against all of the data set's records of
  vantage ``baseline`` (read alone, from their ``baseline=1`` directories) plus the
  ``baseline`` argument, so it sees the same baseline pool as the whole table does (records in
  both count once: the pool is deduplicated by ``measurement_id``). A partition without
  baseline records of its own gets only the pool's records of the (target, step) groups the
  pool marks as failing, all of them: the same groups come out failing, at a fraction of the
  cost (``_Pool``);
* the same sort: the per-partition tables are concatenated and sorted by the keys ``verdicts``
  sorts by (run start, run id, app order), which are unique per row,

the result equals ``verdicts`` on the whole table row for row. (Duplicate records are dropped
within a run's partition; the one case that differs is a ``measurement_id`` reused by two runs,
which ringprobe never writes: its ids are random 128-bit numbers.)

Dask runs on whichever scheduler is current: a ``distributed.Client`` when one is active.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.delayed import delayed

from analysis.columns import COLUMNS
from analysis.features import BASELINE_VANTAGE, baseline_failures, record_steps
from analysis.load import concat, empty_frame
from analysis.parquet import BASELINE, DatasetInfo, load_parquet, read_info
from analysis.rules import RULES, Rule
from analysis.shares import CONFIDENCE, MIN_RUNS, aggregate
from analysis.verdicts import APP_ORDER, VERDICT_COLUMNS, verdicts

PathArg = str | os.PathLike[str]
PARTITION: Final = "_partition"
"""Column of the per-partition tables: which partition a verdict row came from."""


def _with_categories(frame: pd.DataFrame, info: DatasetInfo) -> pd.DataFrame:
    """``frame`` (empty) with the data set's categories: the meta of every partition."""
    out = frame.copy()
    for name, categories in info.categories.items():
        out[name] = pd.Categorical([], categories=pd.Index(categories, dtype="str"))
    return out


def partitions(info: DatasetInfo) -> list[tuple[int, tuple[int, ...]]]:
    """The Dask partitions of a data set, as (baseline flag, buckets): one per non-empty bucket
    of non-baseline records, then the baseline records' buckets in groups of about a bucket's
    mean size (few partitions hold baseline records: only they need the whole baseline pool)."""
    parts: list[tuple[int, tuple[int, ...]]] = [
        (0, (k,)) for k in range(info.buckets) if info.count(0, k)
    ]
    mean = max(info.rows // max(len(parts), 1), 1)
    group: list[int] = []
    size = 0
    for k in range(info.buckets):
        if not info.count(1, k):
            continue
        group.append(k)
        size += info.count(1, k)
        if size >= mean:
            parts.append((1, tuple(group)))
            group, size = [], 0
    if group:
        parts.append((1, tuple(group)))
    return parts or [(0, (0,))]


def read_dask(path: PathArg, *, columns: Sequence[str] | None = None) -> Any:
    """A Dask DataFrame over a data set of ``to_parquet``, partitioned as ``partitions`` says:
    each partition holds whole runs (it is whole buckets) and has the data set's categories."""
    root = os.fspath(path)
    info = read_info(root)
    names = list(COLUMNS) if columns is None else list(columns)
    meta = _with_categories(empty_frame(), info)[names]
    specs = partitions(info)
    # from_map is not annotated in dask; its result is a dask DataFrame.
    return dd.from_map(  # type: ignore[no-untyped-call]
        _Part(root, names),
        specs,
        meta=meta,
        divisions=[None] * (len(specs) + 1),
        label="ringprobe-records",
        enforce_metadata=False,
    )


class _Part:
    """Reads one partition (a class, not a closure: Dask ships it to workers by pickle)."""

    def __init__(self, root: str, columns: list[str]) -> None:
        self.root = root
        self.columns = columns

    def __call__(self, spec: tuple[int, tuple[int, ...]]) -> pd.DataFrame:
        flag, buckets = spec
        return load_parquet(
            self.root, columns=self.columns, buckets=buckets, filters=[(BASELINE, "==", flag)]
        )


@dataclass(frozen=True, slots=True)
class _Pool:
    """The baseline every partition is judged against, whole and reduced.

    ``full``: the data set's baseline records and the ``baseline`` argument. ``reduced``: only
    the records of the (target, step) groups that ``full`` marks as failing from the baseline,
    every record of those groups. ``verdicts`` uses the baseline only through
    ``baseline_failures`` (per group: share of successes, runs), so a partition without baseline
    records of its own gets the same failing groups from ``reduced`` as from ``full``, at a
    fraction of the cost; a partition with some needs ``full`` (its own records of a group that
    passes must be outweighed by all the others).
    """

    full: pd.DataFrame | None
    reduced: pd.DataFrame | None

    def for_partition(self, part: pd.DataFrame) -> pd.DataFrame | None:
        if (part["vantage"] == BASELINE_VANTAGE).any():
            return self.full
        return self.reduced


def _reduce(full: pd.DataFrame | None) -> _Pool:
    if full is None:
        return _Pool(None, None)
    bad = baseline_failures([full])
    step, _kind = record_steps(full)
    target = full["target_id"].astype(object)
    keep = np.zeros(len(full), dtype=bool)
    for s, ids in bad.items():
        keep |= (step == s) & target.isin(ids).to_numpy(dtype=bool)
    return _Pool(full, full[keep].reset_index(drop=True))


def _dataset_baseline(root: str, extra: pd.DataFrame | None) -> _Pool:
    """The data set's baseline records (and ``extra``): what every partition is given."""
    found = load_parquet(root, filters=[(BASELINE, "==", 1)])
    found = found[found["vantage"] == BASELINE_VANTAGE]
    return _reduce(_pool(found, extra))


def _pool(found: pd.DataFrame, extra: pd.DataFrame | None) -> pd.DataFrame | None:
    if extra is None:
        return found.reset_index(drop=True) if len(found) else None
    if not len(found):
        return extra
    return concat([found, extra])


def _partition_verdicts(
    part: pd.DataFrame,
    pool: _Pool,
    rules: Sequence[Rule],
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    out = verdicts(part, pool.for_partition(part), rules)
    number = -1 if partition_info is None else int(partition_info["number"])
    out[PARTITION] = pd.Series(number, index=out.index, dtype="int64")
    return out


def verdicts_dask(
    source: PathArg | Any,
    baseline: pd.DataFrame | None = None,
    rules: Sequence[Rule] = RULES,
) -> pd.DataFrame:
    """``analysis.verdicts`` of a data set too big for memory, computed partition by partition
    on the current Dask scheduler; equal to ``verdicts`` of the whole table (see the module
    docstring for why). The verdict table itself is small (one row per run and app) and is
    returned as a pandas frame, columns VERDICT_COLUMNS, sorted as ``verdicts`` sorts.

    ``source``: the path of a ``to_parquet`` data set, or a Dask DataFrame of the record table
    whose partitions each hold whole runs (``read_dask`` gives one). ValueError when a run turns
    out to span partitions (its verdict would depend on how the data was cut).
    """
    if isinstance(source, str | os.PathLike):
        root = os.fspath(source)
        ddf = read_dask(root)
        pool: Any = delayed(_dataset_baseline, pure=True)(root, baseline)
    else:
        ddf = source
        found = ddf[ddf["vantage"] == BASELINE_VANTAGE].compute()
        pool = delayed(_reduce(_pool(found, baseline)), pure=True)
    meta = verdicts(empty_frame(), rules=rules)
    meta[PARTITION] = pd.Series([], dtype="int64")
    parts = ddf.map_partitions(
        _partition_verdicts,
        pool,
        list(rules),
        meta=meta,
        align_dataframes=False,
        enforce_metadata=False,
    )
    table: pd.DataFrame = parts.compute()
    spread = table.groupby("run_id", observed=True)[PARTITION].nunique()
    split = spread[spread > 1]
    if len(split):
        raise ValueError(
            f"{len(split)} run(s) span partitions (e.g. {split.index[0]}): partition the records "
            "by run (analysis.to_parquet, read_dask) so each run is judged whole"
        )
    rank = table["app"].map({app: i for i, app in enumerate(APP_ORDER)}).fillna(len(APP_ORDER))
    table = table.assign(_rank=rank).sort_values(
        ["start_time", "run_id", "_rank", "app"], kind="stable"
    )
    return table[list(VERDICT_COLUMNS)].reset_index(drop=True)


def aggregate_dask(
    source: PathArg | Any,
    by: Sequence[str] = ("app", "day"),
    *,
    baseline: pd.DataFrame | None = None,
    rules: Sequence[Rule] = RULES,
    min_runs: int = MIN_RUNS,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """``analysis.aggregate`` of ``verdicts_dask(source, baseline, rules)``: the verdicts are
    computed on Dask, the shares (over the small verdict table) in pandas."""
    table = verdicts_dask(source, baseline, rules)
    return aggregate(table, by, min_runs=min_runs, confidence=confidence)


__all__ = ["aggregate_dask", "partitions", "read_dask", "verdicts_dask"]
