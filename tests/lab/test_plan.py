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
    emulators,
    hop_address,
    prefix_for,
    procs,
    servers,
    topology,
)
from probe.lab import plan as lab_plan
from probe.lab.pki import issue, make_authority
from probe.model import Role, Target
from probe.protocols import stun, tgcalls
from probe.targets import Catalog, builtin_catalog, load_catalog

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
        if target.transport == "udp" and target.expect in ("stun", "turn", "wa_relay", "reflector"):
            for address in addresses:
                kind = listening[("udp", address, target.port)]
                wanted = {"turn": "stun"}.get(target.expect, target.expect)
                assert kind in (wanted, "wa_relay"), target.id  # the relay emulator also STUNs
    stun = {(x.address, x.port, x.realm) for x in plan.listeners if x.kind == "stun"}
    sets = plan.sets()
    for address in (*sets["tg_turn"], *sets["tg_turn6"]):
        assert (address, 1400, "telegram.org") in stun
    for address in (*sets["wa_relay"], *sets["wa_relay6"]):
        # The WhatsApp relay emulator, not coturn (which answers the ping 0x0801 with a 401).
        assert listening[("udp", address, 3478)] == "wa_relay"
        assert listening[("udp", address, 3480)] == "wa_relay"
    for address in (*sets["tg_reflector"], *sets["tg_reflector6"]):
        for port in (596, 597, 598, 599):
            assert listening[("udp", address, port)] == "reflector"
    for label in ("neutral-stun", "sig-turn"):
        for address in plan.endpoint(label).addresses():
            assert (address, 3478, lab_plan.DEFAULT_REALM) in stun
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
    assert {"resolver", "honest-dns", "web", "doh", "turn-3478", "turn-1400", "emulators"} <= names
    assert "turn-3480" not in names  # 3480 is only the WhatsApp relays', served by the emulator
    assert set(servers.expected_sockets(plan)) == names
    emulators = next(s for s in specs if s.name == "emulators")
    argv = list(emulators.argv)
    for option in ("--telegram", "--whatsapp", "--wa-relay", "--tg-reflector"):
        assert option in argv
    relay = plan.sets()["wa_relay6"][0]
    reflector = plan.sets()["tg_reflector"][0]
    assert f"[{relay}]:3480" in argv
    assert f"{reflector}:599" in argv
    assert ("udp", reflector, 596) in emulators.sockets
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


def _udp(
    target_id: str,
    app: str,
    role: Role,
    port: int,
    expect: str,
    *,
    host: str | None = None,
    address: str | None = None,
) -> Target:
    return Target(
        id=target_id,
        app=app,
        role=role,
        port=port,
        transport="udp",
        expect=expect,
        source="unit test",
        date="2026-11-28",
        host=host,
        address=address,
    )


def _call_path_catalog(*extra: Target) -> Catalog:
    targets = (
        *builtin_catalog().targets,
        _udp("t-wa-relay", "whatsapp", "relay", 3478, "wa_relay", address="192.0.2.200"),
        _udp("t-wa-relay-web", "whatsapp", "relay", 3480, "wa_relay", address="192.0.2.200"),
        _udp("t-tg-refl", "telegram", "reflector", 597, "reflector", address="192.0.2.201"),
        _udp("t-tg-refl6", "telegram", "reflector", 598, "reflector", address="2001:db8:ff::1"),
        _udp("t-tg-turn", "telegram", "turn", 1400, "turn", address="192.0.2.202"),
        _udp("t-tg-turn-u", "telegram", "turn", 1401, "unknown", address="192.0.2.202"),
        _udp("t-ctl-stun", "control", "control", 19302, "stun", host="stun.example.net"),
        *extra,
    )
    return Catalog(targets, ("unit",))


