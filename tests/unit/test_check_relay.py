"""The relay checks (stun_binding, stun_allocate, wa_relay_ping, tg_reflector) against a real
coturn on loopback where coturn gives the known answer, and against a loopback UDP fake
(tests/fakes/udp_server.py) for everything a real server will not do on demand: silence, an
answer to the second attempt only, garbage, other transactions, floods. Nothing leaves loopback:
the suite's allow-list (conftest) refuses anything else, and every check is bounded by a short
timeout and at most ``attempts`` datagrams."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.allowlist import AllowList, parse_networks
from probe.checks import relay
from probe.checks.base import CheckContext
from probe.model import Failure, Record, Target, is_known_failure
from probe.protocols import stun, tgcalls
from tests.fakes.udp_server import (
    LOOPBACK,
    LOOPBACK6,
    FakeUdpServer,
    Handler,
    Reply,
    closed_udp_port,
    fixed,
    from_nth,
    silent,
)
from tests.recordcheck import assert_valid
from tests.unit.test_stun_coturn import REALM, running_coturn

TIMEOUT = 0.4  # seconds per check that ends in silence: 3 attempts are sent at 0, 0.05, 0.15 s
# Seconds per check whose answer comes at once: the first RTO (0.25 s) leaves a loaded machine
# time to answer before a retransmission, and the check ends at the answer anyway.
ANSWER_TIMEOUT = 2.0
FUZZ_TIMEOUT = 0.1
# Documentation addresses (RFC 5737, RFC 3849), standing in for a volunteer's public address in
# the fake's answers; they are only ever bytes in a payload, never a destination.
PUBLIC = "203.0.113.9"
PUBLIC6 = "2001:db8::9"
PUBLIC_PORT = 40000
SOFTWARE = "FakeRelay 1.0"


class Check(Protocol):
    def __call__(
        self,
        ctx: CheckContext,
        target: Target,
        address: str,
        transaction_id: int,
        *,
        attempts: int = ...,
    ) -> Awaitable[Record]: ...


CHECKS: dict[str, Check] = {
    relay.CHECK_STUN_BINDING: relay.stun_binding,
    relay.CHECK_STUN_ALLOCATE: relay.stun_allocate,
    relay.CHECK_WA_RELAY_PING: relay.wa_relay_ping,
    relay.CHECK_TG_REFLECTOR: relay.tg_reflector,
}
STUN_CHECKS = (relay.CHECK_STUN_BINDING, relay.CHECK_STUN_ALLOCATE, relay.CHECK_WA_RELAY_PING)


def context(timeout: float = TIMEOUT, **changes: Any) -> CheckContext:
    # The suite's allow-list (conftest): a slip cannot leave loopback.
    return CheckContext(timeout=timeout, allow=AllowList.from_sources(), **changes)


def relay_target(port: int, *, app: str = "telegram", address: str = LOOPBACK) -> Target:
    return Target(
        id="relay",
        app=app,
        role="relay",
        port=port,
        transport="udp",
        expect="unknown",
        source="test",
        date="2026-01-01",
        address=address,
    )


async def run(
    name: str,
    port: int,
    *,
    ctx: CheckContext | None = None,
    timeout: float = TIMEOUT,
    attempts: int = 3,
    address: str = LOOPBACK,
) -> tuple[Record, dict[str, Any]]:
    ctx = ctx or context(timeout)
    record = await CHECKS[name](
        ctx, relay_target(port, address=address), address, 7, attempts=attempts
    )
    data = assert_valid(record)
    assert record.check == name
    assert data["transaction_id"] == 7
    return record, record.details


# --- server sides for the fake, from our own sans-IO cores ----------------------------------


def binding_answer(data: bytes, _index: int = 0) -> bytes:
    request = stun.parse(data)
    assert request.msg_type == stun.BINDING_REQUEST
    return stun.binding_success(request.txid, (PUBLIC, PUBLIC_PORT), software=SOFTWARE)


def allocate_answer(data: bytes, _index: int = 0) -> bytes:
    request = stun.parse(data)
    assert request.msg_type == stun.ALLOCATE_REQUEST
    assert request.requested_transport == stun.TRANSPORT_UDP
    return stun.error_response(
        stun.ALLOCATE, request.txid, 401, "Unauthorized", REALM, "n0nce", software=SOFTWARE
    )


def pong_answer(data: bytes, _index: int = 0) -> bytes:
    assert len(data) == stun.HEADER_LEN  # a bare header
    request = stun.parse(data)
    assert request.msg_type == stun.WHATSAPP_PING
    return stun.whatsapp_pong(request.txid)


def self_info_answer(data: bytes, _index: int = 0, *, address: str = PUBLIC) -> bytes:
    hello = tgcalls.parse_hello(data)
    return tgcalls.build_self_info(
        hello.peer_tag,
        query_id=hello.query_id,
        date=int(time.time()),
        address=address,
        port=PUBLIC_PORT,
    )


KNOWN_ANSWERS: dict[str, Callable[[bytes, int], bytes]] = {
    relay.CHECK_STUN_BINDING: binding_answer,
    relay.CHECK_STUN_ALLOCATE: allocate_answer,
    relay.CHECK_WA_RELAY_PING: pong_answer,
    relay.CHECK_TG_REFLECTOR: self_info_answer,
}


def other_transaction(name: str) -> Handler:
    """The known answer, but to a transaction (or call tag) that is not the client's."""

    def answer(data: bytes, index: int) -> bytes:
        if name == relay.CHECK_TG_REFLECTOR:
            other = bytes(b ^ 0xFF for b in data[: tgcalls.TAG_PREFIX_LEN]) + data[12:]
            return self_info_answer(other)
        other = data[:8] + bytes(b ^ 0xFF for b in data[8:20]) + data[20:]
        if data[-8:-6] == stun.FINGERPRINT.to_bytes(2, "big"):  # keep the request parseable
            other = stun.add_fingerprint(other[:-8])
        return KNOWN_ANSWERS[name](other, index)

    return answer


