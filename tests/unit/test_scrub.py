from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.scrub import SCRUBBED, Scrubber


def test_scrubs_own_address_in_error_strings() -> None:
    s = Scrubber()
    s.add("198.51.100.23")
    text = "ConnectionResetError: peer reset 198.51.100.23:41234 -> 192.0.2.5:443"
    assert s.scrub(text) == f"ConnectionResetError: peer reset {SCRUBBED}:41234 -> 192.0.2.5:443"


@pytest.mark.parametrize(
    "other", ["198.51.100.230", "198.51.100.2", "1198.51.100.23", "198.51.100.23.4"]
)
def test_does_not_scrub_other_addresses_that_contain_it(other: str) -> None:
    s = Scrubber()
    s.add("198.51.100.23")
    assert s.scrub(f"to {other} now") == f"to {other} now"


def test_ipv6_all_written_forms() -> None:
    s = Scrubber()
    s.add("2001:db8::17")
    expanded = "2001:0db8:0000:0000:0000:0000:0000:0017"
    assert s.scrub(f"a 2001:db8::17 b {expanded} c") == f"a {SCRUBBED} b {SCRUBBED} c"
    assert s.scrub("2001:db8::170") == "2001:db8::170"


def test_ipv4_mapped_form_scrubs_the_ipv4_too() -> None:
    s = Scrubber()
    s.add("::ffff:203.0.113.9")
    assert s.scrub("from 203.0.113.9") == f"from {SCRUBBED}"


@pytest.mark.parametrize("ignored", ["127.0.0.1", "::1", "0.0.0.0", "::", "not-an-ip", "", None])
def test_ignores_loopback_unspecified_and_junk(ignored: str | None) -> None:
    s = Scrubber()
    s.add(ignored)
    assert s.addresses == frozenset()
    assert s.scrub("127.0.0.1 0.0.0.0") == "127.0.0.1 0.0.0.0"


def _identifies(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not loopback or unspecified, nor the IPv4-mapped form of one (what Scrubber.add ignores)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback and not ip.is_unspecified


@given(st.ip_addresses().filter(_identifies), st.text())
def test_address_never_survives(ip: object, noise: str) -> None:
    s = Scrubber()
    s.add(str(ip))
    out = s.scrub(f"{noise} {ip} {noise}")
    # The address may only remain where the noise itself created a longer token around it.
    assert out.count(str(ip)) <= 2 * noise.count(str(ip))


# --- every written form (probe/scrub.py's module docstring) -----------------------------------

OWN6 = "2001:db8:1:2::17"


@pytest.mark.parametrize(
    "form",
    [
        "2001:db8:1:2::17",
        "2001:DB8:1:2::17",
        "2001:0db8:0001:0002:0000:0000:0000:0017",
        "2001:0DB8:0001:0002:0000:0000:0000:0017",
        "2001:db8:1:2:0:0:0:17",
        "2001:db8:1:2:0::17",  # a shorter run compressed than RFC 5952 would
        "2001:db8:1:2::0.0.0.23",  # the last 32 bits as a dotted quad (RFC 4291 §2.2, 3.)
        "2001:db8:1:2::17%eth0",
        "2001:db8:1:2::17%25eth0",
    ],
)
def test_ipv6_every_form(form: str) -> None:
    s = Scrubber()
    s.add(OWN6)
    assert s.scrub(f"from {form} to [{form}]:443 ('{form}', 5)") == (
        f"from {SCRUBBED} to [{SCRUBBED}]:443 ('{SCRUBBED}', 5)"
    )


def test_ipv6_added_in_any_form_scrubs_every_form() -> None:
    s = Scrubber()
    s.add("2001:DB8:1:2:0:0:0:17%wlan0")
    assert s.scrub("2001:db8:1:2::17") == SCRUBBED


@pytest.mark.parametrize(
    "other",
    [
        "2001:db8:1:2::1",  # the first router, in our /64: traces must show it
        "2001:db8:1:2::170",
        "2001:db8:1::17",
        "dead:2001:db8:1:2::17",  # a longer (other) address around it
        "12:34:56",
        "00:1a:2b:3c:4d:5e",
    ],
)
def test_ipv6_other_addresses_stay(other: str) -> None:
    s = Scrubber()
    s.add(OWN6)
    assert s.scrub(f"to {other} now") == f"to {other} now"


def test_ipv6_colons_of_the_prose_stay() -> None:
    s = Scrubber()
    s.add(OWN6)
    assert s.scrub(f"peer:{OWN6}: refused") == f"peer:{SCRUBBED}: refused"


def test_ipv6_link_local() -> None:
    s = Scrubber()
    s.add("fe80::1:2%eth0")
    assert s.scrub("fe80::1:2 fe80::9") == f"{SCRUBBED} fe80::9"


@pytest.mark.parametrize(
    "form",
    [
        "203.0.113.9",
        "203.000.113.009",
        "::ffff:203.0.113.9",
        "::FFFF:203.0.113.9",
        "::ffff:cb00:7109",
        "0:0:0:0:0:ffff:cb00:7109",
        "64:ff9b::cb00:7109",  # NAT64 (RFC 6052)
    ],
)
def test_ipv4_every_form(form: str) -> None:
    s = Scrubber()
    s.add("203.0.113.9")
    assert s.scrub(f"from {form}, then") == f"from {SCRUBBED}, then"


def test_ipv4_prefix_neighbours_stay() -> None:
    s = Scrubber()
    s.add("203.0.113.9")
    assert s.scrub("203.0.113.10 203.0.113.0/24") == "203.0.113.10 203.0.113.0/24"


@given(st.ip_addresses(v=6).filter(lambda ip: _identifies(ip) and ip.ipv4_mapped is None))
def test_ipv6_forms_never_survive(ip: ipaddress.IPv6Address) -> None:
    s = Scrubber()
    s.add(str(ip))
    forms = {str(ip), ip.exploded, str(ip).upper(), ip.exploded.upper(), f"{ip}%eth0"}
    out = s.scrub(" ".join(f"<{form}>" for form in forms))
    assert out == " ".join(f"<{SCRUBBED}>" for _ in forms)


@given(st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_other_ipv6_addresses_survive(own: ipaddress.IPv6Address, other: object) -> None:
    assert isinstance(other, ipaddress.IPv6Address)
    s = Scrubber()
    s.add(str(own))
    if other == own or other.ipv4_mapped is not None:
        return
    assert s.scrub(f"to {other} now") == f"to {other} now"
