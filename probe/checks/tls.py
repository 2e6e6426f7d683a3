"""The ``tls_handshake`` check: a TLS handshake over a fresh TCP connection, with the real SNI or a
neutral one.

The pair tells whether the name triggers interference: with ``sni_kind="real"`` the SNI is the
target's host and the certificate is verified; with ``"neutral"`` the SNI is ``ctx.neutral_sni`` and
nothing is verified (the server's certificate cannot match that name), so only the name differs.

details: ``sni``, ``sni_kind``; after a handshake ``tls_version``, ``cipher``, ``alpn`` and the peer
certificate's ``cert_subject_cn``, ``cert_issuer_cn``, ``cert_san``, ``cert_not_after`` (ISO 8601),
``cert_sha256``. timings: ``connect``, ``handshake``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from typing import Any, Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from probe.checks.base import CheckContext, ProtocolError, measured
from probe.model import Failure, Record, Target

CHECK = "tls_handshake"
SNI_KINDS: Final = ("real", "neutral")
# What a browser offers; a censor may treat an h2 ClientHello differently from a bare one.
ALPN_OFFER: Final = ("h2", "http/1.1")
# Seconds the peer gets to answer our close_notify before the connection is dropped: the
# handshake is the measurement, the goodbye is courtesy.
CLOSE_GRACE: Final = 0.5
# Seconds of the check's timeout kept back so that the hang-up ends before the timeout does.
_CLOSE_MARGIN: Final = 0.05

__all__ = [
    "ALPN_OFFER",
    "CHECK",
    "CLOSE_GRACE",
    "SNI_KINDS",
    "certificate_summary",
    "is_handshake_eof",
    "session_details",
    "sni_for",
    "tls_handshake",
    "upgrade",
]


def sni_for(ctx: CheckContext, target: Target, sni_kind: str) -> str:
    """The server name a check of this kind sends; ValueError for a check that cannot be made."""
    if sni_kind == "neutral":
        return ctx.neutral_sni
    if sni_kind != "real":
        raise ValueError(f"sni_kind must be one of {SNI_KINDS}, not {sni_kind!r}")
    if target.host is None:
        raise ValueError(f"target {target.id!r} has no host to send as the real SNI")
    return target.host


def is_handshake_eof(exc: BaseException) -> bool:
    """True when asyncio reports the peer's EOF during a TLS handshake: CPython's
    Lib/asyncio/sslproto.py (eof_received) raises a bare ConnectionResetError, with no errno,
    where a real RST carries ECONNRESET."""
    return isinstance(exc, ConnectionResetError) and exc.errno is None


class _Held(asyncio.Protocol):
    """Holds the connection through the handshake; the check reads no application data."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def tls_handshake(
    ctx: CheckContext, target: Target, address: str, transaction_id: int, *, sni_kind: str
) -> Record:
    """Connect to ``address:target.port`` and complete a TLS handshake (see module docstring)."""
    sni = sni_for(ctx, target, sni_kind)
    ssl_context = ctx.ssl_context(verify=sni_kind == "real", alpn=ALPN_OFFER)
    loop = asyncio.get_running_loop()
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        step.details.update(sni=sni, sni_kind=sni_kind)
        ctx.guard(address)  # before any socket exists: a refused address sees no SYN
        raw, held = await loop.create_connection(_Held, address, target.port)
        step.mark("connect")
        ctx.note_local(raw.get_extra_info("sockname"))
        tls = await upgrade(raw, held, ssl_context, sni)
        step.mark("handshake")
        try:
            step.details.update(session_details(tls.get_extra_info("ssl_object")))
        finally:
            await _hang_up(tls, held, step.timeout - step.since_start() - _CLOSE_MARGIN)
    return step.record


async def upgrade(
    raw: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    ssl_context: ssl.SSLContext,
    sni: str,
) -> asyncio.Transport:
    """The TLS handshake over a connected transport, with ``sni``: the TLS transport, or the
    failure a record should store (an EOF mid-handshake is ``eof_error``, as OONI names it)."""
    loop = asyncio.get_running_loop()
    try:
        tls = await loop.start_tls(
            raw, protocol, ssl_context, server_hostname=sni, ssl_shutdown_timeout=CLOSE_GRACE
        )
    except BaseException as exc:
        raw.close()  # start_tls closes it on most failures; a second close is a no-op
        if is_handshake_eof(exc):
            raise ProtocolError(Failure.EOF, "EOF during the TLS handshake") from exc
        raise
    if tls is None:  # typeshed allows it; CPython returns a transport or raises
        raw.close()
        raise ProtocolError(Failure.SSL_FAILED_HANDSHAKE, "start_tls returned no transport")
    return tls


async def _hang_up(tls: asyncio.Transport, held: _Held, budget: float) -> None:
    """Send close_notify and let the peer answer within ``budget`` seconds (CLOSE_GRACE at most),
    then drop the link: a slow goodbye must not turn a completed handshake into a timeout."""
    tls.close()
    await asyncio.wait([held.closed], timeout=max(0.0, budget))
    if not held.closed.done():
        tls.abort()
        await held.closed  # connection_lost follows abort within two turns of the loop


def session_details(ssl_object: Any) -> dict[str, Any]:
    """Version, cipher, ALPN and the peer certificate of an established TLS session."""
    if not hasattr(ssl_object, "version"):
        return {}
    cipher = ssl_object.cipher()
    details: dict[str, Any] = {
        "tls_version": ssl_object.version(),
        "cipher": cipher[0] if cipher else None,
        "alpn": ssl_object.selected_alpn_protocol(),
    }
    # Only the DER form is given when the certificate was not verified (the neutral twin).
    details.update(certificate_summary(ssl_object.getpeercert(binary_form=True)))
    return details


def certificate_summary(der: bytes | None) -> dict[str, Any]:
    """A few fields of a DER certificate; only the fingerprint when it does not parse."""
    if not der:
        return {}
    summary: dict[str, Any] = {"cert_sha256": hashlib.sha256(der).hexdigest()}
    try:
        cert = x509.load_der_x509_certificate(der)
        summary["cert_subject_cn"] = _common_name(cert.subject)
        summary["cert_issuer_cn"] = _common_name(cert.issuer)
        summary["cert_not_after"] = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        summary["cert_san"] = _subject_alt_names(cert)
    except ValueError:  # a peer's malformed certificate is an observation, not our bug
        summary["cert_unparsed"] = True
    return summary


def _common_name(name: x509.Name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _subject_alt_names(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(extension.value.get_values_for_type(x509.DNSName))
    names.extend(str(ip) for ip in extension.value.get_values_for_type(x509.IPAddress))
    return names
