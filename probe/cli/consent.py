"""`ringprobe consent`: read what a measurement involves, and agree to it or withdraw."""

from __future__ import annotations

from pathlib import Path

import click

from probe import config
from probe import consent as consent_lib


@click.command("consent")
@click.option("--show", is_flag=True, help="Only print the text; record nothing.")
@click.option(
    "--agree",
    is_flag=True,
    help="Print the text and record consent without asking: for provisioning scripts and "
    "containers whose operator has read it (ringprobe consent --show).",
)
@click.option("--withdraw", is_flag=True, help="Delete the recorded consent: runs ask again.")
def command(show: bool, agree: bool, withdraw: bool) -> None:
    """Show what a measurement involves (what is sent and to whom, who can see it, what is
    stored and what is uploaded) and ask for consent, which `ringprobe run` needs (lab runs
    excepted). Recorded in the config file (`ringprobe config path`).
    """
    if show + agree + withdraw > 1:
        raise click.UsageError("--show, --agree and --withdraw exclude each other")
    path = config.config_path()
    if show:
        consent_lib.show()
    elif withdraw:
        if config.withdraw_consent():
            click.echo(f"consent withdrawn from {path}: the next run asks again")
        else:
            click.echo(f"no consent was recorded in {path}")
    elif agree:
        consent_lib.show()
        config.record_consent(consent_lib.CONSENT_VERSION)
        click.echo(f"consent (text version {consent_lib.CONSENT_VERSION}) recorded in {path}")
    else:
        _ask(path)


def _ask(path: Path) -> None:
    settings = config.load_settings()
    if consent_lib.consent_given(settings):
        assert settings.consent is not None
        consent_lib.show()
        given = settings.consent.given.strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"You agreed to this text on {given}. To withdraw: ringprobe consent --withdraw")
        return
    if not consent_lib.stdin_is_tty():
        raise consent_lib.ConsentRefused(
            "stdin is not a terminal, so nothing can be asked: read the text "
            "(ringprobe consent --show), then agree with ringprobe consent --agree"
        )
    if not consent_lib.ask():
        raise consent_lib.ConsentRefused("no consent given: runs will ask again")
    click.echo(f"consent recorded in {path}")
