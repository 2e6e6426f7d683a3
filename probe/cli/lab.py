"""`ringprobe lab`: the emulated censored network (doctor, up, down)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from probe.lab import Lab

F = TypeVar("F", bound=Callable[..., Any])


def _name_option(func: F) -> F:
    return click.option(
        "--name",
        default="default",
        show_default=True,
        help="Which lab: its namespaces are rp<4 hex digits of the name>-<role>, so labs with "
        "different names never collide.",
    )(func)


@click.group("lab")
def command() -> None:
    """The lab: an emulated censored network on this machine.

    Five network namespaces in a row (client, isp, tspu, border, internet) with real servers
    (dnsmasq, nginx, coturn, dnsdist, ngtcp2) in the last and TSPU-like rules in the middle.
    Nothing leaves the machine. Needs root on Linux; `ringprobe lab doctor` checks.
    """


@command.command("doctor")
def doctor_command() -> None:
    """Check what the lab needs (Linux, root, ip, nft, iptables with the string match,
    dnsmasq, nginx, coturn, dnsdist, ngtcp2) and print the install line for what is missing.
    Exits 1 when something is missing."""
    from probe.lab import doctor

    findings = doctor.check()
    width = max(len(f.name) for f in findings)
    for finding in findings:
        mark = "OK     " if finding.ok else "MISSING"
        click.echo(f"{mark} {finding.name.ljust(width)}  {finding.detail}")
    line = doctor.install_line(findings)
    if line:
        click.echo(f"\ninstall what is missing (as root):\n  {line}")
    if not all(f.ok for f in findings):
        sys.exit(1)
    click.echo("\nthe lab can run here")


@command.command("up")
@_name_option
def up_command(name: str) -> None:
    """Build the lab (or leave an identical running one as it is) and say how to use it.

    A lab left half built or crashed is removed first. Prints the time it took.
    """
    from probe.lab import Lab, LabSetupError

    lab = Lab(name)
    try:
        result = lab.up()
    except LabSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "already up (checked" if result.reused else "up (built"
    click.echo(f"lab {name!r} {verb} in {result.elapsed:.2f} s)")
    _describe(lab)


def _describe(lab: Lab) -> None:
    prefix = lab.prefix
    roles = ",".join(lab.namespaces)
    probe = " ".join(lab.probe_command(lab.state_dir / "results"))
    click.echo(f"  namespaces  {prefix}-{{{roles}}}")
    click.echo(f"  catalog     {lab.catalog_path}")
    click.echo(f"  CA          {lab.ca_file}")
    click.echo(f"  resolver    {lab.resolver} ({lab.client_resolv_conf})")
    click.echo(f"  DoH         {lab.doh_url}")
    click.echo(f"  rules       nft add rule inet tspu forward ... (namespace {prefix}-tspu)")
    click.echo(f"  probe       {probe}")


@command.command("down")
@_name_option
def down_command(name: str) -> None:
    """Stop every process the lab started (by pid) and remove its namespaces and files.

    Safe on a lab that is down, half built or crashed.
    """
    from probe.lab import Lab, LabSetupError

    try:
        result = Lab(name).down()
    except LabSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.stopped and not result.namespaces:
        click.echo(f"lab {name!r} was not up; nothing to remove")
        return
    click.echo(
        f"lab {name!r} down in {result.elapsed:.2f} s: stopped {len(result.stopped)} "
        f"processes, removed {len(result.namespaces)} namespaces"
    )
