"""The endpoint catalog: which endpoints to measure, what they normally answer, and where we
learned of them.

The built-in catalog is package data, one TOML file per app (``whatsapp.toml``, ``telegram.toml``,
``signal.toml``, ``control.toml``), loaded in that order. ``load_catalog(path)`` loads a user's
file instead: a custom file *replaces* the built-in catalog, it does not extend it, so a lab or a
researcher knows exactly what is measured.

File format (TOML)::

    # Optional. Every key here applies to each [[target]] that does not set it.
    [defaults]
    app = "telegram"
    source = "https://github.com/ooni/spec/blob/master/nettests/ts-020-telegram.md"
    date = "2026-11-28"          # a TOML date (2026-11-28, unquoted) works too
    transport = "tcp"

    [[target]]
    id = "tg-dc1-443"            # unique in the catalog; letters, digits, '.', '_' and '-'
    role = "signaling"           # one of probe.model.ROLES
    address = "149.154.175.50"   # an IP address; IPv6 is stored in compressed form
    port = 443                   # integer, 1-65535
    expect = "tcp"               # one of probe.model.EXPECTS
    note = "DC1"                 # optional free text

Fields of a ``[[target]]`` (they are the fields of :class:`probe.model.Target`):

=========  ========  ===================================================================
field      required  value
=========  ========  ===================================================================
id         yes       unique name (not allowed in ``[defaults]``)
app        yes       one of ``probe.model.APPS``
role       yes       one of ``probe.model.ROLES``
port       yes       integer 1-65535 (not a boolean)
transport  yes       one of ``probe.model.TRANSPORTS``
expect     yes       one of ``probe.model.EXPECTS``
source     yes       where the endpoint was learned (URL or document)
date       yes       when the source was checked, ``YYYY-MM-DD``
host       one of    a DNS name, resolved at run time
address    the two   an IP address, contacted directly (the host, if any, is still resolved)
path       no        path of the HTTPS or HTTP/3 GET, starts with ``/`` (default ``/``)
dc         no        Telegram DC id for the obfuscated2 init (``expect = "mtproto"`` only)
note       no        free text for humans (default empty)
=========  ========  ===================================================================

The expect must suit the transport (``probe.model.EXPECTS_BY_TRANSPORT``: "mtproto" and
"whatsapp" are TCP, "http3" is UDP), and "tls", "https" and "http3" need a host (it is the SNI).

Every problem raises :class:`probe.errors.CatalogError` naming the file (a path, or the package
resource such as ``probe/targets/telegram.toml``), the entry (its id, or ``#N`` for the N-th
``[[target]]`` when it has no usable id, or ``[defaults]``) and what is wrong. Nothing here
touches the network: host names are checked for shape only.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import importlib.resources
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from probe.errors import CatalogError
from probe.model import (
    APPS,
    EXPECTS,
    EXPECTS_BY_TRANSPORT,
    ROLES,
    TRANSPORTS,
    Role,
    Target,
    Transport,
)

__all__ = ["BUILTIN_FILES", "Catalog", "builtin_catalog", "load_catalog"]

# Order matters: it is the order of builtin_catalog().targets, so runs and reports are stable.
BUILTIN_FILES: Final = ("whatsapp.toml", "telegram.toml", "signal.toml", "control.toml")

_REQUIRED: Final = ("id", "app", "role", "port", "transport", "expect", "source", "date")
_OPTIONAL: Final = ("host", "address", "path", "dc", "note")
_FIELDS: Final = _REQUIRED + _OPTIONAL
_TOP_LEVEL: Final = ("defaults", "target")

# Safe in file names, shell arguments and JSON keys; catalog ids end up in all three.
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# ASCII digits only: \d would accept other scripts' digits, and date.fromisoformat on 3.11 also
# accepts forms such as 20261128 that we do not want in the data.
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 1123 labels; '_' is tolerated because real service names (e.g. _dmarc) use it.
_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class Catalog:
    """An ordered, validated set of targets and the files they came from."""

    targets: tuple[Target, ...]
    """Every target, in file order (files in the order they were loaded)."""
    sources: tuple[str, ...]
    """The files (paths or package resource names) the targets were read from."""

    def select(self, apps: Iterable[str]) -> Catalog:
        """The targets of the given apps, in catalog order.

        An app name outside ``probe.model.APPS`` raises CatalogError. A known app without targets
        in this catalog simply selects nothing (a custom catalog may cover fewer apps).
        """
        wanted = tuple(dict.fromkeys(apps))
        for app in wanted:
            if app not in APPS:
                raise CatalogError(
                    ", ".join(self.sources) or "catalog",
                    f"unknown app {app!r} (known: {', '.join(APPS)})",
                )
        chosen = frozenset(wanted)
        return Catalog(tuple(t for t in self.targets if t.app in chosen), self.sources)

    def apps(self) -> tuple[str, ...]:
        """The apps that have targets here, in order of first appearance."""
        return tuple(dict.fromkeys(t.app for t in self.targets))

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)


@functools.cache
def builtin_catalog() -> Catalog:
    """The catalog shipped with ringprobe (every package TOML file, in BUILTIN_FILES order).

    Cached: the catalog is immutable and the files cannot change while the process runs.
    """
    package = importlib.resources.files(__name__)
    loaded: list[tuple[str, str]] = []
    for name in BUILTIN_FILES:
        source = f"{__name__.replace('.', '/')}/{name}"
        resource = package.joinpath(name)
        try:
            raw = resource.read_bytes()
        except OSError as exc:
            raise CatalogError(source, f"cannot read the built-in file: {exc}") from exc
        loaded.append((source, _decode(source, raw)))
    return _build(loaded)


def load_catalog(path: str | os.PathLike[str] | None) -> Catalog:
    """The built-in catalog when ``path`` is None, else the catalog in that file (which replaces
    the built-in one entirely)."""
    if path is None:
        return builtin_catalog()
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except (OSError, ValueError) as exc:
        # ValueError: a path with a NUL byte; OSError covers missing, directory, permissions.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CatalogError(source, f"cannot read the file: {reason}") from exc
    return _build([(source, _decode(source, raw))])


# --- parsing -----------------------------------------------------------------------------------


def _decode(source: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            source, f"not UTF-8 text (byte {exc.start}): TOML files must be UTF-8"
        ) from exc


def _build(files: Iterable[tuple[str, str]]) -> Catalog:
    """Parse and validate each (source, text) pair; ids must be unique across all of them."""
    targets: list[Target] = []
    sources: list[str] = []
    # id -> (source, 1-based position), to say where a duplicate was first seen.
    seen: dict[str, tuple[str, int]] = {}
    for source, text in files:
        sources.append(source)
        for position, target in _parse_file(source, text):
            first = seen.get(target.id)
            if first is not None:
                where = f"#{first[1]}" if first[0] == source else f"#{first[1]} in {first[0]}"
                raise CatalogError(
                    source, f"duplicate id {target.id!r} (first at {where})", entry=target.id
                )
            seen[target.id] = (source, position)
            targets.append(target)
    return Catalog(tuple(targets), tuple(sources))


def _parse_file(source: str, text: str) -> list[tuple[int, Target]]:
    try:
        document = tomllib.loads(text)
    except ValueError as exc:
        # TOMLDecodeError (a ValueError) says "(at line N, column M)", which is what a user needs
        # to fix the file; a bare ValueError is int() refusing an integer longer than
        # sys.get_int_max_str_digits(), which tomllib does not catch.
        raise CatalogError(source, f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        # tomllib parses nested arrays and inline tables recursively.
        raise CatalogError(source, "not valid TOML: arrays or tables nested too deeply") from exc

    unknown = [key for key in document if key not in _TOP_LEVEL]
    if unknown:
        raise CatalogError(
            source,
            f"unknown top-level key {unknown[0]!r} (known: [defaults] and [[target]])",
        )

    defaults = _check_defaults(source, document.get("defaults", {}))

    entries = document.get("target")
    if entries is None:
        raise CatalogError(source, "no [[target]] entries")
    if not isinstance(entries, list):
        raise CatalogError(
            source, f"'target' must be an array of tables ([[target]]), not {_kind(entries)}"
        )
    if not entries:
        raise CatalogError(source, "no [[target]] entries")

    parsed: list[tuple[int, Target]] = []
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise CatalogError(
                source, f"entry is {_kind(entry)}, not a table", entry=f"#{position}"
            )
        merged = {**defaults, **entry}
        parsed.append((position, _target(source, position, merged)))
    return parsed


def _check_defaults(source: str, defaults: object) -> dict[str, Any]:
    where = "[defaults]"
    if not isinstance(defaults, dict):
        raise CatalogError(source, f"[defaults] must be a table, not {_kind(defaults)}")
    for key, value in defaults.items():
        if key == "id":
            raise CatalogError(source, "'id' cannot have a default: it must be unique", entry=where)
        if key not in _FIELDS:
            raise CatalogError(source, _unknown_field(key), entry=where)
        # Checked here so the error points at [defaults], not at every entry that inherits it.
        _FIELD_CHECKS[key](source, where, value)
    return dict(defaults)


def _target(source: str, position: int, fields: Mapping[str, Any]) -> Target:
    raw_id = fields.get("id")
    # Name the entry by its id only when the id itself is usable; otherwise by position.
    entry = raw_id if isinstance(raw_id, str) and _ID_RE.fullmatch(raw_id) else f"#{position}"

    for key in fields:
        if key not in _FIELDS:
            raise CatalogError(source, _unknown_field(key), entry=entry)
    for key in _REQUIRED:
        if key not in fields:
            raise CatalogError(source, f"missing field {key!r}", entry=entry)

    values = {key: _FIELD_CHECKS[key](source, entry, fields[key]) for key in fields}
    if values.get("host") is None and values.get("address") is None:
        raise CatalogError(source, "needs 'host' or 'address' (or both)", entry=entry)
    expect, transport = cast(str, values["expect"]), cast(str, values["transport"])
    if expect not in EXPECTS_BY_TRANSPORT[transport]:
        suited = ", ".join(EXPECTS_BY_TRANSPORT[transport])
        raise CatalogError(
            source, f"expect {expect!r} is not for {transport} (known: {suited})", entry=entry
        )
    if expect in ("tls", "https", "http3") and values.get("host") is None:
        # The TLS and QUIC checks send the host as SNI and verify the certificate against it.
        raise CatalogError(source, f"expect {expect!r} needs a 'host'", entry=entry)
    if values.get("dc") is not None and expect != "mtproto":
        raise CatalogError(source, "'dc' is only for expect \"mtproto\"", entry=entry)

    return Target(
        id=cast(str, values["id"]),
        app=cast(str, values["app"]),
        role=cast(Role, values["role"]),
        port=cast(int, values["port"]),
        transport=cast(Transport, values["transport"]),
        expect=cast(str, values["expect"]),
        source=cast(str, values["source"]),
        date=cast(str, values["date"]),
        host=cast("str | None", values.get("host")),
        address=cast("str | None", values.get("address")),
        path=cast(str, values.get("path", "/")),
        dc=cast("int | None", values.get("dc")),
        note=cast(str, values.get("note", "")),
    )


# --- field checks: each returns the normalised value or raises CatalogError -------------------


def _string(source: str, entry: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise CatalogError(source, f"{key} must be a string, not {_kind(value)}", entry=entry)
    return value


def _nonempty(source: str, entry: str, key: str, value: object) -> str:
    text = _string(source, entry, key, value)
    if not text.strip():
        raise CatalogError(source, f"{key} must not be empty", entry=entry)
    return text


def _choice(key: str, known: tuple[str, ...]) -> Callable[[str, str, object], str]:
    def check(source: str, entry: str, value: object) -> str:
        text = _string(source, entry, key, value)
        if text not in known:
            raise CatalogError(
                source, f"unknown {key} {text!r} (known: {', '.join(known)})", entry=entry
            )
        return text

    return check


def _check_id(source: str, entry: str, value: object) -> str:
    text = _string(source, entry, "id", value)
    if not _ID_RE.fullmatch(text):
        raise CatalogError(
            source,
            f"id {text!r} must start with a letter or digit and contain only letters, digits, "
            "'.', '_' and '-'",
            entry=entry,
        )
    return text


def _check_port(source: str, entry: str, value: object) -> int:
    # bool is an int subclass in Python; `port = true` is a mistake, not port 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(source, f"port must be an integer, not {_kind(value)}", entry=entry)
    if not 1 <= value <= 65535:
        raise CatalogError(source, f"port {value} is out of range 1-65535", entry=entry)
    return value


def _check_date(source: str, entry: str, value: object) -> str:
    # TOML has a native date type; `date = 2026-11-28` (unquoted) is the natural way to write it.
    # datetime.datetime is a date subclass but carries a time: not what this field means.
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    text = _string(source, entry, "date", value)
    try:
        if not _DATE_RE.fullmatch(text):
            raise ValueError(text)
        datetime.date.fromisoformat(text)
    except ValueError:
        raise CatalogError(source, f"date {text!r} is not YYYY-MM-DD", entry=entry) from None
    return text


def _check_host(source: str, entry: str, value: object) -> str:
    text = _nonempty(source, entry, "host", value)
    if _is_ip(text):
        raise CatalogError(
            source, f"host {text!r} is an IP address; put it in 'address'", entry=entry
        )
    name = text[:-1] if text.endswith(".") else text
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in name.split(".")):
        raise CatalogError(source, f"host {text!r} is not a DNS name", entry=entry)
    return text


def _check_address(source: str, entry: str, value: object) -> str:
    text = _nonempty(source, entry, "address", value)
    try:
        # str() of the parsed address is the canonical form: IPv6 compressed and lower-case, so
        # 2001:0b28:f23d:f001:0000:0000:0000:000a and 2001:b28:f23d:f001::a compare equal.
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise CatalogError(source, f"address {text!r} is not an IP address", entry=entry) from None


def _check_path(source: str, entry: str, value: object) -> str:
    text = _string(source, entry, "path", value)
    if not text.startswith("/") or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise CatalogError(
            source,
            f"path {text!r} must start with '/' and contain no spaces or control characters",
            entry=entry,
        )
    return text


def _check_dc(source: str, entry: str, value: object) -> int:
    # obfuscated2 carries the DC id as a signed little-endian int16 (core.telegram.org/mtproto/
    # mtproto-transports#transport-obfuscation); 0 names no data center.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(source, f"dc must be an integer, not {_kind(value)}", entry=entry)
    if value == 0 or not -32768 <= value <= 32767:
        raise CatalogError(source, f"dc {value} is not a data center id", entry=entry)
    return value


def _field(
    key: str, check: Callable[[str, str, str, object], str]
) -> Callable[[str, str, object], str]:
    def run(source: str, entry: str, value: object) -> str:
        return check(source, entry, key, value)

    return run


_FIELD_CHECKS: Final[dict[str, Callable[[str, str, object], object]]] = {
    "id": _check_id,
    "app": _choice("app", APPS),
    "role": _choice("role", ROLES),
    "port": _check_port,
    "transport": _choice("transport", TRANSPORTS),
    "expect": _choice("expect", EXPECTS),
    "source": _field("source", _nonempty),
    "date": _check_date,
    "host": _check_host,
    "address": _check_address,
    "path": _check_path,
    "dc": _check_dc,
    "note": _field("note", _string),
}


# --- helpers -----------------------------------------------------------------------------------


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _unknown_field(key: str) -> str:
    problem = f"unknown field {key!r}"
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    return f"{problem} (did you mean {close[0]!r}?)" if close else problem


_TOML_KINDS: Final = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime.datetime, "a date-time"),
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def _kind(value: object) -> str:
    """The TOML name of a parsed value's type: users wrote TOML, not Python."""
    for python_type, name in _TOML_KINDS:
        if isinstance(value, python_type):
            return name
    return type(value).__name__
