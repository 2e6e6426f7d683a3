"""Import OONI measurements of WhatsApp, Telegram and Signal into ringprobe's table.

OONI's messenger tests (ooni/spec nettests/ts-018-whatsapp.md, ts-020-telegram.md,
ts-029-signal.md) record what ringprobe's signaling checks record: DNS lookups, TCP connects, TLS
handshakes and HTTP requests. ``load_ooni`` maps each of those to one row of
``analysis.columns`` (``source="ooni"``, ``vantage="ooni"``), so OONI's history and ringprobe's
runs go through the same verdict rules. ``ooni_verdicts`` keeps OONI's own per-test conclusions
for comparison.

Mapping choices:

- DNS: OONI writes one entry per query type (A, AAAA). Consecutive entries for the same host name
  and resolver are one lookup, as ringprobe's DNS check is: one ``dns_*`` row whose addresses are
  all answers; it failed only if every query failed (an AAAA ``dns_no_answer`` next to a good A is
  not a failure). DNS rows have no port: target_id is ``ooni:<host>``.
- TCP connect rows carry the address; the host is filled in when exactly one name of the same
  measurement resolved to it. Roles: WhatsApp e*/g.whatsapp.net signaling, web.whatsapp.com and
  v.whatsapp.net web; Telegram DC addresses signaling, web.telegram.org web; Signal hosts
  signaling, cdn*.signal.org web. An address no rule places has no role (NA).
- ``expect``: ``https`` where OONI fetches ``https://`` (web endpoints on 443, all of Signal),
  ``tcp`` elsewhere (WhatsApp chat endpoints, Telegram DCs, plain-HTTP port 80).
- Old reports without ``request.url`` (telegram_nourl.json, 2019): host and port come from the
  Host header; an address without a port was a DC POST over plain HTTP (port 80); a name without a
  port has an unknown scheme, so its port is NA and its target_id ``ooni:<host>``.
- Timings: OONI's ``t`` is when an operation ended (df-005-tcpconnect); ``t0`` and ``runtime`` are
  filled only when the entry also has ``t0`` (newer probes), else NaN.

Damaged input: a path that does not exist or matches nothing raises LoadError; a file or line
that is not JSON, a measurement without ``test_name``, and measurements of other tests are skipped
with a LoadWarning (one per file and test name), and the rest loads.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Final
from urllib.parse import urlsplit

import pandas as pd

from analysis.columns import COLUMNS
from analysis.errors import warn_load
from analysis.load import (
    MANIFEST_SUFFIX,
    Paths,
    build_frame,
    drop_truncated_tail,
    read_bytes,
    resolve_paths,
)

OONI_SUFFIXES: Final = (".json", ".jsonl", ".jsonl.gz")
APPS: Final = ("whatsapp", "telegram", "signal")

# ts-020-telegram "Telegram access points check" (plus 95.161.76.100, in the spec's example output).
TELEGRAM_DCS: Final = frozenset(
    {
        "149.154.175.50",
        "149.154.167.51",
        "149.154.175.100",
        "149.154.167.91",
        "149.154.171.5",
        "95.161.76.100",
    }
)
# ts-018-whatsapp "WhatsApp endpoints check": e1..e16.whatsapp.net are the chat endpoints.
_WA_SIGNALING = re.compile(r"^(e[0-9]+|g)\.whatsapp\.net$")
_WA_WEB: Final = frozenset({"web.whatsapp.com", "v.whatsapp.net"})
_TG_WEB = re.compile(r"^(.+\.)?web\.telegram\.org$")
# ts-029-signal endpoints: cdn and cdn2 serve attachments (web), the rest is the service backend.
_SIGNAL_WEB = re.compile(r"^cdn[0-9]*\.signal\.org$")

# OONI DNS engine -> (ringprobe check, resolver); df-002-dnst "engine".
_ENGINES: Final = {
    "system": ("dns_system", "system"),
    "getaddrinfo": ("dns_system", "system"),
    "go": ("dns_system", "system"),
    "udp": ("dns_udp", "udp"),
    "doh": ("dns_doh", "doh"),
}

# OONI's own conclusions: the "Semantics" keys of ts-018-whatsapp, ts-020-telegram, ts-029-signal.
VERDICT_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "whatsapp": (
        "whatsapp_endpoints_status",
        "whatsapp_endpoints_blocked",
        "whatsapp_web_status",
        "whatsapp_web_failure",
        "registration_server_status",
        "registration_server_failure",
    ),
    "telegram": (
        "telegram_tcp_blocking",
        "telegram_http_blocking",
        "telegram_web_status",
        "telegram_web_failure",
    ),
    "signal": ("signal_backend_status", "signal_backend_failure"),
}
_BOOL_KEYS: Final = frozenset({"telegram_tcp_blocking", "telegram_http_blocking"})


# --- reading -------------------------------------------------------------------------------------


def _documents(path: str) -> Iterator[tuple[int | None, Any]]:
    """(line number or None, parsed JSON) for each measurement of one file."""
    data = read_bytes(path)
    name = path.lower()
    if name.endswith(".json") and not name.endswith(MANIFEST_SUFFIX):
        try:
            yield None, json.loads(data)
        except ValueError as exc:
            warn_load(f"{path}: not a JSON document ({exc}); skipped")
        return
    data = drop_truncated_tail(path, data)
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            warn_load(f"{path}, line {number}: malformed JSON ({exc}); skipped")


def _measurements(paths: Paths) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, measurement) for every messenger measurement; everything else is warned about."""
    for path in resolve_paths(paths, OONI_SUFFIXES, exclude=(MANIFEST_SUFFIX,)):
        others: dict[str, int] = {}
        for number, doc in _documents(path):
            where = path if number is None else f"{path}, line {number}"
            test_name = doc.get("test_name") if isinstance(doc, dict) else None
            if not isinstance(test_name, str) or not isinstance(doc.get("test_keys"), dict):
                warn_load(f"{where}: not an OONI measurement (no test_name or test_keys); skipped")
            elif test_name not in APPS:
                others[test_name] = others.get(test_name, 0) + 1
            else:
                yield path, doc
        for test_name, count in others.items():
            warn_load(
                f"{path}: {count} measurement(s) of OONI test {test_name!r} skipped "
                f"(only {', '.join(APPS)} are imported)"
            )


