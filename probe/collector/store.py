"""Raw record files partitioned by day / country / app, and the SQLite index of measurement ids.

Blocking code (file system and sqlite3): the server calls ``Store.put`` in a worker thread, one
batch at a time. The order of the steps is what makes a crash harmless; the package docstring
(probe/collector/__init__.py) explains it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from probe.collector.errors import StorageError
from probe.collector.validate import Line

log = logging.getLogger("probe.collector")

RAW_DIR = "raw"
QUARANTINE_DIR = "quarantine"
INDEX_NAME = "index.sqlite"
LOCK_NAME = "collector.lock"
TMP_SUFFIX = ".tmp"
# Ours: SQLite's default limit on host parameters was 999 before 3.32; stay under it.
MAX_SQL_PARAMS = 900
# Ours: partition names stay well under NAME_MAX (255 bytes on Linux file systems).
MAX_SEGMENT_CHARS = 120
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,120}")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        path TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL,
        records INTEGER NOT NULL,
        indexed_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        measurement_id TEXT PRIMARY KEY,
        path TEXT NOT NULL REFERENCES files(path)
    ) WITHOUT ROWID""",
)


@dataclass(frozen=True, slots=True)
class PutResult:
    """What storing one batch did."""

    stored: int
    duplicates: int
    files: tuple[str, ...]
    """The raw files written, relative to the data directory."""


def partition_dir(day: str, cc: str, app: str) -> str:
    """``raw/day=.../cc=.../app=...``; the app percent-encoded unless plain (Hive-style)."""
    return f"{RAW_DIR}/day={day}/cc={cc}/app={_segment(app)}"


