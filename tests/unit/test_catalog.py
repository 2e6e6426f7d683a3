"""The endpoint catalog: the built-in data, the loader's validation, and its error messages.

Nothing here touches the network: the loader only parses files. Custom catalogs written by these
tests use documentation addresses (RFC 5737, RFC 3849) and example.* names all the same.
"""

from __future__ import annotations

import datetime
import importlib.resources
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.errors import CatalogError
from probe.model import APPS, EXPECTS, EXPECTS_BY_TRANSPORT, ROLES, TRANSPORTS, Target
from probe.targets import BUILTIN_FILES, Catalog, builtin_catalog, load_catalog

CHECKED = "2026-11-28"


# --- a tiny TOML writer, so cases read as data (tomllib reads TOML but does not write it) ------


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # repr() of a float is valid TOML, including nan, inf and -inf.
        return repr(value)
    if isinstance(value, str):
        # JSON escapes every control character TOML forbids in a basic string except DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML text for a document whose 'defaults' is a table and 'target' a list of tables."""
    lines: list[str] = []
    for key, value in document.items():
        if key in ("defaults", "target"):
            continue
        lines.append(f"{_key(key)} = {_value(value)}")
    defaults = document.get("defaults")
    if isinstance(defaults, dict):
        lines.append("[defaults]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in defaults.items())
    elif "defaults" in document:
        lines.insert(0, f"defaults = {_value(defaults)}")
    targets = document.get("target")
    if isinstance(targets, list) and all(isinstance(t, dict) for t in targets):
        for entry in targets:
            lines.append("[[target]]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in entry.items())
    elif "target" in document:
        lines.insert(0, f"target = {_value(targets)}")
    return "\n".join(lines) + "\n"


NEEDS_HOST = ("tls", "https", "http3")  # the SNI of the TLS and QUIC checks


def valid_entry(**changes: Any) -> dict[str, Any]:
    """A valid [[target]]; a change to None removes the field."""
    entry: dict[str, Any] = {
        "id": "t-1",
        "app": "telegram",
        "role": "signaling",
        "address": "192.0.2.1",
        "port": 443,
        "transport": "tcp",
        "expect": "tcp",
        "source": "https://example.org/spec",
        "date": CHECKED,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def write(tmp_path: Path, text: str, name: str = "catalog.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_names(err: CatalogError, path: Path, entry: str | None, problem: str) -> None:
    """The message names the file, the entry (when there is one) and the problem."""
    message = str(err)
    assert err.source == str(path)
    assert str(path) in message
    assert err.entry == entry
    if entry is not None:
        assert f"entry {entry!r}" in message
    assert problem in err.problem, err.problem
    assert problem in message


# --- the built-in catalog ----------------------------------------------------------------------


def test_builtin_loads_in_stable_order() -> None:
    catalog = builtin_catalog()
    assert len(catalog) > 0
    assert catalog.apps() == ("whatsapp", "telegram", "signal", "control")
    assert catalog.sources == tuple(f"probe/targets/{name}" for name in BUILTIN_FILES)
    assert load_catalog(None) == catalog
    assert [t.id for t in builtin_catalog()] == [t.id for t in catalog]


def test_every_builtin_entry_is_complete() -> None:
    for target in builtin_catalog():
        assert target.app in APPS, target
        assert target.role in ROLES, target
        assert target.transport in TRANSPORTS, target
        assert target.expect in EXPECTS, target
        assert target.source.strip(), target
        assert target.date == CHECKED, target
        assert target.host or target.address, target
        assert 1 <= target.port <= 65535, target
        if target.app == "control":
            assert target.role == "control", target


def test_builtin_ids_are_unique() -> None:
    ids = [t.id for t in builtin_catalog()]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def test_builtin_counts_per_app() -> None:
    counts = Counter(t.app for t in builtin_catalog())
    assert counts == {"whatsapp": 41, "telegram": 32, "signal": 7, "control": 5}


def test_whatsapp_e_hosts_on_443_and_5222_speak_noise_not_tls() -> None:
    e_hosts = [
        t for t in builtin_catalog() if re.fullmatch(r"e[0-9]+\.whatsapp\.net", t.host or "")
    ]
    assert len(e_hosts) == 32
    assert {(t.host, t.port) for t in e_hosts} == {
        (f"e{n}.whatsapp.net", port) for n in range(1, 17) for port in (443, 5222)
    }
    assert {t.id for t in e_hosts} == {
        f"wa-e{n}-{port}" for n in range(1, 17) for port in (443, 5222)
    }
    assert {(t.role, t.expect, t.transport) for t in e_hosts} == {("signaling", "whatsapp", "tcp")}


def test_whatsapp_web_and_registration() -> None:
    by_id = {t.id: t for t in builtin_catalog()}
    assert {(by_id[i].host, by_id[i].port) for i in ("wa-g-443", "wa-g-5222")} == {
        ("g.whatsapp.net", 443),
        ("g.whatsapp.net", 5222),
    }
    web = by_id["wa-web-443"]
    assert (web.host, web.role, web.expect, web.path) == ("web.whatsapp.com", "web", "https", "/")
    register = by_id["wa-register-443"]
    assert (register.host, register.expect, register.path) == (
        "v.whatsapp.net",
        "https",
        "/v2/register",
    )


def test_telegram_dcs() -> None:
    telegram = [t for t in builtin_catalog() if t.app == "telegram" and t.role == "signaling"]
    dcs = ["149.154.175.50", "149.154.167.51", "149.154.175.100", "149.154.167.91", "149.154.171.5"]
    v4 = [t for t in telegram if t.address and ipaddress.ip_address(t.address).version == 4]
    assert len(v4) == 15
    assert {(t.id, t.address, t.port) for t in v4} == {
        (f"tg-dc{n}-{port}", address, port)
        for n, address in enumerate(dcs, 1)
        for port in (443, 80, 5222)
    }
    v6 = [t for t in telegram if t.address and ipaddress.ip_address(t.address).version == 6]
    assert [(t.id, t.address, t.port) for t in v6] == [
        ("tg-dc1-v6-443", "2001:b28:f23d:f001::a", 443),
        ("tg-dc2-v6-443", "2001:67c:4e8:f002::a", 443),
        ("tg-dc3-v6-443", "2001:b28:f23d:f003::a", 443),
        ("tg-dc4-v6-443", "2001:67c:4e8:f004::a", 443),
        ("tg-dc5-v6-443", "2001:b28:f23f:f005::a", 443),
    ]
    assert {(t.role, t.expect) for t in v4 + v6} == {("signaling", "mtproto")}
    # The DC id each address belongs to, for the obfuscated2 init (from its id: tg-dc<N>-...).
    assert all(t.dc == int(t.id[5]) for t in v4 + v6)
    web = [t for t in builtin_catalog() if t.app == "telegram" and t.role == "web"]
    assert [(t.host, t.port, t.transport, t.expect) for t in web] == [
        ("web.telegram.org", 443, "tcp", "https"),
        ("web.telegram.org", 443, "udp", "http3"),
    ]


def test_signal_and_controls() -> None:
    by_id = {t.id: t for t in builtin_catalog()}
    signal_hosts = {t.host for t in builtin_catalog() if t.app == "signal"}
    assert {
        "chat.signal.org",
        "textsecure-service.whispersystems.org",
        "storage.signal.org",
        "cdn.signal.org",
        "cdn2.signal.org",
        "sfu.voip.signal.org",
        "uptime.signal.org",
    } == signal_hosts
    assert by_id["sig-uptime-443"].expect == "unknown"
    doh = by_id["ctl-doh-cloudflare-443"]
    assert (doh.address, doh.host, doh.port, doh.expect) == (
        "1.1.1.1",
        "cloudflare-dns.com",
        443,
        "tls",
    )
    assert by_id["ctl-example-443"].host == "www.example.com"
    assert by_id["ctl-example-443"].expect == "https"


# --- the call path: UDP relays, reflectors, TURN and the neutral STUN control ------------------

# What each call-path role normally answers (probe.model.EXPECTS); the control's UDP entries are
# checked separately because its TCP entries share the role.
CALL_PATH_EXPECT = {"relay": "wa_relay", "reflector": "reflector", "turn": "turn"}
CALL_PATH_PORTS = {"relay": {3478, 3480}, "reflector": {596, 597, 598, 599}, "turn": {1400}}


def call_path() -> list[Target]:
    return [t for t in builtin_catalog() if t.role in CALL_PATH_EXPECT]


def test_call_path_counts_per_app_and_role() -> None:
    counts = Counter((t.app, t.role) for t in call_path())
    assert counts == {
        ("whatsapp", "relay"): 4,
        ("telegram", "reflector"): 8,
        ("telegram", "turn"): 2,
    }
    stun_controls = [t for t in builtin_catalog() if t.app == "control" and t.transport == "udp"]
    assert [t.id for t in stun_controls if t.expect == "stun"] == ["ctl-stun-google-19302"]


def test_call_path_entries_are_udp_with_the_expect_of_their_role() -> None:
    for target in call_path():
        assert target.transport == "udp", target
        assert target.expect == CALL_PATH_EXPECT[target.role], target
        assert target.port in CALL_PATH_PORTS[target.role], target
        assert target.source.startswith("https://"), target
        assert target.note.strip(), target
        # Fixed addresses seen in public captures: no host name to resolve, and IPv4 only.
        assert target.host is None, target
        assert target.address is not None, target
        assert ipaddress.ip_address(target.address).version == 4, target


def test_call_path_roles_belong_to_their_app() -> None:
    apps: dict[str, set[str]] = {}
    for target in call_path():
        apps.setdefault(target.role, set()).add(target.app)
    assert apps == {"relay": {"whatsapp"}, "reflector": {"telegram"}, "turn": {"telegram"}}
    # And no entry of another role expects a call-path answer.
    role_of_expect = {expect: role for role, expect in CALL_PATH_EXPECT.items()}
    for target in builtin_catalog():
        if target.expect in role_of_expect:
            assert target.role == role_of_expect[target.expect], target


def test_whatsapp_relays_on_3478_and_3480() -> None:
    relays = [t for t in call_path() if t.role == "relay"]
    assert {(t.id, t.address, t.port) for t in relays} == {
        (f"wa-relay{n}-{port}", address, port)
        for n, address in ((1, "57.144.129.57"), (2, "57.144.41.57"))
        for port in (3478, 3480)
    }


def test_telegram_reflectors_on_596_to_599() -> None:
    reflectors = [t for t in call_path() if t.role == "reflector"]
    assert {(t.id, t.address, t.port) for t in reflectors} == {
        (f"tg-refl{n}-{port}", address, port)
        for n, address in ((1, "91.108.17.7"), (2, "91.108.9.68"))
        for port in (596, 597, 598, 599)
    }


def test_telegram_turn_on_1400() -> None:
    turn = [t for t in call_path() if t.role == "turn"]
    assert [(t.id, t.address, t.port) for t in turn] == [
        ("tg-turn1-1400", "91.108.9.34", 1400),
        ("tg-turn2-1400", "91.108.13.52", 1400),
    ]


def test_telegram_call_path_lies_in_telegrams_ranges() -> None:
    # shared/METHOD.md, wire facts: Telegram's address ranges.
    ranges = [
        ipaddress.ip_network(net)
        for net in (
            "91.108.4.0/22",
            "91.108.8.0/22",
            "91.108.12.0/22",
            "91.108.16.0/22",
            "91.108.20.0/22",
            "91.108.56.0/22",
            "91.105.192.0/23",
            "149.154.160.0/20",
            "185.76.151.0/24",
        )
    ]
    for target in call_path():
        if target.app == "telegram":
            address = ipaddress.ip_address(target.address or "")
            assert any(address in net for net in ranges), target


def test_neutral_stun_control() -> None:
    by_id = {t.id: t for t in builtin_catalog()}
    stun = by_id["ctl-stun-google-19302"]
    assert (stun.app, stun.role, stun.host, stun.address) == (
        "control",
        "control",
        "stun.l.google.com",
        None,
    )
    assert (stun.port, stun.transport, stun.expect) == (19302, "udp", "stun")
    assert stun.source.startswith("https://github.com/webrtc/samples/blob/")


def test_control_udp_entries_expect_stun_or_http3() -> None:
    controls = [t for t in builtin_catalog() if t.app == "control" and t.transport == "udp"]
    assert {t.expect for t in controls} == {"stun", "http3"}
    for target in controls:
        if target.expect == "stun":
            assert target.role == "control", target


@pytest.mark.parametrize(
    ("name", "urls"),
    [
        pytest.param(
            "whatsapp.toml",
            (
                "https://github.com/oxidezap/whatsapp-rust/blob/",
                "https://github.com/purpshell/meowcaller/issues/21",
                "https://github.com/oxidezap/whatsapp-rust/pull/1102",
            ),
            id="whatsapp",
        ),
        pytest.param(
            "telegram.toml",
            (
                "https://github.com/ntop/nDPI/blob/",
                "https://github.com/Flowseal/zapret-discord-youtube/issues/6148",
            ),
            id="telegram",
        ),
        pytest.param("control.toml", ("https://github.com/webrtc/samples/blob/",), id="control"),
    ],
)
def test_call_path_sources_are_in_the_header(name: str, urls: tuple[str, ...]) -> None:
    text = importlib.resources.files("probe.targets").joinpath(name).read_text(encoding="utf-8")
    header = text.split("\n[", 1)[0]
    for url in urls:
        assert url in header, url
    app = name.removesuffix(".toml")
    for target in builtin_catalog():
        if target.app == app and (target.role in CALL_PATH_EXPECT or target.expect == "stun"):
            # Every call-path source is one the header names and explains.
            assert target.source in header, target


@pytest.mark.parametrize("name", BUILTIN_FILES)
def test_builtin_files_state_sources_and_date_in_a_header(name: str) -> None:
    text = importlib.resources.files("probe.targets").joinpath(name).read_text(encoding="utf-8")
    header = text.split("\n[", 1)[0]
    assert header.startswith("#")
    assert "Sources (checked 2026-11-28)" in header
    assert "https://" in header


# --- Catalog -----------------------------------------------------------------------------------


def test_select_keeps_catalog_order() -> None:
    catalog = builtin_catalog()
    picked = catalog.select(["control", "telegram"])
    assert picked.apps() == ("telegram", "control")
    assert [t.id for t in picked] == [t.id for t in catalog if t.app in ("telegram", "control")]
    assert picked.sources == catalog.sources
    assert len(catalog.select([])) == 0


def test_select_rejects_unknown_apps_naming_them_and_the_known_ones() -> None:
    with pytest.raises(CatalogError) as info:
        builtin_catalog().select(["telegram", "viber"])
    message = str(info.value)
    assert "'viber'" in message
    assert "whatsapp, telegram, signal, control" in message


def test_catalog_is_immutable() -> None:
    catalog = builtin_catalog()
    with pytest.raises(AttributeError):
        catalog.targets = ()  # type: ignore[misc]


# --- custom files ------------------------------------------------------------------------------


def test_custom_file_replaces_builtin(tmp_path: Path) -> None:
    path = write(tmp_path, to_toml({"target": [valid_entry()]}))
    catalog = load_catalog(path)
    assert isinstance(catalog, Catalog)
    assert catalog.sources == (str(path),)
    assert list(catalog) == [
        Target(
            id="t-1",
            app="telegram",
            role="signaling",
            port=443,
            transport="tcp",
            expect="tcp",
            source="https://example.org/spec",
            date=CHECKED,
            address="192.0.2.1",
        )
    ]
    assert load_catalog(str(path)) == catalog


def test_defaults_apply_where_entries_are_silent(tmp_path: Path) -> None:
    text = """
[defaults]
app = "control"
role = "control"
transport = "tcp"
source = "https://example.org/doc"
date = 2026-11-28
port = 443
expect = "https"

[[target]]
id = "a"
host = "www.example.com"

[[target]]
id = "b"
host = "www.example.net"
port = 8443
expect = "tls"
path = "/health"
note = "own port"
"""
    a, b = load_catalog(write(tmp_path, text))
    assert (a.app, a.role, a.port, a.expect, a.date, a.path, a.note) == (
        "control",
        "control",
        443,
        "https",
        CHECKED,
        "/",
        "",
    )
    assert (b.port, b.expect, b.path, b.note) == (8443, "tls", "/health", "own port")


def test_ipv6_addresses_are_normalised(tmp_path: Path) -> None:
    entry = valid_entry(address="2001:0DB8:0000:0000:0000:0000:0000:000A")
    (target,) = load_catalog(write(tmp_path, to_toml({"target": [entry]})))
    assert target.address == "2001:db8::a"


# --- validation: every problem names the file, the entry and the problem ----------------------

ENTRY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("port-range", valid_entry(port=70000), "port 70000 is out of range 1-65535"),
    ("port-zero", valid_entry(port=0), "port 0 is out of range 1-65535"),
    ("port-bool", valid_entry(port=True), "port must be an integer, not a boolean"),
    ("port-string", valid_entry(port="443"), "port must be an integer, not a string"),
    ("port-float", valid_entry(port=443.0), "port must be an integer, not a float"),
    (
        "role",
        valid_entry(role="relayy"),
        "unknown role 'relayy' (known: signaling, web, relay, reflector, turn, control)",
    ),
    ("app", valid_entry(app="viber"), "unknown app 'viber' (known: whatsapp, telegram"),
    ("transport", valid_entry(transport="sctp"), "unknown transport 'sctp' (known: tcp, udp)"),
    (
        "expect",
        valid_entry(expect="x"),
        "unknown expect 'x' (known: tcp, tls, https, mtproto, whatsapp, http3, stun, turn, "
        "wa_relay, reflector, echo, unknown)",
    ),
    (
        "expect-udp",
        valid_entry(transport="udp"),
        "expect 'tcp' is not for udp (known: http3, stun, turn, wa_relay, reflector, echo, "
        "unknown)",
    ),
    (
        "expect-tcp",
        valid_entry(expect="http3", host="www.example.com"),
        "expect 'http3' is not for tcp (known: tcp, tls, https, mtproto, whatsapp, unknown)",
    ),
    (
        "http3-no-host",
        valid_entry(transport="udp", expect="http3"),
        "expect 'http3' needs a 'host'",
    ),
    ("dc-not-mtproto", valid_entry(dc=2), "'dc' is only for expect \"mtproto\""),
    ("dc-type", valid_entry(expect="mtproto", dc="2"), "dc must be an integer, not a string"),
    ("dc-bool", valid_entry(expect="mtproto", dc=True), "dc must be an integer, not a boolean"),
    ("dc-zero", valid_entry(expect="mtproto", dc=0), "dc 0 is not a data center id"),
    ("dc-range", valid_entry(expect="mtproto", dc=40000), "dc 40000 is not a data center id"),
    ("expect-type", valid_entry(expect=["tcp"]), "expect must be a string, not an array"),
    ("missing", valid_entry(port=None), "missing field 'port'"),
    ("unknown-field", {**valid_entry(), "prot": 443}, "unknown field 'prot' (did you mean 'port'"),
    ("address", valid_entry(address="1.2.3"), "address '1.2.3' is not an IP address"),
    ("address-type", valid_entry(address=3221225985), "address must be a string, not an integer"),
    ("date-month", valid_entry(date="2026-13-01"), "date '2026-13-01' is not YYYY-MM-DD"),
    ("date-format", valid_entry(date="28.11.2026"), "date '28.11.2026' is not YYYY-MM-DD"),
    ("date-compact", valid_entry(date="20261128"), "date '20261128' is not YYYY-MM-DD"),
    (
        "date-time",
        valid_entry(date=datetime.datetime(2026, 11, 28, 10, 0)),
        "date must be a string, not a date-time",
    ),
    ("no-endpoint", valid_entry(address=None), "needs 'host' or 'address'"),
    ("tls-no-host", valid_entry(expect="tls"), "expect 'tls' needs a 'host'"),
    ("https-no-host", valid_entry(expect="https"), "expect 'https' needs a 'host'"),
    ("host-shape", valid_entry(host="bad host"), "host 'bad host' is not a DNS name"),
    ("host-ip", valid_entry(host="192.0.2.7"), "host '192.0.2.7' is an IP address"),
    ("host-empty", valid_entry(host=""), "host must not be empty"),
    ("path", valid_entry(path="v2/register"), "path 'v2/register' must start with '/'"),
    ("source-empty", valid_entry(source=" "), "source must not be empty"),
    ("note-type", valid_entry(note=5), "note must be a string, not an integer"),
]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [pytest.param(entry, problem, id=name) for name, entry, problem in ENTRY_CASES],
)
def test_entry_problems(tmp_path: Path, entry: dict[str, Any], problem: str) -> None:
    path = write(tmp_path, to_toml({"target": [valid_entry(id="ok-1"), entry]}))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, "t-1", problem)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        pytest.param(valid_entry(id=None), "missing field 'id'", id="missing"),
        pytest.param(valid_entry(id=7), "id must be a string, not an integer", id="type"),
        pytest.param(valid_entry(id="a b"), "id 'a b' must start with a letter", id="shape"),
    ],
)
def test_entries_without_a_usable_id_are_named_by_position(
    tmp_path: Path, entry: dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, to_toml({"target": [valid_entry(id="ok-1"), entry]}))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, "#2", problem)