def run_id(msmt: dict[str, Any]) -> str:
    """OONI's measurement uid when present; else report id, input and start time, which name
    one measurement and are stable across reloads."""
    for key in ("measurement_uid", "uid"):
        if msmt.get(key):
            return str(msmt[key])
    # df-000-base: report_id names a report; input and measurement_start_time one measurement in it.
    parts = (msmt.get("report_id"), msmt.get("input"), msmt.get("measurement_start_time"))
    return "|".join("" if p is None else str(p) for p in parts)


# --- roles and endpoints -------------------------------------------------------------------------


def role_of(app: str, host: str | None, address: str | None) -> str | None:
    """The ringprobe role of an OONI endpoint, None when no rule places it."""
    if host is not None:
        host = host.lower().rstrip(".")
        if app == "whatsapp":
            if _WA_SIGNALING.match(host):
                return "signaling"
            if host in _WA_WEB:
                return "web"
        elif app == "telegram":
            if _TG_WEB.match(host):
                return "web"
        elif app == "signal":
            return "web" if _SIGNAL_WEB.match(host) else "signaling"
    if app == "telegram" and (address in TELEGRAM_DCS or host in TELEGRAM_DCS):
        return "signaling"
    return None


def expect_of(app: str, role: str | None, port: int | None) -> str:
    """What the endpoint answers when nothing interferes, as far as OONI's test exercises it."""
    https = app == "signal" or role == "web"
    if https and port in (None, 443):
        return "https"
    return "tcp"


def target_id(host_or_ip: str | None, port: int | None) -> str | None:
    if host_or_ip is None:
        return None
    return f"ooni:{host_or_ip}" if port is None else f"ooni:{host_or_ip}:{port}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address into (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port) if port.isdigit() else None
    return text, None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _answer_address(answer: dict[str, Any]) -> str | None:
    # df-002-dnst: an answer holds ipv4, ipv6 or hostname (CNAME) by answer_type.
    value = answer.get("ipv4") or answer.get("ipv6")
    return str(value) if value else None


