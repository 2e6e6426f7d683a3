"""The trace check localizes the lab's censor: with a built-in scenario's rules in the tspu
(hop 2), each trigger meets its interference at TTL 3, after hop 2 (198.51.100.5, or its IPv6
twin), while its control reaches the border (hop 3) at the same TTL and is not localized:

- calls-stun-cookie-drop (every UDP datagram with the STUN magic cookie dropped): the ``stun``
  trigger (a Binding request) and the ``call`` trigger (WhatsApp's call opening, a STUN
  Allocate), IPv4 and IPv6: ``drop``;
- signal-sni-rst (a RST for ClientHellos naming signal.org): the ``tls`` trigger: ``rst``;
- wa-prologue-rst (a RST for the WA prologue): the ``whatsapp`` trigger: ``rst``;
- an open lab: the stun trigger reaches the STUN server at TTL 4, every router answering;
- the same rules placed at the border (hop 3, ``placement = "border"``), the last router before
  the servers: ``rst`` / ``drop`` at TTL 4, localized at hop 3, because each control shows the
  path going on to the destination there: the neutral SNI is answered, the cookie-less RFC 3489
  Binding is answered, the prologue's random bytes are refused by the chat server but
  acknowledged by its TCP (``acked``), and the call opening's control is echoed by the lab's
  reflector when the trace signs both for it (its secret). Unsigned, nobody answers the call
  opening or its control at the last hop, and the trace claims no hop there.

Each trace runs in the client namespace (a child interpreter, as tests/lab/clientcheck.py runs
checks), with an allow-list of the lab's ranges alone. Packet counts are asserted: one datagram
per TTL for UDP, a bounded handful of segments per TTL for TCP, at most ``MAX_TTL`` TTLs. Every
test restores the routers in ``finally``. Needs root (see conftest.py).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest

from probe.checks import trace as tr
from probe.lab import Lab, plan
from probe.lab import scenario as sc

pytestmark = pytest.mark.lab

MAX_TTL: Final = 8
WAIT: Final = 0.5
CONNECT_TIMEOUT: Final = 3.0
# TCP segments one probe may send: SYN, ACK, the payload and its retransmissions within WAIT
# (RTO >= 200 ms: at most 2) plus GRACE, ACKs of the server's answer, the closing RST.
TCP_PACKETS_PER_PROBE: Final = 9
_SLACK: Final = 25.0

_SCRIPT: Final = textwrap.dedent(
    """
    import asyncio, json, sys
    from probe.allowlist import AllowList
    from probe.checks.base import CheckContext
    from probe.checks.trace import trace, transport_of
    from probe.model import Target

    spec = json.loads(sys.argv[1])
    secret = None
    if spec["secret_file"]:
        with open(spec["secret_file"], encoding="ascii") as handle:
            secret = bytes.fromhex(handle.read().strip())
    ctx = CheckContext(
        allow=AllowList.from_sources(spec["ranges"], environ={}), timeout=spec["timeout"]
    )
    transport = transport_of(spec["trigger"])
    target = Target(
        id="lab-trace", app=spec["app"], role="relay" if transport == "udp" else "signaling",
        port=spec["port"], transport=transport, expect="unknown", source="lab test",
        date="2026-12-05", host=spec["host"],
    )
    pair = asyncio.run(trace(
        ctx, target, spec["address"], 1, trigger=spec["trigger"], max_ttl=spec["max_ttl"],
        wait=spec["wait"], secret=secret, prime=spec["prime"],
    ))
    print(json.dumps({"trigger": pair.trigger.to_dict(), "control": pair.control.to_dict()}))
    """
)


@contextmanager
def applied(lab: Lab, name: str | None, placement: str = "tspu") -> Iterator[None]:
    """A built-in scenario's rules (None: none) for the block, at the tspu or (``placement =
    "border"``, docs/lab.md) at the border, restored whatever happens."""
    if name is None:
        sc.restore(lab)
    else:
        text = sc.builtin_path(name).read_text(encoding="utf-8")
        if placement != "tspu":
            text = f"placement = {json.dumps(placement)}\n" + text
        sc.apply_scenario(lab, sc.parse_scenario(text, f"{name} at the {placement}"))
    try:
        yield
    finally:
        sc.restore(lab)


def run_trace(
    lab: Lab,
    trigger: str,
    address: str,
    port: int,
    *,
    app: str,
    host: str | None = None,
    signed: bool = False,
    prime: float = tr.DEFAULT_PRIME,
) -> dict[str, dict[str, Any]]:
    """Trace from the client namespace; both records, as dicts. ``signed``: the call (or cut)
    trigger signed with the lab reflector's secret; ``prime``: the cut trigger's."""
    spec = {
        "prime": prime,
        "secret_file": str(lab.reflector_secret_file) if signed else None,
        "trigger": trigger,
        "address": address,
        "port": port,
        "app": app,
        "host": host,
        "timeout": CONNECT_TIMEOUT,
        "max_ttl": MAX_TTL,
        "wait": WAIT,
        "ranges": list(plan.LAB_RANGES),
    }
    budget = tr.time_budget(MAX_TTL, WAIT, CONNECT_TIMEOUT) + prime
    done = lab.run_in(
        "client", [sys.executable, "-c", _SCRIPT, json.dumps(spec)], timeout=budget + _SLACK
    )
    assert done.returncode == 0, done.stderr
    records: dict[str, dict[str, Any]] = json.loads(done.stdout)
    for record in records.values():
        assert record["check"] == "trace"
        assert record["failure"] is None, record
    return records


def _address(lab: Lab, label: str, version: int) -> str:
    endpoint = lab.plan.endpoint(label)
    address = endpoint.v4 if version == 4 else endpoint.v6
    assert address is not None
    return address


def _routers(version: int) -> list[str]:
    return [plan.hop_address(hop, version) for hop in (1, 2, 3)]


def _assert_localized_at_hop_2(
    records: dict[str, dict[str, Any]], mechanism: str, version: int
) -> None:
    """The trigger meets ``mechanism`` at TTL 3, after hop 2; its control reaches hop 3 there
    and is not localized."""
    _assert_localized(records, mechanism, version, hop=2)


def _assert_localized(
    records: dict[str, dict[str, Any]], mechanism: str, version: int, *, hop: int
) -> None:
    """The trigger meets ``mechanism`` at TTL hop + 1, after router ``hop``, every router before
    it answering; its control gets past that TTL (a router, or the destination) and is not
    localized."""
    routers = _routers(version)
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert [h["hop"] for h in trigger["hops"][:hop]] == routers[:hop]
    assert trigger["first_interfering_ttl"] == hop + 1, trigger["hops"]
    assert trigger["interference"] == mechanism
    assert trigger["localized_hop"] == hop
    assert trigger["localized_address"] == routers[hop - 1]
    assert trigger["hops"][hop]["interference"] == mechanism
    assert [h["hop"] for h in control["hops"][:3]] == routers
    assert [h["outcome"] for h in control["hops"][:3]] == ["time_exceeded"] * 3
    assert control["first_interfering_ttl"] is None
    assert control["localized_hop"] is None


def _assert_udp_packets(records: dict[str, dict[str, Any]]) -> None:
    for record in records.values():
        details = record["details"]
        assert details["ttls_traced"] <= MAX_TTL
        assert len(details["hops"]) == details["ttls_traced"]
        assert [h["packets"] for h in details["hops"]] == [1] * details["ttls_traced"]
        assert details["packets_sent"] == details["ttls_traced"]


def _assert_tcp_packets(records: dict[str, dict[str, Any]]) -> None:
    for record in records.values():
        details = record["details"]
        assert details["ttls_traced"] <= MAX_TTL
        assert all(3 <= h["packets"] <= TCP_PACKETS_PER_PROBE for h in details["hops"]), details
        assert details["packets_sent"] <= details["ttls_traced"] * TCP_PACKETS_PER_PROBE


def test_open_lab_stun_trace_reaches_the_server(lab: Lab) -> None:
    with applied(lab, None):
        records = run_trace(lab, "stun", _address(lab, "neutral-stun", 4), 3478, app="control")
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert [h["hop"] for h in trigger["hops"][:3]] == _routers(4)
    assert trigger["hops"][3]["outcome"] == "answered"
    assert trigger["reached"] is True
    assert trigger["destination_ttl"] == 4
    assert trigger["ttls_traced"] == 4  # the answer ends the trace
    assert trigger["first_interfering_ttl"] is None
    assert control["first_interfering_ttl"] is None
    # coturn keeps RFC 3489 backward compatibility: the cookie-less control is answered too
    assert control["hops"][3]["outcome"] == "answered"
    _assert_udp_packets(records)


@pytest.mark.parametrize("version", [4, 6])
def test_stun_cookie_drop_is_localized_at_the_tspu(lab: Lab, version: int) -> None:
    with applied(lab, "calls-stun-cookie-drop"):
        records = run_trace(
            lab, "stun", _address(lab, "neutral-stun", version), 3478, app="control"
        )
    _assert_localized_at_hop_2(records, "drop", version)
    # the trigger is silent from TTL 3 on, while its control (the cookie-less RFC 3489 Binding)
    # is answered by the server at TTL 4, which ends the trace
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert {h["outcome"] for h in trigger["hops"][2:]} == {"silent"}
    assert control["hops"][3]["outcome"] == "answered"
    assert trigger["ttls_traced"] == 4
    _assert_udp_packets(records)


def test_call_opening_is_localized_at_the_tspu(lab: Lab) -> None:
    # The reflector's address: it ignores datagrams without its trailer, as a relay ignores
    # a stranger's call.
    with applied(lab, "calls-stun-cookie-drop"):
        records = run_trace(lab, "call", _address(lab, "reflector", 4), 3478, app="whatsapp")
    _assert_localized_at_hop_2(records, "drop", 4)
    _assert_udp_packets(records)


def test_sni_rst_is_localized_at_the_tspu(lab: Lab) -> None:
    host = "chat.signal.org"
    with applied(lab, "signal-sni-rst"):
        records = run_trace(lab, "tls", _address(lab, host, 4), 443, app="signal", host=host)
    _assert_localized_at_hop_2(records, "rst", 4)
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert trigger["sni"] == host
    assert control["sni"] == "example.org"
    assert control["reached"] is True  # the neutral SNI gets its ServerHello at TTL 4
    assert control["hops"][3]["outcome"] == "answered"
    assert trigger["reached"] is False
    _assert_tcp_packets(records)


def test_whatsapp_prologue_rst_is_localized_at_the_tspu(lab: Lab) -> None:
    with applied(lab, "wa-prologue-rst"):
        records = run_trace(
            lab, "whatsapp", _address(lab, "e1.whatsapp.net", 4), 443, app="whatsapp"
        )
    _assert_localized_at_hop_2(records, "rst", 4)
    _assert_tcp_packets(records)


# --- the same triggers with the rules at the border (hop 3) ---------------------------------------


def test_sni_rst_at_the_border_is_localized_at_hop_3(lab: Lab) -> None:
    host = "chat.signal.org"
    with applied(lab, "signal-sni-rst", placement="border"):
        records = run_trace(lab, "tls", _address(lab, host, 4), 443, app="signal", host=host)
    _assert_localized(records, "rst", 4, hop=3)
    assert records["control"]["details"]["hops"][3]["outcome"] == "answered"
    _assert_tcp_packets(records)


def test_whatsapp_prologue_rst_at_the_border_is_localized_at_hop_3(lab: Lab) -> None:
    # The prologue reset at hop 3, the last router: at TTL 4 the trigger is reset, while the
    # control's random bytes reach the chat server, which refuses them but whose TCP
    # acknowledged them first: the path goes on for the control, so the reset sits after hop 3.
    with applied(lab, "wa-prologue-rst", placement="border"):
        records = run_trace(
            lab, "whatsapp", _address(lab, "e1.whatsapp.net", 4), 443, app="whatsapp"
        )
    _assert_localized(records, "rst", 4, hop=3)
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert control["hops"][3]["outcome"] != "answered", control["hops"]
    assert control["hops"][3]["acked"] is True
    assert trigger["hops"][3]["acked"] is False
    assert [h["acked"] for h in control["hops"][:3]] == [False] * 3  # routers acknowledge nothing
    assert control["reached"] is True
    assert control["destination_ttl"] == 4
    _assert_tcp_packets(records)


def test_a_call_drop_at_the_border_is_localized_at_hop_3_when_signed(lab: Lab) -> None:
    # WhatsApp's call opening (a STUN Allocate, cookie and all) dropped at hop 3: signed for the
    # lab's reflector, the control is echoed at TTL 4 while the trigger gets nothing.
    address = _address(lab, "reflector", 4)
    with applied(lab, "calls-stun-cookie-drop", placement="border"):
        signed = run_trace(lab, "call", address, 3478, app="whatsapp", signed=True)
        unsigned = run_trace(lab, "call", address, 3478, app="whatsapp")
    _assert_localized(signed, "drop", 4, hop=3)
    control = signed["control"]["details"]
    assert control["signed"] is True
    assert control["hops"][3]["outcome"] == "answered"
    _assert_udp_packets(signed)
    # Unsigned, the reflector ignores both: nothing shows the path going on, no hop is claimed.
    trigger, control = unsigned["trigger"]["details"], unsigned["control"]["details"]
    assert [h["hop"] for h in trigger["hops"][:3]] == _routers(4)
    assert trigger["hops"][3]["outcome"] == control["hops"][3]["outcome"] == "silent"
    assert trigger["localized_hop"] is None
    assert control["localized_hop"] is None
    _assert_udp_packets(unsigned)


def test_a_stun_drop_at_the_border_is_localized_at_hop_3(lab: Lab) -> None:
    # STUN dropped by its cookie at hop 3, the last router: at TTL 4 the trigger gets nothing
    # while its control, the cookie-less RFC 3489 Binding, is answered by the STUN server, so the
    # path goes on for the control: the drop sits after hop 3.
    with applied(lab, "calls-stun-cookie-drop", placement="border"):
        records = run_trace(lab, "stun", _address(lab, "neutral-stun", 4), 3478, app="control")
    _assert_localized(records, "drop", 4, hop=3)
    assert records["control"]["details"]["hops"][3]["outcome"] == "answered"
    _assert_udp_packets(records)


# --- a call cut after its first datagrams (calls-cut-after-n), at either placement ---------------

PRIME: Final = 5.0  # calls-cut-after-n cuts after 33 datagrams, ~2 s into the flow


@pytest.mark.parametrize(("placement", "hop"), [("tspu", 2), ("border", 3)])
@pytest.mark.parametrize("app", ["whatsapp", "telegram"])
def test_a_call_cut_is_localized(lab: Lab, placement: str, hop: int, app: str) -> None:
    # The cut trigger primes the call flow and its control at full TTL: the call's echoes stop
    # after its 33rd datagram while the control's go on; the TTL-limited probes that follow on
    # the same flows show the call's datagrams dropped from the censor's hop on.
    port = {"whatsapp": 3478, "telegram": 597}[app]
    with applied(lab, "calls-cut-after-n", placement=placement):
        records = run_trace(
            lab, "cut", _address(lab, "reflector", 4), port, app=app, signed=True, prime=PRIME
        )
    _assert_localized(records, "cut", 4, hop=hop)
    trigger, control = records["trigger"]["details"], records["control"]["details"]
    assert trigger["prime"]["stopped_early"] is True
    assert 20 <= trigger["prime"]["echoed"] <= 33  # the cut's counter, less what was late
    assert trigger["prime"]["last_echoed_seq"] <= 32
    assert control["prime"]["echoed"] == control["prime"]["sent"]
    # stopped about CUT_SILENCE after the cut, before the prime's 5 s (83 datagrams)
    assert control["prime"]["sent"] < PRIME / 0.06
    for details in (trigger, control):
        assert details["ttls_traced"] <= MAX_TTL
        assert [h["packets"] for h in details["hops"]] == [1] * details["ttls_traced"]
        assert details["packets_sent"] == details["prime"]["sent"] + details["ttls_traced"]
    assert control["hops"][3]["outcome"] == "answered"  # the reflector's echo at TTL 4
