"""Scenarios: TSPU-like behaviour as data (shared/LAB.md), applied to a lab, measured, judged.

A scenario file (TOML) says what the tspu does and what the analysis should conclude::

    name = "tg-dc-ip-drop"
    summary = "Telegram's data centers unreachable by IP"
    nft = ["ip daddr @tg_dc drop", "ip6 daddr @tg_dc6 drop"]  # nft add rule inet tspu forward ..
    iptables = []                    # optional: iptables <line> in the tspu namespace
    ip6tables = []                   # optional: ip6tables <line> in the tspu namespace
    placement = "tspu"               # optional: "tspu" (hop 2, the default) or "border" (hop 3)
    [dns]                            # optional: what the lab resolver answers instead
    "web.whatsapp.com" = "0.0.0.0"   # an address, or "nxdomain"
    [expect]                         # app -> verdict, or a table with verdict, layer, mechanism
    telegram = { verdict = "blocked", mechanism = "ip_drop" }
    whatsapp = "ok"

``placement`` says which router gets the rules (all of them: nft, iptables and ip6tables). The
border (hop 3) has the tspu's named sets and an empty base chain in ``table inet border``, so
the same rules work there unchanged: ``placement = "border"`` makes each nft line ``nft add rule
inet border forward <line>`` and runs the iptables lines in the border namespace. It is for
testing localization: the same censorship one hop further out. DNS answers are the lab
resolver's, wherever the rules are.

Running one (``run_scenario``): reset both routers, add the rules (in the scenario's router)
and DNS answers, run the probe in the client namespace, restore clean routers (always, in
``finally``), then compute ``analysis.verdicts`` from the run's records and compare each app of
``[expect]`` with them. The verdicts come from the records alone: the scenario's name and
expectation never reach the analysis.

Files are a contract between the lab and people who write their own, so parsing is strict:
unknown keys, wrong types, unknown apps, verdicts, layers or mechanisms (METHOD.md's words, as
``analysis.rules`` holds them) and references to sets the lab does not define are refused with
the file, the rule's index and its line. Errors: ``ScenarioError`` (the file's fault, including a
rule the kernel refuses) and ``ScenarioRunError`` (the probe run failed); see
``probe.lab.errors``.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from probe.model import APPS

from . import doctor, servers
from .errors import LabError, ScenarioError, ScenarioRunError
from .plan import PLACEMENTS, SETS
from .state import locked

if TYPE_CHECKING:
    from .lab import Lab

BUILTIN: Final = (
    "open-network",
    "tg-dc-ip-drop",
    "wa-signal-ip-drop",
    "wa-dns-spoof",
    "wa-dns-nxdomain",
    "signal-sni-rst",
    "signal-sni-throttle",
    "signal-tcp-16-20",
    "tg-mtproto-handshake-drop",
    "wa-prologue-rst",
    "quic-initial-drop",
    "udp-random-loss",
    "call-relays-ip-drop",
    "mobile-udp-drop",
    "calls-open-reflector",
    "calls-cut-after-n",
    "calls-stun-cookie-drop",
    "calls-police-half",
    "calls-tg-reflector-ports",
)
"""The built-in scenarios (``probe/lab/scenarios/<name>.toml``), in the order the demo runs them."""

KEYS: Final = (
    "name",
    "summary",
    "nft",
    "iptables",
    "ip6tables",
    "placement",
    "dns",
    "call_flows",
    "call_duration",
    "expect",
)
"""The top-level keys a scenario file may have."""
RULE_KINDS: Final = ("nft", "iptables", "ip6tables")
DEFAULT_PLACEMENT: Final = PLACEMENTS[0]
"""Where a scenario's rules go unless it says ``placement``: the tspu (hop 2)."""
EXPECT_KEYS: Final = ("verdict", "layer", "mechanism")

SET_NAMES: Final = frozenset(name for base in SETS for name in (base, f"{base}6"))
"""Every named set of ``table inet tspu`` (and of the border's ``table inet border``): LAB.md's
sets and their IPv6 twins."""