def _body_bytes(response: dict[str, Any]) -> int | None:
    """Bytes of the response body OONI kept: a string, or {"format": "base64", "data": ...}
    (df-001-httpt "MaybeBinaryValue")."""
    body = response.get("body")
    if isinstance(body, str):
        return len(body.encode("utf-8", "surrogatepass"))
    if isinstance(body, dict) and body.get("format") == "base64":
        try:
            return len(base64.b64decode(str(body.get("data", "")), validate=False))
        except (binascii.Error, ValueError):
            return None
    return None


# --- rows ----------------------------------------------------------------------------------------


class _Rows:
    """Column lists being filled one row at a time (OONI entries are nested lists of dicts)."""

    def __init__(self, keep_details: bool) -> None:
        self.keep_details = keep_details
        self.columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self.n = 0

    def add(self, values: dict[str, Any], details: Any) -> None:
        if self.keep_details:
            values["details"] = json.dumps(details, sort_keys=True, default=str)
        for name, column in self.columns.items():
            column.append(values.get(name))
        self.n += 1


def _common(path: str, msmt: dict[str, Any], app: str) -> dict[str, Any]:
    annotations = msmt.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    software = " ".join(str(msmt[k]) for k in ("software_name", "software_version") if msmt.get(k))
    return {
        "source": "ooni",
        "source_file": path,
        "run_id": run_id(msmt),
        "software_version": software or None,
        "start_time": _str(msmt.get("measurement_start_time")),
        "probe_cc": _str(msmt.get("probe_cc")) or "ZZ",
        "probe_asn": _str(msmt.get("probe_asn")) or "AS0",
        "probe_network_type": _str(annotations.get("network_type")) or "unknown",
        "vantage": "ooni",
        "app": app,
        "transport": "tcp",
    }


def _timing(entries: list[dict[str, Any]]) -> dict[str, Any]:
    starts = [e["t0"] for e in entries if isinstance(e.get("t0"), int | float)]
    ends = [e["t"] for e in entries if isinstance(e.get("t"), int | float)]
    if not starts or not ends:
        return {}
    return {"t0": min(starts), "runtime": max(ends) - min(starts)}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list field (a nullable list in every OONI data format)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _failure(value: Any) -> str | None:
    return str(value) if value else None


