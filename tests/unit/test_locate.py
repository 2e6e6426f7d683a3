"""probe.locate on loopback: a fake STUN server (tests/fakes/udp_server.py) reflecting a
documentation address, and a fake DNS server (tests/fakes/dns_server.py) named by a test
resolv.conf, answering Team Cymru's TXT query. The fakes' answers are documentation addresses
(RFC 5737, RFC 3849) standing in for a public address: bytes in a payload, never a destination.
Loopback addresses are not scrubbed (Scrubber.add), so these tests check the lookup and that the
reflected address reaches the scrubber; tests/lab/test_privacy_lab.py checks a whole run's output.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.cli import run as run_cli
from probe.errors import OptionError
from probe.locate import (
    DEFAULT_STUN_SERVER,
    STUN_PORT,
    LocateError,
    Location,
    Origin,
    cymru_name,
    cymru_origin,
    locate,
    parse_origin_txt,
    parse_stun_server,
    public_address,
)
from probe.model import Failure
from probe.protocols import stun
from probe.targets import load_catalog
from tests.fakes.dns_server import FakeDNSServer, Query
from tests.fakes.udp_server import LOOPBACK, LOOPBACK6, FakeUdpServer, from_nth, silent

TIMEOUT = 2.0  # seconds per step; a step that ends in silence takes this long
SILENT_TIMEOUT = 0.4
PUBLIC = "203.0.113.9"
PUBLIC6 = "2001:db8:5:6::9"
CYMRU_TEXT = "64500 | 203.0.113.0/24 | XL | other | 2026-12-05"


def context(
    tmp_path: Path, dns_server: FakeDNSServer | None = None, **changes: Any
) -> CheckContext:
    """The suite's allow-list (tests/conftest.py); the system resolver is the fake, if any."""
    changes.setdefault("allow", AllowList.from_sources())
    changes.setdefault("timeout", TIMEOUT)
    if dns_server is not None:
        changes["resolv_conf"] = str(dns_server.write_resolv_conf(tmp_path / "resolv.conf"))
        changes["system_dns_port"] = dns_server.port
    return CheckContext(**changes)


def reflect(mapped: str) -> Any:
    """A STUN server's handler: a Binding success reflecting ``mapped`` for each request."""

    def handler(data: bytes, _index: int) -> bytes:
        request = stun.parse(data)
        assert request.msg_type == stun.BINDING_REQUEST
        return stun.binding_success(request.txid, (mapped, 40000))

    return handler


def txt_answer(*texts: str, code: dns.rcode.Rcode = dns.rcode.NOERROR) -> Any:
    """A DNS handler: TXT records with ``texts`` for any TXT question (rcode ``code``)."""

    def handler(query: Query) -> dns.message.Message:
        assert query.message is not None
        response = dns.message.make_response(query.message)
        response.set_rcode(code)
        question = query.message.question[0]
        if texts and question.rdtype == dns.rdatatype.TXT:
            quoted = [json.dumps(text) for text in texts]
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT, quoted
                )
            )
        return response

    return handler


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        # https://www.team-cymru.com/ip-asn-mapping's example answer, with our documentation ASN
        ("64500 | 198.51.100.0/24 | ZZ | arin | 2010-01-01", Origin("AS64500", "ZZ")),
        ("64500 64501 | 198.51.100.0/24 | RU | ripencc |", Origin("AS64500", "RU")),
        ("4200000000|2001:db8::/32|de|ripencc|2001-01-01", Origin("AS4200000000", "DE")),
        ("64500 | 198.51.100.0/24 |  | arin | 2010-01-01", Origin("AS64500", "ZZ")),
        ("064500 | 198.51.100.0/24 | RU", Origin("AS64500", "RU")),
    ],
)
def test_parse_origin_txt(text: str, origin: Origin) -> None:
    assert parse_origin_txt(text) == origin


@pytest.mark.parametrize(
    "text",
    [
        "",
        "64500",
        "64500 | 198.51.100.0/24",
        "NA | 198.51.100.0/24 | RU | ripencc |",
        " | 198.51.100.0/24 | RU | ripencc |",
        "4294967296 | 198.51.100.0/24 | RU | ripencc |",  # 2^32: not a 32-bit ASN
        "64500 | 198.51.100.0/24 | Russia | ripencc |",
        "64500 | 198.51.100.0/24 | R1 | ripencc |",
        "64500 | x | RU | " + "x" * 600,
    ],
)
def test_parse_origin_txt_refuses_what_is_not_an_answer(text: str) -> None:
    assert parse_origin_txt(text) is None


@given(st.text())
def test_parse_origin_txt_never_raises(text: str) -> None:
    origin = parse_origin_txt(text)
    if origin is not None:
        assert origin.asn.startswith("AS")
        assert origin.asn[2:].isdigit()
        assert len(origin.cc) == 2
        assert origin.cc.isascii()
        assert origin.cc.isupper()


