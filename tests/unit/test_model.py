"""The record dataclasses and the committed JSON Schema describe the same thing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from probe.model import (
    KNOWN_FAILURES,
    SCHEMA_VERSION,
    Failure,
    ProbeMeta,
    Record,
    TargetRef,
    is_known_failure,
    new_id,
)
from tests.recordcheck import SCHEMA_PATH, assert_valid


def _record(**changes: object) -> Record:
    base = Record(
        measurement_id=new_id(),
        run_id=new_id(),
        start_time="2026-11-28T12:00:00.000000Z",
        runtime=0.25,
        t0=0.0,
        probe=ProbeMeta(cc="RU", asn="AS12389", network_type="mobile", vantage="volunteer"),
        app="telegram",
        target=TargetRef("tg-dc2-443", "signaling", None, "149.154.167.51", 443, "tcp", "tcp"),
        check="tcp_connect",
        transaction_id=3,
        failure=Failure.GENERIC_TIMEOUT,
        timings={"connect": 0.1},
        software_version="0.1.0",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_schema_fields_match_dataclasses() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["required"]) == {f.name for f in dataclasses.fields(Record)}
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Record)}
    assert set(schema["properties"]["probe"]["properties"]) == {
        f.name for f in dataclasses.fields(ProbeMeta)
    }
    assert set(schema["properties"]["target"]["properties"]) == {
        f.name for f in dataclasses.fields(TargetRef)
    }
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_schema_failure_enum_is_the_vocabulary() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    listed = set(schema["properties"]["failure"]["anyOf"][1]["enum"])
    assert listed == KNOWN_FAILURES


def test_record_round_trips_and_validates() -> None:
    record = _record()
    data = assert_valid(record)
    assert data["failure"] == "generic_timeout_error"
    assert json.loads(record.to_json()) == record.to_dict()


def test_unknown_failure_prefix_is_valid() -> None:
    assert_valid(_record(failure="unknown_failure: OSError: [Errno 71] Protocol error"))
    assert is_known_failure("unknown_failure: x")
    assert not is_known_failure("blocked")


def test_schema_rejects_a_made_up_failure() -> None:
    data = _record().to_dict()
    data["failure"] = "blocked_by_censor"
    with pytest.raises(AssertionError, match="failure"):
        assert_valid(data)


def test_serialisation_is_deterministic() -> None:
    record = _record()
    assert (
        record.to_json()
        == _record(measurement_id=record.measurement_id, run_id=record.run_id).to_json()
    )