def _str(value: Any) -> str | None:
    """A non-empty string field, else None (OONI writes "" and null for absent)."""
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dns_groups(queries: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """Consecutive queries for one name and resolver, each type once: one lookup each."""

    def lookup(query: dict[str, Any]) -> tuple[str | None, ...]:
        return tuple(_str(query.get(k)) for k in ("hostname", "engine", "resolver_address"))

    groups: list[tuple[int, list[dict[str, Any]]]] = []
    for index, query in enumerate(queries):
        if groups:
            last = groups[-1][1]
            types = {_str(q.get("query_type")) for q in last}
            if lookup(last[0]) == lookup(query) and _str(query.get("query_type")) not in types:
                last.append(query)
                continue
        groups.append((index, [query]))
    return groups


def _rows_of(rows: _Rows, path: str, msmt: dict[str, Any], is_bogon: Callable[[str], bool]) -> None:
    app = str(msmt["test_name"])
    tk: dict[str, Any] = msmt["test_keys"]
    common = _common(path, msmt, app)
    rid = common["run_id"]

    def add(kind: str, index: int, values: dict[str, Any], details: Any) -> None:
        values.update(common)
        values["measurement_id"] = f"{rid}/{kind}/{index}"
        values["ok"] = values.get("failure") is None
        values.setdefault("expect", expect_of(app, values.get("role"), values.get("port")))
        rows.add(values, details)

    # df-002-dnst Query: hostname, query_type, engine, resolver_address, failure, answers.
    queries = _dicts(tk.get("queries"))
    names_of: dict[str, set[str]] = {}
    for index, group in _dns_groups(queries):
        host = _str(group[0].get("hostname"))
        addresses: list[str] = []
        for query in group:
            for answer in _dicts(query.get("answers")):
                address = _answer_address(answer)
                if address is not None and address not in addresses:
                    addresses.append(address)
                    if host:
                        names_of.setdefault(address, set()).add(host)
        failed = all(q.get("failure") for q in group)
        check, resolver = _ENGINES.get(_str(group[0].get("engine")) or "", ("dns_system", "system"))
        role = role_of(app, host, None)
        add(
            "queries",
            index,
            {
                "target_id": target_id(host, None),
                "role": role,
                "host": host,
                "check": check,
                "failure": _failure(group[0].get("failure")) if failed else None,
                "resolver": resolver,
                # df-002-dnst: transaction_id (optional, newer probes) links the steps.
                "transaction_id": _int(group[0].get("transaction_id")),
                "dns_addresses": " ".join(addresses),
                "dns_bogus": sum(1 for a in addresses if is_bogon(a)),
                **_timing(group),
            },
            {"queries": group},
        )

    def host_of(address: str | None) -> str | None:
        names = names_of.get(address or "", set())
        return next(iter(names)) if len(names) == 1 else None

    def role_at(address: str | None) -> str | None:
        # An address several names resolved to takes their common role, if they agree.
        roles = {role_of(app, name, address) for name in names_of.get(address or "", set())}
        return roles.pop() if len(roles) == 1 else role_of(app, None, address)

    for index, entry in enumerate(_dicts(tk.get("tcp_connect"))):
        ip = _str(entry.get("ip"))
        port = _int(entry.get("port"))
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        # df-005-tcpconnect Status: success true iff failure is null.
        failure = _failure((status or {}).get("failure"))
        if failure is None and (status or {}).get("success") is False:
            failure = "unknown_failure: success false without a failure string"
        timing = _timing([entry])
        add(
            "tcp_connect",
            index,
            {
                "target_id": target_id(ip, port),
                "role": role_at(ip),
                "host": host_of(ip),
                "address": ip,
                "port": port,
                "check": "tcp_connect",
                "transaction_id": _int(entry.get("transaction_id")),
                "failure": failure,
                "t_connect": timing.get("runtime"),
                **timing,
            },
            entry,
        )

    # df-006-tlshandshake: address ("ip:port", absent in older probes), server_name, tls_version.
    for index, entry in enumerate(_dicts(tk.get("tls_handshakes"))):
        server_name = _str(entry.get("server_name"))
        address, port = _split_hostport(_str(entry.get("address")) or "")
        port = port if port is not None else 443
        timing = _timing([entry])
        role = role_of(app, server_name, address or None) or role_at(address or None)
        add(
            "tls_handshakes",
            index,
            {
                "target_id": target_id(server_name or address or None, port),
                "role": role,
                "host": server_name,
                "address": address or None,
                "port": port,
                "check": "tls_handshake",
                "transaction_id": _int(entry.get("transaction_id")),
                "failure": _failure(entry.get("failure")),
                # df-006-tlshandshake: the SNI OONI sent is the real server name.
                "sni_kind": "real" if server_name else None,
                "tls_version": _str(entry.get("tls_version")),
                "t_handshake": timing.get("runtime"),
                **timing,
            },
            {k: v for k, v in entry.items() if k != "peer_certificates"},
        )

    # df-001-httpt Transaction: request.url (absent in 2019 reports), response.code, failure.
    for index, entry in enumerate(_dicts(tk.get("requests"))):
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
        host, port, https = _request_endpoint(request or {})
        failure = _failure(entry.get("failure"))
        code = _int((response or {}).get("code"))
        timing = _timing([entry])
        address = host if host is not None and _is_ip(host) else None
        role = role_of(app, None if address else host, address)
        add(
            "requests",
            index,
            {
                "target_id": target_id(host, port),
                "role": role,
                "host": None if address else host,
                "address": address,
                "port": port,
                "check": "http_get",
                "transaction_id": _int(entry.get("transaction_id")),
                "failure": failure,
                "sni_kind": "real" if https else None,
                # df-001-httpt: code 0 means no response was received.
                "http_status": code if code is not None and code > 0 else None,
                "body_bytes": _body_bytes(response or {}),
                # A plain-HTTP endpoint is only known to accept TCP (EXPECTS has no "http").
                "expect": "https" if https else "tcp",
                **timing,
            },
            entry,
        )


def _request_endpoint(request: dict[str, Any]) -> tuple[str | None, int | None, bool]:
    """(host, port, is https) of an OONI request, from its URL or, in old reports, Host."""
    url = request.get("url")
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        https = parts.scheme == "https"
        return parts.hostname or None, port or (443 if https else 80), https
    headers = request.get("headers") if isinstance(request.get("headers"), dict) else {}
    host_header = next(
        (str(v) for k, v in (headers or {}).items() if str(k).lower() == "host"), None
    )
    if host_header is None:
        return None, None, False
    host, port = _split_hostport(host_header)
    if port is None and _is_ip(host):
        port = 80  # ts-020: the DC requests without a port are plain-HTTP POSTs
    return host, port, False


# --- public --------------------------------------------------------------------------------------


def load_ooni(paths: Paths, *, keep_details: bool = False) -> pd.DataFrame:
    """Load OONI whatsapp, telegram and signal measurements into ringprobe's table.

    ``paths``: files (``*.json`` holding one measurement, ``*.jsonl`` / ``*.jsonl.gz`` holding
    one per line, as OONI publishes them), directories (walked recursively) or glob patterns.
    Measurements of other tests, and unreadable documents or lines, are skipped with a
    LoadWarning; a path that does not exist or matches nothing raises LoadError.
    ``keep_details=True`` keeps each OONI entry as JSON in ``details`` (certificates dropped).
    """
    # Lazy: the probe's bogon list is the one rule for "bogus" (no copy), and it pulls in the
    # probe's network stack, which a plain ``import analysis`` should not.
    from probe.checks.dns import is_bogon

    rows = _Rows(keep_details)
    for path, msmt in _measurements(paths):
        _rows_of(rows, path, msmt, is_bogon)
    return build_frame(rows.columns, rows.n)


def ooni_verdicts(paths: Paths) -> pd.DataFrame:
    """One row per messenger measurement with OONI's own conclusions, for comparison with
    ringprobe's verdicts: run_id (as in ``load_ooni``), app, source_file, probe_cc, probe_asn,
    start_time, software_version, test_version, then every key of ``VERDICT_KEYS`` (NA where
    the test does not write it; ``whatsapp_endpoints_blocked`` joined by spaces, empty when the
    list is).

    These are the probe's keys, not OONI's published anomaly flags: the fastpath
    (ooni/backend fastpath/fastpath/core.py) recomputes those. score_measurement_whatsapp looks
    only at request failures of https://web.whatsapp.com/ and the registration URL plus
    tcp_connect successes (so an HTTP 400 that sets whatsapp_web_status "blocked" is no anomaly
    there); score_measurement_telegram ignores the probe's *_blocking keys and treats a request
    without a URL as a failed measurement; score_signal discards test_version < 0.2.2 after
    2022-10-19 (a Signal CA change, ooni/probe#2344) and other known-broken versions.
    """
    keys = [key for app in APPS for key in VERDICT_KEYS[app]]
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "run_id",
            "app",
            "source_file",
            "probe_cc",
            "probe_asn",
            "start_time",
            "software_version",
            "test_version",
            *keys,
        )
    }
    for path, msmt in _measurements(paths):
        app = str(msmt["test_name"])
        tk: dict[str, Any] = msmt["test_keys"]
        common = _common(path, msmt, app)
        row: dict[str, Any] = {
            name: common.get(name)
            for name in ("run_id", "app", "source_file", "probe_cc", "probe_asn")
        }
        row["start_time"] = common["start_time"]
        row["software_version"] = common["software_version"]
        row["test_version"] = msmt.get("test_version")
        for key in VERDICT_KEYS[app]:
            value = tk.get(key)
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            row[key] = value
        for name, column in columns.items():
            column.append(row.get(name))
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "start_time":
            text = pd.Series(values, dtype=object)
            stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            data[name] = stamps.astype("datetime64[ns, UTC]")
        elif name == "run_id":
            data[name] = pd.Series(values, dtype="string")
        elif name in _BOOL_KEYS:
            data[name] = pd.Series(values, dtype="boolean")
        else:
            data[name] = pd.Series(pd.Categorical(values))
    return pd.DataFrame(data, index=pd.RangeIndex(len(columns["run_id"])))


__all__ = [
    "APPS",
    "TELEGRAM_DCS",
    "VERDICT_KEYS",
    "expect_of",
    "load_ooni",
    "ooni_verdicts",
    "role_of",
    "run_id",
]
