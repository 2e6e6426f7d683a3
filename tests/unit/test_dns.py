"""The system-resolver and explicit-resolver DNS checks against a loopback fake, and the pure
helpers of probe.checks.dns. Nothing leaves loopback: the resolver *is* the fake."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from probe.allowlist import AllowList, parse_networks
from probe.checks.base import CheckContext, ProtocolError
from probe.checks.dns import (
    GuardedResolver,
    compare_answers,
    dns_system,
    dns_udp,
    is_bogon,
    parse_resolver,
    read_nameservers,
)
from probe.errors import NotAllowedError, OptionError
from probe.model import Failure, ProbeMeta, Record, Target, TargetRef, new_id
from tests.fakes.dns_server import (
    FakeDNSServer,
    Handler,
    HandlerResult,
    Query,
    answer,
    garbage,
    nxdomain,
    rcode,
    refused,
    servfail,
    silent,
    spoof,
    truncating,
    twice,
    wrong_id,
)
from tests.recordcheck import assert_valid

TIMEOUT = 0.5
TARGET = Target(
    id="t",
    app="whatsapp",
    role="signaling",
    port=443,
    transport="tcp",
    expect="tcp",
    source="test",
    date="2026-11-28",
    host="e1.whatsapp.net",
)
KINDS = ("system", "udp")
LOOPBACK_ONLY = AllowList(parse_networks(["127.0.0.0/8", "::1/128"]))
DOCS_ONLY = AllowList(parse_networks(["192.0.2.0/24"]))


def make_ctx(**changes: Any) -> CheckContext:
    """A context whose allow-list is the suite's (tests/conftest.py), with a short timeout."""
    changes.setdefault("allow", AllowList.from_sources())
    changes.setdefault("timeout", TIMEOUT)
    return CheckContext(**changes)


async def run_check(
    kind: str, server: FakeDNSServer, tmp_path: Path, **changes: Any
) -> dict[str, Any]:
    """Run dns_system (resolv.conf naming the fake) or dns_udp (ctx.resolver = the fake);
    return the record, schema-checked, as a dict."""
    if kind == "system":
        conf = server.write_resolv_conf(tmp_path / "resolv.conf")
        ctx = make_ctx(resolv_conf=str(conf), system_dns_port=server.port, **changes)
        record = await dns_system(ctx, TARGET, 7)
    else:
        ctx = make_ctx(resolver=server.resolver, **changes)
        record = await dns_udp(ctx, TARGET, 7)
    assert record.check == f"dns_{kind}"
    assert record.transaction_id == 7
    assert record.target.address is None
    return assert_valid(record)


def per_type(a: Handler, aaaa: Handler) -> Handler:
    def handler(query: Query) -> HandlerResult:
        return a(query) if query.qtype == "A" else aaaa(query)

    return handler


# --- the checks against the fake ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_answers_are_recorded(kind: str, tmp_path: Path) -> None:
    handler = answer(a=["192.0.2.1", "192.0.2.2"], aaaa=["2001:db8::1"], ttl=60)
    async with FakeDNSServer(handler) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    details = record["details"]
    assert details["resolver"] == kind
    assert details["server"] == "127.0.0.1"
    # A before AAAA; within an RRset the order is the server's (RFC 2181 §5: a set).
    assert set(details["addresses"][:2]) == {"192.0.2.1", "192.0.2.2"}
    assert details["addresses"][2:] == ["2001:db8::1"]
    assert details["bogus"] == []
    assert details["rcode"] == "NOERROR"
    assert {"type": "AAAA", "value": "2001:db8::1", "ttl": 60} in details["answers"]
    assert sorted(q.qtype or "" for q in server.queries) == ["A", "AAAA"]
    assert {q.qname for q in server.queries} == {"e1.whatsapp.net"}


