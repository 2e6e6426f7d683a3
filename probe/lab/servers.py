"""The real servers of the internet namespace: their configuration files (rendering is pure) and
the command lines ``up`` starts.

=============  ============  ===================================================================
server         program       role
=============  ============  ===================================================================
resolver       dnsmasq       the client's resolver (``dns`` set); scenario DNS overrides rewrite
                             its hosts file, then SIGHUP (dnsmasq(8): re-reads --addn-hosts);
                             it also answers Team Cymru's origin TXT queries for the client's
                             addresses (lab_origin_txt: AS64500, country XL) for ``run --locate``
honest-dns     dnsmasq       the same names, never overridden, on the namespace's 127.0.0.1;
                             only the DoH server asks it, so DoH keeps the truth when the plain
                             resolver lies (what the probe's resolver comparison looks for)
doh            dnsdist       DNS-over-HTTPS (RFC 8484) on the DoH address, in front of honest-dns
web            nginx         HTTPS per host (own address, own certificate, HTTP/1.1 and h2;
                             ``/index.html`` small, any other path, ``/`` included, the 2 MiB
                             ``/large``) and plain TCP listeners that accept and wait for the
                             TCP-only endpoints
quic-<addr>    gtlsserver    HTTP/3 on UDP 443 of each web site (ngtcp2's example server, one
                             process per address: it serves one certificate)
turn-<port>    turnserver    STUN/TURN (coturn) on Telegram's TURN addresses, the neutral STUN
                             server, Signal's TURN and any STUN/TURN catalog entry; one process
                             per port and realm (Telegram's answers 401 with realm telegram.org)
emulators      python        probe.lab.emulators on the Telegram DC (``tg_dc``) and WhatsApp chat
                             (``wa_signal``) TCP listeners: resPQ to req_pq_multi, ServerHello to
                             a clientHello (and a plain TCP connect still succeeds); and on the
                             UDP listeners of the WhatsApp relays (``wa_relay``, 3478 and 3480:
                             pong to the 0x0801 ping, Binding success, Allocate 401) and Telegram
                             reflectors (``tg_reflector``, 596-599: an answer to the hello)
reflector      python        ``ringprobe reflector`` (probe.reflector) on the ``reflector``
                             endpoint, IPv4 and IPv6: UDP echo on 3478, 3480, 596-599, 1400 and
                             40000, TLS streams on 443 (docs/callflow.md), under the secret
                             ``up`` writes to ``reflector-secret`` in the state directory (0600)
=============  ============  ===================================================================
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .emulators import format_socket
from .errors import LabError
from .pki import Authority, KeyPair, issue
from .plan import DOH_PATH, LINKS, Listener, Plan, client_address
from .procs import Socket

HONEST_DNS: Final = "127.0.0.1"
LARGE_BYTES: Final = 2 * 1024 * 1024
INDEX_TEXT: Final = "ringprobe lab\n"
# coturn needs a user to run its long-term credential mechanism (RFC 8489 §9.2), which is what
# makes an unauthenticated Allocate get its 401 + realm; nobody in the lab logs in with it.
TURN_USER: Final = "ringprobe:ringprobe-lab"
NXDOMAIN: Final = "nxdomain"
# The lab reflector's secret: 32 random bytes (the reflector takes at least 16).
REFLECTOR_SECRET_BYTES: Final = 32
# RFC 5398 §4: AS64496-64511 are for documentation; the lab client's network
LAB_ASN: Final = 64500
# ISO 3166-1 §7.1.3: XA-XZ are user-assigned; XL ("lab") is ours, so a looked-up location is
# told apart from ZZ, the unknown country a failed lookup records
LAB_CC: Final = "XL"


def lab_origin_txt() -> dict[str, str]:
    """Team Cymru's origin TXT answer (https://www.team-cymru.com/ip-asn-mapping) for each of
    the client's addresses: name -> text, what the lab resolver answers ``run --locate``."""
    from probe.locate import cymru_name

    link = LINKS[0]  # the client's link: its prefixes stand for the client's network
    return {
        cymru_name(client_address(version)): f"{LAB_ASN} | {prefix} | {LAB_CC} | other | 2026-12-05"
        for version, prefix in ((4, link.net_v4), (6, link.net_v6))
    }


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server to start in the internet namespace."""

    name: str
    argv: tuple[str, ...]
    sockets: frozenset[Socket]
    """What listens once it is ready."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths inside a lab's state directory."""

    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def hosts(self) -> Path:
        """The resolver's hosts file (overrides applied)."""
        return self.conf / "hosts"

    @property
    def honest_hosts(self) -> Path:
        return self.conf / "hosts-honest"

    @property
    def reflector_secret(self) -> Path:
        """The secret shared by the lab's reflector and the probe's call flows (hex, 0600)."""
        return self.root / "reflector-secret"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        for path in (self.root, self.certs, self.www, self.logs, self.conf, self.conf / "nginx"):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)


