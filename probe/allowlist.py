"""The allow-list guard: when set, ringprobe sends nothing to an address outside it.

Set by ``--allow-net CIDR`` (repeatable) or ``RINGPROBE_ALLOW_NETS`` (comma or space separated).
Every check asks the guard before it opens a socket, DNS servers and DoH servers included; a refused
address becomes the failure ``address_not_allowed`` and no packet leaves the machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from probe.errors import AllowListError, NotAllowedError

ENV_VAR = "RINGPROBE_ALLOW_NETS"

# The lab's and the test suite's ranges: loopback and the documentation blocks (RFC 5737, RFC 3849).
LAB_NETS = (
    "127.0.0.0/8",
    "::1/128",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/32",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR strings; a bare address means that single host."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise AllowListError(f"not an IP network: {text!r}") from exc
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class AllowList:
    """A set of networks; ``networks is None`` means no restriction (a volunteer's normal run)."""

    networks: tuple[Network, ...] | None = None

    @classmethod
    def from_sources(
        cls, cli_values: Iterable[str] = (), environ: Mapping[str, str] | None = None
    ) -> AllowList:
        """The union of ``--allow-net`` values and the environment variable; unset when both are."""
        env = os.environ if environ is None else environ
        values = list(cli_values)
        env_value = env.get(ENV_VAR, "")
        values.extend(part for part in re.split(r"[,\s]+", env_value) if part)
        if not values:
            return cls(None)
        return cls(parse_networks(values))

    @property
    def restricted(self) -> bool:
        return self.networks is not None

    def allows(self, address: str) -> bool:
        """True when the address may be contacted. Something that is not an IP address is refused
        under a restriction: a host name must be resolved (through the guard) first."""
        if self.networks is None:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, address: str) -> None:
        """Raise NotAllowedError unless the address may be contacted."""
        if not self.allows(address):
            raise NotAllowedError(address)

    def describe(self) -> str:
        if self.networks is None:
            return "unrestricted"
        return ", ".join(str(net) for net in self.networks) or "nothing (empty allow-list)"
