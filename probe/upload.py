"""Send records files to a collector (docs/upload.md): batches, retries, resume, opt-in delete.

Each records file is read from where its last confirmed batch ended (the sidecar state file
``<file>.upload.json``, written atomically after every confirmed batch) and sent in batches of
whole lines to ``<URL>/v1/records``. A transient failure (connection error, timeout, 408, 429,
5xx) is retried with exponential backoff and full jitter, honouring Retry-After, within bounded
attempts per batch and time per file; any other 4xx stops that file for good, with the collector's
reason. A batch sent but not confirmed is simply sent again: the collector is idempotent by
measurement id. Nothing is deleted unless asked, and then only once every record is confirmed.

The collector's address passes the allow-list first, as every address the probe contacts does
(probe.allowlist; a host name is resolved through the checks' guarded resolver and pinned), so a
refused upload sends nothing.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp

from probe.allowlist import AllowList
from probe.errors import OptionError

RECORDS_PATH = "/v1/records"
# The collector's preferred name for JSON Lines (probe/collector/server.py CONTENT_TYPES).
CONTENT_TYPE = "application/x-ndjson"
STATE_SUFFIX = ".upload.json"
STATE_VERSION = 1
# Ours: well under the collector's default limits (4 MiB, 10 000 records a batch).
DEFAULT_BATCH_RECORDS = 500
DEFAULT_BATCH_BYTES = 1024 * 1024
# Ours: six tries span about 15 s of backoff before Retry-After; enough for a collector restart.
DEFAULT_ATTEMPTS = 6
DEFAULT_MAX_TIME = 300.0
# Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# Ours: one request (a 1 MiB batch, stored with two fsyncs) takes well under this.
DEFAULT_REQUEST_TIMEOUT = 60.0
# RFC 9110 §15.5.9 (408 Request Timeout) and §15.5.1 of RFC 6585 (429) invite a retry; 5xx too.
RETRY_STATUSES = frozenset({408, 429})
# Ours: how much of a collector's error body goes into a message.
MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """How to upload; the defaults are the command's."""

    batch_records: int = DEFAULT_BATCH_RECORDS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    attempts: int = DEFAULT_ATTEMPTS
    """Tries per batch (the first one included)."""
    max_time: float = DEFAULT_MAX_TIME
    """Seconds one file may take, waits included; a longer wait gives up instead."""
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    delete_after: bool = False
    """Delete a records file (and its state file) once every record is confirmed."""
    ca_file: str | None = None
    """Extra certificate authorities to trust for an https:// collector."""
    backoff_base: float = BACKOFF_BASE


@dataclass(slots=True)
class FileResult:
    """What happened to one records file."""

    path: Path
    ok: bool = False
    """Every record of the file is confirmed."""
    records: int = 0
    """Records sent and confirmed by this upload."""
    stored: int = 0
    duplicates: int = 0
    confirmed_lines: int = 0
    """Lines of the file confirmed so far (this upload and earlier ones)."""
    resumed_at: int = 0
    """Lines already confirmed by an earlier upload when this one started."""
    deleted: bool = False
    error: str | None = None
    permanent: bool = False
    """The collector refused the file (a 4xx other than 408/429): retrying will not help."""


@dataclass(slots=True)
class _State:
    url: str
    confirmed_lines: int = 0
    confirmed_bytes: int = 0
    stored: int = 0
    duplicates: int = 0
    complete: bool = False
    updated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class _Failed(Exception):
    """A batch could not be confirmed; ``permanent`` when the collector refused it."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def parse_collector_url(text: str) -> str:
    """The collector's base URL (http or https, a host, optional port and path), without a
    trailing slash; OptionError says what is wrong."""
    value = text.strip()
    if any(c.isspace() or not c.isprintable() for c in value):
        raise OptionError(f"collector URL {text!r}: contains white space or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port raises ValueError on a bad one
    except ValueError as exc:
        raise OptionError(f"collector URL {text!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OptionError(f"collector URL {text!r}: must start with http:// or https://")
    if not parts.hostname:
        raise OptionError(f"collector URL {text!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise OptionError(f"collector URL {text!r}: credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise OptionError(f"collector URL {text!r}: give the base URL, without ? or #")
    return value.rstrip("/")


def check_literal_host(url: str, allow: AllowList) -> None:
    """NotAllowedError now if the URL's host is an IP literal outside the allow-list (a name is
    checked when it is resolved, at upload time)."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    allow.check(host)


def state_path(path: Path) -> Path:
    return path.with_name(path.name + STATE_SUFFIX)


def find_record_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories as every ``*.jsonl`` below them; OptionError for a path
    that does not exist. Each file once, in the order found."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.jsonl") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise OptionError(f"{path}: no such file or directory")
    return list(dict.fromkeys(found))


