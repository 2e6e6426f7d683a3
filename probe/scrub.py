"""Keep the volunteer's own addresses out of everything ringprobe writes.

Checks report the local addresses their sockets used; the writer replaces every occurrence of those
in a serialised record (error strings included) before the line reaches disk.
"""

from __future__ import annotations

import ipaddress
import re
import threading

SCRUBBED = "[scrubbed]"


def _pattern_for(address: str) -> str:
    # Boundaries keep 10.0.0.1 from matching inside 10.0.0.12 or 110.0.0.1.
    if ":" in address:
        return rf"(?<![0-9A-Fa-f:]){re.escape(address)}(?![0-9A-Fa-f:])"
    return rf"(?<![0-9.]){re.escape(address)}(?!\.?[0-9])"


class Scrubber:
    """Collects own addresses and removes them from text; safe to share between tasks."""

    def __init__(self) -> None:
        self._addresses: set[str] = set()
        self._regex: re.Pattern[str] | None = None
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
        if ip.is_unspecified or ip.is_loopback:
            return
        forms = {bare, str(ip), ip.exploded}
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            forms.add(str(ip.ipv4_mapped))
        with self._lock:
            if forms <= self._addresses:
                return
            self._addresses |= forms
            # Longest first so a full form wins over a shorter one it contains.
            ordered = sorted(self._addresses, key=len, reverse=True)
            self._regex = re.compile("|".join(_pattern_for(a) for a in ordered))

    @property
    def addresses(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._addresses)

    def scrub(self, text: str) -> str:
        regex = self._regex
        if regex is None:
            return text
        return regex.sub(SCRUBBED, text)
