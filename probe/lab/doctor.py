"""What the lab needs from the machine, and how to get what is missing (``ringprobe lab doctor``).

Every tool is a Debian package's program; ``install_line`` prints the one apt-get line that adds
whatever is missing (scripts/install.sh installs the same list).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .errors import LabUnavailable

# Root's tools live in the sbin directories, which a user's PATH often lacks.
_EXTRA_PATH: Final = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Bound on each tool's self-description (--help, --version): they answer in milliseconds.
_PROBE_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Tool:
    """A program the lab runs."""

    command: str
    package: str
    purpose: str
    feature: Callable[[str], str | None] | None = None
    """Given the program's path, None when it has the feature the lab needs, else what lacks."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    package: str | None = None
    """The Debian package that fixes it (None: not fixable by installing something)."""


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - a fixed tool's own help, no shell
            argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{exc}>"
    return done.stdout + done.stderr


def _string_match(path: str) -> str | None:
    # Scenarios match SNI with `-m string --algo bm` (LAB.md); the help text lists its options.
    text = _output([path, "-m", "string", "--help"])
    return None if "string match options" in text else "lacks the string match (-m string)"


def _doh(path: str) -> str | None:
    # dnsdist prints its compiled-in features; DoH needs the h2o-based front end.
    text = _output([path, "--version"])
    return None if "dns-over-https" in text else "built without DNS-over-HTTPS"


TOOLS: Final = (
    Tool("ip", "iproute2", "namespaces, veth pairs, addresses, routes"),
    Tool("sysctl", "procps", "forwarding and ICMP settings in each namespace"),
    Tool("nft", "nftables", "the tspu's named sets and scenario rules"),
    Tool("iptables", "iptables", "SNI matching in scenarios (string match)", _string_match),
    Tool("dnsmasq", "dnsmasq-base", "the lab resolver"),
    Tool("nginx", "nginx", "HTTPS sites (per-host certificates) and TCP listeners"),
    Tool("turnserver", "coturn", "STUN/TURN on the relay addresses"),
    Tool("dnsdist", "dnsdist", "the DNS-over-HTTPS resolver", _doh),
    Tool("gtlsserver", "ngtcp2-server", "HTTP/3 (QUIC) on the web sites"),
)


def find(command: str) -> str | None:
    """The program's path, searching the sbin directories too."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return shutil.which(command, path=path)


def check(tools: Iterable[Tool] | None = None) -> list[Finding]:
    """Everything the lab needs, in order: the platform, root, then each tool (TOOLS unless
    given)."""
    tools = TOOLS if tools is None else tuple(tools)
    findings: list[Finding] = []
    system = platform.system()
    findings.append(
        Finding("Linux", system == "Linux", system if system != "Linux" else platform.release())
    )
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    findings.append(
        Finding(
            "root",
            is_root,
            "running as root" if is_root else "network namespaces need root: run with sudo",
        )
    )
    for tool in tools:
        path = find(tool.command)
        if path is None:
            findings.append(Finding(tool.command, False, f"missing ({tool.purpose})", tool.package))
            continue
        problem = tool.feature(path) if tool.feature is not None else None
        if problem is not None:
            findings.append(Finding(tool.command, False, f"{path}: {problem}", tool.package))
        else:
            findings.append(Finding(tool.command, True, path))
    return findings


def install_line(findings: Iterable[Finding]) -> str | None:
    """The apt-get line that installs what the findings lack, or None when nothing does."""
    packages = list(dict.fromkeys(f.package for f in findings if not f.ok and f.package))
    if not packages:
        return None
    return "apt-get install -y --no-install-recommends " + " ".join(packages)


def require(tools: Iterable[Tool] | None = None) -> dict[str, str]:
    """The path of every tool; LabUnavailable (one line: what is missing, how to fix it) when the
    machine cannot run a lab."""
    tools = TOOLS if tools is None else tuple(tools)
    findings = check(tools)
    bad = [f for f in findings if not f.ok]
    if bad:
        what = "; ".join(f"{f.name}: {f.detail}" for f in bad)
        line = install_line(bad)
        fix = f" (install: {line})" if line else ""
        raise LabUnavailable(f"the lab cannot run here: {what}{fix}; see 'ringprobe lab doctor'")
    paths: dict[str, str] = {}
    for tool in tools:
        path = find(tool.command)
        assert path is not None  # check() found it a moment ago
        paths[tool.command] = path
    return paths
