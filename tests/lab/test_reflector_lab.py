"""The lab's ringprobe reflector on a real kernel: a recorded server of the internet namespace,
started by `up` and stopped by `down`; it echoes the lab secret's requests from the client
namespace on the apps' ports and the neutral port, and a probe run with call flows gets every
flow echoed. Needs root (see conftest.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Lab, procs, servers
from probe.lab import plan as lab_plan
from probe.lab.state import load
from tests.lab.conftest import unique_name

pytestmark = pytest.mark.lab

# Sends one request per (address, port) with the secret in argv[1]'s file (or, with "wrong", a
# secret of its own) and prints, per request: port, request length, echo length (or "timeout"),
# rx_count, and whether the echo kept the request's bytes before the trailer. A request without an
# echo within 1 s is sent again (a new session), at most 3 times, as a UDP client retries: the
# first IPv6 datagram through a freshly built lab can take over a second (seen on this kernel,
# neighbour discovery on the way; the next ones take milliseconds), which says nothing about the
# reflector. An echo is matched to its request by session.
ECHO_CLIENT = """
import os, socket, sys
from probe.protocols import echo

secret = bytes.fromhex(open(sys.argv[1]).read().strip())
if sys.argv[2] == "wrong":
    secret = os.urandom(32)
for spec in sys.argv[3:]:
    address, port = spec.rsplit("/", 1)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.connect((address, int(port)))
        bodies = {}
        for attempt in range(3):
            session = os.urandom(echo.SESSION_LEN)
            bodies[session] = os.urandom(120)
            request = echo.build_request(secret, bodies[session], session, 0)
            sock.send(request)
            try:
                reply = sock.recv(2048)
                break
            except TimeoutError:
                reply = None
        if reply is None:
            print(spec, len(request), "timeout")
            continue
        trailer = echo.parse_echo(secret, reply)
        kept = reply[:120] == bodies[trailer.session]
        print(spec, len(request), len(reply), trailer.rx_count, kept)
"""


def _echo(lab: Lab, secret: str, *specs: str) -> list[list[str]]:
    argv = [sys.executable, "-c", ECHO_CLIENT, str(lab.reflector_secret_file), secret, *specs]
    done = lab.run_in("client", argv, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_up_starts_the_reflector_as_a_recorded_server_and_down_stops_it(lab_ready: None) -> None:
    built = Lab(unique_name("refl"))
    try:
        built.up()
        state = load(built.state_dir / "state.json")
        assert state is not None
        (record,) = (p for p in state.processes if p.name == "reflector")
        assert procs.is_running(record)
        # In the internet namespace, as `ringprobe reflector`, with the lab's secret.
        assert list(record.argv[2:4]) == ["exec", built.namespace("internet")]
        assert list(record.argv[5:8]) == ["-m", "probe.cli", "reflector"]
        assert str(built.reflector_secret_file) in record.argv
        assert built.reflector_secret_file.stat().st_mode & 0o777 == 0o600
        status = built.status()
        assert status.healthy, status.problems
        assert status.processes["reflector"] is True
        wanted = servers.expected_sockets(built.plan)["reflector"]
        assert wanted <= (procs.sockets(record.pid) or set())
        assert ("udp", "203.0.113.4", 40000) in wanted
        assert ("tcp", "2001:db8:203:113::4", 443) in wanted
    finally:
        built.down()
    assert not procs.is_running(record)
    assert not built.reflector_secret_file.exists()


def test_the_reflector_echoes_the_lab_secret_from_the_client(lab: Lab) -> None:
    v4, v6 = lab.plan.reflector.v4, lab.plan.reflector.v6
    assert v4 == lab.reflector_address
    specs = [f"{v4}/3478", f"{v4}/40000", f"{v4}/597", f"{v6}/3478"]
    for line in _echo(lab, "lab", *specs):
        assert len(line) == 5, line
        _spec, sent, got, rx_count, kept = line
        assert got == sent, line  # the echo is exactly as long as the request
        assert (rx_count, kept) == ("1", "True"), line
    # Anything without the secret's MAC gets no answer: the reflector amplifies nothing.
    assert [line[2] for line in _echo(lab, "wrong", f"{v4}/3478")] == ["timeout"]


def _records(out: Path) -> list[dict[str, Any]]:
    (path,) = out.glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_probe_run_with_call_flows_gets_every_flow_echoed(lab: Lab, tmp_path: Path) -> None:
    duration = 1.5
    done = lab.run_probe(
        tmp_path,
        ["--apps", "whatsapp,telegram", "--timeout", "5", "--json", *lab.call_flow_args(duration)],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    flows = [r for r in _records(tmp_path) if r["check"] == "call_flow"]
    by_app: dict[str, dict[str, dict[str, Any]]] = {}
    for record in flows:
        app = record["target"]["id"].split("-", 1)[0]
        by_app.setdefault(app, {})[record["details"]["flow"]] = record
    assert sorted(by_app) == ["telegram", "whatsapp"]
    ports = {"whatsapp": 3478, "telegram": 597}
    for app, three in by_app.items():
        assert sorted(three) == ["call", "call_neutral_port", "control"], app
        for flow, record in three.items():
            details = record["details"]
            assert record["failure"] is None, (app, flow)
            assert record["target"]["address"] == lab.reflector_address
            neutral = flow == "call_neutral_port"
            assert record["target"]["port"] == (
                lab_plan.REFLECTOR_NEUTRAL_PORT if neutral else ports[app]
            )
            assert details["duration"] == duration
            assert details["packets_sent"] == 25  # 1.5 s at one datagram per 60 ms
            assert details["packets_echoed"] == details["packets_sent"], (app, flow)
            assert details["reflector_rx"] == details["packets_sent"], (app, flow)
            assert details["invalid"] == 0
