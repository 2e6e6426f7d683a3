"""The collector on 127.0.0.1: validation, partitioned raw storage, idempotency, limits,
concurrent uploads, and a kill -9 in the middle of uploads followed by a restart."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.collector import (
    Collector,
    Limits,
    StorageError,
    Store,
    parse_batch,
    partition_dir,
)
from probe.collector.server import RateLimiter
from probe.model import Record
from tests.recordsets import run_records

ROOT = Path(__file__).resolve().parents[2]
NDJSON = "application/x-ndjson"
# A second loopback address for the client, so that a test can look for it in what the
# collector wrote (the server's own 127.0.0.1 appears in its start-up line).
CLIENT_ADDRESS = "127.0.0.2"


def _lines(records: list[Record]) -> list[bytes]:
    return [r.to_json().encode() for r in records]


def _body(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _id(line: bytes) -> str:
    value: str = json.loads(line)["measurement_id"]
    return value


def _raw_ids(data: Path) -> Counter[str]:
    """Every measurement id in the raw files (temp files are not records)."""
    ids: Counter[str] = Counter()
    for path in (data / "raw").rglob("*.jsonl"):
        ids.update(_id(line) for line in path.read_bytes().splitlines())
    return ids


def _index_ids(data: Path) -> Counter[str]:
    with sqlite3.connect(data / "index.sqlite") as db:
        return Counter(row[0] for row in db.execute("SELECT measurement_id FROM records"))


def _snapshot(data: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(data).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in (data / "raw").rglob("*")
        if p.is_file()
    }


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    content_type: str = NDJSON,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    async with session.post(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}
    ) as response:
        return response.status, await response.json(), response.headers


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A collector on 127.0.0.1 (generous rate limit): (records URL, data directory)."""
    data = tmp_path / "data"
    limits = Limits(max_body=2 * 1024 * 1024, max_records=1000, rate=1000, burst=1000)
    async with Collector(data, "127.0.0.1", 0, limits) as collector:
        host, port = collector.addresses[0]
        yield f"http://{host}:{port}/v1/records", data


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_valid_batch_is_stored_raw_and_partitioned(
    server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, data = server
    records = run_records(cc="RU") + run_records(
        cc="KZ", apps=("telegram",), start=datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
    )
    lines = _lines(records)
    status, answer, _ = await _post(session, url, _body(lines))
    assert status == 200, answer
    assert answer == {"stored": len(lines), "duplicates": 0, "ids": [_id(x) for x in lines]}
    files = list((data / "raw").rglob("*.jsonl"))
    assert len(files) == 5  # RU: four apps on one day; KZ: telegram on the next
    stored_lines: set[bytes] = set()
    for path in files:
        day, cc, app = (
            part.split("=", 1)[1] for part in path.parent.relative_to(data / "raw").parts
        )
        for line in path.read_bytes().splitlines():
            record = json.loads(line)
            assert (record["start_time"][:10], record["probe"]["cc"], record["app"]) == (
                day, cc, app,
            )  # fmt: skip
            stored_lines.add(line)
    assert stored_lines == set(lines)  # the client's bytes, unchanged
    assert _raw_ids(data) == _index_ids(data) == Counter(_id(x) for x in lines)
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]


