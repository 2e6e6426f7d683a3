"""The ``quic`` check: a QUIC v1 handshake and one HTTP/3 GET of the target's path, pinned to the
address under test.

The handshake sends the target's host as SNI, offers only QUIC version 1 and ALPN h3, and verifies
the certificate against the system's trust store plus ``ctx.ca_file``, as tls_handshake does. Then
one GET with the host (and the port, when not 443) as ``:authority``, reading at most
``MAX_BODY_BYTES`` of body, as http_get does; a status other than 2xx is an observation, not a
failure. Then the connection is closed (CONNECTION_CLOSE with H3_NO_ERROR, unless the peer never
answered or the connection is already closing) and the socket dropped.
aioquic's sans-IO QuicConnection and H3Connection do the protocol; this module only moves
datagrams, over a connected UDP socket so that ICMP errors reach it.

details: ``sni``, ``handshake_done``, ``bytes_sent`` and ``bytes_received`` (UDP payload bytes);
after the handshake ``quic_version`` (of the server's long-header packets) and ``alpn``; after the
response head ``status``, ``headers`` (a few), ``body_bytes``, ``truncated``, ``body_sha256`` and
``throughput_bps``, as http_get records them; when a CONNECTION_CLOSE ended the check early
``closed_by`` ("peer", or "local" when aioquic refused what the peer sent), ``close_code``,
``close_space`` ("transport" or "application") and ``close_reason``; ``server_versions`` after a
Version Negotiation; ``stream_reset_code`` after a RESET_STREAM of the request.
timings: ``handshake``, ``first_byte`` (response head received), ``done`` (body read).

failures:
``generic_timeout_error``: no answer to the Initial, or anything slower than the check's timeout;
``connection_refused``: ICMP port unreachable, or the peer's CONNECTION_CLOSE with
CONNECTION_REFUSED (as OONI's netxlite classifies it); other ICMP errors as base.classify maps them;
``ssl_invalid_hostname``, ``ssl_unknown_authority``, ``ssl_invalid_certificate``: our certificate
check failed, named as tls_handshake names the same failure; or the peer's TLS alert, named as
netxlite names it;
``ssl_failed_handshake``: any other TLS alert, or aioquic refused what the peer sent during the
handshake (OONI: "TLS/QUIC handshake failed for unknown reasons");
``quic_incompatible_version``: the server's Version Negotiation does not list version 1 (OONI's);
``quic_connection_closed``: the peer closed the connection with any other code before the response
was read (ringprobe's own; the details say the code and reason);
``http_request_failed``: the server reset the request stream, or aioquic refused what it sent after
the handshake;
``address_not_allowed``: the guard refused the address, and nothing was sent;
``unknown_failure: ...``: aioquic ended the connection in a way none of these name.
aioquic's client does not recognise a stateless reset (RFC 9000 §10.3): one reads as silence.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamReset
from aioquic.quic.logger import QuicLogger, QuicLoggerTrace
from aioquic.quic.packet import QuicErrorCode, QuicProtocolVersion
from aioquic.tls import AlertDescription

from probe.checks.base import CheckContext, ProtocolError, Step, measured
from probe.model import Failure, Record, Target

CHECK = "quic"
# The same as http_get's (probe.checks.http; a test keeps them equal), so that the HTTPS and the
# HTTP/3 GET of one page compare. Not imported from there: a QUIC run need not load aiohttp.
MAX_BODY_BYTES: Final = 256 * 1024
MIN_THROUGHPUT_BYTES: Final = 4096
HEADERS_KEPT: Final = ("server", "content-type", "content-length", "location")
# RFC 9000 §15: version 1 only, the version browsers use and Russian filters matched (aioquic would
# also offer version 2, RFC 9369).
QUIC_VERSIONS: Final = (QuicProtocolVersion.VERSION_1,)
# RFC 9110 §4.2.2: the default port of https, left out of the authority.
HTTPS_PORT: Final = 443
# RFC 9000 §17.2: the header form bit of a long header, which carries the version in bytes 1-4.
_LONG_HEADER: Final = 0x80
_VERSION_END: Final = 5
# RFC 9001 §4.8: a TLS alert closes a QUIC connection as CRYPTO_ERROR, 0x0100 plus the alert.
_CRYPTO_ERROR: Final = 0x100
_CRYPTO_ERROR_END: Final = 0x200
# A peer's TLS alert as OONI names it (ooni/probe-cli internal/netxlite/classify.go,
# classifyQUICHandshakeError); alert numbers from RFC 8446 §6.2.
_ALERT_FAILURES: Final[dict[int, str]] = {
    AlertDescription.handshake_failure: Failure.SSL_FAILED_HANDSHAKE,
    AlertDescription.bad_certificate: Failure.SSL_INVALID_CERTIFICATE,
    AlertDescription.unsupported_certificate: Failure.SSL_INVALID_CERTIFICATE,
    AlertDescription.certificate_revoked: Failure.SSL_INVALID_CERTIFICATE,
    AlertDescription.certificate_expired: Failure.SSL_INVALID_CERTIFICATE,
    AlertDescription.certificate_unknown: Failure.SSL_INVALID_CERTIFICATE,
    AlertDescription.unknown_ca: Failure.SSL_UNKNOWN_AUTHORITY,
    AlertDescription.decrypt_error: Failure.SSL_FAILED_HANDSHAKE,
    AlertDescription.unrecognized_name: Failure.SSL_INVALID_HOSTNAME,
}
# aioquic's own certificate check (aioquic/tls.py, verify_certificate) says bad_certificate for both
# a name mismatch ("hostname 'x' doesn't match 'y'", or service_identity's complaint of no
# subjectAltName) and a chain OpenSSL rejects (its X509_V_ERR text, crypto/x509/x509_txt.c). These
# texts are the unknown-issuer codes base._classify_certificate maps (2, 18, 19, 20, 21).
_HOSTNAME_TEXTS: Final = ("doesn't match", "subjectaltname")
_UNKNOWN_ISSUER_TEXTS: Final = (
    "unable to get issuer certificate",
    "unable to get local issuer certificate",
    "unable to verify the first certificate",
    "self-signed certificate",
    "self signed certificate",  # OpenSSL before 3.0
)
_REASON_CHARS: Final = 200
_SHA_DIGITS: Final = 16

__all__ = ["CHECK", "HEADERS_KEPT", "MAX_BODY_BYTES", "QUIC_VERSIONS", "quic_get"]

# aioquic logs each failed handshake as a warning; with no handler configured, Python's last-resort
# handler would print them over the CLI's output. The record already says what happened; an
# application that configures logging still gets them.
for _name in ("quic", "http3"):
    logging.getLogger(_name).addHandler(logging.NullHandler())


async def quic_get(ctx: CheckContext, target: Target, address: str, transaction_id: int) -> Record:
    """GET ``https://{target.host}{target.path}`` over HTTP/3 from ``address:target.port``."""
    if target.host is None:
        raise ValueError(f"target {target.id!r} has no host to send as SNI and authority")
    request = _request_headers(target)
    watch = _CloseWatch()
    configuration = _configuration(ctx, target.host, watch)
    loop = asyncio.get_running_loop()
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(sni=target.host, handshake_done=False, bytes_sent=0, bytes_received=0)
        ctx.guard(address)  # before any socket exists: a refused address sees no datagram
        # A literal address: asyncio looks nothing up, and the connected socket hears ICMP errors.
        transport, client = await loop.create_datagram_endpoint(
            lambda: _H3Client(step, configuration, watch, request),
            remote_addr=(address, target.port),
        )
        try:
            ctx.note_local(transport.get_extra_info("sockname"))
            client.start(transport.get_extra_info("peername"))
            await client.finished()
        finally:
            await client.hang_up()
    return step.record


