"""The lab's emulators (Telegram DC, WhatsApp chat, WhatsApp relay, Telegram reflector) and
coturn on Telegram's TURN, reached by the probe's own checks from the client namespace. Needs root
(see conftest.py)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from typing import Final

import pytest

from probe.lab import Lab, emulators, plan, procs, servers
from probe.lab.state import load
from probe.protocols import stun
from tests.lab.clientcheck import run_check

pytestmark = pytest.mark.lab


def test_emulators_run_as_a_recorded_server(lab: Lab) -> None:
    state = load(lab.state_dir / "state.json")
    assert state is not None
    record = next(p for p in state.processes if p.name == "emulators")
    assert procs.is_running(record)
    assert "probe.lab.emulators" in record.argv


def test_telegram_dc_answers_req_pq_multi(lab: Lab) -> None:
    dc = lab.sets["tg_dc"][0]
    result = run_check(lab, "mtproto", dc, 443)
    assert result["failure"] is None, result
    details = result["details"]
    assert isinstance(details, dict)
    assert details["res_pq"] is True
    assert details["fingerprints"] == 1
    assert len(details["server_nonce"]) == 32


def test_telegram_dc_answers_over_ipv6(lab: Lab) -> None:
    dc6 = lab.sets["tg_dc6"][0]
    result = run_check(lab, "mtproto", dc6, 443)
    assert result["failure"] is None, result


def test_whatsapp_chat_answers_with_a_server_hello(lab: Lab) -> None:
    e1 = lab.plan.endpoint("e1.whatsapp.net")
    assert e1.v4 is not None
    result = run_check(lab, "whatsapp", e1.v4, 5222)
    assert result["failure"] is None, result
    details = result["details"]
    assert isinstance(details, dict)
    assert details["server_hello"] is True
    assert details["static_length"] == 48


def test_bad_input_is_hung_up_on(lab: Lab) -> None:
    dc = lab.sets["tg_dc"][0]
    e1 = lab.plan.endpoint("e1.whatsapp.net").v4
    code = textwrap.dedent(
        """
        import socket, sys
        for address, port in ((sys.argv[1], 443), (sys.argv[2], 5222)):
            with socket.create_connection((address, port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\\r\\n" + bytes(64))
                print(len(s.recv(4096)))  # 0: closed by the server, no answer
        """
    )
    done = lab.run_in("client", [sys.executable, "-c", code, dc, str(e1)], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]


# --- UDP: WhatsApp relays, Telegram reflectors (and coturn on Telegram's TURN) ---------------

# Seconds a relay check may take when its answer is dropped on the way: short, the test waits it.
DROP_TIMEOUT = 2.0
WA_RELAY_PORTS = (plan.STUN_PORT, plan.WA_WEB_RELAY_PORT)


def _first(lab: Lab, base: str, version: int) -> str:
    return lab.sets[base if version == 4 else f"{base}6"][0]


def test_emulators_listen_on_the_relay_and_reflector_sockets(lab: Lab) -> None:
    wanted = servers.expected_sockets(lab.plan)["emulators"]
    sets = lab.sets
    for address in (*sets["wa_relay"], *sets["wa_relay6"]):
        assert {("udp", address, p) for p in WA_RELAY_PORTS} <= wanted
    for address in (*sets["tg_reflector"], *sets["tg_reflector6"]):
        assert {("udp", address, p) for p in plan.TG_REFLECTOR_PORTS} <= wanted
    state = load(lab.state_dir / "state.json")
    assert state is not None
    found = procs.sockets(state.processes[0].pid)
    assert found is not None
    assert wanted <= found
    assert lab.status().healthy


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("port", WA_RELAY_PORTS)
def test_whatsapp_relay_answers_ping_and_binding(lab: Lab, version: int, port: int) -> None:
    relay = _first(lab, "wa_relay", version)
    ping = run_check(lab, "wa_relay_ping", relay, port)
    assert ping["failure"] is None, ping
    assert ping["details"]["answered"] is True
    assert ping["details"]["response_type"] == stun.WHATSAPP_PONG
    assert ping["details"]["bytes_received"] == ping["details"]["bytes_sent"] == stun.HEADER_LEN
    binding = run_check(lab, "stun_binding", relay, port)
    assert binding["failure"] is None, binding
    assert binding["details"]["mapped_family"] == f"ipv{version}"


def test_whatsapp_relay_asks_an_allocate_for_credentials(lab: Lab) -> None:
    result = run_check(lab, "stun_allocate", _first(lab, "wa_relay", 4), plan.STUN_PORT)
    assert result["failure"] is None, result
    assert result["details"]["error_code"] == 401
    assert result["details"]["realm"] == plan.DEFAULT_REALM
    assert result["details"]["nonce"] is True


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("port", plan.TG_REFLECTOR_PORTS)
def test_telegram_reflector_answers_the_hello(lab: Lab, version: int, port: int) -> None:
    result = run_check(lab, "tg_reflector", _first(lab, "tg_reflector", version), port)
    assert result["failure"] is None, result
    details = result["details"]
    assert details["answered"] is True
    assert details["special"] is True
    assert details["tlid"] == emulators.TLID_UDP_REFLECTOR_PEER_INFO
    # Never more bytes back than sent (the hello is 40 bytes, the answer 32).
    assert details["bytes_received"] == emulators.REFLECTOR_ANSWER_LEN
    assert details["bytes_received"] <= details["bytes_sent"]


@pytest.mark.parametrize("version", [4, 6])
def test_telegram_turn_is_coturn_with_realm_telegram_org(lab: Lab, version: int) -> None:
    turn = _first(lab, "tg_turn", version)
    binding = run_check(lab, "stun_binding", turn, plan.TG_TURN_PORT)
    assert binding["failure"] is None, binding
    assert binding["details"]["mapped_family"] == f"ipv{version}"
    allocate = run_check(lab, "stun_allocate", turn, plan.TG_TURN_PORT)
    assert allocate["failure"] is None, allocate
    assert allocate["details"]["error_code"] == 401
    assert allocate["details"]["realm"] == plan.TG_TURN_REALM


def test_a_drop_rule_on_the_relays_silences_the_ping(lab: Lab) -> None:
    relay = _first(lab, "wa_relay", 4)
    lab.add_rule("ip daddr @wa_relay drop")
    try:
        dropped = run_check(lab, "wa_relay_ping", relay, plan.STUN_PORT, timeout=DROP_TIMEOUT)
    finally:
        lab.reset_rules()
    assert dropped["failure"] == "generic_timeout_error", dropped
    assert dropped["details"]["answered"] is False
    assert dropped["details"]["bytes_received"] == 0
    again = run_check(lab, "wa_relay_ping", relay, plan.STUN_PORT)
    assert again["failure"] is None, again


_FLOOD: Final = textwrap.dedent(
    """
    import json, os, socket, sys, time
    from probe.protocols import tgcalls
    address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.connect((address, port))
    s.settimeout(0.5)
    junk = [b"", b"x", bytes(40), b"\\xff" * 40, os.urandom(1200), b"\\xff" * 64]
    hello = tgcalls.build_hello(os.urandom(16), b"\\x01\\x02\\x03\\x04")
    sent = sent_bytes = 0
    start = time.monotonic()
    for data in junk:  # not hellos: no answer
        s.send(data)
        sent_bytes += len(data)
    for _ in range(count):
        s.send(hello)
        sent += 1
        sent_bytes += len(hello)
    answers, answer_bytes, sizes = 0, 0, set()
    deadline = time.monotonic() + 10  # bounded even if answers kept coming
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except (TimeoutError, socket.timeout):
            break  # half a second of silence
        answers += 1
        answer_bytes += len(data)
        sizes.add(len(data))
    print(json.dumps({
        "sent": sent, "sent_bytes": sent_bytes, "answers": answers,
        "answer_bytes": answer_bytes, "sizes": sorted(sizes),
        "elapsed": time.monotonic() - start,
    }))
    """
)


def test_a_burst_to_the_reflector_is_rate_limited_and_never_amplified(lab: Lab) -> None:
    # The last reflector socket: its bucket for the client is drained here, not the others'.
    reflector = lab.sets["tg_reflector"][-1]
    port = plan.TG_REFLECTOR_PORTS[-1]
    burst = 200
    done = lab.run_in(
        "client", [sys.executable, "-c", _FLOOD, reflector, str(port), str(burst)], timeout=30
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["sent"] == burst
    assert got["answers"] >= 1
    # At most the bucket's worth over the whole exchange (burst, then refill while it lasted).
    allowed = emulators.UDP_BURST + emulators.UDP_RATE * got["elapsed"] + 1
    assert got["answers"] <= allowed, got
    assert got["answers"] < burst
    assert got["sizes"] == [emulators.REFLECTOR_ANSWER_LEN]
    assert got["answer_bytes"] <= got["sent_bytes"]
    time.sleep(emulators.UDP_BURST / emulators.UDP_RATE)  # the bucket is full again
