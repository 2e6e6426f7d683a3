"""The DNS-over-HTTPS check against a loopback DoH server with a certificate made at test time."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext
from probe.checks.doh import dns_doh, parse_doh_url
from probe.errors import OptionError
from probe.model import Failure
from tests.fakes.dns_server import FakeDNSServer, answer, nxdomain
from tests.fakes.doh_server import (
    DoHHandler,
    FakeDoHServer,
    doh_answer,
    doh_garbage,
    doh_hang,
    doh_rcode,
    doh_status,
)
from tests.recordcheck import assert_valid
from tests.unit.test_dns import DOCS_ONLY, TARGET, TIMEOUT


def make_ctx(**changes: Any) -> CheckContext:
    changes.setdefault("allow", AllowList.from_sources())
    changes.setdefault("timeout", TIMEOUT)
    return CheckContext(**changes)


async def run_doh(server: FakeDoHServer, **changes: Any) -> dict[str, Any]:
    changes.setdefault("doh_url", server.url)
    changes.setdefault("ca_file", server.ca_file)
    record = await dns_doh(make_ctx(**changes), TARGET, 3)
    assert record.check == "dns_doh"
    assert record.transaction_id == 3
    return assert_valid(record)


async def test_answers_are_recorded(tmp_path: Path) -> None:
    handler = doh_answer(a=["192.0.2.1"], aaaa=["2001:db8::1"], ttl=30)
    async with FakeDoHServer(handler, tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] is None
    details = record["details"]
    assert details["resolver"] == "doh"
    assert details["server"] == server.url
    assert details["doh_server_address"] == "127.0.0.1"
    assert details["addresses"] == ["192.0.2.1", "2001:db8::1"]
    assert details["bogus"] == []
    assert details["rcode"] == "NOERROR"
    assert details["http_status"] == 200
    assert "failed_operation" not in details
    assert {"type": "A", "value": "192.0.2.1", "ttl": 30} in details["answers"]
    # RFC 8484 §4.1: DNS id 0 in every request.
    asked = [(q.id, dns.rdatatype.to_text(q.question[0].rdtype)) for q in server.queries if q]
    assert sorted(asked) == [(0, "A"), (0, "AAAA")]


async def test_doh_host_name_is_resolved_by_the_system_resolver(tmp_path: Path) -> None:
    async with (
        FakeDNSServer(answer(a=["127.0.0.1"])) as dns_server,
        FakeDoHServer(doh_answer(a=["192.0.2.8"]), tmp_path) as server,
    ):
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        record = await run_doh(
            server,
            doh_url=server.url_for("doh.test"),
            resolv_conf=str(conf),
            system_dns_port=dns_server.port,
        )
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["192.0.2.8"]
    assert record["details"]["doh_server_address"] == "127.0.0.1"
    assert {q.qname for q in dns_server.queries} == {"doh.test"}


async def test_doh_host_name_failure_is_attributed(tmp_path: Path) -> None:
    async with (
        FakeDNSServer(nxdomain()) as dns_server,
        FakeDoHServer(doh_answer(a=["192.0.2.8"]), tmp_path) as server,
    ):
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        record = await run_doh(
            server,
            doh_url=server.url_for("doh.test"),
            resolv_conf=str(conf),
            system_dns_port=dns_server.port,
        )
    assert record["failure"] == Failure.DNS_NXDOMAIN
    assert record["details"]["failed_operation"] == "doh_server_lookup"
    assert server.queries == []


async def test_bogus_answer_is_flagged(tmp_path: Path) -> None:
    async with FakeDoHServer(doh_answer(a=["127.0.0.2"]), tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] is None
    assert record["details"]["bogus"] == ["127.0.0.2"]


@pytest.mark.parametrize(
    ("handler", "failure", "rcode"),
    [
        (doh_rcode(dns.rcode.NXDOMAIN), Failure.DNS_NXDOMAIN, "NXDOMAIN"),
        (doh_rcode(dns.rcode.REFUSED), Failure.DNS_REFUSED, "REFUSED"),
        (doh_rcode(dns.rcode.SERVFAIL), Failure.DNS_SERVFAIL, "SERVFAIL"),
        (doh_answer(), Failure.DNS_NO_ANSWER, "NOERROR"),
    ],
    ids=["nxdomain", "refused", "servfail", "no-answer"],
)
async def test_dns_failures(handler: DoHHandler, failure: str, rcode: str, tmp_path: Path) -> None:
    async with FakeDoHServer(handler, tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] == failure
    assert record["details"]["rcode"] == rcode
    assert record["details"]["http_status"] == 200
    assert record["details"]["failed_operation"] == "doh_round_trip"


@pytest.mark.parametrize("status", [403, 500])
async def test_bad_http_status_is_misbehaving(status: int, tmp_path: Path) -> None:
    async with FakeDoHServer(doh_status(status), tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] == Failure.DNS_SERVER_MISBEHAVING
    assert record["details"]["http_status"] == status
    assert "rcode" not in record["details"]


@pytest.mark.parametrize(
    "body",
    [b"<html>blocked</html>", b"", b"\x00" * 11, b"\x00" * 70_000],
    ids=["html", "empty", "short", "longer-than-any-dns-message"],
)
async def test_garbage_body_is_misbehaving(body: bytes, tmp_path: Path) -> None:
    async with FakeDoHServer(doh_garbage(body), tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] == Failure.DNS_SERVER_MISBEHAVING
    assert record["details"]["queries"][0]["attempts"][0]["unusable"]


async def test_hang_is_a_timeout(tmp_path: Path) -> None:
    async with FakeDoHServer(doh_hang(), tmp_path) as server:
        record = await run_doh(server)
    assert record["failure"] == Failure.GENERIC_TIMEOUT
    assert record["runtime"] < TIMEOUT + 0.25
    assert len(server.queries) == 2


async def test_guard_refusal_sends_nothing(tmp_path: Path) -> None:
    async with FakeDoHServer(doh_answer(a=["192.0.2.1"]), tmp_path) as server:
        record = await run_doh(server, allow=DOCS_ONLY)
    assert record["failure"] == Failure.ADDRESS_NOT_ALLOWED
    assert server.queries == []


async def test_guard_refusal_of_a_resolved_doh_host(tmp_path: Path) -> None:
    # The name server (127.0.0.1) is allowed, the address it gives for the DoH host is not.
    async with (
        FakeDNSServer(answer(a=["127.0.0.2"])) as dns_server,
        FakeDoHServer(doh_answer(a=["192.0.2.1"]), tmp_path) as server,
    ):
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        record = await run_doh(
            server,
            doh_url=server.url_for("doh.test"),
            resolv_conf=str(conf),
            system_dns_port=dns_server.port,
            allow=AllowList(parse_networks(["127.0.0.1/32"])),
        )
    assert record["failure"] == Failure.ADDRESS_NOT_ALLOWED
    assert record["details"]["failed_operation"] == "doh_server_lookup"
    assert "127.0.0.2" in record["details"]["error"]
    assert len(dns_server.queries) == 2
    assert server.queries == []


async def test_untrusted_certificate(tmp_path: Path) -> None:
    async with FakeDoHServer(doh_answer(a=["192.0.2.1"]), tmp_path) as server:
        record = await run_doh(server, ca_file=None)
    assert record["failure"] == Failure.SSL_UNKNOWN_AUTHORITY
    assert server.queries == []


async def test_certificate_for_another_name(tmp_path: Path) -> None:
    async with (
        FakeDNSServer(answer(a=["127.0.0.1"])) as dns_server,
        FakeDoHServer(doh_answer(a=["192.0.2.1"]), tmp_path) as server,
    ):
        conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf")
        record = await run_doh(
            server,
            doh_url=server.url_for("other.test"),
            resolv_conf=str(conf),
            system_dns_port=dns_server.port,
        )
    assert record["failure"] == Failure.SSL_INVALID_HOSTNAME
    assert server.queries == []


async def test_closed_port_is_connection_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    record = assert_valid(
        await dns_doh(make_ctx(doh_url=f"https://127.0.0.1:{port}/dns-query"), TARGET, 1)
    )
    assert record["failure"] == Failure.CONNECTION_REFUSED
    assert record["details"]["failed_operation"] == "doh_round_trip"


async def test_doh_needs_a_usable_url() -> None:
    with pytest.raises(OptionError, match="DoH URL"):
        await dns_doh(make_ctx(), TARGET, 1)
    with pytest.raises(OptionError, match="https"):
        await dns_doh(make_ctx(doh_url="http://127.0.0.1/dns-query"), TARGET, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://dns.example/dns-query", "https://dns.example/dns-query"),
        ("HTTPS://DNS.Example:8443/dns-query", "https://dns.example:8443/dns-query"),
        ("https://dns.example", "https://dns.example/"),
        ("https://dns.example./q?x=1", "https://dns.example./q?x=1"),
        ("https://192.0.2.53/dns-query", "https://192.0.2.53/dns-query"),
        ("https://[2001:db8::53]:443/dns-query", "https://[2001:db8::53]:443/dns-query"),
        ("  https://xn--bcher-kva.example/dns-query ", "https://xn--bcher-kva.example/dns-query"),
    ],
)
def test_parse_doh_url_good(text: str, expected: str) -> None:
    assert parse_doh_url(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("http://dns.example/dns-query", "https"),
        ("dns.example/dns-query", "https"),
        ("ftp://dns.example/", "https"),
        ("https:///dns-query", "no host"),
        ("https://user:pw@dns.example/dns-query", "credentials"),
        ("https://dns.example/dns-query#x", "fragment"),
        ("https://dns.example:0/", "port 0"),
        ("https://dns.example:99999/", "out of range"),
        ("https://dns.example:abc/", "Port"),
        ("https://[::g]/", "IPv6"),
        ("https://dns ex.example/", "white space"),
        ("https://dns.ex\nample/", "white space"),
        ("https://bücher.example/", "xn--"),
        ("https://dns..example/", "not a host name"),
        ("https://" + "a" * 64 + ".example/", "not a host name"),
    ],
)
def test_parse_doh_url_bad(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse_doh_url(text)