# --- DNS ----------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    text = name.strip().lower().rstrip(".")
    if not text or any(c.isspace() for c in text):
        raise LabError(f"DNS override: {name!r} is not a host name")
    return text


def parse_override(value: str) -> str:
    """A DNS override's answer: ``nxdomain`` or an IP address (``0.0.0.0`` included)."""
    text = value.strip()
    if text.lower() == NXDOMAIN:
        return NXDOMAIN
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise LabError(
            f"DNS override {value!r}: give an IP address (e.g. 0.0.0.0) or 'nxdomain'"
        ) from None


def render_hosts(names: Mapping[str, Iterable[str]], overrides: Mapping[str, str]) -> str:
    """A hosts file: each name with its lab addresses, or what an override says instead (an
    address alone; ``nxdomain``: the name is left out, and the resolver's ``local=/#/`` makes
    every name it does not hold NXDOMAIN)."""
    lines = ["# ringprobe lab resolver: name -> lab address (overrides applied)"]
    merged: dict[str, tuple[str, ...]] = {n: tuple(a) for n, a in names.items()}
    for name, answer in overrides.items():
        merged[name] = () if answer == NXDOMAIN else (answer,)
    for name, addresses in merged.items():
        lines += [f"{address} {name}" for address in addresses]
    return "\n".join(lines) + "\n"


def render_dnsmasq(
    listen: Iterable[str],
    hosts: Path,
    log: Path,
    *,
    log_queries: bool,
    txt: Mapping[str, str] | None = None,
) -> str:
    lines = [
        "# dnsmasq for the ringprobe lab (written by `ringprobe lab up`)",
        "no-resolv",  # no upstream: the lab has no internet
        "no-hosts",  # not the machine's /etc/hosts
        f"addn-hosts={hosts}",  # re-read on SIGHUP (dnsmasq(8))
        "local=/#/",  # every name the hosts file lacks is NXDOMAIN, not REFUSED
        f"listen-address={','.join(listen)}",
        "bind-interfaces",  # bind each address, so two dnsmasq share the namespace
        "local-ttl=300",
        f"log-facility={log}",
        "pid-file=",  # no pid file: the lab records the pid itself
        "user=root",  # reads the state directory's files after SIGHUP
    ]
    # dnsmasq(8) --txt-record=<name>[[,<text>],<text>]: a quoted text keeps its spaces
    lines += [f'txt-record={name},"{text}"' for name, text in (txt or {}).items()]
    if log_queries:
        lines.append("log-queries")
    return "\n".join(lines) + "\n"


# --- HTTPS and TCP (nginx) -------------------------------------------------------------------


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def render_nginx(
    listeners: Iterable[Listener], certs: Mapping[str, KeyPair], layout: Layout
) -> str:
    """One server block per HTTPS host (default server of its own addresses, so a neutral SNI
    gets the same site) and one for every plain TCP listener."""
    listeners = list(listeners)
    tmp = layout.conf / "nginx"
    out = [
        "# nginx for the ringprobe lab (written by `ringprobe lab up`)",
        "daemon off;",
        "master_process off;  # one process, so the recorded pid is the whole server",
        f"pid {tmp / 'nginx.pid'};",
        f"error_log {layout.log('nginx-error')} warn;",
        "worker_rlimit_nofile 8192;",
        "events { worker_connections 4096; }",
        "http {",
        f"    access_log {layout.log('nginx-access')};",
        *(f"    {kind}_temp_path {tmp / kind};" for kind in _NGINX_TEMPS),
        "    types { text/html html; }",
        "    default_type application/octet-stream;",
        "    server_tokens off;",
        "    keepalive_timeout 10s;",
        "    client_header_timeout 30s;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        # Small TLS records, as large sites send at the start of a connection (dynamic record
        # sizing): a byte cut-off or a policer then shows in the body read, not hidden behind
        # one 16 KiB record (nginx's default) that never completes.
        "    ssl_buffer_size 4k;",
        f"    root {layout.www};",
    ]
    plain = [x for x in listeners if x.kind == "tcp"]
    if plain:
        out.append("    server {  # TCP-only endpoints: accept, answer HTTP if asked")
        out += [f"        listen {_listen(x.address, x.port)} default_server;" for x in plain]
        out += [_LOCATION, "    }"]
    sites: dict[str, list[Listener]] = {}
    for listener in listeners:
        if listener.kind == "https" and listener.host is not None:
            sites.setdefault(listener.host, []).append(listener)
    for host, own in sites.items():
        pair = certs[host]
        out.append("    server {")
        out += [
            f"        listen {_listen(x.address, x.port)} ssl http2 default_server;" for x in own
        ]
        out += [
            f"        server_name {host};",
            f"        ssl_certificate {pair.cert};",
            f"        ssl_certificate_key {pair.key};",
            _LOCATION,
            "    }",
        ]
    out.append("}")
    return "\n".join(out) + "\n"


