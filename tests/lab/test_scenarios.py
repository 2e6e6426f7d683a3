"""Scenarios on a real lab: every built-in scenario's verdicts match its [expect]; a rule the
kernel refuses is reported with its line and leaves the tspu clean; the tspu is clean after a
probe run that fails too; a file from anywhere runs through `ringprobe lab run --json`; the QUIC
scenario's rule really stops QUIC v1 handshakes. Needs root (see conftest.py).

One lab for the module: scenarios run one after another on it, each restoring a clean tspu."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.lab import Lab, ScenarioError, ScenarioRunError
from probe.lab import scenario as sc
from probe.lab.state import load

pytestmark = pytest.mark.lab


def assert_clean(lab: Lab) -> None:
    """The tspu as `up` made it: chain forward empty, no table but inet tspu (so no iptables
    rule either), no DNS override recorded or in the resolver's hosts file."""
    ruleset = lab.run_in("tspu", ["nft", "list", "ruleset"], timeout=10).stdout
    tables = [line.split()[1:3] for line in ruleset.splitlines() if line.startswith("table ")]
    assert tables == [["inet", "tspu"]], ruleset
    chain = lab.run_in("tspu", ["nft", "list", "chain", "inet", "tspu", "forward"]).stdout
    body = [line.strip() for line in chain.splitlines()[2:] if line.strip() not in ("", "}")]
    assert body == ["type filter hook forward priority filter; policy accept;"], chain
    state = load(lab.state_dir / "state.json")
    assert state is not None
    assert state.dns_overrides == {}
    hosts = (lab.state_dir / "conf" / "hosts").read_text()
    assert "0.0.0.0" not in hosts
    assert "web.whatsapp.com" in hosts


def _explain(result: sc.ScenarioResult) -> str:
    return (
        "\n".join(
            f"{a.app}: expected {a.expected.describe() if a.expected else '-'}, got {a.got} "
            f"[{a.rule}] {a.evidence}"
            for a in result.apps
        )
        + f"\nrecords: {result.records_path}"
    )


@pytest.mark.parametrize("name", sc.BUILTIN)
def test_builtin_scenario_matches_its_expectation(lab: Lab, name: str, tmp_path: Path) -> None:
    result = sc.run_scenario(lab, sc.load_builtin(name), keep_records=tmp_path)
    assert result.passed, _explain(result)
    assert result.probe_status == "complete"
    assert result.records_path.parent == tmp_path / name
    # Well under the ~30 s a scenario may take (3 s checks, 20 s deadline).
    assert result.elapsed < 20, result.elapsed
    assert_clean(lab)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_rule_the_kernel_refuses_names_its_line_and_leaves_the_lab_clean(
    lab: Lab, tmp_path: Path
) -> None:
    # Dirty the lab first, as a crashed earlier run could have left it.
    lab.add_rule("ip daddr @wa_signal drop")
    lab.set_dns_overrides({"web.whatsapp.com": "0.0.0.0"})
    path = _write(
        tmp_path / "typo.toml",
        'name = "typo"\n'
        "nft = [\n"
        '  "ip daddr @tg_dc drop",\n'
        '  "ip daddr @tg_dc dorp",\n'
        "]\n"
        "[dns]\n"
        '"e1.whatsapp.net" = "nxdomain"\n'
        "[expect]\n"
        'telegram = "blocked"\n',
    )
    scenario = sc.load_scenario_file(path)
    with pytest.raises(ScenarioError) as info:
        sc.run_scenario(lab, scenario)
    message = str(info.value)
    assert message.startswith(f"{path}, line 4: nft rule 2 refused by the kernel: Error: ")
    assert "(ran: nft add rule inet tspu forward ip daddr @tg_dc dorp)" in message
    assert_clean(lab)


