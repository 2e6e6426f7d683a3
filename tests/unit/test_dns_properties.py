"""Property tests: whatever a DNS or DoH server sends back, the checks record it and return; the
option parsers reject bad text only with OptionError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.checks.dns import dns_udp, is_bogon, parse_resolver
from probe.checks.doh import dns_doh, parse_doh_url
from probe.errors import OptionError
from probe.model import is_known_failure
from tests.fakes.dns_server import FakeDNSServer, garbage, truncating, twice
from tests.fakes.doh_server import FakeDoHServer, doh_garbage
from tests.recordcheck import assert_valid
from tests.unit.test_dns import TARGET, make_ctx

# Short enough that ~30 silent-looking examples stay fast, long enough for a loopback reply.
FUZZ_TIMEOUT = 0.1
# Raw DNS headers are 12 bytes; bias some examples towards header-sized and message-sized input.
replies = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.binary(min_size=12, max_size=600),
)
fuzz = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(first=replies, second=st.one_of(st.none(), replies), over_tcp=st.booleans())
async def test_any_udp_reply_is_recorded(
    first: bytes, second: bytes | None, over_tcp: bool
) -> None:
    handler = garbage(first) if second is None else twice(garbage(first), garbage(second))
    if over_tcp:
        handler = truncating(handler)  # the bytes arrive over TCP after a truncated UDP reply
    async with FakeDNSServer(handler) as server:
        record = await dns_udp(make_ctx(resolver=server.resolver, timeout=FUZZ_TIMEOUT), TARGET, 1)
    assert record.failure is None or is_known_failure(record.failure)
    assert_valid(record)


@fuzz
@given(body=st.binary(max_size=600))
async def test_any_doh_body_is_recorded(body: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with FakeDoHServer(doh_garbage(body), Path(directory)) as server:
            ctx = make_ctx(doh_url=server.url, ca_file=server.ca_file, timeout=1.0)
            record = await dns_doh(ctx, TARGET, 1)
    assert record.failure is None or is_known_failure(record.failure)
    assert_valid(record)


@settings(max_examples=300)
@given(text=st.one_of(st.text(), st.from_regex(r"\[?[0-9a-fA-F:.]{0,20}\]?(:[0-9]{0,6})?")))
def test_parse_resolver_raises_only_option_error(text: str) -> None:
    try:
        address, port = parse_resolver(text)
    except OptionError:
        return
    assert 1 <= port <= 65535
    assert parse_resolver(address if ":" not in address else f"[{address}]:{port}")[0] == address


@settings(max_examples=300)
@given(text=st.one_of(st.text(), st.from_regex(r"https://[a-z0-9.:\[\]@#-]{0,20}/?[a-z?=]{0,5}")))
def test_parse_doh_url_raises_only_option_error(text: str) -> None:
    try:
        url = parse_doh_url(text)
    except OptionError:
        return
    assert url.startswith("https://")
    assert parse_doh_url(url) == url  # normalising twice changes nothing


@given(text=st.text())
def test_is_bogon_never_raises(text: str) -> None:
    assert is_bogon(text) in (True, False)
