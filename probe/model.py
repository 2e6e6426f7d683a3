"""Measurement records (schema v1) and the failure vocabulary.

One record per check per target, written as one JSON line. The JSON Schema that describes the
same shape lives in ``measurements/schema/ringprobe-record-v1.schema.json``; a test keeps the two in
step. Records are raw observations: they carry no verdict (the ``analysis`` package computes those).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

SCHEMA_VERSION: Final = 1

Vantage = Literal["volunteer", "baseline", "lab"]
VANTAGES: Final = ("volunteer", "baseline", "lab")

Role = Literal["signaling", "web", "relay", "reflector", "turn", "control"]
ROLES: Final = ("signaling", "web", "relay", "reflector", "turn", "control")

Transport = Literal["tcp", "udp"]
TRANSPORTS: Final = ("tcp", "udp")

# What a target normally answers when nothing interferes; it decides which checks the runner plans.
# "tcp": accepts a TCP connection; "tls": completes a TLS handshake; "https": serves an HTTPS GET;
# "mtproto": a Telegram data center, answers req_pq_multi with resPQ over obfuscated2 (TCP);
# "whatsapp": a WhatsApp chat server, answers the WA prologue with a ServerHello (TCP);
# "http3": serves an HTTP/3 GET over QUIC (UDP): a detail of reachability, never judged;
# call path (UDP; probe.checks.relay): "stun": answers a STUN Binding with success; "turn": that,
# and an unauthenticated Allocate with 401 and a realm; "wa_relay": answers WhatsApp's ping 0x0801
# with the pong 0x0802; "reflector": answers Telegram's 40-byte reflector hello; "echo": the
# ringprobe reflector, echoing call-shaped flows (docs/callflow.md);
# "unknown": informational only (analysis must not read its silence as interference).
EXPECTS: Final = (
    "tcp",
    "tls",
    "https",
    "mtproto",
    "whatsapp",
    "http3",
    "stun",
    "turn",
    "wa_relay",
    "reflector",
    "echo",
    "unknown",
)
# The expects a target on each transport may have (the catalog loader enforces it).
EXPECTS_BY_TRANSPORT: Final = {
    "tcp": ("tcp", "tls", "https", "mtproto", "whatsapp", "unknown"),
    "udp": ("http3", "stun", "turn", "wa_relay", "reflector", "echo", "unknown"),
}

APPS: Final = ("whatsapp", "telegram", "signal", "control")


class Failure:
    """Failure strings. Where OONI has a name for the same event we use OONI's
    (ooni/spec data-formats/df-007-errors.md), so our data joins theirs."""

    GENERIC_TIMEOUT = "generic_timeout_error"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_ABORTED = "connection_aborted"
    HOST_UNREACHABLE = "host_unreachable"
    NETWORK_UNREACHABLE = "network_unreachable"
    EOF = "eof_error"
    SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
    SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
    SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
    SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
    DNS_NXDOMAIN = "dns_nxdomain_error"
    DNS_NO_ANSWER = "dns_no_answer"
    DNS_REFUSED = "dns_refused_error"
    DNS_SERVFAIL = "dns_servfail_error"
    DNS_SERVER_MISBEHAVING = "dns_server_misbehaving"
    DNS_BOGON = "dns_bogon_error"
    HTTP_REQUEST_FAILED = "http_request_failed"
    # OONI's (netxlite): the server's QUIC Version Negotiation lists no version the client offered.
    QUIC_INCOMPATIBLE_VERSION = "quic_incompatible_version"
    # ringprobe's own, from probe.protocols.mtproto (the obfuscated2 transport raises the same
    # errors): the MTProto answer was wrong in the way each name says.
    MTPROTO_BAD_RESPONSE = "mtproto_bad_response"
    MTPROTO_NONCE_MISMATCH = "mtproto_nonce_mismatch"
    MTPROTO_TRANSPORT_ERROR = "mtproto_transport_error"
    MTPROTO_BAD_FRAMING = "mtproto_bad_framing"
    MTPROTO_BAD_INIT = "mtproto_bad_init"
    MTPROTO_BAD_REQUEST = "mtproto_bad_request"
    # ringprobe's own, from probe.protocols.whatsapp.
    WHATSAPP_BAD_FRAMING = "whatsapp_bad_framing"
    WHATSAPP_BAD_RESPONSE = "whatsapp_bad_response"
    WHATSAPP_BAD_PROLOGUE = "whatsapp_bad_prologue"
    # ringprobe's own, from probe.protocols.stun (the relay checks, probe.checks.relay): the
    # datagram is not STUN (bad header, no magic cookie), a malformed attribute, or a FINGERPRINT
    # that does not match (corrupted or rewritten on the way).
    STUN_BAD_HEADER = "stun_bad_header"
    STUN_BAD_COOKIE = "stun_bad_cookie"
    STUN_BAD_ATTRIBUTE = "stun_bad_attribute"
    STUN_BAD_FINGERPRINT = "stun_bad_fingerprint"
    # ringprobe's own (probe.checks.relay): a well-formed STUN response to our transaction that is
    # not the known answer (an error where success was due, another error code, a missing
    # attribute); the record's details say what came.
    STUN_BAD_RESPONSE = "stun_bad_response"
    # ringprobe's own, from probe.protocols.tgcalls (probe.checks.relay): a reflector's answer too
    # short for a tag, or a special packet too short for what it announces.
    REFLECTOR_BAD_REPLY = "reflector_bad_reply"
    # ringprobe's own, from probe.protocols.echo: datagrams came back, none a valid echo of ours.
    ECHO_BAD_DATAGRAM = "echo_bad_datagram"
    # ringprobe's own: the peer ended the QUIC connection with a CONNECTION_CLOSE (RFC 9000 §19.19)
    # that no OONI string names; the record's details say its code and reason (probe.checks.quic).
    QUIC_CONNECTION_CLOSED = "quic_connection_closed"
    # ringprobe's own (probe.checks.trace): a trace hears routers' ICMP errors on a raw socket,
    # which needs root or CAP_NET_RAW; without it nothing was sent.
    RAW_SOCKET_NOT_PERMITTED = "raw_socket_not_permitted"
    # ringprobe's own: the allow-list refused the address, so nothing was sent.
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    # ringprobe's own: the run's deadline or an interruption ended the check before it finished.
    INTERRUPTED = "interrupted"
    # OONI's prefix for anything not classified; the rest of the string says what it was.
    UNKNOWN_PREFIX = "unknown_failure: "


KNOWN_FAILURES: Final = frozenset(
    value for name, value in vars(Failure).items() if name.isupper() and name != "UNKNOWN_PREFIX"
)


def is_known_failure(value: str) -> bool:
    """True for a failure string from the vocabulary, including ``unknown_failure: ...``."""
    return value in KNOWN_FAILURES or value.startswith(Failure.UNKNOWN_PREFIX)


@dataclass(slots=True, frozen=True)
class ProbeMeta:
    """Where a run was made from; never the volunteer's address."""

    cc: str = "ZZ"
    """ISO 3166 country code, ZZ when unknown (OONI's convention)."""
    asn: str = "AS0"
    """Autonomous system of the network, AS0 when unknown (OONI's convention)."""
    network_type: str = "unknown"
    """wifi, mobile, wired, or unknown."""
    vantage: Vantage = "volunteer"
    """volunteer: a person's network; baseline: a scheduled uncensored vantage; lab: emulated."""


