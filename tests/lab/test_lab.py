"""The lab on a real kernel: topology, servers, sets, idempotent up, clean down, crash recovery,
and an open-lab probe run. Needs root (see conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Lab, hop_address, plan, procs
from probe.lab.state import load
from probe.targets import load_catalog
from tests.lab.conftest import unique_name
from tests.recordcheck import assert_valid

pytestmark = pytest.mark.lab

# A probe check in the open lab answers in milliseconds; this only bounds a broken lab.
CHECK_TIMEOUT = "5"
# For checks expected to time out (dropped by a rule): short, so the test stays fast.
DROP_TIMEOUT = "2"


def _records(out_dir: Path) -> list[dict[str, Any]]:
    files = sorted(out_dir.glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def _netns() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def _ours(lab: Lab) -> list[str]:
    return [line.split()[0] for line in _netns().splitlines() if line.startswith(lab.prefix)]


def _recorded(lab: Lab) -> list[procs.ProcessRecord]:
    state = load(lab.state_dir / "state.json")
    assert state is not None
    return state.processes


def _assert_gone(lab: Lab, records: list[procs.ProcessRecord]) -> None:
    """No namespace, no running process (a zombie waiting for init to reap it is not running),
    no files of the lab."""
    assert _ours(lab) == []
    running = [f"{r.name} (pid {r.pid})" for r in records if procs.is_running(r)]
    assert running == []
    assert not lab.state_dir.exists()
    assert not lab.client_resolv_conf.parent.exists()


def test_up_is_idempotent(lab: Lab) -> None:
    pids = {r.name: r.pid for r in _recorded(lab)}
    lab.add_rule("ip daddr @wa_signal drop")
    lab.set_dns_overrides({"web.whatsapp.com": "nxdomain"})
    again = lab.up()
    assert again.reused
    # Reused, but open again: no scenario rule, no DNS override.
    assert (
        "drop" not in lab.run_in("tspu", ["nft", "list", "chain", "inet", "tspu", "forward"]).stdout
    )
    assert "web.whatsapp.com" in (lab.state_dir / "conf" / "hosts").read_text()
    # A second Lab object (another process would make one) finds the same lab.
    assert Lab(lab.name).up().reused
    assert {r.name: r.pid for r in _recorded(lab)} == pids
    assert sorted(_ours(lab)) == sorted(lab.namespaces.values())
    status = lab.status()
    assert status.healthy, status.problems
    assert again.elapsed < 2


@pytest.mark.parametrize(("ttl", "hop"), [(1, 1), (2, 2), (3, 3)])
@pytest.mark.parametrize("version", [4, 6])
def test_ttl_expires_at_each_router(lab: Lab, ttl: int, hop: int, version: int) -> None:
    site = lab.plan.endpoint("www.example.com")
    target = site.v4 if version == 4 else site.v6
    assert target is not None
    done = lab.run_in(
        "client",
        ["ping", f"-{version}", "-n", "-c", "1", "-W", "2", "-t", str(ttl), target],
        timeout=10,
    )
    expected = hop_address(hop, version)
    assert f"From {expected} " in done.stdout, done.stdout + done.stderr
    assert "exceeded" in done.stdout


def test_ttl_four_reaches_the_internet(lab: Lab) -> None:
    done = lab.run_in("client", ["ping", "-n", "-c", "1", "-W", "2", "-t", "4", lab.resolver])
    assert done.returncode == 0, done.stdout + done.stderr


def test_open_lab_probe_run_succeeds_everywhere(lab: Lab, tmp_path: Path) -> None:
    done = lab.run_probe(tmp_path, ["--timeout", CHECK_TIMEOUT, "--json"], timeout=120)
    assert done.returncode == 0, done.stderr
    records = _records(tmp_path)
    for record in records:
        assert_valid(record)
        assert record["probe"]["vantage"] == "lab"
    failures = Counter((r["check"], r["failure"]) for r in records if r["failure"])
    assert failures == Counter(), failures
    catalog = load_catalog(lab.catalog_path)
    connects = {r["target"]["id"] for r in records if r["check"] == "tcp_connect"}
    assert connects == {t.id for t in catalog if t.transport == "tcp"}
    checks = Counter(r["check"] for r in records)
    assert set(checks) == {
        "dns_system",
        "dns_doh",
        "tcp_connect",
        "tls_handshake",
        "http_get",
        "mtproto",
        "whatsapp_chat",
        "quic",
        "stun_binding",
        "stun_allocate",
        "wa_relay_ping",
        "tg_reflector",
    }
    # Every call-path server gave its known answer (probe.checks.relay), on every entry whose
    # expect asks for it: relays the pong, reflectors their answer, STUN and TURN servers a
    # Binding success, TURN servers the 401 with realm and nonce (telegram.org on Telegram's).
    relay_checks = {
        "stun_binding": ("stun", "turn"),
        "stun_allocate": ("turn",),
        "wa_relay_ping": ("wa_relay",),
        "tg_reflector": ("reflector",),
    }
    by_id = {t.id: t for t in catalog}
    for check, expects in relay_checks.items():
        ran = [r for r in records if r["check"] == check]
        assert all(r["details"]["answered"] for r in ran), check
        wanted = {t.id for t in catalog if t.expect in expects}
        assert {r["target"]["id"] for r in ran} == wanted, check
    for r in records:
        if r["check"] == "stun_allocate":
            assert r["details"]["error_code"] == 401
            app = by_id[r["target"]["id"]].app
            assert r["details"]["realm"] == (
                plan.TG_TURN_REALM if app == "telegram" else plan.DEFAULT_REALM
            )
    # Every endpoint that speaks its app's protocol answered it, and HTTP/3 worked.
    answered = {
        "mtproto": lambda d: d["res_pq"],
        "whatsapp_chat": lambda d: d["server_hello"],
        "quic": lambda d: d["quic_version"] == 1 and d["status"] == 200,
    }
    for check, ok in answered.items():
        done = [r for r in records if r["check"] == check]
        assert all(ok(r["details"]) for r in done), check
        expect = {"mtproto": "mtproto", "whatsapp_chat": "whatsapp", "quic": "http3"}[check]
        assert {r["target"]["id"] for r in done} == {t.id for t in catalog if t.expect == expect}
    # The client's own address is scrubbed from what is stored.
    text = next(tmp_path.glob("*.jsonl")).read_text()
    assert plan.client_address(4) not in text


def test_drop_rule_on_a_set_times_out_telegram_dcs(lab: Lab, tmp_path: Path) -> None:
    lab.add_rule("ip daddr @tg_dc drop")
    lab.add_rule("ip6 daddr @tg_dc6 drop")
    try:
        done = lab.run_probe(
            tmp_path, ["--apps", "telegram", "--timeout", DROP_TIMEOUT, "--json"], timeout=120
        )
    finally:
        lab.reset_rules()
    assert done.returncode == 0, done.stderr
    connects = {r["target"]["id"]: r for r in _records(tmp_path) if r["check"] == "tcp_connect"}
    dcs = {i: r for i, r in connects.items() if i.startswith("tg-dc")}
    assert len(dcs) == 20
    assert {r["failure"] for r in dcs.values()} == {"generic_timeout_error"}
    # Only the set is dropped: Telegram's web site is not in tg_dc.
    assert connects["tg-web-443"]["failure"] is None


def test_reset_rules_leaves_the_tspu_as_up_made_it(lab: Lab) -> None:
    lab.add_rule("ip daddr @wa_relay udp dport 3478 @th,96,32 0x2112a442 drop")
    mark = "-t mangle -A FORWARD -p tcp -m string --string whatsapp.net --algo bm"
    added = lab.run_in("tspu", ["iptables", *mark.split(), "-j", "CONNMARK", "--set-mark", "7"])
    assert added.returncode == 0, added.stderr
    lab.reset_rules()
    listing = lab.run_in("tspu", ["nft", "list", "ruleset"], timeout=10).stdout
    assert "mangle" not in listing
    assert "drop" not in listing
    assert "set tg_dc {" in listing


def test_dns_overrides_change_the_resolver_not_doh(lab: Lab, tmp_path: Path) -> None:
    lab.set_dns_overrides({"web.whatsapp.com": "0.0.0.0", "e1.whatsapp.net": "nxdomain"})
    try:
        done = lab.run_probe(
            tmp_path, ["--apps", "whatsapp", "--timeout", CHECK_TIMEOUT], timeout=120
        )
    finally:
        lab.clear_dns_overrides()
    assert done.returncode == 0, done.stderr
    dns = {
        (r["target"]["id"], r["check"]): r
        for r in _records(tmp_path)
        if r["check"] in ("dns_system", "dns_doh")
    }
    web = lab.plan.endpoint("web.whatsapp.com")
    spoofed = dns[("wa-web-443", "dns_system")]
    assert spoofed["details"]["addresses"] == ["0.0.0.0"]
    assert spoofed["details"]["consistent"] is False
    assert dns[("wa-web-443", "dns_doh")]["details"]["addresses"] == [web.v4, web.v6]
    assert dns[("wa-e1-443", "dns_system")]["failure"] == "dns_nxdomain_error"
    assert dns[("wa-e1-443", "dns_doh")]["failure"] is None
    # Cleared: the resolver answers the lab address again.
    code = "import socket; print(socket.getaddrinfo('web.whatsapp.com', 443)[0][4][0])"
    again = lab.run_in("client", [sys.executable, "-c", code], timeout=20)
    assert again.stdout.strip() in (web.v4, web.v6), again.stderr


def test_a_second_lab_coexists_and_a_crashed_one_is_rebuilt(lab: Lab) -> None:
    other = Lab(unique_name("crash"))
    try:
        other.up()
        assert set(_ours(other)).isdisjoint(_ours(lab))
        assert lab.status().healthy
        assert other.status().healthy
        resolver = next(r for r in _recorded(other) if r.name == "resolver")
        os.kill(resolver.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while procs.is_running(resolver) and time.monotonic() < deadline:
            time.sleep(0.02)
        status = other.status()
        assert not status.healthy
        assert any("resolver" in p for p in status.problems)
        rebuilt = other.up()
        assert not rebuilt.reused
        assert other.status().healthy
        assert next(r for r in _recorded(other) if r.name == "resolver").pid != resolver.pid
        assert lab.status().healthy  # the first lab was not touched
    finally:
        other.down()


def test_cli_up_then_crash_then_cli_down_leaves_nothing(lab_ready: None) -> None:
    name = unique_name("cli")
    cli = [sys.executable, "-m", "probe.cli", "lab"]
    lab = Lab(name)
    try:
        up = subprocess.run(
            [*cli, "up", "--name", name], capture_output=True, text=True, timeout=60
        )
        assert up.returncode == 0, up.stderr
        assert f"lab {name!r} up (built in " in up.stdout
        records = _recorded(lab)
        resolver = next(r for r in records if r.name == "resolver")
        os.kill(resolver.pid, signal.SIGKILL)  # the crash; namespaces and other servers stay
        down = subprocess.run(
            [*cli, "down", "--name", name], capture_output=True, text=True, timeout=60
        )
        assert down.returncode == 0, down.stderr
        assert "removed 5 namespaces" in down.stdout
        _assert_gone(lab, records)
    finally:
        lab.down()


def test_down_without_state_still_removes_namespaces_and_processes(lab_ready: None) -> None:
    lab = Lab(unique_name("lost"))
    try:
        lab.up()
        records = _recorded(lab)
        (lab.state_dir / "state.json").unlink()  # as if the state had been lost
        status = lab.status()
        assert status.state == "none"
        assert status.problems
        result = lab.down()
        assert len(result.namespaces) == 5
        _assert_gone(lab, records)
    finally:
        lab.down()
