"""The lab's Telegram DC and WhatsApp chat emulators, reached by the probe's own checks from the
client namespace. Needs root (see conftest.py)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from probe.lab import Lab, procs
from probe.lab.state import load
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
