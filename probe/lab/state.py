"""Where a lab keeps what it made: ``/run/ringprobe-lab/<name>/state.json`` and its files.

The state records the namespaces and every process ``up`` started (written after each start, so
a crash part-way still leaves a record), so ``down`` removes exactly those. /run is a tmpfs:
a reboot, which also removes every namespace and process, removes the state with them.

A lock file per lab (``<root>/<name>.lock``, flock) keeps two commands from building or
removing the same lab at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import LabSetupError
from .procs import ProcessRecord

STATE_ROOT: Final = Path("/run/ringprobe-lab")
STATE_VERSION: Final = 1
# Another command holding the lock (an `up` takes seconds) is waited for this long at most.
LOCK_WAIT: Final = 60.0


@dataclass(slots=True)
class LabState:
    """What a lab made; the content of state.json."""

    name: str
    prefix: str
    config_hash: str = ""
    status: str = "building"
    """building (``up`` in progress or crashed during it) or up."""
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    dns_overrides: dict[str, str] = field(default_factory=dict)
    netns_etc: str = ""
    """/etc/netns/<client namespace>, the directory ``ip netns exec`` bind-mounts files from."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "prefix": self.prefix,
            "config_hash": self.config_hash,
            "status": self.status,
            "created": self.created,
            "namespaces": list(self.namespaces),
            "processes": [p.to_dict() for p in self.processes],
            "dns_overrides": dict(self.dns_overrides),
            "netns_etc": self.netns_etc,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        return cls(
            name=str(data["name"]),
            prefix=str(data["prefix"]),
            config_hash=str(data.get("config_hash", "")),
            status=str(data.get("status", "building")),
            created=float(data.get("created", 0.0)),
            namespaces=[str(n) for n in data.get("namespaces", [])],
            processes=[ProcessRecord.from_dict(p) for p in data.get("processes", [])],
            dns_overrides={str(k): str(v) for k, v in data.get("dns_overrides", {}).items()},
            netns_etc=str(data.get("netns_etc", "")),
        )


def load(path: Path) -> LabState | None:
    """The state in ``path``; None when there is none. A state file that cannot be read is
    reported, not ignored: its lab may still be running."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabSetupError(f"cannot read the lab state {path}: {exc.strerror}") from exc
    try:
        return LabState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabSetupError(
            f"the lab state {path} is damaged ({exc}); remove it and the lab's namespaces "
            "by hand (ip netns list)"
        ) from exc


def save(path: Path, state: LabState) -> None:
    """Write the state atomically (write, then rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the lab's lock file. The file is removed by whoever finishes a ``down``; a holder
    that finds its file unlinked (or replaced) under it takes the lock again on the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _acquire(fd, path, deadline)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LabSetupError(
                    f"another ringprobe lab command holds {path}; try again when it is done"
                ) from None
            time.sleep(0.05)