_NGINX_TEMPS: Final = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# Every path the catalog GETs (/, /v2/register, ...) serves the large object, so each GET
# reads http_get's full 256 KiB: the analysis compares real- and neutral-SNI rates only over
# >= 32 KiB (MIN_THROUGHPUT_BYTES), and a byte cut-off shows only on a body longer than the cut.
# /index.html stays the small page (nginx: try_files, first existing file wins).
_LOCATION: Final = "        location / { try_files $uri /large; }"


# --- DNS-over-HTTPS (dnsdist) ------------------------------------------------------------------


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a valid Lua string literal


def render_dnsdist(addresses: Iterable[str], pair: KeyPair, upstream: str) -> str:
    lines = [
        "-- dnsdist for the ringprobe lab (written by `ringprobe lab up`)",
        'setSecurityPollSuffix("")  -- no security-status lookups: they would try to leave the lab',
        'setACL({"0.0.0.0/0", "::/0"})  -- the default ACL admits only private ranges',
        f'newServer({{address={_lua(upstream + ":53")}, name="honest"}})',
    ]
    for address in addresses:
        lines.append(
            f"addDOHLocal({_lua(_listen(address, 443))}, {_lua(str(pair.cert))}, "
            f"{_lua(str(pair.key))}, {_lua(DOH_PATH)})"
        )
    return "\n".join(lines) + "\n"


# --- everything ------------------------------------------------------------------------------


def expected_sockets(plan: Plan) -> dict[str, frozenset[Socket]]:
    """Server name -> the sockets it listens on when ready (what ``status`` checks)."""
    by_kind: dict[str, set[Socket]] = {}
    result: dict[str, frozenset[Socket]] = {}
    for x in plan.listeners:
        socket = (x.transport, x.address, x.port)
        if x.kind == "quic":
            result[f"quic-{x.address}"] = frozenset({socket})
        elif x.kind == "stun":
            by_kind.setdefault(f"turn-{x.port}", set()).add(socket)
        else:
            name = {
                "tcp": "web",
                "https": "web",
                "doh": "doh",
                "dns": "resolver",
                "mtproto": "emulators",
                "whatsapp": "emulators",
                "wa_relay": "emulators",
                "reflector": "emulators",
                "ringprobe": "reflector",
            }[x.kind]
            by_kind.setdefault(name, set()).add(socket)
    by_kind["honest-dns"] = {("udp", HONEST_DNS, 53), ("tcp", HONEST_DNS, 53)}
    result.update({name: frozenset(sockets) for name, sockets in by_kind.items()})
    return result


