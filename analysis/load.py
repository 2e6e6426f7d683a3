"""Load ringprobe records (JSON Lines, optionally gzipped) into the flat table of ``columns``.

The hot path is columnar: each file's bytes are parsed by pyarrow's C++ JSON reader against an
explicit schema that names only the fields the columns need (every other key, including the
heterogeneous rest of ``details``, is ignored by the reader), the per-file tables are concatenated,
and the columns are derived with Arrow compute and NumPy. Python touches single lines only when a
file is damaged (to find and skip the bad lines), for ``call_flow`` records (their nested per-bin
``details`` go to the ``call_flow`` column as JSON: a few records per run) and, on request, to keep
``details`` as JSON.
"""

from __future__ import annotations

import glob
import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.json as pj  # type: ignore[import-untyped]
from pandas.api.types import union_categoricals

from analysis.columns import COLUMNS
from analysis.errors import LoadError, SchemaVersionError, warn_load

PathArg = str | os.PathLike[str]
Paths = PathArg | Iterable[PathArg]

# Record schema versions this loader maps; probe.model.SCHEMA_VERSION must be one (a test checks).
SCHEMA_VERSIONS: Final = frozenset({1})

RECORD_SUFFIXES: Final = (".jsonl", ".jsonl.gz")
# A run's manifest sits next to its records and is not a record file.
MANIFEST_SUFFIX: Final = ".manifest.json"

_GZIP_MAGIC: Final = b"\x1f\x8b"
_GLOB_CHARS: Final = frozenset("*?[")
# JSON insignificant whitespace (RFC 8259 section 2): a line of only these is blank.
_WS_BYTES: Final = b" \t\n\r"
_MIN_BLOCK: Final = 1 << 20

# The check whose details (per-bin flow counts, docs/callflow.md) are kept whole, as JSON, in the
# ``call_flow`` column: the call-flow rules need its nested bins, which flat columns cannot hold.
CALL_FLOW_CHECK: Final = "call_flow"

_F64 = pa.float64()
_STR = pa.string()

# Only what the columns need; pyarrow ignores every other key at every level.
RECORD_SCHEMA: Final = pa.schema(
    [
        ("schema_version", pa.int64()),
        ("measurement_id", _STR),
        ("run_id", _STR),
        ("software_name", _STR),
        ("software_version", _STR),
        ("start_time", _STR),
        ("runtime", _F64),
        ("t0", _F64),
        (
            "probe",
            pa.struct([("cc", _STR), ("asn", _STR), ("network_type", _STR), ("vantage", _STR)]),
        ),
        ("app", _STR),
        (
            "target",
            pa.struct(
                [
                    ("id", _STR),
                    ("role", _STR),
                    ("host", _STR),
                    ("address", _STR),
                    ("port", pa.int64()),
                    ("transport", _STR),
                    ("expect", _STR),
                ]
            ),
        ),
        ("check", _STR),
        ("transaction_id", pa.int64()),
        ("failure", _STR),
        (
            "timings",
            pa.struct(
                [("connect", _F64), ("handshake", _F64), ("first_byte", _F64), ("done", _F64)]
            ),
        ),
        (
            "details",
            pa.struct(
                [
                    ("resolver", _STR),
                    ("addresses", pa.list_(_STR)),
                    ("bogus", pa.list_(_STR)),
                    ("consistent", pa.bool_()),
                    ("address_source", _STR),
                    ("sni_kind", _STR),
                    ("tls_version", _STR),
                    ("status", pa.int64()),
                    ("body_bytes", pa.int64()),
                    ("throughput_bps", _F64),
                    ("deadline_cut", pa.bool_()),
                    # trace records (probe.checks.trace): where the trigger met interference
                    ("trigger", _STR),
                    ("control", pa.bool_()),
                    ("interference", _STR),
                    ("localized_hop", pa.int64()),
                    ("localized_address", _STR),
                ]
            ),
        ),
    ]
)

# A line without these is not a record (a stray object, a pasted manifest): skipped, with a warning.
_REQUIRED: Final = (
    ("measurement_id",),
    ("run_id",),
    ("start_time",),
    ("app",),
    ("check",),
    ("target", "id"),
)