# A dropped SYN costs a check its whole timeout; 3 s is thousands of times the lab's round trip
# and keeps a drop scenario short. It also fixes what a policer lets through before the GET gives
# up: ~50 KB at 150 kbit/s, above the analysis's 32 KiB for comparing rates.
CHECK_TIMEOUT: Final = 3.0
# A transaction is at most DNS, connect, handshake and GET, each bounded by CHECK_TIMEOUT; the
# deadline leaves room for that chain and for the concurrency limits' queueing.
RUN_DEADLINE: Final = 20.0
# On top of the deadline: interpreter start-up and the run's own closing analysis (a child).
PROBE_SLACK: Final = 60.0
# Bound on one nft/iptables call: they take milliseconds.
COMMAND_TIMEOUT: Final = 30.0
# Call flows (``call_flows = true``): seconds each flow sends for. The probe's own default is 10 s;
# 4 s keeps a scenario short and still holds 16 bins of 0.25 s, room for the analysis to tell a
# block (nothing after the first second) from a cut (>= 1 s and 4 bins of silence before the end).
DEFAULT_CALL_DURATION: Final = 4.0
CALL_DURATION_RANGE: Final = (1.0, 20.0)
# The apps with a call test (probe.runner.CALL_TESTS), run one after the other; each takes its
# flows' duration, its start lead and interval, LISTEN_AFTER and MARGIN (call_flow.time_budget).
CALL_TEST_APPS: Final = 2
CALL_TEST_OVERHEAD: Final = 3.5

# @name in an nft rule is a set reference, except the raw payload bases (@ll, @nh, @th, @ih,
# nft(8) RAW PAYLOAD EXPRESSION), which are followed by an offset.
_SET_REF: Final = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)(\s*,)?")
_RAW_BASES: Final = frozenset({"ll", "nh", "th", "ih"})
# iptables runs the program given with --modprobe (short -M) to load kernel modules: a scenario
# from a stranger must not choose a program that root runs. getopt accepts any unambiguous
# prefix of a long option, so every prefix of it that --mode (statistic) does not share counts.
_MODPROBE: Final = "--modprobe"


# --- what a scenario is -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioRule:
    """One line of a scenario's ``nft``, ``iptables`` or ``ip6tables`` list."""

    kind: str
    """nft, iptables or ip6tables."""
    index: int
    """1-based position in its list."""
    text: str
    line: int | None
    """Line of the scenario file it is on (None when it could not be located)."""
    placement: str = DEFAULT_PLACEMENT
    """The router it goes in (its scenario's ``placement``): tspu or border."""

    @property
    def label(self) -> str:
        return f"{self.kind} rule {self.index}"

    def command(self) -> str:
        """The command it stands for, as LAB.md writes it (run in the ``placement`` router's
        namespace; an nft rule goes in that router's own table)."""
        if self.kind == "nft":
            return f"nft add rule inet {self.placement} forward {self.text}"
        return f"{self.kind} {self.text}"


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the analysis should conclude for one app; layer and mechanism only where given."""

    app: str
    verdict: str
    layer: str | None = None
    mechanism: str | None = None

    def describe(self) -> str:
        return describe(self.verdict, self.layer, self.mechanism)

    def met_by(self, verdict: str | None, layer: str | None, mechanism: str | None) -> bool:
        return (
            verdict == self.verdict
            and (self.layer is None or layer == self.layer)
            and (self.mechanism is None or mechanism == self.mechanism)
        )

    def to_dict(self) -> dict[str, str | None]:
        return {"verdict": self.verdict, "layer": self.layer, "mechanism": self.mechanism}


def describe(verdict: str | None, layer: str | None, mechanism: str | None) -> str:
    """``blocked (tcp, ip_drop)``, ``blocked (tls)``, ``ok``; ``-`` for no verdict."""
    if verdict is None:
        return "-"
    details = ", ".join(part for part in (layer, mechanism) if part)
    return f"{verdict} ({details})" if details else verdict


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed, validated scenario file."""

    name: str
    summary: str
    source: str
    """Where it came from: the file's path, or ``built-in <name>``."""
    nft: tuple[ScenarioRule, ...] = ()
    iptables: tuple[ScenarioRule, ...] = ()
    ip6tables: tuple[ScenarioRule, ...] = ()
    placement: str = DEFAULT_PLACEMENT
    """The router the rules go in: ``tspu`` (hop 2) or ``border`` (hop 3)."""
    dns: Mapping[str, str] = field(default_factory=dict)
    """Host name -> an address or ``nxdomain`` (normalised)."""
    expect: tuple[Expectation, ...] = ()
    call_flows: bool = False
    """Whether the probe run sends call-shaped flows to the lab's reflector (docs/callflow.md)."""
    call_duration: float = DEFAULT_CALL_DURATION
    """Seconds each call flow sends for (used only with call_flows)."""

    @property
    def rules(self) -> tuple[ScenarioRule, ...]:
        """Every rule, in the order they are applied (nft, then iptables, then ip6tables)."""
        return self.nft + self.iptables + self.ip6tables


