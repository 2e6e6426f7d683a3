"""Known-answer STUN against a real server: coturn's ``turnserver``, started on 127.0.0.1 and a
free UDP port, configured like Telegram's TURN on 1400 (realm telegram.org, long-term
credentials required), answers requests from our encoder, and our decoder reads the answers.

coturn also checks our side: it drops a request whose FINGERPRINT is wrong (shown below), so an
answer to a fingerprinted request means coturn's CRC agrees with ours.

Skipped when ``turnserver`` is not installed, except under CI=true, where that fails the run:
CI must exercise a real server. Every wait is bounded: the server's start-up by a deadline, each
exchange by a socket timeout and at most three attempts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.protocols.stun import (
    ALLOCATE,
    ALLOCATE_ERROR,
    BINDING_SUCCESS,
    CLASS_ERROR,
    FINGERPRINT,
    StunMessage,
    allocate_request,
    binding_request,
    message_type,
    parse,
    whatsapp_ping,
)

HOST = "127.0.0.1"
REALM = "telegram.org"  # METHOD.md: Telegram's TURN answers an unauthenticated Allocate so
STARTUP_DEADLINE = 10.0  # seconds for turnserver to bind its port
ANSWER_TIMEOUT = 1.0  # seconds per attempt
ATTEMPTS = 3
SETTLE = 0.3  # seconds to listen for an answer that should not come


def require_turnserver() -> str:
    """The turnserver binary; skip without it, but fail under CI=true."""
    path = shutil.which("turnserver")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("turnserver (coturn) is not installed; CI must run the coturn test")
        pytest.skip("turnserver (coturn) is not installed")
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def udp_bound(port: int) -> bool:
    """Whether something listens on HOST:port, from /proc/net/udp (no packet sent): the local
    address column is the IPv4 address in host byte order, then the port, in hex."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


@contextlib.contextmanager
def running_coturn(workdir: Path) -> Iterator[int]:
    """A turnserver on (HOST, port) for the block, configured as Telegram's TURN is (realm
    telegram.org, credentials required); stopped by its pid. Yields the port."""
    binary = require_turnserver()
    port = free_udp_port()
    command = [
        binary,
        "-n",  # no config file: /etc/turnserver.conf must not change what we test
        "--listening-ip", HOST,
        "--listening-port", str(port),
        "--no-tcp", "--no-tls", "--no-dtls",  # UDP only, and no certificates needed
        "--no-cli",  # no telnet CLI on 5766
        "--no-rfc5780",  # else it also wants the next port for NAT-behaviour discovery
        "--realm", REALM,
        "--lt-cred-mech", "--user", "u:p",  # authentication required, as on Telegram's TURN
        "--pidfile", str(workdir / "turnserver.pid"),  # default: /var/run
        "--db", str(workdir / "turndb"),  # default: /var/lib/turn
        "--log-file", "stdout", "--simple-log",
    ]  # fmt: skip
    log_path = workdir / "turnserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while not udp_bound(port):
                if process.poll() is not None:
                    pytest.fail(
                        f"turnserver exited with {process.returncode}:\n{log_path.read_text()}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"turnserver did not bind {HOST}:{port} in {STARTUP_DEADLINE} s")
                time.sleep(0.05)
            yield port
        finally:
            # terminate() and kill() signal process.pid only, and not once it has been reaped
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A turnserver answering on (HOST, port); stopped when the module is done."""
    with running_coturn(tmp_path_factory.mktemp("coturn")) as port:
        yield HOST, port


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        sock.settimeout(ANSWER_TIMEOUT)
        yield sock
    finally:
        sock.close()


def exchange(sock: socket.socket, server: tuple[str, int], request: bytes) -> StunMessage:
    """Send ``request`` until the answer to its transaction id arrives (at most ATTEMPTS times,
    ANSWER_TIMEOUT each) and parse it."""
    txid = request[8:20]
    for _ in range(ATTEMPTS):
        sock.sendto(request, server)
        try:
            data, source = sock.recvfrom(4096)
        except TimeoutError:
            continue
        assert source == server
        return parse(data, txid=txid)
    pytest.fail(f"no answer from {server} after {ATTEMPTS} attempts")


def test_binding_reports_our_address(coturn: tuple[str, int], client: socket.socket) -> None:
    answer = exchange(client, coturn, binding_request(os.urandom(12), software="ringprobe"))
    assert answer.msg_type == BINDING_SUCCESS
    assert answer.xor_mapped_address == client.getsockname()
    # coturn sends the plain MAPPED-ADDRESS too (for RFC 3489 clients): it must agree
    assert answer.mapped_address == client.getsockname()
    # coturn answers with FINGERPRINT when the request had one; parse verified it
    assert answer.fingerprint
    assert answer.software is not None
    assert answer.software.startswith("Coturn")


def test_binding_without_fingerprint(coturn: tuple[str, int], client: socket.socket) -> None:
    answer = exchange(client, coturn, binding_request(os.urandom(12), fingerprint=False))
    assert answer.msg_type == BINDING_SUCCESS
    assert answer.xor_mapped_address == client.getsockname()
    assert not answer.fingerprint
    assert all(attribute.type != FINGERPRINT for attribute in answer.attributes)


def test_unauthenticated_allocate_gets_401_with_realm(
    coturn: tuple[str, int], client: socket.socket
) -> None:
    answer = exchange(client, coturn, allocate_request(os.urandom(12)))
    assert answer.msg_type == ALLOCATE_ERROR
    assert (answer.method, answer.message_class) == (ALLOCATE, CLASS_ERROR)
    assert answer.error_code is not None
    assert answer.error_code.code == 401
    assert answer.realm == REALM
    assert answer.nonce
    assert answer.fingerprint


def test_whatsapp_allocate_attributes_do_not_change_the_401(
    coturn: tuple[str, int], client: socket.socket
) -> None:
    """coturn checks credentials before it looks at attributes it does not know (0x4000-0x4025
    are comprehension-required), so the WhatsApp-shaped Allocate still gets the 401."""
    request = allocate_request(
        os.urandom(12), extra_attributes=[(0x4000, b"token"), (0x4024, b"\x01"), (0x4025, b"\x02")]
    )
    answer = exchange(client, coturn, request)
    assert answer.error_code is not None
    assert answer.error_code.code == 401
    assert answer.realm == REALM


def test_whatsapp_ping_gets_an_error_of_its_method(
    coturn: tuple[str, int], client: socket.socket
) -> None:
    """A standard server reads 0x0801 as a request of method 0x201 (RFC 5389 §6) and answers an
    error of that method, 0x0911: our class/method split agrees with coturn's."""
    answer = exchange(client, coturn, whatsapp_ping(os.urandom(12)))
    assert answer.msg_type == message_type(0x201, CLASS_ERROR) == 0x0911
    assert (answer.method, answer.message_class) == (0x201, CLASS_ERROR)


def test_coturn_drops_a_bad_fingerprint(coturn: tuple[str, int], client: socket.socket) -> None:
    """The same request with one bit of its FINGERPRINT flipped gets no answer, while the good
    one sent right after does: coturn does check our CRC."""
    good = binding_request(os.urandom(12))
    bad_request = binding_request(os.urandom(12))
    bad = bad_request[:-1] + bytes([bad_request[-1] ^ 0x01])
    client.sendto(bad, coturn)
    answer = exchange(client, coturn, good)  # raises if the first answer is to the bad one
    assert answer.msg_type == BINDING_SUCCESS
    client.settimeout(SETTLE)
    with pytest.raises(TimeoutError):
        client.recvfrom(4096)
