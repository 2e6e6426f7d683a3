"""`ringprobe collector` as a real subprocess on 127.0.0.1, for tests that upload to it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_collector(data: Path) -> Iterator[str]:
    """A collector storing into ``data`` on a free loopback port, its URL; stopped with SIGTERM
    afterwards, which must be a clean stop (exit 0)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "probe.cli", "collector", "--data", str(data), "--port", "0",
         "--rate", "1000", "--burst", "1000", "--log-level", "warning"],
        stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(rb"listening on (127\.0\.0\.1:\d+)", line)
            if found:
                yield f"http://{found.group(1).decode()}"
                break
        else:
            raise AssertionError(f"the collector did not start (exit {process.wait()})")
    finally:
        process.terminate()
        code = process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0  # SIGTERM is a clean stop