# --- paths ---------------------------------------------------------------------------------------


def _is_record_file(path: str, suffixes: Sequence[str], exclude: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return name.endswith(tuple(suffixes)) and not name.endswith(tuple(exclude))


def resolve_paths(
    paths: Paths,
    suffixes: Sequence[str] = RECORD_SUFFIXES,
    exclude: Sequence[str] = (MANIFEST_SUFFIX,),
) -> list[str]:
    """Expand files, directories (recursively) and glob patterns (``**`` too) into file paths.

    A file named explicitly is taken whatever its name; directories and patterns yield only files
    ending in one of ``suffixes`` and not in ``exclude``, sorted. A path given twice (or reached
    twice) is read once. LoadError when a path does not exist or a pattern or directory matches
    nothing.
    """
    items: list[PathArg] = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: dict[str, str] = {}

    def add(path: str) -> None:
        # Keyed by real path so the same file reached twice (path and glob, symlink) is read once.
        out.setdefault(os.path.realpath(path), path)

    def walk(directory: str) -> list[str]:
        found = [
            os.path.join(root, name)
            for root, _dirs, names in os.walk(directory)
            for name in names
            if _is_record_file(name, suffixes, exclude)
        ]
        return sorted(found)

    for item in items:
        text = os.fspath(item)
        if os.path.isfile(text):
            add(text)
        elif os.path.isdir(text):
            files = walk(text)
            if not files:
                raise LoadError(f"{text}: directory holds no {' or '.join(suffixes)} files")
            for path in files:
                add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            files = []
            for match in matches:
                if os.path.isdir(match):
                    files.extend(walk(match))
                elif _is_record_file(match, suffixes, exclude):
                    files.append(match)
            if not files:
                raise LoadError(f"{text}: pattern matches no {' or '.join(suffixes)} files")
            for path in files:
                add(path)
        else:
            raise LoadError(f"{text}: no such file or directory")
    return list(out.values())


def read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by its magic bytes, not its name).

    A gzip stream cut short (a copy interrupted) yields what it holds, with a warning; the
    truncated last line is then dropped by the line handling.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    # wbits 47 = gzip header auto-detected, max window (zlib manual, inflateInit2).
    inflater = zlib.decompressobj(wbits=47)
    try:
        data = inflater.decompress(raw)
        data += inflater.flush()
    except zlib.error as exc:
        raise LoadError(f"{path}: not a readable gzip file: {exc}") from exc
    if not inflater.eof:
        warn_load(f"{path}: gzip stream ends early; loading what it holds")
    return data


# --- lines ---------------------------------------------------------------------------------------


def _nonblank_lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """1-based numbers, start and end offsets of the lines holding more than JSON whitespace,
    and whether every such line is shaped like an object (first byte ``{``, last ``}``).

    Only each line's first and last byte is looked at, so the cost is per line, not per byte;
    the rare line with surrounding whitespace is stripped one by one.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 0x0A)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [arr.size]))
    keep = starts < ends
    starts, ends = starts[keep], ends[keep]
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, True
    numbers = np.flatnonzero(keep) + 1
    first = arr[starts]
    last = arr[ends - 1]
    # CRLF files: look past the carriage return rather than stripping every line in Python.
    crlf = (last == 0x0D) & (ends - starts >= 2)
    last = np.where(crlf, arr[np.maximum(ends - 2, 0)], last)
    shaped = (first == 0x7B) & (last == 0x7D)
    blank = np.zeros(starts.size, dtype=bool)
    objects = True
    for i in np.flatnonzero(~shaped).tolist():
        text = data[starts[i] : ends[i]].strip(_WS_BYTES)
        if not text:
            blank[i] = True
        elif not (text.startswith(b"{") and text.endswith(b"}")):
            objects = False
    solid = ~blank
    return numbers[solid], starts[solid], ends[solid], objects


def drop_truncated_tail(path: str, data: bytes) -> bytes:
    """Drop an unterminated last line unless it is a complete JSON object (the writer was killed
    mid-line, or the file is still being written)."""
    if not data or data.endswith(b"\n"):
        return data
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    if not tail.strip(_WS_BYTES):
        return data
    try:
        complete = isinstance(json.loads(tail), dict)
    except ValueError:
        complete = False
    if complete:
        return data + b"\n"
    line = data.count(b"\n", 0, cut) + 1
    warn_load(f"{path}, line {line}: truncated last line (no newline at end of file); skipped")
    return data[:cut]


@dataclass(slots=True)
class _Parsed:
    table: pa.Table
    lines: np.ndarray
    """1-based line number of each row of ``table`` in its file."""
    texts: list[bytes] | None = None
    """Each row's line, kept only when the caller wants ``details``."""
    flow_rows: np.ndarray | None = None
    """Rows of ``table`` that are call_flow records (None: none)."""
    flow_texts: list[bytes] | None = None
    """Their lines, in the same order."""


