"""`ringprobe run --localize` in the lab: with signal-sni-rst's rules in the tspu (hop 2), the run
traces every app's default triggers after its other checks, and Signal's tls trace meets the
reset at TTL 3, localized after hop 2, while its neutral-SNI control reaches the server and is
not localized; no other app's trace is localized (the rule matches Signal's names only).

The probe runs in the client namespace as a scenario run does (Lab.run_probe: the lab catalog,
an allow-list of the lab's ranges alone), with the scenario applied for the run and the routers
restored in ``finally``. Needs root (see conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest

from probe.checks import trace as tr
from probe.lab import Lab, plan
from probe.lab import scenario as sc
from probe.targets import load_catalog

pytestmark = pytest.mark.lab

MAX_TTL: Final = 5  # the lab's servers are at TTL 4: one more shows the path ends there
TIMEOUT: Final = 3.0
# The signaling checks take under 20 s in the lab (probe.lab.scenario.RUN_DEADLINE), the ten
# traces about 2-5 s each; a TCP trace starts only with its whole budget left
# (2 * 5 * (3 + 1 + 0.15) + 1 = 42.5 s), so the last one needs that much beyond them.
DEADLINE: Final = 180.0
_SLACK: Final = 60.0
# TCP segments one probe may send (tests/lab/test_trace_lab.py TCP_PACKETS_PER_PROBE).
TCP_PACKETS_PER_PROBE: Final = 9


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_localized(
    lab: Lab, tmp_path: Path, name: str, args: list[str], placement: str = "tspu"
) -> dict[str, Any]:
    """``ringprobe run --localize`` in the client namespace with built-in scenario ``name``'s
    rules at ``placement``, restored whatever happens; the run's JSON summary."""
    text = sc.builtin_path(name).read_text(encoding="utf-8")
    if placement != "tspu":
        text = f"placement = {json.dumps(placement)}\n" + text
    sc.apply_scenario(lab, sc.parse_scenario(text, f"{name} at the {placement}"))
    try:
        done = lab.run_probe(
            tmp_path / "out",
            ["--timeout", f"{TIMEOUT:g}", "--deadline", f"{DEADLINE:g}", "--json",
             "--localize", "--localize-max-ttl", str(MAX_TTL), *args],
            timeout=DEADLINE + _SLACK,
        )  # fmt: skip
    finally:
        sc.restore(lab)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_run_localize_finds_the_signal_sni_reset_at_the_tspu(lab: Lab, tmp_path: Path) -> None:
    summary = run_localized(lab, tmp_path, "signal-sni-rst", [])
    assert summary["status"] == "complete", summary["skipped"]
    assert summary["settings"]["localize"] is True
    assert summary["settings"]["localize_max_ttl"] == MAX_TTL
    assert not [s for s in summary["skipped"] if s["target"] == "trace"]
    rows = _records(Path(summary["records_path"]))
    traces = [row for row in rows if row["check"] == "trace"]
    others = rows[: rows.index(traces[0])]
    assert all(row["check"] != "trace" for row in others)  # the traces come last

    # What was traced: each app's default traces (as `ringprobe trace` picks), trigger and control.
    catalog = load_catalog(lab.catalog_path).targets
    planned = {
        (app, trigger, target.id)
        for app in {target.app for target in catalog}
        for trigger, target in tr.default_traces(catalog, app)
    }
    assert ("signal", "tls", "sig-chat-443") in planned
    traced = [(r["app"], r["details"]["trigger"], r["target"]["id"]) for r in traces]
    assert sorted(traced) == sorted([*planned, *planned])

    tx_of = {row["target"]["id"]: row["transaction_id"] for row in others}
    for row in traces:
        details = row["details"]
        assert row["failure"] is None, row
        assert row["transaction_id"] == tx_of[row["target"]["id"]]
        assert details["ttls_traced"] <= MAX_TTL
        assert len(details["hops"]) == details["ttls_traced"]
        if details["transport"] == "udp":
            assert details["packets_sent"] == details["ttls_traced"]  # one datagram per TTL
        else:
            assert details["packets_sent"] <= details["ttls_traced"] * TCP_PACKETS_PER_PROBE
        if row["app"] != "signal":
            assert details["first_interfering_ttl"] is None, (row["app"], details["hops"])

    # Signal's real-SNI handshake was reset, and its trace says where.
    (handshake,) = [
        r
        for r in others
        if r["check"] == "tls_handshake"
        and r["target"]["id"] == "sig-chat-443"
        and r["details"]["sni_kind"] == "real"
    ]
    assert handshake["failure"] == "connection_reset"
    (trigger,) = [r for r in traces if r["app"] == "signal" and not r["details"]["control"]]
    (control,) = [r for r in traces if r["app"] == "signal" and r["details"]["control"]]
    version = 6 if ":" in trigger["target"]["address"] else 4
    assert trigger["target"]["address"] == handshake["target"]["address"]
    t, c = trigger["details"], control["details"]
    assert t["sni"] == "chat.signal.org"
    assert c["sni"] == "example.org"
    assert t["first_interfering_ttl"] == 3, t["hops"]
    assert t["interference"] == "rst"
    assert t["localized_hop"] == 2
    assert t["localized_address"] == plan.hop_address(2, version)
    assert t["reached"] is False
    assert c["first_interfering_ttl"] is None
    assert c["localized_hop"] is None
    assert c["reached"] is True
    assert c["destination_ttl"] == 4


