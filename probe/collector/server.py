"""The HTTP side of the collector (aiohttp.web): limits, the batch endpoint, error responses.

The contract is docs/upload.md. Client addresses are used for one thing only, the rate
limiter's table, and there only as a keyed hash; they are never logged (the access log is off).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from probe.collector.errors import BadRecord, StorageError
from probe.collector.store import PutResult, Store
from probe.collector.validate import parse_batch

log = logging.getLogger("probe.collector")

RECORDS_PATH = "/v1/records"
# Ours: application/x-ndjson is the common name (ndjson spec, http://ndjson.org); jsonl is the
# name of the IANA registration draft (draft-ietf-... "application/jsonl"); both mean JSON Lines.
CONTENT_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Ours: a day of a volunteer's runs (a run writes ~1 kB per record, a few hundred records).
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
# Ours: an uploader sends one batch at a time; 5/s sustained with bursts of 20 leaves room for
# several volunteers behind one NAT.
DEFAULT_RATE = 5.0
DEFAULT_BURST = 20
# Ours: bounds the rate limiter's memory (~100 bytes an entry); the least recently seen go first.
MAX_CLIENTS = 10_000
# Ours: how long a stopping collector lets batches in flight finish.
SHUTDOWN_TIMEOUT = 10.0
# Ours: the Retry-After of a 503, long enough for an operator's disk to be dealt with.
STORAGE_RETRY_AFTER = 30
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may send."""

    max_body: int = DEFAULT_MAX_BODY
    """Bytes in one request body."""
    max_records: int = DEFAULT_MAX_RECORDS
    """Records in one batch."""
    rate: float = DEFAULT_RATE
    """Requests per second one client may sustain."""
    burst: int = DEFAULT_BURST
    """Requests one client may send at once."""


class RateLimiter:
    """Token buckets keyed by a keyed hash of the client's address, in a bounded table."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._key = secrets.token_bytes(16)  # per process, never written: the table stays opaque
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, address: str, now: float | None = None) -> float:
        """Take a token for ``address``: 0.0 when allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        client = hashlib.blake2b(address.encode(), key=self._key, digest_size=16).digest()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def _error(
    status: int,
    error: str,
    reason: str,
    headers: dict[str, str] | None = None,
    line: int | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": error, "reason": reason}
    if line is not None:
        body["line"] = line
    return web.json_response(body, status=status, headers=headers)


class _NoAddresses(logging.Filter):
    """Drops the client address aiohttp puts in its error logs ("Error handling request from
    %s", aiohttp/web_protocol.py handle_error); the exception itself is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Error handling request from"):
            record.msg = "Error handling request"
            record.args = ()
        return True


# aiohttp's loggers that may name a client (the access log is off: AppRunner(access_log=None)).
_AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web")
_NO_ADDRESSES = _NoAddresses()


class _Handler:
    def __init__(self, store: Store, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.limiter = RateLimiter(limits.rate, limits.burst)
        self._lock = asyncio.Lock()

    async def post_records(self, request: web.Request) -> web.Response:
        wait = self.limiter.take(request.remote or "")
        if wait > 0:
            return _error(
                429,
                "rate_limited",
                f"more than {self.limits.rate:g} requests per second; retry later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        body = await _read_capped(request, self.limits.max_body)
        if body is None:
            return _error(413, "too_large", f"the body is larger than {self.limits.max_body} bytes")
        if body.count(b"\n") > self.limits.max_records:
            return _error(
                413, "too_large", f"more than {self.limits.max_records} records in one batch"
            )
        try:
            lines = await asyncio.to_thread(parse_batch, body)
        except BadRecord as exc:
            log.info("refused a batch: %s", exc)
            return _error(400, "bad_record", exc.reason, line=exc.line)
        if len(lines) > self.limits.max_records:
            return _error(
                413, "too_large", f"more than {self.limits.max_records} records in one batch"
            )
        try:
            # Shielded: a client that hangs up must not leave a half-done put behind the lock.
            result = await asyncio.shield(self._put(lines))
        except StorageError as exc:
            log.error("storage failure: %s", exc)
            return _error(
                503,
                "storage_unavailable",
                f"the collector could not store the batch ({exc}); nothing was confirmed",
                headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
            )
        log.info("batch: stored=%d duplicates=%d", result.stored, result.duplicates)
        return web.json_response(
            {
                "stored": result.stored,
                "duplicates": result.duplicates,
                "ids": [line.measurement_id for line in lines],
            }
        )

    async def _put(self, lines: list[Any]) -> PutResult:
        async with self._lock:
            return await asyncio.to_thread(self.store.put, lines)

    def _check_headers(self, request: web.Request) -> web.Response | None:
        if request.content_type not in CONTENT_TYPES:
            return _error(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/x-ndjson (JSON Lines), not "
                f"{request.headers.get('Content-Type', 'none')!r}",
            )
        if request.charset not in (None, "utf-8"):
            return _error(415, "unsupported_media_type", "records are UTF-8 (charset=utf-8)")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return _error(
                415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not accepted"
            )
        if request.content_length is not None and request.content_length > self.limits.max_body:
            return _error(
                413,
                "too_large",
                f"Content-Length {request.content_length} is over the limit of "
                f"{self.limits.max_body} bytes",
            )
        return None


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds ``limit`` (chunked bodies have no length)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(store: Store, limits: Limits) -> web.Application:
    """The aiohttp application: one route, ``POST /v1/records``."""
    handler = _Handler(store, limits)
    app = web.Application()
    app.router.add_post(RECORDS_PATH, handler.post_records)
    return app


class Collector:
    """The collector, listening: ``async with Collector(...) as c`` then ``c.addresses``.

    Opening it reconciles the data directory (package docstring) before anything is accepted.
    """

    def __init__(
        self,
        data_dir: Path,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        limits: Limits | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.addresses: list[tuple[str, int]] = []
        self.store: Store | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Collector:
        for name in _AIOHTTP_LOGGERS:
            logging.getLogger(name).addFilter(_NO_ADDRESSES)
        self.store = await asyncio.to_thread(Store, self.data_dir)
        # access_log=None: aiohttp's access log would write every client's address.
        runner = web.AppRunner(
            make_app(self.store, self.limits),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self.addresses = [
            (str(address[0]), int(address[1]))
            for address in runner.addresses
            if isinstance(address, tuple)
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        finally:
            if self.store is not None:
                self.store.close()
                self.store = None
            for name in _AIOHTTP_LOGGERS:
                logging.getLogger(name).removeFilter(_NO_ADDRESSES)
