"""The collector: receives volunteers' uploads, validates them, stores them raw and once.

``ringprobe collector`` runs it; ``Collector`` is the library object (an async context manager).
The contract with the uploader (``POST /v1/records``, JSON Lines, all-or-nothing batches,
idempotent by measurement id) is docs/upload.md.

Storage (probe.collector.store): raw records in files written once and never modified,
``DIR/raw/day=YYYY-MM-DD/cc=XX/app=APP/<batch-id>.jsonl``, and ``DIR/index.sqlite`` (WAL) mapping
each measurement id to its file.

Crash safety: a ``kill -9`` at any moment loses no confirmed record and duplicates none.
Batches are stored one at a time, in this order:

1. look the batch's ids up in the index: those present are duplicates, not written again;
2. per partition, write a temp file ``.<batch-id>.jsonl.tmp``, fsync it, rename it to
   ``<batch-id>.jsonl``, fsync the directory: a ``*.jsonl`` file is always complete;
3. insert the files and all their ids in one SQLite transaction (synchronous=FULL);
4. answer 200.

A crash before 3 commits leaves complete but unindexed files and perhaps temp files; the client
got no 200 and will retry. On start, before it accepts anything, the collector reconciles: temp
files are deleted (never counted), unindexed ``*.jsonl`` files are indexed (they hold only ids the
index did not have, by step 1 and the one-at-a-time order; a file that would break that is moved to
``DIR/quarantine/``). The retry then finds the ids stored and counts them as duplicates. A crash
after 3 is a retry of a stored batch: all duplicates. So each id is in exactly one raw file and in
the index once. If writing or indexing fails while running, the batch's renamed files are removed
(or, failing that, reconciled before the next batch) and the client gets 503.

Client addresses are never logged or stored (docs/upload.md, Privacy).

Exceptions (all ``RingprobeError``):

    CollectorError
    ├── BadRecord       a line of a batch is not a valid record (answered 400 with the line)
    └── StorageError    a batch could not be stored or the data directory opened (503, or a
                        one-line error at start)
"""

from __future__ import annotations

from probe.collector.errors import BadRecord, CollectorError, StorageError
from probe.collector.server import Collector, Limits, RateLimiter, make_app
from probe.collector.store import Store, partition_dir
from probe.collector.validate import parse_batch

__all__ = [
    "BadRecord",
    "Collector",
    "CollectorError",
    "Limits",
    "RateLimiter",
    "StorageError",
    "Store",
    "make_app",
    "parse_batch",
    "partition_dir",
]
