"""The UDP echo's decisions, sans-IO: which datagram gets an echo, and what the echo says.

``EchoCore.handle(datagram, source, now)`` returns the echo to send back, or None. The caller
(probe.reflector.server) moves bytes and reads the clock; everything here is a pure function of
its inputs and bounded state, so tests drive it with a fake clock.

Why no datagram can turn the reflector into an amplifier or a memory sink:

- only a datagram whose request MAC verifies gets an answer (``parse_request``); anything else is
  dropped and only counted;
- the echo is exactly as long as its request (``build_echo``), and each request gets at most one
  echo, so no source ever gets more bytes than it sent;
- each source (an IPv4 address, or an IPv6 /64: one subscriber's allocation, RFC 6177) has a
  token bucket in datagrams and in bytes, and all sources together one more (the operator's
  uplink);
- sessions (max_sessions, max_sessions_per_source), sources (max_sources) are capped, and idle
  sessions are forgotten by ``sweep``.

A valid datagram of a known session counts in its ``rx_count`` even when the rate limit holds its
echo back: ``rx_count`` says what reached the reflector, so the probe can tell a datagram lost on
the way there from an echo the reflector did not send. A rate-limited datagram does not start a
session.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Final

from probe.protocols.echo import EchoError, build_echo, parse_request
from probe.reflector.config import Config

__all__ = ["EchoCore", "RateLimiter", "SessionTable", "source_key"]

# How often (seconds) a new source may trigger a scan for idle buckets when the table is full: a
# flood of new sources must not cost a full scan per datagram.
_SCAN_INTERVAL: Final = 1.0
_MAPPED_PREFIX: Final = "::ffff:"


def source_key(host: str) -> str:
    """The rate-limit key of a source address: an IPv4 address (also when it arrives as an
    IPv4-mapped IPv6 address on a dual-stack socket) or an IPv6 /64."""
    host = host.partition("%")[0]  # a link-local zone
    if host.startswith(_MAPPED_PREFIX) and "." in host:
        return host[len(_MAPPED_PREFIX) :]
    if ":" not in host:
        return host
    try:
        packed = ipaddress.IPv6Address(host).packed
    except ValueError:
        return host
    return packed[:8].hex() + "::/64"


class _Bucket:
    """Two token buckets in one: datagrams and bytes."""

    __slots__ = ("bytes", "packets", "stamp")

    def __init__(self, packets: float, size: float, now: float) -> None:
        self.packets = packets
        self.bytes = size
        self.stamp = now


class RateLimiter:
    """Token buckets per key: ``burst`` datagrams / bytes at once, ``rate`` a second after."""

    def __init__(
        self,
        rate_packets: float,
        burst_packets: float,
        rate_bytes: float,
        burst_bytes: float,
        max_keys: int,
    ) -> None:
        self.rate_packets = rate_packets
        self.burst_packets = float(burst_packets)
        self.rate_bytes = rate_bytes
        self.burst_bytes = float(burst_bytes)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._last_scan = float("-inf")

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.stamp)
        bucket.packets = min(self.burst_packets, bucket.packets + elapsed * self.rate_packets)
        bucket.bytes = min(self.burst_bytes, bucket.bytes + elapsed * self.rate_bytes)
        bucket.stamp = now

    def _bucket(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._refill(bucket, now)
            return bucket
        if len(self._buckets) >= self.max_keys:
            if now - self._last_scan < _SCAN_INTERVAL:
                return None
            self._last_scan = now
            self.forget_idle(now)
            if len(self._buckets) >= self.max_keys:
                return None
        bucket = self._buckets[key] = _Bucket(self.burst_packets, self.burst_bytes, now)
        return bucket

    def allows(self, key: str, size: int, now: float) -> bool:
        """Whether ``key`` may send one datagram of ``size`` bytes now (takes nothing)."""
        bucket = self._bucket(key, now)
        return bucket is not None and bucket.packets >= 1 and bucket.bytes >= size

    def take(self, key: str, size: int, now: float) -> None:
        """Spend one datagram of ``size`` bytes (after ``allows`` said yes)."""
        bucket = self._bucket(key, now)
        if bucket is not None:
            bucket.packets -= 1
            bucket.bytes -= size

    def forget_idle(self, now: float) -> int:
        """Drop the buckets that are full again (those sources are as if never seen)."""
        idle = []
        for key, bucket in self._buckets.items():
            self._refill(bucket, now)
            if bucket.packets >= self.burst_packets and bucket.bytes >= self.burst_bytes:
                idle.append(key)
        for key in idle:
            del self._buckets[key]
        return len(idle)


class _Session:
    __slots__ = ("first_seen", "last_seen", "rx_count", "source")

    def __init__(self, source: str, now: float) -> None:
        self.source = source
        self.first_seen = now
        self.last_seen = now
        self.rx_count = 0


class SessionTable:
    """Sessions by (source key, session id), least recently seen first, capped in all and per
    source: a new session beyond a cap replaces the least recently seen one (its source's own
    when the per-source cap is the one hit). Replacing rather than refusing keeps echoes coming
    for every live flow; a replaced session that comes back restarts at rx_count 1, which the
    probe sees."""

    def __init__(self, max_sessions: int, max_per_source: int, timeout: float) -> None:
        self.max_sessions = max_sessions
        self.max_per_source = max_per_source
        self.timeout = timeout
        self._sessions: OrderedDict[tuple[str, bytes], _Session] = OrderedDict()
        self._per_source: dict[str, int] = {}
        self.started = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, source: str, session: bytes, now: float) -> _Session | None:
        """The live session, or None (an idle one is forgotten here, ahead of the sweep)."""
        key = (source, session)
        state = self._sessions.get(key)
        if state is not None and now - state.last_seen > self.timeout:
            self._remove(key)
            self.expired += 1
            return None
        return state

    def start(self, source: str, session: bytes, now: float) -> _Session:
        if self._per_source.get(source, 0) >= self.max_per_source:
            oldest = next(k for k in self._sessions if k[0] == source)
            self._remove(oldest)
            self.evicted += 1
        while len(self._sessions) >= self.max_sessions:
            self._remove(next(iter(self._sessions)))
            self.evicted += 1
        state = self._sessions[(source, session)] = _Session(source, now)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self.started += 1
        return state

    def seen(self, source: str, session: bytes, state: _Session, now: float) -> None:
        """One more datagram of the session arrived."""
        state.rx_count += 1
        state.last_seen = now
        self._sessions.move_to_end((source, session))

    def sweep(self, now: float) -> int:
        """Forget the sessions idle for longer than the timeout; how many."""
        count = 0
        while self._sessions:
            key, state = next(iter(self._sessions.items()))
            if now - state.last_seen <= self.timeout:
                break  # ordered by last_seen: the rest are more recent
            self._remove(key)
            count += 1
        self.expired += count
        return count

    def _remove(self, key: tuple[str, bytes]) -> None:
        del self._sessions[key]
        left = self._per_source[key[0]] - 1
        if left:
            self._per_source[key[0]] = left
        else:
            del self._per_source[key[0]]


_GLOBAL: Final = "*"


class EchoCore:
    """The echo decisions and the counters of every UDP socket of one reflector."""

    def __init__(self, config: Config) -> None:
        self.secret = config.secret
        self.limiter = RateLimiter(
            config.rate_packets,
            config.burst_packets,
            config.rate_bytes,
            config.burst_bytes,
            config.max_sources,
        )
        # One second's worth at once: the global bucket smooths, the per-source ones cap bursts.
        self.uplink = RateLimiter(
            config.global_rate_packets,
            max(1.0, config.global_rate_packets),
            config.global_rate_bytes,
            max(float(config.burst_bytes), config.global_rate_bytes),
            1,
        )
        self.sessions = SessionTable(
            config.max_sessions, config.max_sessions_per_source, config.session_timeout
        )
        self.datagrams_in = 0
        self.bytes_in = 0
        self.datagrams_out = 0
        self.bytes_out = 0
        self.invalid = 0
        self.rate_limited = 0
        self.send_dropped = 0

    def handle(self, datagram: bytes, host: str, now: float) -> bytes | None:
        """The echo of ``datagram`` from ``host`` (the source address without its port) at
        monotonic time ``now`` (seconds), or None for silence."""
        size = len(datagram)
        self.datagrams_in += 1
        self.bytes_in += size
        try:
            trailer = parse_request(self.secret, datagram)
        except EchoError:
            self.invalid += 1
            return None
        source = source_key(host)
        state = self.sessions.get(source, trailer.session, now)
        allowed = self.limiter.allows(source, size, now) and self.uplink.allows(_GLOBAL, size, now)
        if not allowed:
            self.rate_limited += 1
            if state is not None:
                self.sessions.seen(source, trailer.session, state, now)
            return None
        self.limiter.take(source, size, now)
        self.uplink.take(_GLOBAL, size, now)
        if state is None:
            state = self.sessions.start(source, trailer.session, now)
        self.sessions.seen(source, trailer.session, state, now)
        rx_ms = int((now - state.first_seen) * 1000)
        echo = build_echo(self.secret, datagram, state.rx_count, rx_ms)
        if len(echo) != size:  # pragma: no cover - build_echo keeps the length by contract
            return None
        return echo

    def sent(self, size: int) -> None:
        self.datagrams_out += 1
        self.bytes_out += size

    def sweep(self, now: float) -> None:
        """Forget idle sessions and sources whose buckets are full again."""
        self.sessions.sweep(now)
        self.limiter.forget_idle(now)

    def stats(self) -> dict[str, int]:
        return {
            "datagrams_in": self.datagrams_in,
            "bytes_in": self.bytes_in,
            "datagrams_out": self.datagrams_out,
            "bytes_out": self.bytes_out,
            "invalid": self.invalid,
            "rate_limited": self.rate_limited,
            "send_dropped": self.send_dropped,
            "sessions": len(self.sessions),
            "sessions_started": self.sessions.started,
            "sessions_evicted": self.sessions.evicted,
            "sessions_expired": self.sessions.expired,
            "sources": len(self.limiter),
        }