def _with_flows(parsed: _Parsed, line: Callable[[int], bytes]) -> _Parsed:
    """``parsed`` with its call_flow rows and their lines (``line(row)`` gives a row's bytes)."""
    table = parsed.table
    if table.num_rows == 0:
        return parsed
    is_flow = pc.fill_null(pc.equal(table.column("check"), CALL_FLOW_CHECK), False)
    if not pc.any(is_flow).as_py():
        return parsed
    rows = np.flatnonzero(is_flow.to_numpy(zero_copy_only=False))
    parsed.flow_rows = rows
    parsed.flow_texts = [line(int(row)) for row in rows]
    return parsed


def _read_table(data: bytes, max_line: int) -> pa.Table:
    block = max(_MIN_BLOCK, max_line + 2)  # a line longer than a block is an Arrow error
    return pj.read_json(
        io.BytesIO(data),
        read_options=pj.ReadOptions(block_size=block),
        parse_options=pj.ParseOptions(
            explicit_schema=RECORD_SCHEMA,
            unexpected_field_behavior="ignore",
            newlines_in_values=False,
        ),
    )


def _parse_file(path: str, data: bytes, keep_lines: bool) -> _Parsed:
    data = drop_truncated_tail(path, data)
    numbers, starts, ends, objects = _nonblank_lines(data)
    if numbers.size == 0:
        return _Parsed(RECORD_SCHEMA.empty_table(), numbers, [] if keep_lines else None)
    # pyarrow 26 crashes (SIGSEGV) on a file whose first value is a bare ``null``: only lines
    # shaped like objects ever reach it; anything else takes the line-by-line path.
    table = None
    if objects:
        try:
            table = _read_table(data, int((ends - starts).max()))
        except pa.ArrowInvalid:
            table = None
    # Two objects on one line parse as two rows: then rows and lines disagree, take the slow path.
    if table is None or table.num_rows != numbers.size:
        return _parse_slowly(path, data, numbers, starts, ends, keep_lines)
    texts = [data[s:e] for s, e in zip(starts, ends, strict=True)] if keep_lines else None
    return _with_flows(
        _Parsed(table, numbers, texts), lambda row: data[int(starts[row]) : int(ends[row])]
    )


def _parse_slowly(
    path: str,
    data: bytes,
    numbers: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    keep_lines: bool,
) -> _Parsed:
    """Find the lines the fast path choked on, warn once for each, and parse the rest."""
    good: list[bytes] = []
    good_numbers: list[int] = []
    for number, start, end in zip(numbers.tolist(), starts.tolist(), ends.tolist(), strict=True):
        text = data[start:end]
        try:
            value = json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            _warn_line(path, number, f"malformed JSON ({exc})")
            continue
        if not isinstance(value, dict):
            _warn_line(path, number, f"a JSON {type(value).__name__}, not a record")
            continue
        _check_version(path, number, value.get("schema_version"))
        good.append(text)
        good_numbers.append(number)
    try:
        table = _read_lines(good)
    except pa.ArrowInvalid:
        # Valid JSON whose field types are not schema v1's: find those lines one by one.
        checked: list[bytes] = []
        checked_numbers: list[int] = []
        for number, text in zip(good_numbers, good, strict=True):
            try:
                _read_lines([text])
            except pa.ArrowInvalid as exc:
                _warn_line(path, number, f"field types do not match the record schema ({exc})")
                continue
            checked.append(text)
            checked_numbers.append(number)
        good, good_numbers = checked, checked_numbers
        table = _read_lines(good)
    parsed = _Parsed(table, np.asarray(good_numbers, dtype=np.int64), good if keep_lines else None)
    return _with_flows(parsed, lambda row: good[row])