@given(
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
    st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_characters="|"), max_size=40),
    st.sampled_from([" | ", "|", "  |  "]),
)
def test_parse_origin_txt_reads_what_cymru_writes(
    asns: list[int], cc: str, registry: str, sep: str
) -> None:
    text = sep.join([" ".join(map(str, asns)), "198.51.100.0/24", cc, registry, "2010-01-01"])
    assert parse_origin_txt(text) == Origin(f"AS{asns[0]}", cc.upper())


def test_cymru_names() -> None:
    # https://www.team-cymru.com/ip-asn-mapping: reversed octets, or reversed nibbles
    assert cymru_name("198.51.100.23") == "23.100.51.198.origin.asn.cymru.com"
    assert cymru_name("::ffff:198.51.100.23") == "23.100.51.198.origin.asn.cymru.com"
    nibbles = "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2"
    assert cymru_name(PUBLIC6) == f"{nibbles}.origin6.asn.cymru.com"
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        cymru_name("example.org")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("stun.example.org", ("stun.example.org", STUN_PORT)),
        ("stun.example.org:19302", ("stun.example.org", 19302)),
        ("203.0.113.5:3479", ("203.0.113.5", 3479)),
        ("2001:db8::5", ("2001:db8::5", STUN_PORT)),
        ("[2001:DB8::5]:3479", ("2001:db8::5", 3479)),
    ],
)
def test_parse_stun_server(text: str, parsed: tuple[str, int]) -> None:
    assert parse_stun_server(text) == parsed


@pytest.mark.parametrize(
    "text", ["", ":3478", "host:0", "host:99999", "host:x", "[2001:db8::5", "[zz::1]:3", "a b"]
)
def test_parse_stun_server_refuses(text: str) -> None:
    with pytest.raises(OptionError, match="STUN server"):
        parse_stun_server(text)


def test_default_stun_server_is_the_control_catalogs() -> None:
    (entry,) = [t for t in load_catalog(None).targets if t.app == "control" and t.expect == "stun"]
    assert f"{entry.host}:{entry.port}" == DEFAULT_STUN_SERVER
    params = {p.name: p.default for p in run_cli.command.params}
    assert params["stun_server"] == DEFAULT_STUN_SERVER


# --- the STUN Binding -------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "mapped"), [(LOOPBACK, PUBLIC), (LOOPBACK6, PUBLIC6)])
async def test_public_address_from_a_binding(tmp_path: Path, host: str, mapped: str) -> None:
    ctx = context(tmp_path)
    async with FakeUdpServer(reflect(mapped), host=host) as server:
        server_text = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
        assert await public_address(ctx, server_text) == mapped
    assert server.count == 1
    assert mapped in ctx.scrubber.addresses


