"""The lab: an emulated censored network on this machine (shared/LAB.md).

Five network namespaces in a row, ``client ── isp ── tspu ── border ── internet``, routed, IPv4
and IPv6, documentation addresses only; real servers in ``internet`` (dnsmasq, nginx, coturn,
dnsdist for DoH, ngtcp2 for HTTP/3); the tspu's ``table inet tspu`` holds the named sets that
scenario rules match, and the border's ``table inet border`` the same sets, for scenarios placed
one hop further out (``placement = "border"``). Nothing leaves the machine and no interface of
the lab exists in the root namespace. Needs root on Linux (``ringprobe lab doctor``).

    lab = Lab("mine")
    lab.up()                      # about a second; idempotent
    lab.add_rule("ip daddr @tg_dc drop")
    lab.run_probe(Path("out"), ["--apps", "telegram"])
    lab.down()                    # every process by pid, every namespace, every file

    from probe.lab.scenario import find_scenario, run_scenario
    result = run_scenario(lab, find_scenario("tg-dc-ip-drop"))   # or a file's path
    result.passed, [(a.app, a.expected, a.got) for a in result.apps]

Modules: ``plan`` (addresses, sets, listeners, lab catalog; pure), ``topology`` (namespaces,
links, routes), ``servers`` (server configuration), ``pki`` (the lab CA), ``procs`` (processes
by pid, listening sockets), ``state`` (the state directory), ``doctor`` (prerequisites),
``lab`` (the ``Lab`` class), ``scenario`` (scenario files: parse, apply, run, judge; the
built-in ones are ``scenarios/*.toml``, docs/lab.md the format). Exceptions: see
``probe.lab.errors``.
"""

from __future__ import annotations

from .errors import (
    LabError,
    LabNameError,
    LabSetupError,
    LabUnavailable,
    ScenarioError,
    ScenarioRunError,
)
from .lab import DEFAULT_NAME, DownResult, Lab, LabStatus, UpResult, prefix_for
from .plan import LAB_RANGES, NAMESPACES, SETS, Plan, build_plan, hop_address

__all__ = [
    "DEFAULT_NAME",
    "LAB_RANGES",
    "NAMESPACES",
    "SETS",
    "DownResult",
    "Lab",
    "LabError",
    "LabNameError",
    "LabSetupError",
    "LabStatus",
    "LabUnavailable",
    "Plan",
    "ScenarioError",
    "ScenarioRunError",
    "UpResult",
    "build_plan",
    "hop_address",
    "prefix_for",
]