def test_duplicate_ids_name_the_first_position(tmp_path: Path) -> None:
    entries = [valid_entry(id="a"), valid_entry(id="wa-e1-443"), valid_entry(id="wa-e1-443")]
    path = write(tmp_path, to_toml({"target": entries}))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, "wa-e1-443", "duplicate id 'wa-e1-443' (first at #2)")


@pytest.mark.parametrize(
    ("defaults", "problem"),
    [
        pytest.param({"id": "x"}, "'id' cannot have a default", id="id"),
        pytest.param({"prot": 1}, "unknown field 'prot'", id="unknown"),
        pytest.param({"port": 70000}, "port 70000 is out of range 1-65535", id="port"),
        pytest.param({"date": "2026-13-01"}, "date '2026-13-01' is not YYYY-MM-DD", id="date"),
    ],
)
def test_defaults_problems_point_at_defaults(
    tmp_path: Path, defaults: dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, to_toml({"defaults": defaults, "target": [valid_entry()]}))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, "[defaults]", problem)


@pytest.mark.parametrize(
    ("text", "entry", "problem"),
    [
        pytest.param("", None, "no [[target]] entries", id="empty"),
        pytest.param("target = []\n", None, "no [[target]] entries", id="empty-array"),
        pytest.param("target = 5\n", None, "'target' must be an array of tables", id="scalar"),
        pytest.param("target = [1, 2]\n", "#1", "entry is an integer, not a table", id="items"),
        pytest.param(
            "defaults = 3\n" + to_toml({"target": [valid_entry()]}),
            None,
            "[defaults] must be a table, not an integer",
            id="defaults",
        ),
        pytest.param(
            "version = 1\n" + to_toml({"target": [valid_entry()]}),
            None,
            "unknown top-level key 'version'",
            id="top-level",
        ),
    ],
)
def test_wrong_shape(tmp_path: Path, text: str, entry: str | None, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, entry, problem)


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    text = '[[target]]\nid = "a"\nport = = 443\n'
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, None, "not valid TOML")
    assert "line 3" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("a = " + "[" * 5000, "nested too deeply", id="deep-arrays"),
        pytest.param("a = " + "{b = " * 5000, "nested too deeply", id="deep-tables"),
        pytest.param("a = " + "1" * 5000, "not valid TOML", id="huge-integer"),
    ],
)
def test_pathological_toml_is_a_catalog_error(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_names(info.value, path, None, problem)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(CatalogError) as info:
        load_catalog(missing)
    assert_names(info.value, missing, None, "cannot read the file")

    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    assert_names(info.value, tmp_path, None, "cannot read the file")

    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('note = "café"\n'.encode("latin-1"))
    with pytest.raises(CatalogError) as info:
        load_catalog(latin1)
    assert_names(info.value, latin1, None, "not UTF-8")


# --- property: any file either loads or raises CatalogError, never anything else -------------

_FIELD_NAMES = (
    "id",
    "app",
    "role",
    "port",
    "transport",
    "expect",
    "source",
    "date",
    "host",
    "address",
    "path",
    "note",
)

_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(),
    st.dates(),
    st.sampled_from(APPS + ROLES + TRANSPORTS + EXPECTS),
    st.sampled_from(["192.0.2.1", "2001:db8::1", "www.example.com", "/x", CHECKED, "1.2.3"]),
    st.integers(min_value=1, max_value=65535),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_keys = st.one_of(st.sampled_from(_FIELD_NAMES), st.text(min_size=1, max_size=8))
_tables = st.dictionaries(_keys, _values, max_size=14)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.one_of(_tables, _scalars),
        "target": st.one_of(st.lists(st.one_of(_tables, _scalars), max_size=4), _scalars),
        "extra": _values,
    },
)