def _authority(target: Target) -> str:
    """The authority of ``https://host[:port]`` (RFC 9114 §4.3.1), as http_get's Host header."""
    assert target.host is not None
    return target.host if target.port == HTTPS_PORT else f"{target.host}:{target.port}"


def _request_headers(target: Target) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", _authority(target).encode("ascii")),
        (b":path", target.path.encode("ascii")),
    ]


def _configuration(ctx: CheckContext, server_name: str, watch: _CloseWatch) -> QuicConfiguration:
    """Client settings. The trust store is OpenSSL's default one (what ssl.create_default_context
    loads) plus ``ctx.ca_file``; aioquic falls back to certifi's only when there is neither."""
    system = ssl.get_default_verify_paths()
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        server_name=server_name,
        supported_versions=list(QUIC_VERSIONS),
        verify_mode=ssl.CERT_REQUIRED,
        cafile=system.cafile,
        capath=system.capath,
        cadata=Path(ctx.ca_file).read_bytes() if ctx.ca_file else None,
        quic_logger=_Watcher(watch),
    )


@dataclass(slots=True, frozen=True)
class _Close:
    """A CONNECTION_CLOSE frame (RFC 9000 §19.19) that crossed the wire."""

    by_peer: bool
    code: int
    application: bool
    reason: str

    def describe(self) -> str:
        who = "the peer" if self.by_peer else "aioquic"
        space = "application" if self.application else "transport"
        reason = f": {self.reason}" if self.reason else ""
        return f"{who} closed the connection ({space} error {self.code:#x}){reason}"


