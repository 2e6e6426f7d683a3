"""Informed consent and the settings file: the gate before `ringprobe run`, `ringprobe consent`
and `ringprobe config`.

Each test gets its own empty config directory (RINGPROBE_CONFIG_DIR); tests/conftest.py's
suite-wide consent does not reach them. Runs measure one closed port on 127.0.0.1, with the
allow-list narrowed to that address.
"""

from __future__ import annotations

import json
import os
import pty
import re
import stat
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from probe import config, consent
from probe.allowlist import ENV_VAR as ALLOW_ENV
from probe.cli import cli
from probe.errors import OptionError
from probe.targets import load_catalog
from tests.unit.test_runner import closed_port

REFUSAL = "run 'ringprobe consent' first"


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config directory of this test's own (not created yet), and a loopback-only
    allow-list."""
    directory = tmp_path / "config"
    monkeypatch.setenv(config.ENV_CONFIG_DIR, str(directory))
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1/32")
    return directory


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone at a terminal: the gate's check of stdin says yes (CliRunner's stdin is a pipe)."""
    monkeypatch.setattr(consent, "stdin_is_tty", lambda: True)


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    """`ringprobe run` over one refused TCP port on 127.0.0.1: nothing leaves this machine (no
    DNS, no DoH, --asn and --cc given so no lookup of the network)."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[[target]]\nid = "closed"\napp = "control"\nrole = "control"\ntransport = "tcp"\n'
        f'expect = "tcp"\nsource = "test"\ndate = "2026-12-05"\naddress = "127.0.0.1"\n'
        f"port = {closed_port()}\n"
    )
    return [
        "run", "--targets", str(catalog), "--out", str(tmp_path / "out"), "--no-doh",
        "--timeout", "2", "--deadline", "30", "--cc", "ZZ", "--asn", "AS64496", "--json", *extra,
    ]  # fmt: skip


def invoke(args: list[str], answer: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=answer)


def assert_measured(result: Result, tmp_path: Path) -> None:
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the consent text went to stderr, not into the JSON
    assert summary["records"] == 1
    assert Path(summary["records_path"]).parent == tmp_path / "out"


def assert_refused(result: Result, tmp_path: Path, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    for phrase in phrases:
        assert phrase in result.output
    assert not (tmp_path / "out").exists(), "a refused run wrote to --out"


def stored_consent() -> config.Consent | None:
    return config.load_settings().consent


# --- the gate before `ringprobe run` ---------------------------------------------------------


def test_first_run_off_a_terminal_is_refused_and_writes_nothing(
    tmp_path: Path, config_dir: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "probe.cli", *run_args(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ringprobe: error: no consent")
    assert "stdin is not a terminal" in line
    assert REFUSAL in line
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()
    assert not config_dir.exists(), "refusing wrote the config"


def test_yes_without_consent_is_refused(tmp_path: Path, config_dir: Path, tty: None) -> None:
    result = invoke(run_args(tmp_path, "--yes"), answer="yes\n")
    assert_refused(result, tmp_path, "(--yes)", REFUSAL)
    assert stored_consent() is None


def test_unattended_setting_without_consent_is_refused(
    tmp_path: Path, config_dir: Path, tty: None
) -> None:
    config.set_value("unattended", "true")
    result = invoke(run_args(tmp_path), answer="yes\n")
    assert_refused(result, tmp_path, "unattended = true", REFUSAL)
    assert stored_consent() is None


def test_yes_at_the_terminal_records_consent_and_measures(
    tmp_path: Path, config_dir: Path, tty: None
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    result = invoke(run_args(tmp_path), answer="yes\n")
    assert_measured(result, tmp_path)
    assert "Who can see it" in result.stderr
    recorded = stored_consent()
    assert recorded is not None
    assert recorded.version == consent.CONSENT_VERSION
    assert before <= recorded.given <= datetime.now(UTC)
    # Asked once: the next run, even unattended, goes ahead without the text.
    again = invoke(run_args(tmp_path, "--yes"))
    assert again.exit_code == 0, again.output
    assert "Who can see it" not in again.output


@pytest.mark.parametrize("answer", ["no\n", "\n", "y\n", "yes please\n", ""])
def test_anything_but_yes_is_no(tmp_path: Path, config_dir: Path, tty: None, answer: str) -> None:
    result = invoke(run_args(tmp_path), answer=answer)
    assert_refused(result, tmp_path, "no consent given: nothing was measured")
    assert stored_consent() is None


def test_consent_given_earlier_lets_unattended_runs_go(tmp_path: Path, config_dir: Path) -> None:
    config.record_consent(consent.CONSENT_VERSION)
    config.set_value("unattended", "true")
    assert_measured(invoke(run_args(tmp_path, "--yes")), tmp_path)


def test_consent_to_an_older_text_is_asked_for_again(
    tmp_path: Path, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.record_consent(1)
    monkeypatch.setattr(consent, "CONSENT_VERSION", 2)
    refused = invoke(run_args(tmp_path, "--yes"))
    assert_refused(refused, tmp_path, "changed since you agreed to version 1 (now 2)", REFUSAL)
    monkeypatch.setattr(consent, "stdin_is_tty", lambda: True)
    result = invoke(run_args(tmp_path), answer="yes\n")
    assert_measured(result, tmp_path)
    assert "please read it again" in result.stderr
    recorded = stored_consent()
    assert recorded is not None
    assert recorded.version == 2


def test_lab_runs_need_no_consent(tmp_path: Path, config_dir: Path) -> None:
    result = invoke(run_args(tmp_path, "--vantage", "lab"))
    assert_measured(result, tmp_path)
    assert not config_dir.exists(), "a lab run touched the config"


def test_the_gate_itself() -> None:
    settings = config.Settings(path=Path("/nonexistent/config.toml"))
    assert not consent.consent_given(settings)
    now = datetime.now(UTC)
    current = config.Consent(version=consent.CONSENT_VERSION, given=now)
    assert consent.consent_given(config.Settings(path=settings.path, consent=current))
    for version in (consent.CONSENT_VERSION - 1, consent.CONSENT_VERSION + 1):
        other = config.Consent(version=version, given=now)
        assert not consent.consent_given(config.Settings(path=settings.path, consent=other))
    consent.require_consent("lab", yes=True, interactive=False)  # never reads the config


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_real_terminal_is_asked(tmp_path: Path, config_dir: Path) -> None:
    """Through a pseudo-terminal, as a volunteer's first `ringprobe run` in a shell."""
    controller, terminal = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "probe.cli", *run_args(tmp_path)],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            os.close(terminal)
            terminal = -1
            os.write(controller, b"yes\n")
            stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0, stderr
    assert "Type yes to agree" in stderr
    assert json.loads(stdout)["records"] == 1
    recorded = stored_consent()
    assert recorded is not None
    assert recorded.version == consent.CONSENT_VERSION


