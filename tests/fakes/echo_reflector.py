"""A loopback ringprobe reflector for the call_flow tests, with knobs that emulate a censor on the
way to it (docs/callflow.md; probe.protocols.echo does the bytes).

It answers each datagram whose request MAC verifies with its echo (the same length, ``rx_count``
and ``rx_ms`` kept per session), as the real reflector (probe/reflector/) does. A datagram the
emulated censor drops never reaches the reflector: it is not counted in ``rx_count``. Knobs:

    drop_after=N        drop every datagram after the first N (a cut after N packets)
    drop_prefixes=[(offset, bytes), ...]
                        drop datagrams with these bytes at this offset (e.g. the STUN magic
                        cookie at 4, or b"\\x90" at 0: a DPI that matches the first bytes)
    drop_share=p        drop a random share p (seeded: ``seed``)
    rate=bytes/s        police to this rate: a token bucket of ``burst`` bytes, over-rate
                        datagrams dropped (not delayed)
    echo_secret=b"..."  sign echoes with another secret (the probe must count them invalid)

Nothing is sent anywhere but back to the client that wrote, on loopback; at most
``MAX_DATAGRAMS`` datagrams are answered.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from probe.protocols import echo
from tests.fakes.udp_server import LOOPBACK, LoopbackUdpServer

MAX_DATAGRAMS: Final = 20_000  # answered at most; later ones are counted, not answered


@dataclass(slots=True)
class Arrival:
    """One datagram as the fake saw it."""

    data: bytes
    at: float
    """time.monotonic() on arrival."""
    dropped: bool
    """The emulated censor dropped it: the reflector never saw it."""


@dataclass(slots=True)
class _Session:
    first: float
    count: int = 0


@dataclass(slots=True)
class Censor:
    """What the emulated path drops, in the order the knobs are listed in the module docstring."""

    drop_after: int | None = None
    drop_prefixes: Sequence[tuple[int, bytes]] = ()
    drop_share: float = 0.0
    rate: float | None = None
    burst: int = echo.MAX_DATAGRAM
    seed: int = 0
    _seen: int = 0
    _tokens: float = 0.0
    _last: float | None = None
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)
        self._tokens = float(self.burst)

    def drops(self, data: bytes, now: float) -> bool:
        index = self._seen
        self._seen += 1
        if self.drop_after is not None and index >= self.drop_after:
            return True
        for offset, prefix in self.drop_prefixes:
            if data[offset : offset + len(prefix)] == prefix:
                return True
        if self.drop_share and self._rng.random() < self.drop_share:
            return True
        if self.rate is not None:
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < len(data):
                return True
            self._tokens -= len(data)
        return False


class FakeEchoReflector(LoopbackUdpServer):
    """``async with FakeEchoReflector(secret, censor=Censor(...)) as refl:``, then send to
    ``(refl.host, refl.port)``. One censor (its counters included) for every session."""

    def __init__(
        self,
        secret: bytes,
        *,
        censor: Censor | None = None,
        echo_secret: bytes | None = None,
        host: str = LOOPBACK,
    ) -> None:
        super().__init__(host)
        self.secret = secret
        self.echo_secret = echo_secret
        self.censor = censor or Censor()
        self.arrivals: list[Arrival] = []
        """Every datagram that came, dropped or not, in order."""
        self.echoed = 0
        self.rejected = 0
        """Datagrams that reached the reflector but whose request MAC did not verify."""
        self._sessions: dict[bytes, _Session] = {}

    def received(self, session: bytes | None = None) -> list[bytes]:
        """Datagrams that came (dropped ones too), of one session (by its trailer) or all."""
        return [
            a.data
            for a in self.arrivals
            if session is None or a.data[-echo.TRAILER_LEN + 4 : -echo.TRAILER_LEN + 12] == session
        ]

    def _receive(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        dropped = self.censor.drops(data, now)
        self.arrivals.append(Arrival(data, now, dropped))
        if dropped or len(self.arrivals) > MAX_DATAGRAMS:
            return
        try:
            request = echo.parse_request(self.secret, data)
        except echo.EchoError:
            self.rejected += 1  # the real reflector answers only ringprobe flows
            return
        session = self._sessions.setdefault(request.session, _Session(first=now))
        session.count += 1
        reply = echo.build_echo(
            self.secret, data, session.count, round((now - session.first) * 1000)
        )
        if self.echo_secret is not None:
            head = reply[: -echo.ECHO_MAC_LEN]
            mac = hmac.new(self.echo_secret, head, hashlib.sha256).digest()
            reply = head + mac[: echo.ECHO_MAC_LEN]
        self._send(reply, addr)
        self.echoed += 1
