"""The volunteer's settings: ``config.toml`` in the user's config directory.

The directory is platformdirs' ``user_config_dir("ringprobe")`` (``~/.config/ringprobe`` on
Linux), or ``RINGPROBE_CONFIG_DIR`` when set (tests, containers). The file holds flat keys (the
``KEYS`` table: each with its type, default and what it allows) and one table, ``[consent]``,
written by ``ringprobe consent`` (see probe/consent.py)::

    unattended = true
    cc = "RU"

    [consent]
    version = 1
    given = "2026-12-05T08:00:00Z"

Reading uses tomllib; writing is our own small TOML writer (flat scalars and one level of tables,
all this file ever holds), atomic (temp file, fsync, rename) with mode 0600 in a 0700 directory.
Every problem is an ``OptionError`` whose one-line message names the key and what it allows.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from probe.errors import OptionError

ENV_CONFIG_DIR: Final = "RINGPROBE_CONFIG_DIR"
FILE_NAME: Final = "config.toml"
CONSENT_TABLE: Final = "consent"
# The neutral STUN server of the built-in catalog's call-path control (probe/targets/control.toml,
# ctl-stun-google-19302): the WebRTC samples' default ICE server.
DEFAULT_STUN_SERVER: Final = "stun.l.google.com:19302"
STUN_PORT: Final = 3478  # RFC 8489 section 9
NETWORK_TYPES: Final = ("wifi", "mobile", "wired", "unknown")
NetworkType = Literal["wifi", "mobile", "wired", "unknown"]
Source = Literal["file", "default"]

_HEADER = (
    "# ringprobe settings. Edit with `ringprobe config set KEY VALUE` / `ringprobe config unset "
    "KEY`;\n# the consent table with `ringprobe consent`. Rewritten whole on every change.\n"
)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its type, its default and how a value is checked."""

    name: str
    """The key in config.toml and on the command line."""
    kind: Literal["bool", "text"]
    """``bool``: a TOML boolean (true/false/yes/no/on/off/1/0 on the command line); ``text``: a
    TOML string."""
    default: bool | str | None
    """The value when the file does not set it (None: not set)."""
    allowed: str
    """What the key takes, for error messages and ``config show``."""
    help: str
    """One line on what the key does."""
    normalize: Callable[[str], str] | None = None
    """Checks a text value and returns its canonical spelling; ValueError if it is not allowed."""


def _upload_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return value


def _out(value: str) -> str:
    if not value.strip() or "\x00" in value:
        raise ValueError
    return value


def _asn(value: str) -> str:
    asn = value.strip().upper()
    asn = asn if asn.startswith("AS") else f"AS{asn}"
    if not re.fullmatch(r"AS[0-9]{1,10}", asn):
        raise ValueError
    return asn


def _cc(value: str) -> str:
    cc = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", cc):
        raise ValueError
    return cc


def _network_type(value: str) -> str:
    kind = value.strip().lower()
    if kind not in NETWORK_TYPES:
        raise ValueError
    return kind


