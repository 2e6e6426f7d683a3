"""The handshake-DPI scenarios' rules act on the probe's own checks, run one by one from the
client namespace (no probe run, no analysis: test_scenarios.py checks the verdicts):

- tg-mtproto-handshake-drop: a TCP connect to a data center succeeds while the MTProto exchange
  gets nothing back (generic_timeout_error, 0 bytes received), IPv4 and IPv6, with and without
  TCP timestamps (the byte thresholds are derived for both); restored, the same check gets its
  resPQ.
- wa-prologue-rst: a TCP connect to a chat server succeeds while the WhatsApp hello is reset
  (connection_reset), on 443 and 5222, IPv4 and IPv6, with and without TCP timestamps (the two
  TCP header lengths the rules match); restored, the hello gets its ServerHello.
- each rule leaves the other app's handshake and a TLS handshake to a neutral site alone.

Every test restores the tspu (and the client's TCP timestamps) in ``finally``, so a failed
assertion cannot leave a rule behind for the next test. Needs root (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from probe.lab import Lab
from probe.lab import scenario as sc
from tests.lab.clientcheck import run_check

pytestmark = pytest.mark.lab

TG_DROP = "tg-mtproto-handshake-drop"
WA_RST = "wa-prologue-rst"
# As the scenario runner's checks: a dropped request costs the check this long.
TIMEOUT = sc.CHECK_TIMEOUT
# What mtproto_handshake sends: the 64-byte obfuscated2 init and req_pq_multi in a 44-byte
# intermediate frame; what whatsapp_chat sends: the 4-byte WA header and a 39-byte hello frame.
MTPROTO_SENT = 108
WHATSAPP_SENT = 43
# The neutral TLS control (set ctl), reached by address as the probe reaches the first answer.
CONTROL_HOST = "www.example.com"


@contextmanager
def applied(lab: Lab, name: str) -> Iterator[None]:
    """A built-in scenario's rules in the tspu for the block, restored whatever happens. Loaded
    by path, so the test does not depend on the name being in BUILTIN."""
    scenario = sc.load_scenario_file(sc.builtin_path(name))
    sc.apply_scenario(lab, scenario)
    try:
        yield
    finally:
        sc.restore(lab)


@contextmanager
def tcp_timestamps(lab: Lab, enabled: bool) -> Iterator[None]:
    """The client namespace's TCP timestamps (one sysctl for IPv4 and IPv6) for the block."""
    key = "net.ipv4.tcp_timestamps"
    before = _sysctl(lab, key)
    _sysctl(lab, key, "1" if enabled else "0")
    try:
        yield
    finally:
        _sysctl(lab, key, before)


def _sysctl(lab: Lab, key: str, value: str | None = None) -> str:
    argv = ["sysctl", "-n", key] if value is None else ["sysctl", "-w", f"{key}={value}"]
    done = lab.run_in("client", argv, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _dc(lab: Lab, family: int) -> str:
    return lab.sets["tg_dc" if family == 4 else "tg_dc6"][0]


def _chat(lab: Lab, family: int) -> str:
    return lab.sets["wa_signal" if family == 4 else "wa_signal6"][0]


def _control(lab: Lab) -> str:
    address = lab.plan.endpoint(CONTROL_HOST).v4
    assert address is not None
    return address


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["failure"] is None, result
    details: dict[str, Any] = result["details"]
    return details


def _connect_then_check(
    lab: Lab, name: str, kind: str, address: str, port: int, *, timestamps: bool
) -> dict[str, Any]:
    """With a scenario's rules (and the client's TCP timestamps on or off): a TCP connect to
    ``address:port`` must succeed; the result of the protocol check ``kind`` that follows."""
    with tcp_timestamps(lab, timestamps), applied(lab, name):
        connect = run_check(lab, "tcp", address, port, timeout=TIMEOUT)
        assert connect["failure"] is None, connect
        return run_check(lab, kind, address, port, timeout=TIMEOUT)


def _assert_res_pq(lab: Lab, address: str, port: int) -> None:
    details = _ok(run_check(lab, "mtproto", address, port, timeout=TIMEOUT))
    assert details["res_pq"] is True


def _assert_server_hello(lab: Lab, address: str, port: int) -> None:
    details = _ok(run_check(lab, "whatsapp", address, port, timeout=TIMEOUT))
    assert details["server_hello"] is True


def _assert_tls_ok(lab: Lab) -> None:
    result = run_check(lab, "tls", _control(lab), 443, timeout=TIMEOUT, host=CONTROL_HOST)
    assert _ok(result)["sni"] == CONTROL_HOST


# --- tg-mtproto-handshake-drop --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "port", "timestamps"),
    [
        (4, 443, True),
        (4, 80, True),
        (4, 5222, True),
        (6, 443, True),  # the IPv6 DCs listen on 443 only, as the catalog has them
        (4, 443, False),
        (6, 443, False),
    ],
)
def test_mtproto_drop_lets_the_connect_through_and_silences_the_request(
    lab: Lab, family: int, port: int, timestamps: bool
) -> None:
    dc = _dc(lab, family)
    result = _connect_then_check(lab, TG_DROP, "mtproto", dc, port, timestamps=timestamps)
    assert result["failure"] == "generic_timeout_error", result
    details = result["details"]
    assert details["bytes_sent"] == MTPROTO_SENT  # the write itself went out
    assert details["bytes_received"] == 0
    assert details["res_pq"] is False
    assert "connect" in result["timings"]  # the check's own handshake passed the rule too
    _assert_res_pq(lab, dc, port)


def test_mtproto_drop_leaves_whatsapp_and_tls_alone(lab: Lab) -> None:
    with applied(lab, TG_DROP):
        for family in (4, 6):
            _assert_server_hello(lab, _chat(lab, family), 443)
        _assert_tls_ok(lab)


# --- wa-prologue-rst ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "port", "timestamps"),
    [
        (4, 443, True),
        (4, 5222, True),
        (6, 443, True),
        (6, 5222, True),
        (4, 5222, False),  # a 20-byte TCP header: the doff 5 rules
        (6, 443, False),
    ],
)
def test_whatsapp_prologue_is_reset_after_the_connect(
    lab: Lab, family: int, port: int, timestamps: bool
) -> None:
    chat = _chat(lab, family)
    result = _connect_then_check(lab, WA_RST, "whatsapp", chat, port, timestamps=timestamps)
    assert result["failure"] == "connection_reset", result
    details = result["details"]
    assert details["bytes_sent"] == WHATSAPP_SENT
    assert details["bytes_received"] == 0
    assert details["server_hello"] is False
    _assert_server_hello(lab, chat, port)


def test_whatsapp_rst_leaves_mtproto_and_tls_alone(lab: Lab) -> None:
    with applied(lab, WA_RST):
        for family in (4, 6):
            _assert_res_pq(lab, _dc(lab, family), 443)
        _assert_tls_ok(lab)
