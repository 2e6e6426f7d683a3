"""Scenarios placed at the border (``placement = "border"``, hop 3) on a real lab: ``up`` gives
the border the tspu's sets and an empty chain; during a run the rules sit in the border and the
tspu stays open; the verdicts are those of the same rules in the tspu; a TTL probe finds the
drop one hop further out; a refused rule names the border's table; restore (and a reused
``up``) leave both routers as ``up`` made them. Needs root (see conftest.py).

One lab for the module, as in test_scenarios.py."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from probe.lab import Lab, LabError, ScenarioError, hop_address
from probe.lab import scenario as sc
from probe.lab.plan import PLACEMENTS
from probe.lab.state import load

pytestmark = pytest.mark.lab

# A dropped ping costs its whole wait; the lab answers in well under a millisecond.
PING_WAIT = "1"


def _tables(lab: Lab, router: str) -> list[list[str]]:
    """``[family, name]`` of every nft table in a router (iptables-nft's included)."""
    ruleset = lab.run_in(router, ["nft", "list", "ruleset"], timeout=10).stdout
    return [line.split()[1:3] for line in ruleset.splitlines() if line.startswith("table ")]


def _chain(lab: Lab, router: str) -> list[str]:
    """The rules in chain ``forward`` of the router's ``table inet <router>``."""
    done = lab.run_in(router, ["nft", "list", "chain", "inet", router, "forward"], timeout=10)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()[2:]]
    return [line for line in lines if line not in ("", "}") and not line.startswith("type ")]


def _is_clean(lab: Lab, router: str) -> bool:
    return _tables(lab, router) == [["inet", router]] and _chain(lab, router) == []


def assert_clean(lab: Lab) -> None:
    """Both rule routers as `up` made them (their own table only, chain forward empty) and no
    DNS override."""
    for router in PLACEMENTS:
        assert _tables(lab, router) == [["inet", router]], router
        assert _chain(lab, router) == [], router
    state = load(lab.state_dir / "state.json")
    assert state is not None
    assert state.dns_overrides == {}


def _at_border(name: str, directory: Path) -> sc.Scenario:
    """A built-in scenario as a file of one's own, with its rules at the border."""
    path = directory / f"{name}-border.toml"
    path.write_text('placement = "border"\n' + sc.builtin_path(name).read_text())
    return sc.load_scenario_file(path)


def test_up_gives_the_border_the_tspus_sets_and_an_empty_chain(lab: Lab) -> None:
    tspu = lab.run_in("tspu", ["nft", "list", "table", "inet", "tspu"], timeout=10).stdout
    border = lab.run_in("border", ["nft", "list", "table", "inet", "border"], timeout=10).stdout
    assert border == tspu.replace("table inet tspu {", "table inet border {", 1)
    assert "set tg_dc6 {" in border
    assert lab.sets["tg_dc"][0] in border
    assert_clean(lab)
    assert _tables(lab, "isp") == []  # no other router has a rule table