def parse_host_port(text: str, default_port: int = STUN_PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``V6`` or ``[V6]:PORT`` -> (host, port); ValueError if not.

    HOST is a DNS name or an IP literal; a bare IPv6 address takes ``default_port``.
    """
    value = text.strip()
    port_text: str | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or ":" not in host or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host = value
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        name = host.rstrip(".")
        labels = name.split(".")
        # An all-digit last label is no DNS name (RFC 3696 section 2), only a mistyped address.
        if len(name) > 253 or not all(map(_HOST_LABEL.fullmatch, labels)) or labels[-1].isdigit():
            raise ValueError(text) from None
        host = name.lower()
    port = default_port
    if port_text is not None:
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(text)
        port = int(port_text)
    return host, port


def _stun_server(value: str) -> str:
    parse_host_port(value)
    return value.strip()


KEYS: Final[Mapping[str, Key]] = {
    key.name: key
    for key in (
        Key(
            "unattended",
            "bool",
            False,
            "true or false",
            "runs never prompt (as --yes): they need consent given earlier",
        ),
        Key(
            "upload_url",
            "text",
            None,
            "an http:// or https:// URL",
            "the collector that runs upload their records to",
            _upload_url,
        ),
        Key("out", "text", None, "a directory path", "where runs write their records", _out),
        Key(
            "asn",
            "text",
            None,
            "an ASN like AS12389",
            "the network (ASN) to record, in place of a lookup",
            _asn,
        ),
        Key(
            "cc",
            "text",
            None,
            "a two-letter country code like RU",
            "the country to record, in place of a lookup",
            _cc,
        ),
        Key(
            "network_type",
            "text",
            "unknown",
            "one of " + ", ".join(NETWORK_TYPES),
            "the kind of connection to record",
            _network_type,
        ),
        Key(
            "stun_server",
            "text",
            DEFAULT_STUN_SERVER,
            "HOST[:PORT] (an IPv6 address as [ADDR]:PORT)",
            "the neutral STUN server that tells the probe its public address",
            _stun_server,
        ),
        Key(
            "locate",
            "bool",
            True,
            "true or false",
            "look up the network's ASN and country from the public address",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Consent:
    """A recorded consent: which text the user agreed to, and when."""

    version: int
    """The version of the consent text agreed to (probe.consent.CONSENT_VERSION then)."""
    given: datetime
    """When, in UTC."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings in effect: the file's values over the defaults."""

    path: Path
    """The config file they come from (it may not exist)."""
    unattended: bool = False
    upload_url: str | None = None
    out: Path | None = None
    asn: str | None = None
    cc: str | None = None
    network_type: NetworkType = "unknown"
    stun_server: str = DEFAULT_STUN_SERVER
    locate: bool = True
    consent: Consent | None = None
    """None: no consent recorded."""
    from_file: frozenset[str] = field(default_factory=frozenset)
    """The keys the file sets."""

    def source(self, key: str) -> Source:
        """Where a key's value comes from."""
        return "file" if key in self.from_file else "default"

    def values(self) -> dict[str, bool | str | None]:
        """Every key's value as it would be written (text, bool or None), in KEYS order."""
        return {
            name: (str(value) if isinstance(value, Path) else value)
            for name in KEYS
            for value in [getattr(self, name)]
        }


def config_dir() -> Path:
    """The directory of config.toml: ``RINGPROBE_CONFIG_DIR`` if set, else platformdirs'."""
    override = os.environ.get(ENV_CONFIG_DIR)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("ringprobe"))


def config_path() -> Path:
    """The settings file (it may not exist yet)."""
    return config_dir() / FILE_NAME


def _unknown_key(name: str) -> OptionError:
    return OptionError(f"unknown setting {name!r}; the settings are: {', '.join(KEYS)}")


def parse_value(name: str, text: str) -> bool | str:
    """A value as typed on the command line, checked and in its canonical form."""
    key = get_key(name)
    if key.kind == "bool":
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise _bad_value(key, text)
    return _check_text(key, text)


def load_settings(path: Path | None = None) -> Settings:
    """The settings in effect: defaults, overridden by what the file sets (checked)."""
    path = path or config_path()
    raw = read_raw(path)
    values: dict[str, Any] = {}
    consent: Consent | None = None
    for name, value in raw.items():
        if name == CONSENT_TABLE:
            consent = _consent_from(path, value)
            continue
        if name not in KEYS:
            raise OptionError(
                f"{path}: unknown setting {name!r} (remove it: ringprobe config unset {name}); "
                f"the settings are: {', '.join(KEYS)}"
            )
        key = KEYS[name]
        try:
            checked = _check_file_value(key, value)
        except OptionError as exc:
            raise OptionError(f"{path}: {exc}") from None
        values[name] = Path(str(checked)).expanduser() if name == "out" else checked
    return Settings(path=path, consent=consent, from_file=frozenset(values), **values)


def set_value(name: str, text: str) -> bool | str:
    """Check ``text`` for the setting ``name`` and store it; returns the value stored.

    Other keys are kept as they are, even values that do not check out, so a file with one bad
    value can be repaired one key at a time.
    """
    if name == CONSENT_TABLE:
        raise OptionError("consent is not a setting: use ringprobe consent (--agree, --withdraw)")
    value = parse_value(name, text)
    path = config_path()
    raw = read_raw(path)
    raw[name] = value
    write_raw(path, raw)
    return value


def unset_value(name: str) -> bool:
    """Remove a key from the file (back to its default); False if the file did not set it.

    A key the file holds is removed even if it is unknown (a typo, or a newer version's key).
    """
    if name == CONSENT_TABLE:
        raise OptionError("consent is not a setting: use ringprobe consent --withdraw")
    path = config_path()
    raw = read_raw(path)
    if name not in raw:
        get_key(name)
        return False
    del raw[name]
    write_raw(path, raw)
    return True