# --- reading files ------------------------------------------------------------------------------


def builtin_path(name: str) -> Path:
    """Where a built-in scenario's file is (package data)."""
    return Path(str(importlib.resources.files(__package__) / "scenarios" / f"{name}.toml"))


def builtin_scenarios() -> tuple[Scenario, ...]:
    """Every built-in scenario, in BUILTIN order."""
    return tuple(load_builtin(name) for name in BUILTIN)


def load_builtin(name: str) -> Scenario:
    if name not in BUILTIN:
        raise ScenarioError(
            f"no built-in scenario {name!r} (built in: {', '.join(BUILTIN)}); "
            "give a file's path to run your own"
        )
    path = builtin_path(name)
    return parse_scenario(path.read_text(encoding="utf-8"), f"built-in {name}")


def load_scenario_file(path: str | os.PathLike[str]) -> Scenario:
    """A scenario from a file anywhere."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{source}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    return parse_scenario(text, source)


def find_scenario(spec: str) -> Scenario:
    """A built-in scenario by name, or a file's (a path: it exists, names a directory, or ends
    in .toml)."""
    if os.path.exists(spec) or os.sep in spec or spec.endswith(".toml"):
        return load_scenario_file(spec)
    return load_builtin(spec)


def parse_scenario(text: str, source: str) -> Scenario:
    """Parse and validate a scenario's TOML text; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except ValueError as exc:
        # TOMLDecodeError says "(at line N, column M)": what the author needs.
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ScenarioError(f"{source}: not valid TOML: nested too deeply") from exc
    return _Parser(text, source).scenario(document)