class _CloseWatch(QuicLoggerTrace):
    """aioquic says which frames crossed the wire only to its qlog trace. This trace keeps the first
    CONNECTION_CLOSE either way and the server's Version Negotiation, and stores nothing else."""

    def __init__(self) -> None:
        super().__init__(is_client=True, odcid=b"")
        self.close: _Close | None = None
        self.server_versions: list[int] | None = None
        self._received: list[list[dict[str, Any]]] = []

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        if category != "transport":
            return
        if event == "packet_received":
            # aioquic fills in the frames after logging the packet; settle() reads them.
            self._received.append(data["frames"])
        elif event == "packet_sent":
            self._note(data["frames"], by_peer=False)
        elif event == "version_information" and "server_versions" in data:
            self.server_versions = [int(version) for version in data["server_versions"]]

    def settle(self) -> None:
        """Read the frames of the packets received since the last call."""
        for frames in self._received:
            self._note(frames, by_peer=True)
        self._received.clear()

    def _note(self, frames: list[dict[str, Any]], *, by_peer: bool) -> None:
        if self.close is not None:
            return
        for frame in frames:
            if frame.get("frame_type") == "connection_close":
                self.close = _Close(
                    by_peer=by_peer,
                    code=int(frame["error_code"]),
                    application=frame.get("error_space") == "application",
                    reason=str(frame.get("reason", ""))[:_REASON_CHARS],
                )
                return


class _Watcher(QuicLogger):
    """Hands aioquic the one watch trace of this check's one connection."""

    def __init__(self, trace: _CloseWatch) -> None:
        super().__init__()
        self._trace = trace

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        return self._trace

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        pass


def _close_failure(close: _Close, *, handshake_done: bool) -> str:
    """The failure a CONNECTION_CLOSE stands for (see the module docstring)."""
    if not close.application and _CRYPTO_ERROR <= close.code < _CRYPTO_ERROR_END:
        alert = close.code - _CRYPTO_ERROR
        if alert == AlertDescription.bad_certificate and not close.by_peer:
            return _verification_failure(close.reason)
        return _ALERT_FAILURES.get(alert, Failure.SSL_FAILED_HANDSHAKE)
    if close.by_peer:
        if not close.application and close.code == QuicErrorCode.CONNECTION_REFUSED:
            return Failure.CONNECTION_REFUSED
        return Failure.QUIC_CONNECTION_CLOSED
    # aioquic closed it: what the peer sent broke QUIC, TLS or HTTP/3 as aioquic reads them.
    return Failure.HTTP_REQUEST_FAILED if handshake_done else Failure.SSL_FAILED_HANDSHAKE


def _verification_failure(reason: str) -> str:
    """Our certificate check's bad_certificate, named as tls_handshake names the same failure."""
    text = reason.lower()
    if any(marker in text for marker in _HOSTNAME_TEXTS):
        return Failure.SSL_INVALID_HOSTNAME
    if any(marker in text for marker in _UNKNOWN_ISSUER_TEXTS):
        return Failure.SSL_UNKNOWN_AUTHORITY
    return Failure.SSL_INVALID_CERTIFICATE


