"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from probe.targets import Catalog

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_APPS = ("whatsapp", "telegram", "signal", "control")


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