def _segment(value: str) -> str:
    if _PLAIN_SEGMENT.fullmatch(value):
        return value
    # quote() keeps '.', so '.' and '..' would still be special names: encode it too.
    encoded = quote(value, safe="").replace(".", "%2E")
    if len(encoded) > MAX_SEGMENT_CHARS:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
        encoded = f"{encoded[: MAX_SEGMENT_CHARS - 17]}~{digest}"
    return encoded


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_dir(data_dir: Path) -> int:
    """Hold ``DIR/collector.lock`` (flock, released by the kernel even after a kill -9): one
    collector per data directory, else two could store the same id."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(f"{data_dir} is in use by another collector") from None
    except OSError:
        os.close(fd)
        raise
    return fd


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Store:
    """The collector's storage under one data directory. Not thread-safe: one ``put`` at a time."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.raw_dir = data_dir / RAW_DIR
        try:
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_dir(data_dir)
        except OSError as exc:
            raise StorageError(f"cannot open the data directory {data_dir}: {exc}") from exc
        try:
            self._db = sqlite3.connect(
                data_dir / INDEX_NAME, isolation_level=None, check_same_thread=False
            )
            # https://www.sqlite.org/wal.html; FULL: a committed transaction survives power loss.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock)
            raise StorageError(f"cannot open the data directory {data_dir}: {exc}") from exc
        self._dirty = False
        try:
            self.reconcile()
        except StorageError:
            self.close()
            raise

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)  # releases the directory's lock

    def count(self) -> int:
        """Measurement ids in the index."""
        (n,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        return int(n)

    def known(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that the index holds."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for chunk in _chunks(wanted, MAX_SQL_PARAMS):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT measurement_id FROM records WHERE measurement_id IN ({marks})",  # noqa: S608 - only '?' marks are interpolated
                chunk,
            )
            found.update(row[0] for row in rows)
        return found

    def put(self, lines: list[Line]) -> PutResult:
        """Store the batch's new records (ids not yet indexed, each once) and index them.

        Returns only after the files are durable and the index committed; StorageError when that
        could not be done, in which case no record of the batch counts as stored.
        """
        if self._dirty:
            self.reconcile()
        known = self.known(line.measurement_id for line in lines)
        groups: dict[str, list[Line]] = defaultdict(list)
        duplicates = 0
        for line in lines:
            if line.measurement_id in known:
                duplicates += 1
                continue
            known.add(line.measurement_id)
            groups[partition_dir(line.day, line.cc, line.app)].append(line)
        if not groups:
            return PutResult(stored=0, duplicates=duplicates, files=())
        batch_id = uuid.uuid4().hex
        written: list[str] = []
        try:
            for directory, group in groups.items():
                written.append(self._write_file(directory, batch_id, group))
        except OSError as exc:
            self._discard(written)
            raise StorageError(f"cannot write the batch: {exc.strerror or exc}") from exc
        try:
            self._index(batch_id, {path: groups[path.rsplit("/", 1)[0]] for path in written})
        except sqlite3.Error as exc:
            self._discard(written)
            raise StorageError(f"cannot index the batch: {exc}") from exc
        stored = sum(len(group) for group in groups.values())
        log.debug("batch %s: stored=%d duplicates=%d", batch_id, stored, duplicates)
        return PutResult(stored=stored, duplicates=duplicates, files=tuple(written))

    def _write_file(self, directory: str, batch_id: str, group: list[Line]) -> str:
        """Write one partition's records: temp file, fsync, rename, fsync the directory."""
        folder = self.data_dir / directory
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            # Make the new directories' names durable too, up to raw/.
            parent = folder
            while parent != self.data_dir:
                _fsync_dir(parent.parent)
                parent = parent.parent
        final = folder / f"{batch_id}.jsonl"
        tmp = folder / f".{batch_id}.jsonl{TMP_SUFFIX}"
        data = b"".join(line.raw + b"\n" for line in group)
        try:
            with tmp.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, final)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return f"{directory}/{final.name}"

    def _index(self, batch_id: str, files: dict[str, list[Line]]) -> None:
        """One transaction: the files and every id in them, or nothing."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for path, group in files.items():
                self._db.execute(
                    "INSERT INTO files (path, batch_id, records, indexed_at) VALUES (?, ?, ?, ?)",
                    (path, batch_id, len(group), now),
                )
                self._db.executemany(
                    "INSERT INTO records (measurement_id, path) VALUES (?, ?)",
                    ((line.measurement_id, path) for line in group),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _discard(self, written: list[str]) -> None:
        """Remove a failed batch's renamed files; if that fails too, reconcile before the next
        batch so that a retry cannot store the same records a second time."""
        for path in written:
            try:
                (self.data_dir / path).unlink(missing_ok=True)
            except OSError:
                self._dirty = True

    def reconcile(self) -> None:
        """Bring the index and the raw files into agreement after a crash (package docstring):
        delete temp files, index complete raw files the index does not know."""
        try:
            self._reconcile()
        except (OSError, sqlite3.Error) as exc:
            self._dirty = True
            raise StorageError(f"cannot reconcile {self.data_dir}: {exc}") from exc

    def _reconcile(self) -> None:
        for tmp in self.raw_dir.rglob(f"*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
        indexed = {row[0] for row in self._db.execute("SELECT path FROM files")}
        for path in sorted(self.raw_dir.rglob("*.jsonl")):
            relative = path.relative_to(self.data_dir).as_posix()
            if relative not in indexed:
                self._adopt(path, relative)
        self._dirty = False

    def _adopt(self, path: Path, relative: str) -> None:
        """Index a raw file written before a crash, or quarantine it if it cannot be indexed
        without counting a record twice."""
        lines: list[Line] = []
        try:
            for raw in path.read_bytes().splitlines():
                record = json.loads(raw)
                lines.append(
                    Line(raw, record["measurement_id"], record["start_time"][:10],
                         record["probe"]["cc"], record["app"])
                )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            self._quarantine(path, relative, f"unreadable ({exc})")
            return
        ids = [line.measurement_id for line in lines]
        if len(set(ids)) != len(ids) or self.known(ids):
            self._quarantine(path, relative, "holds ids the index already has")
            return
        self._index(path.stem, {relative: lines})
        log.info("reconciled %s: %d records from an unconfirmed batch", relative, len(lines))

    def _quarantine(self, path: Path, relative: str, why: str) -> None:
        target = self.data_dir / QUARANTINE_DIR / relative.replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        log.warning("moved %s to %s: %s", relative, target, why)