class _Parser:
    """Validation, with the line numbers of the text for the messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.locate = _Locator(text)

    def error(self, problem: str, line: int | None = None) -> ScenarioError:
        where = f"{self.source}, line {line}" if line is not None else self.source
        return ScenarioError(f"{where}: {problem}")

    def scenario(self, document: dict[str, Any]) -> Scenario:
        for key in document:
            if key not in KEYS:
                raise self.error(
                    f"unknown key {key!r}; a scenario has {', '.join(KEYS)} (shared/LAB.md)",
                    self.locate.key(key),
                )
        name = self.text(document, "name", required=True)
        summary = self.text(document, "summary", required=False)
        placement = self.placement(document)
        rules = {kind: self.rules(document, kind, placement) for kind in RULE_KINDS}
        return Scenario(
            name=name,
            summary=summary,
            source=self.source,
            nft=rules["nft"],
            iptables=rules["iptables"],
            ip6tables=rules["ip6tables"],
            placement=placement,
            dns=self.dns(document.get("dns", {})),
            expect=self.expect(document.get("expect")),
            **self.calls(document),
        )

    def calls(self, document: dict[str, Any]) -> dict[str, Any]:
        """``call_flows`` (a boolean) and ``call_duration`` (seconds, only with call flows)."""
        flows = document.get("call_flows", False)
        if not isinstance(flows, bool):
            raise self.error("'call_flows' must be true or false", self.locate.key("call_flows"))
        if "call_duration" not in document:
            return {"call_flows": flows}
        duration = document["call_duration"]
        line = self.locate.key("call_duration")
        low, high = CALL_DURATION_RANGE
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not low <= duration <= high
        ):
            raise self.error(
                f"'call_duration' must be a number of seconds from {low:g} to {high:g}", line
            )
        if not flows:
            raise self.error("'call_duration' needs call_flows = true", line)
        return {"call_flows": flows, "call_duration": float(duration)}

    def placement(self, document: dict[str, Any]) -> str:
        """``placement``: the router the rules go in, one of PLACEMENTS (default the tspu)."""
        value = document.get("placement", DEFAULT_PLACEMENT)
        if not isinstance(value, str) or value not in PLACEMENTS:
            raise self.error(
                f"'placement' must be 'tspu' (hop 2, the default) or 'border' (hop 3), "
                f"not {value!r}",
                self.locate.key("placement"),
            )
        return value

    def text(self, document: dict[str, Any], key: str, *, required: bool) -> str:
        value = document.get(key)
        if value is None:
            if required:
                raise self.error(f"{key!r} is missing")
            return ""
        if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
            raise self.error(f"{key!r} must be a one-line, non-empty string", self.locate.key(key))
        return value.strip()

    def rules(
        self, document: dict[str, Any], kind: str, placement: str
    ) -> tuple[ScenarioRule, ...]:
        value = document.get(kind, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(f"{kind!r} must be a list of strings", self.locate.key(kind))
        lines: list[int | None] = list(self.locate.array_items(kind))
        if len(lines) != len(value):
            lines = [self.locate.key(kind)] * len(value)  # written in a way the locator misses
        rules = tuple(
            ScenarioRule(kind, index, text.strip(), line, placement)
            for index, (text, line) in enumerate(zip(value, lines, strict=True), 1)
        )
        for rule in rules:
            problem = _rule_problem(rule)
            if problem is not None:
                raise self.error(f"{rule.label} ({rule.text!r}): {problem}", rule.line)
        return rules

    def dns(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.error("'dns' must be a table of host name = answer", self.locate.key("dns"))
        answers: dict[str, str] = {}
        for name, answer in value.items():
            line = self.locate.table_key("dns", name)
            if not isinstance(answer, str):
                raise self.error(f"dns.{name}: the answer must be a string", line)
            try:
                answers[servers.normalize_name(name)] = servers.parse_override(answer)
            except LabError as exc:
                raise self.error(f"dns.{name}: {exc}", line) from exc
        return answers

    def expect(self, value: Any) -> tuple[Expectation, ...]:
        # The analysis's vocabulary, from its single source; imported here, not at module import,
        # so that `ringprobe --help` does not pay for pandas.
        from analysis.rules import LAYERS, MECHANISMS, VERDICTS

        if value is None or value == {}:
            raise self.error(
                "no [expect] table: a scenario states the verdict the analysis should reach "
                "for at least one app"
            )
        if not isinstance(value, dict):
            raise self.error("'expect' must be a table of app = verdict", self.locate.key("expect"))
        known = {"verdict": VERDICTS, "layer": LAYERS, "mechanism": MECHANISMS}
        expectations: list[Expectation] = []
        for app, wanted in value.items():
            line = self.locate.table_key("expect", app)
            if app not in APPS:
                raise self.error(f"expect: unknown app {app!r} (apps: {', '.join(APPS)})", line)
            fields: dict[str, Any] = {"verdict": wanted} if isinstance(wanted, str) else wanted
            if not isinstance(fields, dict):
                raise self.error(f"expect.{app}: give a verdict, or a table with verdict", line)
            for key in fields:
                if key not in EXPECT_KEYS:
                    raise self.error(
                        f"expect.{app}: unknown key {key!r} (keys: {', '.join(EXPECT_KEYS)})",
                        line,
                    )
            if "verdict" not in fields:
                raise self.error(f"expect.{app}: 'verdict' is missing", line)
            for key, value_ in fields.items():
                if not isinstance(value_, str) or value_ not in known[key]:
                    raise self.error(
                        f"expect.{app}: {value_!r} is not a {key} "
                        f"(METHOD.md: {', '.join(known[key])})",
                        line,
                    )
            expectations.append(
                Expectation(app, fields["verdict"], fields.get("layer"), fields.get("mechanism"))
            )
        order = {app: i for i, app in enumerate(APPS)}
        return tuple(sorted(expectations, key=lambda e: order[e.app]))


def _rule_problem(rule: ScenarioRule) -> str | None:
    """Why a rule cannot be used as written, or None."""
    if not rule.text:
        return "empty rule"
    if "\n" in rule.text or "\r" in rule.text:
        return "one rule per line"
    if rule.kind == "nft":
        # nft's scripts take ';' as the end of a command: one line must stay one rule.
        if ";" in rule.text:
            return "';' would end the rule and start another nft command; write one rule"
        for match in _SET_REF.finditer(rule.text):
            name, comma = match.group(1), match.group(2)
            if name in _RAW_BASES and comma:
                continue  # @th,96,32: a payload offset, not a set
            if name not in SET_NAMES:
                return (
                    f"@{name} is not a set of the lab; sets are {', '.join(SETS)}, and each "
                    "with a 6 for its IPv6 twin (docs/lab.md)"
                )
        return None
    try:
        words = shlex.split(rule.text)
    except ValueError as exc:
        return f"cannot split into arguments: {exc}"
    for word in words:
        option = word.split("=", 1)[0]
        long_modprobe = len(option) >= 4 and _MODPROBE.startswith(option)
        short_modprobe = option.startswith("-") and not option.startswith("--") and "M" in option
        if long_modprobe or short_modprobe:
            return "--modprobe (-M) is refused: it makes iptables run a program as root"
    return None


class _Locator:
    """Best-effort line numbers of keys and array items in TOML text, for error messages.

    tomllib returns values without positions; this scans the text the simple way scenario files
    are written (a key at the start of its line, tables as [name] or [name.key]). Anything it
    cannot place gets None, and the message names the file without a line."""

    def __init__(self, text: str) -> None:
        self.text = text
        # split("\n"), not splitlines(): line starts must add up to offsets in the text.
        self.lines = text.split("\n")

    def _key_re(self, key: str) -> re.Pattern[str]:
        quoted = re.escape(key)
        return re.compile(rf"""\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*=""")

    def _sections(self) -> Iterator[tuple[str | None, int, str]]:
        """(current table or None at top level, 1-based line number, line) of every line."""
        table: str | None = None
        header = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
        for number, line in enumerate(self.lines, 1):
            found = header.match(line)
            if found:
                table = found.group(1)  # the header line itself belongs to its table
            yield table, number, line

    def key(self, key: str) -> int | None:
        """The line of a top-level key (``key = ...``) or table (``[key]``, ``[key.x]``)."""
        pattern = self._key_re(key)
        for table, number, line in self._sections():
            if table is None and pattern.match(line):
                return number
            if table is not None and (table == key or table.startswith(f"{key}.")):
                return number
        return None

    def table_key(self, table: str, key: str) -> int | None:
        """The line of ``key = ...`` inside ``[table]``, or of the header ``[table.key]``."""
        pattern = self._key_re(key)
        quoted = {key, f'"{key}"', f"'{key}'"}
        for current, number, line in self._sections():
            if current == table and pattern.match(line):
                return number
            sub = current.split(".", 1)[1].strip() if current and "." in current else None
            if current is not None and current.startswith(f"{table}.") and sub in quoted:
                return number
        return self.key(table)

    def array_items(self, key: str) -> list[int]:
        """The line of each string of the top-level array ``key = [...]`` (empty if not found)."""
        start = self.key(key)
        if start is None or not self._key_re(key).match(self.lines[start - 1]):
            return []
        offset = sum(len(line) + 1 for line in self.lines[: start - 1])
        text = self.text
        i = text.index("=", offset) + 1
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text) or text[i] != "[":
            return []
        found: list[int] = []
        depth = 0
        while i < len(text):
            char = text[i]
            if char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
                if depth == 0:
                    return found
            elif char == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
                continue
            elif char in "\"'":
                found.append(text.count("\n", 0, i) + 1)
                i = _string_end(text, i)
                continue
            i += 1
        return []


def _string_end(text: str, start: int) -> int:
    """The index just past the TOML string starting at ``start`` (basic, literal, multi-line)."""
    quote = text[start]
    if text.startswith(quote * 3, start):
        end = text.find(quote * 3, start + 3)
        return len(text) if end < 0 else end + 3
    i = start + 1
    while i < len(text) and text[i] != quote and text[i] != "\n":
        if quote == '"' and text[i] == "\\":
            i += 1  # an escaped character, the closing quote included
        i += 1
    return i + 1


# --- applying -----------------------------------------------------------------------------------


def restore(lab: Lab) -> None:
    """The routers as ``up`` made them: no scenario rule (nft or iptables) in the tspu or the
    border, no DNS override."""
    lab.reset_rules()
    lab.clear_dns_overrides()


def apply_scenario(lab: Lab, scenario: Scenario) -> None:
    """Reset both routers, then add the scenario's rules (in order, in the router its
    ``placement`` names) and DNS answers. A rule the kernel refuses raises ScenarioError naming
    the file, the line and the kernel's message, and the routers are left clean, as they are
    after any other failure here."""
    restore(lab)
    try:
        for rule in scenario.rules:
            _add(lab, scenario, rule)
        if scenario.dns:
            lab.set_dns_overrides(scenario.dns)
    except BaseException:
        restore(lab)
        raise


def _add(lab: Lab, scenario: Scenario, rule: ScenarioRule) -> None:
    program = doctor.find(rule.kind)
    if program is None:
        raise ScenarioError(f"{scenario.source}: {rule.label} needs {rule.kind}, which is missing")
    router = rule.placement
    if rule.kind == "nft":
        # A script on stdin, as Lab.add_rule sends it: the rule's own quoting reaches nft as is.
        done = lab.run_in(
            router,
            [program, "-f", "-"],
            input=f"add rule inet {router} forward {rule.text}\n",
            timeout=COMMAND_TIMEOUT,
        )
    else:
        done = lab.run_in(router, [program, *shlex.split(rule.text)], timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        where = f"{scenario.source}, line {rule.line}" if rule.line else scenario.source
        # A rule in the tspu keeps the message it always had; elsewhere the router is named.
        ran = rule.command() if router == DEFAULT_PLACEMENT else f"{rule.command()} in the {router}"
        raise ScenarioError(
            f"{where}: {rule.label} refused by the kernel: {_kernel_message(done.stderr)} "
            f"(ran: {ran})"
        )


def _kernel_message(stderr: str) -> str:
    """nft's or iptables' complaint in one line, without nft's echo of the rule and carets."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "Error:" in line:
            # nft prefixes the script position: "/dev/stdin:1:37-40: Error: ..."
            return line[line.index("Error:") :]
    return " | ".join(lines[:2]) or "no message"


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppResult:
    """One app of a scenario run: what was expected (None: not in [expect]) and what the
    analysis concluded from the records (verdict None: the run has no row for the app)."""

    app: str
    expected: Expectation | None
    verdict: str | None
    layer: str | None = None
    mechanism: str | None = None
    rule: str | None = None
    evidence: str = ""

    @property
    def got(self) -> str:
        return describe(self.verdict, self.layer, self.mechanism)

    @property
    def passed(self) -> bool | None:
        """True or False for an expected app, None for one the scenario says nothing about."""
        if self.expected is None:
            return None
        return self.expected.met_by(self.verdict, self.layer, self.mechanism)

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "expected": self.expected.to_dict() if self.expected else None,
            "got": {
                "verdict": self.verdict,
                "layer": self.layer,
                "mechanism": self.mechanism,
                "rule": self.rule,
                "evidence": self.evidence,
            },
            "pass": self.passed,
        }


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """A scenario run: per app, expected and got; where the records are; how long it took."""

    scenario: Scenario
    apps: tuple[AppResult, ...]
    records_path: Path
    probe_status: str
    """The run's manifest status: complete, deadline_reached, ..."""
    elapsed: float

    @property
    def passed(self) -> bool:
        """Every expected app got its verdict (and layer / mechanism, where given)."""
        return all(a.passed for a in self.apps if a.expected is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "summary": self.scenario.summary,
            "source": self.scenario.source,
            "passed": self.passed,
            "apps": [a.to_dict() for a in self.apps],
            "records_path": str(self.records_path),
            "probe_status": self.probe_status,
            "elapsed": round(self.elapsed, 2),
        }