async def upload(
    files: list[Path],
    url: str,
    allow: AllowList,
    options: UploadOptions | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Upload ``files`` (from find_record_files) to the collector at ``url`` (a base URL from
    parse_collector_url). NotAllowedError, before anything is sent, when the collector's address
    is outside the allow-list. Every file gets a result, in order."""
    from probe.checks.base import ProtocolError

    options = options or UploadOptions()
    base = parse_collector_url(url)
    endpoint = base + RECORDS_PATH
    results: list[FileResult] = []
    try:
        connector = await _connector(base, allow, options)
    except (OSError, TimeoutError, ProtocolError) as exc:
        # The collector's name did not resolve: transient, for every file.
        reason = f"cannot resolve the collector's host: {exc}"
        for path in files:
            results.append(FileResult(path, error=reason))
            if on_result is not None:
                on_result(results[-1])
        return results
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in files:
            result = await _upload_file(session, endpoint, base, path, options)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def run_upload(
    files: list[Path],
    url: str,
    allow: AllowList,
    options: UploadOptions | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> tuple[list[FileResult], int | None]:
    """``upload`` in its own event loop; SIGINT and SIGTERM stop it after saving the state of
    what was confirmed. Returns (results of the files done, signal number or None)."""
    from probe.interrupt import run_until_signal

    done: list[FileResult] = []

    def collect(result: FileResult) -> None:
        done.append(result)
        if on_result is not None:
            on_result(result)

    signum, _ = run_until_signal(lambda: upload(files, url, allow, options, collect))
    return done, signum


async def _connector(base: str, allow: AllowList, options: UploadOptions) -> aiohttp.TCPConnector:
    """A connector that can reach only the collector's guarded address."""
    from probe.checks.base import CheckContext
    from probe.checks.dns import GuardedResolver

    parts = urlsplit(base)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    ctx = CheckContext(allow=allow)
    found = await GuardedResolver(ctx).resolve(host, port, socket.AF_UNSPEC)
    address = str(found[0]["host"])
    ctx.guard(address)  # an IP literal's resolution is itself: aiohttp would not ask a resolver
    tls: ssl.SSLContext | bool = False
    if parts.scheme.lower() == "https":
        tls = ssl.create_default_context(cafile=options.ca_file)
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(ctx, pinned={host: address}),
        ssl=tls,
        use_dns_cache=False,
        limit=1,
    )


async def _upload_file(
    session: aiohttp.ClientSession, endpoint: str, base: str, path: Path, options: UploadOptions
) -> FileResult:
    result = FileResult(path)
    started = time.monotonic()
    try:
        state = _load_state(path, base)
        if state.confirmed_bytes > _size(path):
            state = _State(url=base)  # the file was replaced: start over (the collector dedups)
        result.resumed_at = result.confirmed_lines = state.confirmed_lines
        with path.open("rb") as records:
            records.seek(state.confirmed_bytes)
            while True:
                batch = _next_batch(records, options, state.confirmed_lines)
                if batch.consumed_lines == 0:
                    break
                if batch.lines:
                    answer = await _send(session, endpoint, batch, options, started)
                    result.records += len(batch.lines)
                    result.stored += answer[0]
                    result.duplicates += answer[1]
                    state.stored += answer[0]
                    state.duplicates += answer[1]
                state.confirmed_bytes += batch.consumed_bytes
                state.confirmed_lines += batch.consumed_lines
                result.confirmed_lines = state.confirmed_lines
                _save_state(path, state)
        state.complete = state.confirmed_bytes == _size(path)
        _save_state(path, state)
    except _Failed as exc:
        result.error = exc.reason
        result.permanent = exc.permanent
        return result
    except OSError as exc:
        result.error = f"cannot read or record progress: {exc.strerror or exc}"
        return result
    if not state.complete:
        result.error = "the last line is unfinished (a run still writing?); upload again later"
        return result
    result.ok = True
    if options.delete_after:
        try:
            _delete(path)
            result.deleted = True
        except OSError as exc:
            result.error = f"uploaded, but cannot delete: {exc.strerror or exc}"
    return result


# The uploader does one thing at a time: these small blocking calls hold up nothing else.
def _size(path: Path) -> int:
    return path.stat().st_size


def _delete(path: Path) -> None:
    path.unlink()
    state_path(path).unlink(missing_ok=True)


@dataclass(slots=True)
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    """1-based line numbers in the file of ``lines``."""
    consumed_lines: int = 0
    consumed_bytes: int = 0


