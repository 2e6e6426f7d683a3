"""Scale-out: the record table as partitioned Parquet (analysis.parquet), and the same verdicts
computed per partition on a local Dask cluster (analysis.scale) as by pandas on the whole table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dask.dataframe as dd
import pandas as pd
import pyarrow.dataset as ds
import pytest
from distributed import Client, LocalCluster

from analysis.errors import LoadError
from analysis.load import load
from analysis.parquet import (
    METADATA_FILE,
    PARTITIONING,
    jsonl_to_parquet,
    load_parquet,
    read_info,
    run_bucket,
    to_parquet,
)
from analysis.scale import aggregate_dask, partitions, read_dask, verdicts_dask
from analysis.shares import aggregate
from analysis.verdicts import verdicts
from probe.model import Failure, Record, Target
from tests.recordsets import (
    DROP,
    RST,
    START,
    CallTest,
    Fate,
    FlowFate,
    by_app,
    run_records,
    where,
    write_runs,
)

BUCKETS = 4  # few buckets for a few dozen runs: several runs share each one


def _ipv6(target: Target) -> bool:
    return target.address is not None and ":" in target.address


def _runs() -> list[list[Record]]:
    """A few dozen runs with varied fates over several networks and days: clean, blocked in
    different ways, throttled, call tests cut or lossy, IPv6 silent (which the baseline
    excuses), cut by the deadline, and baseline runs mixed in."""
    silent_v6 = where(_ipv6, DROP)
    throttled = Fate(real_bps=140_000.0, real_bytes=175_000, http_real=Failure.GENERIC_TIMEOUT)
    fates: list[object] = [
        None,
        silent_v6,
        by_app({"whatsapp": DROP}),
        by_app({"telegram": RST}),
        by_app({"whatsapp": Fate(dns=Failure.DNS_NXDOMAIN)}),
        by_app({"telegram": Fate(dns_bogus=True)}),
        by_app({"signal": Fate(tls_real=Failure.CONNECTION_RESET)}),
        by_app({"signal": throttled}),
        by_app({"whatsapp": Fate(tcp=Failure.INTERRUPTED)}),
    ]
    calls = [
        None,
        {"whatsapp": CallTest()},
        {"telegram": CallTest(call=FlowFate(cut_s=0.0), neutral=FlowFate(cut_s=0.0))},
        {"whatsapp": CallTest(call=FlowFate(loss=0.3), neutral=None)},
        {"telegram": CallTest(call=FlowFate(cut_s=3.0))},
    ]
    runs: list[list[Record]] = []
    for i in range(30):
        runs.append(
            run_records(
                fates[i % len(fates)],  # type: ignore[arg-type]
                calls=calls[i % len(calls)],
                asn=f"AS{12000 + i % 4}",
                cc=("RU", "IR", "TR")[i % 3],
                start=START + timedelta(days=i % 3, minutes=7 * i),
            )
        )
    for i in range(4):
        runs.append(
            run_records(
                silent_v6,
                vantage="baseline",
                cc="DE",
                asn="AS3320",
                start=START + timedelta(days=i % 3, hours=1),
            )
        )
    runs.append(list(runs[2]))  # one run read twice (copied files): its records count once
    return runs


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs(tmp_path_factory.mktemp("scale") / "runs", *_runs())


@pytest.fixture(scope="module")
def records(records_dir: Path) -> pd.DataFrame:
    return load(records_dir)


@pytest.fixture(scope="module")
def dataset(records: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parquet") / "records.parquet"
    to_parquet(records, path, buckets=BUCKETS)
    return path


@pytest.fixture(scope="module")
def user_baseline(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    runs = [
        run_records(
            by_app({"signal": Fate(tls_real=Failure.CONNECTION_RESET)}),
            vantage="baseline",
            cc="DE",
            asn="AS3320",
        )
        for _ in range(6)  # outweighs the 4 baseline runs in the data, where TLS works
    ]
    return load(write_runs(tmp_path_factory.mktemp("baseline"), *runs))


@pytest.fixture(scope="module", params=["processes", "threads"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """A local cluster of 2 single-threaded workers, closed after the module. Worker processes
    (exercising pickling) talk TCP on 127.0.0.1 only; in-process workers talk inproc (no socket
    at all) and run tasks under pytest's warning filters, so a warning in a task is an error."""
    processes = request.param == "processes"
    # inproc addresses take no host; TCP ones are bound to loopback.
    bind = {"host": "127.0.0.1"} if processes else {}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            **bind,
        ) as cluster,
        Client(cluster) as client,
    ):
        addresses = [cluster.scheduler_address, *client.scheduler_info()["workers"]]
        prefix = "tcp://127.0.0.1:" if processes else "inproc://"
        assert all(address.startswith(prefix) for address in addresses), addresses
        yield client


