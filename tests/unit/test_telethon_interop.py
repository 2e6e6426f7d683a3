"""Telethon, a real MTProto client, against our server-side obfuscated2 core on loopback.

A small asyncio server on 127.0.0.1:0 plays a Telegram data center with ``ObfuscatedServer``
and ``build_res_pq``: it reads the client's 64-byte init, decodes its frames, parses its
``req_pq_multi`` and answers with a ``resPQ``. The client is Telethon's own code below its
``TelegramClient``: ``ConnectionTcpObfuscated`` (its obfuscated2 implementation, with its own
init, key derivation and pure-Python AES) carrying ``MTProtoPlainSender`` (its unencrypted-message
layer), exactly what Telethon's authenticator uses for the first step of creating an auth key.
Telethon is given the loopback address and port explicitly and never picks a data center;
nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from telethon.network.connection.connection import PacketCodec
from telethon.network.connection.tcpabridged import AbridgedPacketCodec
from telethon.network.connection.tcpintermediate import (
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)
from telethon.network.connection.tcpobfuscated import ConnectionTcpObfuscated
from telethon.network.mtprotoplainsender import MTProtoPlainSender
from telethon.tl.functions import ReqPqMultiRequest
from telethon.tl.types import ResPQ as TelethonResPQ

from probe.protocols.mtproto import (
    MTProtoError,
    ReqPQ,
    build_res_pq,
    parse_req_pq_multi,
    server_msg_id,
)
from probe.protocols.obfuscated2 import INIT_LEN, Framing, ObfuscatedServer

LOOPBACK = "127.0.0.1"
# Everything below is bounded: a hung exchange fails the test instead of stalling the suite.
TIMEOUT = 10.0
# The docs' example answer (core.telegram.org/mtproto/samples-auth_key): a pq Telethon could
# factor, 1468428376148703121 = 1008949199 * 1455403679, and the three fingerprints listed there.
SERVER_NONCE = bytes.fromhex("D6701FCD212CEB87C966E5318F5564A8")
PQ = (1468428376148703121).to_bytes(8, "big")
FINGERPRINTS = tuple(
    struct.unpack("<q", bytes.fromhex(h))[0]
    for h in ("A5B7F709355FC30B", "216BE86C022BB4C3", "85FD64DE851D9DD0")
)


class _Loggers(dict[str, logging.Logger]):
    """What Telethon's classes expect as ``loggers`` (TelegramBaseClient builds the same)."""

    def __missing__(self, key: str) -> logging.Logger:
        return logging.getLogger(key)


@dataclass
class FakeDataCenter:
    """A loopback Telegram DC: obfuscated2 in, resPQ out, using only probe.protocols."""

    port: int = 0
    framings: list[Framing] = field(default_factory=list)
    dc_ids: list[int] = field(default_factory=list)
    requests: list[ReqPQ] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server = ObfuscatedServer.from_init(await reader.readexactly(INIT_LEN))
            self.framings.append(server.framing)
            self.dc_ids.append(server.dc_id)
            while data := await reader.read(4096):
                for payload in server.feed(data):
                    request = parse_req_pq_multi(payload)
                    self.requests.append(request)
                    answer = build_res_pq(
                        request.nonce,
                        SERVER_NONCE,
                        PQ,
                        FINGERPRINTS,
                        msg_id=server_msg_id(time.time()),
                    )
                    writer.write(server.encrypt(answer))
                    await writer.drain()
        except (MTProtoError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()


@asynccontextmanager
async def fake_data_center() -> AsyncIterator[FakeDataCenter]:
    dc = FakeDataCenter()
    server = await asyncio.start_server(dc.handle, LOOPBACK, 0)
    dc.port = server.sockets[0].getsockname()[1]
    try:
        yield dc
    finally:
        server.close()
        await server.wait_closed()


def connection_class(codec: type[PacketCodec]) -> type[ConnectionTcpObfuscated]:
    """Telethon's obfuscated connection with another packet codec inside (its own class uses
    abridged; the init's tag comes from the codec's ``obfuscate_tag``)."""
    return type(f"Obfuscated{codec.__name__}", (ConnectionTcpObfuscated,), {"packet_codec": codec})


@pytest.mark.parametrize(
    ("codec", "framing"),
    [
        (AbridgedPacketCodec, Framing.ABRIDGED),
        (IntermediatePacketCodec, Framing.INTERMEDIATE),
        (RandomizedIntermediatePacketCodec, Framing.PADDED_INTERMEDIATE),
    ],
)
async def test_telethon_accepts_our_res_pq(codec: type[PacketCodec], framing: Framing) -> None:
    loggers = _Loggers()
    nonce = int.from_bytes(os.urandom(16), "little", signed=True)  # Telethon's int128 form
    async with fake_data_center() as dc, asyncio.timeout(TIMEOUT):
        connection = connection_class(codec)(LOOPBACK, dc.port, dc_id=2, loggers=loggers)
        await connection.connect(timeout=TIMEOUT)
        try:
            sender = MTProtoPlainSender(connection, loggers=loggers)
            result = await sender.send(ReqPqMultiRequest(nonce=nonce))
            # A second request on the same connection: both AES-CTR streams stay in step.
            again = await sender.send(ReqPqMultiRequest(nonce=nonce + 1))
        finally:
            await connection.disconnect()

    assert dc.errors == []
    assert dc.framings == [framing]
    assert [r.nonce for r in dc.requests] == [
        n.to_bytes(16, "little", signed=True) for n in (nonce, nonce + 1)
    ]
    assert isinstance(result, TelethonResPQ)
    assert result.nonce == nonce
    assert result.server_nonce == int.from_bytes(SERVER_NONCE, "little", signed=True)
    assert result.pq == PQ
    assert result.server_public_key_fingerprints == list(FINGERPRINTS)
    assert isinstance(again, TelethonResPQ)
    assert again.nonce == nonce + 1
