"""The record table as a partitioned Parquet data set: every run's records in one partition.

    analysis.jsonl_to_parquet("results/", "records.parquet")     # batch by batch of files
    analysis.to_parquet(analysis.load("results/"), "records.parquet")  # or a table in memory
    df = analysis.load_parquet("records.parquet")                 # the frame ``load`` gives

Layout (Hive partitioning, readable by any Parquet tool)::

    records.parquet/
        _ringprobe.json                      format, bucket count, rows, categories in order
        baseline=0/bucket=17/part-00000.parquet
        baseline=1/bucket=17/part-00000.parquet     records of vantage ``baseline``
        ...

``bucket`` is a stable hash of ``run_id`` (BLAKE2b, modulo the bucket count), so a run's records
land in one bucket whichever batch of files they were read in: a bucket is a unit of work that
holds whole runs (``analysis.scale`` reads one bucket per Dask partition). ``baseline`` keeps
baseline records apart so they can be read alone (every partition's verdicts need all of them).

What Parquet cannot say is kept beside it: the categories of each categorical column in their
order (``load`` gives first-appearance order) and a row number, so ``load_parquet`` returns
exactly the frame that was written (rows in order, dtypes and categories as ``load`` gives them),
and every partition of a data set has the same categories.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from analysis.columns import COLUMNS
from analysis.errors import LoadError
from analysis.features import BASELINE_VANTAGE
from analysis.load import Paths, load, resolve_paths

PathArg = str | os.PathLike[str]

# Enough partitions for a few cores to share 10M records (~150k records each), few enough that
# a small data set is not mostly empty files.
DEFAULT_BUCKETS: Final = 64
# JSON Lines bytes loaded per batch by jsonl_to_parquet: about 330k records, ~1 GB at peak.
DEFAULT_BATCH_BYTES: Final = 256 * 2**20
METADATA_FILE: Final = "_ringprobe.json"  # a leading "_" keeps Parquet readers away from it
FORMAT: Final = "ringprobe-records-parquet"
FORMAT_VERSION: Final = 1
BUCKET: Final = "bucket"
BASELINE: Final = "baseline"
ROW: Final = "_row"
"""Position of the row in the table that was written: restores the order on reading."""

_CATEGORY: Final = pa.dictionary(pa.int32(), pa.large_string())
_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "category": _CATEGORY,
    "string": pa.large_string(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
}
FILE_SCHEMA: Final = pa.schema(
    [(name, _ARROW_TYPES[dtype]) for name, (dtype, _meaning) in COLUMNS.items()]
    + [(ROW, pa.int64())]
)
_PARTITION_SCHEMA: Final = pa.schema([(BASELINE, pa.int8()), (BUCKET, pa.int32())])
PARTITIONING: Final = ds.partitioning(_PARTITION_SCHEMA, flavor="hive")
_DATASET_SCHEMA: Final = pa.unify_schemas([FILE_SCHEMA, _PARTITION_SCHEMA])
_CATEGORICAL: Final = tuple(name for name, (dtype, _m) in COLUMNS.items() if dtype == "category")


# --- the metadata file ---------------------------------------------------------------------------


@dataclass(slots=True)
class DatasetInfo:
    """What ``_ringprobe.json`` holds about a data set."""

    buckets: int
    rows: int = 0
    """Rows written so far (the next row number)."""
    parts: int = 0
    """Batches written so far (the next file number)."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Per categorical column, its categories in order."""
    counts: dict[str, int] = field(default_factory=dict)
    """Rows per partition directory, keyed ``"<baseline>/<bucket>"``."""

    def count(self, baseline: int, bucket: int) -> int:
        """Rows in ``baseline=<baseline>/bucket=<bucket>``."""
        return self.counts.get(f"{baseline}/{bucket}", 0)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "buckets": self.buckets,
                "rows": self.rows,
                "parts": self.parts,
                "categories": self.categories,
                "counts": self.counts,
            }
        )


