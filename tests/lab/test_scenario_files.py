"""Scenario files without a lab (no root needed, so not marked ``lab``): the built-in files, what
parsing refuses and how the message points at the line, the comparison of verdicts with
[expect] (on hand-built records), and the commands that need no lab (`lab list`, bad files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from analysis.rules import LAYERS, MECHANISMS, VERDICTS
from probe.cli import cli
from probe.cli import lab as lab_cli
from probe.lab import SETS, LabError, Plan, ScenarioError, build_plan, servers, topology
from probe.lab import scenario as sc
from probe.lab.pki import KeyPair
from probe.lab.plan import render_nft
from probe.model import APPS, Failure
from probe.targets import builtin_catalog
from tests.recordsets import DROP, Fate, by_app, run_records, write_runs

SCENARIO_DIR = Path(sc.__file__).parent / "scenarios"


def parse(text: str) -> sc.Scenario:
    return sc.parse_scenario(text, "mine.toml")


def refused(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    return str(info.value)


MINIMAL = 'name = "x"\n[expect]\nwhatsapp = "ok"\n'


# --- the built-in scenarios ----------------------------------------------------------------------


def test_every_file_is_a_listed_builtin_named_as_its_file() -> None:
    assert sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")) == sorted(sc.BUILTIN)
    for scenario in sc.builtin_scenarios():
        assert scenario.source == f"built-in {scenario.name}"
        assert sc.builtin_path(scenario.name).stem == scenario.name


@pytest.mark.parametrize("name", sc.BUILTIN)
def test_builtin_scenarios_expect_every_app_and_cite_a_source(name: str) -> None:
    scenario = sc.load_builtin(name)
    assert scenario.summary
    assert [e.app for e in scenario.expect] == list(APPS)
    text = sc.builtin_path(name).read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    # Every scenario says what it emulates; every censoring one cites where that was reported.
    assert comments
    if name != "open-network":
        assert any("http" in line or "METHOD.md" in line for line in comments), name
    for rule in scenario.rules:
        assert rule.line is not None
        assert rule.text in text.splitlines()[rule.line - 1]


def test_builtins_cover_each_signaling_verdict_and_mechanism_the_probe_can_produce() -> None:
    got = {(e.verdict, e.layer, e.mechanism) for s in sc.builtin_scenarios() for e in s.expect}
    assert {
        ("ok", None, None),
        ("blocked", "dns", "dns_spoof"),
        ("blocked", "dns", "dns_nxdomain"),
        ("blocked", "tcp", "ip_drop"),
        ("blocked", "tls", "rst"),
        ("blocked", "tcp", "byte_cutoff"),
        ("throttled", "tls", "sni"),
        ("network_degraded", None, None),
        ("calls_cut", "udp", None),
        ("calls_blocked", "udp", "stun_fingerprint"),
        ("calls_throttled", "udp", "rate_cap"),
    } <= got


def test_dns_scenarios_override_every_whatsapp_name_the_lab_knows() -> None:
    names = {n for n in build_plan(builtin_catalog()).names() if "whatsapp" in n}
    for name in ("wa-dns-spoof", "wa-dns-nxdomain"):
        assert set(sc.load_builtin(name).dns) == names


def test_find_scenario_takes_a_name_or_a_path(tmp_path: Path) -> None:
    assert sc.find_scenario("open-network").name == "open-network"
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    found = sc.find_scenario(str(path))
    assert (found.name, found.source) == ("x", str(path))
    with pytest.raises(
        ScenarioError, match=r"no built-in scenario 'nope' \(built in: open-network"
    ):
        sc.find_scenario("nope")
    with pytest.raises(ScenarioError, match=r"missing\.toml: cannot read"):
        sc.find_scenario(str(tmp_path / "missing.toml"))


# --- what parsing accepts -------------------------------------------------------------------------


def test_a_full_file_in_every_form_lab_md_allows() -> None:
    scenario = parse(
        """
# comment
name = "full"
summary = "every key"
nft = [
  # a comment between rules
  "ip daddr @tg_dc drop",   # trailing comment, with a [bracket]
  'ip6 daddr @tg_dc6 drop',
  "ip daddr @wa_relay udp dport 3478 @th,96,32 0x2112a442 drop",
]
iptables = [
  "-t mangle -A FORWARD -m string --string 'whatsapp.net' --algo bm -j CONNMARK --set-mark 7",
]
ip6tables = ["-A FORWARD -p udp -m statistic --mode random --probability 0.5 -j DROP"]

