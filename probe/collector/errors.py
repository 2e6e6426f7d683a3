"""The collector's exceptions (the tree is drawn in probe/collector/__init__.py)."""

from __future__ import annotations

from probe.errors import RingprobeError


class CollectorError(RingprobeError):
    """Base class of the collector's errors."""


class BadRecord(CollectorError):
    """A line of an uploaded batch is not a valid record: the batch is refused (400)."""

    def __init__(self, line: int | None, reason: str) -> None:
        self.line = line
        """1-based line of the batch; None when the batch as a whole is wrong (empty)."""
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class StorageError(CollectorError):
    """The batch could not be stored (I/O or database error); nothing was confirmed (503)."""