@dataclass(slots=True, frozen=True)
class Target:
    """One endpoint of the catalog: what to contact and what it normally answers."""

    id: str
    """Unique within a catalog, e.g. ``wa-e1-443``."""
    app: str
    """whatsapp, telegram, signal or control."""
    role: Role
    """signaling, web, relay, reflector, turn or control."""
    port: int
    """Destination port."""
    transport: Transport
    """tcp or udp."""
    expect: str
    """What the target answers when nothing interferes (see EXPECTS)."""
    source: str
    """Where we learned of this endpoint (URL or document)."""
    date: str
    """When the source was checked, YYYY-MM-DD."""
    host: str | None = None
    """Host name, resolved at run time; None for address-only targets."""
    address: str | None = None
    """Fixed address; when both host and address are given, the address is contacted and the host
    is still resolved (so DNS tampering shows)."""
    path: str = "/"
    """Path of the HTTPS or HTTP/3 GET for ``expect = "https"`` and ``"http3"`` targets."""
    dc: int | None = None
    """Telegram data center id, sent in the obfuscated2 init (``expect = "mtproto"`` only)."""
    note: str = ""
    """Free text for humans."""


@dataclass(slots=True, frozen=True)
class TargetRef:
    """The target as a record stores it: the catalog entry plus the address actually contacted."""

    id: str
    role: str
    host: str | None
    address: str | None
    port: int
    transport: str
    expect: str

    @classmethod
    def of(cls, target: Target, address: str | None) -> TargetRef:
        return cls(
            id=target.id,
            role=target.role,
            host=target.host,
            address=address,
            port=target.port,
            transport=target.transport,
            expect=target.expect,
        )


@dataclass(slots=True)
class Record:
    """One check against one target: the unit ringprobe writes, uploads and analyses."""

    measurement_id: str
    """Unique id of this record (UUID4 hex)."""
    run_id: str
    """Shared by every record of one ``ringprobe run``."""
    start_time: str
    """UTC start of the check, ISO 8601 with microseconds and ``Z``."""
    runtime: float
    """Seconds the check took."""
    t0: float
    """Seconds from the start of the run to the start of the check."""
    probe: ProbeMeta
    """Vantage metadata."""
    app: str
    """App whose endpoint was checked."""
    target: TargetRef
    """What was contacted."""
    check: str
    """Check name: dns_system, dns_udp, dns_doh, tcp_connect, tls_handshake, http_get, ..."""
    transaction_id: int
    """Links the DNS, TCP, TLS and HTTP steps made for one target in one run."""
    failure: str | None
    """None on success, else a failure string (see Failure)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Named durations in seconds (connect, handshake, first_byte, ...)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Check-specific observations (answers, TLS version, bytes, ...)."""
    software_name: str = "ringprobe"
    """Always ringprobe."""
    software_version: str = ""
    """Version of the probe that made the record."""
    schema_version: int = SCHEMA_VERSION
    """Version of this record format."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON, keys sorted so equal records serialise equally."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


def new_id() -> str:
    """A random identifier for runs and records (UUID4, hex)."""
    return uuid.uuid4().hex
