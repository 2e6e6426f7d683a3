"""The reflector: echo contract, abuse resistance (spoofed tokens, floods, oversized packets: no
amplification, bounded memory), TLS streams on any SNI, config and the CLI.

Everything binds and sends on 127.0.0.1 only, on ports the kernel picks; every sending loop is
bounded in count and time; every server and subprocess started here is stopped here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.cli import reflector as reflector_cli
from probe.protocols.echo import (
    MAX_DATAGRAM,
    TRAILER_LEN,
    EchoError,
    FlowKind,
    build_request,
    parse_echo,
)
from probe.reflector import BindError, Config, ConfigError, Reflector, load_config
from probe.reflector import server as server_module
from probe.reflector.config import DEFAULT_UDP_PORTS, ENV_SECRET, read_secret
from probe.reflector.core import EchoCore, source_key
from probe.reflector.stream import (
    StreamRequestError,
    build_stream_request,
    parse_stream_request,
)

SECRET = bytes(range(32))
LOOPBACK = "127.0.0.1"
WAIT = 2.0  # seconds to wait for an echo that should come
QUIET = 0.3  # seconds of silence that count as "no answer"


def _config(**changes: Any) -> Config:
    base = Config(secret=SECRET, bind=(LOOPBACK,), udp_ports=(0,), tls_port=0, stats_interval=0)
    return replace(base, **changes)


def _request(seq: int, session: bytes = b"S" * 8, size: int = 120, **kw: Any) -> bytes:
    body = os.urandom(size - TRAILER_LEN)
    return build_request(kw.get("secret", SECRET), body, session, seq, FlowKind.CALL)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


class UdpClient:
    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Client) -> None:
        self.transport = transport
        self.protocol = protocol

    def send(self, data: bytes) -> None:
        self.transport.sendto(data)

    async def recv(self, timeout: float = WAIT) -> bytes | None:
        try:
            return await asyncio.wait_for(self.protocol.queue.get(), timeout)
        except TimeoutError:
            return None

    def drain(self) -> list[bytes]:
        got = []
        while not self.protocol.queue.empty():
            got.append(self.protocol.queue.get_nowait())
        return got


@contextlib.asynccontextmanager
async def udp_client(port: int, local: str = LOOPBACK) -> AsyncIterator[UdpClient]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Client, local_addr=(local, 0), remote_addr=(LOOPBACK, port)
    )
    try:
        yield UdpClient(transport, protocol)
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Reflector]:
    async with Reflector(config) as reflector:
        yield reflector


def _udp_port(reflector: Reflector) -> int:
    return reflector.udp_addresses[0][1]


# --- the echo contract ---------------------------------------------------------------------------


async def test_valid_requests_get_one_echo_each_with_counters() -> None:
    async with running(_config()) as reflector, udp_client(_udp_port(reflector)) as client:
        last_ms = -1
        for seq in range(3):
            request = _request(seq, size=100 + seq * 10)
            client.send(request)
            echo = await client.recv()
            assert echo is not None
            assert len(echo) == len(request)
            assert echo[:-TRAILER_LEN] == request[:-TRAILER_LEN]
            trailer = parse_echo(SECRET, echo)
            assert (trailer.session, trailer.seq, trailer.kind) == (b"S" * 8, seq, FlowKind.CALL)
            assert trailer.rx_count == seq + 1
            assert trailer.rx_ms >= last_ms
            last_ms = trailer.rx_ms
            await asyncio.sleep(0.02)
        assert last_ms >= 30  # two 20 ms pauses at least
        assert await client.recv(QUIET) is None  # exactly one echo per request
        stats = reflector.stats()
    assert stats["datagrams_out"] == 3
    assert stats["bytes_out"] == stats["bytes_in"]
    assert stats["sessions"] == 1


async def test_two_sessions_are_counted_apart() -> None:
    async with running(_config()) as reflector, udp_client(_udp_port(reflector)) as client:
        counts = []
        for seq, session in enumerate([b"A" * 8, b"B" * 8, b"A" * 8, b"A" * 8, b"B" * 8]):
            client.send(_request(seq, session))
            echo = await client.recv()
            assert echo is not None
            trailer = parse_echo(SECRET, echo)
            counts.append((trailer.session[:1], trailer.rx_count))
        assert counts == [(b"A", 1), (b"B", 1), (b"A", 2), (b"A", 3), (b"B", 2)]
        assert reflector.stats()["sessions"] == 2


async def test_every_port_and_ipv6_answer() -> None:
    config = _config(bind=(LOOPBACK, "::1"), udp_ports=(0, 0))
    try:
        reflector = Reflector(config)
        await reflector.start()
    except BindError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert len(reflector.udp_addresses) == 4
        loop = asyncio.get_running_loop()
        for address, port in reflector.udp_addresses:
            transport, protocol = await loop.create_datagram_endpoint(
                _Client, remote_addr=(address, port)
            )
            try:
                transport.sendto(_request(0, os.urandom(8)))
                echo = await asyncio.wait_for(protocol.queue.get(), WAIT)
                assert parse_echo(SECRET, echo).rx_count == 1
            finally:
                transport.close()
    finally:
        await reflector.close()


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(_request(0, secret=b"x" * 32), id="wrong-secret"),
        pytest.param(os.urandom(200), id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(_request(0)[:-1], id="truncated"),
        pytest.param(_request(0)[1:], id="head-cut"),
        pytest.param(_request(0)[:-12] + bytes(12), id="zero-mac"),
        pytest.param(os.urandom(MAX_DATAGRAM + 1 - TRAILER_LEN) + _request(0)[-32:], id="1473"),
        pytest.param(os.urandom(9000), id="jumbo"),
    ],
)
async def test_invalid_datagrams_get_no_answer(datagram: bytes) -> None:
    async with running(_config()) as reflector:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # A plain socket: asyncio's sendto skips an empty datagram.
            sock.setblocking(False)
            sock.sendto(datagram, (LOOPBACK, _udp_port(reflector)))
            await asyncio.sleep(QUIET)
            with pytest.raises(BlockingIOError):
                sock.recv(65536)
        stats = reflector.stats()
    assert stats["datagrams_out"] == 0
    assert stats["invalid"] == 1
    assert stats["sessions"] == 0
    assert stats["sources"] == 0  # an invalid datagram costs no state


async def test_spoofed_tokens_in_bulk_get_nothing_and_cost_nothing() -> None:
    async with running(_config()) as reflector, udp_client(_udp_port(reflector)) as client:
        deadline = time.monotonic() + 5
        for seq in range(500):  # bounded in count and time
            if time.monotonic() > deadline:
                break
            client.send(_request(seq, os.urandom(8), secret=os.urandom(32)))
            if seq % 50 == 0:
                await asyncio.sleep(0.001)
        assert await client.recv(QUIET) is None
        stats = reflector.stats()
    assert stats["datagrams_out"] == 0
    assert stats["invalid"] == stats["datagrams_in"] > 0
    assert stats["sessions"] == 0


# --- floods and bounded state ---------------------------------------------------------------------


async def test_flood_from_one_source_is_rate_limited_without_amplification() -> None:
    burst, rate = 50, 20.0
    config = _config(burst_packets=burst, rate_packets=rate)
    async with running(config) as reflector, udp_client(_udp_port(reflector)) as client:
        started = time.monotonic()
        deadline = started + 5
        for seq in range(2000):  # bounded in count and time
            if time.monotonic() > deadline:
                break
            client.send(_request(seq, size=200))
            if seq % 20 == 0:
                await asyncio.sleep(0)  # let the server read
        await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        echoes = client.drain()
        stats = reflector.stats()
    allowance = burst + rate * elapsed
    assert 0 < stats["datagrams_out"] <= allowance
    assert len(echoes) == stats["datagrams_out"]
    assert stats["bytes_out"] <= stats["bytes_in"]
    assert stats["rate_limited"] == stats["datagrams_in"] - stats["datagrams_out"]
    assert all(len(echo) == 200 for echo in echoes)
    # Rate-limited datagrams of the live session still count: rx_count says what arrived.
    assert max(parse_echo(SECRET, e).rx_count for e in echoes) >= len(echoes)


def test_rate_limit_exact_with_a_fake_clock() -> None:
    core = EchoCore(_config(burst_packets=10, rate_packets=5, burst_bytes=4000, rate_bytes=1e9))
    answered = [core.handle(_request(i), LOOPBACK, now=100.0) for i in range(30)]
    assert sum(a is not None for a in answered) == 10
    # One second later: 5 more; the session counted every arrival meanwhile.
    later = [core.handle(_request(30 + i), LOOPBACK, now=101.0) for i in range(30)]
    echoes = [e for e in later if e is not None]
    assert len(echoes) == 5
    assert parse_echo(SECRET, echoes[0]).rx_count == 31
    assert parse_echo(SECRET, echoes[0]).rx_ms == 1000
    # Bytes bind too: 4000 bytes of burst hold 3 datagrams of 1200.
    core = EchoCore(_config(burst_packets=100, rate_packets=1, burst_bytes=4000, rate_bytes=1))
    big = [core.handle(_request(i, size=1200), LOOPBACK, now=0.0) for i in range(10)]
    assert sum(b is not None for b in big) == 3
    # Another source has its own bucket.
    assert core.handle(_request(0, size=1200), "127.0.0.2", now=0.0) is not None


def test_global_rate_limit_binds_across_sources() -> None:
    core = EchoCore(_config(global_rate_packets=20, burst_packets=100))
    answered = [core.handle(_request(0, os.urandom(8)), f"10.0.0.{i}", now=5.0) for i in range(60)]
    assert sum(a is not None for a in answered) == 20


def test_sources_are_ipv4_or_ipv6_64() -> None:
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")


def test_source_table_is_capped() -> None:
    core = EchoCore(_config(max_sources=8))
    answered = [core.handle(_request(0, os.urandom(8)), f"10.0.1.{i}", now=0.0) for i in range(40)]
    assert sum(a is not None for a in answered) == 8
    assert len(core.limiter) == 8
    # Once those sources' buckets are full again they are forgotten, and new ones are served.
    assert core.handle(_request(0, os.urandom(8)), "10.0.2.1", now=60.0) is not None


async def test_sessions_stay_under_the_cap() -> None:
    config = _config(max_sessions=16, max_sessions_per_source=16, burst_packets=1000)
    async with running(config) as reflector, udp_client(_udp_port(reflector)) as client:
        for seq in range(100):
            client.send(_request(seq, os.urandom(8)))
            if seq % 10 == 0:
                await asyncio.sleep(0.001)
                assert reflector.stats()["sessions"] <= 16
        await asyncio.sleep(0.2)
        stats = reflector.stats()
    assert stats["sessions"] == 16
    assert stats["sessions_started"] == stats["datagrams_out"]
    assert stats["sessions_evicted"] == stats["sessions_started"] - 16


def test_per_source_session_cap_keeps_other_sources() -> None:
    core = EchoCore(_config(max_sessions=100, max_sessions_per_source=4, burst_packets=1000))
    kept = _request(0, b"K" * 8)
    assert core.handle(kept, "10.0.0.1", now=0.0) is not None
    for i in range(50):
        core.handle(_request(i, os.urandom(8)), "10.0.0.2", now=0.0)
    assert len(core.sessions) == 5
    echo = core.handle(_request(1, b"K" * 8), "10.0.0.1", now=0.1)
    assert echo is not None
    assert parse_echo(SECRET, echo).rx_count == 2  # the other source's session survived


async def test_idle_sessions_expire() -> None:
    config = _config(session_timeout=0.2)
    async with running(config) as reflector, udp_client(_udp_port(reflector)) as client:
        client.send(_request(0))
        assert await client.recv() is not None
        assert reflector.stats()["sessions"] == 1
        for _ in range(40):  # up to 2 s, bounded
            await asyncio.sleep(0.05)
            if reflector.stats()["sessions"] == 0:
                break
        assert reflector.stats()["sessions"] == 0
        assert reflector.stats()["sessions_expired"] == 1
        client.send(_request(1))
        echo = await client.recv()
        assert echo is not None
        assert parse_echo(SECRET, echo).rx_count == 1  # a new session


def test_expired_session_restarts_before_the_sweep() -> None:
    core = EchoCore(_config(session_timeout=1.0))
    core.handle(_request(0), LOOPBACK, now=0.0)
    echo = core.handle(_request(1), LOOPBACK, now=5.0)
    assert echo is not None
    assert parse_echo(SECRET, echo).rx_count == 1


async def test_many_sources_flood_keeps_memory_bounded() -> None:
    # Several loopback sources (127.0.0.0/8 is all loopback on Linux), many sessions each.
    config = _config(max_sessions=32, max_sessions_per_source=8, max_sources=3)
    async with running(config) as reflector:
        port = _udp_port(reflector)
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            try:
                client_cm = udp_client(port, local=host)
                async with client_cm as client:
                    for seq in range(50):
                        client.send(_request(seq, os.urandom(8)))
                    await asyncio.sleep(0.05)
            except OSError:
                pytest.skip("cannot bind 127.0.0.x here")
        stats = reflector.stats()
    assert stats["sources"] <= 3
    assert stats["sessions"] <= 24
    assert stats["bytes_out"] <= stats["bytes_in"]


# --- TLS ------------------------------------------------------------------------------------------


def _client_context() -> ssl.SSLContext:
    # As the probe's SNI test: no verification (the reflector answers every SNI).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _tls_exchange(port: int, sni: str, line: bytes | None, read: int = 1 << 24) -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(LOOPBACK, port, ssl=_client_context(), server_hostname=sni), WAIT
    )
    try:
        if line is not None:
            writer.write(line)
            await writer.drain()
        data = b""
        async with asyncio.timeout(10):
            while len(data) < read:
                try:
                    chunk = await reader.read(65536)
                except (ssl.SSLError, ConnectionError):
                    break
                if not chunk:
                    break
                data += chunk
        return data
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


@pytest.mark.parametrize("sni", ["e1.whatsapp.net", "example.org", "web.telegram.org"])
async def test_tls_any_sni_streams_exactly_n_bytes(sni: str) -> None:
    async with running(_config()) as reflector:
        port = reflector.tls_addresses[0][1]
        data = await _tls_exchange(port, sni, build_stream_request(SECRET, os.urandom(16), 100_000))
        assert len(data) == 100_000
        assert len(set(data[:4096])) > 200  # random-looking
        stats = reflector.stats()
    assert stats["tls_streams"] == 1
    assert stats["tls_bytes_out"] == 100_000


async def test_tls_zero_bytes_and_the_cap() -> None:
    async with running(_config(max_stream_bytes=50_000)) as reflector:
        port = reflector.tls_addresses[0][1]
        zero = await _tls_exchange(port, "example.org", build_stream_request(SECRET, b"n" * 16, 0))
        assert zero == b""
        capped = build_stream_request(SECRET, b"c" * 16, 10**9)
        assert len(await _tls_exchange(port, "e1.whatsapp.net", capped)) == 50_000


_LINE = build_stream_request(SECRET, b"n" * 16, 1000)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(build_stream_request(b"w" * 32, b"n" * 16, 1000), id="wrong-secret"),
        pytest.param(_LINE.replace(b" 1000 ", b" 9999 "), id="n-changed"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", id="http"),
        pytest.param(b"x" * 5000, id="long-no-newline"),
        pytest.param(_LINE.upper(), id="uppercase"),
        pytest.param(_LINE[:-1] + b"\r\n", id="crlf"),
    ],
)
async def test_tls_invalid_request_is_closed_with_nothing_sent(line: bytes) -> None:
    async with running(_config()) as reflector:
        port = reflector.tls_addresses[0][1]
        assert await _tls_exchange(port, "e1.whatsapp.net", line) == b""
        stats = reflector.stats()
    assert stats["tls_bytes_out"] == 0
    assert stats["tls_streams"] == 0


async def test_tls_silent_client_is_closed_at_the_deadline() -> None:
    async with running(_config(tls_timeout=0.3)) as reflector:
        port = reflector.tls_addresses[0][1]
        started = time.monotonic()
        assert await _tls_exchange(port, "example.org", None) == b""
        assert time.monotonic() - started < 3


async def test_tls_connections_per_source_are_capped() -> None:
    async with running(_config(max_tls_per_source=2)) as reflector:
        port = reflector.tls_addresses[0][1]
        context = _client_context()
        held = []
        try:
            for _ in range(2):
                held.append(await asyncio.open_connection(LOOPBACK, port, ssl=context))
            for _ in range(20):  # until the server has counted both (bounded)
                if reflector.stats()["tls_active"] == 2:
                    break
                await asyncio.sleep(0.02)
            line = build_stream_request(SECRET, b"t" * 16, 10)
            with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
                assert await _tls_exchange(port, "example.org", line) == b""
            assert reflector.stats()["tls_refused"] >= 1
        finally:
            for _reader, writer in held:
                writer.close()


async def test_half_open_handshakes_count_against_the_caps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "HANDSHAKE_SECONDS", 0.5)
    async with running(_config(max_tls_per_source=2)) as reflector:
        port = reflector.tls_addresses[0][1]
        silent = []
        try:
            for _ in range(2):  # TCP connects that never send a ClientHello
                silent.append(await asyncio.open_connection(LOOPBACK, port))
            for _ in range(20):  # until the server has admitted both (bounded)
                if reflector.stats()["tls_active"] == 2:
                    break
                await asyncio.sleep(0.02)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await _tls_exchange(port, "example.org", _LINE)
            assert reflector.stats()["tls_refused"] >= 1
            # The silent ones are dropped when their handshake time is up.
            for reader, _writer in silent:
                assert await asyncio.wait_for(reader.read(), 3) == b""
            assert reflector.stats()["tls_active"] == 0
            # ... and then a real client is served again.
            assert len(await _tls_exchange(port, "example.org", _LINE)) == 1000
        finally:
            for _reader, writer in silent:
                writer.close()


async def test_close_ends_open_tls_connections() -> None:
    reflector = Reflector(_config())
    await reflector.start()
    port = reflector.tls_addresses[0][1]
    _reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=_client_context(), server_hostname="example.org"
    )
    try:
        started = time.monotonic()
        await reflector.close()
        assert time.monotonic() - started < 5
        assert reflector.stats()["tls_active"] == 0
    finally:
        writer.close()


def test_stream_request_round_trip() -> None:
    line = build_stream_request(SECRET, b"\x01" * 16, 4096)
    assert line.startswith(b"RPS1 " + b"01" * 16 + b" 4096 ")
    assert line.endswith(b"\n")
    assert parse_stream_request(SECRET, line).n == 4096
    with pytest.raises(StreamRequestError):
        parse_stream_request(SECRET, line[:-1])
    with pytest.raises(StreamRequestError):
        parse_stream_request(SECRET, line.replace(b" 4096 ", b" 04096 "))
    with pytest.raises(ValueError, match="nonce"):
        build_stream_request(SECRET, b"short", 1)


# --- config -------------------------------------------------------------------------------------


def _secret_file(tmp_path: Path, content: bytes = SECRET.hex().encode() + b"\n") -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content)
    return path


def test_config_defaults_and_file(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path)
    config = load_config(None, {"secret_file": secret}, environ={})
    assert config.secret == SECRET
    assert config.udp_ports == DEFAULT_UDP_PORTS
    assert config.tls_port == 443
    assert config.bind == ("::",)
    file = tmp_path / "reflector.toml"
    file.write_text(
        'secret_file = "secret"\nbind = ["0.0.0.0", "::"]\nudp_ports = [3478, 40001]\n'
        "max_sessions = 10\nsession_timeout = 5\nrate_packets = 2.5\n"
    )
    config = load_config(file, {"udp_ports": [5000]}, environ={})
    assert config.secret == SECRET  # secret_file relative to the config file
    assert config.bind == ("0.0.0.0", "::")
    assert config.udp_ports == (5000,)  # the command line wins
    assert (config.max_sessions, config.session_timeout, config.rate_packets) == (10, 5.0, 2.5)


def test_secret_sources(tmp_path: Path) -> None:
    raw = os.urandom(24) + b"\xff"
    assert read_secret(_secret_file(tmp_path, raw)) == raw
    assert load_config(None, {}, environ={ENV_SECRET: "ab" * 16}).secret == b"\xab" * 16
    with pytest.raises(ConfigError, match="no secret"):
        load_config(None, {}, environ={})
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(None, {}, environ={ENV_SECRET: "abcd"})
    with pytest.raises(ConfigError, match="not hex"):
        load_config(None, {}, environ={ENV_SECRET: "zz" * 16})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("udp_port = [1]\n", "udp_port"),
        ('udp_ports = "3478"\n', "udp_ports"),
        ("udp_ports = [70000]\n", "udp_ports"),
        ("max_sessions = 0\n", "max_sessions"),
        ("max_sessions = true\n", "max_sessions"),
        ('rate_packets = "fast"\n', "rate_packets"),
        ('bind = ["example.org"]\n', "bind"),
        ('secret = "abc"\n', "secret"),
        ("tls = 1\n", "tls"),
        ('cert_file = "c.pem"\n', "key_file"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file, {}, environ={ENV_SECRET: "ab" * 16})
    assert "bad.toml" in str(info.value)
    assert repr(key) in str(info.value)


def test_config_file_not_toml(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text("bind = [\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(file, {}, environ={ENV_SECRET: "ab" * 16})


def test_cli_defaults_are_the_configs() -> None:
    assert reflector_cli.DEFAULT_UDP_PORTS == DEFAULT_UDP_PORTS


# --- CLI ----------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_SECRET}
    return {**env, **extra}


def _ringprobe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probe.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or _env(),
    )


def test_cli_help() -> None:
    result = CliRunner().invoke(cli, ["reflector", "--help"])
    assert result.exit_code == 0
    assert "--secret-file" in result.output


def test_cli_missing_secret_is_one_line() -> None:
    result = _ringprobe("reflector", "--bind", LOOPBACK, "--udp-port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ringprobe: error:")
    assert "secret" in lines[0]


def test_cli_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "reflector.toml"
    file.write_text("frobnicate = 1\n")
    result = _ringprobe("reflector", "--config", str(file), env=_env(**{ENV_SECRET: "ab" * 16}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "frobnicate" in lines[0]
    assert "reflector.toml" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bind", "foo"], "--bind: 'foo' is not an IP address"),
        (["--cert", "/nonexistent/c.pem"], "--key: give both"),
        (["--udp-port", "70000"], "--udp-port"),
        (["--secret-file", "/nonexistent/secret"], "cannot read secret file"),
    ],
)
def test_cli_bad_options_are_one_line(args: list[str], message: str) -> None:
    result = _ringprobe("reflector", *args, env=_env(**{ENV_SECRET: "ab" * 16}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_cli_bind_permission_error_names_port_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> socket.socket:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(server_module, "_bound_socket", refuse)
    monkeypatch.setenv(ENV_SECRET, "ab" * 16)
    result = CliRunner().invoke(cli, ["reflector", "--bind", LOOPBACK, "--udp-port", "597"])
    assert result.exit_code == 2
    assert "597" in result.output
    assert "CAP_NET_BIND_SERVICE" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_cli_serves_and_stops_on_signal(tmp_path: Path, signum: int) -> None:
    secret = _secret_file(tmp_path)
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "probe.cli",
            "reflector",
            "--secret-file",
            str(secret),
            "--bind",
            LOOPBACK,
            "--udp-port",
            "0",
            "--tls-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as proc:
        try:
            _serve_one_echo_and_stop(proc, signum)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def _serve_one_echo_and_stop(proc: subprocess.Popen[str], signum: int) -> None:
    assert proc.stderr is not None
    # The process prints the line as soon as it listens; wait for it, bounded.
    ready, _, _ = select.select([proc.stderr], [], [], 30)
    assert ready, "the reflector did not start within 30 s"
    line = proc.stderr.readline()
    assert line.startswith("ringprobe reflector: listening on udp 127.0.0.1:"), line
    port = int(line.split("udp 127.0.0.1:")[1].split(",")[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        for seq in range(3):  # a lost datagram on loopback is unlikely; bounded anyway
            request = _request(seq)
            sock.sendto(request, (LOOPBACK, port))
            try:
                echo = sock.recv(2048)
            except TimeoutError:
                continue
            assert len(echo) == len(request)
            assert parse_echo(SECRET, echo).rx_count >= 1
            break
        else:
            pytest.fail("no echo")
    proc.send_signal(signum)
    assert proc.wait(timeout=5) == 0
    rest = proc.stderr.read()
    assert LOOPBACK not in rest  # the log names no address
    assert "Traceback" not in rest


def test_echo_error_is_the_only_invalid_path() -> None:
    # parse_request raises EchoError (a DecodeError) and nothing else on any bytes; the core
    # relies on it to drop garbage without a traceback.
    core = EchoCore(_config())
    for size in (0, 1, 31, 32, 33, 1472, 1473, 4000):
        assert core.handle(os.urandom(size), LOOPBACK, now=0.0) is None
    assert core.invalid == 8
    assert issubclass(EchoError, ValueError)