def test_an_iptables_rule_the_kernel_refuses_leaves_earlier_ones_removed(
    lab: Lab, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "ipt.toml",
        'name = "ipt"\n'
        'nft = ["ct mark 7 drop"]\n'
        "iptables = [\n"
        '  "-t mangle -A FORWARD -p tcp -m string --string x.example --algo bm '
        '-j CONNMARK --set-mark 7",\n'
        '  "-A FORWARD -m no_such_match -j DROP",\n'
        "]\n"
        '[expect]\nsignal = "ok"\n',
    )
    with pytest.raises(ScenarioError) as info:
        sc.apply_scenario(lab, sc.load_scenario_file(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line 5: iptables rule 2 refused by the kernel: ")
    assert "no_such_match" in message
    assert_clean(lab)


def test_the_tspu_is_restored_when_the_probe_run_fails(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "web.whatsapp.com" not in (lab.state_dir / "conf" / "hosts").read_text()
        return subprocess.CompletedProcess([], 3, "", "Traceback ...\nRuntimeError: boom")

    monkeypatch.setattr(lab, "run_probe", broken)
    with pytest.raises(ScenarioRunError, match=r"exited with status 3: .*RuntimeError: boom"):
        sc.run_scenario(lab, sc.load_builtin("wa-dns-nxdomain"))
    assert_clean(lab)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`ringprobe lab ...` in a child process, as a user runs it; bounded."""
    return subprocess.run(
        [sys.executable, "-m", "probe.cli", "lab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sigterm_during_a_run_stops_the_probe_and_restores_the_tspu(lab: Lab) -> None:
    command = [sys.executable, "-m", "probe.cli", "lab", "run", "--scenario", "wa-signal-ip-drop"]
    child = subprocess.Popen(
        [*command, "--name", lab.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while "@wa_signal" not in _forward_chain(lab):  # the scenario is applied
            assert child.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        child.terminate()
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        assert child.stderr is not None
        child.stderr.close()
    assert_clean(lab)
    # The probe ran in the client namespace: nothing may be left running there.
    left = subprocess.run(
        ["ip", "netns", "pids", lab.namespace("client")], capture_output=True, text=True, timeout=10
    )
    assert left.stdout.split() == []


def _forward_chain(lab: Lab) -> str:
    chain = ["nft", "list", "chain", "inet", "tspu", "forward"]
    return lab.run_in("tspu", chain, timeout=10).stdout


MINE = """\
# Not a built-in: a TCP reset answers every SYN to Telegram's data centers.
name = "tg-dc-syn-rst"
summary = "RST to SYNs towards Telegram's DCs"
nft = [
  "ip daddr @tg_dc tcp flags syn reject with tcp reset",
  "ip6 daddr @tg_dc6 tcp flags syn reject with tcp reset",
]

[expect]
telegram = { verdict = "blocked", layer = "tcp", mechanism = "rst" }
whatsapp = "ok"
"""


def test_a_file_from_anywhere_runs_through_the_cli(lab: Lab, tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.toml", MINE)
    keep = tmp_path / "records"
    done = _cli(
        "run", "--scenario", str(path), "--json", "--name", lab.name, "--keep-records", keep
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)  # stdout is the JSON alone
    assert (result["scenario"], result["source"], result["passed"]) == (
        "tg-dc-syn-rst",
        str(path),
        True,
    )
    apps = {a["app"]: a for a in result["apps"]}
    assert apps["telegram"]["got"]["rule"] == "blocked_tcp_rst"
    assert apps["telegram"]["pass"] is True
    assert apps["signal"]["pass"] is None  # not expected: reported, not judged
    assert Path(result["records_path"]).parent == keep / "tg-dc-syn-rst"
    assert lab.status().healthy  # the lab was up before; the command left it up
    assert_clean(lab)


def test_a_missed_expectation_exits_1(lab: Lab, tmp_path: Path) -> None:
    path = _write(tmp_path / "wrong.toml", MINE.replace('mechanism = "rst"', 'mechanism = "sni"'))
    done = _cli("run", "--scenario", path, "--name", lab.name)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "telegram  blocked (tcp, sni)  blocked (tcp, rst)  MISS" in done.stdout
    assert "MISSED in" in done.stdout


# aioquic's client (a probe dependency) against the lab's HTTP/3 server on web.whatsapp.com:
# prints "connected" or "timeout".
QUIC_CLIENT = """
import asyncio, ssl, sys
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration

async def main() -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE,
                               server_name="web.whatsapp.com")
    try:
        async with asyncio.timeout(2):
            async with connect(sys.argv[1], 443, configuration=config):
                print("connected")
    except TimeoutError:
        print("timeout")

asyncio.run(main())
"""


def test_the_quic_scenario_really_stops_quic_v1_handshakes(lab: Lab) -> None:
    address = lab.plan.endpoint("web.whatsapp.com").v4
    assert address is not None

    def handshake() -> str:
        done = lab.run_in("client", [sys.executable, "-c", QUIC_CLIENT, address], timeout=30)
        return done.stdout.strip()

    assert handshake() == "connected"
    sc.apply_scenario(lab, sc.load_builtin("quic-initial-drop"))
    try:
        assert handshake() == "timeout"
    finally:
        sc.restore(lab)
    assert handshake() == "connected"