# --- `ringprobe consent` ---------------------------------------------------------------------


def test_consent_show_prints_the_text_and_records_nothing(config_dir: Path) -> None:
    result = invoke(["consent", "--show"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == consent.TEXT.strip()
    assert not config_dir.exists()


def test_consent_agree_records_after_the_text(config_dir: Path) -> None:
    result = invoke(["consent", "--agree"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(consent.TEXT)
    assert "recorded in" in result.output
    recorded = stored_consent()
    assert recorded is not None
    assert recorded.version == consent.CONSENT_VERSION


def test_consent_withdraw(config_dir: Path) -> None:
    config.record_consent(consent.CONSENT_VERSION)
    config.set_value("cc", "RU")
    result = invoke(["consent", "--withdraw"])
    assert result.exit_code == 0, result.output
    assert "withdrawn" in result.output
    settings = config.load_settings()
    assert settings.consent is None
    assert settings.cc == "RU", "withdrawing touched the settings"
    again = invoke(["consent", "--withdraw"])
    assert again.exit_code == 0, again.output
    assert "no consent was recorded" in again.output


def test_consent_asks_at_a_terminal(config_dir: Path, tty: None) -> None:
    refused = invoke(["consent"], answer="no\n")
    assert refused.exit_code == 2, refused.output
    assert stored_consent() is None
    agreed = invoke(["consent"], answer="YES\n")
    assert agreed.exit_code == 0, agreed.output
    assert stored_consent() is not None
    shown = invoke(["consent"])  # already given: the text and the date, no question
    assert shown.exit_code == 0, shown.output
    assert "You agreed to this text on" in shown.output
    assert "Type yes" not in shown.output


def test_consent_off_a_terminal_points_to_agree(config_dir: Path) -> None:
    result = invoke(["consent"])
    assert result.exit_code == 2, result.output
    assert "ringprobe consent --agree" in result.output
    assert stored_consent() is None


def test_consent_flags_exclude_each_other(config_dir: Path) -> None:
    result = invoke(["consent", "--agree", "--withdraw"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output
    assert not config_dir.exists()


def test_consent_text_reads_on_a_terminal() -> None:
    for heading in ("What it sends", "Who can see it", "What is stored", "What is uploaded"):
        assert heading in consent.TEXT
    assert max(len(line) for line in consent.TEXT.splitlines()) <= 80


# --- `ringprobe config` ----------------------------------------------------------------------


def test_config_path_follows_the_environment(config_dir: Path) -> None:
    result = invoke(["config", "path"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(config_dir / "config.toml")


def test_config_dir_defaults_to_platformdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from platformdirs import user_config_dir

    monkeypatch.delenv(config.ENV_CONFIG_DIR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # platformdirs honours it
    assert config.config_dir() == Path(user_config_dir("ringprobe"))
    if sys.platform.startswith("linux"):
        assert config.config_path() == tmp_path / "xdg" / "ringprobe" / "config.toml"


def test_config_set_get_unset(config_dir: Path) -> None:
    assert invoke(["config", "get", "cc"]).output == "\n"  # not set, no default
    assert invoke(["config", "get", "network_type"]).output == "unknown\n"
    for key, value, stored in [
        ("cc", "ru", "RU"),
        ("asn", "12389", "AS12389"),
        ("unattended", "yes", "true"),
        ("locate", "off", "false"),
        ("network_type", "Mobile", "mobile"),
        ("stun_server", "[2001:db8::1]:3478", "[2001:db8::1]:3478"),
        ("upload_url", "https://collector.example/upload", "https://collector.example/upload"),
        ("out", "~/results", str(Path("~/results").expanduser())),
    ]:
        result = invoke(["config", "set", key, value])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{key} = ")
        assert invoke(["config", "get", key]).output == f"{stored}\n"
    settings = config.load_settings()
    assert (settings.cc, settings.asn, settings.unattended, settings.locate) == (
        "RU", "AS12389", True, False,
    )  # fmt: skip
    assert settings.out == Path("~/results").expanduser()
    assert settings.from_file == set(config.KEYS)
    removed = invoke(["config", "unset", "locate"])
    assert removed.exit_code == 0, removed.output
    assert "back to its default, true" in removed.output
    assert config.load_settings().source("locate") == "default"
    again = invoke(["config", "unset", "locate"])
    assert again.exit_code == 0, again.output
    assert "was not set" in again.output


def test_config_show_says_where_each_value_comes_from(config_dir: Path) -> None:
    config.set_value("cc", "RU")
    config.record_consent(consent.CONSENT_VERSION, datetime(2026, 12, 5, 8, tzinfo=UTC))
    document = json.loads(invoke(["config", "show", "--json"]).output)
    assert document["path"] == str(config_dir / "config.toml")
    assert document["settings"]["cc"] == {
        "value": "RU",
        "source": "file",
        "allowed": config.KEYS["cc"].allowed,
    }
    assert document["settings"]["network_type"]["source"] == "default"
    assert document["settings"]["stun_server"]["value"] == config.DEFAULT_STUN_SERVER
    assert document["consent"] == {
        "version": consent.CONSENT_VERSION,
        "given": "2026-12-05T08:00:00Z",
        "current": True,
    }
    text = invoke(["config", "show"])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert any(line.split()[:3] == ["cc", "RU", "file"] for line in lines)
    assert any(line.split()[:3] == ["locate", "true", "default"] for line in lines)
    assert "consent: text version 1, given 2026-12-05T08:00:00Z" in text.output


@pytest.mark.parametrize(
    "args", [["set", "colour", "blue"], ["get", "colour"], ["unset", "colour"]]
)
def test_config_unknown_key_is_one_line_naming_the_keys(config_dir: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "probe.cli", "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "unknown setting 'colour'" in line
    assert "unattended, upload_url" in line
    assert not config_dir.exists()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("cc", "Russia", "two-letter country code"),
        ("asn", "12x", "AS12389"),
        ("network_type", "satellite", "wifi, mobile, wired, unknown"),
        ("upload_url", "ftp://collector.example/", "http:// or https://"),
        ("upload_url", "collector.example", "http:// or https://"),
        ("stun_server", "stun.example:99999", "HOST[:PORT]"),
        ("stun_server", "stun example", "HOST[:PORT]"),
        ("stun_server", "2001:db8::1:70000]", "HOST[:PORT]"),
        ("unattended", "maybe", "true or false"),
        ("out", " ", "directory"),
    ],
)
def test_config_bad_value_names_key_and_what_it_takes(
    config_dir: Path, key: str, value: str, allowed: str
) -> None:
    result = invoke(["config", "set", key, value])
    assert result.exit_code == 2, result.output
    assert f"setting '{key}' takes" in result.output
    assert allowed in result.output
    assert not config_dir.exists()


def test_consent_is_not_a_setting(config_dir: Path) -> None:
    for args in (["set", "consent", "1"], ["unset", "consent"]):
        result = invoke(["config", *args])
        assert result.exit_code == 2, result.output
        assert "ringprobe consent" in result.output


def test_config_file_is_private_and_written_atomically(config_dir: Path) -> None:
    config.set_value("cc", "RU")
    config.record_consent(consent.CONSENT_VERSION)
    config.set_value("asn", "AS12389")
    config.unset_value("asn")
    config.withdraw_consent()
    path = config_dir / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.toml"], "a temp file was left"
    assert tomllib.loads(path.read_text()) == {"cc": "RU"}


def test_a_failed_write_leaves_the_old_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.set_value("cc", "RU")
    path = config_dir / "config.toml"
    before = path.read_bytes()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OptionError, match=r"cannot write .*config\.toml: No space left on device"):
        config.set_value("cc", "DE")
    assert path.read_bytes() == before
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.toml"]


def test_an_existing_directory_keeps_its_mode(config_dir: Path) -> None:
    """RINGPROBE_CONFIG_DIR may be a mounted volume: its mode is the operator's business."""
    config_dir.mkdir(mode=0o755)
    config_dir.chmod(0o755)
    config.set_value("cc", "RU")
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((config_dir / "config.toml").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("colour = 'blue'\n", "unknown setting 'colour' (remove it: ringprobe config unset colour"),
        ("cc = 7\n", "setting 'cc' takes a two-letter country code like RU, not 7"),
        ("locate = 'yes'\n", "setting 'locate' takes true or false"),
        ("cc = \n", "not valid TOML"),
        ("[consent]\nversion = 'one'\n", "[consent] version must be a whole number"),
        ("[consent]\nversion = 1\ngiven = 'today'\n", "[consent] given must be a UTC time"),
        ("[consent]\nversion = 1\ngiven = 2026-12-05T08:00:00\n", "given must be a UTC time"),
    ],
)
def test_a_bad_file_is_named_with_the_problem(config_dir: Path, content: str, message: str) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(content)
    with pytest.raises(OptionError) as caught:
        config.load_settings()
    assert str(caught.value).startswith(f"{config_dir / 'config.toml'}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    result = invoke(["config", "show"])
    assert result.exit_code == 2
    assert message in result.output


def test_a_bad_file_can_be_repaired_key_by_key(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text("colour = 'blue'\ncc = 7\n")
    assert invoke(["config", "set", "asn", "AS3320"]).exit_code == 0
    assert invoke(["config", "unset", "colour"]).exit_code == 0
    assert invoke(["config", "set", "cc", "DE"]).exit_code == 0
    settings = config.load_settings()
    assert (settings.asn, settings.cc) == ("AS3320", "DE")


def test_a_consent_with_another_offset_is_read_in_utc(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        "[consent]\nversion = 1\ngiven = 2026-12-05T11:00:00+03:00\n"
    )
    recorded = stored_consent()
    assert recorded == config.Consent(version=1, given=datetime(2026, 12, 5, 8, tzinfo=UTC))
    assert recorded.given.utcoffset() == timedelta(0)


def test_default_stun_server_is_the_catalogs_control() -> None:
    (stun,) = [t for t in load_catalog(None) if t.id == "ctl-stun-google-19302"]
    assert f"{stun.host}:{stun.port}" == config.DEFAULT_STUN_SERVER


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("stun.example.org", ("stun.example.org", 3478)),
        ("STUN.example.org.:19302", ("stun.example.org", 19302)),
        ("192.0.2.7:3479", ("192.0.2.7", 3479)),
        ("2001:db8::7", ("2001:db8::7", 3478)),
        ("[2001:db8::7]:3480", ("2001:db8::7", 3480)),
    ],
)
def test_parse_host_port(text: str, parsed: tuple[str, int]) -> None:
    assert config.parse_host_port(text) == parsed


@pytest.mark.parametrize(
    "text", ["", ":3478", "host:0", "host:port", "[192.0.2.7]:3478", "1.2.3", "a_b.example", "[::1"]
)
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        config.parse_host_port(text)


_SCALAR = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
)


@given(
    st.dictionaries(st.text(min_size=1), _SCALAR, max_size=5),
    st.dictionaries(st.text(min_size=1), _SCALAR, max_size=3),
)
def test_the_writer_round_trips_through_tomllib(
    top: dict[str, object], table: dict[str, object]
) -> None:
    raw: dict[str, object] = {**top, "consent": table}
    assert tomllib.loads(config.dumps(raw)) == raw


# --- settings as `run`'s defaults ------------------------------------------------------------


def test_settings_stand_in_for_run_options_the_command_line_leaves_out(
    tmp_path: Path, config_dir: Path
) -> None:
    config.record_consent(consent.CONSENT_VERSION)
    out = tmp_path / "from-settings"
    for key, value in (("out", str(out)), ("asn", "AS64511"), ("network_type", "mobile")):
        config.set_value(key, value)
    args = [a for a in run_args(tmp_path) if a not in ("--out", str(tmp_path / "out"))]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert Path(summary["records_path"]).parent == out  # the `out` setting
    (row,) = [json.loads(line) for line in Path(summary["records_path"]).read_text().splitlines()]
    assert row["probe"]["asn"] == "AS64496"  # --asn on the command line wins over the setting
    assert row["probe"]["network_type"] == "mobile"  # the setting, --network-type left out
    assert summary["settings"]["location"] == "given"  # --asn and --cc: nothing looked up
