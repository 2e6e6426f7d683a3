"""The flat table researchers work with: one row per record, these columns, these dtypes.

``analysis.load`` (ringprobe records) and ``analysis.load_ooni`` (OONI measurements) both return
exactly these columns in this order, so the two sources concatenate. Repeated strings are
categoricals; absent values are NA. Detail columns are lifted out of each record's ``details``
where the verdict rules need them (the ``trace_*`` columns: the figures of ``trace`` records, where
on the path a trigger met interference); ``call_flow`` records keep their whole ``details`` (nested
per-bin counts) as JSON in column ``call_flow``; the rest of ``details`` is kept only on request
(``keep_details=True``, column ``details`` as a JSON string).
"""

from __future__ import annotations

from typing import Final

# name -> (pandas dtype, meaning). Order is the column order of every loaded frame.
COLUMNS: Final[dict[str, tuple[str, str]]] = {
    "source": ("category", "ringprobe or ooni: where the row came from"),
    "source_file": ("category", "file the row was read from"),
    "measurement_id": ("string", "unique id of the record (OONI: uid, or report id + index)"),
    "run_id": ("category", "one probe run (OONI: one measurement)"),
    "schema_version": ("Int16", "record schema version (NA for OONI)"),
    "software_version": ("category", "probe software and version"),
    "start_time": ("datetime64[ns, UTC]", "UTC start of the check (OONI: of the measurement)"),
    "runtime": ("float64", "seconds the check took"),
    "t0": ("float64", "seconds from the run's start to the check's"),
    "probe_cc": ("category", "country code, ZZ when unknown"),
    "probe_asn": ("category", "network, AS0 when unknown"),
    "probe_network_type": ("category", "wifi, mobile, wired, unknown"),
    "vantage": ("category", "volunteer, baseline, lab (OONI rows: ooni)"),
    "app": ("category", "whatsapp, telegram, signal, control"),
    "target_id": ("category", "catalog id of the target (OONI: ooni:<host-or-ip>:<port>)"),
    "role": ("category", "signaling, web, relay, reflector, turn, control"),
    "host": ("category", "host name, NA for address-only targets"),
    "address": ("category", "address contacted, NA when none was"),
    "port": ("Int32", "destination port"),
    "transport": ("category", "tcp or udp"),
    "expect": ("category", "what the target normally answers: tcp, tls, https, unknown"),
    "check": ("category", "dns_system, dns_doh, tcp_connect, tls_handshake, http_get, ..."),
    "transaction_id": ("Int64", "links the DNS, TCP, TLS, HTTP steps of one target in one run"),
    "failure": ("category", "failure string, NA on success"),
    "ok": ("bool", "the check succeeded (failure is NA)"),
    "t_connect": ("float64", "timings.connect, seconds"),
    "t_handshake": ("float64", "timings.handshake, seconds"),
    "t_first_byte": ("float64", "timings.first_byte, seconds"),
    "t_done": ("float64", "timings.done, seconds"),
    "resolver": ("category", "DNS checks: system, udp, doh"),
    "dns_addresses": ("string", "DNS checks: answered addresses, space separated"),
    "dns_bogus": ("Int16", "DNS checks: how many answered addresses are bogons"),
    "dns_consistent": ("boolean", "DNS: agrees with the other resolvers (NA: none to compare)"),
    "address_source": ("category", "tcp_connect: catalog, system, udp, doh"),
    "sni_kind": ("category", "tls_handshake, http_get: real or neutral"),
    "tls_version": ("category", "tls_handshake: negotiated version"),
    "http_status": ("Int16", "http_get: status code"),
    "body_bytes": ("Int64", "http_get: body bytes read"),
    "throughput_bps": ("float64", "http_get: body bits per second"),
    "deadline_cut": ("boolean", "the run's deadline cut the check short"),
    "trace_trigger": ("category", "trace: the payload traced (tls, whatsapp, stun, call)"),
    "trace_control": ("boolean", "trace: the record is the control's trace (neutral content)"),
    "trace_interference": (
        "category",
        "trace: how the probes met interference (rst, drop, fin, reject; NA: they did not)",
    ),
    "trace_localized_hop": (
        "float64",
        "trace: TTL of the last router before the interference (0: before the first; NA: none)",
    ),
    "trace_localized_address": (
        "category",
        "trace: that router's address (NA: none, or the router did not say)",
    ),
    "call_flow": (
        "string",
        "call_flow records: their details as JSON (flow, per-bin counts, totals; "
        "docs/callflow.md); NA for other checks and for OONI rows",
    ),
    "details": ("string", "the record's details as JSON; only with keep_details=True, else NA"),
}

__all__ = ["COLUMNS"]