# --- Parquet -------------------------------------------------------------------------------------


def test_round_trip_preserves_the_frame(records: pd.DataFrame, dataset: Path) -> None:
    assert records["call_flow"].notna().any()  # call tests are in the data
    pd.testing.assert_frame_equal(load_parquet(dataset), records)


def test_round_trip_keeps_details_and_unused_categories(records_dir: Path, tmp_path: Path) -> None:
    frame = load(records_dir, keep_details=True)
    frame = frame[frame["app"] != "signal"].reset_index(drop=True)  # "signal" stays a category
    to_parquet(frame, tmp_path / "set", buckets=3)
    back = load_parquet(tmp_path / "set")
    pd.testing.assert_frame_equal(back, frame)
    assert "signal" in back["app"].cat.categories
    assert back["details"].notna().all()


def test_an_empty_table_round_trips(records: pd.DataFrame, tmp_path: Path) -> None:
    empty = records.iloc[:0].reset_index(drop=True)
    to_parquet(empty, tmp_path / "set")
    pd.testing.assert_frame_equal(load_parquet(tmp_path / "set"), empty)


def test_conversion_batch_by_batch_equals_one_load(
    records_dir: Path, records: pd.DataFrame, tmp_path: Path
) -> None:
    # One file per batch: categories and row numbers continue from batch to batch.
    rows = jsonl_to_parquet(records_dir, tmp_path / "set", buckets=BUCKETS, batch_bytes=1)
    assert rows == len(records)
    info = read_info(tmp_path / "set")
    assert info.parts == len(list(records_dir.glob("*.jsonl")))
    assert sum(info.counts.values()) == info.rows == len(records)
    pd.testing.assert_frame_equal(load_parquet(tmp_path / "set"), records)


def test_a_run_lands_in_exactly_one_partition(records: pd.DataFrame, dataset: Path) -> None:
    table = ds.dataset(dataset, format="parquet", partitioning=PARTITIONING).to_table(
        columns=["run_id", "vantage", "bucket", "baseline"]
    )
    frame = table.to_pandas()
    per_run = frame.groupby("run_id", observed=True)[["bucket", "baseline"]].nunique()
    assert len(per_run) == records["run_id"].nunique()
    assert (per_run == 1).all().all()
    # The bucket is the run id's stable hash; baseline records live apart.
    for run_id, bucket in frame.groupby("run_id", observed=True)["bucket"].first().items():
        assert bucket == run_bucket(str(run_id), BUCKETS)
    assert ((frame["baseline"] == 1) == (frame["vantage"] == "baseline")).all()
    assert len(set(frame["bucket"])) > 1  # the runs really are spread


def test_dask_partitions_hold_whole_runs(
    records: pd.DataFrame, dataset: Path, client: Client
) -> None:
    ddf = read_dask(dataset, columns=["run_id", "vantage"])
    specs = partitions(read_info(dataset))
    assert ddf.npartitions == len(specs)
    seen: dict[str, int] = {}
    for number in range(ddf.npartitions):
        part = ddf.get_partition(number).compute()
        runs = set(part["run_id"].astype(str))
        assert not runs & set(seen), "a run in two partitions"
        seen.update(dict.fromkeys(runs, number))
        # A partition holds baseline records or others, never both.
        assert part["vantage"].eq("baseline").nunique() <= 1
    assert set(seen) == set(records["run_id"].astype(str))


