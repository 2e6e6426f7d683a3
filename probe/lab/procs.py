"""The lab's server processes: started in a namespace, recorded by pid, stopped by pid.

Each server runs in the foreground as ``ip netns exec NS PROGRAM ...`` (``ip netns exec`` execs
the program, so the pid we get is the server's) in a new session, so its process group id is its
pid and stopping it reaches any child it made. A pid alone could be reused after a crash, so a
record also keeps the process's start time (field 22 of /proc/PID/stat, proc(5)): a pid whose start
time differs is someone else's process and is never signalled.

Listening sockets are read from /proc/PID/net/{tcp,tcp6,udp,udp6} of any process in the namespace
(the files describe the namespace, not the process), which tells when a server is ready without
running anything inside the namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

# Children of this process, by pid, so whoever stops them also reaps them (a zombie still has a
# /proc entry and an unreaped Popen warns when collected).
_CHILDREN: Final[dict[int, subprocess.Popen[bytes]]] = {}

# /proc/net/tcp socket states (include/net/tcp_states.h): TCP_LISTEN is 10; an unconnected UDP
# socket shows TCP_CLOSE, 7.
_TCP_LISTEN: Final = "0A"
_UDP_UNCONNECTED: Final = "07"
POLL_INTERVAL: Final = 0.02


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process the lab started, as the state file keeps it."""

    name: str
    pid: int
    start_time: int
    """Clock ticks since boot at which it started (/proc/PID/stat field 22)."""
    argv: tuple[str, ...]
    log: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            argv=tuple(str(a) for a in data["argv"]),
            log=str(data["log"]),
        )


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (the state onwards), None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process exists, is the same process, and is not a zombie."""
    child = _CHILDREN.get(record.pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[record.pid]  # reaped just now
        return False
    fields = _stat_fields(record.pid)
    if fields is None or int(fields[19]) != record.start_time:
        return False
    return fields[0] not in ("Z", "X")


def spawn(name: str, argv: Sequence[str], log: Path) -> ProcessRecord:
    """Start a server in its own session, output to ``log``; return its record."""
    with log.open("ab") as out:
        child = subprocess.Popen(  # noqa: S603 - argv built by the lab from fixed programs
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[child.pid] = child
    started = start_time(child.pid)
    # A program that failed to exec may already be gone; 0 never matches a live process.
    return ProcessRecord(name, child.pid, started or 0, tuple(argv), str(log))


def _signal(record: ProcessRecord, signum: int) -> None:
    if not is_running(record):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Our servers lead their own session; a group signal also stops any child they made.
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, signum)
        else:
            os.kill(record.pid, signum)


def stop(records: Iterable[ProcessRecord], grace: float = 3.0) -> list[ProcessRecord]:
    """SIGTERM each running process, SIGKILL what is left after ``grace`` seconds, wait until
    all are gone (bounded). Returns the records that were running."""
    running = [r for r in records if is_running(r)]
    for record in running:
        _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_running(r) for r in running):
        time.sleep(POLL_INTERVAL)
    left = [r for r in running if is_running(r)]
    for record in left:
        _signal(record, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_running(r) for r in left):
        time.sleep(POLL_INTERVAL)
    for record in running:
        child = _CHILDREN.pop(record.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)
    return running


def stop_pids(pids: Iterable[int], grace: float = 3.0) -> list[int]:
    """Stop processes known only by pid (found inside one of the lab's namespaces)."""
    records = []
    for pid in pids:
        started = start_time(pid)
        if started is not None and pid != os.getpid():
            records.append(ProcessRecord("stray", pid, started, (), ""))
    return [r.pid for r in stop(records, grace)]


def tail(path: str | Path, lines: int = 5) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# --- listening sockets ---------------------------------------------------------------------------


Socket = tuple[str, str, int]
"""(transport, address, port) of a listening socket."""


def _address(hex_text: str) -> str:
    raw = bytes.fromhex(hex_text)
    # The kernel prints each 32-bit word in host byte order (net/ipv4/tcp_ipv4.c get_tcp4_sock).
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def parse_proc_net(text: str, transport: str) -> set[Socket]:
    """Listening (TCP) or bound, unconnected (UDP) sockets of a /proc/net/{tcp,udp}[6] file."""
    wanted = _TCP_LISTEN if transport == "tcp" else _UDP_UNCONNECTED
    found: set[Socket] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != wanted:
            continue
        address, _, port = fields[1].partition(":")
        found.add((transport, _address(address), int(port, 16)))
    return found


def sockets(pid: int) -> set[Socket] | None:
    """Every listening socket of the network namespace that ``pid`` is in; None when the
    process is gone."""
    found: set[Socket] = set()
    for name, transport in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            text = Path(f"/proc/{pid}/net/{name}").read_text()
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        except ProcessLookupError:
            return None
        except OSError:
            return None
        found |= parse_proc_net(text, transport)
    return found