def _next_batch(records: IO[bytes], options: UploadOptions, before: int) -> _Batch:
    """Whole lines from the current position, within the batch limits; blank lines are skipped
    but consumed; an unfinished last line is left where it is."""
    batch = _Batch()
    size = 0
    while len(batch.lines) < options.batch_records:
        position = records.tell()
        raw = records.readline()
        if not raw.endswith(b"\n"):
            records.seek(position)
            break
        line = raw.rstrip(b"\r\n")
        if batch.lines and size + len(line) + 1 > options.batch_bytes:
            records.seek(position)
            break
        batch.consumed_lines += 1
        batch.consumed_bytes += len(raw)
        if line.strip():
            batch.lines.append(line)
            batch.numbers.append(before + batch.consumed_lines)
            size += len(line) + 1
    return batch


async def _send(
    session: aiohttp.ClientSession,
    endpoint: str,
    batch: _Batch,
    options: UploadOptions,
    started: float,
) -> tuple[int, int]:
    """Post one batch until the collector confirms it: (stored, duplicates); _Failed if not."""
    body = b"".join(line + b"\n" for line in batch.lines)
    timeout = aiohttp.ClientTimeout(total=options.request_timeout)
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            async with session.post(
                endpoint, data=body, headers={"Content-Type": CONTENT_TYPE}, timeout=timeout
            ) as response:
                status: int = response.status
                text = await response.text(errors="replace")
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"cannot reach the collector: {_describe(exc)}"
        else:
            if status == 200:
                return _confirmed(text, batch)
            reason = _reason(status, text, batch)
            if 400 <= status < 500 and status not in RETRY_STATUSES:
                raise _Failed(reason, permanent=True)
        if attempt >= options.attempts:
            raise _Failed(f"{reason} (gave up after {attempt} attempts)", permanent=False)
        delay = random.uniform(0, min(BACKOFF_CAP, options.backoff_base * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        if time.monotonic() - started + delay > options.max_time:
            raise _Failed(
                f"{reason} (gave up: a retry in {delay:.0f} s would pass the "
                f"{options.max_time:g} s limit)",
                permanent=False,
            )
        await asyncio.sleep(delay)


def _confirmed(text: str, batch: _Batch) -> tuple[int, int]:
    """(stored, duplicates) from a 200, once it is sure to confirm exactly this batch."""
    try:
        answer = json.loads(text)
        stored, duplicates, ids = answer["stored"], answer["duplicates"], answer["ids"]
    except (ValueError, KeyError, TypeError):
        raise _Failed("the collector's answer is not a confirmation", permanent=False) from None
    sent = [_measurement_id(line) for line in batch.lines]
    if ids != sent or stored + duplicates != len(sent):
        raise _Failed("the collector confirmed a different batch", permanent=False)
    return int(stored), int(duplicates)


def _measurement_id(line: bytes) -> Any:
    try:
        return json.loads(line).get("measurement_id")
    except (ValueError, AttributeError):
        return None


def _reason(status: int, text: str, batch: _Batch) -> str:
    """The collector's reason, with a batch line turned into the file's line number."""
    try:
        answer = json.loads(text)
        reason = str(answer.get("reason") or answer.get("error") or "")
        line = answer.get("line")
    except (ValueError, AttributeError):
        reason, line = text.strip(), None
    if isinstance(line, int) and 1 <= line <= len(batch.numbers):
        reason = f"line {batch.numbers[line - 1]}: {reason}"
    return f"HTTP {status}: {reason[:MAX_REASON_CHARS] or 'no reason given'}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _load_state(path: Path, base: str) -> _State:
    """The file's upload progress to this collector; a fresh start if there is none (or it is for
    another collector, or unreadable: re-sending is safe, the collector dedups)."""
    try:
        data = json.loads(state_path(path).read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION or data.get("url") != base:
            return _State(url=base)
        return _State(
            url=base,
            confirmed_lines=int(data["confirmed_lines"]),
            confirmed_bytes=int(data["confirmed_bytes"]),
            stored=int(data.get("stored", 0)),
            duplicates=int(data.get("duplicates", 0)),
            complete=bool(data.get("complete", False)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return _State(url=base)


def _save_state(path: Path, state: _State) -> None:
    """Write the state file atomically: temp file, fsync, rename."""
    state.updated = datetime.now(UTC).isoformat(timespec="seconds")
    target = state_path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    data = {
        "version": STATE_VERSION,
        "url": state.url,
        "confirmed_lines": state.confirmed_lines,
        "confirmed_bytes": state.confirmed_bytes,
        "stored": state.stored,
        "duplicates": state.duplicates,
        "complete": state.complete,
        "updated": state.updated,
    }
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


__all__ = [
    "FileResult",
    "UploadOptions",
    "check_literal_host",
    "find_record_files",
    "parse_collector_url",
    "run_upload",
    "state_path",
    "upload",
]
