"""Options and helpers shared by several commands."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from probe.targets import Catalog

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_APPS = ("whatsapp", "telegram", "signal", "control")
# The reflector's secret, hex, when no --reflector-secret-file is given (the reflector reads the
# same variable).
ENV_REFLECTOR_SECRET = "RINGPROBE_REFLECTOR_SECRET"  # noqa: S105 - a variable's name, no secret
# The reflector refuses shorter secrets (probe/reflector/config.py MIN_SECRET_BYTES).
MIN_SECRET_BYTES = 16


def split_apps(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--apps whatsapp,telegram --apps signal` -> ('whatsapp', 'telegram', 'signal')."""
    apps: list[str] = []
    for value in values:
        apps.extend(part.strip().lower() for part in value.split(",") if part.strip())
    return tuple(dict.fromkeys(apps))


def targets_option(func: F) -> F:
    """--targets, a catalog file in place of the built-in one (run, targets, trace)."""
    return click.option(
        "--targets",
        "targets_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A catalog file (TOML) that replaces the built-in catalog.",
    )(func)


def allow_net_option(func: F) -> F:
    """--allow-net, the networks the command may contact (run, trace)."""
    return click.option(
        "--allow-net",
        multiple=True,
        metavar="CIDR",
        help="Only ever contact addresses in these networks (repeatable; adds to "
        "RINGPROBE_ALLOW_NETS). Anything else fails with address_not_allowed and is never sent.",
    )(func)


def catalog_options(func: F) -> F:
    """--apps and --targets, as `run` and `targets` both take them."""
    func = targets_option(func)
    func = click.option(
        "--apps",
        multiple=True,
        metavar="APP[,APP...]",
        help=f"Apps to measure (default: {','.join(DEFAULT_APPS)}); repeatable.",
    )(func)
    return func


def load_selected(targets_file: Path | None, apps: tuple[str, ...]) -> Catalog:
    """The catalog to use; CatalogError (a RingprobeError) names the file, entry and problem."""
    from probe.targets import load_catalog

    catalog = load_catalog(targets_file)
    wanted = split_apps(apps)
    return catalog.select(wanted) if wanted else catalog


def reflector_options(help_text: str) -> Callable[[F], F]:
    """--reflector ADDR (with ``help_text``) and --reflector-secret-file (run, trace)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--reflector-secret-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="File with the secret shared with the reflector (hex or raw bytes); else "
            f"{ENV_REFLECTOR_SECRET} (hex).",
        )(func)
        return click.option("--reflector", metavar="ADDR", help=help_text)(func)

    return decorate


def reflector_from(options: dict[str, Any]) -> tuple[str | None, bytes | None]:
    """The reflector's address (an IP literal: a name would need a lookup the censor can answer)
    and the shared secret, from the file or else the environment."""
    value = options["reflector"]
    if value is None:
        return None, None
    try:
        address = str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an IP address (give the reflector by address, not by name)",
            param_hint="--reflector",
        ) from None
    path: Path | None = options["reflector_secret_file"]
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise click.UsageError(f"cannot read {path}: {exc.strerror}") from exc
        text = raw.strip()
        try:
            secret = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            secret = raw  # not hex: the file's bytes are the secret
        source = str(path)
    elif os.environ.get(ENV_REFLECTOR_SECRET):
        try:
            secret = bytes.fromhex(os.environ[ENV_REFLECTOR_SECRET].strip())
        except ValueError:
            raise click.UsageError(f"{ENV_REFLECTOR_SECRET} is not hex") from None
        source = ENV_REFLECTOR_SECRET
    else:
        raise click.UsageError(
            "--reflector needs the shared secret: --reflector-secret-file or "
            f"{ENV_REFLECTOR_SECRET}"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise click.UsageError(
            f"the reflector secret from {source} is {len(secret)} bytes; it takes at least "
            f"{MIN_SECRET_BYTES}"
        )
    return address, secret