async def test_public_address_retransmits_on_silence(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    async with FakeUdpServer(from_nth(2, reflect(PUBLIC))) as server:
        assert await public_address(ctx, f"{LOOPBACK}:{server.port}") == PUBLIC
    assert server.count == 3
    assert len(set(server.received)) == 1  # the same request: one transaction (RFC 5389 §7.2.1)


async def test_public_address_skips_what_is_not_its_answer(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    other = stun.binding_success(b"\x01" * stun.TXID_LEN, ("192.0.2.77", 1))

    def handler(data: bytes, index: int) -> list[bytes]:
        return [b"garbage", other, reflect(PUBLIC)(data, index)]

    async with FakeUdpServer(handler) as server:
        assert await public_address(ctx, f"{LOOPBACK}:{server.port}") == PUBLIC
    assert "192.0.2.77" not in ctx.scrubber.addresses  # another transaction's: not ours


async def test_public_address_silence_is_a_bounded_timeout(tmp_path: Path) -> None:
    ctx = context(tmp_path, timeout=SILENT_TIMEOUT)
    async with FakeUdpServer(silent()) as server:
        with pytest.raises(LocateError) as caught:
            await public_address(ctx, f"{LOOPBACK}:{server.port}")
    assert caught.value.failure == Failure.GENERIC_TIMEOUT
    assert server.count == 3


async def test_public_address_error_response(tmp_path: Path) -> None:
    ctx = context(tmp_path)

    def handler(data: bytes, _index: int) -> bytes:
        txid = stun.parse(data).txid
        return stun.error_response(stun.BINDING, txid, 400, "Bad Request")

    async with FakeUdpServer(handler) as server:
        with pytest.raises(LocateError) as caught:
            await public_address(ctx, f"{LOOPBACK}:{server.port}")
    assert caught.value.failure == Failure.STUN_BAD_RESPONSE


async def test_public_address_guarded(tmp_path: Path) -> None:
    ctx = context(tmp_path, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeUdpServer(reflect(PUBLIC)) as server:
        with pytest.raises(LocateError) as caught:
            await public_address(ctx, f"{LOOPBACK}:{server.port}")
    assert caught.value.failure == Failure.ADDRESS_NOT_ALLOWED
    assert server.count == 0


async def test_public_address_resolves_a_host_name(tmp_path: Path) -> None:
    from tests.fakes.dns_server import answer

    async with (
        FakeUdpServer(reflect(PUBLIC)) as stun_server,
        FakeDNSServer(answer(a=[LOOPBACK])) as dns_server,
    ):
        ctx = context(tmp_path, dns_server)
        assert await public_address(ctx, f"stun.example.org:{stun_server.port}") == PUBLIC
    assert {q.qname for q in dns_server.queries} == {"stun.example.org"}


# --- Team Cymru over DNS ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "qname"),
    [
        (PUBLIC, "9.113.0.203.origin.asn.cymru.com"),
        (PUBLIC6, cymru_name(PUBLIC6)),
    ],
)
async def test_cymru_origin(tmp_path: Path, address: str, qname: str) -> None:
    async with FakeDNSServer(txt_answer(CYMRU_TEXT)) as server:
        origin = await cymru_origin(context(tmp_path, server), address)
    assert origin == Origin("AS64500", "XL")
    assert [(q.qname, q.qtype) for q in server.queries] == [(qname, "TXT")]


async def test_cymru_origin_takes_the_most_specific_prefix(tmp_path: Path) -> None:
    texts = (
        "64501 | 203.0.0.0/8 | ZZ | other |",
        "64500 | 203.0.113.0/24 | XL | other |",
        "64502 | 203.0.0.0/16 | ZZ | other |",
    )
    async with FakeDNSServer(txt_answer(*texts)) as server:
        assert await cymru_origin(context(tmp_path, server), PUBLIC) == Origin("AS64500", "XL")


@pytest.mark.parametrize(
    ("handler", "failure"),
    [
        (txt_answer(code=dns.rcode.NXDOMAIN), Failure.DNS_NXDOMAIN),
        (txt_answer(code=dns.rcode.SERVFAIL), Failure.DNS_SERVFAIL),
        (txt_answer(), Failure.DNS_NO_ANSWER),
        (txt_answer("not an answer", "64500 | x"), "locate_bad_origin"),
        (lambda query: b"\x00garbage", Failure.DNS_SERVER_MISBEHAVING),
        (lambda query: None, Failure.GENERIC_TIMEOUT),
    ],
)
async def test_cymru_origin_failures_are_clear(tmp_path: Path, handler: Any, failure: str) -> None:
    async with FakeDNSServer(handler) as server:
        ctx = context(tmp_path, server, timeout=SILENT_TIMEOUT)
        with pytest.raises(LocateError) as caught:
            await cymru_origin(ctx, PUBLIC)
    assert caught.value.failure == failure
    # The query name carries the address reversed: no message may quote either.
    assert PUBLIC not in str(caught.value)
    assert "9.113.0.203" not in str(caught.value)


async def test_cymru_origin_guarded(tmp_path: Path) -> None:
    async with FakeDNSServer(txt_answer(CYMRU_TEXT)) as server:
        ctx = context(tmp_path, server, allow=AllowList(parse_networks(["192.0.2.0/24"])))
        with pytest.raises(LocateError) as caught:
            await cymru_origin(ctx, PUBLIC)
    assert caught.value.failure == Failure.ADDRESS_NOT_ALLOWED
    assert server.queries == []


# --- both ---------------------------------------------------------------------------------------


async def test_locate_keeps_only_asn_and_country(tmp_path: Path) -> None:
    async with (
        FakeUdpServer(reflect(PUBLIC)) as stun_server,
        FakeDNSServer(txt_answer(CYMRU_TEXT)) as dns_server,
    ):
        ctx = context(tmp_path, dns_server)
        location = await locate(ctx, f"{LOOPBACK}:{stun_server.port}")
    assert location == Location("AS64500", "XL")
    assert PUBLIC not in repr(location)
    assert ctx.scrubber.scrub(f"seen from {PUBLIC}") == "seen from [scrubbed]"
    assert [q.qname for q in dns_server.queries] == ["9.113.0.203.origin.asn.cymru.com"]


# --- ringprobe run --locate -------------------------------------------------------------------


async def _run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str, dict[str, Any]]:
    """`ringprobe run` in a child process (the fakes run in this test's event loop) on a
    catalog of one refused loopback target; (exit status, stdout, stderr, manifest)."""
    catalog = tmp_path / "cat.toml"
    catalog.write_text(
        '[[target]]\nid = "refused"\napp = "control"\nrole = "control"\ntransport = "tcp"\n'
        'expect = "tcp"\nsource = "test"\ndate = "2026-11-28"\naddress = "127.0.0.1"\nport = 9\n'
    )
    out = tmp_path / "out"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe.cli", "run", "--targets", str(catalog), "--out", str(out),
        "--no-doh", "--timeout", "2", "--json", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await child.communicate()
    assert child.returncode is not None
    (manifest,) = out.glob("*.manifest.json")
    return child.returncode, stdout.decode(), stderr.decode(), json.loads(manifest.read_text())


async def test_run_records_a_failed_lookup_and_goes_on(tmp_path: Path) -> None:
    """The STUN fake reflects a documentation address, then the server's 400 ends the lookup:
    AS0/ZZ are recorded, the manifest says why, and the reflected address is nowhere."""

    def handler(data: bytes, _index: int) -> list[bytes]:
        txid = stun.parse(data).txid
        # An error response that still reflects the address: the probe must scrub it anyway.
        return [
            stun.encode(
                stun.BINDING_ERROR,
                txid,
                [
                    (stun.XOR_MAPPED_ADDRESS, stun.xor_address_value((PUBLIC, 1), txid)),
                    (stun.ERROR_CODE, stun.error_code_value(400, "Bad Request")),
                ],
            )
        ]

    async with FakeUdpServer(handler) as server:
        code, stdout, stderr, manifest = await _run_cli(
            tmp_path, "--locate", "--stun-server", f"{LOOPBACK}:{server.port}"
        )
    assert code == 0, stderr
    assert server.count == 1
    assert manifest["settings"]["location"].startswith("lookup failed: stun_bad_response")
    assert "could not look up this network" in stderr
    (records,) = (tmp_path / "out").glob("*.jsonl")
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert rows
    assert {(r["probe"]["asn"], r["probe"]["cc"]) for r in rows} == {("AS0", "ZZ")}
    for text in (stdout, stderr, records.read_text(), json.dumps(manifest)):
        assert PUBLIC not in text


@pytest.mark.parametrize(
    ("args", "location", "asn"),
    [
        (["--asn", "AS64501", "--cc", "XL"], "given", "AS64501"),
        # The suite's allow-list (tests/conftest.py) marks a controlled run: no lookup unasked.
        ([], "not looked up", "AS0"),
        (["--vantage", "lab"], "not looked up", "AS0"),
        (["--no-locate", "--asn", "64501"], "not looked up, asn given", "AS64501"),
        (["--locate", "--asn", "AS64501", "--cc", "XL"], "given", "AS64501"),
    ],
)
async def test_run_without_lookup_sends_nothing(
    tmp_path: Path, args: list[str], location: str, asn: str
) -> None:
    async with FakeUdpServer(reflect(PUBLIC)) as server:
        code, _, stderr, manifest = await _run_cli(
            tmp_path, "--stun-server", f"{LOOPBACK}:{server.port}", *args
        )
    assert code == 0, stderr
    assert server.count == 0
    assert manifest["settings"]["location"] == location
    (records,) = (tmp_path / "out").glob("*.jsonl")
    assert {json.loads(line)["probe"]["asn"] for line in records.read_text().splitlines()} == {asn}


def test_run_refuses_a_bad_stun_server(tmp_path: Path) -> None:
    import subprocess

    catalog = tmp_path / "cat.toml"
    catalog.write_text(
        '[[target]]\nid = "x"\napp = "control"\nrole = "control"\ntransport = "tcp"\n'
        'expect = "tcp"\nsource = "test"\ndate = "2026-11-28"\naddress = "127.0.0.1"\nport = 9\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "probe.cli", "run", "--targets", str(catalog),
         "--out", str(tmp_path / "out"), "--stun-server", "host:99999"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--stun-server" in done.stderr


def test_location_holds_no_address() -> None:
    # What a run keeps: two fields, neither able to hold an address.
    assert Location.__slots__ == ("asn", "cc")


def test_the_lab_resolver_answers_for_the_lab_client() -> None:
    from probe.lab.plan import client_address
    from probe.lab.servers import LAB_ASN, LAB_CC, lab_origin_txt, render_dnsmasq

    answers = lab_origin_txt()
    assert set(answers) == {cymru_name(client_address(4)), cymru_name(client_address(6))}
    assert {parse_origin_txt(text) for text in answers.values()} == {Origin(f"AS{LAB_ASN}", LAB_CC)}
    conf = render_dnsmasq(
        ["203.0.113.53"], Path("hosts"), Path("log"), log_queries=False, txt=answers
    )
    for name, text in answers.items():
        assert f'txt-record={name},"{text}"' in conf.splitlines()