def record_consent(version: int, when: datetime | None = None) -> Consent:
    """Store the user's consent to the text of ``version``, given now (or ``when``)."""
    given = (when or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    path = config_path()
    raw = read_raw(path)
    raw[CONSENT_TABLE] = {"version": version, "given": given.isoformat().replace("+00:00", "Z")}
    write_raw(path, raw)
    return Consent(version=version, given=given)


def withdraw_consent() -> bool:
    """Delete the recorded consent; False if there was none."""
    path = config_path()
    raw = read_raw(path)
    if CONSENT_TABLE not in raw:
        return False
    del raw[CONSENT_TABLE]
    write_raw(path, raw)
    return True


def read_raw(path: Path) -> dict[str, Any]:
    """The file's TOML as parsed, unchecked; empty if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise OptionError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise OptionError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"{path}: not valid TOML: {exc}") from None


def write_raw(path: Path, raw: Mapping[str, Any]) -> None:
    """Replace the file with ``raw`` as TOML, atomically, mode 0600, in a 0700 directory."""
    text = _HEADER + "\n" + dumps(raw)
    _ensure_dir(path.parent)
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OptionError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OptionError(f"cannot write {path}: {exc.strerror}") from None
        raise
    # The rename itself survives a crash only once the directory is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def dumps(raw: Mapping[str, Any]) -> str:
    """TOML for flat scalar keys (known keys first, in KEYS order) and then one-level tables."""
    order = {name: i for i, name in enumerate(KEYS)}
    scalars = sorted(
        ((k, v) for k, v in raw.items() if not isinstance(v, Mapping)),
        key=lambda item: order.get(item[0], len(order)),
    )
    lines = [f"{_key(k)} = {_scalar(k, v)}" for k, v in scalars]
    for name, table in raw.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{_key(name)}]"]
            lines += [f"{_key(k)} = {_scalar(f'{name}.{k}', v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _ensure_dir(directory: Path) -> None:
    """Create the config directory private (0700); an existing one keeps its mode (it may be a
    mounted volume or a directory the user chose)."""
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        return
    except OSError as exc:
        raise OptionError(f"cannot create {directory}: {exc.strerror}") from None
    directory.chmod(0o700)  # mkdir's mode would be narrowed by the umask, never widened


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _scalar(where: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise OptionError(
        f"cannot rewrite the config file: {where} holds a {type(value).__name__}; remove it "
        f"(ringprobe config unset {where.split('.')[0]})"
    )


def _string(value: str) -> str:
    """A TOML basic string (TOML 1.0: backslash, quote and control characters escaped)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
    escapes["\r"] = "\\r"
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def get_key(name: str) -> Key:
    """The setting called ``name``; OptionError naming every setting if there is none."""
    try:
        return KEYS[name]
    except KeyError:
        raise _unknown_key(name) from None


def _bad_value(key: Key, value: object) -> OptionError:
    return OptionError(f"setting {key.name!r} takes {key.allowed}, not {value!r}")


def _check_text(key: Key, text: str) -> str:
    assert key.normalize is not None
    try:
        return key.normalize(text)
    except ValueError:
        raise _bad_value(key, text) from None


def _check_file_value(key: Key, value: object) -> bool | str:
    if key.kind == "bool":
        if isinstance(value, bool):
            return value
        raise _bad_value(key, value)
    if isinstance(value, str):
        return _check_text(key, value)
    raise _bad_value(key, value)


def _consent_from(path: Path, table: object) -> Consent:
    where = f"{path}: [{CONSENT_TABLE}]"
    fix = "record it again with ringprobe consent, or remove it with ringprobe consent --withdraw"
    if not isinstance(table, dict):
        raise OptionError(f"{where} is not a table; {fix}")
    version, given = table.get("version"), table.get("given")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise OptionError(f"{where} version must be a whole number from 1, not {version!r}; {fix}")
    when: datetime | None = given if isinstance(given, datetime) else None
    if isinstance(given, str):
        try:
            when = datetime.fromisoformat(given)
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise OptionError(f"{where} given must be a UTC time like 2026-12-05T08:00:00Z; {fix}")
    return Consent(version=version, given=when.astimezone(UTC))


__all__ = [
    "CONSENT_TABLE",
    "DEFAULT_STUN_SERVER",
    "ENV_CONFIG_DIR",
    "KEYS",
    "Consent",
    "Key",
    "Settings",
    "config_dir",
    "config_path",
    "dumps",
    "get_key",
    "load_settings",
    "parse_host_port",
    "parse_value",
    "record_consent",
    "set_value",
    "unset_value",
    "withdraw_consent",
]
