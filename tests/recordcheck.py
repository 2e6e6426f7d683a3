"""Validate records against the committed JSON Schema; every test that makes a record calls this."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from probe.model import Record

SCHEMA_PATH = Path(__file__).parent.parent / "measurements/schema/ringprobe-record-v1.schema.json"


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def assert_valid(record: Record | dict[str, Any] | str) -> dict[str, Any]:
    """Assert the record (object, dict or JSON line) is schema-valid; return it as a dict."""
    if isinstance(record, Record):
        data = json.loads(record.to_json())
    elif isinstance(record, str):
        data = json.loads(record)
    else:
        data = record
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
    return data