def records_dir_for(lab: Lab, scenario: Scenario, keep: Path | None = None) -> Path:
    """Where a run's records go: ``keep/<name>`` when the caller keeps them, else the lab's
    state directory (``scenarios/<name>``, emptied first: only the latest run stays, and
    ``lab down`` removes it)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", scenario.name).strip("._") or "scenario"
    if keep is not None:
        return keep / safe
    directory = lab.state_dir / "scenarios" / safe
    shutil.rmtree(directory, ignore_errors=True)
    return directory


def run_scenario(
    lab: Lab,
    scenario: Scenario,
    *,
    keep_records: Path | None = None,
    timeout: float = CHECK_TIMEOUT,
    deadline: float = RUN_DEADLINE,
    probe_args: Sequence[str] = (),
) -> ScenarioResult:
    """Apply the scenario to a lab that is up, run the probe in its client namespace, restore
    the routers, and judge the run's records. One scenario at a time per lab (a lock file).
    ``probe_args``: more ``ringprobe run`` options, e.g. the metadata a sample data set spreads
    its runs over (``--asn``, ``--cc``, ``--network-type``, ``--lab-date``)."""
    started = time.monotonic()
    if not lab.catalog_path.exists():
        raise LabError(f"lab {lab.name!r} is not up; run 'ringprobe lab up' first")
    options = ["--timeout", f"{timeout:g}", "--json", *probe_args]
    if scenario.call_flows:
        options += lab.call_flow_args(scenario.call_duration)
        deadline = max(deadline, call_deadline(scenario.call_duration))
    options += ["--deadline", f"{deadline:g}"]
    with locked(lab.state_dir / "scenario.lock"):
        out = records_dir_for(lab, scenario, keep_records)
        apply_scenario(lab, scenario)
        try:
            done = lab.run_probe(out, options, timeout=deadline + PROBE_SLACK)
        except subprocess.TimeoutExpired as exc:
            raise ScenarioRunError(
                f"{scenario.name}: the probe run outlived {deadline + PROBE_SLACK:.0f} s"
            ) from exc
        finally:
            restore(lab)
    records_path, status = _run_output(scenario, done)
    apps = judge(scenario, records_path)
    return ScenarioResult(scenario, apps, records_path, status, time.monotonic() - started)


def call_deadline(duration: float) -> float:
    """The least run deadline that leaves every app's call test of ``duration`` its time: the
    tests run one after the other, and the runner starts one only with its whole budget left."""
    return CALL_TEST_APPS * (duration + CALL_TEST_OVERHEAD) + 2.0


def _run_output(scenario: Scenario, done: subprocess.CompletedProcess[str]) -> tuple[Path, str]:
    """The records file and manifest status from ``ringprobe run --json``'s summary."""
    tail = " | ".join(done.stderr.strip().splitlines()[-3:]) or "no message"
    if done.returncode != 0:
        raise ScenarioRunError(
            f"{scenario.name}: the probe run exited with status {done.returncode}: {tail}"
        )
    try:
        summary = json.loads(done.stdout)
        path = Path(summary["records_path"])
        status = str(summary["status"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ScenarioRunError(
            f"{scenario.name}: the probe run printed no summary ({exc}): {tail}"
        ) from exc
    if not path.exists():
        raise ScenarioRunError(f"{scenario.name}: the probe run wrote no records ({path})")
    return path, status


def judge(scenario: Scenario, records_path: Path) -> tuple[AppResult, ...]:
    """The analysis's verdicts on one run's records, set against the scenario's [expect]."""
    import analysis  # pandas: loaded only when there is something to judge

    table = analysis.verdicts(analysis.load(records_path))
    rows = {str(row["app"]): row for row in table.to_dict(orient="records")}
    expected = {e.app: e for e in scenario.expect}
    order = [*APPS, *sorted(set(rows) - set(APPS))]
    results: list[AppResult] = []
    for app in order:
        row = rows.get(app)
        if row is None:
            if app in expected:
                results.append(AppResult(app, expected[app], None, evidence="no records"))
            continue
        results.append(
            AppResult(
                app=app,
                expected=expected.get(app),
                verdict=_text(row["verdict"]),
                layer=_text(row["layer"]),
                mechanism=_text(row["mechanism"]),
                rule=_text(row["rule"]),
                evidence=_text(row["evidence"]) or "",
            )
        )
    return tuple(results)


def _text(value: object) -> str | None:
    """A categorical cell as text; None for NA (pandas gives NaN or None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text not in ("nan", "<NA>") else None


def run_many(
    lab: Lab, scenarios: Sequence[Scenario], **options: Any
) -> Iterator[tuple[Scenario, ScenarioResult | ScenarioError | ScenarioRunError]]:
    """Run scenarios one after the other, yielding each with its result or the error that
    stopped it (the next still runs: one bad scenario does not hide the others). Options as
    run_scenario's."""
    for scenario in scenarios:
        try:
            yield scenario, run_scenario(lab, scenario, **options)
        except (ScenarioError, ScenarioRunError) as exc:
            yield scenario, exc


__all__ = [
    "BUILTIN",
    "CHECK_TIMEOUT",
    "DEFAULT_CALL_DURATION",
    "DEFAULT_PLACEMENT",
    "KEYS",
    "PLACEMENTS",
    "RUN_DEADLINE",
    "SET_NAMES",
    "AppResult",
    "Expectation",
    "Scenario",
    "ScenarioResult",
    "ScenarioRule",
    "apply_scenario",
    "builtin_path",
    "builtin_scenarios",
    "call_deadline",
    "describe",
    "find_scenario",
    "judge",
    "load_builtin",
    "load_scenario_file",
    "parse_scenario",
    "records_dir_for",
    "restore",
    "run_many",
    "run_scenario",
]
