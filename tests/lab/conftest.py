"""Lab tests build real labs: root on Linux with the lab's Debian packages (scripts/install.sh).

``require_lab()`` is the one place that decides what a missing prerequisite means: the test is
skipped on a developer's machine, but fails when the environment variable CI is "true", where the
lab must run. Each lab a test builds has a unique name (so its namespaces cannot meet another
run's) and is always taken down.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.lab import Lab, doctor
from probe.lab.state import STATE_ROOT

# The TTL test sends its probes with ping (iputils-ping); the lab itself does not need it.
TEST_TOOLS = (doctor.Tool("ping", "iputils-ping", "TTL probes in the tests"),)


def require_lab() -> None:
    """Skip (locally) or fail (CI=true) unless this machine can build a lab."""
    findings = doctor.check((*doctor.TOOLS, *TEST_TOOLS))
    missing = [f"{f.name}: {f.detail}" for f in findings if not f.ok]
    if not missing:
        return
    message = "the lab cannot run here: " + "; ".join(missing)
    line = doctor.install_line(findings)
    if line:
        message += f" (install: {line})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def unique_name(tag: str) -> str:
    """A lab name no other test run uses: this process, a tag and random digits."""
    return f"t{os.getpid():x}-{tag}-{secrets.token_hex(2)}"


_TEST_LAB = re.compile(r"t([0-9a-f]+)-[a-z]+-[0-9a-f]{4}")


def remove_abandoned_labs() -> None:
    """Take down labs of earlier test runs whose process died without cleaning up (killed)."""
    if not STATE_ROOT.is_dir():
        return
    for entry in STATE_ROOT.iterdir():
        match = _TEST_LAB.fullmatch(entry.name)
        if entry.is_dir() and match and not Path(f"/proc/{int(match[1], 16)}").exists():
            Lab(entry.name).down()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A lab shared by a module's tests, built once and always taken down."""
    require_lab()
    remove_abandoned_labs()
    built = Lab(unique_name("mod"))
    try:
        built.up()
        yield built
    finally:
        built.down()


@pytest.fixture
def lab_ready() -> None:
    """For tests that build their own labs."""
    require_lab()
