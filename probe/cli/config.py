"""`ringprobe config`: show and edit the settings file (probe/config.py has the keys)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from probe import config
from probe import consent as consent_lib
from probe.errors import OptionError

# `config set --help` lists the keys; \b keeps click from rewrapping the list.
_KEY_LIST = "\b\n" + "\n".join(f"{name:<13} {key.allowed}" for name, key in config.KEYS.items())


@click.group("config")
def command() -> None:
    """Show and edit the settings (config.toml in your config directory, or in
    RINGPROBE_CONFIG_DIR): defaults for runs, and whether runs may go unattended.
    """


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: path, settings, consent.")
def show(as_json: bool) -> None:
    """Every setting with its value, where it comes from (file or default) and what it takes;
    then the consent and the file's path."""
    with _usage_errors():
        settings = config.load_settings()
    values = settings.values()
    consent = _consent_state(settings)
    if as_json:
        document = {
            "path": str(settings.path),
            "exists": settings.path.exists(),
            "settings": {
                name: {
                    "value": values[name],
                    "source": settings.source(name),
                    "allowed": key.allowed,
                }
                for name, key in config.KEYS.items()
            },
            "consent": consent,
        }
        click.echo(json.dumps(document, indent=2))
        return
    rows = [
        (name, _text(values[name]), settings.source(name), key.allowed)
        for name, key in config.KEYS.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True)))
    if consent is None:
        state = "not given (ringprobe consent)"
    else:
        state = f"text version {consent['version']}, given {consent['given']}"
        if not consent["current"]:
            state += f" (outdated: the text is now version {consent_lib.CONSENT_VERSION})"
    click.echo(f"\nconsent: {state}")
    where = "" if settings.path.exists() else " (not written yet: every value is a default)"
    click.echo(f"file: {settings.path}{where}")


@command.command("get")
@click.argument("key")
def get(key: str) -> None:
    """Print one setting's value (an empty line if it is not set and has no default)."""
    with _usage_errors():
        config.get_key(key)
        value = config.load_settings().values()[key]
    click.echo(_text(value, none=""))


@command.command("set", help=f"Check VALUE for KEY and write it to the file.\n\n{_KEY_LIST}")
@click.argument("key")
@click.argument("value")
def set_(key: str, value: str) -> None:
    with _usage_errors():
        stored = config.set_value(key, value)
    click.echo(f"{config.dumps({key: stored}).strip()} (in {config.config_path()})")


@command.command("unset")
@click.argument("key")
def unset(key: str) -> None:
    """Remove KEY from the file: it takes its default again. Removes a key this version does not
    know, too (a typo, or a later version's)."""
    with _usage_errors():
        removed = config.unset_value(key)
    if not removed:
        click.echo(f"{key} was not set in {config.config_path()}")
        return
    default = config.KEYS[key].default if key in config.KEYS else None
    click.echo(
        f"{key} removed"
        + (f": back to its default, {_text(default)}" if default is not None else "")
    )


@command.command("path")
def path() -> None:
    """Print where the settings file is (or will be)."""
    click.echo(str(config.config_path()))


@contextmanager
def _usage_errors() -> Iterator[None]:
    """A setting's problem is a usage error of this subcommand (its --help lists the keys)."""
    try:
        yield
    except OptionError as exc:
        raise click.UsageError(str(exc), click.get_current_context()) from exc


def _consent_state(settings: config.Settings) -> dict[str, Any] | None:
    if settings.consent is None:
        return None
    return {
        "version": settings.consent.version,
        "given": settings.consent.given.isoformat().replace("+00:00", "Z"),
        "current": consent_lib.consent_given(settings),
    }


def _text(value: object, none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
