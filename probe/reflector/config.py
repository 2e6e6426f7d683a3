"""The reflector's settings: defaults, a TOML file, command-line overrides, the shared secret.

A config file holds the keys of ``Config`` (below) except ``secret``: the secret never sits in a
file that gets copied around with the settings; ``secret_file`` names the file that holds it
(relative paths are relative to the config file). Example::

    bind = ["::"]
    udp_ports = [3478, 3480, 596, 597, 598, 599, 1400, 40000]
    tls_port = 443
    secret_file = "/etc/ringprobe/secret"

The secret comes from, in this order: ``--secret-file``, the environment variable
``RINGPROBE_REFLECTOR_SECRET`` (hex), the file's ``secret_file``. A secret file holds hex (as
``openssl rand -hex 32`` writes it) or raw bytes; either way at least MIN_SECRET_BYTES bytes.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from probe.errors import RingprobeError
from probe.protocols.echo import MAX_DATAGRAM

__all__ = [
    "COMMAND_LINE",
    "DEFAULT_UDP_PORTS",
    "ENV_SECRET",
    "MIN_SECRET_BYTES",
    "Config",
    "ConfigError",
    "ReflectorError",
    "load_config",
    "read_secret",
]

# The source a ConfigError names for an override (the CLI maps its keys to option names).
COMMAND_LINE: Final = "command line"
ENV_SECRET: Final = "RINGPROBE_REFLECTOR_SECRET"  # noqa: S105 - a variable's name
# The HMAC key of docs/callflow.md; 16 bytes is the least a guessed or brute-forced key needs.
MIN_SECRET_BYTES: Final = 16
# WhatsApp relays (3478, 3480), Telegram reflectors (596-599) and TURN (1400) (METHOD.md, wire
# facts), and the neutral high port of docs/callflow.md.
DEFAULT_UDP_PORTS: Final = (3478, 3480, 596, 597, 598, 599, 1400, 40000)


class ReflectorError(RingprobeError):
    """Base class of the reflector's errors."""


