"""Exceptions and warnings of the ``analysis`` package.

::

    AnalysisError                 anything the analysis package raises on purpose
    ├── LoadError                 a path that does not exist, matches nothing, or cannot be read
    └── SchemaVersionError        a record of a schema version this ringprobe does not understand

    LoadWarning (UserWarning)     part of an input was skipped (a truncated or malformed line, a
                                  non-record line, an OONI test not imported); the rest is loaded

Foreign exceptions (``OSError``, ``gzip.BadGzipFile``, ...) are translated at the boundary with
``raise LoadError(...) from exc``, so a caller catches ``AnalysisError`` and nothing else.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable


class AnalysisError(Exception):
    """Base of every exception the analysis package raises on purpose."""


class LoadError(AnalysisError):
    """A path does not exist, matches nothing, or cannot be read."""


class SchemaVersionError(AnalysisError):
    """A record of a schema version this ringprobe does not understand."""

    def __init__(
        self, path: str | os.PathLike[str], line: int, version: object, known: Iterable[int]
    ) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.version = version
        self.known = tuple(sorted(known))
        understood = ", ".join(str(v) for v in self.known)
        super().__init__(
            f"{self.path}, line {line}: record of schema version {version!r}; "
            f"this ringprobe understands schema version(s) {understood} (upgrade ringprobe?)"
        )


class LoadWarning(UserWarning):
    """Part of an input was skipped (a truncated or malformed line, an unsupported measurement)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_load(message: str) -> None:
    """Issue a LoadWarning attributed to the first caller outside this package (the notebook line
    that called ``load``), however deep inside the loader it was raised."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, LoadWarning, stacklevel=level)


__all__ = ["AnalysisError", "LoadError", "LoadWarning", "SchemaVersionError"]
