"""analysis.ooni: real OONI measurements (measurements/ooni-samples) into the column contract.

Every expected value is read from the sample files themselves, never copied from a look at them.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.columns import COLUMNS
from analysis.errors import LoadError, LoadWarning
from analysis.load import concat
from analysis.ooni import VERDICT_KEYS, load_ooni, ooni_verdicts, run_id

SAMPLES = Path(__file__).resolve().parents[2] / "measurements" / "ooni-samples"
FILES = sorted(SAMPLES.glob("*.json"))


def read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def assert_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    for name, (dtype, _meaning) in COLUMNS.items():
        assert str(frame[name].dtype) == dtype, name


def test_the_samples_are_there() -> None:
    assert (SAMPLES / "METADATA").is_file()
    assert {read(p)["test_name"] for p in FILES} == {"whatsapp", "telegram", "signal"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_sample(path: Path) -> None:
    doc = read(path)
    tk = doc["test_keys"]
    frame = load_ooni(path)
    assert_contract(frame)

    assert (frame["source"] == "ooni").all()
    assert (frame["vantage"] == "ooni").all()
    assert (frame["source_file"] == str(path)).all()
    assert (frame["app"] == doc["test_name"]).all()
    assert (frame["run_id"] == run_id(doc)).all()
    assert (frame["probe_cc"] == doc["probe_cc"]).all()
    assert (frame["probe_asn"] == doc["probe_asn"]).all()
    assert (frame["software_version"] == f"{doc['software_name']} {doc['software_version']}").all()
    assert (frame["start_time"] == pd.Timestamp(doc["measurement_start_time"], tz="UTC")).all()
    assert frame["schema_version"].isna().all()
    assert frame["measurement_id"].is_unique
    assert (frame["ok"] == frame["failure"].isna()).all()
    assert (frame["transport"] == "tcp").all()
    assert frame["details"].isna().all()

    tcp = frame[frame["check"] == "tcp_connect"].reset_index(drop=True)
    entries = tk.get("tcp_connect") or []
    assert len(tcp) == len(entries)
    assert list(tcp["address"]) == [e["ip"] for e in entries]
    assert list(tcp["port"]) == [e["port"] for e in entries]
    assert list(tcp["ok"]) == [e["status"]["success"] for e in entries]
    assert list(tcp["target_id"]) == [f"ooni:{e['ip']}:{e['port']}" for e in entries]
    failures = [e["status"]["failure"] for e in entries if e["status"]["failure"]]
    assert list(tcp["failure"].dropna()) == failures

    tls = frame[frame["check"] == "tls_handshake"].reset_index(drop=True)
    handshakes = tk.get("tls_handshakes") or []
    assert len(tls) == len(handshakes)
    assert list(tls["host"]) == [h["server_name"] for h in handshakes]
    assert (tls["sni_kind"] == "real").all()
    assert list(tls["ok"]) == [h["failure"] is None for h in handshakes]
    assert list(tls["tls_version"].astype(object).fillna("")) == [
        h.get("tls_version") or "" for h in handshakes
    ]

    http = frame[frame["check"] == "http_get"].reset_index(drop=True)
    requests = tk.get("requests") or []
    assert len(http) == len(requests)
    assert list(http["ok"]) == [r["failure"] is None for r in requests]
    # OONI writes code 0 when no response came back.
    codes = [(r.get("response") or {}).get("code") or None for r in requests]
    assert [None if pd.isna(v) else int(v) for v in http["http_status"]] == codes
    for row, request in zip(http.itertuples(), requests, strict=True):
        url = request["request"].get("url")
        if url:
            assert url.split("/")[2].split(":")[0] in (row.host, row.address)
            assert row.expect == ("https" if url.startswith("https://") else "tcp")
        body = (request.get("response") or {}).get("body")
        if isinstance(body, str):
            assert row.body_bytes == len(body.encode())

    dns = frame[frame["check"] == "dns_system"]
    queries = tk.get("queries") or []
    assert set(dns["host"]) == {q["hostname"] for q in queries}
    assert len({q["hostname"] for q in queries}) <= len(dns) <= len(queries)
    assert (dns["resolver"] == "system").all()
    for host, rows in dns.groupby("host", observed=True):
        answered = {
            a.get("ipv4") or a.get("ipv6")
            for q in queries
            if q["hostname"] == host
            for a in q.get("answers") or []
        }
        listed = {a for text in rows["dns_addresses"] for a in text.split()}
        assert listed == answered
        all_failed = all(q["failure"] for q in queries if q["hostname"] == host)
        assert rows["ok"].all() != all_failed

    assert len(frame) == len(entries) + len(handshakes) + len(requests) + len(dns)


def test_roles_follow_the_catalog_rules() -> None:
    frame = load_ooni(SAMPLES)
    dns = frame[frame["check"] == "dns_system"]
    for host, role in zip(dns["host"].astype(str), dns["role"], strict=True):
        if host.endswith(".whatsapp.net") and host.startswith("e"):
            assert role == "signaling", host
        if host in ("web.whatsapp.com", "v.whatsapp.net", "web.telegram.org"):
            assert role == "web", host
        if host.endswith(".signal.org") or host.endswith("whispersystems.org"):
            assert role == ("web" if host.startswith("cdn") else "signaling"), host
    telegram = frame[(frame["app"] == "telegram") & (frame["check"] == "tcp_connect")]
    for address, role in zip(telegram["address"], telegram["role"], strict=True):
        if address.startswith("149.154.167.99"):  # web.telegram.org's address, not a DC
            assert pd.isna(role)
        else:
            assert role == "signaling"


def test_uptime_signal_org_loopback_counts_as_bogus() -> None:
    frame = load_ooni(SAMPLES / "signal_022.json")
    row = frame[frame["host"] == "uptime.signal.org"].iloc[0]
    loopback = [
        a["ipv4"]
        for q in read(SAMPLES / "signal_022.json")["test_keys"]["queries"]
        if q["hostname"] == "uptime.signal.org"
        for a in q["answers"]
        if a.get("ipv4", "").startswith("127.")
    ]
    assert row["dns_bogus"] == len(loopback) > 0


def test_old_format_telegram_without_urls() -> None:
    path = SAMPLES / "telegram_nourl.json"
    doc = read(path)
    assert "network_events" not in doc["test_keys"]
    assert all("url" not in r["request"] for r in doc["test_keys"]["requests"])
    frame = load_ooni(path)
    http = frame[frame["check"] == "http_get"]
    hosts = [r["request"]["headers"]["Host"] for r in doc["test_keys"]["requests"]]
    assert len(http) == len(hosts)
    for target, host in zip(http["target_id"], hosts, strict=True):
        if ":" in host or host.replace(".", "").isdigit():
            assert target.startswith(f"ooni:{host}")
        else:  # a name without a port: the scheme, hence the port, is unknown
            assert target == f"ooni:{host}"
    assert http["http_status"].isna().all()


def test_jsonl_and_gzip_load_the_same_rows(tmp_path: Path) -> None:
    lines = "".join(json.dumps(read(p)) + "\n" for p in FILES)
    plain = tmp_path / "2022.jsonl"
    plain.write_text(lines, encoding="utf-8")
    packed = tmp_path / "2022.jsonl.gz"
    packed.write_bytes(gzip.compress(lines.encode()))
    single = concat([load_ooni(p) for p in FILES]).drop(columns="source_file")
    for path in (plain, packed):
        frame = load_ooni(path)
        assert (frame["source_file"] == str(path)).all()
        pd.testing.assert_frame_equal(
            frame.drop(columns="source_file"), single, check_categorical=False
        )


def test_directory_and_glob_find_every_sample() -> None:
    expected = sum(len(load_ooni(p)) for p in FILES)
    assert len(load_ooni(SAMPLES)) == expected
    assert len(load_ooni(str(SAMPLES / "*.json"))) == expected


def test_other_tests_are_skipped_with_one_warning(tmp_path: Path) -> None:
    other = dict(read(FILES[0]), test_name="web_connectivity")
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(json.dumps(d) for d in (other, read(FILES[0]), other)) + "\n",
        encoding="utf-8",
    )
    with pytest.warns(LoadWarning, match=r"2 measurement\(s\) of OONI test 'web_connectivity'"):
        frame = load_ooni(path)
    assert len(frame) == len(load_ooni(FILES[0]))


def test_broken_input(tmp_path: Path) -> None:
    # A broken .json file is skipped with a warning; a broken line of a .jsonl too; the rest loads.
    broken = tmp_path / "broken.json"
    broken.write_text(FILES[0].read_text()[:500])
    lines = tmp_path / "lines.jsonl"
    lines.write_text("{oops\n" + json.dumps(read(FILES[0])) + "\n[1]\n")
    with pytest.warns(LoadWarning) as caught:
        frame = load_ooni([broken, lines])
    messages = [str(w.message) for w in caught]
    assert any(f"{broken}: not a JSON document" in m for m in messages)
    assert any(f"{lines}, line 1: malformed JSON" in m for m in messages)
    assert any(f"{lines}, line 3: not an OONI measurement" in m for m in messages)
    assert len(frame) == len(load_ooni(FILES[0]))
    with pytest.raises(LoadError):
        load_ooni(tmp_path / "missing.json")


def test_keep_details() -> None:
    path = SAMPLES / "whatsapp.json"
    frame = load_ooni(path, keep_details=True)
    assert frame["details"].notna().all()
    requests = read(path)["test_keys"]["requests"]
    kept = [json.loads(d) for d in frame.loc[frame["check"] == "http_get", "details"]]
    assert [k["request"]["url"] for k in kept] == [r["request"]["url"] for r in requests]
    tls = [json.loads(d) for d in frame.loc[frame["check"] == "tls_handshake", "details"]]
    assert all("peer_certificates" not in t for t in tls)


def test_run_id_is_stable_and_prefers_the_uid() -> None:
    doc = read(FILES[0])
    assert run_id(doc) == run_id(json.loads(json.dumps(doc)))
    assert run_id(dict(doc, measurement_uid="20221118104420.1_IT_signal_x")) == (
        "20221118104420.1_IT_signal_x"
    )


def test_ooni_verdicts_match_the_files() -> None:
    frame = ooni_verdicts(SAMPLES)
    assert len(frame) == len(FILES)
    assert str(frame["start_time"].dtype) == "datetime64[ns, UTC]"
    by_file = frame.set_index("source_file")
    for path in FILES:
        doc = read(path)
        row = by_file.loc[str(path)]
        assert row["run_id"] == run_id(doc)
        assert row["app"] == doc["test_name"]
        assert row["test_version"] == doc["test_version"]
        for key in VERDICT_KEYS[doc["test_name"]]:
            value = doc["test_keys"].get(key)
            if isinstance(value, list):
                value = " ".join(value)
            got = row[key]
            assert (pd.isna(got) and value is None) or got == value, (path.name, key)
        others = [k for app, keys in VERDICT_KEYS.items() if app != doc["test_name"] for k in keys]
        assert row[others].isna().all()


def test_ringprobe_and_ooni_rows_concatenate(tmp_path: Path) -> None:
    from analysis.load import load
    from tests.unit.test_load import SAMPLE, write

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = concat([load(write(tmp_path / "r.jsonl", SAMPLE)), load_ooni(SAMPLES)])
    assert_contract(both)
    assert set(both["source"]) == {"ringprobe", "ooni"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    [
        "ip",
        "port",
        "status",
        "t",
        "t0",
        "hostname",
        "answers",
        "failure",
        "server_name",
        "address",
        "tls_version",
        "request",
        "response",
        "url",
        "headers",
        "code",
        "body",
        "query_type",
        "engine",
        "transaction_id",
    ]
)
ENTRY = st.dictionaries(FIELDS, JSON, max_size=6)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    test_keys=st.fixed_dictionaries(
        {},
        optional={
            key: st.lists(ENTRY | JSON, max_size=4) | JSON
            for key in ("queries", "tcp_connect", "tls_handshakes", "requests")
        },
    ),
    top=st.dictionaries(
        st.sampled_from(
            [
                "probe_cc",
                "probe_asn",
                "measurement_start_time",
                "report_id",
                "annotations",
                "software_name",
                "input",
            ]
        ),
        JSON,
        max_size=4,
    ),
)
def test_odd_measurements_never_crash(
    tmp_path: Path, test_keys: dict[str, Any], top: dict[str, Any]
) -> None:
    doc = dict(read(SAMPLES / "whatsapp.json"), **top, test_keys=test_keys)
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        assert_contract(load_ooni(path, keep_details=True))
        ooni_verdicts(path)
