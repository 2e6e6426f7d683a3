"""The lab's pure parts: address plan, sets, lab catalog, rendered configuration, /proc parsing,
names. No root needed, so not marked ``lab``."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store

from probe.lab import (
    SETS,
    Lab,
    LabError,
    LabNameError,
    build_plan,
    hop_address,
    prefix_for,
    procs,
    servers,
    topology,
)
from probe.lab import plan as lab_plan
from probe.lab.pki import issue, make_authority
from probe.targets import builtin_catalog, load_catalog

DOC_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


@pytest.fixture(scope="module")
def plan() -> lab_plan.Plan:
    return build_plan(builtin_catalog())


def _in_doc_ranges(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == n.version and ip in n for n in DOC_NETS)


def test_every_address_is_a_documentation_address_and_unique(plan: lab_plan.Plan) -> None:
    addresses = plan.service_addresses()
    assert len(addresses) == len(set(addresses))
    assert all(_in_doc_ranges(a) for a in addresses)
    for link in lab_plan.LINKS:
        for address in (link.left_v4, link.right_v4, link.left_v6, link.right_v6):
            assert _in_doc_ranges(address)
            assert address not in addresses
    # 192.0.2.0/24 is left alone: workplace hosts carry it on their uplink.
    assert not any(a.startswith("192.0.2.") for a in addresses)


def test_every_catalog_host_resolves_to_both_families(plan: lab_plan.Plan) -> None:
    names = plan.names()
    for target in builtin_catalog():
        if target.host is not None:
            v4, v6 = names[target.host]
            assert ipaddress.ip_address(v4).version == 4
            assert ipaddress.ip_address(v6) == ipaddress.ip_address(lab_plan.twin_v6(v4))


def test_sets_hold_what_lab_md_says(plan: lab_plan.Plan) -> None:
    sets = plan.sets()
    assert set(sets) == {s for base in SETS for s in (base, f"{base}6")}
    names = plan.names()

    def v4(*hosts: str) -> set[str]:
        return {names[h][0] for h in hosts}

    signal_hosts = [f"e{n}.whatsapp.net" for n in range(1, 17)] + ["g.whatsapp.net"]
    assert set(sets["wa_signal"]) == v4(*signal_hosts)
    assert set(sets["wa_web"]) == v4("web.whatsapp.com", "v.whatsapp.net", "mmg.whatsapp.net")
    assert set(sets["tg_web"]) == v4("web.telegram.org", "telegram.org")
    assert len(sets["tg_dc"]) == 5
    assert len(sets["tg_dc6"]) == 5
    assert v4("www.example.com", "cloudflare-dns.com") <= set(sets["ctl"])
    assert sets["dns"] == (plan.resolver.v4,)
    for base in SETS:
        assert sets[base], f"set {base} is empty"


def test_lab_catalog_keeps_everything_but_the_addresses(
    plan: lab_plan.Plan, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(lab_plan.render_catalog(plan, "unit"))
    lab = load_catalog(path)
    real = builtin_catalog()
    assert [t.id for t in lab] == [t.id for t in real]
    for mine, theirs in zip(lab, real, strict=True):
        for field in ("app", "role", "port", "transport", "expect", "host", "path", "source"):
            assert getattr(mine, field) == getattr(theirs, field), (mine.id, field)
        assert (mine.address is None) == (theirs.address is None)
        if mine.address is not None and theirs.address is not None:
            assert _in_doc_ranges(mine.address)
            version = ipaddress.ip_address(theirs.address).version
            assert ipaddress.ip_address(mine.address).version == version
    # The DoH control's fixed address is the DoH server's lab address.
    doh = next(t for t in lab if t.host == lab_plan.DOH_HOST)
    assert doh.address == plan.doh.v4
    assert plan.doh_url == f"https://{plan.doh.v4}/dns-query"


def test_listeners_cover_every_target(plan: lab_plan.Plan) -> None:
    listening = {(x.transport, x.address, x.port): x.kind for x in plan.listeners}
    names = plan.names()
    for target in plan.targets:
        addresses = [target.address] if target.address else list(names[target.host or ""])
        if target.expect == "http3":
            # HTTP/3 is served on IPv4 only: the probe contacts the first (IPv4) answer.
            addresses = [a for a in addresses if ipaddress.ip_address(a).version == 4]
            assert addresses, target.id
        for address in addresses:
            kind = listening[(target.transport, address, target.port)]
            if target.expect in ("tls", "https"):
                assert kind in ("https", "doh"), target.id
            if target.expect in ("mtproto", "whatsapp", "http3"):
                assert kind == {"http3": "quic"}.get(target.expect, target.expect), target.id
    stun = {(x.address, x.port, x.realm) for x in plan.listeners if x.kind == "stun"}
    for address in plan.sets()["tg_turn"]:
        assert (address, 1400, "telegram.org") in stun
    for address in plan.sets()["wa_relay"]:
        assert {
            (address, 3478, lab_plan.DEFAULT_REALM),
            (address, 3480, lab_plan.DEFAULT_REALM),
        } <= stun
    quic = {x.host for x in plan.listeners if x.kind == "quic"}
    assert {"web.whatsapp.com", "web.telegram.org", "www.example.com"} <= quic


def test_hop_addresses() -> None:
    assert [hop_address(h) for h in (1, 2, 3)] == ["198.51.100.1", "198.51.100.5", "198.51.100.9"]
    assert hop_address(2, 6) == "2001:db8:0:2::1"
    with pytest.raises(ValueError, match="not a router"):
        hop_address(4)


def test_twin_keeps_the_digits() -> None:
    assert lab_plan.twin_v6("203.0.113.48") == "2001:db8:203:113::48"


def test_nft_table_has_every_set_and_the_forward_chain(plan: lab_plan.Plan) -> None:
    text = lab_plan.render_nft(plan)
    assert text.startswith("table inet tspu {")
    for base in SETS:
        assert re.search(rf"set {base} {{\n\t\ttype ipv4_addr", text)
        assert re.search(rf"set {base}6 {{\n\t\ttype ipv6_addr", text)
    assert "type filter hook forward priority 0; policy accept;" in text


def test_topology_batches(plan: lab_plan.Plan) -> None:
    client = topology.batch("rp0000", "client", plan)
    assert "link add name isp type veth peer name client netns rp0000-isp" in client
    assert "route add default via 198.51.100.1" in client
    border = topology.batch("rp0000", "border", plan)
    assert "route add 198.51.100.0/30 via 198.51.100.10" in border
    internet = topology.batch("rp0000", "internet", plan)
    assert not any(line.startswith("link add") for line in internet)
    assert f"addr add {plan.resolver.v4}/32 dev lo" in internet
    assert "net.ipv4.ip_forward=1" in topology.sysctls("tspu")
    assert "net.ipv4.ip_forward=1" not in topology.sysctls("client")
    listing = "rp0000-client (id: 3)\nrp0000-tspu\nother-client\n"
    assert topology.existing(listing, "rp0000") == ["rp0000-client", "rp0000-tspu"]


def test_hosts_file_with_overrides() -> None:
    names = {"a.example": ("203.0.113.1", "2001:db8::1"), "b.example": ("203.0.113.2",)}
    text = servers.render_hosts(names, {"a.example": "0.0.0.0", "b.example": "nxdomain"})
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == ["0.0.0.0 a.example"]
    assert servers.parse_override(" NXDOMAIN ") == "nxdomain"
    assert servers.parse_override("2001:DB8::1") == "2001:db8::1"
    with pytest.raises(LabError, match="nxdomain"):
        servers.parse_override("somewhere")
    assert servers.normalize_name("Web.WhatsApp.com.") == "web.whatsapp.com"


def test_server_configuration(plan: lab_plan.Plan, tmp_path: Path) -> None:
    layout = servers.Layout(tmp_path)
    layout.make()
    authority = make_authority("unit", tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    tools = {
        t: f"/usr/bin/{t}" for t in ("dnsmasq", "nginx", "dnsdist", "gtlsserver", "turnserver")
    }
    specs = servers.prepare(plan, layout, tools, authority, {})
    names = {s.name for s in specs}
    assert {"resolver", "honest-dns", "web", "doh", "turn-3478", "turn-3480", "turn-1400"} <= names
    assert set(servers.expected_sockets(plan)) == names
    nginx = (layout.conf / "nginx.conf").read_text()
    assert "server_name web.whatsapp.com;" in nginx
    assert "master_process off;" in nginx
    assert (layout.www / "large").stat().st_size == servers.LARGE_BYTES
    dnsdist = (layout.conf / "dnsdist.conf").read_text()
    assert f'addDOHLocal("{plan.doh.v4}:443"' in dnsdist
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0


def test_certificates_verify_against_the_lab_ca(tmp_path: Path) -> None:
    authority = make_authority("unit", tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    pair = issue(
        authority, ["cloudflare-dns.com"], ["203.0.113.10"], tmp_path / "c.pem", tmp_path / "c.key"
    )
    leaf = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    store = Store([authority.cert])
    # cryptography's verifier applies RFC 5280 and the CA/B Forum profile, stricter than OpenSSL.
    for subject in (DNSName("cloudflare-dns.com"), IPAddress(ipaddress.ip_address("203.0.113.10"))):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(leaf, [])
    assert pair.key.stat().st_mode & 0o077 == 0


def test_proc_net_parsing() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0271007F:0035 00000000:0000 0A 00000000:00000000\n"
        "   1: 0271007F:0036 0100007F:1234 01 00000000:00000000\n"
    )
    assert procs.parse_proc_net(tcp, "tcp") == {("tcp", "127.0.113.2", 53)}
    udp6 = (
        "  sl  local_address                         remote_address                        st\n"
        "   0: B80D0120130103020000000048000000:01BB 00000000000000000000000000000000:0000 07\n"
    )
    assert procs.parse_proc_net(udp6, "udp") == {("udp", "2001:db8:203:113::48", 443)}


def test_lab_names() -> None:
    assert re.fullmatch(r"rp[0-9a-f]{4}", prefix_for("default"))
    assert prefix_for("a") != prefix_for("b")
    lab = Lab("unit-1")
    assert lab.namespace("tspu") == f"{lab.prefix}-tspu"
    assert lab.client_resolv_conf == Path(f"/etc/netns/{lab.prefix}-client/resolv.conf")
    assert lab.sets["tg_dc"] == lab.plan.sets()["tg_dc"]
    for bad in ("", "Upper", "with space", "-lead", "x" * 33):
        with pytest.raises(LabNameError):
            Lab(bad)
    with pytest.raises(LabError, match="no namespace"):
        lab.namespace("router")