def assert_attempts(details: dict[str, Any], sent: int, answered: int | None) -> None:
    """``sent`` attempts logged, in time order, the one at index ``answered`` (if any) answered."""
    attempts = details["attempts"]
    assert len(attempts) == sent
    times = [attempt["sent"] for attempt in attempts]
    assert times == sorted(times)
    assert times[0] < 0.05
    for index, attempt in enumerate(attempts):
        assert attempt["answered"] is (index == answered)
        assert (attempt["rtt"] is not None) is (index == answered)
    assert details["answered"] is (answered is not None)


# --- the known answers, from the fake -------------------------------------------------------


@pytest.mark.parametrize("name", list(CHECKS))
async def test_known_answer_on_the_first_attempt(name: str) -> None:
    async with FakeUdpServer(KNOWN_ANSWERS[name]) as srv:
        record, details = await run(name, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None, details
    assert srv.count == 1
    assert srv.errors == []
    assert_attempts(details, 1, 0)
    assert 0 <= details["attempts"][0]["rtt"] <= record.timings["answer"] < ANSWER_TIMEOUT
    assert details["bytes_sent"] == len(srv.received[0])
    assert details["bytes_received"] == len(srv.sent[0])
    assert details["unmatched"] == details["invalid"] == 0
    assert "error" not in details


async def test_binding_records_the_mapped_address_only_as_present() -> None:
    ctx = context(ANSWER_TIMEOUT)
    async with FakeUdpServer(binding_answer) as srv:
        record, details = await run(relay.CHECK_STUN_BINDING, srv.port, ctx=ctx)
    assert record.failure is None
    assert details["mapped_address"] is True
    assert details["mapped_family"] == "ipv4"
    assert details["software"] == SOFTWARE
    assert details["response_type"] == stun.BINDING_SUCCESS
    assert details["error_code"] is None
    assert record.timings["answer"] > 0
    # The volunteer's public address: handed to the scrubber, nowhere in the record.
    assert PUBLIC in ctx.scrubber.addresses
    assert PUBLIC not in record.to_json()
    assert str(PUBLIC_PORT) not in record.to_json()


async def test_binding_over_ipv6() -> None:
    def answer(data: bytes, _index: int) -> bytes:
        txid = stun.parse(data).txid
        return stun.binding_success(txid, (PUBLIC6, PUBLIC_PORT))

    ctx = context(ANSWER_TIMEOUT)
    async with FakeUdpServer(answer, host=LOOPBACK6) as srv:
        record, details = await run(relay.CHECK_STUN_BINDING, srv.port, ctx=ctx, address=LOOPBACK6)
    assert record.failure is None, details
    assert details["mapped_family"] == "ipv6"
    assert PUBLIC6 in ctx.scrubber.addresses
    assert PUBLIC6 not in record.to_json()


async def test_allocate_records_the_401() -> None:
    async with FakeUdpServer(allocate_answer) as srv:
        record, details = await run(relay.CHECK_STUN_ALLOCATE, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None
    assert details["error_code"] == 401
    assert details["realm"] == REALM
    assert details["nonce"] is True
    assert details["software"] == SOFTWARE
    assert details["response_type"] == stun.ALLOCATE_ERROR


async def test_reflector_self_info_is_scrubbed() -> None:
    ctx = context(ANSWER_TIMEOUT)
    async with FakeUdpServer(self_info_answer) as srv:
        record, details = await run(relay.CHECK_TG_REFLECTOR, srv.port, ctx=ctx)
    assert record.failure is None
    assert len(srv.received[0]) == tgcalls.HELLO_LEN
    hello = tgcalls.parse_hello(srv.received[0])
    assert hello.query_id == tgcalls.HELLO_QUERY_ID
    assert hello.sender_tag != bytes(4)
    assert details["special"] is True
    assert details["tlid"] == tgcalls.TLID_UDP_REFLECTOR_SELF_INFO
    assert details["self_info"] is True
    assert details["self_info_family"] == "ipv4"
    assert PUBLIC in ctx.scrubber.addresses
    assert PUBLIC not in record.to_json()


async def test_reflector_accepts_relayed_data_with_our_tag() -> None:
    """tgcalls counts any packet of 16 bytes or more with our call tag as the reflector's."""

    def answer(data: bytes, _index: int) -> bytes:
        return data[: tgcalls.PEER_TAG_LEN]

    async with FakeUdpServer(answer) as srv:
        record, details = await run(relay.CHECK_TG_REFLECTOR, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None
    assert details["special"] is False
    assert details["tlid"] is None
    assert details["self_info"] is False


@pytest.mark.parametrize("name", list(CHECKS))
async def test_answer_to_the_second_attempt(name: str) -> None:
    async with FakeUdpServer(from_nth(1, KNOWN_ANSWERS[name])) as srv:
        record, details = await run(name, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None, details
    assert srv.count == 2
    # RFC 5389 §7.2.1: a retransmission is the same request
    assert srv.received[0] == srv.received[1]
    assert_attempts(details, 2, 1)
    gap = details["attempts"][1]["sent"] - details["attempts"][0]["sent"]
    assert gap >= relay._first_rto(ANSWER_TIMEOUT, 3) * 0.9
    assert details["attempts"][1]["rtt"] < record.timings["answer"]


async def test_repeated_answers_end_the_check_at_the_first() -> None:
    async with FakeUdpServer(binding_answer, repeat=3) as srv:
        record, details = await run(relay.CHECK_STUN_BINDING, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None
    assert srv.count == 1
    assert len(srv.sent) == 3
    assert_attempts(details, 1, 0)
    assert details["bytes_received"] == len(srv.sent[0])  # the others were never read


async def test_garbage_before_the_answer_is_counted() -> None:
    def answer(data: bytes, index: int) -> Reply:
        return [b"garbage", binding_answer(data, index)]

    async with FakeUdpServer(answer) as srv:
        record, details = await run(relay.CHECK_STUN_BINDING, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure is None
    assert details["invalid"] == 1
    assert details["bytes_received"] == len(b"garbage") + len(srv.sent[1])


# --- silence, garbage, strangers ------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 3])
@pytest.mark.parametrize("name", list(CHECKS))
async def test_silence_is_a_timeout_after_exactly_attempts(name: str, attempts: int) -> None:
    async with FakeUdpServer(silent()) as srv:
        record, details = await run(name, srv.port, attempts=attempts)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert srv.count == attempts
    assert len(set(srv.received)) == 1
    assert_attempts(details, attempts, None)
    assert details["bytes_sent"] == sum(map(len, srv.received))
    assert details["bytes_received"] == 0
    assert "answer" not in record.timings
    assert TIMEOUT * 0.9 <= record.runtime < TIMEOUT + 0.2
    # every send fits in the first half of the timeout, leaving the rest to listen
    assert details["attempts"][-1]["sent"] <= TIMEOUT / 2


async def test_retransmissions_double_the_wait() -> None:
    timeout = 0.8
    async with FakeUdpServer(silent()) as srv:
        _record, details = await run(
            relay.CHECK_STUN_BINDING, srv.port, ctx=context(timeout), attempts=3
        )
    assert srv.count == 3
    sent = [attempt["sent"] for attempt in details["attempts"]]
    rto = relay._first_rto(timeout, 3)
    assert rto == pytest.approx(0.1)
    # lower bounds only: a loaded machine may send late, never early
    assert sent[1] - sent[0] >= rto * 0.9
    assert sent[2] - sent[1] >= 2 * rto * 0.9
    assert sent[2] <= timeout / 2


def test_first_rto_is_rfc_5389_when_time_allows() -> None:
    assert relay._first_rto(10.0, 3) == relay.INITIAL_RTO
    assert relay._first_rto(10.0, relay.MAX_ATTEMPTS) == pytest.approx(10.0 / 128)
    for attempts in range(1, relay.MAX_ATTEMPTS + 1):
        rto = relay._first_rto(1.0, attempts)
        assert rto * (2 ** (attempts - 1) - 1) <= 0.5  # the last send in the first half


@pytest.mark.parametrize("name", STUN_CHECKS)
async def test_garbage_only_is_the_decoders_failure(name: str) -> None:
    async with FakeUdpServer(fixed(b"not stun at all, just bytes")) as srv:
        record, details = await run(name, srv.port)
    assert record.failure == Failure.STUN_BAD_HEADER
    assert srv.count == 3  # garbage is not an answer: the check retransmits
    assert_attempts(details, 3, None)
    assert details["invalid"] == 3
    assert details["unmatched"] == 0
    assert details["error"].startswith("ProtocolError: ")


async def test_a_corrupted_answer_is_a_bad_fingerprint() -> None:
    def answer(data: bytes, index: int) -> bytes:
        good = binding_answer(data, index)
        return good[:-1] + bytes([good[-1] ^ 1])

    async with FakeUdpServer(answer) as srv:
        record, details = await run(relay.CHECK_STUN_BINDING, srv.port)
    assert record.failure == Failure.STUN_BAD_FINGERPRINT
    assert details["invalid"] == 3


async def test_short_reflector_garbage_is_a_bad_reply() -> None:
    async with FakeUdpServer(fixed(b"short")) as srv:
        record, details = await run(relay.CHECK_TG_REFLECTOR, srv.port)
    assert record.failure == Failure.REFLECTOR_BAD_REPLY
    assert details["invalid"] == 3


async def test_long_reflector_garbage_is_another_calls_packet() -> None:
    """Garbage of 16 bytes or more has a tag, just not ours: tgcalls would drop it, so do we."""
    async with FakeUdpServer(fixed(bytes(range(40)))) as srv:
        record, details = await run(relay.CHECK_TG_REFLECTOR, srv.port)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert details["unmatched"] == 3
    assert details["invalid"] == 0


@pytest.mark.parametrize("name", list(CHECKS))
async def test_another_transaction_is_unmatched_and_times_out(name: str) -> None:
    async with FakeUdpServer(other_transaction(name)) as srv:
        record, details = await run(name, srv.port)
    assert srv.errors == []
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert srv.count == 3
    assert details["unmatched"] == 3
    assert details["invalid"] == 0
    assert details["bytes_received"] == sum(map(len, srv.sent))
    assert_attempts(details, 3, None)


async def test_a_flood_is_read_no_further_than_max_datagrams() -> None:
    stranger = other_transaction(relay.CHECK_WA_RELAY_PING)

    def answer(data: bytes, index: int) -> Reply:
        reply = stranger(data, index)
        assert isinstance(reply, bytes)
        return [reply] * 200

    async with FakeUdpServer(answer) as srv:
        record, details = await run(relay.CHECK_WA_RELAY_PING, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert details["unmatched"] == relay.MAX_DATAGRAMS
    assert srv.count == 1  # the check ended at the cap, before its next send
    assert record.runtime < ANSWER_TIMEOUT / 2


# --- answers that are not the known one -----------------------------------------------------


def binding_error(data: bytes, _index: int) -> bytes:
    txid = stun.parse(data).txid
    return stun.error_response(stun.BINDING, txid, 400, "Bad Request", software=SOFTWARE)


def allocate_wrong_code(data: bytes, _index: int) -> bytes:
    txid = stun.parse(data).txid
    return stun.error_response(stun.ALLOCATE, txid, 420, "Unknown", unknown_attributes=[0x4000])


def allocate_no_nonce(data: bytes, _index: int) -> bytes:
    txid = stun.parse(data).txid
    return stun.error_response(stun.ALLOCATE, txid, 401, "Unauthorized", REALM)


def ping_binding_success(data: bytes, _index: int) -> bytes:
    txid = stun.parse(data).txid
    return stun.binding_success(txid, (PUBLIC, PUBLIC_PORT))


def binding_without_address(data: bytes, _index: int) -> bytes:
    txid = stun.parse(data).txid
    return stun.encode(stun.BINDING_SUCCESS, txid, fingerprint=True)


@pytest.mark.parametrize(
    ("name", "handler", "response_type", "error_code"),
    [
        (relay.CHECK_STUN_BINDING, binding_error, stun.BINDING_ERROR, 400),
        (relay.CHECK_STUN_BINDING, binding_without_address, stun.BINDING_SUCCESS, None),
        (relay.CHECK_STUN_ALLOCATE, allocate_wrong_code, stun.ALLOCATE_ERROR, 420),
        (relay.CHECK_STUN_ALLOCATE, allocate_no_nonce, stun.ALLOCATE_ERROR, 401),
        (relay.CHECK_WA_RELAY_PING, ping_binding_success, stun.BINDING_SUCCESS, None),
    ],
)
async def test_a_wrong_response_ends_the_check(
    name: str, handler: Handler, response_type: int, error_code: int | None
) -> None:
    async with FakeUdpServer(handler) as srv:
        record, details = await run(name, srv.port, timeout=ANSWER_TIMEOUT)
    assert record.failure == Failure.STUN_BAD_RESPONSE
    assert srv.count == 1  # RFC 5389 §7.3.3: a response ends the transaction
    assert details["response_type"] == response_type
    assert details["error_code"] == error_code
    assert details["answered"] is False
    assert "answer" not in record.timings
    assert 0 < record.timings["response"] < ANSWER_TIMEOUT / 2
    assert record.runtime < ANSWER_TIMEOUT / 2
    assert PUBLIC not in record.to_json()


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CHECKS))
async def test_closed_port_is_connection_refused(name: str) -> None:
    record, details = await run(name, closed_udp_port(), timeout=ANSWER_TIMEOUT)
    assert record.failure == Failure.CONNECTION_REFUSED
    assert len(details["attempts"]) == 1
    assert details["answered"] is False
    assert record.runtime < ANSWER_TIMEOUT / 2


@pytest.mark.parametrize("name", list(CHECKS))
async def test_refused_address_sees_no_datagram(name: str) -> None:
    ctx = CheckContext(timeout=TIMEOUT, allow=AllowList(parse_networks(["192.0.2.0/24"])))
    async with FakeUdpServer(KNOWN_ANSWERS[name]) as srv:
        record, details = await run(name, srv.port, ctx=ctx)
    assert record.failure == Failure.ADDRESS_NOT_ALLOWED
    assert srv.count == 0
    assert details["attempts"] == []
    assert details["bytes_sent"] == 0


@pytest.mark.parametrize("attempts", [0, relay.MAX_ATTEMPTS + 1])
async def test_attempts_out_of_range_is_a_programming_error(attempts: int) -> None:
    async with FakeUdpServer(silent()) as srv:
        with pytest.raises(ValueError, match="attempts"):
            await run(relay.CHECK_STUN_BINDING, srv.port, attempts=attempts)
    assert srv.count == 0


def test_failure_strings_are_the_decoders() -> None:
    assert Failure.STUN_BAD_HEADER == stun.STUN_BAD_HEADER
    assert Failure.STUN_BAD_COOKIE == stun.STUN_BAD_COOKIE
    assert Failure.STUN_BAD_ATTRIBUTE == stun.STUN_BAD_ATTRIBUTE
    assert Failure.STUN_BAD_FINGERPRINT == stun.STUN_BAD_FINGERPRINT
    assert Failure.REFLECTOR_BAD_REPLY == tgcalls.REFLECTOR_BAD_REPLY


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(list(CHECKS)),
    replies=st.lists(st.binary(max_size=80), min_size=1, max_size=3),
)
async def test_any_reply_is_recorded_never_raised(name: str, replies: list[bytes]) -> None:
    async with FakeUdpServer(fixed(replies)) as srv:
        record, details = await run(name, srv.port, ctx=context(FUZZ_TIMEOUT), attempts=1)
    assert record.failure is None or is_known_failure(record.failure)
    assert record.failure is None or not record.failure.startswith(Failure.UNKNOWN_PREFIX)
    assert details["bytes_received"] <= sum(map(len, replies))


# --- a real server: coturn ------------------------------------------------------------------


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A turnserver on (LOOPBACK, port), as tests/unit/test_stun_coturn.py runs it (Telegram's
    TURN: realm telegram.org, credentials required); stopped by its pid."""
    with running_coturn(tmp_path_factory.mktemp("coturn-relay")) as port:
        yield port


COTURN_TIMEOUT = ANSWER_TIMEOUT
# What coturn configured for long-term credentials answers to WhatsApp's ping (observed, 4.6)
COTURN_PING_ERROR = 401


async def test_coturn_binding_is_the_known_answer(coturn: int) -> None:
    record, details = await run(relay.CHECK_STUN_BINDING, coturn, ctx=context(COTURN_TIMEOUT))
    assert record.failure is None, details
    assert details["mapped_address"] is True
    assert details["mapped_family"] == "ipv4"
    assert details["software"].startswith("Coturn")
    assert details["attempts"][0]["answered"] is True or details["attempts"][-1]["answered"]


async def test_coturn_allocate_is_the_known_401(coturn: int) -> None:
    record, details = await run(relay.CHECK_STUN_ALLOCATE, coturn, ctx=context(COTURN_TIMEOUT))
    assert record.failure is None, details
    assert details["error_code"] == 401
    assert details["realm"] == REALM
    assert details["nonce"] is True
    assert details["response_type"] == stun.ALLOCATE_ERROR


async def test_coturn_answers_the_whatsapp_ping_with_an_error(coturn: int) -> None:
    """coturn is no WhatsApp relay: it reads 0x0801 as a request of method 0x201 and, as with
    any request when credentials are required, answers a 401 of that method (0x0911): a
    response, but not the pong."""
    record, details = await run(relay.CHECK_WA_RELAY_PING, coturn, ctx=context(COTURN_TIMEOUT))
    assert record.failure == Failure.STUN_BAD_RESPONSE
    assert details["response_type"] == 0x0911
    assert details["error_code"] == COTURN_PING_ERROR
    assert len(details["attempts"]) == 1


async def test_coturn_ignores_a_reflector_hello(coturn: int) -> None:
    """A hello is no STUN (and no ChannelData of an allocation): coturn drops it silently."""
    record, details = await run(relay.CHECK_TG_REFLECTOR, coturn, ctx=context(TIMEOUT), attempts=2)
    assert record.failure == Failure.GENERIC_TIMEOUT
    assert len(details["attempts"]) == 2
    assert details["bytes_received"] == 0