def test_call_path_entries_get_their_sets_listener() -> None:
    plan = build_plan(_call_path_catalog())
    by_id = {t.id: t for t in plan.targets}
    listening = {(x.transport, x.address, x.port): x for x in plan.listeners}

    def at(target_id: str) -> lab_plan.Listener:
        target = by_id[target_id]
        assert target.address is not None
        return listening[("udp", target.address, target.port)]

    relay = by_id["t-wa-relay"].address
    assert relay in plan.sets()["wa_relay"]
    assert at("t-wa-relay").kind == "wa_relay"
    assert at("t-wa-relay-web").kind == "wa_relay"
    assert at("t-tg-refl").kind == "reflector"
    assert by_id["t-tg-refl6"].address in plan.sets()["tg_reflector6"]
    assert at("t-tg-refl6").kind == "reflector"
    # Every address of the set serves all four ports, not only the one its entry names.
    reflector = by_id["t-tg-refl"].address
    assert reflector is not None
    assert all(listening[("udp", reflector, p)].kind == "reflector" for p in (596, 598, 599))
    turn = at("t-tg-turn")
    assert (turn.kind, turn.realm) == ("stun", "telegram.org")
    # An "unknown" UDP entry gets its set's listener: coturn on a TURN address.
    unknown = at("t-tg-turn-u")
    assert (unknown.kind, unknown.realm) == ("stun", "telegram.org")
    # A STUN control by host name: coturn on both of its addresses, at its own port.
    for address in plan.endpoint("stun.example.net").addresses():
        control = listening[("udp", address, 19302)]
        assert (control.kind, control.realm) == ("stun", lab_plan.DEFAULT_REALM)
    # coturn keeps the TURN and STUN ports; none of it on the relays.
    coturn = {x.address for x in plan.listeners if x.kind == "stun"}
    assert coturn.isdisjoint(plan.sets()["wa_relay"])
    # HTTP/3 entries are still served per web site, IPv4 only.
    h3 = by_id["wa-web-h3"]
    web = plan.endpoint("web.whatsapp.com")
    assert h3.host == "web.whatsapp.com"
    assert listening[("udp", web.v4 or "", 443)].kind == "quic"
    assert ("udp", web.v6 or "", 443) not in listening


def test_a_turn_entry_on_a_relay_address_keeps_the_relay_emulator() -> None:
    # The emulator answers Binding and an unauthenticated Allocate too, so it serves both.
    extra = _udp("t-wa-turn", "whatsapp", "turn", 3478, "turn", address="192.0.2.200")
    plan = build_plan(_call_path_catalog(extra))
    address = next(t.address for t in plan.targets if t.id == "t-wa-turn")
    assert address is not None
    held = {(x.transport, x.address, x.port): x for x in plan.listeners}[("udp", address, 3478)]
    assert (held.kind, held.realm) == ("wa_relay", None)


def test_one_udp_socket_cannot_serve_two_servers() -> None:
    extra = _udp("t-refl-stun", "telegram", "reflector", 596, "stun", address="192.0.2.201")
    with pytest.raises(LabError, match="one socket has one server"):
        build_plan(_call_path_catalog(extra))


def test_emulator_answers_are_the_known_answers() -> None:
    """The emulators' UDP answers, checked with the probe's own decoders (sans-IO)."""
    client = ("198.51.100.2", 40000)
    txid = bytes(range(12))
    pong = emulators.wa_relay_answer(stun.whatsapp_ping(txid), client)
    assert pong == stun.whatsapp_pong(txid)
    success = stun.parse(emulators.wa_relay_answer(stun.binding_request(txid), client) or b"")
    assert success.msg_type == stun.BINDING_SUCCESS
    assert success.xor_mapped_address == client
    request = stun.allocate_request(txid)
    error = stun.parse(emulators.wa_relay_answer(request, client) or b"", txid=txid)
    assert error.msg_type == stun.ALLOCATE_ERROR
    assert error.error_code is not None
    assert error.error_code.code == 401
    assert error.realm == lab_plan.DEFAULT_REALM
    assert error.nonce
    # Responses, indications and junk get silence.
    assert emulators.wa_relay_answer(stun.whatsapp_pong(txid), client) is None
    assert emulators.wa_relay_answer(b"x" * 20, client) is None

    tag = bytes(range(16))
    hello = tgcalls.build_hello(tag, b"\x01\x02\x03\x04")
    answer = emulators.reflector_answer(hello, client)
    assert answer is not None
    assert len(answer) == emulators.REFLECTOR_ANSWER_LEN < len(hello)  # no amplification
    reply = tgcalls.parse_reply(answer, peer_tag=tag)
    assert reply.special
    assert reply.tlid == emulators.TLID_UDP_REFLECTOR_PEER_INFO
    assert answer[:16] == hello[:16]
    # The answer is no hello itself (two reflectors cannot be made to talk to each other), and
    # anything but a hello gets silence.
    assert emulators.reflector_answer(answer, client) is None
    assert emulators.reflector_answer(hello[:39], client) is None
    assert emulators.reflector_answer(stun.whatsapp_ping(txid), client) is None