CALL_DURATION: Final = 2.0


def test_run_localize_traces_the_call_to_the_reflector_and_finds_a_border_drop(
    lab: Lab, tmp_path: Path
) -> None:
    # calls-stun-cookie-drop's rules at the border (hop 3), the last router before the servers:
    # with --reflector, each calling app's call trigger goes to the lab's reflector, signed, so
    # its control is echoed at TTL 4 and WhatsApp's dropped opening (a STUN Allocate) is
    # localized after hop 3; Telegram's opening (no cookie) is not.
    args = ["--apps", "whatsapp,telegram", *lab.call_flow_args(CALL_DURATION)]
    summary = run_localized(lab, tmp_path, "calls-stun-cookie-drop", args, placement="border")
    assert not [s for s in summary["skipped"] if s["target"] == "trace"]
    rows = _records(Path(summary["records_path"]))
    call_tx = {r["app"]: r["transaction_id"] for r in rows if r["check"] == "call_flow"}
    assert set(call_tx) == {"whatsapp", "telegram"}
    calls = [r for r in rows if r["check"] == "trace" and r["details"]["trigger"] == "call"]
    assert len(calls) == 4  # trigger and control of each app
    for row in calls:
        details = row["details"]
        assert row["failure"] is None, row
        assert row["target"]["address"] == lab.reflector_address
        assert row["target"]["port"] == {"whatsapp": 3478, "telegram": 597}[row["app"]]
        assert row["transaction_id"] == call_tx[row["app"]]
        assert details["signed"] is True
        assert details["packets_sent"] == details["ttls_traced"] <= MAX_TTL
        if details["control"] or row["app"] == "telegram":
            assert details["first_interfering_ttl"] is None, (row["app"], details["hops"])
            assert details["reached"] is True
            assert details["destination_ttl"] == 4
    (wa,) = [r for r in calls if r["app"] == "whatsapp" and not r["details"]["control"]]
    assert wa["details"]["first_interfering_ttl"] == 4, wa["details"]["hops"]
    assert wa["details"]["interference"] == "drop"
    assert wa["details"]["localized_hop"] == 3
    assert wa["details"]["localized_address"] == plan.hop_address(3, 4)

    # The cut traces follow the call traces to the reflector. The rules drop datagrams that carry
    # the STUN cookie, so WhatsApp's call flow loses its 3-datagram STUN opening and nothing
    # after it (RTP): its prime is echoed from the 4th datagram on, never stops early, and its
    # probes are not cut; Telegram's flow is untouched.
    cuts = [r for r in rows if r["check"] == "trace" and r["details"]["trigger"] == "cut"]
    assert sorted((r["app"], r["details"]["control"]) for r in cuts) == [
        ("telegram", False), ("telegram", True), ("whatsapp", False), ("whatsapp", True),
    ]  # fmt: skip
    for row in cuts:
        details = row["details"]
        assert row["failure"] is None, row
        assert row["target"]["address"] == lab.reflector_address
        assert row["transaction_id"] == call_tx[row["app"]]
        assert details["packets_sent"] == details["prime"]["sent"] + details["ttls_traced"]
        assert details["prime"]["duration"] == CALL_DURATION
        assert details["prime"]["stopped_early"] is False
        assert details["first_interfering_ttl"] is None, (row["app"], details["hops"])
        lost = 3 if (row["app"], details["control"]) == ("whatsapp", False) else 0
        assert details["prime"]["echoed"] == details["prime"]["sent"] - lost