def _read_lines(lines: list[bytes]) -> pa.Table:
    if not lines:
        return RECORD_SCHEMA.empty_table()
    return _read_table(b"\n".join(lines) + b"\n", max(len(line) for line in lines))


def _warn_line(path: str, line: int, why: str) -> None:
    warn_load(f"{path}, line {line}: {why}; skipped")


def _check_version(path: str, line: int, version: object) -> None:
    # Only an integer is a version: a newer one is data we cannot read; anything else is a stray
    # object, skipped later as not a record.
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version not in SCHEMA_VERSIONS
    ):
        raise SchemaVersionError(path, line, version, SCHEMA_VERSIONS)


def _field(table: pa.Table, names: Sequence[str]) -> pa.ChunkedArray:
    column = table.column(names[0])
    for name in names[1:]:
        column = pc.struct_field(column, name)
    return column


def _validate(path: str, parsed: _Parsed) -> _Parsed:
    """Raise on an unknown schema version; drop (with a warning) rows that are not records."""
    table = parsed.table
    if table.num_rows == 0:
        return parsed
    version = table.column("schema_version")
    known = pc.is_in(version, value_set=pa.array(sorted(SCHEMA_VERSIONS), pa.int64()))
    unknown = pc.and_(pc.is_valid(version), pc.invert(known))
    if pc.any(unknown).as_py():
        row = int(np.flatnonzero(unknown.to_numpy(zero_copy_only=False))[0])
        raise SchemaVersionError(
            path, int(parsed.lines[row]), version[row].as_py(), SCHEMA_VERSIONS
        )
    missing = pc.is_null(version)
    for names in _REQUIRED:
        missing = pc.or_(missing, pc.is_null(_field(table, names)))
    bad = missing.to_numpy(zero_copy_only=False)
    if not bad.any():
        return parsed
    for row in np.flatnonzero(bad).tolist():
        absent = [
            ".".join(n)
            for n in (("schema_version",), *_REQUIRED)
            if not _field(table, n)[row].is_valid
        ]
        _warn_line(path, int(parsed.lines[row]), f"not a ringprobe record (no {', '.join(absent)})")
    keep = ~bad
    texts = parsed.texts
    if texts is not None:
        texts = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
    out = _Parsed(table.filter(pa.array(keep)), parsed.lines[keep], texts)
    if parsed.flow_rows is not None and parsed.flow_texts is not None:
        kept = keep[parsed.flow_rows]
        renumber = np.cumsum(keep) - 1
        out.flow_rows = renumber[parsed.flow_rows[kept]]
        out.flow_texts = [t for t, k in zip(parsed.flow_texts, kept.tolist(), strict=True) if k]
    return out


# --- columns -------------------------------------------------------------------------------------


def _ints(values: pa.Array | pa.ChunkedArray, dtype: str) -> pd.api.extensions.ExtensionArray:
    """A nullable pandas integer array; values outside the dtype's range become NA."""
    info = np.iinfo(dtype.lower())
    values = values.cast(pa.int64())
    valid = pc.and_(pc.greater_equal(values, info.min), pc.less_equal(values, info.max))
    mask = pc.invert(pc.fill_null(valid, False)).to_numpy(zero_copy_only=False)
    data = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
    return pd.arrays.IntegerArray(np.where(mask, 0, data).astype(dtype.lower()), mask)


def _categories(values: Iterable[Any] | pa.Array) -> pd.Index:
    """Categories always of pandas' default string dtype, so frames concatenate as categoricals."""
    if isinstance(values, pa.Array):
        values = values.to_pylist()  # the distinct values only: a handful per column
    index: pd.Index = pd.Index(list(values), dtype="str")
    return index


