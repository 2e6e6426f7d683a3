"""The lab's Telegram DC and WhatsApp chat emulators, reached by the probe's own checks from the
client namespace. Needs root (see conftest.py)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from probe.lab import Lab, plan, procs
from probe.lab.state import load

pytestmark = pytest.mark.lab

# Runs in the client namespace: one check against one lab address, allowed the lab ranges only;
# prints the record's failure and details as JSON.
_CHECK = textwrap.dedent(
    """
    import asyncio, json, sys
    from probe.allowlist import AllowList
    from probe.checks.base import CheckContext
    from probe.checks.mtproto import mtproto_handshake
    from probe.checks.whatsapp import whatsapp_chat
    from probe.model import Target

    kind, address, port, ranges = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    ctx = CheckContext(allow=AllowList.from_sources(ranges, environ={}), timeout=5.0)
    app = "telegram" if kind == "mtproto" else "whatsapp"
    target = Target(
        id=f"lab-{kind}", app=app, role="signaling", port=port, transport="tcp",
        expect="unknown", source="lab test", date="2026-01-01", address=address,
    )
    check = mtproto_handshake if kind == "mtproto" else whatsapp_chat
    record = asyncio.run(check(ctx, target, address, 1))
    print(json.dumps({"failure": record.failure, "details": record.details}))
    """
)


def _run_check(lab: Lab, kind: str, address: str, port: int) -> dict[str, object]:
    # The allow-list is built from these ranges alone (environ={}), not from the environment.
    argv = [sys.executable, "-c", _CHECK, kind, address, str(port), *plan.LAB_RANGES]
    done = lab.run_in("client", argv, timeout=30)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_emulators_run_as_a_recorded_server(lab: Lab) -> None:
    state = load(lab.state_dir / "state.json")
    assert state is not None
    record = next(p for p in state.processes if p.name == "emulators")
    assert procs.is_running(record)
    assert "probe.lab.emulators" in record.argv


def test_telegram_dc_answers_req_pq_multi(lab: Lab) -> None:
    dc = lab.sets["tg_dc"][0]
    result = _run_check(lab, "mtproto", dc, 443)
    assert result["failure"] is None, result
    details = result["details"]
    assert isinstance(details, dict)
    assert details["res_pq"] is True
    assert details["fingerprints"] == 1
    assert len(details["server_nonce"]) == 32


def test_telegram_dc_answers_over_ipv6(lab: Lab) -> None:
    dc6 = lab.sets["tg_dc6"][0]
    result = _run_check(lab, "mtproto", dc6, 443)
    assert result["failure"] is None, result


def test_whatsapp_chat_answers_with_a_server_hello(lab: Lab) -> None:
    e1 = lab.plan.endpoint("e1.whatsapp.net")
    assert e1.v4 is not None
    result = _run_check(lab, "whatsapp", e1.v4, 5222)
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