def _load_or_catalog_error(path: Path) -> Catalog | None:
    """The catalog, or None when the loader refused the file with a CatalogError naming it.
    Any other exception propagates and fails the test."""
    try:
        outcome: Catalog | CatalogError = load_catalog(path)
    except CatalogError as exc:
        outcome = exc
    if isinstance(outcome, CatalogError):
        # Every refusal must still say which file it is about.
        assert str(path) in str(outcome)
        return None
    return outcome


# Lines of real catalogs, broken ones and noise: shuffled together they reach past the TOML parser
# into the loader's own checks far more often than uniformly random text does.
_FRAGMENTS = (
    "[[target]]",
    "[defaults]",
    "[target]",
    'id = "a"',
    'id = "b"',
    'app = "telegram"',
    'app = "viber"',
    'role = "signaling"',
    'host = "www.example.com"',
    'address = "192.0.2.1"',
    'address = "2001:DB8::1"',
    "port = 443",
    "port = 70000",
    "port = true",
    'transport = "tcp"',
    'expect = "tcp"',
    'source = "https://example.org"',
    "date = 2026-11-28",
    'date = "2026-11-28"',
    'path = "/"',
    "target = []",
    "defaults = 1",
)
_tomlish = st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=16),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=16),
).map("\n".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_tomlish, st.text()))
def test_any_text_loads_or_is_a_catalog_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    _load_or_catalog_error(write(tmp_path_factory.mktemp("text"), text))


