"""Keep the volunteer's own addresses out of everything ringprobe writes.

Checks report the local addresses their sockets used, and the public address a STUN server or a
reflector reflects (probe.locate, probe.checks.relay); the writers (records, manifest, summary)
replace every occurrence of those in their text before it reaches disk or a terminal.

What counts as an occurrence:

- an IPv4 address in dotted-quad form, octets with or without leading zeros, and inside any IPv6
  form that embeds it: IPv4-mapped (``::ffff:198.51.100.23``, ``::ffff:c633:6417``, RFC 4291
  §2.5.5.2) and the NAT64 well-known prefix (``64:ff9b::c633:6417``, RFC 6052 §2.1);
- an IPv6 address in every text form RFC 4291 §2.2 allows, whatever the case (RFC 5952 §4.3
  asks for lower case, but not every writer obeys) and with a zone id (RFC 4007 §11): compressed
  anywhere, exploded, with or without leading zeros, mixed with a dotted quad.

Only the addresses themselves, not their /64. The /64 is the subscriber's own link (RFC 7421),
so its other addresses point at the same household; but scrubbing it would also hide the first
router (a home router's LAN address, the lab's ``isp`` hop, which shares the client's /64), and
the traces of ``--localize`` must show which hop acted. Each other own address a socket uses (an
RFC 8981 temporary address) is added by ``CheckContext.note_local`` and scrubbed as itself.
IPv4 prefixes are not scrubbed either: one address is often shared by many subscribers (CGNAT),
and the neighbours in a /24 are other customers, whom the records may need to name.

Not scrubbed: loopback and unspecified addresses (they identify nobody, and a loopback test
server shares its address with the client); reversed forms (``23.100.51.198``, ip6.arpa nibbles:
the first is some other valid address, which scrubbing would hide from the records, and probe
code writes neither); raw or hex-encoded address bytes (records are JSON text).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from typing import Final

SCRUBBED: Final = "[scrubbed]"

# RFC 4291 §2.5.5.2: the prefix of IPv4-mapped IPv6 addresses
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
# RFC 6052 §2.1: the NAT64 well-known prefix, the IPv4 address in the last 32 bits
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")

# Anything that may be an IPv6 address in text: hex groups and colons (at least two, as every
# form of RFC 4291 §2.2 has), perhaps ending in a dotted quad, perhaps with a zone id. Not after
# a hex digit, a colon or a dot, so that it never starts inside a longer token.
_V6_CANDIDATE: Final = re.compile(
    r"(?<![0-9A-Fa-f:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,8}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})"
    r"(?:%[0-9A-Za-z_.\-]+)?"
)


def _v4_pattern(ip: ipaddress.IPv4Address) -> str:
    # Each octet also zero-padded up to three digits ("198.051.100.023").
    octets = [rf"0{{0,{3 - len(o)}}}{o}" for o in str(ip).split(".")]
    # Boundaries keep 10.0.0.1 from matching inside 10.0.0.12 or 110.0.0.1.
    return r"(?<![0-9.])" + r"\.".join(octets) + r"(?!\.?[0-9])"


@functools.lru_cache(maxsize=4096)  # Ours: records repeat the same few addresses
def _parse_v6(token: str) -> tuple[ipaddress.IPv6Address, str, str] | None:
    """The IPv6 address a candidate token writes, if any, with what of the token is not part of
    it: a zone id is dropped, and a colon left over from the prose around it ("peer:2001:db8::1",
    "2001:db8::1: refused") is tried without and given back as (ip, before, after)."""
    bare = token.split("%", 1)[0]
    lead = ":" if bare.startswith(":") and not bare.startswith("::") else ""
    trail = ":" if bare.endswith(":") and not bare.endswith("::") else ""
    for before, after in (("", ""), (lead, ""), ("", trail), (lead, trail)):
        text = bare[len(before) : len(bare) - len(after)]
        try:
            return ipaddress.IPv6Address(text), before, after
        except ValueError:
            continue
    return None


class Scrubber:
    """Collects own addresses and removes them from text; safe to share between tasks."""

    def __init__(self) -> None:
        self._addresses: set[str] = set()
        self._v4: set[ipaddress.IPv4Address] = set()
        self._v6: set[ipaddress.IPv6Address] = set()
        self._v4_regex: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, address: str | None) -> None:
        """Remember an address of this machine. Loopback and unspecified addresses identify nobody
        and are ignored (and a loopback test server shares its address with the client)."""
        if not address:
            return
        bare = address.split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            return
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the IPv4 address it is; every form of it is scrubbed below
        if ip.is_unspecified or ip.is_loopback:
            return
        with self._lock:
            if isinstance(ip, ipaddress.IPv4Address):
                if ip in self._v4:
                    return
                self._v4.add(ip)
                ordered = sorted(self._v4, key=lambda a: len(str(a)), reverse=True)
                self._v4_regex = re.compile("|".join(_v4_pattern(a) for a in ordered))
            else:
                self._v6.add(ip)
            self._addresses |= {bare, str(ip), ip.exploded}

    @property
    def addresses(self) -> frozenset[str]:
        """The own addresses added, in their given, compressed and exploded forms."""
        with self._lock:
            return frozenset(self._addresses)

    def _is_own_v6(self, ip: ipaddress.IPv6Address) -> bool:
        if ip in self._v6:
            return True
        if ip in _MAPPED or ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) in self._v4
        return False

    def _v6_replace(self, match: re.Match[str]) -> str:
        token = match.group(0)
        parsed = _parse_v6(token)
        if parsed is not None and self._is_own_v6(parsed[0]):
            return parsed[1] + SCRUBBED + parsed[2]
        return token  # a dotted quad at its end is still looked at by the IPv4 pass

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of an own address (module docstring) replaced by
        SCRUBBED."""
        v4_regex = self._v4_regex
        if v4_regex is None and not self._v6:
            return text
        if ":" in text:
            text = _V6_CANDIDATE.sub(self._v6_replace, text)
        if v4_regex is not None:
            text = v4_regex.sub(SCRUBBED, text)
        return text