def test_rate_limiter_is_a_token_bucket_per_source() -> None:
    now = [0.0]
    limiter = emulators.RateLimiter(clock=lambda: now[0])
    burst = [limiter.allow("198.51.100.2") for _ in range(emulators.UDP_BURST + 5)]
    assert burst.count(True) == emulators.UDP_BURST
    assert limiter.allow("2001:db8:0:1::2")  # another source has its own bucket
    now[0] += 1.0
    again = [limiter.allow("198.51.100.2") for _ in range(100)]
    assert again.count(True) == int(emulators.UDP_RATE)


# --- the ringprobe reflector (call flows) ---------------------------------------------------------


def test_the_reflector_has_the_reflector_sets_first_address_to_itself(
    plan: lab_plan.Plan,
) -> None:
    from probe.reflector.config import DEFAULT_UDP_PORTS

    assert lab_plan.REFLECTOR_UDP_PORTS == DEFAULT_UDP_PORTS
    assert lab_plan.REFLECTOR_NEUTRAL_PORT in DEFAULT_UDP_PORTS
    sets = plan.sets()
    reflector = plan.reflector
    assert (reflector.v4, reflector.v6) == (sets["reflector"][0], sets["reflector6"][0])
    assert (reflector.v4, reflector.v6) == ("203.0.113.4", "2001:db8:203:113::4")
    mine = {(x.transport, x.address, x.port) for x in plan.listeners if x.kind == "ringprobe"}
    assert mine == {
        *(("udp", a, p) for a in reflector.addresses() for p in DEFAULT_UDP_PORTS),
        *(("tcp", a, 443) for a in reflector.addresses()),
    }
    # Nothing else listens on the reflector set's addresses.
    own = {*sets["reflector"], *sets["reflector6"]}
    assert all(x.kind == "ringprobe" for x in plan.listeners if x.address in own)
    assert servers.expected_sockets(plan)["reflector"] == frozenset(mine)


def test_another_server_on_a_reflector_socket_is_refused() -> None:
    # A catalog host called "reflector" takes the extra's place; a STUN server on 3478 there
    # would take the reflector's socket.
    extra = _udp("t-refl-stun", "control", "reflector", 3478, "stun", host="reflector")
    with pytest.raises(LabError, match=r"3478 is the ringprobe reflector's and .* as stun"):
        build_plan(_call_path_catalog(extra))
    # A plain TCP connect target on 443 is served by the reflector's TLS listener.
    tcp = Target(
        id="t-refl-tcp",
        app="control",
        role="reflector",
        port=443,
        transport="tcp",
        expect="tcp",
        source="unit test",
        date="2026-11-28",
        host="reflector",
    )
    built = build_plan(_call_path_catalog(tcp))
    held = {(x.transport, x.address, x.port): x for x in built.listeners}
    assert held[("tcp", built.reflector.v4 or "", 443)].kind == "ringprobe"


def test_the_reflector_runs_with_a_fresh_secret_only_root_reads(
    plan: lab_plan.Plan, tmp_path: Path
) -> None:
    layout = servers.Layout(tmp_path)
    layout.make()
    authority = make_authority("unit", tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    tools = {
        t: f"/usr/bin/{t}" for t in ("dnsmasq", "nginx", "dnsdist", "gtlsserver", "turnserver")
    }
    specs = {s.name: s for s in servers.prepare(plan, layout, tools, authority, {})}
    secret = layout.reflector_secret
    assert secret.stat().st_mode & 0o777 == 0o600
    first = secret.read_text()
    assert len(bytes.fromhex(first.strip())) == servers.REFLECTOR_SECRET_BYTES
    spec = specs["reflector"]
    argv = list(spec.argv)
    assert argv[1:4] == ["-m", "probe.cli", "reflector"]
    assert argv[argv.index("--secret-file") + 1] == str(secret)
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert binds == ["203.0.113.4", "2001:db8:203:113::4"]
    ports = [int(argv[i + 1]) for i, a in enumerate(argv) if a == "--udp-port"]
    assert sorted(ports) == sorted(lab_plan.REFLECTOR_UDP_PORTS)
    assert argv[argv.index("--tls-port") + 1] == "443"
    assert spec.sockets == servers.expected_sockets(plan)["reflector"]
    servers.prepare(plan, layout, tools, authority, {})
    assert secret.read_text() != first  # a new lab, a new secret
    assert secret.stat().st_mode & 0o777 == 0o600