def test_columns_and_filters(records: pd.DataFrame, dataset: Path) -> None:
    got = load_parquet(
        dataset, columns=["run_id", "app", "ok"], filters=[("app", "==", "telegram")]
    )
    expected = records.loc[records["app"] == "telegram", ["run_id", "app", "ok"]]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    bucket = run_bucket(str(records["run_id"].iloc[0]), BUCKETS)
    by_filter = load_parquet(dataset, filters=[("bucket", "==", bucket)])
    pd.testing.assert_frame_equal(load_parquet(dataset, buckets=[bucket]), by_filter)
    assert set(by_filter["run_id"].astype(str)) >= {str(records["run_id"].iloc[0])}


def test_bad_inputs(records: pd.DataFrame, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not a ringprobe Parquet data set"):
        load_parquet(tmp_path)
    with pytest.raises(FileExistsError):
        to_parquet(records, dataset)
    with pytest.raises(ValueError, match="buckets"):
        to_parquet(records, dataset, buckets=BUCKETS + 1, append=True)
    with pytest.raises(ValueError, match="COLUMNS"):
        to_parquet(records[["run_id"]], tmp_path / "narrow")
    with pytest.raises(ValueError, match="dtype"):
        to_parquet(records.astype({"app": "string"}), tmp_path / "retyped")
    with pytest.raises(ValueError, match="columns not in"):
        load_parquet(dataset, columns=["no_such_column"])
    with pytest.raises(ValueError, match="filters"):
        load_parquet(dataset, filters=[("no_such_column", "==", 1)])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / METADATA_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(LoadError):
        load_parquet(damaged)


# --- Dask ----------------------------------------------------------------------------------------


def test_dask_verdicts_equal_pandas_verdicts(
    records: pd.DataFrame, dataset: Path, client: Client
) -> None:
    expected = verdicts(records)
    # The data exercise what crosses runs: the baseline excuses the silent IPv6 targets.
    assert (expected["excluded_by_baseline"] > 0).any()
    assert expected["vantage"].eq("baseline").any()
    assert expected["callflow_tests"].gt(0).any()
    assert expected["verdict"].nunique() >= 4
    pd.testing.assert_frame_equal(verdicts_dask(dataset), expected)
    # A Dask DataFrame of whole runs works as well as the path.
    pd.testing.assert_frame_equal(verdicts_dask(read_dask(dataset)), expected)


def test_dask_verdicts_with_a_baseline_argument(
    records: pd.DataFrame, dataset: Path, user_baseline: pd.DataFrame, client: Client
) -> None:
    expected = verdicts(records, user_baseline)
    assert not expected.equals(verdicts(records))  # the argument matters
    pd.testing.assert_frame_equal(verdicts_dask(dataset, user_baseline), expected)


def test_dask_aggregate_equals_pandas_aggregate(
    records: pd.DataFrame, dataset: Path, client: Client
) -> None:
    by = ["app", "asn", "day"]
    expected = aggregate(verdicts(records), by=by, min_runs=2)
    pd.testing.assert_frame_equal(aggregate_dask(dataset, by=by, min_runs=2), expected)


def test_a_run_split_across_partitions_is_refused(records: pd.DataFrame, client: Client) -> None:
    ddf = dd.from_pandas(records, npartitions=5, sort=False)
    with pytest.raises(ValueError, match="span partitions"):
        verdicts_dask(ddf)


def test_the_data_set_layout_is_documented(dataset: Path) -> None:
    names = sorted(os.listdir(dataset))
    assert names == [METADATA_FILE, "baseline=0", "baseline=1"]
    info = read_info(dataset)
    assert info.buckets == BUCKETS
    assert list(info.categories["app"])[:2] == ["whatsapp", "telegram"]  # first appearance
