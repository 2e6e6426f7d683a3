"""A loopback TCP server for the signaling checks (mtproto, whatsapp_chat): it reads a client's
opening with a sans-IO server side (``answer``) and then behaves as a test asks.

Behaviours:
    answer    read until ``answer`` returns bytes, send them, close
    garbage   read until ``answer`` has seen a whole request, send ``garbage`` instead, close
    silent    read and never answer (the client's timeout ends it)
    close     read once, then close (FIN)
    reset     read once, then close with SO_LINGER 0 (RST)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

LOOPBACK = "127.0.0.1"

Behaviour = Literal["answer", "garbage", "silent", "close", "reset"]
Answer = Callable[[bytes], bytes | None]
"""Everything the client sent so far -> the reply, or None to read more. May raise (a client
whose opening the server side rejects); the error is kept in ``errors`` and the server closes."""

_RECV = 65536
_MAX_REQUEST = 65536


class FakeSignalingServer:
    """``async with FakeSignalingServer("answer", answer) as srv:``, then connect to
    ``srv.port``."""

    host = LOOPBACK

    def __init__(
        self, behaviour: Behaviour, answer: Answer, *, garbage: bytes = b"", hold: float = 5.0
    ) -> None:
        self.behaviour = behaviour
        self.answer = answer
        self.garbage = garbage
        self.hold = hold
        """Seconds any one connection may live, whatever the client does."""
        self.port = 0
        self.connections = 0
        self.received: list[bytes] = []
        """What each connection sent before the server answered or gave up."""
        self.errors: list[BaseException] = []
        self._listener: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._tasks.append(asyncio.create_task(self._accept_loop()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        for result in results:
            if isinstance(result, Exception) and exc is None:
                raise result

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _peer = await loop.sock_accept(self._listener)
            self.connections += 1
            self._tasks.append(asyncio.create_task(self._serve(conn)))

    async def _serve(self, sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(self.hold):
                await self._behave(sock)
        except (OSError, TimeoutError) as exc:
            self.errors.append(exc)
        finally:
            sock.close()

    async def _behave(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if self.behaviour == "silent":
            await self._drain_until_eof(sock)
            return
        if self.behaviour in ("close", "reset"):
            self.received.append(await loop.sock_recv(sock, _RECV))
            if self.behaviour == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
        else:
            reply = await self._read_request(sock)
            if reply is None:
                return
            await loop.sock_sendall(sock, reply if self.behaviour == "answer" else self.garbage)
        sock.shutdown(socket.SHUT_WR)
        # Wait for the client to hang up, so unread bytes never turn our FIN into a RST.
        await self._drain_until_eof(sock)

    async def _read_request(self, sock: socket.socket) -> bytes | None:
        loop = asyncio.get_running_loop()
        request = b""
        while len(request) < _MAX_REQUEST:
            data = await loop.sock_recv(sock, _RECV)
            if not data:
                break
            request += data
            try:
                reply = self.answer(request)
            except Exception as exc:  # the server side rejected the client: a test will say
                self.errors.append(exc)
                break
            if reply is not None:
                self.received.append(request)
                return reply
        self.received.append(request)
        return None

    async def _drain_until_eof(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionResetError):
            while await loop.sock_recv(sock, _RECV):  # bounded by ``hold``
                pass
