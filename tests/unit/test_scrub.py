from __future__ import annotations

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


@given(st.ip_addresses().filter(lambda ip: not ip.is_loopback and not ip.is_unspecified), st.text())
def test_address_never_survives(ip: object, noise: str) -> None:
    s = Scrubber()
    s.add(str(ip))
    out = s.scrub(f"{noise} {ip} {noise}")
    # The address may only remain where the noise itself created a longer token around it.
    assert out.count(str(ip)) <= 2 * noise.count(str(ip))
