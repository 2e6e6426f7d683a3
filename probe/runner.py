"""Plan checks from the catalog, run them concurrently under limits and deadlines, stream records.

For each target the runner makes one *transaction* (one transaction id): resolve the host with every
configured resolver, pick the address to contact, then, as far as the target's ``expect`` says it
normally answers: TCP connect; then TLS with the real and with a neutral SNI and an HTTPS GET
("tls", "https"), or the app's own first round trip ("mtproto": resPQ from a Telegram DC,
"whatsapp": a chat server's ServerHello). A UDP target gets, instead of the TCP steps, a QUIC
handshake and an HTTP/3 GET ("http3") or the call path's known-answer checks (RELAY_CHECKS). Each
record is written (one flushed JSON line) the moment its check finishes, so an interrupted run keeps
everything it measured; the run's manifest says whether it completed, hit its deadline or was
interrupted.

With a ringprobe reflector configured (``ctx.reflector``), each app of the run that makes calls
(CALL_TESTS) also gets one *call test* (docs/callflow.md), under a transaction id of its own: three
``call_flow`` flows side by side, interleaved (CALL_FLOWS), sharing one schedule of sizes and send
times: the call on the app's port, its control (random bytes) on the same port, and the call on the
reflector's neutral port. The apps' tests run one after the other, so no app's flows share the
link with another's. Flows take their own time budget, not the per-check timeout, and start only
when the run's deadline leaves them all of it (a flow cut short would look like a censor's cut).
After its flows, in the same transaction, each call test makes two ``sni_stream`` checks to the
reflector's TLS port, one with the app's web host as SNI (STREAM_SNI) and one with the neutral
SNI, one after the other: the SNI-throttling comparison with a body as large as asked for.
Without a reflector none is planned, and the manifest's ``skipped`` says so once.

With ``localize`` (``ringprobe run --localize``), after everything else (transactions and call
tests), each app of the run gets its triggers traced (probe.checks.trace), one trace at a time:
every trigger trace.app_triggers allows the app (WhatsApp: tls, stun, whatsapp, call; Telegram: tls,
stun, call; Signal and the control: tls, stun), each to the one endpoint ``ringprobe trace`` picks
by default (trace.default_traces: the app's first catalog entry that answers the trigger), at the
address that endpoint's transaction contacted and under its transaction id, so a trace joins the
checks it explains. A trigger the catalog has no endpoint for is not traced (the built-in catalog
has no STUN server of Signal's). With a reflector, an app's ``call`` trigger goes to the reflector
instead, on the app's call-test port and under its call test's transaction id, signed with the
secret: the reflector echoes trigger and control alike, so a drop at the last router before it is
localized too (a relay answers neither); and a ``cut`` trace follows it there, its call flow
primed for up to ``--call-duration`` seconds, which localizes a cut of the call after its first
seconds. A trace starts only when the run's deadline leaves it its
whole time budget (trace.trace_budget; one cut short would read as silence); otherwise, and for an
endpoint whose lookups found no address, the manifest's ``skipped`` says so under ``trace``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal

from probe import SOFTWARE_NAME, __version__
from probe.checks.base import CheckContext
from probe.model import SCHEMA_VERSION, Failure, Record, Target
from probe.scrub import Scrubber

# Above the built-in catalog's 85 targets, so a network that drops every app address costs one
# check timeout, not two waves of them (bench/bench_signaling.py); 256 was measured at 49 MB RSS.
DEFAULT_CONCURRENCY = 128
DEFAULT_PER_HOST = 4
DEFAULT_DEADLINE = 300.0

# A check is called as check(ctx, target, [address,] transaction_id, **options).
Check = Callable[..., Awaitable[Record]]
SNI_KINDS = ("real", "neutral")
# Below this much of the deadline left, a check could not measure anything useful.
MIN_STEP_TIME = 0.05

# The known-answer checks (probe.checks.relay) for each call-path expect, in order.
RELAY_CHECKS: Final[dict[str, tuple[str, ...]]] = {
    "stun": ("stun_binding",),
    "turn": ("stun_binding", "stun_allocate"),
    "wa_relay": ("wa_relay_ping",),
    "reflector": ("tg_reflector",),
}

# docs/callflow.md "App framings": the framing and port of each app's call test (WhatsApp's relays
# listen on UDP 3478, Telegram's reflectors on 596-599).
CALL_TESTS: Final[dict[str, tuple[str, int]]] = {
    "whatsapp": ("whatsapp_rtp", 3478),
    "telegram": ("telegram_reflector", 597),
}
# docs/callflow.md: the reflector's neutral high port
NEUTRAL_PORT: Final = 40000
# A call test's flows, in the order their records are written, and each one's first send as a
# fraction of the send interval after the call's: the control half an interval away from the call
# (a censor acting on time slots treats both alike), the neutral port between them.
CALL_FLOWS: Final = (("call", 0.0), ("control", 0.5), ("call_neutral_port", 0.25))
# Seconds from planning a call test to its first send: the three sockets are set up by then.
CALL_START_LEAD: Final = 0.2
SKIP_CALL_FLOWS: Final = "call flows: no --reflector"
# The manifest's ``skipped`` names a skip of no one target by its check.
SKIP_CALL_FLOW_CHECK: Final = "call_flow"
SKIP_TRACE_CHECK: Final = "trace"
# docs/callflow.md "The reflector": its TLS port, which accepts any SNI and streams bytes on a
# MAC'd request (probe.checks.sni_stream).
REFLECTOR_TLS_PORT: Final = 443
# The real SNI of each calling app's stream to the reflector: the app's web host, the same name
# the catalog's HTTPS target of the app sends (probe/targets/whatsapp.toml, wa-web-443;
# probe/targets/telegram.toml, tg-web-443), so the streams compare with its GETs.
STREAM_SNI: Final[dict[str, str]] = {
    "whatsapp": "web.whatsapp.com",
    "telegram": "web.telegram.org",
}

RunStatus = Literal["running", "complete", "deadline_reached", "interrupted"]


@dataclass(frozen=True, slots=True)
class Limits:
    """How hard a run may push: simultaneous checks overall and per remote address, and the
    wall-clock budget of the whole run."""

    concurrency: int = DEFAULT_CONCURRENCY
    per_host: int = DEFAULT_PER_HOST
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.per_host < 1:
            raise ValueError("concurrency limits must be at least 1")
        if self.deadline <= 0:
            raise ValueError("the deadline must be positive")


@dataclass(frozen=True, slots=True)
class Localize:
    """``run --localize``: trace each app's triggers after the other checks, ``max_ttl`` TTLs at
    most, each probe waiting ``wait`` seconds (probe.checks.trace bounds both)."""

    max_ttl: int
    wait: float

    def __post_init__(self) -> None:
        from probe.checks.trace import check_bounds

        check_bounds(self.max_ttl, self.wait)


@dataclass(frozen=True, slots=True)
class Event:
    """A progress event. kinds: ``start`` (total = number of targets), ``record`` (a record was
    written), ``target_done``, ``skipped`` (a target the run has no check for), ``end``."""

    kind: Literal["start", "record", "target_done", "skipped", "end"]
    target: Target | None = None
    """None for a skip that concerns no one target (call flows without a reflector, a trace)."""
    record: Record | None = None
    total: int = 0
    reason: str = ""
    check: str = SKIP_CALL_FLOW_CHECK
    """The check a skip of no one target concerns (``call_flow``, ``trace``)."""


EventSink = Callable[[Event], None]


class RecordWriter:
    """Appends records to a JSON Lines file, one flushed line each, own addresses scrubbed."""

    def __init__(self, path: Path, scrubber: Scrubber) -> None:
        self.path = path
        self._scrubber = scrubber
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self.count = 0
        self.failures = 0

    def write(self, record: Record) -> None:
        self._file.write(self._scrubber.scrub(record.to_json()) + "\n")
        self._file.flush()
        self.count += 1
        if record.failure is not None:
            self.failures += 1

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)
class RunResult:
    """What a run produced and how it ended; also written as the run's manifest."""

    run_id: str
    records_path: Path
    manifest_path: Path
    status: RunStatus = "running"
    started: str = ""
    ended: str | None = None
    records: int = 0
    failures: int = 0
    targets: int = 0
    targets_done: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "software_name": SOFTWARE_NAME,
            "software_version": __version__,
            "run_id": self.run_id,
            "records_file": self.records_path.name,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
            "records": self.records,
            "failures": self.failures,
            "targets": self.targets,
            "targets_done": self.targets_done,
            "skipped": self.skipped,
            "settings": self.settings,
        }

    def write_manifest(self, scrubber: Scrubber | None = None) -> None:
        """Write the manifest, own addresses scrubbed (a skip reason or a setting may name one)."""
        text = json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n"
        if scrubber is not None:
            text = scrubber.scrub(text)
        # Write-then-rename so a crash never leaves a half-written manifest.
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.manifest_path)


