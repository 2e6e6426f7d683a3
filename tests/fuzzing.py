"""What every decoder's fuzz tests share: valid messages mutated, and "a parse or our error"."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

from hypothesis import strategies as st

from probe.protocols import DecodeError

T = TypeVar("T")


def parse_or_error(
    call: Callable[[], T], error: type[DecodeError], failures: Collection[str]
) -> T | None:
    """Run a decoder: its result, or None after checking that only the module's documented error
    escaped, with a failure string from its vocabulary and a message a record can carry."""
    try:
        return call()
    except error as exc:
        caught = exc
    assert caught.failure in failures
    assert str(caught)
    return None


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Valid bytes with a few overwritten, cut short or extended: reaches past the first checks."""
    return st.tuples(
        st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=4),
        st.integers(0, len(valid) + 8),
        st.binary(max_size=16),
    ).map(lambda m: _mutate(valid, *m))


def _mutate(valid: bytes, edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    data = bytearray(valid)
    for index, value in edits:
        data[index] = value
    return bytes(data[:cut]) + tail