def _column(values: Any, dtype: str, n: int) -> Any:
    """One column of the table, from an Arrow array, a list, or a scalar repeated n times."""
    if isinstance(values, pd.Categorical):
        return values
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        if isinstance(values, list):
            values = pa.array(values)
        else:
            values = pa.nulls(n) if values is None else pa.array([values] * n if n else [])
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if dtype == "category":
        encoded = values.cast(_STR).dictionary_encode()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        return pd.Categorical.from_codes(codes, categories=_categories(encoded.dictionary))
    if dtype == "string":
        return pd.array(values.cast(_STR).to_pandas(), dtype="string")
    if dtype in ("Int16", "Int32", "Int64"):
        return _ints(values, dtype)
    if dtype == "float64":
        return values.cast(_F64).to_numpy(zero_copy_only=False)
    if dtype == "bool":
        return pc.fill_null(values.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)
    if dtype == "boolean":
        flags = values.cast(pa.bool_())
        return pd.arrays.BooleanArray(
            pc.fill_null(flags, False).to_numpy(zero_copy_only=False),
            pc.is_null(flags).to_numpy(zero_copy_only=False),
        )
    if dtype == "datetime64[ns, UTC]":
        text = pd.Series(values.cast(_STR).to_pandas(), dtype=object)
        stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        return stamps.astype("datetime64[ns, UTC]").array
    raise AssertionError(f"no conversion for dtype {dtype}")  # a COLUMNS entry without one


def build_frame(data: Mapping[str, Any], n: int) -> pd.DataFrame:
    """The table of ``COLUMNS`` from per-column values (Arrow arrays, lists, scalars or None);
    a column not in ``data`` is all NA. Shared by the ringprobe and OONI loaders."""
    unknown = set(data) - set(COLUMNS)
    if unknown:
        raise AssertionError(f"columns not in the contract: {sorted(unknown)}")
    columns = {
        name: _column(data.get(name), dtype, n) for name, (dtype, _meaning) in COLUMNS.items()
    }
    frame = pd.DataFrame(columns, index=pd.RangeIndex(n))
    return frame


def empty_frame() -> pd.DataFrame:
    """A table with no rows and the contract's columns and dtypes."""
    return build_frame({}, 0)


def _record_columns(table: pa.Table) -> dict[str, Any]:
    details = table.column("details")

    def detail(name: str) -> pa.ChunkedArray:
        return pc.struct_field(details, name)

    failure = table.column("failure")
    cut = detail("deadline_cut")
    software = pc.binary_join_element_wise(
        pc.fill_null(table.column("software_name"), "ringprobe"),
        pc.fill_null(table.column("software_version"), ""),
        " ",
    )
    return {
        "measurement_id": table.column("measurement_id"),
        "run_id": table.column("run_id"),
        "schema_version": table.column("schema_version"),
        "software_version": pc.utf8_rtrim_whitespace(software),
        "start_time": table.column("start_time"),
        "runtime": table.column("runtime"),
        "t0": table.column("t0"),
        "probe_cc": _field(table, ("probe", "cc")),
        "probe_asn": _field(table, ("probe", "asn")),
        "probe_network_type": _field(table, ("probe", "network_type")),
        "vantage": _field(table, ("probe", "vantage")),
        "app": table.column("app"),
        "target_id": _field(table, ("target", "id")),
        "role": _field(table, ("target", "role")),
        "host": _field(table, ("target", "host")),
        "address": _field(table, ("target", "address")),
        "port": _field(table, ("target", "port")),
        "transport": _field(table, ("target", "transport")),
        "expect": _field(table, ("target", "expect")),
        "check": table.column("check"),
        "transaction_id": table.column("transaction_id"),
        "failure": failure,
        "ok": pc.is_null(failure),
        "t_connect": _field(table, ("timings", "connect")),
        "t_handshake": _field(table, ("timings", "handshake")),
        "t_first_byte": _field(table, ("timings", "first_byte")),
        "t_done": _field(table, ("timings", "done")),
        "resolver": detail("resolver"),
        "dns_addresses": pc.binary_join(detail("addresses"), " "),
        "dns_bogus": pc.list_value_length(detail("bogus")),
        "dns_consistent": detail("consistent"),
        "address_source": detail("address_source"),
        "sni_kind": detail("sni_kind"),
        "tls_version": detail("tls_version"),
        "http_status": detail("status"),
        "body_bytes": detail("body_bytes"),
        "throughput_bps": detail("throughput_bps"),
        # The runner writes the key only when the deadline cut a check, so absent means not cut.
        "deadline_cut": pc.fill_null(cut, False),
        "trace_trigger": detail("trigger"),
        "trace_control": detail("control"),
        "trace_interference": detail("interference"),
        "trace_localized_hop": detail("localized_hop"),
        "trace_localized_address": detail("localized_address"),
    }


