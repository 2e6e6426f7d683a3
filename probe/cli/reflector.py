"""`ringprobe reflector`: the cooperating server an operator runs outside the censored network."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from probe.reflector import Config, Reflector

# probe.reflector.config.DEFAULT_UDP_PORTS, written out so that --help imports nothing heavy;
# a test keeps them equal.
DEFAULT_UDP_PORTS = (3478, 3480, 596, 597, 598, 599, 1400, 40000)
LOG_LEVELS = ("debug", "info", "warning", "error")
# Config keys -> the options that set them, so that an error names what the user typed.
_OPTIONS = {
    "secret_file": "--secret-file",
    "bind": "--bind",
    "udp_ports": "--udp-port",
    "tls_port": "--tls-port",
    "tls": "--no-tls",
    "cert_file": "--cert",
    "key_file": "--key",
}


class _ReflectorFailure(click.ClickException):
    """A config or bind problem (exit 2, like every input error), without a --help hint: the
    message already names the file, key or port."""

    exit_code = 2


@click.command("reflector")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file with the settings (keys as probe/reflector/config.py lists them); "
    "options given here override it.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The shared secret (hex or raw, at least 16 bytes); else RINGPROBE_REFLECTOR_SECRET "
    "(hex), else the config file's secret_file.",
)
@click.option(
    "--bind",
    multiple=True,
    metavar="ADDR",
    help="Address to listen on (repeatable; default: ::, dual-stack).",
)
@click.option(
    "--udp-port",
    "udp_ports",
    multiple=True,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="UDP echo port (repeatable; replaces the default "
    f"{','.join(map(str, DEFAULT_UDP_PORTS))}; 0 picks a free port).",
)
@click.option(
    "--tls-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="TLS stream port (default 443; 0 picks a free port).",
)
@click.option("--no-tls", is_flag=True, default=None, help="Serve no TLS.")
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate for TLS (default: a self-signed one made at start).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key of --cert.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Logs hold counts and errors, never an address.",
)
def command(
    config_file: Path | None,
    secret_file: Path | None,
    bind: tuple[str, ...],
    udp_ports: tuple[int, ...],
    tls_port: int | None,
    no_tls: bool | None,
    cert_file: Path | None,
    key_file: Path | None,
    log_level: str,
) -> None:
    """Run the reflector: UDP echo on the call ports, TLS streams for the SNI test.

    Answers only datagrams and requests carrying a valid MAC under the shared secret
    (docs/callflow.md), never sends a source more bytes than it sent, rate-limits each source
    and caps sessions and memory. Ports below 1024 need root or CAP_NET_BIND_SERVICE.
    Stops cleanly on Ctrl-C or SIGTERM.
    """
    from probe.reflector import ConfigError, ReflectorError, load_config

    overrides: dict[str, Any] = {
        "secret_file": secret_file,
        "bind": list(bind) or None,
        "udp_ports": list(udp_ports) or None,
        "tls_port": tls_port,
        "tls": False if no_tls else None,
        "cert_file": cert_file,
        "key_file": key_file,
    }
    try:
        config = load_config(config_file, overrides)
    except ConfigError as exc:
        if exc.source == "command line" and exc.key in _OPTIONS:
            raise _ReflectorFailure(f"{_OPTIONS[exc.key]}: {exc.problem}") from exc
        raise _ReflectorFailure(str(exc)) from exc
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s ringprobe reflector %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_serve(config))
    except ReflectorError as exc:
        raise _ReflectorFailure(str(exc)) from exc


async def _serve(config: Config) -> None:
    from probe.reflector import Reflector
    from probe.reflector.server import quiet_exception_handler

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_exception_handler)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Reflector(config) as reflector:
        click.echo(f"ringprobe reflector: listening on {_describe(reflector)}", err=True)
        await stop.wait()
        logging.getLogger("probe.reflector").info(
            "stopping; %s", " ".join(f"{k}={v}" for k, v in reflector.stats().items())
        )


def _describe(reflector: Reflector) -> str:
    def fmt(address: str, port: int) -> str:
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

    parts = []
    if reflector.udp_addresses:
        parts.append("udp " + " ".join(fmt(a, p) for a, p in reflector.udp_addresses))
    if reflector.tls_addresses:
        parts.append("tls " + " ".join(fmt(a, p) for a, p in reflector.tls_addresses))
    return ", ".join(parts)
