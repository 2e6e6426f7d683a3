"""`ringprobe trace`: find the hop where an app's triggering packet meets interference."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from probe.cli.common import (
    allow_net_option,
    reflector_from,
    reflector_options,
    targets_option,
)

if TYPE_CHECKING:
    from probe.checks.base import CheckContext
    from probe.checks.trace import TracePair
    from probe.model import Record, Target

# probe.checks.trace TRIGGERS, DEFAULT_MAX_TTL, MAX_TTL, DEFAULT_WAIT, MIN_WAIT, MAX_WAIT,
# DEFAULT_PRIME, MAX_PRIME, spelled out so that --help imports nothing heavy (a unit test keeps
# them equal).
TRIGGERS = ("tls", "stun", "whatsapp", "call", "cut")
DEFAULT_MAX_TTL = 8
MAX_TTL = 32
DEFAULT_WAIT = 1.0
MIN_WAIT = 0.05
MAX_WAIT = 5.0
DEFAULT_PRIME = 10.0
MAX_PRIME = 60.0
APPS = ("whatsapp", "telegram", "signal", "control")  # probe.model.APPS
EXIT_FAILED = 1


@click.command("trace")
@click.option(
    "--app",
    type=click.Choice(APPS),
    default="whatsapp",
    show_default=True,
    help="The app whose trigger is traced (its SNI, its framing, its catalog endpoints).",
)
@click.option(
    "--trigger",
    type=click.Choice(TRIGGERS),
    help="Required. tls: a ClientHello with the app's SNI; stun: a STUN Binding request; "
    "whatsapp: the WhatsApp chat prologue; call: the app's first call-flow datagram; cut: the "
    "app's call flow, primed at full TTL until it is cut, then its next datagrams (needs "
    "--reflector). Each is traced with a control of neutral content.",
)
@click.option(
    "--target",
    "address",
    metavar="ADDR",
    help="The IP address to trace to (default: the app's first catalog endpoint for the trigger).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port.")
@click.option("--sni", metavar="NAME", help="Server name of the tls trigger (default: catalog).")
@click.option(
    "--neutral-sni", default="example.org", show_default=True, help="SNI of the tls control."
)
@click.option(
    "--max-ttl",
    type=click.IntRange(1, MAX_TTL),
    default=DEFAULT_MAX_TTL,
    show_default=True,
    help="The highest TTL sent.",
)
@click.option(
    "--wait",
    type=click.FloatRange(MIN_WAIT, MAX_WAIT),
    default=DEFAULT_WAIT,
    show_default=True,
    help="Seconds each probe waits for an answer.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 120),
    default=10.0,
    show_default=True,
    help="Seconds a TCP connect (at full TTL) or a DNS lookup may take.",
)
@click.option(
    "--prime",
    type=click.FloatRange(0.1, MAX_PRIME),
    default=DEFAULT_PRIME,
    show_default=True,
    help="The cut trigger: the longest the call flow and its control are sent at full TTL "
    "before the TTL-limited probes (it stops early once the call's echoes stop).",
)
@reflector_options(
    "The call and cut triggers: trace to this ringprobe reflector (on the app's call-test "
    "port) with trailers signed by the shared secret, so the reflector echoes trigger and "
    "control and a drop just before it is localized too."
)
@allow_net_option
@targets_option
@click.option("--json", "as_json", is_flag=True, help="Print both records as one JSON object.")
def command(**options: Any) -> None:
    """Localize interference: send the app's triggering packet (and its control) with TTL 1, 2,
    ... and show which router answered each; the trigger's interference starts where it stops
    getting through while its control still does.

    Needs root or CAP_NET_RAW (routers' ICMP time-exceeded are read on a raw socket); without
    it the trace fails with raw_socket_not_permitted and sends nothing.
    """
    from probe.allowlist import AllowList
    from probe.checks.base import CheckContext

    if options["trigger"] is None:
        # Not click's required=True: its message lists the choices on several lines.
        raise click.UsageError(f"missing --trigger (one of {', '.join(TRIGGERS)})")
    ctx = CheckContext(
        allow=AllowList.from_sources(options["allow_net"]),
        timeout=options["timeout"],
        neutral_sni=options["neutral_sni"],
    )
    secret: bytes | None = None
    if options["reflector"] is not None:
        (target, secret), sni = _reflector_target(options), None
    else:
        target, sni = _target(options)
    pair = asyncio.run(_trace(ctx, target, sni, options, secret))
    if options["as_json"]:
        out = {
            "trigger": json.loads(ctx.scrubber.scrub(pair.trigger.to_json())),
            "control": json.loads(ctx.scrubber.scrub(pair.control.to_json())),
        }
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print(pair)
    if pair.trigger.failure is not None:
        sys.exit(EXIT_FAILED)


def _target(options: dict[str, Any]) -> tuple[Target, str | None]:
    """The endpoint to trace (catalog entry, or the --target address) and the tls trigger's SNI;
    usage errors for what cannot be traced."""
    from probe.checks.trace import (
        CALL_FRAMINGS,
        DEFAULT_PORTS,
        app_triggers,
        pick_target,
        transport_of,
    )
    from probe.model import Target
    from probe.targets import load_catalog

    app, trigger = options["app"], options["trigger"]
    if trigger == "cut":
        raise click.UsageError(
            "the cut trigger is traced to a ringprobe reflector: give --reflector"
        )
    if trigger not in app_triggers(app):  # the rule `ringprobe run --localize` plans by, too
        why = (
            "the whatsapp trigger is WhatsApp's chat prologue: use --app whatsapp"
            if trigger == "whatsapp"
            else f"no call framing for {app} (call traces: {', '.join(CALL_FRAMINGS)})"
        )
        raise click.BadParameter(why, param_hint="--trigger")
    address = options["address"]
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise click.BadParameter(
                f"{address!r} is not an IP address", param_hint="--target"
            ) from None
    catalog = load_catalog(options["targets_file"])
    found = pick_target(catalog.targets, app, trigger)
    if found is None and address is None:
        raise click.UsageError(
            f"the catalog has no {trigger} endpoint for {app}: give --target ADDR (and --port)"
        )
    sni = options["sni"] or (found.host if found is not None else None)
    if trigger == "tls" and not sni:
        raise click.BadParameter("the tls trigger needs a server name", param_hint="--sni")
    if found is None:
        found = Target(
            id=f"trace-{app}-{trigger}",
            app=app,
            role="relay" if transport_of(trigger) == "udp" else "signaling",
            port=DEFAULT_PORTS[trigger],
            transport=transport_of(trigger),
            expect="unknown",
            source="ringprobe trace --target",
            date=datetime.now(UTC).date().isoformat(),
            host=sni,
        )
    if address is not None:
        found = replace(found, address=address)
    if options["port"] is not None:
        found = replace(found, port=options["port"])
    return found, sni


def _reflector_target(options: dict[str, Any]) -> tuple[Target, bytes]:
    """The reflector as the call trigger's endpoint, on the app's call-test port (or --port),
    and the secret shared with it."""
    from probe.runner import CALL_TESTS, reflector_target

    app = options["app"]
    if options["trigger"] not in ("call", "cut"):  # probe.checks.trace.SIGNED_TRIGGERS
        raise click.BadParameter(
            "a reflector echoes the call and cut triggers only: use --trigger call or cut",
            param_hint="--reflector",
        )
    if app not in CALL_TESTS:
        raise click.BadParameter(
            f"no call framing for {app} (call traces: {', '.join(CALL_TESTS)})",
            param_hint="--app",
        )
    if options["address"] is not None:
        raise click.UsageError("--reflector is the address traced to: give it or --target")
    reflector, secret = reflector_from(options)
    assert reflector is not None  # --reflector was given
    assert secret is not None  # reflector_from refuses a reflector without one
    return reflector_target(app, options["port"] or CALL_TESTS[app][1], reflector), secret


async def _trace(
    ctx: CheckContext,
    target: Target,
    sni: str | None,
    options: dict[str, Any],
    secret: bytes | None = None,
) -> TracePair:
    from probe.checks.trace import resolve_host, trace
    from probe.errors import NotAllowedError

    address = target.address
    if address is None:
        assert target.host is not None  # the catalog loader guarantees a host or an address
        try:
            addresses = await resolve_host(ctx, target.host)
        except NotAllowedError as exc:
            raise click.UsageError(
                f"resolving {target.host}: the resolver {exc.address} is outside the allow-list"
            ) from exc
        except Exception as exc:  # a network failure of the lookup, for the user to see
            raise click.ClickException(f"cannot resolve {target.host}: {exc}") from exc
        address = addresses[0]
    if not ctx.allow.allows(address):
        raise click.UsageError(
            f"{address} is outside the allow-list ({ctx.allow.describe()}): nothing was sent"
        )
    return await trace(
        ctx,
        target,
        address,
        1,
        trigger=options["trigger"],
        sni=sni,
        max_ttl=options["max_ttl"],
        wait=options["wait"],
        secret=secret,
        prime=options["prime"],
    )


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    text = str(entry["outcome"]) + (f" {entry['hop']}" if entry["hop"] else "")
    if entry.get("interference"):
        text += f"  <- {entry['interference']}"
    return text


def _print(pair: TracePair) -> None:
    trig, ctrl = pair.trigger, pair.control
    details = trig.details
    target = trig.target
    head = (
        f"trace {trig.app} {details['trigger']} -> {target.address} port {target.port} "
        f"({target.transport}), max TTL {details['max_ttl']}, wait {details['wait']} s"
    )
    click.echo(head)
    if trig.failure is not None:
        click.echo(f"  failed: {trig.failure} ({details.get('error', '')})")
        return
    hops_t, hops_c = details["hops"], ctrl.details["hops"]
    width = max([len("control"), *(len(_cell(e)) for e in hops_c)])
    click.echo(f"  {'TTL':>3}  {'control'.ljust(width)}  trigger")
    for index in range(max(len(hops_t), len(hops_c))):
        c = hops_c[index] if index < len(hops_c) else None
        t = hops_t[index] if index < len(hops_t) else None
        click.echo(f"  {index + 1:>3}  {_cell(c).ljust(width)}  {_cell(t)}")
    click.echo("  " + _localization("trigger", trig))
    click.echo("  " + _localization("control", ctrl))
    click.echo(
        f"  packets sent: trigger {details['packets_sent']}, control "
        f"{ctrl.details['packets_sent']}; {trig.runtime:.1f} s"
    )


def _localization(name: str, record: Record) -> str:
    d = record.details
    if d["first_interfering_ttl"] is None:
        where = f"reached the destination at TTL {d['destination_ttl']}" if d["reached"] else ""
        return f"{name}: no interference found" + (f" ({where})" if where else "")
    hop = d["localized_hop"]
    after = "before the first router" if hop == 0 else f"after hop {hop}"
    if d["localized_address"]:
        after += f" ({d['localized_address']})"
    return (
        f"{name}: interference ({d['interference']}) from TTL {d['first_interfering_ttl']}: {after}"
    )