def _utc_now(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def output_paths(out_dir: Path, run_id: str) -> tuple[Path, Path]:
    """Records file and manifest of a run: sortable by time, unique by run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"ringprobe-{stamp}-{run_id[:8]}"
    return out_dir / f"{stem}.jsonl", out_dir / f"{stem}.manifest.json"


def reflector_target(
    app: str, port: int, address: str, transport: Literal["tcp", "udp"] = "udp"
) -> Target:
    """The catalog entry of a ringprobe reflector's ``port`` at ``address`` for ``app``'s call
    test (its flows and TLS streams, and the call and cut triggers' traces)."""
    return Target(
        id=f"{app}-reflector-{port}",
        app=app,
        role="reflector",
        port=port,
        transport=transport,
        expect="echo",
        source="--reflector",
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        address=address,
    )


class _DeadlineReached(Exception):
    """Internal: the run's deadline leaves no time to start another check."""


class Runner:
    """Runs every transaction of a catalog under the limits, writing records as they finish."""

    def __init__(
        self,
        ctx: CheckContext,
        writer: RecordWriter,
        limits: Limits | None = None,
        on_event: EventSink | None = None,
        localize: Localize | None = None,
    ) -> None:
        self.ctx = ctx
        self.writer = writer
        self.limits = limits or Limits()
        self.localize = localize
        # The address each transaction contacted (or would have): what its traces go to.
        self._addresses: dict[int, str] = {}
        # The transaction id of each app's call test (the reflector's flows and traces).
        self._call_tx: dict[str, int] = {}
        self._emit = on_event or (lambda event: None)
        self._global = asyncio.Semaphore(self.limits.concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._deadline_at = ctx.run_start + self.limits.deadline
        self.deadline_hit = False
        if ctx.reflector is not None and not ctx.reflector_secret:
            raise ValueError("a reflector needs the secret shared with it")

    async def run(self, targets: Iterable[Target]) -> None:
        """Measure every target; each finished transaction emits a ``target_done`` event."""
        todo = list(targets)
        self._emit(Event("start", total=len(todo)))
        calling = [app for app in CALL_TESTS if any(target.app == app for target in todo)]
        self._call_tx = {app: tx for tx, app in enumerate(calling, len(todo) + 1)}
        if calling and self.ctx.reflector is None:
            self._emit(Event("skipped", reason=SKIP_CALL_FLOWS))
        async with asyncio.TaskGroup() as group:
            for tx, target in enumerate(todo, 1):
                group.create_task(self._transaction(target, tx))
            if calling and self.ctx.reflector is not None:
                group.create_task(self._call_tests(calling))
        if self.localize is not None:
            await self._localize(todo, self.localize)
        self._emit(Event("end", total=len(todo)))

    async def _transaction(self, target: Target, tx: int) -> None:
        try:
            await self._measure_target(target, tx)
        except _DeadlineReached:
            self.deadline_hit = True
            return
        self._emit(Event("target_done", target=target))

    async def _measure_target(self, target: Target, tx: int) -> None:
        # Imported here: the checks pull in aiohttp and dnspython, which `--help` must not pay for.
        from probe.checks import dns, doh, tcp

        address = target.address
        source = "catalog"
        if target.host is not None:
            lookups: list[Check] = [dns.dns_system]
            if self.ctx.resolver:
                lookups.append(dns.dns_udp)
            if self.ctx.doh_url:
                lookups.append(doh.dns_doh)
            dns_records = list(
                await asyncio.gather(*(self._step(None, f, target, tx) for f in lookups))
            )
            dns.compare_answers(dns_records)
            for record in dns_records:
                self._write(record)
            if address is None:
                address, source = choose_address(dns_records)
        if address is None:
            return
        self._addresses[tx] = address
        if target.transport != "tcp":
            await self._udp_steps(target, address, source, tx)
            return
        connect = await self._step(address, tcp.tcp_connect, target, address, tx)
        connect.details["address_source"] = source
        self._write(connect)
        if connect.failure is not None:
            return
        if target.expect in ("mtproto", "whatsapp"):
            await self._handshake_step(target, address, source, tx)
        elif target.expect in ("tls", "https"):
            await self._tls_steps(target, address, tx)

    async def _udp_steps(self, target: Target, address: str, source: str, tx: int) -> None:
        from probe.checks import relay

        checks: tuple[Check, ...]
        if target.expect == "http3":
            from probe.checks import quic  # aioquic: loaded only by runs that use it

            checks = (quic.quic_get,)
        elif target.expect in RELAY_CHECKS:
            checks = tuple(getattr(relay, name) for name in RELAY_CHECKS[target.expect])
        else:
            self._emit(Event("skipped", target=target, reason=f"no UDP check for {target.expect}"))
            return
        # Side by side (a silent server costs one timeout, not one per check); each check is its
        # own STUN transaction, so the answers cannot be confused.
        records = await asyncio.gather(
            *(self._step(address, check, target, address, tx) for check in checks)
        )
        for record in records:
            record.details["address_source"] = source
            self._write(record)

    async def _handshake_step(self, target: Target, address: str, source: str, tx: int) -> None:
        """The app's first round trip on a fresh connection: what a DPI that lets the TCP handshake
        through and then drops the app's protocol stops."""
        from probe.checks import mtproto, whatsapp

        if target.expect == "mtproto":
            record = await self._step(
                address, mtproto.mtproto_handshake, target, address, tx, dc_id=target.dc
            )
        else:
            record = await self._step(address, whatsapp.whatsapp_chat, target, address, tx)
        record.details["address_source"] = source
        self._write(record)

    async def _tls_steps(self, target: Target, address: str, tx: int) -> None:
        from probe.checks import http, tls

        handshakes = await asyncio.gather(
            *(
                self._step(address, tls.tls_handshake, target, address, tx, sni_kind=kind)
                for kind in SNI_KINDS
            )
        )
        for record in handshakes:
            self._write(record)
        if target.expect != "https":
            return
        # The neutral-SNI GET only makes sense where the neutral handshake worked.
        gets = await asyncio.gather(
            *(
                self._step(address, http.http_get, target, address, tx, sni_kind=kind)
                for kind, handshake in zip(SNI_KINDS, handshakes, strict=True)
                if kind == "real" or handshake.failure is None
            )
        )
        for record in gets:
            self._write(record)

    async def _call_tests(self, apps: list[str]) -> None:
        """One call test per app, one app after the other."""
        for app in apps:
            tx = self._call_tx[app]
            try:
                await self._call_test(app, tx)
            except _DeadlineReached:
                self.deadline_hit = True
                return

    async def _call_test(self, app: str, tx: int) -> None:
        """``app``'s call test: per profile (voice, then video if asked for) its three flows side
        by side on one schedule, then the two TLS streams."""
        reflector, secret = self.ctx.reflector, self.ctx.reflector_secret
        # run() plans no call test without a reflector, and Runner() refuses one without a secret
        assert reflector is not None
        assert secret is not None
        for profile in self.ctx.call_profiles:
            await self._call_flows(app, tx, profile, reflector, secret)
        await self._sni_streams(app, tx, reflector, secret)

    async def _call_flows(
        self, app: str, tx: int, profile: str, reflector: str, secret: bytes
    ) -> None:
        """The call flow, its control and the neutral-port flow of one profile, side by side."""
        from probe.checks import call_flow

        framing, port = CALL_TESTS[app]
        schedule = call_flow.make_schedule(framing, profile, self.ctx.call_duration)
        # The latest flow starts less than an interval after the lead.
        budget = call_flow.time_budget(schedule.duration, CALL_START_LEAD + schedule.interval)
        start = time.monotonic() + CALL_START_LEAD
        steps = []
        for flow, offset in CALL_FLOWS:
            flow_port = NEUTRAL_PORT if flow == "call_neutral_port" else port
            target = self._reflector_target(app, flow_port)
            steps.append(
                self._step(
                    reflector,
                    call_flow.call_flow,
                    target,
                    reflector,
                    tx,
                    budget=budget,
                    secret=secret,
                    flow=flow,
                    framing=framing,
                    profile=profile,
                    schedule=schedule,
                    start_at=start + offset * schedule.interval,
                )
            )
        # Every flow runs to its end even if another one could not start.
        results = await asyncio.gather(*steps, return_exceptions=True)
        deadline = False
        for result in results:
            if isinstance(result, _DeadlineReached):
                deadline = True
            elif isinstance(result, BaseException):
                raise result
            else:
                self._write(result)
        if deadline:
            raise _DeadlineReached

    async def _sni_streams(self, app: str, tx: int, reflector: str, secret: bytes) -> None:
        """The app's two TLS streams from the reflector, real SNI then neutral SNI.

        One after the other, not side by side: two streams at once share the path's bottleneck,
        so each would get about half of it and a policer's cut of one would show as the other's
        gain, confounding the comparison (http_get's pair is concurrent, but its ratio is judged
        only below THROTTLE_MAX_BPS, where that noise is small). After the call flows, not before:
        the flows hold a schedule and a time budget the deadline must leave them, and a stream
        that a policer slows to its timeout must not delay or share the link with them."""
        from probe.checks import sni_stream

        target = reflector_target(app, REFLECTOR_TLS_PORT, reflector, transport="tcp")
        for kind, sni in (("real", STREAM_SNI[app]), ("neutral", self.ctx.neutral_sni)):
            record = await self._step(
                reflector,
                sni_stream.sni_stream,
                target,
                reflector,
                tx,
                sni=sni,
                sni_kind=kind,
                secret=secret,
            )
            self._write(record)

    async def _localize(self, todo: list[Target], localize: Localize) -> None:
        """Each app's default traces (module docstring), one after the other."""
        from probe.checks import trace

        for app in dict.fromkeys(target.app for target in todo):
            for trigger, target, tx, address, secret in self._trace_plan(todo, app):
                about = f"{app} {trigger} to {target.id}"
                if address is None:
                    self._skip_trace(f"{about}: its lookups found no address")
                    continue
                prime = self.ctx.call_duration  # the cut trigger's: as long as a call test
                budget = trace.trace_budget(
                    trigger,
                    max_ttl=localize.max_ttl,
                    wait=localize.wait,
                    timeout=self.ctx.timeout,
                    prime=prime,
                )
                left = self._deadline_at - time.monotonic()
                if left <= budget:
                    self.deadline_hit = True
                    self._skip_trace(
                        f"{about}: the deadline leaves {max(left, 0.0):.1f} s, the trace may "
                        f"take {budget:.1f} s"
                    )
                    continue
                pair = await trace.trace(
                    self.ctx,
                    target,
                    address,
                    tx,
                    trigger=trigger,
                    max_ttl=localize.max_ttl,
                    wait=localize.wait,
                    secret=secret,
                    prime=prime,
                )
                self._write(pair.trigger)
                self._write(pair.control)

    def _trace_plan(
        self, todo: list[Target], app: str
    ) -> list[tuple[str, Target, int, str | None, bytes | None]]:
        """``app``'s traces: (trigger, target, transaction id, address, the reflector's secret
        for a signed call or cut trace), in TRIGGERS order (module docstring)."""
        from probe.checks import trace

        tx_of = {id(target): tx for tx, target in enumerate(todo, 1)}
        reflector, secret = self.ctx.reflector, self.ctx.reflector_secret
        signed_call = reflector is not None and app in self._call_tx
        plan: list[tuple[str, Target, int, str | None, bytes | None]] = []
        for trigger, target in trace.default_traces(todo, app):
            if trigger == "call" and signed_call:
                continue  # to the reflector, below
            tx = tx_of[id(target)]
            plan.append((trigger, target, tx, self._addresses.get(tx), None))
        if signed_call:
            target = self._reflector_target(app, CALL_TESTS[app][1])
            for trigger in trace.SIGNED_TRIGGERS:
                plan.append((trigger, target, self._call_tx[app], reflector, secret))
        return plan

    def _reflector_target(self, app: str, port: int) -> Target:
        assert self.ctx.reflector is not None
        return reflector_target(app, port, self.ctx.reflector)

    def _skip_trace(self, reason: str) -> None:
        self._emit(Event("skipped", reason=reason, check=SKIP_TRACE_CHECK))

    async def _step(
        self,
        address: str | None,
        check: Check,
        *args: Any,
        budget: float | None = None,
        **kwargs: Any,
    ) -> Record:
        """Run one check under the global and per-address limits, with its timeout cut to what
        is left of the run's deadline. A check with a ``budget`` of its own (call_flow) keeps
        its time instead: it starts only when the deadline leaves it all of the budget."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._global)
            if address is not None:
                slot = self._per_host.setdefault(address, asyncio.Semaphore(self.limits.per_host))
                await stack.enter_async_context(slot)
            remaining = self._deadline_at - time.monotonic()
            if remaining <= max(MIN_STEP_TIME, budget or 0.0):
                raise _DeadlineReached
            cut = budget is None and remaining < self.ctx.timeout
            ctx = self.ctx
            if budget is None:
                ctx = dataclasses.replace(self.ctx, timeout=min(self.ctx.timeout, remaining))
            record = await check(ctx, *args, **kwargs)
        if cut and record.failure == Failure.GENERIC_TIMEOUT:
            # The run's deadline, not the network, ended this check: never read it as a block.
            record.failure = Failure.INTERRUPTED
            record.details["deadline_cut"] = True
        return record

    def _write(self, record: Record) -> None:
        self.writer.write(record)
        self._emit(Event("record", record=record))


def choose_address(dns_records: list[Record]) -> tuple[str | None, str]:
    """The address to contact: the system resolver's first non-bogus answer (what the app itself
    would use), else the first from another resolver. Returns (address, resolver name)."""
    ordered = sorted(dns_records, key=lambda r: r.check != "dns_system")
    for record in ordered:
        if record.failure is not None:
            continue
        bogus = set(record.details.get("bogus", []))
        for address in record.details.get("addresses", []):
            if address not in bogus:
                return address, str(record.details.get("resolver", record.check))
    return None, "none"


class RunOutput:
    """The files of one run: records (JSON Lines) and manifest. Created before the event loop
    starts (file system work is blocking), finished whatever way the run ends."""

    def __init__(
        self, out_dir: Path, ctx: CheckContext, targets: int, settings: dict[str, Any]
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        records_path, manifest_path = output_paths(out_dir, ctx.run_id)
        self.result = RunResult(
            run_id=ctx.run_id,
            records_path=records_path,
            manifest_path=manifest_path,
            started=_utc_now(ctx.clock_offset),
            targets=targets,
            settings=dict(settings),
        )
        self._clock_offset = ctx.clock_offset
        self._scrubber = ctx.scrubber
        self.result.write_manifest(self._scrubber)
        self.writer = RecordWriter(records_path, ctx.scrubber)

    def finish(self, status: RunStatus) -> RunResult:
        self.writer.close()
        result = self.result
        result.status = status
        result.records = self.writer.count
        result.failures = self.writer.failures
        result.ended = _utc_now(self._clock_offset)
        result.write_manifest(self._scrubber)
        return result


async def execute(
    targets: Iterable[Target],
    ctx: CheckContext,
    output: RunOutput,
    limits: Limits | None = None,
    on_event: EventSink | None = None,
    localize: Localize | None = None,
) -> RunResult:
    """Run the targets, writing into ``output``; with ``localize``, trace each app's triggers
    after everything else (module docstring).

    On cancellation (Ctrl-C, SIGTERM) the manifest is marked ``interrupted`` and the records
    written so far stay; the cancellation then propagates.
    """
    result = output.result

    def track(event: Event) -> None:
        if event.kind == "skipped":
            # A skip of no one target (the call flows, a trace) is listed under the check's name.
            name = event.check if event.target is None else event.target.id
            result.skipped.append({"target": name, "reason": event.reason})
        if event.kind == "target_done":
            result.targets_done += 1
        if on_event is not None:
            on_event(event)

    runner = Runner(ctx, output.writer, limits, track, localize)
    try:
        await runner.run(targets)
    except BaseException:
        output.finish("interrupted")
        raise
    return output.finish("deadline_reached" if runner.deadline_hit else "complete")