class _Body:
    """The response body as it arrives, up to MAX_BODY_BYTES."""

    __slots__ = ("digest", "ended", "first_at", "first_len", "last_at", "total")

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.total = 0
        self.ended = False
        self.first_at: float | None = None
        self.first_len = 0
        self.last_at = 0.0

    def feed(self, data: bytes, ended: bool) -> bool:
        """Take a piece; True once reading is over (the stream ended or the cap is reached)."""
        kept = data[: MAX_BODY_BYTES - self.total]
        if kept:
            self.last_at = time.monotonic()
            if self.first_at is None:
                self.first_at, self.first_len = self.last_at, len(kept)
            self.total += len(kept)
            self.digest.update(kept)
        self.ended = ended
        return ended or self.total >= MAX_BODY_BYTES

    def details(self) -> dict[str, Any]:
        return {
            "body_bytes": self.total,
            "truncated": self.total >= MAX_BODY_BYTES and not self.ended,
            "body_sha256": self.digest.hexdigest()[:_SHA_DIGITS],
            "throughput_bps": self._throughput(),
        }

    def _throughput(self) -> int | None:
        """Bits per second over the bytes after the first piece, as http_get computes it."""
        later = self.total - self.first_len
        if self.first_at is None or later < MIN_THROUGHPUT_BYTES or self.last_at <= self.first_at:
            return None
        return round(later * 8 / (self.last_at - self.first_at))


