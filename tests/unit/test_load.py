"""analysis.load: ringprobe records (as the probe writes them) into the column contract."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.columns import COLUMNS
from analysis.errors import AnalysisError, LoadError, LoadWarning, SchemaVersionError
from analysis.load import SCHEMA_VERSIONS, concat, empty_frame, load
from probe.model import SCHEMA_VERSION, Failure, ProbeMeta, Record, TargetRef

PROBE = ProbeMeta(cc="RU", asn="AS12389", network_type="mobile", vantage="volunteer")
E1 = TargetRef(
    id="wa-e1-443",
    role="signaling",
    host="e1.whatsapp.net",
    address="157.240.0.1",
    port=443,
    transport="tcp",
    expect="tcp",
)
WEB = TargetRef(
    id="wa-web",
    role="web",
    host="web.whatsapp.com",
    address="157.240.0.2",
    port=443,
    transport="tcp",
    expect="https",
)


def record(n: int, check: str = "tcp_connect", **changes: Any) -> Record:
    fields: dict[str, Any] = {
        "measurement_id": f"{n:032x}",
        "run_id": "ab" * 16,
        "start_time": f"2026-11-28T10:00:{n % 60:02d}.123456Z",
        "runtime": 0.25,
        "t0": float(n),
        "probe": PROBE,
        "app": "whatsapp",
        "target": E1,
        "check": check,
        "transaction_id": n,
        "failure": None,
        "timings": {"connect": 0.125},
        "details": {},
        "software_version": "0.1.0",
    }
    fields.update(changes)
    return Record(**fields)


# One record of each check the probe writes today, with the details each one carries.
SAMPLE = [
    record(
        1,
        "dns_system",
        target=dataclasses.replace(E1, address=None),
        timings={"done": 0.01},
        details={
            "resolver": "system",
            "server": None,
            "addresses": ["157.240.0.1", "10.0.0.1"],
            "bogus": ["10.0.0.1"],
            "answers": [{"type": "A", "value": "157.240.0.1", "ttl": 60}],
            "queries": [{"type": "A", "attempts": []}],
            "consistent": False,
            "compared_with": ["doh"],
        },
    ),
    record(2, "tcp_connect", details={"address_source": "system"}),
    record(
        3,
        "tls_handshake",
        timings={"connect": 0.1, "handshake": 0.2},
        details={"sni": "e1.whatsapp.net", "sni_kind": "neutral", "tls_version": "TLSv1.3"},
    ),
    record(
        4,
        "http_get",
        target=WEB,
        timings={"connect": 0.1, "handshake": 0.2, "first_byte": 0.3, "done": 0.5},
        details={
            "sni": "web.whatsapp.com",
            "sni_kind": "real",
            "status": 200,
            "body_bytes": 5000,
            "throughput_bps": 80000,
            "headers": {"server": "x"},
        },
    ),
    record(
        5,
        "tcp_connect",
        failure=Failure.INTERRUPTED,
        timings={},
        details={"deadline_cut": True, "error": "deadline"},
    ),
]


def write(path: Path, records: list[Record], tail: str = "") -> Path:
    path.write_text("".join(r.to_json() + "\n" for r in records) + tail, encoding="utf-8")
    return path


def assert_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    for name, (dtype, _meaning) in COLUMNS.items():
        assert str(frame[name].dtype) == dtype, name


def test_schema_versions_cover_the_probe() -> None:
    assert SCHEMA_VERSION in SCHEMA_VERSIONS


def test_columns_dtypes_and_values(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", SAMPLE)
    frame = load(path)
    assert_contract(frame)
    assert len(frame) == len(SAMPLE)
    assert frame.index.equals(pd.RangeIndex(len(SAMPLE)))

    dns, tcp, tls, http, cut = (frame.iloc[i] for i in range(5))
    assert (frame["source"] == "ringprobe").all()
    assert (frame["source_file"] == str(path)).all()
    assert list(frame["measurement_id"]) == [r.measurement_id for r in SAMPLE]
    assert (frame["run_id"] == "ab" * 16).all()
    assert (frame["schema_version"] == SCHEMA_VERSION).all()
    assert (frame["software_version"] == "ringprobe 0.1.0").all()
    assert dns["start_time"] == pd.Timestamp("2026-11-28T10:00:01.123456Z")
    assert list(frame["t0"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (frame["runtime"] == 0.25).all()
    assert (frame["probe_cc"] == "RU").all()
    assert (frame["probe_asn"] == "AS12389").all()
    assert (frame["probe_network_type"] == "mobile").all()
    assert (frame["vantage"] == "volunteer").all()
    assert (frame["app"] == "whatsapp").all()
    assert list(frame["target_id"]) == ["wa-e1-443"] * 3 + ["wa-web", "wa-e1-443"]
    assert http["role"] == "web"
    assert http["host"] == "web.whatsapp.com"
    assert http["address"] == "157.240.0.2"
    assert pd.isna(dns["address"])
    assert (frame["port"] == 443).all()
    assert (frame["transport"] == "tcp").all()
    assert list(frame["expect"]) == ["tcp", "tcp", "tcp", "https", "tcp"]
    assert list(frame["check"]) == [r.check for r in SAMPLE]
    assert list(frame["transaction_id"]) == [1, 2, 3, 4, 5]
    assert list(frame["ok"]) == [True, True, True, True, False]
    assert cut["failure"] == Failure.INTERRUPTED
    assert frame["failure"].isna().sum() == 4

    assert tcp["t_connect"] == 0.125
    assert tls["t_handshake"] == 0.2
    assert http["t_first_byte"] == 0.3
    assert http["t_done"] == 0.5
    assert pd.isna(cut["t_connect"])

    assert dns["resolver"] == "system"
    assert dns["dns_addresses"] == "157.240.0.1 10.0.0.1"
    assert dns["dns_bogus"] == 1
    assert not dns["dns_consistent"]
    assert pd.isna(tcp["dns_bogus"])  # no bogus key: not a DNS observation
    assert pd.isna(tcp["dns_addresses"])
    assert pd.isna(tcp["dns_consistent"])
    assert tcp["address_source"] == "system"
    assert tls["sni_kind"] == "neutral"
    assert tls["tls_version"] == "TLSv1.3"
    assert http["sni_kind"] == "real"
    assert http["http_status"] == 200
    assert http["body_bytes"] == 5000
    assert http["throughput_bps"] == 80000.0
    assert list(frame["deadline_cut"]) == [False, False, False, False, True]
    assert frame["details"].isna().all()


def test_keep_details(tmp_path: Path) -> None:
    frame = load(write(tmp_path / "run.jsonl", SAMPLE), keep_details=True)
    assert_contract(frame)
    assert [json.loads(d) for d in frame["details"]] == [r.details for r in SAMPLE]


def test_gzip(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.jsonl", SAMPLE)
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = load(plain), load(packed)
    assert (b["source_file"] == str(packed)).all()
    pd.testing.assert_frame_equal(a.drop(columns="source_file"), b.drop(columns="source_file"))


def test_truncated_gzip_loads_what_it_holds(tmp_path: Path) -> None:
    data = gzip.compress(write(tmp_path / "a.jsonl", SAMPLE * 50).read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(LoadWarning) as caught:
        frame = load(cut)
    assert any("gzip stream ends early" in str(w.message) for w in caught)
    assert 0 < len(frame) < len(SAMPLE) * 50


def test_directory_tree_and_manifests(tmp_path: Path) -> None:
    expected = 0
    for day in range(3):
        for run in range(4):
            folder = tmp_path / f"day{day}" / f"run{run}"
            folder.mkdir(parents=True)
            records = [record(day * 100 + run * 10 + i) for i in range(run + 1)]
            write(folder / f"ringprobe-{run}.jsonl", records)
            (folder / f"ringprobe-{run}.manifest.json").write_text('{"status": "complete"}')
            (folder / "notes.txt").write_text("not records")
            expected += len(records)
    frame = load(tmp_path)
    assert_contract(frame)
    assert len(frame) == expected
    assert frame["source_file"].nunique() == 12
    assert not frame["source_file"].str.endswith("manifest.json").any()
    assert frame["measurement_id"].is_unique


def test_globs(tmp_path: Path) -> None:
    for name in ("a/x.jsonl", "a/b/y.jsonl", "c/z.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path / name, [record(len(name))])
    assert len(load(str(tmp_path / "**" / "*.jsonl"))) == 3
    assert len(load(str(tmp_path / "a" / "*.jsonl"))) == 1
    # A file reached twice (glob and directory) is read once.
    assert len(load([str(tmp_path / "a" / "*.jsonl"), tmp_path / "a"])) == 2


def test_duplicated_file_duplicates_rows_only(tmp_path: Path) -> None:
    one = write(tmp_path / "one.jsonl", SAMPLE)
    two = tmp_path / "two.jsonl"
    shutil.copy(one, two)
    single, both = load(one), load([one, two])
    assert len(both) == 2 * len(single)
    first = both.iloc[: len(single)].reset_index(drop=True)
    second = both.iloc[len(single) :].reset_index(drop=True)
    for half in (first, second):
        pd.testing.assert_frame_equal(
            half.drop(columns="source_file"),
            single.drop(columns="source_file"),
            check_categorical=False,
        )
    assert set(both["source_file"]) == {str(one), str(two)}


def test_truncated_last_line(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", SAMPLE, tail=SAMPLE[0].to_json()[:40])
    with pytest.warns(LoadWarning, match=rf"{path}, line {len(SAMPLE) + 1}: truncated"):
        frame = load(path)
    assert list(frame["measurement_id"]) == [r.measurement_id for r in SAMPLE]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", SAMPLE[:2], tail=SAMPLE[2].to_json())
    assert len(load(path)) == 3


@pytest.mark.parametrize(
    "junk",
    [
        "{not json",
        "[1, 2]",
        '{"a": 1}{"b": 2}',
        '{"schema_version": "one"}',
        '{"hello": "world"}',
        "\x00",
    ],
)
def test_malformed_middle_line(tmp_path: Path, junk: str) -> None:
    path = tmp_path / "run.jsonl"
    lines = [r.to_json() for r in SAMPLE]
    lines.insert(2, junk)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(LoadWarning, match=rf"{path}, line 3: "):
        frame = load(path)
    assert list(frame["measurement_id"]) == [r.measurement_id for r in SAMPLE]


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(
        SAMPLE[0].to_json().encode() + b"\n\xff\xfe\n" + SAMPLE[1].to_json().encode() + b"\n"
    )
    with pytest.warns(LoadWarning, match=rf"{path}, line 2: "):
        assert len(load(path)) == 2


def test_blank_lines_are_ignored_silently(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("\n \n" + SAMPLE[0].to_json() + "\r\n\t\n" + SAMPLE[1].to_json() + "\n")
    assert len(load(path)) == 2


def test_unknown_schema_version(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", [*SAMPLE[:2], record(9, schema_version=2), SAMPLE[2]])
    with pytest.raises(SchemaVersionError) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "version 2" in message
    assert "understands schema version(s) 1" in message
    assert isinstance(caught.value, AnalysisError)


def test_unknown_schema_version_found_on_the_slow_path(tmp_path: Path) -> None:
    # A newer record may change field types; the version is still what gets reported.
    path = tmp_path / "run.jsonl"
    newer = json.dumps({"schema_version": 3, "target": "a string in v3"})
    path.write_text(SAMPLE[0].to_json() + "\n{oops\n" + newer + "\n")
    with (
        pytest.warns(LoadWarning, match="line 2"),
        pytest.raises(SchemaVersionError, match="line 3"),
    ):
        load(path)


@pytest.mark.parametrize("pattern", ["missing.jsonl", "nowhere/*.jsonl", "empty-dir"])
def test_nothing_to_load_is_an_error(tmp_path: Path, pattern: str) -> None:
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(LoadError):
        load(tmp_path / pattern if "*" not in pattern else str(tmp_path / pattern))


def test_unreadable_gzip_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(LoadError, match="gzip"):
        load(path)


def test_empty_file_and_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    for frame in (load(empty), load([]), load(empty, keep_details=True), empty_frame()):
        assert_contract(frame)
        assert len(frame) == 0


def test_concat_keeps_categoricals(tmp_path: Path) -> None:
    a = load(write(tmp_path / "a.jsonl", SAMPLE[:2]))
    b = load(write(tmp_path / "b.jsonl", SAMPLE[2:]))
    both = concat([a, b])
    assert_contract(both)
    assert list(both["check"]) == [r.check for r in SAMPLE]


def test_many_files_large_lines(tmp_path: Path) -> None:
    # A line longer than pyarrow's default 1 MiB block must not break the reader.
    big = record(7, details={"error": "x" * (2 << 20)})
    path = write(tmp_path / "big.jsonl", [SAMPLE[0], big, SAMPLE[1]])
    assert list(load(path)["transaction_id"]) == [1, 7, 2]


JUNK = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), max_size=40
) | st.sampled_from(["{", "}", "[]", "null", "{}", '{"run_id": 1}', "1", '"x"', " "])


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=st.lists(st.one_of(st.integers(0, len(SAMPLE) - 1), JUNK), max_size=12))
def test_junk_never_crashes_and_valid_lines_survive(tmp_path: Path, layout: list[Any]) -> None:
    path = tmp_path / "fuzz.jsonl"
    lines = [SAMPLE[item].to_json() if isinstance(item, int) else item for item in layout]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    expected = [SAMPLE[item].measurement_id for item in layout if isinstance(item, int)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load(path)
    assert all(issubclass(w.category, LoadWarning) for w in caught)
    assert list(frame["measurement_id"]) == expected
    assert_contract(frame)
