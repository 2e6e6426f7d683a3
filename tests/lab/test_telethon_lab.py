"""Telethon, a real MTProto client, against the lab's Telegram DC emulator, from the client
namespace: the emulator's resPQ is accepted by a client that is not ours.

As in tests/unit/test_telethon_interop.py, only Telethon's pieces below ``TelegramClient`` run:
``ConnectionTcpObfuscated`` (its own obfuscated2 init, keys and AES) with a packet codec
(abridged, Telethon's default for this connection, intermediate or padded intermediate), carrying
``MTProtoPlainSender``, which sends ``ReqPqMultiRequest`` the way Telethon's authenticator does.
``TelegramClient`` is never built, so nothing picks a data center or resolves a name: the script
connects to the lab address it is given, and refuses any address outside the lab's ranges before
connecting. It prints what Telethon decoded as JSON; the test asserts on it. Needs root (see
conftest.py).
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any, Final

import pytest

from probe.lab import Lab, emulators, plan

pytestmark = pytest.mark.lab

# Seconds for connect and answer together inside the script; the emulator answers in milliseconds.
TIMEOUT: Final = 5.0

_SCRIPT: Final = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    from probe.allowlist import AllowList
    from telethon.crypto.factorization import Factorization
    from telethon.network.connection.tcpabridged import AbridgedPacketCodec
    from telethon.network.connection.tcpintermediate import (
        IntermediatePacketCodec, RandomizedIntermediatePacketCodec,
    )
    from telethon.network.connection.tcpobfuscated import ConnectionTcpObfuscated
    from telethon.network.mtprotoplainsender import MTProtoPlainSender
    from telethon.tl.functions import ReqPqMultiRequest
    from telethon.tl.types import ResPQ

    CODECS = {
        "abridged": AbridgedPacketCodec,
        "intermediate": IntermediatePacketCodec,
        "padded": RandomizedIntermediatePacketCodec,
    }

    class Loggers(dict):  # what Telethon's classes expect as loggers
        def __missing__(self, key):
            return logging.getLogger(key)

    async def main(address, port, codec, timeout):
        # ConnectionTcpObfuscated's own class uses abridged; the init's tag follows the codec.
        connection_class = type(
            "Obfuscated", (ConnectionTcpObfuscated,), {"packet_codec": CODECS[codec]}
        )
        loggers = Loggers()
        nonce = int.from_bytes(os.urandom(16), "little", signed=True)  # Telethon's int128
        async with asyncio.timeout(timeout):
            connection = connection_class(address, port, dc_id=2, loggers=loggers)
            await connection.connect(timeout=timeout)
            try:
                answer = await MTProtoPlainSender(connection, loggers=loggers).send(
                    ReqPqMultiRequest(nonce=nonce)
                )
            finally:
                await connection.disconnect()
        result = {"type": type(answer).__name__, "is_res_pq": isinstance(answer, ResPQ)}
        if isinstance(answer, ResPQ):
            pq = int.from_bytes(answer.pq, "big")
            p, q = Factorization.factorize(pq)  # the authenticator's next step
            result.update(
                nonce_echoed=answer.nonce == nonce,
                server_nonce=answer.server_nonce,
                pq=pq,
                factors=[p, q],
                fingerprints=answer.server_public_key_fingerprints,
            )
        return result

    spec = json.loads(sys.argv[1])
    AllowList.from_sources(spec["ranges"], environ={}).check(spec["address"])
    print(json.dumps(asyncio.run(
        main(spec["address"], spec["port"], spec["codec"], spec["timeout"])
    )))
    """
)


def _telethon(lab: Lab, address: str, port: int, codec: str) -> dict[str, Any]:
    spec = {
        "address": address,
        "port": port,
        "codec": codec,
        "timeout": TIMEOUT,
        "ranges": list(plan.LAB_RANGES),
    }
    done = lab.run_in("client", [sys.executable, "-c", _SCRIPT, json.dumps(spec)], timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("family", "codec"),
    [(4, "abridged"), (4, "intermediate"), (4, "padded"), (6, "abridged")],
)
def test_telethon_accepts_the_lab_dcs_res_pq(lab: Lab, family: int, codec: str) -> None:
    dc = lab.sets["tg_dc" if family == 4 else "tg_dc6"][0]
    result = _telethon(lab, dc, 443, codec)
    assert result["is_res_pq"] is True, result
    assert result["nonce_echoed"] is True
    assert result["server_nonce"] != 0
    p, q = result["factors"]
    assert 1 < p < q
    assert p * q == result["pq"]
    # Telethon reads fingerprints as signed 64-bit integers; the emulator sends one.
    assert [f % 2**64 for f in result["fingerprints"]] == [emulators.FINGERPRINT]