def read_info(path: PathArg) -> DatasetInfo:
    """The metadata of the data set at ``path``; LoadError when it is not one of ours."""
    name = os.path.join(os.fspath(path), METADATA_FILE)
    try:
        with open(name, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError as exc:
        raise LoadError(f"{path}: not a ringprobe Parquet data set (no {METADATA_FILE})") from exc
    except (OSError, ValueError) as exc:
        raise LoadError(f"{name}: cannot read: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise LoadError(f"{name}: not a ringprobe Parquet data set")
    if raw.get("version") != FORMAT_VERSION:
        raise LoadError(
            f"{name}: data set format version {raw.get('version')!r}; "
            f"this ringprobe reads version {FORMAT_VERSION}"
        )
    try:
        return DatasetInfo(
            buckets=int(raw["buckets"]),
            rows=int(raw["rows"]),
            parts=int(raw["parts"]),
            categories={str(k): [str(v) for v in vs] for k, vs in raw["categories"].items()},
            counts={str(k): int(v) for k, v in raw["counts"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LoadError(f"{name}: damaged ({exc!r})") from exc


def _write_info(path: str, info: DatasetInfo) -> None:
    # Written last and atomically: a data set whose batch was interrupted keeps its old metadata.
    tmp = os.path.join(path, METADATA_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(info.to_json())
    os.replace(tmp, os.path.join(path, METADATA_FILE))


# --- writing -------------------------------------------------------------------------------------


def run_bucket(run_id: str, buckets: int) -> int:
    """The bucket of a run: stable across processes, machines and Python versions (unlike
    ``hash``), so batches written at different times agree."""
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def _row_buckets(df: pd.DataFrame, buckets: int) -> np.ndarray:
    """Per row, its run's bucket (hashed once per run, not per row); NA run ids in bucket 0."""
    run = df["run_id"]
    if not isinstance(run.dtype, pd.CategoricalDtype):
        run = run.astype("category")
    per_run = np.array(
        [run_bucket(str(r), buckets) for r in run.cat.categories] + [0], dtype=np.int64
    )
    codes = np.asarray(run.cat.codes.to_numpy(), dtype=np.int64)
    out: np.ndarray = per_run[codes]  # code -1 (NA) takes the trailing 0
    return out


def _merged(old: Sequence[str], new: pd.Index) -> list[str]:
    """``old`` then the values of ``new`` not in it, in order: categories of batches written one
    after the other, as ``load`` of all their files at once would order them."""
    seen = set(old)
    return [*old, *(str(v) for v in new if str(v) not in seen)]


def to_parquet(
    records: pd.DataFrame,
    path: PathArg,
    *,
    buckets: int = DEFAULT_BUCKETS,
    append: bool = False,
) -> None:
    """Write a loaded record table (``load``, ``load_ooni``, ``concat``) as a Parquet data set
    partitioned so that each run's records are in one bucket (see the module docstring).

    ``path`` must not exist, or be an empty directory, unless ``append``: then the table is
    added to the data set there (same bucket count; row numbers and categories continue), as
    ``jsonl_to_parquet`` does batch by batch. ValueError for a frame without the columns and
    dtypes of ``analysis.COLUMNS`` or a bucket count that does not match the data set's.
    """
    if list(records.columns) != list(COLUMNS):
        raise ValueError("to_parquet takes the table of analysis.load (columns of COLUMNS)")
    wrong = [n for n, (dtype, _m) in COLUMNS.items() if str(records[n].dtype) != dtype]
    if wrong:
        raise ValueError(f"columns not of their COLUMNS dtype: {wrong}")
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    root = os.fspath(path)
    if append and os.path.exists(os.path.join(root, METADATA_FILE)):
        info = read_info(root)
        if info.buckets != buckets:
            raise ValueError(f"{root}: data set has {info.buckets} buckets, not {buckets}")
    else:
        if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
            raise FileExistsError(f"{root}: exists and is not an empty directory")
        os.makedirs(root, exist_ok=True)
        info = DatasetInfo(buckets=buckets)
    n = len(records)
    for name in _CATEGORICAL:
        info.categories[name] = _merged(info.categories.get(name, []), records[name].cat.categories)
    if n:
        _write_rows(root, records, info)
    info.rows += n
    info.parts += 1
    _write_info(root, info)


def _write_rows(root: str, records: pd.DataFrame, info: DatasetInfo) -> None:
    table = pa.Table.from_pandas(records, preserve_index=False)
    table = table.append_column(ROW, pa.array(np.arange(info.rows, info.rows + len(records))))
    table = table.replace_schema_metadata(None).cast(FILE_SCHEMA)
    baseline = (records["vantage"] == BASELINE_VANTAGE).to_numpy(dtype=bool, na_value=False)
    key = baseline.astype(np.int64) * info.buckets + _row_buckets(records, info.buckets)
    order = np.argsort(key, kind="stable")  # stable: rows keep their order within a bucket
    keys, starts = np.unique(key[order], return_index=True)
    ends = [*starts[1:].tolist(), len(order)]
    for k, start, end in zip(keys.tolist(), starts.tolist(), ends, strict=True):
        flag, bucket = divmod(k, info.buckets)
        directory = os.path.join(root, f"{BASELINE}={flag}", f"{BUCKET}={bucket}")
        os.makedirs(directory, exist_ok=True)
        part = table.take(pa.array(order[start:end]))
        info.counts[f"{flag}/{bucket}"] = info.count(flag, bucket) + end - start
        pq.write_table(part, os.path.join(directory, f"part-{info.parts:05d}.parquet"))


def _batches(files: Sequence[str], batch_bytes: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for name in files:
        batch.append(name)
        size += os.path.getsize(name)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def jsonl_to_parquet(
    paths: Paths,
    path: PathArg,
    *,
    buckets: int = DEFAULT_BUCKETS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    keep_details: bool = False,
) -> int:
    """Convert ringprobe JSON Lines files (``paths`` as ``load`` takes them) into a Parquet data
    set at ``path`` in bounded memory: files are loaded and written a batch of about
    ``batch_bytes`` (on disk) at a time. ``load_parquet(path)`` then equals ``load(paths)``
    (runs split across files included: the bucket follows the run id). Returns the rows
    written. Damaged lines warn as with ``load``; FileExistsError unless ``path`` is new or an
    empty directory.
    """
    files = resolve_paths(paths)
    root = os.fspath(path)
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise FileExistsError(f"{root}: exists and is not an empty directory")
    rows = 0
    for batch in _batches(files, batch_bytes):
        frame = load(batch, keep_details=keep_details)
        to_parquet(frame, path, buckets=buckets, append=True)
        rows += len(frame)
    return rows


# --- reading -------------------------------------------------------------------------------------

Filters = Any
"""pyarrow filters: a ``pyarrow.compute.Expression`` or a list of ``(column, op, value)`` tuples
(a list of such lists for OR), as ``pandas.read_parquet`` takes them."""


def _expression(filters: Filters) -> Any:
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(filters)


def _categorical(column: pa.ChunkedArray, categories: Sequence[str], name: str) -> pd.Categorical:
    """Dictionary-encoded values decoded against the data set's categories (codes remapped,
    no string is materialised per row)."""
    index = pd.Index(list(categories), dtype="str")
    if column.num_chunks == 0 or len(column) == 0:
        return pd.Categorical.from_codes(np.zeros(0, dtype=np.int32), categories=index)
    array = (
        column.unify_dictionaries().combine_chunks() if column.num_chunks > 1 else column.chunk(0)
    )
    values = array.dictionary.to_pylist()
    remap = index.get_indexer(pd.Index(values, dtype="str"))
    if (remap < 0).any():
        raise LoadError(f"column {name}: values not in the data set's categories ({METADATA_FILE})")
    codes = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    lut = np.append(remap, -1)  # code -1 (NA) maps to -1
    return pd.Categorical.from_codes(lut[codes], categories=index)


def _pandas(column: pa.ChunkedArray, dtype: str) -> Any:
    if dtype == "string":
        return pd.array(column.to_pandas(), dtype="string")
    if dtype in ("Int16", "Int32", "Int64"):
        mask = pc.is_null(column).to_numpy(zero_copy_only=False)
        data = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(dtype.lower())
        return pd.arrays.IntegerArray(data, mask)
    if dtype == "float64":
        return column.to_numpy()
    if dtype == "bool":
        return pc.fill_null(column, False).to_numpy(zero_copy_only=False)
    if dtype == "boolean":
        return pd.arrays.BooleanArray(
            pc.fill_null(column, False).to_numpy(zero_copy_only=False),
            pc.is_null(column).to_numpy(zero_copy_only=False),
        )
    if dtype == "datetime64[ns, UTC]":
        return column.to_pandas().astype(dtype).array
    raise AssertionError(f"no conversion for dtype {dtype}")  # a COLUMNS entry without one


def _dataset(root: str, files: Sequence[str] | None = None) -> Any:
    source: Any = root if files is None else list(files)
    return ds.dataset(
        source,
        schema=_DATASET_SCHEMA,
        format="parquet",
        partitioning=PARTITIONING,
        partition_base_dir=root,
    )


def load_parquet(
    path: PathArg,
    *,
    columns: Sequence[str] | None = None,
    filters: Filters = None,
    buckets: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Read a data set written by ``to_parquet`` / ``jsonl_to_parquet`` into the frame ``load``
    gives: columns of ``analysis.COLUMNS`` (or ``columns``, in that order), their dtypes, the
    data set's categories, rows in the order they were written, a fresh RangeIndex.

    ``filters``: pyarrow filters on any column, or on the partition columns ``bucket`` and
    ``baseline`` (0 or 1). ``buckets``: read only these buckets (faster than a ``bucket``
    filter: other buckets' files are not even listed). LoadError when ``path`` is not such a
    data set; ValueError for a column not in COLUMNS or filters that do not apply.
    """
    root = os.fspath(path)
    info = read_info(root)
    names = list(COLUMNS) if columns is None else list(columns)
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise ValueError(f"columns not in analysis.COLUMNS: {unknown}")
    files = None
    if buckets is not None:
        files = sorted(
            os.path.join(directory, name)
            for flag in (0, 1)
            for bucket in buckets
            if os.path.isdir(
                directory := os.path.join(root, f"{BASELINE}={flag}", f"{BUCKET}={bucket}")
            )
            for name in os.listdir(directory)
            if name.endswith(".parquet")
        )
    dataset = _dataset(root, files)
    try:
        expression = _expression(filters)
        scanner = dataset.scanner(columns=[*names, ROW], filter=expression)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"filters {filters!r} do not apply to the data set: {first}") from exc
    try:
        table = scanner.to_table()
    except (pa.ArrowInvalid, OSError) as exc:
        raise LoadError(f"{root}: cannot read: {str(exc).splitlines()[0]}") from exc
    order = pc.sort_indices(table.column(ROW))
    table = table.take(order)
    data: dict[str, Any] = {}
    for name in names:
        dtype = COLUMNS[name][0]
        column = table.column(name)
        if dtype == "category":
            data[name] = _categorical(column, info.categories.get(name, []), name)
        else:
            data[name] = _pandas(column, dtype)
    return pd.DataFrame(data, index=pd.RangeIndex(table.num_rows), columns=names)


__all__ = [
    "BASELINE",
    "BUCKET",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BUCKETS",
    "METADATA_FILE",
    "DatasetInfo",
    "jsonl_to_parquet",
    "load_parquet",
    "read_info",
    "run_bucket",
    "to_parquet",
]
