"""Informed consent: what a volunteer agrees to before the first measurement from their network.

The model is OONI's informed-consent practice (https://ooni.org/about/risks/): say plainly who can
see the measurement, what is kept and what leaves the machine, say that the risk is the user's to
judge, and ask before measuring. The agreement is recorded in config.toml's ``[consent]`` table
(probe/config.py) with the version of the text agreed to; a consent to an older text does not
count, so changing what the text says means raising ``CONSENT_VERSION``.

``require_consent`` is the gate ``ringprobe run`` passes through before it sends or writes anything.
"""

from __future__ import annotations

import sys
from typing import Final

import click

from probe import config
from probe.config import Settings

# Raise whenever TEXT changes in substance: every earlier consent is then asked for again.
CONSENT_VERSION: Final = 1
EXIT_REFUSED: Final = 2

TEXT: Final = """\
ringprobe: before you measure

ringprobe tests whether WhatsApp and Telegram calls work from the network
this computer is on. Please read what it does, and decide whether that is
safe for you.

What it sends, and to whom. A run connects from this computer to servers of
WhatsApp, Telegram and Signal (Signal is the app it compares with): DNS
lookups, connections to their web, chat and call servers, the first
messages of the apps' own protocols, and short UDP probes to their call
relays. It also contacts neutral servers for comparison (www.example.com,
www.microsoft.com, Cloudflare's DNS at 1.1.1.1, Google's STUN server).
`ringprobe targets` lists every one. If a reflector is set (--reflector),
a run also sends a few seconds of UDP traffic shaped like a call, and a
few megabytes over TLS, to that server. A run takes a few minutes.

Who can see it. Your internet provider, whoever runs this network (an
employer, a cafe), and any filtering equipment on the way (in Russia, the
state's TSPU boxes installed at providers) can see which of these servers
this computer contacts and when, as when you open the apps. Many messenger
servers tried within minutes can look like what it is: a test of blocking.
Each server (Meta's, Telegram's, Signal's, the neutral ones, the
reflector) sees your address, as for any connection. In some countries
measuring censorship can draw the attention of the authorities, or be
against the law. Nobody but you can judge your risk. If in doubt, do not
run it.

What is stored. Each run writes its records to a folder on this computer
(./ringprobe-results unless --out or the `out` setting says otherwise):
which servers were tried, what happened and how long it took, and the
network's ASN, country and connection type. Your IP address is removed
from every record before it is written. To find the ASN and country, the
probe asks a STUN server (the `stun_server` setting, Google's by default)
for this network's public address and looks the network up over DNS
(Team Cymru's service), unless `locate = false` or you give --asn and
--cc; the address itself is not kept.

What is uploaded. Nothing, unless you ask for it: with --upload URL or
the `upload_url` setting, the records go to that collector, and whoever
runs it keeps them. The upload is a connection your provider sees too.

You can withdraw at any time: ringprobe consent --withdraw. Deleting the
results folder removes what was measured.
"""


class ConsentRefused(click.ClickException):
    """No consent, so no measurement: one line on stderr, exit status 2."""

    exit_code = EXIT_REFUSED


def consent_given(settings: Settings) -> bool:
    """Whether the user agreed to the current text.

    Only the same version counts: an older text said something else, and a newer one (a later
    ringprobe, since downgraded) described a program other than this one.
    """
    return settings.consent is not None and settings.consent.version == CONSENT_VERSION


def stdin_is_tty() -> bool:
    """Whether someone can answer a question (tests replace this to simulate a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def show(*, err: bool = False) -> None:
    """Print the consent text (on stderr when stdout carries a command's results)."""
    click.echo(TEXT, err=err)


def ask(*, err: bool = False) -> bool:
    """Print the text and ask for ``yes``; on yes record consent to this version and return True.

    Anything else (an empty line, end of input, Ctrl-C) is no, and nothing is recorded.
    """
    show(err=err)
    try:
        answer = click.prompt(
            "Type yes to agree and measure, anything else to stop",
            default="",
            show_default=False,
            err=err,
        )
    except click.Abort:
        click.echo("", err=err)
        return False
    if answer.strip().lower() != "yes":
        return False
    config.record_consent(CONSENT_VERSION)
    return True


def require_consent(
    vantage: str,
    yes: bool,
    interactive: bool | None = None,
    settings: Settings | None = None,
) -> None:
    """The gate before a run sends or writes anything; ConsentRefused if the run may not go on.

    ``yes``: --yes (never prompt); ``interactive``: whether a question can be answered (default:
    stdin is a terminal); ``settings``: the settings in effect, when the caller has read them
    already (default: read here). The text and question go to stderr: stdout is the run's summary.
    """
    if vantage == "lab":
        # The lab is an emulated network on this machine: nothing is measured in any country.
        return
    settings = settings or config.load_settings()
    if consent_given(settings):
        return
    if settings.consent is not None:
        needed = (
            f"the consent text changed since you agreed to version {settings.consent.version} "
            f"(now {CONSENT_VERSION})"
        )
    else:
        needed = "no consent to measure from this network is recorded yet"
    if interactive is None:
        interactive = stdin_is_tty()
    if yes or settings.unattended or not interactive:
        if yes:
            why = "--yes"
        elif settings.unattended:
            why = f"unattended = true in {settings.path}"
        else:
            why = "stdin is not a terminal"
        raise ConsentRefused(
            f"{needed}, and this run does not ask ({why}): run 'ringprobe consent' first"
        )
    if settings.consent is not None:
        click.echo(f"ringprobe: {needed}; please read it again.\n", err=True)
    if not ask(err=True):
        raise ConsentRefused("no consent given: nothing was measured")
    click.echo(f"ringprobe: consent recorded in {settings.path}; measuring.", err=True)


__all__ = [
    "CONSENT_VERSION",
    "TEXT",
    "ConsentRefused",
    "ask",
    "consent_given",
    "require_consent",
    "show",
    "stdin_is_tty",
]
