from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.allowlist import ENV_VAR, LAB_NETS, AllowList, parse_networks
from probe.errors import AllowListError, NotAllowedError


def test_unset_allows_everything() -> None:
    allow = AllowList.from_sources([], environ={})
    assert not allow.restricted
    assert allow.allows("149.154.167.51")
    assert allow.describe() == "unrestricted"


def test_cli_and_environment_are_joined() -> None:
    allow = AllowList.from_sources(["192.0.2.0/24"], environ={ENV_VAR: "198.51.100.0/24, ::1"})
    assert allow.allows("192.0.2.7")
    assert allow.allows("198.51.100.200")
    assert allow.allows("::1")
    assert not allow.allows("203.0.113.1")
    assert not allow.allows("149.154.167.51")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("192.0.2.1", True),
        ("2001:db8::53", True),
        ("2001:db9::1", False),
        ("10.0.0.1", False),
        ("1.1.1.1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),  # a mapped address is IPv6: not in 127/8 as written
        ("web.whatsapp.com", False),  # names must be resolved (through the guard) first
        ("", False),
    ],
)
def test_lab_ranges(address: str, allowed: bool) -> None:
    allow = AllowList(parse_networks(LAB_NETS))
    assert allow.allows(address) is allowed


def test_check_raises_with_the_address() -> None:
    allow = AllowList(parse_networks(["127.0.0.0/8"]))
    with pytest.raises(NotAllowedError, match=r"1\.1\.1\.1 is outside the allow-list"):
        allow.check("1.1.1.1")
    allow.check("127.0.0.1")


@pytest.mark.parametrize("bad", ["300.1.1.1/8", "not-a-net", "10.0.0.0/33", "::1/129"])
def test_bad_cidr_is_a_clear_error(bad: str) -> None:
    with pytest.raises(AllowListError, match="not an IP network"):
        AllowList.from_sources([bad], environ={})


def test_suite_runs_restricted() -> None:
    # conftest.py sets the variable for the whole suite; this guards against its removal.
    allow = AllowList.from_sources()
    assert allow.restricted
    assert not allow.allows("1.1.1.1")


@given(st.ip_addresses())
def test_membership_matches_ipaddress(ip: object) -> None:
    allow = AllowList(parse_networks(LAB_NETS))
    expected = any(ip in net for net in parse_networks(LAB_NETS) if net.version == ip.version)  # type: ignore[attr-defined,operator]
    assert allow.allows(str(ip)) is expected


@given(st.text(max_size=40))
def test_parse_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(AllowListError):
        parse_networks([text])