def prepare(
    plan: Plan,
    layout: Layout,
    tools: Mapping[str, str],
    authority: Authority,
    overrides: Mapping[str, str],
) -> list[ServerSpec]:
    """Write every server's files (certificates, configuration, content) and return what to
    start. Nothing is started here."""
    layout.make()
    wanted = expected_sockets(plan)
    names = plan.names()

    # Content: a small page and the large object every other path serves (random: nothing
    # compresses it, so bytes on the wire are bytes of body).
    (layout.www / "index.html").write_text(INDEX_TEXT)
    (layout.www / "large").write_bytes(os.urandom(LARGE_BYTES))

    certs: dict[str, KeyPair] = {}
    for x in plan.listeners:
        if x.host is not None and x.host not in certs:
            # The DoH server is also reached by address (https://<address>/dns-query).
            ips = plan.doh.addresses() if x.kind == "doh" else ()
            certs[x.host] = issue(
                authority,
                [x.host],
                ips,
                layout.certs / f"{x.host}.pem",
                layout.certs / f"{x.host}.key",
            )

    specs: list[ServerSpec] = []

    layout.hosts.write_text(render_hosts(names, overrides))
    layout.honest_hosts.write_text(render_hosts(names, {}))
    resolver_conf = layout.conf / "dnsmasq.conf"
    resolver_conf.write_text(
        render_dnsmasq(
            plan.resolver.addresses(),
            layout.hosts,
            layout.log("resolver"),
            log_queries=True,
            txt=lab_origin_txt(),
        )
    )
    honest_conf = layout.conf / "dnsmasq-honest.conf"
    honest_conf.write_text(
        render_dnsmasq(
            [HONEST_DNS], layout.honest_hosts, layout.log("honest-dns"), log_queries=False
        )
    )
    dnsmasq = tools["dnsmasq"]
    specs.append(
        ServerSpec(
            "honest-dns", (dnsmasq, "-k", f"--conf-file={honest_conf}"), wanted["honest-dns"]
        )
    )
    specs.append(
        ServerSpec("resolver", (dnsmasq, "-k", f"--conf-file={resolver_conf}"), wanted["resolver"])
    )

    nginx_conf = layout.conf / "nginx.conf"
    nginx_conf.write_text(render_nginx(plan.listeners, certs, layout))
    specs.append(
        ServerSpec(
            "web",
            (
                tools["nginx"],
                "-p",
                str(layout.conf / "nginx"),
                "-c",
                str(nginx_conf),
                "-e",
                str(layout.log("nginx-error")),
            ),
            wanted["web"],
        )
    )

    doh_conf = layout.conf / "dnsdist.conf"
    doh_conf.write_text(render_dnsdist(plan.doh.addresses(), certs[plan.doh.label], HONEST_DNS))
    specs.append(
        ServerSpec(
            "doh",
            (tools["dnsdist"], "--supervised", "--disable-syslog", "-C", str(doh_conf)),
            wanted["doh"],
        )
    )

    for x in plan.listeners:
        if x.kind == "quic" and x.host is not None:
            pair = certs[x.host]
            name = f"quic-{x.address}"
            quic = (tools["gtlsserver"], "-q", "-d", str(layout.www), x.address, str(x.port))
            specs.append(ServerSpec(name, (*quic, str(pair.key), str(pair.cert)), wanted[name]))

    turn: dict[tuple[int, str], list[str]] = {}
    for x in plan.listeners:
        if x.kind == "stun":
            turn.setdefault((x.port, x.realm or ""), []).append(x.address)
    ports = [port for port, _realm in turn]
    if len(ports) != len(set(ports)):
        raise LabError("the lab plan gives one TURN port two realms; coturn serves one per port")
    for (port, realm), addresses in turn.items():
        name = f"turn-{port}"
        argv = [
            tools["turnserver"],
            "-n",  # no configuration file: not /etc/turnserver.conf
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-rfc5780",  # else it also opens port+1 when given two addresses
            *(arg for address in addresses for arg in ("-L", address)),
            "-p",
            str(port),
            "-a",
            "-u",
            TURN_USER,
            "-r",
            realm,
            "--userdb",
            str(layout.conf / f"{name}.db"),
            "--pidfile",
            str(layout.conf / f"{name}.pid"),
            "--log-file",
            str(layout.log(name)),
            "--simple-log",
            "--no-stdout-log",
        ]
        specs.append(ServerSpec(name, tuple(argv), wanted[name]))

    if "emulators" in wanted:
        emulator = [sys.executable, "-m", "probe.lab.emulators"]
        for kind, option in (
            ("mtproto", "--telegram"),
            ("whatsapp", "--whatsapp"),
            ("wa_relay", "--wa-relay"),
            ("reflector", "--tg-reflector"),
        ):
            sockets = [format_socket(x.address, x.port) for x in plan.listeners if x.kind == kind]
            if sockets:
                emulator += [option, *sockets]
        specs.append(ServerSpec("emulators", tuple(emulator), wanted["emulators"]))

    if "reflector" in wanted:
        write_secret(layout.reflector_secret)
        specs.append(ServerSpec("reflector", reflector_argv(plan, layout), wanted["reflector"]))
    return specs


def write_secret(path: Path) -> None:
    """A fresh 32-byte secret, hex, readable by root only (replacing any earlier one)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(REFLECTOR_SECRET_BYTES).hex() + "\n")


def reflector_argv(plan: Plan, layout: Layout) -> tuple[str, ...]:
    """``ringprobe reflector`` on the reflector's sockets of the plan (its TLS certificate is
    the self-signed one it makes at start: the probe verifies none, docs/callflow.md)."""
    mine = [x for x in plan.listeners if x.kind == "ringprobe"]
    addresses = list(dict.fromkeys(x.address for x in mine))
    udp_ports = list(dict.fromkeys(x.port for x in mine if x.transport == "udp"))
    tls_ports = {x.port for x in mine if x.transport == "tcp"}
    if len(tls_ports) > 1:
        raise LabError("the lab plan gives the reflector two TLS ports; it serves one")
    argv = [sys.executable, "-m", "probe.cli", "reflector", "--secret-file"]
    argv += [str(layout.reflector_secret), "--log-level", "info"]
    argv += [arg for address in addresses for arg in ("--bind", address)]
    argv += [arg for port in udp_ports for arg in ("--udp-port", str(port))]
    argv += ["--tls-port", str(tls_ports.pop())] if tls_ports else ["--no-tls"]
    return tuple(argv)