@pytest.mark.parametrize("name", ["tg-dc-ip-drop", "signal-sni-rst"])
def test_a_scenario_at_the_border_gets_the_verdicts_it_gets_at_the_tspu(
    lab: Lab, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios = {"tspu": sc.load_builtin(name), "border": _at_border(name, tmp_path)}
    assert scenarios["border"].placement == "border"
    assert [r.text for r in scenarios["border"].rules] == [r.text for r in scenarios["tspu"].rules]
    running: list[str] = []  # the placement of the scenario being run
    seen: dict[str, dict[str, tuple[list[list[str]], list[str]]]] = {}
    run_probe = lab.run_probe

    def spy(
        out_dir: Path, extra_args: Sequence[str] = (), *, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        # The routers while the probe runs, the scenario applied.
        seen[running[-1]] = {r: (_tables(lab, r), _chain(lab, r)) for r in PLACEMENTS}
        return run_probe(out_dir, extra_args, timeout=timeout)

    monkeypatch.setattr(lab, "run_probe", spy)
    got: dict[str, dict[str, tuple[str | None, ...]]] = {}
    for placement, scenario in scenarios.items():
        running.append(placement)
        result = sc.run_scenario(lab, scenario, keep_records=tmp_path / placement)
        assert result.passed, [(a.app, a.got, a.evidence) for a in result.apps]
        assert result.probe_status == "complete"
        got[placement] = {a.app: (a.verdict, a.layer, a.mechanism, a.rule) for a in result.apps}
        assert_clean(lab)
    assert got["border"] == got["tspu"]

    for placement, scenario in scenarios.items():
        (other,) = (r for r in PLACEMENTS if r != placement)
        tables, chain = seen[placement][placement]
        assert chain == [rule.text for rule in scenario.nft], placement
        if scenario.iptables:
            assert ["ip", "filter"] in tables, placement  # iptables-nft's table for -A FORWARD
        assert seen[placement][other] == ([["inet", other]], []), placement


def _ping(lab: Lab, target: str, ttl: int) -> str:
    done = lab.run_in(
        "client",
        ["ping", "-4", "-n", "-c", "1", "-W", PING_WAIT, "-t", str(ttl), target],
        timeout=10,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(("placement", "hop"), [("tspu", 2), ("border", 3)])
def test_a_ttl_probe_finds_the_drop_at_the_hop_of_its_router(
    lab: Lab, tmp_path: Path, placement: str, hop: int
) -> None:
    path = tmp_path / "drop.toml"
    path.write_text(
        f'name = "dc-drop"\nplacement = "{placement}"\nnft = ["ip daddr @tg_dc drop"]\n'
        '[expect]\ntelegram = "blocked"\n'
    )
    target = lab.sets["tg_dc"][0]
    sc.apply_scenario(lab, sc.load_scenario_file(path))
    try:
        # The router with the rule still answers a probe that expires there (the kernel checks
        # the TTL before the forward hook), and nothing gets past it.
        at = _ping(lab, target, hop)
        beyond = _ping(lab, target, hop + 1)
    finally:
        sc.restore(lab)
    assert f"From {hop_address(hop)} " in at, at
    assert "exceeded" in at, at
    assert " 0 received" in beyond, beyond
    assert "From " not in beyond, beyond
    # Open again: the same probe gets past the router.
    again = _ping(lab, target, hop + 1)
    assert " 1 received" in again or f"From {hop_address(hop + 1)} " in again, again
    assert_clean(lab)


def test_a_rule_refused_at_the_border_names_its_table_and_leaves_both_routers_clean(
    lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(
        'name = "typo"\n'
        'placement = "border"\n'
        "nft = [\n"
        '  "ip daddr @tg_dc drop",\n'
        '  "ip daddr @tg_dc dorp",\n'
        "]\n"
        "[expect]\n"
        'telegram = "blocked"\n'
    )
    with pytest.raises(ScenarioError) as info:
        sc.apply_scenario(lab, sc.load_scenario_file(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line 5: nft rule 2 refused by the kernel: Error: ")
    assert message.endswith(
        "(ran: nft add rule inet border forward ip daddr @tg_dc dorp in the border)"
    )
    assert_clean(lab)


def _dirty(lab: Lab) -> None:
    """Rules and an iptables table in both routers, and a DNS override."""
    mark = "-t mangle -A FORWARD -p tcp -m string --string whatsapp.net --algo bm"
    for router in PLACEMENTS:
        lab.add_rule("ip daddr @wa_signal drop", router=router)
        added = lab.run_in(router, ["iptables", *mark.split(), "-j", "CONNMARK", "--set-mark", "7"])
        assert added.returncode == 0, added.stderr
        assert not _is_clean(lab, router)
    assert _chain(lab, "border") == ["ip daddr @wa_signal drop"]
    lab.set_dns_overrides({"web.whatsapp.com": "0.0.0.0"})


def test_restore_and_a_reused_up_clean_both_routers(lab: Lab) -> None:
    _dirty(lab)
    sc.restore(lab)
    assert_clean(lab)
    _dirty(lab)
    assert lab.up().reused
    assert_clean(lab)
    with pytest.raises(LabError, match="no rule table in 'isp'"):
        lab.add_rule("ip daddr @wa_signal drop", router="isp")
