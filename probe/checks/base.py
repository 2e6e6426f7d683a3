"""What every check shares: the run context, the measured-step context manager, and the mapping of
exceptions to failure strings (in the manner of OONI's netxlite/classify.go)."""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from probe import __version__
from probe.allowlist import AllowList
from probe.errors import NotAllowedError
from probe.model import Failure, ProbeMeta, Record, Target, TargetRef, new_id
from probe.scrub import Scrubber

DEFAULT_TIMEOUT = 10.0
# A name no censor has reason to act on, for the neutral-SNI twin of each TLS check.
DEFAULT_NEUTRAL_SNI = "example.org"


@dataclass(slots=True)
class CheckContext:
    """Settings and shared state of one run, handed to every check."""

    run_id: str = field(default_factory=new_id)
    probe: ProbeMeta = field(default_factory=ProbeMeta)
    allow: AllowList = field(default_factory=AllowList)
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one check may take."""
    ca_file: str | None = None
    """Extra certificate authority bundle trusted for TLS and HTTPS (the lab's CA)."""
    resolver: str | None = None
    """An explicit DNS resolver address (``dns_udp`` check); None to skip that check."""
    doh_url: str | None = None
    """A DNS-over-HTTPS URL (``dns_doh`` check); None to skip that check."""
    neutral_sni: str = DEFAULT_NEUTRAL_SNI
    resolv_conf: str = "/etc/resolv.conf"
    """Where the system resolver's configuration is read from."""
    system_dns_port: int = 53
    """Port of the resolv.conf name servers (resolv.conf cannot say; test fakes use high ports)."""
    scrubber: Scrubber = field(default_factory=Scrubber)
    run_start: float = field(default_factory=time.monotonic)
    """Monotonic clock at the start of the run; ``t0`` of each record is relative to it."""
    reflector: str | None = None
    """The ringprobe reflector's address (an IP literal) for the call-shaped flows
    (``call_flow`` check, docs/callflow.md); None to plan none."""
    reflector_secret: bytes | None = field(default=None, repr=False)
    """The secret shared with the reflector, which MACs every request and echo."""
    call_duration: float = 10.0
    """Seconds each call-shaped flow sends for (probe.checks.call_flow.DEFAULT_DURATION; a test
    keeps the two equal)."""
    clock_offset: timedelta = timedelta(0)
    """Added to every wall-clock time the run writes (records' start_time, the manifest's
    started/ended): non-zero only for lab runs dated to a simulated day (``--lab-date``)."""
    call_profiles: tuple[str, ...] = ("voice",)
    """The call-flow profiles each app's call test runs, in order (probe.checks.call_flow
    PROFILES: voice, video)."""
    _ssl_contexts: dict[tuple[bool, tuple[str, ...]], ssl.SSLContext] = field(
        default_factory=dict, repr=False
    )

    def guard(self, address: str) -> None:
        """Refuse (NotAllowedError) before anything is sent to an address outside the allow-list."""
        self.allow.check(address)

    def note_local(self, sockname: Any) -> None:
        """Remember the local address a socket used, so the writer scrubs it."""
        if isinstance(sockname, tuple) and sockname:
            self.scrubber.add(str(sockname[0]))

    def ssl_context(self, *, verify: bool, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A client TLS context; ``verify=False`` for the neutral-SNI twin, whose name the
        server's certificate cannot match. Built once per run and kind (loading the system trust
        store costs tens of milliseconds of CPU); callers must not modify what they get."""
        key = (verify, alpn)
        cached = self._ssl_contexts.get(key)
        if cached is None:
            cached = self._ssl_contexts[key] = self._new_ssl_context(verify, alpn)
        return cached

    def _new_ssl_context(self, verify: bool, alpn: tuple[str, ...]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=None)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclass(slots=True)
class Step:
    """A measured step in progress: the check fills ``details``/``timings``; the context manager
    sets ``failure`` from whatever network exception ended the step."""

    ctx: CheckContext
    check: str
    target: Target
    address: str | None
    transaction_id: int
    timeout: float
    failure: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    _started_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    _started: float = field(default_factory=time.monotonic)
    _ended: float | None = None

    def since_start(self) -> float:
        """Seconds since the step began (for timings)."""
        return time.monotonic() - self._started

    def mark(self, name: str) -> None:
        """Record a named timing: seconds from the start of the step to now."""
        self.timings[name] = round(self.since_start(), 6)

    @property
    def record(self) -> Record:
        end = self._ended if self._ended is not None else time.monotonic()
        return Record(
            measurement_id=new_id(),
            run_id=self.ctx.run_id,
            start_time=(self._started_wall + self.ctx.clock_offset).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            runtime=round(end - self._started, 6),
            t0=round(self._started - self.ctx.run_start, 6),
            probe=self.ctx.probe,
            app=self.target.app,
            target=TargetRef.of(self.target, self.address),
            check=self.check,
            transaction_id=self.transaction_id,
            failure=self.failure,
            timings=dict(self.timings),
            details=dict(self.details),
            software_version=__version__,
        )


@asynccontextmanager
async def measured(
    ctx: CheckContext,
    check: str,
    target: Target,
    address: str | None,
    transaction_id: int,
    timeout: float | None = None,
) -> AsyncIterator[Step]:
    """Run the body under the check's timeout; turn network failures into ``step.failure``.

    The body's exception is swallowed when it is a network failure (OSError, TLS, timeout, the
    allow-list's refusal, a ProtocolError a check raised after translating a library's exception);
    anything else is a bug and propagates, as does cancellation.
    """
    step = Step(ctx, check, target, address, transaction_id, timeout or ctx.timeout)
    try:
        async with asyncio.timeout(step.timeout):
            yield step
    except NETWORK_ERRORS as exc:
        step.failure = classify(exc)
        step.details.setdefault("error", ctx.scrubber.scrub(_describe(exc)))
    finally:
        step._ended = time.monotonic()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ProtocolError(Exception):
    """A peer answered with bytes a check cannot use; the message says how. Raised inside a
    measured step and recorded, never escaping it."""

    def __init__(self, failure: str, message: str) -> None:
        self.failure = failure
        super().__init__(message)


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ssl.SSLError, ConnectionError, socket.gaierror
    TimeoutError,
    EOFError,
    NotAllowedError,
    ProtocolError,
    asyncio.IncompleteReadError,
)


_ERRNO_FAILURES = {
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ECONNRESET: Failure.CONNECTION_RESET,
    errno.ECONNABORTED: Failure.CONNECTION_ABORTED,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: Failure.GENERIC_TIMEOUT,
    errno.EPIPE: Failure.CONNECTION_RESET,
}


def classify(exc: BaseException) -> str:
    """Map an exception to a failure string; unknown ones become ``unknown_failure: ...``."""
    if isinstance(exc, ProtocolError):
        return exc.failure
    if isinstance(exc, NotAllowedError):
        return Failure.ADDRESS_NOT_ALLOWED
    if isinstance(exc, TimeoutError):
        return Failure.GENERIC_TIMEOUT
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _classify_certificate(exc)
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return Failure.EOF
    if isinstance(exc, ssl.SSLError):
        if "EOF" in str(exc) or "UNEXPECTED_EOF" in str(exc):
            return Failure.EOF
        return Failure.SSL_FAILED_HANDSHAKE
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return Failure.EOF
    if isinstance(exc, ConnectionResetError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return Failure.CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]
    return Failure.UNKNOWN_PREFIX + _describe(exc)


def _classify_certificate(exc: ssl.SSLCertVerificationError) -> str:
    # X509_V_ERR_* codes, OpenSSL include/openssl/x509_vfy.h
    code = getattr(exc, "verify_code", None)
    message = str(getattr(exc, "verify_message", "") or exc)
    if code == 62 or "hostname mismatch" in message.lower():  # X509_V_ERR_HOSTNAME_MISMATCH
        return Failure.SSL_INVALID_HOSTNAME
    if code in (2, 18, 19, 20, 21):  # unable to get issuer / self-signed / unknown local issuer
        return Failure.SSL_UNKNOWN_AUTHORITY
    return Failure.SSL_INVALID_CERTIFICATE
