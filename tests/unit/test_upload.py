"""The uploader against the real collector on 127.0.0.1 (a stub only where a collector must
misbehave on cue): batches, resume, retries, idempotency, opt-in delete, the allow-list, and
`ringprobe upload` / `ringprobe run --upload` from the command line."""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from probe.allowlist import AllowList
from probe.cli import cli
from probe.collector import Collector, Limits
from probe.errors import NotAllowedError
from probe.upload import FileResult, UploadOptions, state_path, upload
from tests.collectorproc import running_collector
from tests.recordsets import run_records

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = AllowList.from_sources(["127.0.0.0/8"], environ={})
FAST = UploadOptions(backoff_base=0.01)
OPEN = Limits(rate=1000, burst=1000)


def _write(path: Path, *ccs: str) -> list[str]:
    """A records file as `ringprobe run` writes it, one run per country; returns the ids."""
    records = [r for cc in ccs for r in run_records(cc=cc)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return [r.measurement_id for r in records]


def _index(data: Path) -> Counter[str]:
    with sqlite3.connect(data / "index.sqlite") as db:
        return Counter(row[0] for row in db.execute("SELECT measurement_id FROM records"))


def _batches(data: Path) -> int:
    with sqlite3.connect(data / "index.sqlite") as db:
        (n,) = db.execute("SELECT count(DISTINCT batch_id) FROM files").fetchone()
        return int(n)


def _state(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(state_path(path).read_text())
    return value


def _closed_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port: int = closed.getsockname()[1]
    return port


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The collector in this process on 127.0.0.1: (base URL, data directory)."""
    data = tmp_path / "collector"
    async with Collector(data, "127.0.0.1", 0, OPEN) as running:
        host, port = running.addresses[0]
        yield f"http://{host}:{port}", data


class Stub:
    """A collector that answers the scripted statuses first, then confirms like the real one."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.times: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.times.append(time.monotonic())
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response(
                {"error": "stub", "reason": f"scripted {status}"}, status=status, headers=headers
            )
        ids = [json.loads(line)["measurement_id"] for line in body.splitlines()]
        return web.json_response({"stored": len(ids), "duplicates": 0, "ids": ids})


async def _serve_stub(stub: Stub) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/records", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_batches_by_count_and_bytes(tmp_path: Path, collector: tuple[str, Path]) -> None:
    url, data = collector
    by_count, by_bytes = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ids = _write(by_count, "RU")
    ids += _write(by_bytes, "BY")
    (first,) = await upload([by_count], url, LOOPBACK, UploadOptions(batch_records=50))
    assert (first.ok, first.records, first.stored, first.duplicates) == (True, 285, 285, 0)
    assert _batches(data) == 6  # 285 records, 50 a batch
    size = by_bytes.stat().st_size
    (second,) = await upload([by_bytes], url, LOOPBACK, UploadOptions(batch_bytes=16 * 1024))
    assert second.ok
    assert _batches(data) - 6 >= size // (16 * 1024)
    assert _index(data) == Counter(ids)
    assert _state(by_count)["confirmed_lines"] == 285
    assert _state(by_count)["complete"] is True
    assert by_count.exists()  # nothing deleted unless asked


async def test_resume_after_the_collector_was_down_halfway(tmp_path: Path) -> None:
    """The collector lets three batches through, then rate-limits (the uploader waits on its
    Retry-After) and is stopped; the file fails, kept, with its progress. A rerun against the
    restarted collector sends only the rest."""
    data, records = tmp_path / "collector", tmp_path / "run.jsonl"
    ids = _write(records, "RU")
    options = UploadOptions(batch_records=20, attempts=3, backoff_base=0.01, max_time=20)
    async with Collector(data, "127.0.0.1", 0, Limits(rate=1, burst=3)) as running:
        host, port = running.addresses[0]
        url = f"http://{host}:{port}"
        task = asyncio.create_task(upload([records], url, LOOPBACK, options))
        for _ in range(1000):  # the state file another task writes; at most 10 s
            if state_path(records).exists() and _state(records)["confirmed_lines"] >= 60:
                break
            await asyncio.sleep(0.01)
    # Stopped, mid-file: the uploader's retries now find nobody.
    (failed,) = await task
    assert not failed.ok
    assert not failed.permanent
    assert "cannot reach the collector" in (failed.error or "")
    assert failed.confirmed_lines == 60
    assert _state(records)["confirmed_lines"] == 60
    assert records.exists()
    async with Collector(data, host, port, OPEN):
        (done,) = await upload([records], url, LOOPBACK, options)
    assert done.ok
    assert done.resumed_at == 60
    assert (done.records, done.stored, done.duplicates) == (225, 225, 0)
    assert _index(data) == Counter(ids)


async def test_retries_honour_retry_after_then_succeed(tmp_path: Path) -> None:
    records = tmp_path / "run.jsonl"
    _write(records, "RU")
    stub = Stub([(503, {}), (429, {"Retry-After": "1"}), (502, {})])
    runner, url = await _serve_stub(stub)
    try:
        (result,) = await upload([records], url, LOOPBACK, FAST)
    finally:
        await runner.cleanup()
    assert result.ok, result.error
    assert result.records == 285
    assert len(stub.times) == 4  # three failures, then the whole file in one batch
    assert stub.times[2] - stub.times[1] >= 0.99  # waited out the Retry-After


async def test_retries_are_bounded(tmp_path: Path) -> None:
    records = tmp_path / "run.jsonl"
    _write(records, "RU")
    always = Stub([(503, {})] * 100)
    runner, url = await _serve_stub(always)
    try:
        (result,) = await upload(
            [records], url, LOOPBACK, UploadOptions(attempts=3, backoff_base=0.01)
        )
        assert len(always.times) == 3
        assert not result.ok
        assert not result.permanent
        assert "HTTP 503: scripted 503 (gave up after 3 attempts)" in (result.error or "")
        # A Retry-After beyond the time left: give up now rather than wait.
        slow = UploadOptions(attempts=5, max_time=5, backoff_base=0.01)
        always.script = [(429, {"Retry-After": "3600"})]
        always.times.clear()
        (late,) = await upload([records], url, LOOPBACK, slow)
        assert len(always.times) == 1
        assert "limit" in (late.error or "")
    finally:
        await runner.cleanup()
    assert not state_path(records).exists() or _state(records)["confirmed_lines"] == 0
    assert records.exists()


async def test_a_refused_file_is_kept_and_the_others_go_on(
    tmp_path: Path, collector: tuple[str, Path]
) -> None:
    url, data = collector
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    _write(bad, "RU")
    lines = bad.read_text().splitlines()
    record = json.loads(lines[56])
    record["runtime"] = -1
    lines[56] = json.dumps(record)
    bad.write_text("\n".join(lines) + "\n")
    good_ids = _write(good, "BY")
    options = UploadOptions(batch_records=25, delete_after=True)
    refused, accepted = await upload([bad, good], url, LOOPBACK, options)
    assert not refused.ok
    assert refused.permanent
    assert (refused.error or "").startswith("HTTP 400: line 57: schema: at runtime")
    assert refused.confirmed_lines == 50  # the two batches before the bad one
    assert bad.exists()
    assert accepted.ok
    assert accepted.deleted
    assert sum(_index(data).values()) == 50 + len(good_ids)


async def test_reupload_is_idempotent(tmp_path: Path, collector: tuple[str, Path]) -> None:
    url, data = collector
    records = tmp_path / "run.jsonl"
    ids = _write(records, "RU", "KZ")
    (first,) = await upload([records], url, LOOPBACK, UploadOptions(batch_records=100))
    assert (first.stored, first.duplicates) == (570, 0)
    raw = {p: p.read_bytes() for p in (data / "raw").rglob("*.jsonl")}
    # With its state: nothing left to send.
    (again,) = await upload([records], url, LOOPBACK, UploadOptions(batch_records=100))
    assert (again.ok, again.records, again.resumed_at) == (True, 0, 570)
    # Without it (lost, or another machine): all sent again, all duplicates, nothing new.
    state_path(records).unlink()
    (resent,) = await upload([records], url, LOOPBACK, UploadOptions(batch_records=100))
    assert (resent.ok, resent.records, resent.stored, resent.duplicates) == (True, 570, 0, 570)
    assert {p: p.read_bytes() for p in (data / "raw").rglob("*.jsonl")} == raw
    assert _index(data) == Counter(ids)


async def test_delete_after_only_once_everything_is_confirmed(
    tmp_path: Path, collector: tuple[str, Path]
) -> None:
    url, _ = collector
    records = tmp_path / "run.jsonl"
    _write(records, "RU")
    options = UploadOptions(delete_after=True, attempts=2, backoff_base=0.01)
    (down,) = await upload([records], f"http://127.0.0.1:{_closed_port()}", LOOPBACK, options)
    assert not down.ok
    assert records.exists()
    # A run still writing: the unfinished last line is not sent, and the file is kept.
    with records.open("a") as out:
        out.write('{"measurement_id": "unfinished')
    (partial,) = await upload([records], url, LOOPBACK, options)
    assert not partial.ok
    assert "unfinished" in (partial.error or "")
    assert partial.confirmed_lines == 285
    assert records.exists()
    # The line finished (here: dropped): now everything is confirmed, and the file goes.
    records.write_text("".join(records.read_text().splitlines(keepends=True)[:-1]))
    (done,) = await upload([records], url, LOOPBACK, options)
    assert done.ok
    assert done.deleted
    assert done.records == 0  # all 285 were confirmed before
    assert not records.exists()
    assert not state_path(records).exists()


async def test_allow_list_refusal_sends_nothing(tmp_path: Path) -> None:
    records = tmp_path / "run.jsonl"
    _write(records, "RU")
    stub = Stub([])
    runner, url = await _serve_stub(stub)
    try:
        elsewhere = AllowList.from_sources(["192.0.2.0/24"], environ={})
        with pytest.raises(NotAllowedError, match=r"127\.0\.0\.1 is outside the allow-list"):
            await upload([records], url, elsewhere)
    finally:
        await runner.cleanup()
    assert stub.times == []
    assert not state_path(records).exists()


# --- the command line, against the collector as a subprocess ---------------------------------


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "collector"
    with running_collector(data) as url:
        yield url, data


def test_cli_upload_exit_statuses(tmp_path: Path, collector_process: tuple[str, Path]) -> None:
    url, data = collector_process
    results = tmp_path / "results"
    ids = _write(results / "ringprobe-1.jsonl", "RU") + _write(results / "ringprobe-2.jsonl", "BY")
    ok = CliRunner().invoke(
        cli, ["upload", str(results), "--to", url + "/", "--batch-records", "99"]
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("uploaded: 285 records sent (285 stored, 0 already there)") == 2
    assert _index(data) == Counter(ids)

    down = f"http://127.0.0.1:{_closed_port()}"
    failed = CliRunner().invoke(cli, ["upload", str(results), "--to", down, "--attempts", "1"])
    assert failed.exit_code == 1, failed.output
    assert "failed: cannot reach the collector" in failed.output
    assert "rerun to resume" in failed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upload", "{file}", "--to", "ftp://127.0.0.1/"], "http:// or https://"),
        (["upload", "{file}", "--to", "http://user:pw@127.0.0.1/"], "credentials"),
        (["upload", "/nonexistent.jsonl", "--to", "http://127.0.0.1:1"], "does not exist"),
        (["upload", "{dir}", "--to", "http://127.0.0.1:1"], "no records files"),
        (["upload", "{file}"], "--to"),
        (["upload", "{file}", "--to", "http://192.0.2.1:1"], "outside the allow-list"),
    ],
)
def test_cli_upload_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    records = tmp_path / "run.jsonl"
    records.write_text("")
    (tmp_path / "empty").mkdir()
    argv = [a.format(file=records, dir=tmp_path / "empty") for a in args]
    # Only loopback allowed (not the suite's environment, which allows 192.0.2.0/24 too).
    result = CliRunner(env={"RINGPROBE_ALLOW_NETS": ""}).invoke(
        cli, [*argv, "--allow-net", "127.0.0.0/8"]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_allow_list_refusal_sends_nothing(tmp_path: Path) -> None:
    """The collector's address outside RINGPROBE_ALLOW_NETS: exit 2, and not one connection."""
    records = tmp_path / "run.jsonl"
    _write(records, "RU")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = CliRunner(env={"RINGPROBE_ALLOW_NETS": "192.0.2.0/24"}).invoke(
            cli, ["upload", str(records), "--to", f"http://127.0.0.1:{port}"]
        )
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.exit_code == 2, result.output
    assert "127.0.0.1 is outside the allow-list" in result.output


def _loopback_catalog(tmp_path: Path) -> Path:
    """Two TCP control targets on loopback (as tests/unit/test_cli.py): one refused, one open."""
    catalog = tmp_path / "cat.toml"
    catalog.write_text(
        '[defaults]\napp = "control"\nrole = "control"\ntransport = "tcp"\nexpect = "tcp"\n'
        'source = "test"\ndate = "2026-11-28"\naddress = "127.0.0.1"\n\n'
        f'[[target]]\nid = "refused"\nport = {_closed_port()}\n'
    )
    return catalog


def _run(tmp_path: Path, url: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["run", "--targets", str(_loopback_catalog(tmp_path)), "--out", str(tmp_path / "out"),
         "--no-doh", "--timeout", "2", "--vantage", "lab", "--json", "--upload", url],
    )  # fmt: skip


def test_run_upload_sends_the_runs_records(
    tmp_path: Path, collector_process: tuple[str, Path]
) -> None:
    url, data = collector_process
    result = _run(tmp_path, url)
    assert result.exit_code == 0, result.output
    assert "ringprobe: uploaded 1 records to" in result.output
    (records,) = (tmp_path / "out").glob("*.jsonl")
    sent = [json.loads(line)["measurement_id"] for line in records.read_text().splitlines()]
    assert _index(data) == Counter(sent)
    assert _state(records)["complete"] is True


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A collector that refuses every batch (stdlib, in a thread: the CLI runs its own loop)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": "bad_record", "line": 1, "reason": "schema: at app: refused here"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_interrupted_run_uploads_what_it_wrote(
    tmp_path: Path, collector_process: tuple[str, Path]
) -> None:
    """Ctrl-C while a check waits on a silent server: the finished record is uploaded, and the
    run still exits 128 + SIGINT."""
    url, data = collector_process
    catalog = _loopback_catalog(tmp_path)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # accepts the connection, never answers the MTProto handshake
        catalog.write_text(
            catalog.read_text() + f'\n[[target]]\nid = "silent"\nport = {silent.getsockname()[1]}\n'
            'app = "telegram"\nrole = "signaling"\nexpect = "mtproto"\n'
        )
        out = tmp_path / "out"
        run = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "run", "--targets", str(catalog), "--out",
             str(out), "--no-doh", "--timeout", "60", "--vantage", "lab", "--upload", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            for _ in range(1000):  # at most 20 s for the refused target's record
                written = list(out.glob("*.jsonl"))
                if written and written[0].read_text().count("\n") >= 1:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("the run wrote no record")
            run.send_signal(signal.SIGINT)
            _, stderr = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 128 + signal.SIGINT, stderr
    (records,) = written
    sent = [json.loads(line)["measurement_id"] for line in records.read_text().splitlines()]
    assert sent
    assert f"ringprobe: uploaded {len(sent)} records to {url}".encode() in stderr
    assert _index(data) == Counter(sent)


def test_run_upload_failure_keeps_the_records_and_exits_3(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), _Refusing) as refusing:
        thread = threading.Thread(target=refusing.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{refusing.server_address[1]}"
        try:
            result = _run(tmp_path, url)
        finally:
            refusing.shutdown()
            thread.join(timeout=10)
    assert result.exit_code == 3, result.output
    (records,) = (tmp_path / "out").glob("*.jsonl")
    assert f"upload to {url} failed: HTTP 400: line 1: schema: at app: refused here" in (
        result.output
    )
    assert f"ringprobe upload {records} --to {url}" in result.output
    assert records.read_text().count("\n") == 1


def test_run_upload_refuses_an_address_outside_the_allow_list_before_running(
    tmp_path: Path,
) -> None:
    result = CliRunner(env={"RINGPROBE_ALLOW_NETS": "127.0.0.0/8"}).invoke(
        cli,
        ["run", "--targets", str(_loopback_catalog(tmp_path)), "--out", str(tmp_path / "out"),
         "--no-doh", "--vantage", "lab", "--upload", "http://192.0.2.7:8080"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "192.0.2.7 is outside the allow-list" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_defaults_are_the_librarys() -> None:
    from probe import upload as library
    from probe.cli import upload as upload_cli

    for name in ("BATCH_RECORDS", "BATCH_BYTES", "ATTEMPTS", "MAX_TIME"):
        assert getattr(upload_cli, f"DEFAULT_{name}") == getattr(library, f"DEFAULT_{name}")


def test_file_result_is_what_the_cli_reports() -> None:
    from probe.cli.upload import report

    runner = CliRunner()
    with runner.isolation() as (_, err, *_):
        report(FileResult(Path("x.jsonl"), error="HTTP 400: line 3: bad", permanent=True))
    assert "refused by the collector: HTTP 400: line 3: bad" in err.getvalue().decode()
    assert "file kept" in err.getvalue().decode()