class ConfigError(ReflectorError):
    """A config file, option or secret cannot be used; the message names the source and key."""

    def __init__(self, source: str, problem: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: key {key!r}" if key is not None else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the reflector needs; the defaults are the ones an operator gets."""

    secret: bytes
    """The shared HMAC key; the reflector answers only flows whose MAC verifies under it."""
    bind: tuple[str, ...] = ("::",)
    """Addresses to listen on; ``::`` alone is dual-stack (IPv4 too, as mapped addresses)."""
    udp_ports: tuple[int, ...] = DEFAULT_UDP_PORTS
    """UDP echo ports; 0 binds a free port (tests)."""
    tls_port: int = 443
    """The TLS stream port; 0 binds a free port (tests)."""
    tls: bool = True
    """Whether to serve TLS at all."""
    cert_file: Path | None = None
    """PEM certificate for TLS; without one a self-signed certificate is made at start."""
    key_file: Path | None = None
    """PEM private key of cert_file."""
    rate_packets: float = 200.0
    """Echoes a second to one source (an IPv4 address or an IPv6 /64)."""
    burst_packets: int = 400
    """Echoes one source may get at once."""
    rate_bytes: float = 256 * 1024
    """Echoed bytes a second to one source."""
    burst_bytes: int = 512 * 1024
    """Echoed bytes one source may get at once."""
    global_rate_packets: float = 20_000.0
    """Echoes a second in all (the operator's uplink, whatever the number of sources)."""
    global_rate_bytes: float = 16 * 1024 * 1024
    """Echoed bytes a second in all."""
    max_sources: int = 4096
    """Sources whose rate the reflector tracks at once; a new one beyond this gets no echo."""
    max_sessions: int = 1024
    """Sessions tracked at once; a new one beyond this replaces the least recently seen."""
    max_sessions_per_source: int = 64
    """Sessions one source may hold; its new one beyond this replaces its least recent."""
    session_timeout: float = 30.0
    """Seconds without a datagram after which a session is forgotten."""
    max_stream_bytes: int = 4 * 1024 * 1024
    """Bytes one TLS stream request may get; larger requests are capped."""
    max_tls_connections: int = 128
    """TLS connections served at once; more are closed on accept."""
    max_tls_per_source: int = 8
    """TLS connections one source may have open at once."""
    tls_timeout: float = 120.0
    """Seconds a TLS connection may last after its handshake (a throttled stream is slow)."""
    stats_interval: float = 60.0
    """Seconds between the one-line stats logs at INFO; 0 logs none."""


# Keys a file (or an override) may set: Config's fields, secret_file in place of secret.
_FIELDS: Final = {f.name: f for f in fields(Config) if f.name != "secret"}
_KEYS: Final = (*_FIELDS, "secret_file")
_PATH_KEYS: Final = ("cert_file", "key_file", "secret_file")


def _port(source: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(source, f"{value!r} is not a port (0-65535)", key)
    return value


def _positive_int(source: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(source, f"{value!r} is not a positive integer", key)
    return value


def _number(source: str, key: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(source, f"{value!r} is not a number", key)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ConfigError(source, f"{value!r} must be {'>= 0' if zero else '> 0'}", key)
    return number


def _addresses(source: str, key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(source, "give a non-empty list of IP addresses", key)
    result = []
    for item in value:
        try:
            result.append(str(ipaddress.ip_address(str(item))))
        except ValueError:
            raise ConfigError(source, f"{item!r} is not an IP address", key) from None
    return tuple(dict.fromkeys(result))


def _convert(source: str, key: str, value: object, base: Path | None) -> Any:
    """A file or override value -> the Config field's type; ConfigError names source and key."""
    if key in _PATH_KEYS:
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(source, f"{value!r} is not a path", key)
        path = Path(value).expanduser()
        return base / path if base is not None and not path.is_absolute() else path
    if key == "bind":
        return _addresses(source, key, value)
    if key == "udp_ports":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(source, "give a list of ports", key)
        return tuple(dict.fromkeys(_port(source, key, item) for item in value))
    if key == "tls_port":
        return _port(source, key, value)
    if key == "tls":
        if not isinstance(value, bool):
            raise ConfigError(source, f"{value!r} is not true or false", key)
        return value
    if key == "stats_interval":
        return _number(source, key, value, zero=True)
    if _FIELDS[key].type == "int":
        return _positive_int(source, key, value)
    return _number(source, key, value)


def read_secret(path: Path, source: str = "--secret-file") -> bytes:
    """A secret file's key: hex (whitespace around it ignored) or else its raw bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, f"cannot read secret file {path}: {exc.strerror}") from exc
    text = raw.strip()
    try:
        secret = bytes.fromhex(text.decode("ascii")) if text else b""
    except (UnicodeDecodeError, ValueError):
        secret = raw
    return _checked_secret(secret, f"{source} {path}")


def _checked_secret(secret: bytes, source: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            source,
            f"the secret is {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed "
            "(make one with `openssl rand -hex 32`)",
        )
    return secret


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    if "secret" in data:
        raise ConfigError(source, "the secret itself may not be in a config file", "secret")
    return data


def _merge(values: dict[str, Any], data: Mapping[str, Any], source: str, base: Path | None) -> None:
    for key, value in data.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(source, f"unknown key (known keys: {known})", key)
        if value is None:
            continue
        values[key] = _convert(source, key, value, base)


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the TOML file at ``path``, then ``overrides`` (the command line; keys as
    in a file, None values ignored). The secret is read as the module docstring says.

    Raises ConfigError naming the file (or "command line") and the key."""
    environ = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if path is not None:
        _merge(file_values, _read_file(path), str(path), path.parent)
    cli_values: dict[str, Any] = {}
    _merge(cli_values, overrides or {}, COMMAND_LINE, None)
    values = {**file_values, **cli_values}

    secret_file = cli_values.get("secret_file")
    if secret_file is not None:
        secret = read_secret(secret_file)
    elif environ.get(ENV_SECRET):
        try:
            secret = bytes.fromhex(environ[ENV_SECRET].strip())
        except ValueError:
            raise ConfigError(ENV_SECRET, "not hex") from None
        secret = _checked_secret(secret, ENV_SECRET)
    elif file_values.get("secret_file") is not None:
        secret = read_secret(file_values["secret_file"], f"{path}: key 'secret_file':")
    else:
        raise ConfigError(
            "no secret",
            f"give --secret-file PATH, {ENV_SECRET} (hex) or secret_file in --config",
        )
    values.pop("secret_file", None)

    if ("cert_file" in values) != ("key_file" in values):
        raise ConfigError(
            str(path) if "cert_file" in file_values or "key_file" in file_values else COMMAND_LINE,
            "give both a certificate and its key, or neither (a self-signed one is made)",
            "cert_file" if "cert_file" not in values else "key_file",
        )
    config = Config(secret=secret, **values)
    if not config.udp_ports and not config.tls:
        raise ConfigError("config", "nothing to serve: no UDP port and TLS disabled")
    if config.burst_bytes < MAX_DATAGRAM:
        raise ConfigError("config", f"must hold one full datagram ({MAX_DATAGRAM})", "burst_bytes")
    return config
