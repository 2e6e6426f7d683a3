"""The lab's Telegram DC, WhatsApp chat, WhatsApp relay and Telegram reflector emulators: one
asyncio process serving every listed socket, built on the sans-IO server sides of probe.protocols.

``python -m probe.lab.emulators --telegram ADDR:PORT ... --whatsapp ADDR:PORT ...
--wa-relay ADDR:PORT ... --tg-reflector ADDR:PORT ...`` (an IPv6 address as ``[ADDR]:PORT`` or
bare, the port after the last colon). ``up`` starts it in the internet namespace on the ``tg_dc``
and ``wa_signal`` TCP listeners, in place of nginx's silent ones, so a TCP connect still succeeds
there and the protocol checks get a real answer, and on the UDP listeners of the ``wa_relay``
and ``tg_reflector`` sets, where no real server can give the apps' own answers:

telegram      (TCP) an obfuscated2 init and an unencrypted ``req_pq_multi`` -> ``resPQ`` (echoed
              nonce, random server nonce, a pq that is the product of two 31-bit primes, one
              fingerprint)
whatsapp      (TCP) the ``WA`` prologue (edge-routing pre-intro allowed) and a clientHello -> a
              ServerHello frame of the right shape (probe.protocols.whatsapp.build_server_hello)
wa-relay      (UDP) WhatsApp's relay ping 0x0801 -> the pong 0x0802 (same transaction id); a STUN
              Binding request -> Binding success with the sender's XOR-MAPPED-ADDRESS; an
              Allocate -> 401 with REALM (plan.DEFAULT_REALM) and a NONCE, as a TURN server that
              wants credentials answers. coturn cannot stand in: it answers 0x0801 with a 401.
tg-reflector  (UDP) Telegram's 40-byte reflector hello -> REFLECTOR_ANSWER_LEN bytes: the hello's
              16-byte peer tag, the 12 x FF mark of a reflector's own ("special") packet and a TL
              constructor (see reflector_answer for why not the 64-byte self-info)

After answering, a TCP connection is held open (what the client sends is read and dropped) until
the client closes or CONNECTION_SECONDS pass since it was accepted. Input that cannot be parsed,
or more bytes than the per-connection caps, closes the connection. Every read is bounded by those
caps and the connection's deadline; at most MAX_CONNECTIONS are served at once.

The UDP emulators model well-behaved servers: anything but the requests above gets silence, each
source address gets at most UDP_BURST answers at once and UDP_RATE a second after that from each
socket (a token bucket), and the reflector never sends a source more bytes than it received from
it (its answer is shorter than the hello), so neither can be turned into an amplifier. Their
answers are responses, never requests, so two of them cannot be made to talk to each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

from probe.protocols import DecodeError, mtproto, obfuscated2, stun, tgcalls, whatsapp

from .plan import DEFAULT_REALM

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

# Ours: the UDP token bucket, per (socket, source address): answers at once, and per second.
UDP_BURST: Final = 20
UDP_RATE: Final = 20.0
# Ours: source addresses tracked per socket; a new one beyond this, while every tracked bucket is
# still being refilled, gets no answer (bounds the emulator's memory under a spoofed flood).
MAX_UDP_SOURCES: Final = 4096
# RFC 5389 §15.6: the reason phrase that goes with 401
UNAUTHORIZED_REASON: Final = "Unauthorized"
# Ours: random NONCE bytes, as hex (RFC 5389 §15.8 leaves the nonce to the server)
NONCE_BYTES: Final = 8
# libtgvoip VoIPController.cpp: TLID_UDP_REFLECTOR_PEER_INFO, a reflector's own message to a
# client (after the tag and the 12 x FF mark); tgcalls ignores a special packet's body
TLID_UDP_REFLECTOR_PEER_INFO: Final = 0x27D9371C
# tag 16 + mark 12 + TL id 4: shorter than the 40-byte hello
REFLECTOR_ANSWER_LEN: Final = tgcalls.PEER_TAG_LEN + len(tgcalls.SPECIAL_MARK) + 4

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Answer = Callable[[bytes, tuple[str, int]], bytes | None]
"""A UDP emulator: a datagram and its source (host, port) -> the answer, or None for silence."""


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


def wa_relay_answer(data: bytes, source: tuple[str, int]) -> bytes | None:
    """A WhatsApp relay: ping -> pong, Binding -> success, Allocate -> 401 + realm + nonce."""
    try:
        message = stun.parse(data)
    except stun.StunError:
        return None
    if message.msg_type == stun.WHATSAPP_PING:
        return stun.whatsapp_pong(message.txid)
    if message.msg_type == stun.BINDING_REQUEST:
        return stun.binding_success(message.txid, source)
    if message.msg_type == stun.ALLOCATE_REQUEST:
        return stun.error_response(
            stun.ALLOCATE,
            message.txid,
            401,
            UNAUTHORIZED_REASON,
            realm=DEFAULT_REALM,
            nonce=secrets.token_hex(NONCE_BYTES),
        )
    return None  # responses, indications and other methods: a relay does not answer them


def reflector_answer(data: bytes, source: tuple[str, int]) -> bytes | None:
    """A Telegram reflector: a valid 40-byte hello -> its 16-byte peer tag, the 12 x FF mark and
    TLID_UDP_REFLECTOR_PEER_INFO (little-endian, as libtgvoip reads TL ids): 32 bytes.

    tgcalls (v2/ReflectorPort.cpp HandleIncomingPacket) counts any packet of 16 bytes or more
    that starts with its call tag's first 12 bytes as "the reflector is there", and ignores the
    body of a special packet; probe.checks.relay.tg_reflector accepts the same. A real reflector
    answers the hello's self-info request with the 64-byte self-info
    (tgcalls.build_self_info), more bytes than the 40 it got, which this emulator must not send:
    it would make the lab a 1.6x amplifier. The constructor is the reflector-to-client one that
    fits the 40 bytes with room to spare; its peer fields are left out (libtgvoip skips a
    PEER_INFO shorter than them, tgcalls never reads them)."""
    del source  # the answer does not depend on who asked
    try:
        hello = tgcalls.parse_hello(data)
    except tgcalls.ReflectorError:
        return None
    return (
        hello.peer_tag + tgcalls.SPECIAL_MARK + TLID_UDP_REFLECTOR_PEER_INFO.to_bytes(4, "little")
    )


class _Bucket:
    """A token bucket: UDP_BURST tokens, refilled at UDP_RATE a second."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(UDP_BURST)
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(float(UDP_BURST), self.tokens + (now - self.stamp) * UDP_RATE)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class RateLimiter:
    """Per source address (the host, whatever its port): may it have one more answer now?"""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, host: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_UDP_SOURCES:
                self._forget_idle(now)
                if len(self._buckets) >= MAX_UDP_SOURCES:
                    return False
            bucket = self._buckets[host] = _Bucket(now)
        return bucket.take(now)

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that are full again: those sources are as if never seen."""
        for host in list(self._buckets):
            bucket = self._buckets[host]
            bucket.refill(now)
            if bucket.tokens >= UDP_BURST:
                del self._buckets[host]


class DatagramEmulator(asyncio.DatagramProtocol):
    """One UDP socket of an emulator: decode, answer at most as the limits allow."""

    def __init__(self, answer: Answer, *, amplify: bool) -> None:
        self._answer = answer
        self._amplify = amplify
        self._limiter = RateLimiter()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport is one, without subclassing DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        host, port = str(addr[0]), int(addr[1])
        if port == 0 or self._transport is None:
            return  # no answer can reach port 0
        try:
            reply = self._answer(data, (host, port))
        except (DecodeError, ValueError):
            return
        if reply is None:
            return
        if not self._amplify and len(reply) > len(data):
            return  # never more bytes to a source than it sent
        if not self._limiter.allow(host):
            return
        self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from earlier answers: nothing to do


UDP_EMULATORS: Final[dict[str, tuple[Answer, bool]]] = {
    # name -> (answer, may its answer be longer than the request)
    "wa-relay": (wa_relay_answer, True),  # a Binding success or a 401 outgrows its request
    "tg-reflector": (reflector_answer, False),
}


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
    telegram: Sequence[tuple[str, int]],
    whatsapp_sockets: Sequence[tuple[str, int]],
    wa_relay: Sequence[tuple[str, int]] = (),
    tg_reflector: Sequence[tuple[str, int]] = (),
) -> None:
    """Listen on every socket until SIGTERM or SIGINT."""
    emulators = Emulators()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    transports: list[asyncio.DatagramTransport] = []
    try:
        for sockets, handler in ((telegram, serve_telegram), (whatsapp_sockets, serve_whatsapp)):
            for address, port in sockets:
                servers.append(await asyncio.start_server(emulators.wrap(handler), address, port))
        for sockets, name in ((wa_relay, "wa-relay"), (tg_reflector, "tg-reflector")):
            answer, amplify = UDP_EMULATORS[name]
            for address, port in sockets:
                factory = functools.partial(DatagramEmulator, answer, amplify=amplify)
                endpoint, _ = await loop.create_datagram_endpoint(
                    factory, local_addr=(address, port)
                )
                transports.append(endpoint)
        print(
            f"emulators: telegram on {len(telegram)}, whatsapp on {len(whatsapp_sockets)}, "
            f"wa-relay on {len(wa_relay)}, tg-reflector on {len(tg_reflector)} sockets",
            flush=True,
        )
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for endpoint in transports:
            endpoint.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probe.lab.emulators",
        description="The lab's Telegram/WhatsApp emulators.",
    )
    for option in ("--telegram", "--whatsapp", "--wa-relay", "--tg-reflector"):
        parser.add_argument(option, nargs="+", type=_socket_arg, default=[], metavar="ADDR:PORT")
    args = parser.parse_args(argv)
    if not (args.telegram or args.whatsapp or args.wa_relay or args.tg_reflector):
        parser.error("give at least one socket: --telegram, --whatsapp, --wa-relay, --tg-reflector")
    try:
        asyncio.run(serve(args.telegram, args.whatsapp, args.wa_relay, args.tg_reflector))
    except OSError as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