class _H3Client(asyncio.DatagramProtocol):
    """Moves datagrams between a connected UDP socket and aioquic's QuicConnection and
    H3Connection, and writes what happens into the step as it happens."""

    def __init__(
        self,
        step: Step,
        configuration: QuicConfiguration,
        watch: _CloseWatch,
        request: list[tuple[bytes, bytes]],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._step = step
        self._watch = watch
        self._request = request
        self._quic = QuicConnection(configuration=configuration)
        self._h3 = H3Connection(self._quic)
        self._body = _Body()
        self._stream_id: int | None = None
        self._version: int | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._live = True
        """False once the check hangs up: nothing more is read, sent or recorded."""
        self._done = False
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's datagram transports do not all derive from DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if exc is not None:  # asyncio closed the socket because a callback of ours raised
            self._fail(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if not self._live:
            return
        self._step.details["bytes_received"] += len(data)
        if len(data) >= _VERSION_END and data[0] & _LONG_HEADER:
            version = int.from_bytes(data[1:_VERSION_END], "big")
            if version:  # 0 is a Version Negotiation packet (RFC 9000 §17.2.1)
                self._version = version
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._watch.settle()
        self._pump()

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket hears ICMP errors: ECONNREFUSED is a port unreachable.
        if self._live:
            self._fail(exc)

    # the check's side

    def start(self, peer: NetworkAddress) -> None:
        """Send the Initial to ``peer`` (the connected address, as datagrams will come from it)."""
        self._quic.connect(peer, now=self._loop.time())
        self._pump()

    async def finished(self) -> None:
        """Return once the response is read (or capped); raise what ended the connection first."""
        while not self._done:  # each pass waits for an event; the check's timeout bounds them
            if self._error is not None:
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    async def hang_up(self) -> None:
        """Record the body, send CONNECTION_CLOSE unless the connection is already closing or
        the peer never answered, and drop the socket. Nothing lingers in the closing state
        (RFC 9000 §10.2): aioquic ignores whatever arrives once it has closed."""
        if "status" in self._step.details:
            self._step.details.update(self._body.details())
        if self._live:
            self._live = False
            # A peer that never answered holds nothing of ours (RFC 9000 §10.1: a silent end).
            if self._watch.close is None and self._step.details["bytes_received"]:
                self._quic.close(error_code=ErrorCode.H3_NO_ERROR)  # RFC 9114 §8.1
                self._send()
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()
        await self.closed

    # moving bytes

    def _pump(self) -> None:
        """Handle aioquic's events, send what it queued, and re-arm its timer."""
        self._process_events()
        self._send()
        self._check_close()
        self._stop_timer()
        timer_at = self._quic.get_timer()
        if timer_at is not None and self._live:
            self._timer = self._loop.call_at(timer_at, self._on_timer, timer_at)

    def _send(self) -> None:
        assert self._transport is not None
        for data, _addr in self._quic.datagrams_to_send(now=self._loop.time()):
            self._transport.sendto(data)  # the socket is connected to the peer
            self._step.details["bytes_sent"] += len(data)

    def _on_timer(self, timer_at: float) -> None:
        self._timer = None
        try:
            # The loop may call a little early; aioquic's own client rounds up the same way.
            self._quic.handle_timer(now=max(timer_at, self._loop.time()))
            self._pump()
        except Exception as exc:  # a bug must end the check, not hide in the loop's log
            self._fail(exc)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # what happened

    def _process_events(self) -> None:
        event = self._quic.next_event()
        while event is not None:  # aioquic queues a bounded number per datagram or timer
            self._on_quic_event(event)
            for h3_event in self._h3.handle_event(event):
                self._on_h3_event(h3_event)
            event = self._quic.next_event()

    def _on_quic_event(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._step.mark("handshake")
            self._step.details.update(
                handshake_done=True, quic_version=self._version, alpn=event.alpn_protocol
            )
            self._stream_id = self._quic.get_next_available_stream_id()
            self._h3.send_headers(self._stream_id, self._request, end_stream=True)
        elif isinstance(event, StreamReset) and event.stream_id == self._stream_id:
            self._step.details["stream_reset_code"] = event.error_code
            self._fail(
                ProtocolError(
                    Failure.HTTP_REQUEST_FAILED,
                    f"the server reset the request stream (error {event.error_code:#x})",
                )
            )
        elif isinstance(event, ConnectionTerminated) and self._watch.close is None:
            self._terminated(event)

    def _terminated(self, event: ConnectionTerminated) -> None:
        """The connection ended without a CONNECTION_CLOSE on the wire (those end the check as
        soon as they are seen, in _check_close)."""
        versions = self._watch.server_versions
        if versions is not None and not self._step.details["handshake_done"]:
            self._step.details["server_versions"] = versions
            listed = ", ".join(f"{version:#x}" for version in versions)
            failure = ProtocolError(
                Failure.QUIC_INCOMPATIBLE_VERSION, f"the server offers versions {listed}, not 1"
            )
        elif "idle timeout" in event.reason_phrase.lower():
            failure = ProtocolError(Failure.GENERIC_TIMEOUT, "aioquic's idle timeout")
        else:
            text = f"connection terminated: error {event.error_code:#x} {event.reason_phrase}"
            failure = ProtocolError(Failure.UNKNOWN_PREFIX + text, text)
        self._fail(failure)

    def _on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self._stream_id:
            self._on_headers(event)
        elif (
            isinstance(event, DataReceived)
            and event.stream_id == self._stream_id
            and self._body.feed(event.data, event.stream_ended)
        ):
            self._finish()

    def _on_headers(self, event: HeadersReceived) -> None:
        if "status" in self._step.details:  # trailers
            if event.stream_ended:
                self._finish()
            return
        fields = dict(event.headers)
        try:
            status = int(fields.get(b":status", b""))
        except ValueError:
            self._fail(ProtocolError(Failure.HTTP_REQUEST_FAILED, "response without a :status"))
            return
        if status < 200:  # RFC 9114 §4.1: interim responses come before the final one
            return
        self._step.mark("first_byte")
        self._step.details.update(
            status=status,
            headers={
                name: fields[name.encode()].decode("latin-1")
                for name in HEADERS_KEPT
                if name.encode() in fields
            },
        )
        if event.stream_ended:
            self._body.ended = True
            self._finish()

    def _check_close(self) -> None:
        close = self._watch.close
        if close is None or not self._live or self._done or self._error is not None:
            return
        self._step.details.update(
            closed_by="peer" if close.by_peer else "local",
            close_code=close.code,
            close_space="application" if close.application else "transport",
            close_reason=close.reason,
        )
        failure = _close_failure(close, handshake_done=self._step.details["handshake_done"])
        self._fail(ProtocolError(failure, close.describe()))

    def _finish(self) -> None:
        if not self._done and self._error is None:
            self._done = True
            self._step.mark("done")
            self._wakeup.set()

    def _fail(self, exc: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = exc
            self._wakeup.set()
