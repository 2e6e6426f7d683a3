"""The lab's Telegram DC and WhatsApp chat emulators: one asyncio process serving every listed
socket, built on the sans-IO server sides of probe.protocols.

``python -m probe.lab.emulators --telegram ADDR:PORT ... --whatsapp ADDR:PORT ...`` (an IPv6
address as ``[ADDR]:PORT`` or bare, the port after the last colon). ``up`` starts it in the
internet namespace on the ``tg_dc`` and ``wa_signal`` TCP listeners, in place of nginx's silent
ones, so a TCP connect still succeeds there and the protocol checks get a real answer:

telegram  an obfuscated2 init and an unencrypted ``req_pq_multi`` -> ``resPQ`` (echoed nonce,
          random server nonce, a pq that is the product of two 31-bit primes, one fingerprint)
whatsapp  the ``WA`` prologue (edge-routing pre-intro allowed) and a clientHello -> a ServerHello
          frame of the right shape (probe.protocols.whatsapp.build_server_hello)

After answering, a connection is held open (what the client sends is read and dropped) until the
client closes or CONNECTION_SECONDS pass since it was accepted. Input that cannot be parsed, or
more bytes than the per-connection caps, closes the connection. Every read is bounded by those
caps and the connection's deadline; at most MAX_CONNECTIONS are served at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from probe.protocols import mtproto, obfuscated2, whatsapp

# Ours: how long a connection lives at most, handshake included (the brief's "~10 s").
CONNECTION_SECONDS: Final = 10.0
# Ours: bytes a client may send before its first complete request. A req_pq_multi is 40 bytes
# after a 64-byte init (plus at most 15 bytes of padding and a 4-byte length).
MAX_TELEGRAM_REQUEST: Final = 4096
# A prologue is at most the pre-intro (4 + 3 + routing) and the WA header (4) with one hello
# frame (3 + MAX_HELLO_LEN); the routing cap is the decoder's own (64 KiB).
MAX_WHATSAPP_PROLOGUE: Final = 4 + 3 + 64 * 1024 + 4 + 3 + whatsapp.MAX_HELLO_LEN
# Ours: what a client may send in all (handshake included) before the emulator hangs up.
MAX_CONNECTION_BYTES: Final = 256 * 1024
# Ours: connections served at once; more are closed on accept.
MAX_CONNECTIONS: Final = 1024
# Ours: a hang-up that does not complete within this is abandoned.
CLOSE_SECONDS: Final = 1.0
_CHUNK: Final = 4096
# core.telegram.org/mtproto/samples-auth_key: the fingerprint of the sample server key.
FINGERPRINT: Final = 0xC3B42B026CE86B21
# Miller-Rabin with these bases is exact below 3,215,031,751 (Jaeschke 1993), so for 31-bit n.
_MR_BASES: Final = (2, 3, 5, 7)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _BadInput(Exception):
    """The client's bytes are not what this emulator serves."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime31() -> int:
    """A random prime in [2**30, 2**31): about 1 odd number in 11 is one, so the loop ends
    quickly; bounded anyway."""
    for _ in range(100_000):
        candidate = (1 << 30) | secrets.randbits(30) | 1
        if _is_prime(candidate):
            return candidate
    raise RuntimeError("no prime found")  # pragma: no cover - cannot happen with a working RNG


def make_pq() -> bytes:
    """A plausible pq: the product of two distinct primes, big-endian (8 bytes, as real DCs
    send; core.telegram.org/mtproto/auth_key)."""
    p = _prime31()
    q = _prime31()
    while q == p:
        q = _prime31()
    value = p * q
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


async def _read_some(reader: asyncio.StreamReader, received: int, cap: int) -> bytes:
    """The next bytes (at most what the cap leaves); EOF -> b""; over the cap -> _BadInput."""
    if received >= cap:
        raise _BadInput(f"more than {cap} bytes")
    return await reader.read(min(_CHUNK, cap - received))


async def _hold(reader: asyncio.StreamReader, received: int) -> None:
    """Read and drop until the client closes (or the connection's deadline, or the cap)."""
    while data := await _read_some(reader, received, MAX_CONNECTION_BYTES):
        received += len(data)


async def serve_telegram(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """obfuscated2 init + req_pq_multi -> resPQ, then hold."""
    try:
        init = await reader.readexactly(obfuscated2.INIT_LEN)
    except asyncio.IncompleteReadError:
        return  # a TCP connect that sends nothing (or too little) and closes
    received = len(init)
    server = obfuscated2.ObfuscatedServer.from_init(init)
    payloads: list[bytes] = []
    while not payloads:
        data = await _read_some(reader, received, MAX_TELEGRAM_REQUEST)
        if not data:
            return
        received += len(data)
        payloads = server.feed(data)
    request = mtproto.parse_req_pq_multi(payloads[0])
    answer = mtproto.build_res_pq(
        request.nonce,
        os.urandom(mtproto.NONCE_LEN),
        make_pq(),
        (FINGERPRINT,),
        msg_id=mtproto.server_msg_id(time.time()),
    )
    writer.write(server.encrypt(answer))
    await writer.drain()
    await _hold(reader, received)


async def serve_whatsapp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """WA prologue + clientHello -> ServerHello frame, then hold."""
    buffer = b""
    while whatsapp.parse_client_prologue(buffer) is None:
        data = await _read_some(reader, len(buffer), MAX_WHATSAPP_PROLOGUE)
        if not data:
            return
        buffer += data
    writer.write(whatsapp.build_server_hello())
    await writer.drain()
    await _hold(reader, len(buffer))


class Emulators:
    """The listening sockets and the connections being served."""

    def __init__(self) -> None:
        self.active = 0

    def wrap(self, handler: Handler) -> Handler:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.active >= MAX_CONNECTIONS:
                writer.close()
                return
            self.active += 1
            try:
                async with asyncio.timeout(CONNECTION_SECONDS):
                    await handler(reader, writer)
            except (
                _BadInput,
                mtproto.MTProtoError,
                whatsapp.WhatsAppError,
                OSError,
                TimeoutError,
            ):
                pass  # bad input, a reset, or the deadline: hang up
            finally:
                self.active -= 1
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)

        return connection


def parse_socket(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[ADDR]:PORT`` -> (address, port); raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r}: give ADDR:PORT")
    host = host.removeprefix("[").removesuffix("]")
    address = str(ipaddress.ip_address(host))
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return address, port


def format_socket(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _socket_arg(text: str) -> tuple[str, int]:
    try:
        return parse_socket(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def serve(
    telegram: Sequence[tuple[str, int]], whatsapp_sockets: Sequence[tuple[str, int]]
) -> None:
    """Listen on every socket until SIGTERM or SIGINT."""
    emulators = Emulators()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    for sockets, handler in ((telegram, serve_telegram), (whatsapp_sockets, serve_whatsapp)):
        for address, port in sockets:
            servers.append(await asyncio.start_server(emulators.wrap(handler), address, port))
    print(
        f"emulators: telegram on {len(telegram)}, whatsapp on {len(whatsapp_sockets)} sockets",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probe.lab.emulators", description="The lab's Telegram/WhatsApp emulators."
    )
    parser.add_argument("--telegram", nargs="+", type=_socket_arg, default=[], metavar="ADDR:PORT")
    parser.add_argument("--whatsapp", nargs="+", type=_socket_arg, default=[], metavar="ADDR:PORT")
    args = parser.parse_args(argv)
    if not args.telegram and not args.whatsapp:
        parser.error("give at least one --telegram or --whatsapp socket")
    try:
        asyncio.run(serve(args.telegram, args.whatsapp))
    except OSError as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
