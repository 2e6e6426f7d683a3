"""The exceptions of the ``probe`` package.

Network failures are *data* (a failure string in a record), never exceptions; these classes are for
input the user gave us that we cannot use, and for the guard that refuses to send.

    RingprobeError
    ├── CatalogError        a catalog file or entry is unusable (names file, entry, problem)
    ├── AllowListError      an allow-list value is not a network (bad CIDR)
    ├── NotAllowedError     an address lies outside the allow-list; nothing was sent
    └── OptionError         a run option is unusable (bad URL, bad resolver address, ...)
"""

from __future__ import annotations


class RingprobeError(Exception):
    """Base class of every error ringprobe raises on purpose."""


class CatalogError(RingprobeError):
    """A catalog file or one of its entries cannot be used."""

    def __init__(self, source: str, problem: str, entry: str | None = None) -> None:
        self.source = source
        self.entry = entry
        self.problem = problem
        where = f"{source}: entry {entry!r}" if entry is not None else source
        super().__init__(f"{where}: {problem}")


class AllowListError(RingprobeError):
    """An allow-list value is not an IP network."""


class NotAllowedError(RingprobeError):
    """A check tried to reach an address outside the allow-list; nothing was sent."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"{address} is outside the allow-list")


class OptionError(RingprobeError):
    """A run option cannot be used as given."""