[dns]
"Web.WhatsApp.com." = "0.0.0.0"
"e1.whatsapp.net" = "NXDOMAIN"
"v.whatsapp.net" = "2001:DB8::1"

[expect]
whatsapp = "calls_blocked"
signal = { verdict = "blocked", layer = "tls" }

[expect.telegram]
verdict = "calls_cut"
mechanism = "byte_cutoff"
"""
    )
    assert [(r.kind, r.index, r.line) for r in scenario.rules] == [
        ("nft", 1, 7),
        ("nft", 2, 8),
        ("nft", 3, 9),
        ("iptables", 1, 12),
        ("ip6tables", 1, 14),
    ]
    assert scenario.dns == {
        "web.whatsapp.com": "0.0.0.0",
        "e1.whatsapp.net": "nxdomain",
        "v.whatsapp.net": "2001:db8::1",
    }
    assert [(e.app, e.verdict, e.layer, e.mechanism) for e in scenario.expect] == [
        ("whatsapp", "calls_blocked", None, None),
        ("telegram", "calls_cut", None, "byte_cutoff"),
        ("signal", "blocked", "tls", None),
    ]
    assert scenario.nft[0].command() == "nft add rule inet tspu forward ip daddr @tg_dc drop"


def test_call_flows_are_off_unless_asked_for() -> None:
    plain = parse(MINIMAL)
    assert (plain.call_flows, plain.call_duration) == (False, sc.DEFAULT_CALL_DURATION)
    on = parse('name = "x"\ncall_flows = true\n[expect]\nwhatsapp = "ok"\n')
    assert (on.call_flows, on.call_duration) == (True, sc.DEFAULT_CALL_DURATION)
    timed = parse('name = "x"\ncall_flows = true\ncall_duration = 6.5\n[expect]\nwhatsapp = "ok"\n')
    assert timed.call_duration == 6.5
    assert parse('name = "x"\ncall_flows = true\ncall_duration = 20\n[expect]\nsignal = "ok"\n')
    # The existing built-ins keep their probe run: no call flows.
    for name in sc.BUILTIN:
        assert sc.load_builtin(name).call_flows is name.startswith("calls-"), name


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("call_flows = true\ncall_duration = 0.5\n", "from 1 to 20"),
        ("call_flows = true\ncall_duration = 21\n", "from 1 to 20"),
        ("call_flows = true\ncall_duration = true\n", "from 1 to 20"),
        ('call_flows = true\ncall_duration = "4"\n', "from 1 to 20"),
        ("call_flows = true\ncall_duration = nan\n", "from 1 to 20"),
        ("call_duration = 4\n", "'call_duration' needs call_flows = true"),
        ("call_flows = false\ncall_duration = 4\n", "'call_duration' needs call_flows = true"),
    ],
)
def test_a_bad_call_duration_is_refused_with_its_line(lines: str, expected: str) -> None:
    message = refused(f'name = "x"\nsummary = "s"\n{lines}[expect]\nwhatsapp = "ok"\n')
    line = 3 + lines.count("\n") - 1
    assert message.startswith(f"mine.toml, line {line}: "), message
    assert expected in message


def test_call_flows_need_a_boolean_and_say_where() -> None:
    message = refused('name = "x"\n\ncall_flows = "true"\n[expect]\nwhatsapp = "ok"\n')
    assert message == "mine.toml, line 3: 'call_flows' must be true or false"


def test_a_call_deadline_leaves_both_call_tests_their_time() -> None:
    from probe.checks.call_flow import time_budget
    from probe.runner import CALL_START_LEAD, CALL_TESTS

    assert len(CALL_TESTS) == sc.CALL_TEST_APPS
    for duration in (1.0, sc.DEFAULT_CALL_DURATION, 20.0):
        budget = time_budget(duration, CALL_START_LEAD + 0.06)
        assert sc.call_deadline(duration) > sc.CALL_TEST_APPS * budget
    assert sc.call_deadline(sc.DEFAULT_CALL_DURATION) <= sc.RUN_DEADLINE


BORDER = """\
name = "at-the-border"
placement = "border"
nft = ["ip daddr @tg_dc drop", "ip6 daddr @tg_dc6 drop"]
iptables = ["-A FORWARD -p tcp --dport 443 -m string --string signal.org --algo bm -j DROP"]
ip6tables = ["-A FORWARD -p tcp --dport 443 -m string --string signal.org --algo bm -j DROP"]
[dns]
"web.whatsapp.com" = "nxdomain"
[expect]
telegram = "blocked"
"""


def test_rules_go_in_the_tspu_unless_the_scenario_places_them_at_the_border() -> None:
    assert sc.DEFAULT_PLACEMENT == "tspu"
    assert sc.PLACEMENTS == ("tspu", "border")
    plain = parse(MINIMAL.replace("\n[expect]", '\nnft = ["ip daddr @tg_dc drop"]\n[expect]'))
    assert plain.placement == "tspu"
    assert [r.placement for r in plain.rules] == ["tspu"]
    explicit = parse(BORDER.replace('"border"', '"tspu"'))
    assert explicit.placement == "tspu"
    assert explicit.nft[0].command() == "nft add rule inet tspu forward ip daddr @tg_dc drop"
    # The built-ins keep their rules in the tspu.
    assert {s.placement for s in sc.builtin_scenarios()} == {"tspu"}

    border = parse(BORDER)
    assert border.placement == "border"
    assert [(r.kind, r.placement) for r in border.rules] == [
        ("nft", "border"),
        ("nft", "border"),
        ("iptables", "border"),
        ("ip6tables", "border"),
    ]
    # nft lines go in the border's own table; iptables lines read the same (the namespace
    # differs); DNS answers are the resolver's, wherever the rules are.
    assert border.nft[1].command() == "nft add rule inet border forward ip6 daddr @tg_dc6 drop"
    assert border.iptables[0].command() == f"iptables {border.iptables[0].text}"
    assert border.dns == {"web.whatsapp.com": "nxdomain"}
    # The border has the same sets: references are checked the same way.
    message = refused(BORDER.replace("@tg_dc6", "@telegram6"))
    assert message.startswith("mine.toml, line 3: nft rule 2 ('ip6 daddr @telegram6 drop'): ")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"hop3"', "'hop3'"),
        ('"Border"', "'Border'"),
        ('"isp"', "'isp'"),
        ('""', "''"),
        ("3", "3"),
        ("true", "True"),
        ('["border"]', "['border']"),
    ],
)
def test_a_bad_placement_is_refused_with_its_line(value: str, shown: str) -> None:
    message = refused(BORDER.replace('placement = "border"', f"placement = {value}"))
    assert message == (
        "mine.toml, line 2: 'placement' must be 'tspu' (hop 2, the default) or 'border' "
        f"(hop 3), not {shown}"
    )


def test_a_placement_table_is_refused_too() -> None:
    message = refused(MINIMAL + '[placement]\nrouter = "border"\n')
    assert message.startswith("mine.toml, line 4: 'placement' must be 'tspu'"), message


def test_the_borders_nft_table_is_the_tspus_under_its_own_name() -> None:
    plan = build_plan(builtin_catalog())
    tspu = render_nft(plan)
    assert tspu == render_nft(plan, "tspu")
    assert tspu.startswith("table inet tspu {\n")
    assert render_nft(plan, "border") == tspu.replace("table inet tspu {", "table inet border {")
    assert "\tchain forward {" in tspu
    with pytest.raises(LabError, match="no rule table in 'isp'"):
        render_nft(plan, "isp")


def test_every_lab_set_and_its_ipv6_twin_may_be_named() -> None:
    rules = ", ".join(f'"ip daddr @{s} drop", "ip6 daddr @{s}6 drop"' for s in SETS)
    scenario = parse(f"name = 'x'\nnft = [{rules}]\n[expect]\nwhatsapp = 'ok'\n")
    assert len(scenario.nft) == 2 * len(SETS)


# --- what parsing refuses, and where it says the problem is ---------------------------------------


def test_toml_syntax_errors_name_the_file_and_line() -> None:
    message = refused('name = "x"\nnft = [\n  "ip daddr @tg_dc drop"\n  "missing comma"\n]\n')
    assert message.startswith("mine.toml: not valid TOML:")
    assert "line 4" in message


def test_unknown_top_level_keys_are_refused_by_name_and_line() -> None:
    message = refused(MINIMAL.replace('name = "x"\n', 'name = "x"\nrules = []\n'))
    assert message == (
        "mine.toml, line 2: unknown key 'rules'; a scenario has name, summary, nft, iptables, "
        "ip6tables, placement, dns, call_flows, call_duration, expect (shared/LAB.md)"
    )
    assert "unknown key 'timeout'" in refused(MINIMAL + "[timeout]\nx = 1\n")


def test_a_bad_set_reference_names_the_rule_index_and_its_line() -> None:
    text = (
        'name = "x"\n'
        "nft = [\n"
        '  "ip daddr @tg_dc drop",\n'
        '  "ip daddr @telegram drop",\n'
        "]\n" + MINIMAL.split("\n", 1)[1]
    )
    message = refused(text)
    assert message.startswith("mine.toml, line 4: nft rule 2 ('ip daddr @telegram drop'): ")
    assert "@telegram is not a set of the lab" in message
    assert "tg_dc" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('name = 1\n[expect]\nwhatsapp = "ok"\n', "'name' must be a one-line, non-empty string"),
        ('summary = "s"\n[expect]\nwhatsapp = "ok"\n', "'name' is missing"),
        ('name = "x"\nnft = "ip daddr @tg_dc drop"\n', "'nft' must be a list of strings"),
        ('name = "x"\niptables = [1]\n', "'iptables' must be a list of strings"),
        ('name = "x"\n', "no [expect] table"),
        ('name = "x"\n[expect]\n', "no [expect] table"),
        ('name = "x"\nexpect = "ok"\n', "'expect' must be a table"),
        ('name = "x"\n[expect]\nviber = "ok"\n', "unknown app 'viber'"),
        ('name = "x"\n[expect]\nwhatsapp = "blocke"\n', "'blocke' is not a verdict"),
        (
            'name = "x"\n[expect.whatsapp]\nverdict = "blocked"\nmechanism = "dpi"\n',
            "'dpi' is not a mechanism",
        ),
        (
            'name = "x"\n[expect.whatsapp]\nverdict = "blocked"\nlayer = "http"\n',
            "'http' is not a layer",
        ),
        ('name = "x"\n[expect.whatsapp]\nmechanism = "rst"\n', "'verdict' is missing"),
        (
            'name = "x"\n[expect.whatsapp]\nverdict = "ok"\nwhy = "x"\n',
            "unknown key 'why' (keys: verdict, layer, mechanism)",
        ),
        ('name = "x"\n[expect]\nwhatsapp = 3\n', "give a verdict, or a table with verdict"),
        ('name = "x"\n[dns]\n"a.example" = "somewhere"\n[expect]\nwhatsapp = "ok"\n', "nxdomain"),
        ('name = "x"\n[dns]\n"a b" = "0.0.0.0"\n[expect]\nwhatsapp = "ok"\n', "not a host name"),
        ('name = "x"\n[dns]\n"a.example" = 0\n[expect]\nwhatsapp = "ok"\n', "must be a string"),
        ('name = "x"\ndns = ["a"]\n[expect]\nwhatsapp = "ok"\n', "'dns' must be a table"),
        ('name = "x"\ncall_flows = "yes"\n[expect]\nwhatsapp = "ok"\n', "true or false"),
        ('name = "x"\ncall_flows = 1\n[expect]\nwhatsapp = "ok"\n', "true or false"),
    ],
)
def test_invalid_documents_are_refused_with_the_reason(document: str, expected: str) -> None:
    message = refused(document)
    assert message.startswith("mine.toml")
    assert expected in message


@pytest.mark.parametrize(
    ("kind", "rule", "expected"),
    [
        ("nft", "", "empty rule"),
        ("nft", "ip daddr @tg_dc drop; flush ruleset", "';' would end the rule"),
        ("nft", "ip daddr @tg_dc\\ndrop", "one rule per line"),
        ("iptables", "-A FORWARD --modprobe=/bin/sh -j DROP", "--modprobe (-M) is refused"),
        ("iptables", "-A FORWARD --modp /bin/sh -j DROP", "--modprobe (-M) is refused"),
        ("ip6tables", "-M /bin/sh -A FORWARD -j DROP", "--modprobe (-M) is refused"),
        ("iptables", "-vM/bin/sh -A FORWARD -j DROP", "--modprobe (-M) is refused"),
        ("iptables", "-A FORWARD -m string --string 'unclosed", "cannot split into arguments"),
    ],
)
def test_rules_that_could_do_more_than_one_rule_are_refused(
    kind: str, rule: str, expected: str
) -> None:
    text = f'name = "x"\n{kind} = [\n  "{rule}",\n]\n[expect]\nwhatsapp = "ok"\n'
    message = refused(text)
    assert message.startswith(f"mine.toml, line 3: {kind} rule 1")
    assert expected in message


def test_line_numbers_survive_unusual_layouts() -> None:
    text = (
        'name = "x"\r\n'
        "nft = [ 'ip daddr @dns drop', \"ip daddr @nope drop\" ]\r\n"
        '[expect]\r\nwhatsapp = "ok"\r\n'
    )
    assert refused(text).startswith("mine.toml, line 2: nft rule 2")
    # A multi-line string before the bad rule does not shift the count.
    text = 'name = "x"\nnft = [\n"""ip daddr @dns\n drop""",\n"ip daddr @nope drop",\n]\n'
    message = refused(text + '[expect]\nwhatsapp = "ok"\n')
    assert message.startswith("mine.toml, line 3: nft rule 1")  # newline inside a rule
    # An unknown app in a sub-table points at its header.
    message = refused('name = "x"\n\n[expect.viber]\nverdict = "ok"\n')
    assert message.startswith("mine.toml, line 3: expect: unknown app 'viber'")


def test_vocabulary_comes_from_the_analysis() -> None:
    for verdict in VERDICTS:
        assert parse(f'name = "x"\n[expect]\nwhatsapp = "{verdict}"\n').expect[0].verdict
    for layer in LAYERS:
        parse(f'name = "x"\n[expect.whatsapp]\nverdict = "blocked"\nlayer = "{layer}"\n')
    for mechanism in MECHANISMS:
        parse(f'name = "x"\n[expect.whatsapp]\nverdict = "blocked"\nmechanism = "{mechanism}"\n')


# --- comparing verdicts with [expect] (hand-built records, no lab) -------------------------------


def test_judge_compares_verdict_layer_and_mechanism(tmp_path: Path) -> None:
    records = write_runs(tmp_path, run_records(by_app({"telegram": DROP}))) / "records-000.jsonl"
    scenario = parse(
        'name = "x"\n[expect]\nwhatsapp = "ok"\n'
        'telegram = { verdict = "blocked", layer = "tcp", mechanism = "ip_drop" }\n'
    )
    apps = {a.app: a for a in sc.judge(scenario, records)}
    assert list(apps) == list(APPS)
    assert apps["telegram"].passed is True
    assert apps["telegram"].got == "blocked (tcp, ip_drop)"
    assert apps["telegram"].rule == "blocked_tcp_ip_drop"
    assert apps["whatsapp"].passed is True
    assert apps["signal"].passed is None  # not in [expect]: shown, not judged
    wrong = parse(
        'name = "x"\n[expect]\ntelegram = { verdict = "blocked", mechanism = "rst" }\n'
        'signal = { verdict = "ok", layer = "tcp" }\n'
    )
    apps = {a.app: a for a in sc.judge(wrong, records)}
    assert apps["telegram"].passed is False  # right verdict, wrong mechanism
    assert apps["signal"].passed is False  # "ok" has no layer


def test_an_expected_app_without_records_fails(tmp_path: Path) -> None:
    records = run_records(apps=("whatsapp", "control"))
    path = write_runs(tmp_path, records) / "records-000.jsonl"
    scenario = parse('name = "x"\n[expect]\ntelegram = "ok"\n')
    (telegram,) = (a for a in sc.judge(scenario, path) if a.app == "telegram")
    assert (telegram.passed, telegram.verdict, telegram.evidence) == (False, None, "no records")


def test_result_json_shape(tmp_path: Path) -> None:
    cut = Fate(
        http_real=Failure.GENERIC_TIMEOUT,
        http_neutral=Failure.GENERIC_TIMEOUT,
        real_bytes=12_000,
        neutral_bytes=12_000,
    )
    records = run_records(lambda t: cut if t.app == "signal" and t.expect == "https" else Fate())
    path = write_runs(tmp_path, records) / "records-000.jsonl"
    scenario = sc.load_builtin("signal-tcp-16-20")
    result = sc.ScenarioResult(scenario, sc.judge(scenario, path), path, "complete", 1.234)
    assert result.passed
    data = json.loads(json.dumps(result.to_dict()))
    assert data["scenario"] == "signal-tcp-16-20"
    assert data["elapsed"] == 1.23
    signal = next(a for a in data["apps"] if a["app"] == "signal")
    assert signal["expected"] == {"verdict": "blocked", "layer": "tcp", "mechanism": "byte_cutoff"}
    assert signal["got"]["rule"] == "blocked_tcp_byte_cutoff"
    assert signal["pass"] is True


# --- what the lab changed for the scenarios (pure rendering) --------------------------------------


def test_lab_links_carry_one_segment_per_packet_and_sites_serve_a_large_body(
    tmp_path: Path,
) -> None:
    plan = build_plan(builtin_catalog())
    for role in ("client", "isp", "tspu", "border", "internet"):
        lines = topology.batch("rp0000", role, plan)
        links = [line for line in lines if line.startswith("link set") and line.endswith(" up")]
        links = [line for line in links if not line.startswith("link set lo")]
        segs = [line for line in lines if line.endswith("gso_max_segs 1")]
        assert len(segs) == len(links), role
    layout = servers.Layout(tmp_path)
    layout.make()
    nginx = servers.render_nginx(plan.listeners, _fake_certs(plan), layout)
    assert "location / { try_files $uri /large; }" in nginx
    assert "ssl_buffer_size 4k;" in nginx


def _fake_certs(plan: Plan) -> dict[str, KeyPair]:
    """Certificate paths for rendering only: nothing reads them."""
    hosts = {x.host for x in plan.listeners if x.host}
    return {h: KeyPair(Path(f"/c/{h}.pem"), Path(f"/c/{h}.key")) for h in hosts}


# --- the commands that need no lab ----------------------------------------------------------------


def test_lab_list_names_every_builtin_with_its_summary() -> None:
    result = CliRunner().invoke(cli, ["lab", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(sc.BUILTIN)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)
    listed = json.loads(CliRunner().invoke(cli, ["lab", "list", "--json"]).output)
    assert [row["name"] for row in listed] == list(sc.BUILTIN)
    assert listed[1]["expect"]["telegram"]["mechanism"] == "ip_drop"
    by_name = {row["name"]: row for row in listed}
    assert {row["placement"] for row in listed} == {"tspu"}  # the built-ins act at hop 2
    assert (by_name["open-network"]["call_flows"], by_name["open-network"]["call_duration"]) == (
        False,
        None,
    )
    flows = by_name["calls-open-reflector"]
    assert flows["call_flows"] is True
    assert flows["call_duration"] == sc.load_builtin("calls-open-reflector").call_duration


def test_lab_run_refuses_a_bad_file_before_touching_any_lab(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nnft = ["ip daddr @nowhere drop"]\n[expect]\nwhatsapp = "ok"\n')
    result = CliRunner().invoke(cli, ["lab", "run", "--scenario", str(path), "--name", "unit-x"])
    assert result.exit_code == 2
    assert re.search(rf"{re.escape(str(path))}, line 2: nft rule 1 .*@nowhere", result.output)
    missing = CliRunner().invoke(cli, ["lab", "run", "--scenario", "no-such-scenario"])
    assert missing.exit_code == 2
    assert "no built-in scenario 'no-such-scenario'" in missing.output


def test_cli_defaults_are_the_engines() -> None:
    assert lab_cli.DEFAULT_TIMEOUT == sc.CHECK_TIMEOUT
    assert lab_cli.DEFAULT_DEADLINE == sc.RUN_DEADLINE


@pytest.mark.parametrize("command", ["list", "run", "demo"])
def test_every_scenario_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli, ["lab", command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