@pytest.mark.parametrize("kind", KINDS)
async def test_cname_chain_is_followed(kind: str, tmp_path: Path) -> None:
    handler = answer(a=["192.0.2.9"], cname="mmx-ds.cdn.whatsapp.net")
    async with FakeDNSServer(handler) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["192.0.2.9"]
    types = [a["type"] for a in record["details"]["answers"]]
    assert types.count("CNAME") == 2  # one per query type
    assert {"type": "CNAME", "value": "mmx-ds.cdn.whatsapp.net", "ttl": 300} in record["details"][
        "answers"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_bogus_answer_is_flagged_not_failed(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(spoof("10.10.34.34")) as server:
        record = await run_check(kind, server, tmp_path)
    # A spoofed answer is an observation; reading it as interference is the analysis' job.
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["10.10.34.34"]
    assert record["details"]["bogus"] == ["10.10.34.34"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("handler", "failure", "rcode"),
    [
        (nxdomain(), Failure.DNS_NXDOMAIN, "NXDOMAIN"),
        (refused(), Failure.DNS_REFUSED, "REFUSED"),
        (servfail(), Failure.DNS_SERVFAIL, "SERVFAIL"),
    ],
    ids=["nxdomain", "refused", "servfail"],
)
async def test_error_rcodes(
    kind: str, handler: Handler, failure: str, rcode: str, tmp_path: Path
) -> None:
    async with FakeDNSServer(handler) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == failure
    assert record["details"]["rcode"] == rcode
    assert record["details"]["addresses"] == []
    assert [q["failure"] for q in record["details"]["queries"]] == [failure, failure]
    # The exchange itself worked: the failure is what the reply said.
    assert "failure" not in record["details"]["queries"][0]["attempts"][0]


@pytest.mark.parametrize("kind", KINDS)
async def test_other_rcode_is_misbehaving(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(rcode(dns.rcode.NOTIMP)) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.DNS_SERVER_MISBEHAVING
    assert record["details"]["rcode"] == "NOTIMP"


@pytest.mark.parametrize("kind", KINDS)
async def test_silence_is_a_timeout_after_one_retransmission(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(silent()) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.GENERIC_TIMEOUT
    assert "rcode" not in record["details"]
    assert record["runtime"] < TIMEOUT + 0.25  # bounded by the check's timeout
    # Two datagrams per query type: the first and one retransmission, no more.
    assert sorted(q.qtype or "" for q in server.queries) == ["A", "A", "AAAA", "AAAA"]
    for query in record["details"]["queries"]:
        assert query["attempts"] == [  # no "elapsed": no reply came
            {
                "server": "127.0.0.1",
                "transport": "udp",
                "sent": 2,
                "unusable_replies": 0,
                "failure": Failure.GENERIC_TIMEOUT,
            }
        ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "handler",
    # (An empty datagram cannot be tested: asyncio's sendto drops it without sending.)
    [garbage(), garbage(b"\xff" * 600), wrong_id(answer(a=["192.0.2.1"]))],
    ids=["short", "long", "wrong-id"],
)
async def test_only_unusable_replies_is_misbehaving(
    kind: str, handler: Handler, tmp_path: Path
) -> None:
    async with FakeDNSServer(handler) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.DNS_SERVER_MISBEHAVING
    attempt = record["details"]["queries"][0]["attempts"][0]
    assert attempt["unusable_replies"] >= 1
    assert attempt["unusable"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "first", [garbage(), wrong_id(spoof())], ids=["garbage-first", "wrong-id-first"]
)
async def test_unusable_reply_does_not_hide_the_answer(
    kind: str, first: Handler, tmp_path: Path
) -> None:
    async with FakeDNSServer(twice(first, answer(a=["192.0.2.1"]))) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["192.0.2.1"]
    attempt = record["details"]["queries"][0]["attempts"][0]
    assert attempt["sent"] == 1
    assert attempt["unusable_replies"] == 1
    assert attempt["elapsed"] < TIMEOUT


@pytest.mark.parametrize("kind", KINDS)
async def test_of_two_answers_the_first_counts(kind: str, tmp_path: Path) -> None:
    # An injector's valid-looking answer that wins the race is what an application would use.
    async with FakeDNSServer(twice(spoof(), answer(a=["192.0.2.1"]))) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["10.10.34.34"]
    assert record["details"]["bogus"] == ["10.10.34.34"]


@pytest.mark.parametrize("kind", KINDS)
async def test_one_family_answering_is_success(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(per_type(answer(a=["192.0.2.1"]), servfail())) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["192.0.2.1"]
    assert record["details"]["rcode"] == "NOERROR"
    failures = {q["type"]: q["failure"] for q in record["details"]["queries"]}
    assert failures == {"A": None, "AAAA": Failure.DNS_SERVFAIL}


@pytest.mark.parametrize("kind", KINDS)
async def test_no_data_for_both_is_no_answer(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(answer()) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.DNS_NO_ANSWER
    assert record["details"]["rcode"] == "NOERROR"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failure_outweighs_no_data(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(per_type(answer(), refused())) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.DNS_REFUSED
    assert record["details"]["rcode"] == "REFUSED"


@pytest.mark.parametrize("kind", KINDS)
async def test_truncated_reply_is_retried_over_tcp(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(truncating(answer(a=["192.0.2.3"]))) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] is None
    assert record["details"]["addresses"] == ["192.0.2.3"]
    transports = [a["transport"] for a in record["details"]["queries"][0]["attempts"]]
    assert transports == ["udp", "tcp"]
    assert sorted(q.transport for q in server.queries) == ["tcp", "tcp", "udp", "udp"]


@pytest.mark.parametrize("kind", KINDS)
async def test_truncated_reply_without_tcp_fails(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(truncating(answer(a=["192.0.2.3"])), tcp=False) as server:
        record = await run_check(kind, server, tmp_path)
    assert record["failure"] == Failure.CONNECTION_REFUSED


@pytest.mark.parametrize("kind", KINDS)
async def test_guard_refusal_sends_nothing(kind: str, tmp_path: Path) -> None:
    async with FakeDNSServer(answer(a=["192.0.2.1"])) as server:
        record = await run_check(kind, server, tmp_path, allow=DOCS_ONLY)
    assert record["failure"] == Failure.ADDRESS_NOT_ALLOWED
    assert server.queries == []


async def test_cancellation_propagates_and_closes_sockets() -> None:
    # Cancelled while waiting on a silent server: the CancelledError reaches the caller (only
    # network failures are recorded) and the UDP sockets are closed (an unclosed one would be
    # a ResourceWarning, an error under this suite's filterwarnings).
    async with FakeDNSServer(silent()) as server:
        ctx = make_ctx(resolver=server.resolver, timeout=5.0)
        task = asyncio.create_task(dns_udp(ctx, TARGET, 1))
        for _ in range(100):  # until both queries have arrived (bounded: 1 s)
            if len(server.queries) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(server.queries) == 2
    gc.collect()


async def test_system_refuses_if_any_nameserver_is_outside_the_allow_list(
    tmp_path: Path,
) -> None:
    async with FakeDNSServer(answer(a=["192.0.2.1"])) as server:
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\nnameserver 198.51.100.7\n")
        ctx = make_ctx(resolv_conf=str(conf), system_dns_port=server.port, allow=LOOPBACK_ONLY)
        record = assert_valid(await dns_system(ctx, TARGET, 1))
    assert record["failure"] == Failure.ADDRESS_NOT_ALLOWED
    assert "198.51.100.7" in record["details"]["error"]
    assert server.queries == []


async def test_system_tries_the_next_nameserver(tmp_path: Path) -> None:
    async with FakeDNSServer(silent()) as first:
        try:
            second = FakeDNSServer(answer(a=["192.0.2.5"]), host="127.0.0.2", port=first.port)
            await second.__aenter__()
        except OSError:
            pytest.skip("127.0.0.2 is not usable here")
        try:
            conf = tmp_path / "resolv.conf"
            conf.write_text("nameserver 127.0.0.1\nnameserver 127.0.0.2\n")
            ctx = make_ctx(resolv_conf=str(conf), system_dns_port=first.port, timeout=1.0)
            record = assert_valid(await dns_system(ctx, TARGET, 1))
        finally:
            await second.aclose()
    assert record["failure"] is None
    assert record["details"]["servers"] == ["127.0.0.1", "127.0.0.2"]
    assert record["details"]["server"] == "127.0.0.2"
    assert record["details"]["addresses"] == ["192.0.2.5"]
    first, second = record["details"]["queries"][0]["attempts"]
    assert (first["server"], first["failure"]) == ("127.0.0.1", Failure.GENERIC_TIMEOUT)
    assert (second["server"], second.get("failure")) == ("127.0.0.2", None)
    assert 0 <= second["elapsed"] < 0.5


async def test_system_without_resolv_conf(tmp_path: Path) -> None:
    ctx = make_ctx(resolv_conf=str(tmp_path / "missing"))
    record = assert_valid(await dns_system(ctx, TARGET, 1))
    assert record["failure"].startswith(Failure.UNKNOWN_PREFIX)
    assert "FileNotFoundError" in record["failure"]


async def test_system_without_nameservers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\n# nameserver 127.0.0.1\nnameserver not-an-address\n")
    record = assert_valid(await dns_system(make_ctx(resolv_conf=str(conf)), TARGET, 1))
    assert record["failure"] == f"{Failure.UNKNOWN_PREFIX}no name server in {conf}"


async def test_udp_port_without_server_is_connection_refused() -> None:
    # A port just released: the kernel answers with ICMP port unreachable, which a connected
    # UDP socket reports as ECONNREFUSED.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    record = assert_valid(await dns_udp(make_ctx(resolver=f"127.0.0.1:{port}"), TARGET, 1))
    assert record["failure"] == Failure.CONNECTION_REFUSED


async def test_udp_over_ipv6_loopback(tmp_path: Path) -> None:
    try:
        server = FakeDNSServer(answer(aaaa=["2001:db8::7"]), host="::1")
        await server.__aenter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        record = await run_check("udp", server, tmp_path)
    finally:
        await server.aclose()
    assert record["failure"] is None
    assert record["details"]["server"] == "::1"
    assert record["details"]["addresses"] == ["2001:db8::7"]


async def test_udp_needs_a_usable_resolver() -> None:
    with pytest.raises(OptionError, match="resolver"):
        await dns_udp(make_ctx(), TARGET, 1)
    with pytest.raises(OptionError, match="not an IP address"):
        await dns_udp(make_ctx(resolver="dns.example"), TARGET, 1)


async def test_invalid_host_name_is_recorded(tmp_path: Path) -> None:
    bad = dataclasses.replace(TARGET, host="a" * 64 + ".example")
    async with FakeDNSServer(answer(a=["192.0.2.1"])) as server:
        record = assert_valid(await dns_udp(make_ctx(resolver=server.resolver), bad, 1))
    assert record["failure"].startswith(Failure.UNKNOWN_PREFIX + "invalid host name")
    assert server.queries == []


async def test_target_without_host_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no host"):
        await dns_udp(make_ctx(resolver="127.0.0.1"), dataclasses.replace(TARGET, host=None), 1)


# --- GuardedResolver ----------------------------------------------------------------------------


async def resolve_with(
    tmp_path: Path,
    handler: Handler,
    call: Callable[[GuardedResolver], Awaitable[list[Any]]],
    **changes: Any,
) -> tuple[list[Any], FakeDNSServer]:
    async with FakeDNSServer(handler) as server:
        conf = server.write_resolv_conf(tmp_path / "resolv.conf")
        ctx = make_ctx(resolv_conf=str(conf), system_dns_port=server.port, **changes)
        resolver = GuardedResolver(ctx, pinned={"pinned.test": "192.0.2.44"})
        try:
            return await call(resolver), server
        finally:
            await resolver.close()


async def test_guarded_resolver_pinned_and_literal(tmp_path: Path) -> None:
    found, server = await resolve_with(
        tmp_path, answer(a=["192.0.2.1"]), lambda r: r.resolve("pinned.test", 443)
    )
    assert [(f["host"], f["port"], f["family"]) for f in found] == [
        ("192.0.2.44", 443, socket.AF_INET)
    ]
    literal, _ = await resolve_with(
        tmp_path, answer(), lambda r: r.resolve("2001:db8::5", 443, socket.AF_UNSPEC)
    )
    assert [(f["host"], f["family"]) for f in literal] == [("2001:db8::5", socket.AF_INET6)]
    assert server.queries == []  # neither asked the DNS


async def test_guarded_resolver_asks_the_system_resolver(tmp_path: Path) -> None:
    found, server = await resolve_with(
        tmp_path,
        answer(a=["192.0.2.1"], aaaa=["2001:db8::1"]),
        lambda r: r.resolve("web.whatsapp.com", 443, socket.AF_INET),
    )
    assert [f["host"] for f in found] == ["192.0.2.1"]
    assert [q.qtype for q in server.queries] == ["A"]  # AF_INET asks for A only
    both, _ = await resolve_with(
        tmp_path,
        answer(a=["192.0.2.1"], aaaa=["2001:db8::1"]),
        lambda r: r.resolve("web.whatsapp.com", 443, socket.AF_UNSPEC),
    )
    assert [f["host"] for f in both] == ["192.0.2.1", "2001:db8::1"]


async def test_guarded_resolver_filters(tmp_path: Path) -> None:
    # 10.0.0.1 is outside the suite's allow-list: dropped, the allowed address remains.
    found, _ = await resolve_with(
        tmp_path,
        answer(a=["10.0.0.1", "192.0.2.1"]),
        lambda r: r.resolve("web.whatsapp.com", 443, socket.AF_INET),
    )
    assert [f["host"] for f in found] == ["192.0.2.1"]


@pytest.mark.parametrize("host", ["web.whatsapp.com", "pinned.test", "192.0.2.2"])
async def test_guarded_resolver_refuses(host: str, tmp_path: Path) -> None:
    # Under a loopback-only list, nothing the resolver could return is allowed.
    with pytest.raises(NotAllowedError):
        await resolve_with(
            tmp_path, answer(a=["192.0.2.1"]), lambda r: r.resolve(host, 443), allow=LOOPBACK_ONLY
        )


async def test_guarded_resolver_raises_dns_failures(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError) as caught:
        await resolve_with(tmp_path, nxdomain(), lambda r: r.resolve("gone.test", 443))
    assert caught.value.failure == Failure.DNS_NXDOMAIN


async def test_guarded_resolver_guards_the_nameserver(tmp_path: Path) -> None:
    with pytest.raises(NotAllowedError):
        await resolve_with(
            tmp_path, answer(a=["192.0.2.1"]), lambda r: r.resolve("a.test", 443), allow=DOCS_ONLY
        )


# --- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "bogon"),
    [
        ("0.0.0.0", True),
        ("0.255.1.2", True),
        ("10.10.34.34", True),
        ("100.64.0.1", True),
        ("100.127.255.255", True),
        ("100.128.0.1", False),
        ("127.0.0.1", True),
        ("169.254.1.1", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::", True),
        ("::1", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:149.154.167.51", False),
        # The documentation ranges are the lab's real addresses, never bogons.
        ("192.0.2.1", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("2001:db8::1", False),
        ("::ffff:192.0.2.1", False),
        # Real endpoints.
        ("149.154.167.51", False),
        ("157.240.1.53", False),
        ("2a03:2880:f10d:83:face:b00c:0:25de", False),
        ("8.8.8.8", False),
        # Not addresses.
        ("", False),
        ("e1.whatsapp.net", False),
    ],
)
def test_is_bogon(address: str, bogon: bool) -> None:
    assert is_bogon(address) is bogon


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        (" 192.0.2.53:5353 ", ("192.0.2.53", 5353)),
        ("::1", ("::1", 53)),
        ("2001:DB8::53", ("2001:db8::53", 53)),
        ("[::1]", ("::1", 53)),
        ("[2001:db8::53]:853", ("2001:db8::53", 853)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
    ],
)
def test_parse_resolver_good(text: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("dns.google", "not an IP address"),
        ("dns.google:53", "not an IP address"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:", "port"),
        ("127.0.0.1:abc", "port"),
        ("127.0.0.1:-1", "port"),
        ("127.0.0.1:+53", "port"),
        ("127.0.0.1:٥٣", "port"),  # Arabic-Indic digits: int() takes them, we do not
        ("[::1", "without"),
        ("[::1]53", "PORT"),
        ("[127.0.0.1]:53", "IPv6"),
        ("[::1]:99999", "port"),
        ("300.1.1.1", "not an IP address"),
        ("1.2.3", "not an IP address"),
        ("[::g]:53", "not an IP address"),
    ],
)
def test_parse_resolver_bad(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse_resolver(text)


def test_read_nameservers() -> None:
    text = (
        "# generated\n"
        "; comment\n"
        "search example.org\n"
        "nameserver 192.0.2.53\n"
        "nameserver\n"
        "nameserver dns.example\n"
        "  nameserver   2001:db8::53  \n"
        "nameserver fe80::1%eth0\n"
        "nameserver 198.51.100.53\n"
        "options timeout:1 attempts:2\n"
    )
    # At most three, like glibc; entries that are not addresses are skipped, zones kept.
    assert read_nameservers(text) == ["192.0.2.53", "2001:db8::53", "fe80::1%eth0"]
    assert read_nameservers("") == []


def dns_record(resolver: str, addresses: list[str], failure: str | None = None) -> Record:
    record = Record(
        measurement_id=new_id(),
        run_id=new_id(),
        start_time="2026-11-28T12:00:00.000000Z",
        runtime=0.1,
        t0=0.0,
        probe=ProbeMeta(),
        app="whatsapp",
        target=TargetRef.of(TARGET, None),
        check=f"dns_{resolver}",
        transaction_id=1,
        failure=failure,
        details={"resolver": resolver, "addresses": addresses},
        software_version="0.1.0",
    )
    assert_valid(record)
    return record


def test_compare_answers_overlap_and_disagreement() -> None:
    system = dns_record("system", ["10.10.34.34"])
    udp = dns_record("udp", ["192.0.2.1", "192.0.2.2"])
    doh = dns_record("doh", ["192.0.2.2", "192.0.2.3"])
    compare_answers([system, udp, doh])
    assert system.details["consistent"] is False
    assert system.details["compared_with"] == ["udp", "doh"]
    assert udp.details["consistent"] is True
    assert doh.details["consistent"] is True
    assert doh.details["compared_with"] == ["system", "udp"]
    for record in (system, udp, doh):
        assert_valid(record)


def test_compare_answers_ignores_failures() -> None:
    system = dns_record("system", ["192.0.2.1"])
    doh = dns_record("doh", [], failure=Failure.GENERIC_TIMEOUT)
    compare_answers([system, doh])
    assert system.details["consistent"] is None
    assert system.details["compared_with"] == []
    assert "consistent" not in doh.details
    assert "compared_with" not in doh.details


def test_compare_answers_alone_and_empty() -> None:
    alone = dns_record("system", ["192.0.2.1"])
    compare_answers([alone])
    assert alone.details["consistent"] is None
    compare_answers([])  # nothing to annotate is not an error
    both_fail = [
        dns_record("system", [], Failure.DNS_NXDOMAIN),
        dns_record("udp", [], Failure.DNS_NXDOMAIN),
    ]
    compare_answers(both_fail)
    assert all("consistent" not in r.details for r in both_fail)