def _details_json(texts: list[bytes]) -> list[str | None]:
    out: list[str | None] = []
    for text in texts:
        details = json.loads(text).get("details")
        out.append(None if details is None else json.dumps(details, sort_keys=True))
    return out


def _call_flow_column(
    rows: list[np.ndarray], texts: list[bytes], n: int
) -> list[str | None] | None:
    """The ``call_flow`` column: call_flow records' details as JSON, NA elsewhere (None: no
    call_flow record at all, so the column is all NA at no cost)."""
    if not texts:
        return None
    out: list[str | None] = [None] * n
    for row, details in zip(np.concatenate(rows).tolist(), _details_json(texts), strict=True):
        out[row] = details
    return out


# --- public --------------------------------------------------------------------------------------


def load(paths: Paths, *, keep_details: bool = False) -> pd.DataFrame:
    """Load ringprobe records into one table with exactly the columns of ``analysis.columns``.

    ``paths``: a file, a directory (walked recursively for ``*.jsonl`` and ``*.jsonl.gz``; run
    manifests are ignored), a glob pattern (``**`` included), or any iterable of these. Damaged
    input never stops a load: a truncated last line, a malformed line or a line that is not a
    record is skipped with a LoadWarning naming file and line. Raises LoadError for a path that
    does not exist, matches nothing or cannot be read, and SchemaVersionError for a record of an
    unknown schema version. ``keep_details=True`` fills the ``details`` column (JSON, keys sorted;
    slower: it parses every line a second time in Python).
    """
    files = resolve_paths(paths)
    tables: list[pa.Table] = []
    counts: list[int] = []
    texts: list[bytes] = []
    flow_rows: list[np.ndarray] = []
    flow_texts: list[bytes] = []
    for path in files:
        parsed = _validate(path, _parse_file(path, read_bytes(path), keep_details))
        if parsed.flow_rows is not None and parsed.flow_texts is not None:
            flow_rows.append(parsed.flow_rows + sum(counts))
            flow_texts.extend(parsed.flow_texts)
        tables.append(parsed.table)
        counts.append(parsed.table.num_rows)
        if parsed.texts is not None:
            texts.extend(parsed.texts)
    n = sum(counts)
    if n == 0:
        return empty_frame()
    table = pa.concat_tables(tables)
    data = _record_columns(table)
    data["source"] = "ringprobe"
    # One category per file; codes repeat per row, so no per-row string is built.
    data["source_file"] = pd.Categorical.from_codes(
        np.repeat(np.arange(len(files)), counts), categories=_categories(files)
    )
    data["call_flow"] = _call_flow_column(flow_rows, flow_texts, n)
    if keep_details:
        data["details"] = _details_json(texts)
    return build_frame(data, n)


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Stack loaded tables (e.g. ``load(...)`` and ``load_ooni(...)``) keeping categoricals:
    plain ``pandas.concat`` turns categoricals with different categories into strings."""
    frames = list(frames)
    if not frames:
        return empty_frame()
    out = pd.concat(frames, ignore_index=True)
    for name, (dtype, _meaning) in COLUMNS.items():
        if dtype == "category":
            out[name] = union_categoricals([frame[name].array for frame in frames])
    return out


__all__ = [
    "CALL_FLOW_CHECK",
    "RECORD_SCHEMA",
    "SCHEMA_VERSIONS",
    "build_frame",
    "concat",
    "empty_frame",
    "load",
]
