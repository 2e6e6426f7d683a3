"""Parse and validate one uploaded batch: JSON Lines, every line a schema-valid record.

Pure (bytes in, records or BadRecord out), so the server only moves bytes. The schema is the
committed one (measurements/schema in a checkout, probe/schema in a wheel), loaded once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from probe.collector.errors import BadRecord

SCHEMA_NAME = "ringprobe-record-v1.schema.json"
# Ours: how much of a bad line or a schema message goes back to the client.
MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class Line:
    """One valid record of a batch: its raw bytes (stored unchanged) and what the store needs."""

    raw: bytes
    """The line as the client sent it, without the newline."""
    measurement_id: str
    day: str
    """``YYYY-MM-DD`` of the record's start_time (UTC)."""
    cc: str
    app: str


def schema_path() -> Path:
    """The record schema: packaged in a wheel (pyproject force-include), else the checkout's."""
    packaged = resources.files("probe") / "schema" / SCHEMA_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "measurements" / "schema" / SCHEMA_NAME


@cache
def _validator() -> Any:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def parse_batch(body: bytes) -> list[Line]:
    """The batch's records in order; BadRecord (with the 1-based line) at the first bad line."""
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    if not lines:
        raise BadRecord(None, "empty batch: no records")
    validator = _validator()
    parsed: list[Line] = []
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            raise BadRecord(number, "blank line")
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRecord(number, f"not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise BadRecord(number, f"not a JSON object but {type(record).__name__}")
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            where = ".".join(str(part) for part in error.absolute_path) or "(record)"
            raise BadRecord(number, f"schema: at {where}: {error.message}"[:MAX_REASON_CHARS])
        parsed.append(
            Line(
                raw=raw,
                measurement_id=record["measurement_id"],
                day=record["start_time"][:10],
                cc=record["probe"]["cc"],
                app=record["app"],
            )
        )
    return parsed