@settings(max_examples=100, deadline=None)
@given(data=st.binary())
def test_any_bytes_load_or_are_a_catalog_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "catalog.toml"
    path.write_bytes(data)
    _load_or_catalog_error(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents)
def test_any_document_loads_or_is_a_catalog_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    path = write(tmp_path_factory.mktemp("doc"), to_toml(document))
    catalog = _load_or_catalog_error(path)
    if catalog is not None:
        assert len(catalog) == len(document["target"])


_valid_entries = st.lists(
    st.builds(
        valid_entry,
        app=st.sampled_from(APPS),
        role=st.sampled_from(ROLES),
        port=st.integers(min_value=1, max_value=65535),
        transport=st.sampled_from(TRANSPORTS),
        expect=st.sampled_from(EXPECTS),
        address=st.sampled_from([None, "192.0.2.9", "2001:db8::9"]),
        host=st.sampled_from([None, "www.example.com", "a-b.example.org."]),
        note=st.text(max_size=30),
        date=st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2100, 1, 1)),
    )
    .filter(lambda e: e["expect"] in EXPECTS_BY_TRANSPORT[e["transport"]])
    .filter(lambda e: "host" in e or ("address" in e and e["expect"] not in NEEDS_HOST)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=_valid_entries)
def test_valid_documents_round_trip(
    tmp_path_factory: pytest.TempPathFactory, entries: list[dict[str, Any]]
) -> None:
    for n, entry in enumerate(entries):
        entry["id"] = f"t-{n}"
    path = write(tmp_path_factory.mktemp("valid"), to_toml({"target": entries}))
    catalog = load_catalog(path)
    assert [t.id for t in catalog] == [e["id"] for e in entries]
    for target, entry in zip(catalog, entries, strict=True):
        assert (target.app, target.role, target.port) == (
            entry["app"],
            entry["role"],
            entry["port"],
        )
        assert target.note == entry["note"]
        assert target.date == entry["date"].isoformat()