async def test_duplicates_are_counted_and_nothing_is_rewritten(
    server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, data = server
    first, second = _lines(run_records(apps=("whatsapp",))), _lines(run_records(apps=("signal",)))
    status, answer, _ = await _post(session, url, _body(first))
    assert (status, answer["stored"]) == (200, len(first))
    before = _snapshot(data)
    status, answer, _ = await _post(session, url, _body(first))
    assert (status, answer["stored"], answer["duplicates"]) == (200, 0, len(first))
    assert answer["ids"] == [_id(x) for x in first]
    assert _snapshot(data) == before
    # Half old, half new, and one new record twice in the same batch.
    mixed = first[: len(first) // 2] + second + second[:1]
    status, answer, _ = await _post(session, url, _body(mixed))
    assert status == 200
    assert answer["stored"] == len(second)
    assert answer["duplicates"] == len(first) // 2 + 1
    after = _snapshot(data)
    assert {k: v for k, v in after.items() if k in before} == before
    assert _raw_ids(data) == _index_ids(data) == Counter(_id(x) for x in first + second)


@pytest.mark.parametrize(
    ("bad_line", "line", "reason"),
    [
        (b'{"measurement_id": "abc", ', 3, "not JSON"),
        (b"[1, 2, 3]", 3, "not a JSON object"),
        (b"", 3, "blank line"),
        ("schema", 3, "probe.cc"),
    ],
    ids=["broken-json", "array", "blank", "schema-invalid"],
)
async def test_a_bad_line_refuses_the_whole_batch(
    server: tuple[str, Path],
    session: aiohttp.ClientSession,
    bad_line: bytes | str,
    line: int,
    reason: str,
) -> None:
    url, data = server
    lines = _lines(run_records(apps=("telegram",)))[:5]
    if bad_line == "schema":
        record = json.loads(lines[2])
        record["probe"]["cc"] = "Russia"
        lines[2] = json.dumps(record).encode()
    else:
        assert isinstance(bad_line, bytes)
        lines[2] = bad_line
    status, answer, _ = await _post(session, url, _body(lines))
    assert status == 400
    assert answer["error"] == "bad_record"
    assert answer["line"] == line
    assert reason in answer["reason"]
    assert not _raw_ids(data)
    assert not _index_ids(data)


async def test_empty_batch_is_refused(
    server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, _ = server
    status, answer, _ = await _post(session, url, b"")
    assert status == 400
    assert "empty" in answer["reason"]
    assert "line" not in answer


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("application/json", {}),
        ("text/plain", {}),
        ("application/x-ndjson; charset=latin-1", {}),
        (NDJSON, {"Content-Encoding": "gzip"}),
    ],
)
async def test_wrong_content_type_or_encoding_is_415(
    server: tuple[str, Path],
    session: aiohttp.ClientSession,
    content_type: str,
    headers: dict[str, str],
) -> None:
    url, data = server
    body = _body(_lines(run_records(apps=("signal",)))[:3])
    status, answer, _ = await _post(session, url, body, content_type, headers)
    assert status == 415
    assert answer["error"] == "unsupported_media_type"
    assert answer["reason"]
    assert not _raw_ids(data)


async def test_jsonl_content_type_is_accepted(
    server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, _ = server
    lines = _lines(run_records(apps=("signal",)))[:3]
    status, answer, _ = await _post(session, url, _body(lines), "application/jsonl")
    assert (status, answer["stored"]) == (200, 3)


async def test_oversized_bodies_are_413(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    lines = _lines(run_records(apps=("whatsapp",)))
    body = _body(lines)
    limits = Limits(max_body=len(body) - 1, max_records=len(lines) - 1, rate=1000, burst=1000)
    async with Collector(tmp_path / "data", "127.0.0.1", 0, limits) as collector:
        host, port = collector.addresses[0]
        url = f"http://{host}:{port}/v1/records"
        # With a Content-Length: refused before the body is read.
        status, answer, _ = await _post(session, url, body)
        assert status == 413
        assert "Content-Length" in answer["reason"]

        # Chunked (no length): refused once the stream passes the limit.
        async def chunks() -> AsyncIterator[bytes]:
            for line in lines:
                yield line + b"\n"

        status, answer, _ = await _post(session, url, chunks())
        assert status == 413
        assert "larger than" in answer["reason"]
        # Under the byte limit, over the record limit.
        status, answer, _ = await _post(session, url, _body(lines[:-1] + [b"{}"] * 2))
        assert status == 413
        assert "records" in answer["reason"]
    assert not _raw_ids(tmp_path / "data")


async def test_rate_limit_is_429_with_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    limits = Limits(rate=0.1, burst=2)
    body = _body(_lines(run_records(apps=("signal",)))[:2])
    async with Collector(tmp_path / "data", "127.0.0.1", 0, limits) as collector:
        host, port = collector.addresses[0]
        url = f"http://{host}:{port}/v1/records"
        statuses = []
        for _ in range(3):
            status, answer, headers = await _post(session, url, body)
            statuses.append(status)
    assert statuses == [200, 200, 429]
    assert answer["error"] == "rate_limited"
    assert "per second" in answer["reason"]
    assert 1 <= int(headers["Retry-After"]) <= 10  # one token at 0.1/s: 10 s


def test_rate_limiter_refills_and_stays_bounded() -> None:
    limiter = RateLimiter(rate=2.0, burst=1, max_clients=3)
    assert limiter.take("a", now=0.0) == 0.0
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)
    assert limiter.take("a", now=1.0) == 0.0  # refilled
    for n in range(10):
        limiter.take(f"client{n}", now=2.0)
    assert len(limiter._buckets) == 3
    assert all(len(key) == 16 for key in limiter._buckets)  # hashes, not addresses


async def test_concurrent_uploads_store_every_id_once(
    server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, data = server
    pool = _lines(run_records(cc="RU") + run_records(cc="BY"))
    rng = random.Random(7)

    async def client(k: int) -> tuple[int, int, int]:
        """Eight overlapping slices in shuffled batches: (stored, duplicates, lines sent)."""
        start = k * len(pool) // 10
        mine = pool[start : start + len(pool) // 3]
        rng.shuffle(mine)
        totals = [0, 0, 0]
        for i in range(0, len(mine), 25):
            batch = mine[i : i + 25]
            status, answer, _ = await _post(session, url, _body(batch))
            assert status == 200, answer
            totals[0] += answer["stored"]
            totals[1] += answer["duplicates"]
            totals[2] += len(batch)
        return totals[0], totals[1], totals[2]

    results = await asyncio.gather(*(client(k) for k in range(8)))
    sent = {_id(x) for k in range(8) for x in pool[k * len(pool) // 10 :][: len(pool) // 3]}
    assert sum(r[0] for r in results) == len(sent)
    assert sum(r[0] + r[1] for r in results) == sum(r[2] for r in results)
    assert sum(r[1] for r in results) > 0  # the slices overlap
    raw = _raw_ids(data)
    assert set(raw) == sent
    assert max(raw.values()) == 1
    assert _index_ids(data) == raw


def _write_orphan(data: Path, lines: list[bytes], name: str) -> Path:
    """A complete raw file that a crash left unindexed (renamed, not yet committed)."""
    first = json.loads(lines[0])
    folder = data / partition_dir(first["start_time"][:10], first["probe"]["cc"], first["app"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    path.write_bytes(_body(lines))
    return path


def test_restart_reconciles_orphans_and_temp_files(tmp_path: Path) -> None:
    """The states a kill can leave, made by hand: a temp file, an unindexed complete file, and a
    file whose ids the index already has."""
    data = tmp_path / "data"
    lines = _lines(run_records(apps=("telegram",)))
    store = Store(data)
    store.put(parse_batch(_body(lines[:10])))
    store.close()
    orphan = _write_orphan(data, lines[10:20], "a" * 32)
    clash = _write_orphan(data, lines[5:12], "b" * 32)  # overlaps both
    tmp = orphan.parent / f".{'c' * 32}.jsonl.tmp"
    tmp.write_bytes(_body(lines[20:25])[:-30])  # a torn temp file

    store = Store(data)
    try:
        assert not tmp.exists()
        assert orphan.exists()
        assert not clash.exists()
        assert list((data / "quarantine").iterdir())
        assert _raw_ids(data) == _index_ids(data) == Counter(_id(x) for x in lines[:20])
        # The client retries the batch whose answer the crash swallowed: all duplicates.
        result = store.put(parse_batch(_body(lines[10:25])))
        assert (result.stored, result.duplicates) == (5, 10)
    finally:
        store.close()
    assert _raw_ids(data) == _index_ids(data) == Counter(_id(x) for x in lines[:25])


@contextmanager
def _index_locked(data: Path) -> Iterator[None]:
    blocker = sqlite3.connect(data / "index.sqlite", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


async def _start_collector(data: Path) -> tuple[asyncio.subprocess.Process, int, bytes]:
    """The collector as a subprocess: (process, port, what it logged while starting)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe.cli", "collector", "--data", str(data), "--port", "0",
        "--rate", "10000", "--burst", "10000", "--log-level", "debug",
        stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stderr is not None
    started = b""
    async with asyncio.timeout(20):
        while line := await process.stderr.readline():
            started += line
            found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                return process, int(found.group(1)), started
    raise AssertionError(f"the collector did not start (exit {await process.wait()})")


async def test_kill_9_during_uploads_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Three times: hammer the collector (a subprocess) from four clients, SIGKILL it at a random
    moment, restart it on the same directory; then retry everything not confirmed. Every id is
    then stored exactly once, and the client's address appears in no byte the collector wrote."""
    data = tmp_path / "data"
    pool = _lines([r for cc in ("RU", "BY", "KZ") for r in run_records(cc=cc)])
    rng = random.Random()
    # Shuffled, so that a batch spans many partitions: several files written (and fsynced)
    # before the index commits, a wide window for the kill to land in.
    rng.shuffle(pool)
    batches = [pool[i : i + 15] for i in range(0, len(pool), 15)]
    confirmed: set[str] = set()
    pending = list(range(len(batches)))
    logs = b""
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        for cycle in range(4):
            process, port, started = await _start_collector(data)
            logs += started
            url = f"http://127.0.0.1:{port}/v1/records"
            queue = list(pending)
            rng.shuffle(queue)
            failed: list[int] = []

            async def worker(
                url: str = url, queue: list[int] = queue, failed: list[int] = failed
            ) -> None:
                while queue:
                    n = queue.pop()
                    try:
                        status, answer, _ = await _post(session, url, _body(batches[n]))
                    except (aiohttp.ClientError, ConnectionError):
                        failed.append(n)
                        continue
                    assert status == 200, answer
                    assert answer["ids"] == [_id(x) for x in batches[n]]
                    confirmed.update(answer["ids"])

            workers = [asyncio.create_task(worker()) for _ in range(4)]
            if cycle < 3:
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                if cycle == 1:
                    # Hold the index's write lock: the batch being stored has its files renamed
                    # and waits to commit when the kill lands (the window reconciling is for).
                    with _index_locked(data):
                        await asyncio.sleep(0.3)
                        process.kill()
                        await process.wait()
                else:
                    process.kill()
            await asyncio.gather(*workers)
            if cycle == 3:
                process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            logs += await process.stderr.read()
            code = await process.wait()
            assert code == (-signal.SIGKILL if cycle < 3 else 0)
            pending = failed + queue
            if cycle == 3:
                assert not pending
    everything = {_id(x) for x in pool}
    assert confirmed == everything
    raw = _raw_ids(data)
    assert set(raw) == everything
    assert max(raw.values()) == 1
    assert sum(raw.values()) == len(everything)
    assert _index_ids(data) == raw
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]
    assert not (data / "quarantine").exists()
    assert b"reconciled raw/" in logs  # the kill in cycle 1 did leave an unindexed file
    assert CLIENT_ADDRESS.encode() not in logs
    for path in data.rglob("*"):
        if path.is_file():
            assert CLIENT_ADDRESS.encode() not in path.read_bytes(), path


async def test_malformed_http_is_logged_without_the_client_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with Collector(tmp_path / "data", "127.0.0.1", 0, Limits()) as collector:
        host, port = collector.addresses[0]
        for garbage in (
            b"\x16\x03\x01 not http\r\n\r\n",  # a TLS client on the plain port
            b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(CLIENT_ADDRESS, 0)
            )
            writer.write(garbage)
            await writer.drain()
            assert re.match(rb"HTTP/1\.[01] 400", await reader.read())
            writer.close()
            await writer.wait_closed()
    assert "Error handling request" in caplog.text  # aiohttp did log both
    assert CLIENT_ADDRESS not in caplog.text
    assert all(CLIENT_ADDRESS not in str(r.args) for r in caplog.records)


def test_one_collector_per_data_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    try:
        with pytest.raises(StorageError, match="in use by another collector"):
            Store(tmp_path / "data")
    finally:
        store.close()
    Store(tmp_path / "data").close()  # free again once the first one is closed


def test_cli_defaults_are_the_servers() -> None:
    from probe.cli import collector as collector_cli
    from probe.collector import server

    for name in ("HOST", "PORT", "MAX_BODY", "MAX_RECORDS", "RATE", "BURST"):
        assert getattr(collector_cli, f"DEFAULT_{name}") == getattr(server, f"DEFAULT_{name}")


def test_cli_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["collector", "--data", str(tmp_path / "data"), "--port", str(port)]
        )
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_sigterm_stops_the_collector_cleanly(tmp_path: Path) -> None:
    async def main() -> int:
        process, _, _ = await _start_collector(tmp_path / "data")
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        rest = await process.stderr.read()
        assert b"stopping; 0 records indexed" in rest
        return await process.wait()

    assert asyncio.run(main()) == 0
    assert (tmp_path / "data" / "index.sqlite").exists()
    assert os.listdir(tmp_path / "data" / "raw") == []
