"""The lab's address plan: which lab address stands for which real endpoint, which named set it
belongs to, what listens where, and the lab catalog. Pure: nothing here touches the system.

Only documentation ranges are used (RFC 5737: 198.51.100.0/24, 203.0.113.0/24; RFC 3849:
2001:db8::/32). 192.0.2.0/24 is left unused on purpose: hosts in this project's workplaces carry
192.0.2.x on their own uplink, and a lab address that also exists outside the lab would make
every trace ambiguous.

Links (routed, one /30 and one /64 per pair of neighbours; the internet-side end is host 1)::

    client ── isp ── tspu ── border ── internet
       198.51.100.0/30  .4/30   .8/30    .12/30
       2001:db8:0:1::/64  :2::  :3::     :4::

So a packet whose TTL runs out at hop N is answered from 198.51.100.(4N-3): .1 isp, .5 tspu,
.9 border.

Services live on the internet namespace's loopback, in 203.0.113.0/24, each set in its own block
(BLOCKS), and each has an IPv6 twin in 2001:db8:203:113::/64 whose last group is the IPv4 host
number written as the same digits (203.0.113.48 <-> 2001:db8:203:113::48), so a trace reads the
same in both families. An endpoint is one host name of the catalog (both families), or one fixed
address of an address-only entry (that family only), or a lab-only extra (EXTRAS). Within a set,
endpoints get consecutive addresses in catalog order, extras after them.

nftables sets hold one address family each, so every named set of LAB.md comes as a pair in
``table inet tspu``: ``<set>`` (ipv4_addr) and ``<set>6`` (ipv6_addr); a rule that should act on
both families is written twice (``ip daddr @tg_dc ...`` and ``ip6 daddr @tg_dc6 ...``). The
border (hop 3) holds the same sets and chain in ``table inet border`` (PLACEMENTS), for scenarios
whose rules sit one hop further out.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from probe.model import Target
from probe.targets import Catalog

from .errors import LabError

NAMESPACES: Final = ("client", "isp", "tspu", "border", "internet")
"""Namespace roles, from the client outwards; hop N is NAMESPACES[N]."""

SETS: Final = (
    "wa_signal",
    "wa_web",
    "wa_relay",
    "tg_dc",
    "tg_web",
    "tg_reflector",
    "tg_turn",
    "sig",
    "ctl",
    "reflector",
    "dns",
)
"""The named sets of LAB.md, in its order."""

PLACEMENTS: Final = ("tspu", "border")
"""The routers that scenario rules can go in, the default first: each holds ``table inet
<router>`` with every named set and an empty chain ``forward`` (render_nft). The tspu is hop 2,
the border hop 3 (a scenario's ``placement``)."""

LAB_RANGES: Final = ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
"""The documentation ranges the lab uses (RFC 5737, RFC 3849), and so the probe's allow-list in
the lab. 192.0.2.0/24 is a documentation range too, deliberately unused (module docstring)."""

SERVICE_NET_V4: Final = ipaddress.IPv4Network("203.0.113.0/24")
SERVICE_NET_V6: Final = ipaddress.IPv6Network("2001:db8:203:113::/64")

# set -> (first host number, how many) inside SERVICE_NET_V4; sized for the built-in catalog with
# room to grow (wa_signal: e1-e16 and g today).
BLOCKS: Final[Mapping[str, tuple[int, int]]] = {
    "dns": (2, 2),
    "reflector": (4, 4),
    "ctl": (8, 8),
    "wa_signal": (16, 32),
    "wa_web": (48, 16),
    "wa_relay": (64, 16),
    "tg_dc": (80, 32),
    "tg_web": (112, 16),
    "tg_reflector": (128, 16),
    "tg_turn": (144, 16),
    "sig": (160, 32),
}

# (app, role) -> set; apps not listed by role fall back to _SET_OF_APP.
_SET_OF_ROLE: Final[Mapping[tuple[str, str], str]] = {
    ("whatsapp", "signaling"): "wa_signal",
    ("whatsapp", "web"): "wa_web",
    ("whatsapp", "relay"): "wa_relay",
    ("whatsapp", "turn"): "wa_relay",
    ("whatsapp", "reflector"): "wa_relay",
    ("telegram", "signaling"): "tg_dc",
    ("telegram", "web"): "tg_web",
    ("telegram", "reflector"): "tg_reflector",
    ("telegram", "relay"): "tg_reflector",
    ("telegram", "turn"): "tg_turn",
    ("control", "reflector"): "reflector",
}
_SET_OF_APP: Final[Mapping[str, str]] = {
    "whatsapp": "wa_signal",
    "telegram": "tg_dc",
    "signal": "sig",
    "control": "ctl",
}

DOH_HOST: Final = "cloudflare-dns.com"
"""The DoH resolver's name: the built-in catalog's DoH control (ctl-doh-cloudflare-443). Its lab
address serves DNS-over-HTTPS; its certificate also names that address, so the probe can use
``https://<address>/dns-query`` as it uses ``https://1.1.1.1/dns-query`` outside."""
DOH_PATH: Final = "/dns-query"  # RFC 8484 §4.1 leaves the path to the server; this is the custom

STUN_PORT: Final = 3478  # RFC 8489 §9 (STUN/TURN over UDP)
WA_WEB_RELAY_PORT: Final = 3480  # WhatsApp's web-client relay port (shared/METHOD.md, wire facts)
TG_TURN_PORT: Final = 1400  # Telegram TURN (shared/METHOD.md, wire facts)
TG_REFLECTOR_PORTS: Final = (596, 597, 598, 599)  # Telegram reflectors (shared/METHOD.md)
TG_TURN_REALM: Final = "telegram.org"  # realm of Telegram TURN's 401 (shared/METHOD.md)
DEFAULT_REALM: Final = "ringprobe.lab"
HTTPS_PORT: Final = 443  # RFC 9110 §4.2.2
DNS_PORT: Final = 53  # RFC 1035 §4.2
# The ringprobe reflector (docs/callflow.md) on the ``reflector`` endpoint (the first address of
# the ``reflector`` set, and its IPv6 twin): UDP echo on the apps' call ports and the neutral high
# port (probe.reflector.config.DEFAULT_UDP_PORTS; a unit test keeps them equal), TLS streams on
# 443. The set's addresses serve nothing else, so no port of it is shared with another server.
REFLECTOR_LABEL: Final = "reflector"
REFLECTOR_UDP_PORTS: Final = (3478, 3480, 596, 597, 598, 599, 1400, 40000)
REFLECTOR_NEUTRAL_PORT: Final = 40000
REFLECTOR_TLS_PORT: Final = 443


@dataclass(frozen=True, slots=True)
class Extra:
    """A lab endpoint the catalog does not name but LAB.md's sets (or the servers) need."""

    set: str
    label: str
    host: str | None = None
    """A DNS name the lab resolver answers for it, with an HTTPS (and HTTP/3) site."""


EXTRAS: Final = (
    Extra("dns", "resolver"),
    Extra("reflector", "reflector"),
    Extra("ctl", "neutral-stun"),
    Extra("wa_web", "mmg.whatsapp.net", "mmg.whatsapp.net"),
    Extra("wa_relay", "wa-relay-1"),
    Extra("wa_relay", "wa-relay-2"),
    Extra("tg_web", "telegram.org", "telegram.org"),
    Extra("tg_reflector", "tg-reflector-1"),
    Extra("tg_reflector", "tg-reflector-2"),
    Extra("tg_turn", "tg-turn-1"),
    Extra("tg_turn", "tg-turn-2"),
    Extra("sig", "sig-turn"),
)


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair between two neighbouring namespaces. Each end is named after the namespace
    it leads to (in tspu, ``isp`` faces the client and ``border`` the internet)."""

    left: str
    right: str
    net_v4: ipaddress.IPv4Network
    net_v6: ipaddress.IPv6Network

    @property
    def right_v4(self) -> str:
        return str(self.net_v4.network_address + 1)

    @property
    def left_v4(self) -> str:
        return str(self.net_v4.network_address + 2)

    @property
    def right_v6(self) -> str:
        return str(self.net_v6.network_address + 1)

    @property
    def left_v6(self) -> str:
        return str(self.net_v6.network_address + 2)


LINKS: Final = tuple(
    Link(
        left,
        right,
        ipaddress.IPv4Network(f"198.51.100.{4 * index}/30"),
        ipaddress.IPv6Network(f"2001:db8:0:{index + 1}::/64"),
    )
    for index, (left, right) in enumerate(itertools.pairwise(NAMESPACES))
)


def hop_address(hop: int, version: int = 4) -> str:
    """The address a router at ``hop`` (1 isp, 2 tspu, 3 border) answers time-exceeded from:
    its end of the link towards the client."""
    if not 1 <= hop < len(NAMESPACES) - 1:
        raise ValueError(f"hop {hop} is not a router (1-{len(NAMESPACES) - 2})")
    link = LINKS[hop - 1]
    return link.right_v4 if version == 4 else link.right_v6


def client_address(version: int = 4) -> str:
    """The client's own address (the probe scrubs it from records)."""
    return LINKS[0].left_v4 if version == 4 else LINKS[0].left_v6


def twin_v6(v4: str) -> str:
    """The IPv6 twin of a service address: same host number, written with the same digits."""
    host = int(ipaddress.IPv4Address(v4)) - int(SERVICE_NET_V4.network_address)
    return str(SERVICE_NET_V6.network_address + int(str(host), 16))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One lab host: a catalog host name, a catalog fixed address, or an extra."""

    label: str
    """The host name, ``addr:<real address>`` for an address-only catalog entry, or the extra's
    label."""
    set: str
    v4: str | None
    v6: str | None
    host: str | None = None
    """The DNS name the lab resolver answers with v4/v6 (None: address-only)."""
    origins: tuple[str, ...] = ()
    """Real addresses the catalog gave for it (replaced by lab addresses in the lab catalog)."""

    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.v4, self.v6) if a is not None)


ListenerKind = Literal[
    "tcp",
    "https",
    "doh",
    "quic",
    "stun",
    "dns",
    "mtproto",
    "whatsapp",
    "wa_relay",
    "reflector",
    "ringprobe",
]

EMULATED: Final[Mapping[str, ListenerKind]] = {"tg_dc": "mtproto", "wa_signal": "whatsapp"}
"""Sets whose plain TCP listeners are the emulators' (probe.lab.emulators) instead of silent
ones: Telegram DCs answer req_pq_multi, WhatsApp chat servers a clientHello."""

# A UDP catalog entry's expect -> the listener kind that gives its known answer. "stun" and
# "turn" get coturn (realm telegram.org on tg_turn addresses); "wa_relay" the WhatsApp relay
# emulator, which coturn cannot be (it answers the ping 0x0801 with a 401, not the pong);
# "reflector" the Telegram reflector emulator. "http3" is served per web site, below.
_UDP_KIND_OF_EXPECT: Final[Mapping[str, ListenerKind]] = {
    "stun": "stun",
    "turn": "stun",
    "wa_relay": "wa_relay",
    "reflector": "reflector",
}
# An "unknown" UDP entry gets the listener of its set, where the set has one.
_UDP_KIND_OF_SET: Final[Mapping[str, ListenerKind]] = {
    "wa_relay": "wa_relay",
    "tg_reflector": "reflector",
    "tg_turn": "stun",
}


@dataclass(frozen=True, slots=True, order=True)
class Listener:
    """A socket some lab server listens on in the internet namespace."""

    kind: ListenerKind
    """tcp: accepts and stays silent (nginx); https: TLS + HTTP/1.1 and h2 (nginx); doh:
    DNS-over-HTTPS (dnsdist); quic: HTTP/3 (ngtcp2); stun: STUN/TURN (coturn); dns: dnsmasq;
    mtproto / whatsapp: the Telegram DC / WhatsApp chat emulator (TCP), wa_relay / reflector:
    the WhatsApp relay / Telegram reflector emulator (UDP), all in probe.lab.emulators;
    ringprobe: the ringprobe reflector (``ringprobe reflector``: UDP echo, TLS streams on TCP)."""
    transport: Literal["tcp", "udp"]
    address: str
    port: int
    host: str | None = None
    """Certificate name (https, doh, quic)."""
    realm: str | None = None
    """TURN realm (stun)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Addresses, sets, listeners and the lab catalog, derived from a catalog."""

    endpoints: tuple[Endpoint, ...]
    targets: tuple[Target, ...]
    """The lab catalog: the source catalog's entries with lab addresses."""
    listeners: tuple[Listener, ...]
    sources: tuple[str, ...] = ()
    _by_label: dict[str, Endpoint] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_label.update((e.label, e) for e in self.endpoints)

    def endpoint(self, label: str) -> Endpoint:
        """The endpoint with this label (a host name for named endpoints)."""
        return self._by_label[label]

    @property
    def resolver(self) -> Endpoint:
        return self.endpoint("resolver")

    @property
    def doh(self) -> Endpoint:
        return self.endpoint(DOH_HOST)

    @property
    def reflector(self) -> Endpoint:
        """Where the ringprobe reflector listens (the ``reflector`` set's first address)."""
        return self.endpoint(REFLECTOR_LABEL)

    @property
    def doh_url(self) -> str:
        return f"https://{self.doh.v4}{DOH_PATH}"

    def names(self) -> dict[str, tuple[str, ...]]:
        """DNS name -> its lab addresses (IPv4 first), what the lab resolver answers."""
        return {e.host: e.addresses() for e in self.endpoints if e.host is not None}

    def sets(self) -> dict[str, tuple[str, ...]]:
        """nft set name -> addresses: ``<set>`` IPv4, ``<set>6`` IPv6, every set of SETS."""
        result: dict[str, tuple[str, ...]] = {}
        for name in SETS:
            members = [e for e in self.endpoints if e.set == name]
            result[name] = tuple(e.v4 for e in members if e.v4 is not None)
            result[f"{name}6"] = tuple(e.v6 for e in members if e.v6 is not None)
        return result

    def service_addresses(self) -> tuple[str, ...]:
        """Every lab service address (what the internet namespace's loopback carries)."""
        return tuple(a for e in self.endpoints for a in e.addresses())

    def to_json(self) -> str:
        """A readable account of the plan, kept in the state directory for people."""
        return json.dumps(
            {
                "links": [
                    {
                        "between": [link.left, link.right],
                        "v4": str(link.net_v4),
                        "v6": str(link.net_v6),
                    }
                    for link in LINKS
                ],
                "endpoints": [
                    {
                        "label": e.label,
                        "set": e.set,
                        "v4": e.v4,
                        "v6": e.v6,
                        "host": e.host,
                        "origins": list(e.origins),
                    }
                    for e in self.endpoints
                ],
                "sets": self.sets(),
                "listeners": [
                    {
                        "kind": x.kind,
                        "transport": x.transport,
                        "address": x.address,
                        "port": x.port,
                        "host": x.host,
                        "realm": x.realm,
                    }
                    for x in self.listeners
                ],
            },
            indent=2,
        )


def set_for(app: str, role: str) -> str:
    """The named set a catalog entry's endpoint belongs to."""
    found = _SET_OF_ROLE.get((app, role)) or _SET_OF_APP.get(app)
    if found is None:
        raise LabError(f"no lab set for app {app!r} (role {role!r})")
    return found


class _Allocator:
    """Hands out consecutive host numbers inside each set's block."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def take(self, set_name: str) -> int:
        first, size = BLOCKS[set_name]
        used = self._used.get(set_name, 0)
        if used >= size:
            raise LabError(f"lab set {set_name!r} is full: its block holds {size} addresses")
        self._used[set_name] = used + 1
        return first + used


def _v4(host_number: int) -> str:
    return str(SERVICE_NET_V4.network_address + host_number)


def build_plan(catalog: Catalog) -> Plan:
    """The lab plan for a catalog (normally the built-in one)."""
    allocate = _Allocator()
    endpoints: dict[str, Endpoint] = {}
    # real fixed address -> label of the endpoint that stands for it
    by_origin: dict[str, str] = {}

    def add(label: str, set_name: str, *, v4: bool, v6: bool, host: str | None) -> Endpoint:
        number = allocate.take(set_name)
        address = _v4(number)
        endpoint = Endpoint(
            label=label,
            set=set_name,
            v4=address if v4 else None,
            v6=twin_v6(address) if v6 else None,
            host=host,
        )
        endpoints[label] = endpoint
        return endpoint

    def note_origin(label: str, origin: str) -> None:
        by_origin.setdefault(origin, label)
        endpoint = endpoints[label]
        if origin not in endpoint.origins:
            endpoints[label] = replace(endpoint, origins=(*endpoint.origins, origin))

    for target in catalog.targets:
        set_name = set_for(target.app, target.role)
        if target.host is not None:
            host = target.host.lower().rstrip(".")
            if host not in endpoints:
                add(host, set_name, v4=True, v6=True, host=host)
            if target.address is not None:
                note_origin(host, target.address)
        elif target.address is not None and target.address not in by_origin:
            version = ipaddress.ip_address(target.address).version
            label = f"addr:{target.address}"
            add(label, set_name, v4=version == 4, v6=version == 6, host=None)
            note_origin(label, target.address)

    extras = list(EXTRAS)
    if DOH_HOST not in endpoints:
        extras.append(Extra("ctl", DOH_HOST, DOH_HOST))
    sites: list[str] = []
    for extra in extras:
        if extra.label not in endpoints:
            add(extra.label, extra.set, v4=True, v6=True, host=extra.host)
            if extra.host is not None and extra.host != DOH_HOST:
                sites.append(extra.host)

    targets = tuple(_lab_target(t, endpoints, by_origin) for t in catalog.targets)
    ordered = tuple(endpoints.values())
    listeners = _listeners(catalog.targets, targets, ordered, endpoints, sites)
    return Plan(ordered, targets, listeners, catalog.sources)


def _lab_target(
    target: Target, endpoints: Mapping[str, Endpoint], by_origin: Mapping[str, str]
) -> Target:
    """The catalog entry with its fixed address (if any) replaced by the lab address."""
    if target.address is None:
        return target
    version = ipaddress.ip_address(target.address).version
    if target.host is not None:
        endpoint = endpoints[target.host.lower().rstrip(".")]
    else:
        endpoint = endpoints[by_origin[target.address]]
    address = endpoint.v4 if version == 4 else endpoint.v6
    if address is None:
        # An address-only endpoint of the other family stands for this origin: cannot happen,
        # by_origin maps each address to an endpoint of its own family.
        raise LabError(f"no IPv{version} lab address for {target.id!r}")
    return replace(target, address=address)


def _listeners(
    real: Iterable[Target],
    lab: Iterable[Target],
    ordered: Sequence[Endpoint],
    endpoints: Mapping[str, Endpoint],
    sites: Iterable[str],
) -> tuple[Listener, ...]:
    found: dict[tuple[str, str, int], Listener] = {}
    doh = endpoints[DOH_HOST]
    # address -> the emulator kind its plain TCP listeners get (EMULATED)
    emulated = {
        address: EMULATED[e.set] for e in ordered if e.set in EMULATED for address in e.addresses()
    }

    set_of = {address: e.set for e in ordered for address in e.addresses()}

    def put(listener: Listener) -> None:
        key = (listener.transport, listener.address, listener.port)
        held = found.get(key)
        if held is None:
            found[key] = listener
        elif "ringprobe" in (held.kind, listener.kind) and held != listener:
            other = listener if held.kind == "ringprobe" else held
            if listener.transport == "tcp" and other.kind == "tcp":
                # A plain connect is answered by the reflector's TLS listener too.
                found[key] = replace(other, kind="ringprobe", host=None)
                return
            # The reflector's sockets are its own: another server there would hide its echoes
            # or its TLS streams.
            raise LabError(
                f"{listener.transport.upper()} {listener.address} port {listener.port} is the "
                f"ringprobe reflector's and is also wanted as {other.kind}; the reflector set's "
                "addresses serve the reflector only"
            )
        elif listener.transport == "tcp":
            # A TLS server also accepts plain TCP connects: where both are wanted, TLS wins.
            if held.kind == "tcp" and listener.kind != "tcp":
                found[key] = listener
        elif held != listener:
            kinds = {held.kind, listener.kind}
            if kinds == {"stun", "wa_relay"}:
                # The WhatsApp relay emulator also answers Binding and an unauthenticated
                # Allocate (401, realm, nonce): it serves a stun or turn entry too.
                found[key] = replace(listener, kind="wa_relay", realm=None)
            elif kinds != {"stun"} or held.realm != listener.realm:
                raise LabError(
                    f"UDP {listener.address} port {listener.port} is wanted as {held.kind} "
                    f"(realm {held.realm}) and as {listener.kind} (realm {listener.realm}); "
                    "one socket has one server"
                )

    def udp_listener(kind: ListenerKind, address: str, port: int) -> Listener:
        if kind == "stun":
            realm = TG_TURN_REALM if set_of.get(address) == "tg_turn" else DEFAULT_REALM
            return Listener("stun", "udp", address, port, realm=realm)
        return Listener(kind, "udp", address, port)

    web_hosts: set[str] = set()
    for original, target in zip(real, lab, strict=True):
        host = target.host.lower().rstrip(".") if target.host else None
        if target.address is not None:
            addresses: tuple[str, ...] = (target.address,)
        else:
            assert host is not None  # the catalog loader guarantees host or address
            addresses = endpoints[host].addresses()
        if target.transport == "udp":
            # Call-path entries (relays, reflectors, TURN, STUN) by their expect; HTTP/3 is
            # served per web site (below).
            for address in addresses:
                kind = _UDP_KIND_OF_EXPECT.get(target.expect)
                if kind is None and target.expect == "unknown":
                    kind = _UDP_KIND_OF_SET.get(set_of.get(address, ""))
                if kind is not None:
                    put(udp_listener(kind, address, target.port))
            continue
        tls = target.expect in ("tls", "https") or (
            target.expect == "unknown" and host is not None and target.port == HTTPS_PORT
        )
        for address in addresses:
            if host == DOH_HOST and target.port == HTTPS_PORT:
                put(Listener("doh", "tcp", address, HTTPS_PORT, DOH_HOST))
            elif tls and host is not None:
                put(Listener("https", "tcp", address, target.port, host))
            else:
                put(Listener(emulated.get(address, "tcp"), "tcp", address, target.port))
        web = original.role == "web" or original.app == "control"
        if host is not None and host != DOH_HOST and tls and web:
            web_hosts.add(host)

    for site in sites:
        # Web sites of LAB.md's sets that the catalog does not name (mmg.whatsapp.net, ...).
        for address in endpoints[site].addresses():
            put(Listener("https", "tcp", address, HTTPS_PORT, site))
        web_hosts.add(site)
    for address in doh.addresses():
        put(Listener("doh", "tcp", address, HTTPS_PORT, DOH_HOST))

    reflector = endpoints.get(REFLECTOR_LABEL)
    if reflector is not None:
        # Its sockets are its own: put refuses any other server on them.
        for address in reflector.addresses():
            for port in REFLECTOR_UDP_PORTS:
                put(Listener("ringprobe", "udp", address, port))
            put(Listener("ringprobe", "tcp", address, REFLECTOR_TLS_PORT))

    for endpoint in ordered:
        # HTTP/3 where a browser would try it: web sites and the neutral HTTPS controls (IPv4;
        # the probe contacts the first, IPv4, answer).
        if endpoint.host in web_hosts and endpoint.v4 is not None:
            put(Listener("quic", "udp", endpoint.v4, HTTPS_PORT, endpoint.host))
        for address in endpoint.addresses():
            # Every address of a call-path set serves its set's ports, catalog entry or not.
            if endpoint.set == "wa_relay":
                put(Listener("wa_relay", "udp", address, STUN_PORT))
                put(Listener("wa_relay", "udp", address, WA_WEB_RELAY_PORT))
            elif endpoint.set == "tg_reflector":
                for port in TG_REFLECTOR_PORTS:
                    put(Listener("reflector", "udp", address, port))
            elif endpoint.set == "tg_turn":
                put(Listener("stun", "udp", address, TG_TURN_PORT, realm=TG_TURN_REALM))
            elif endpoint.label in ("neutral-stun", "sig-turn"):
                put(Listener("stun", "udp", address, STUN_PORT, realm=DEFAULT_REALM))
            elif endpoint.set == "dns":
                put(Listener("dns", "udp", address, DNS_PORT))
                put(Listener("dns", "tcp", address, DNS_PORT))
    return tuple(found.values())


# --- the lab catalog ---------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    # JSON string escapes (\" \\ \n \t \uXXXX) are all valid in TOML basic strings (TOML 1.0).
    return json.dumps(value, ensure_ascii=False)


def render_catalog(plan: Plan, lab_name: str) -> str:
    """The lab catalog as a TOML file in probe/targets' format (probe.targets docstring)."""
    lines = [
        f"# Lab catalog of the ringprobe lab {lab_name!r}, written by `ringprobe lab up`.",
        "# The built-in catalog's entries (same ids, apps, roles, ports, expects, hosts) with",
        "# fixed addresses replaced by lab addresses; host names resolve through the lab resolver.",
        f"# Made from: {', '.join(plan.sources) or 'a catalog'}.",
        "",
    ]
    for target in plan.targets:
        lines.append("[[target]]")
        fields: list[tuple[str, str | int | None]] = [
            ("id", target.id),
            ("app", target.app),
            ("role", target.role),
            ("host", target.host),
            ("address", target.address),
            ("port", target.port),
            ("transport", target.transport),
            ("expect", target.expect),
            ("path", target.path if target.path != "/" else None),
            ("dc", target.dc),
            ("source", target.source),
            ("date", target.date),
            ("note", target.note or None),
        ]
        for key, value in fields:
            if value is None:
                continue
            text = str(value) if isinstance(value, int) else _toml_string(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


# --- the rule routers' nftables tables ---------------------------------------------------------


def render_nft(plan: Plan, router: str = "tspu") -> str:
    """``table inet <router>``: every named set (IPv4 ``<set>``, IPv6 ``<set>6``) and the empty
    base chain ``forward`` that scenario rules are appended to. For ``nft -f`` in the router's
    namespace; the tspu's and the border's tables differ only in their names."""
    if router not in PLACEMENTS:
        raise LabError(f"no rule table in {router!r} (routers with one: {', '.join(PLACEMENTS)})")
    sets = plan.sets()
    lines = [f"table inet {router} {{"]
    for base in SETS:
        for name, kind in ((base, "ipv4_addr"), (f"{base}6", "ipv6_addr")):
            lines += [f"\tset {name} {{", f"\t\ttype {kind}"]
            if sets[name]:
                lines.append(f"\t\telements = {{ {', '.join(sets[name])} }}")
            lines.append("\t}")
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority 0; policy accept;",
        "\t}",
        "}",
        "",
    ]
    return "\n".join(lines)
