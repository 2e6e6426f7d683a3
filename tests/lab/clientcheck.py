"""One of the probe's own checks, run inside a lab's client namespace against one lab address.

The check runs in a child interpreter (``ip netns exec <client> python -c ...``, through
``Lab.run_in``), with an allow-list built from the lab's ranges alone (``environ={}``: not from
the environment), and prints the record's ``failure``, ``details`` and ``timings`` as JSON.

Kinds: ``tcp`` (tcp_connect), ``mtproto`` (mtproto_handshake), ``whatsapp`` (whatsapp_chat) and
``tls`` (tls_handshake with the real SNI, verified against the lab's CA; needs ``host``) over TCP;
``stun_binding``, ``stun_allocate``, ``wa_relay_ping`` and ``tg_reflector`` (probe.checks.relay)
over UDP.
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any, Final

from probe.lab import Lab, plan

KINDS: Final = (
    "tcp",
    "mtproto",
    "whatsapp",
    "tls",
    "stun_binding",
    "stun_allocate",
    "wa_relay_ping",
    "tg_reflector",
)
UDP_KINDS: Final = ("stun_binding", "stun_allocate", "wa_relay_ping", "tg_reflector")

# Seconds the child interpreter may take on top of the check's own timeout (start-up, imports).
_SLACK: Final = 25.0

_SCRIPT: Final = textwrap.dedent(
    """
    import asyncio, json, sys
    from probe.allowlist import AllowList
    from probe.checks.base import CheckContext
    from probe.checks.mtproto import mtproto_handshake
    from probe.checks.relay import stun_allocate, stun_binding, tg_reflector, wa_relay_ping
    from probe.checks.tcp import tcp_connect
    from probe.checks.tls import tls_handshake
    from probe.checks.whatsapp import whatsapp_chat
    from probe.model import Target

    spec = json.loads(sys.argv[1])
    kind, address, port = spec["kind"], spec["address"], spec["port"]
    ctx = CheckContext(
        allow=AllowList.from_sources(spec["ranges"], environ={}),
        timeout=spec["timeout"],
        ca_file=spec["ca_file"],
    )
    app = {
        "mtproto": "telegram", "whatsapp": "whatsapp", "wa_relay_ping": "whatsapp",
        "tg_reflector": "telegram",
    }.get(kind, "control")
    udp = kind in spec["udp_kinds"]
    target = Target(
        id=f"lab-{kind}", app=app, role="relay" if udp else "signaling", port=port,
        transport="udp" if udp else "tcp", expect="unknown", source="lab test",
        date="2026-01-01", address=address, host=spec["host"],
    )
    checks = {
        "tcp": tcp_connect,
        "mtproto": mtproto_handshake,
        "whatsapp": whatsapp_chat,
        "tls": lambda *args: tls_handshake(*args, sni_kind="real"),
        "stun_binding": stun_binding,
        "stun_allocate": stun_allocate,
        "wa_relay_ping": wa_relay_ping,
        "tg_reflector": tg_reflector,
    }
    record = asyncio.run(checks[kind](ctx, target, address, 1))
    print(json.dumps({
        "failure": record.failure, "details": record.details, "timings": record.timings,
    }))
    """
)


def run_check(
    lab: Lab,
    kind: str,
    address: str,
    port: int,
    *,
    timeout: float = 5.0,
    host: str | None = None,
) -> dict[str, Any]:
    """Run one check from the client namespace; its record's failure, details and timings."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    if kind == "tls" and host is None:
        raise ValueError("a TLS check needs the host name to send as its SNI")
    spec = {
        "kind": kind,
        "address": address,
        "port": port,
        "timeout": timeout,
        "host": host,
        "ca_file": str(lab.ca_file),
        "ranges": list(plan.LAB_RANGES),
        "udp_kinds": list(UDP_KINDS),
    }
    argv = [sys.executable, "-c", _SCRIPT, json.dumps(spec)]
    done = lab.run_in("client", argv, timeout=timeout + _SLACK)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
