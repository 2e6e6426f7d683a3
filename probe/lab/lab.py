"""``Lab``: bring a lab up, take it down, ask how it is, and act inside it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from probe.allowlist import ENV_VAR as ALLOW_ENV
from probe.targets import Catalog, builtin_catalog

from . import doctor, pki, plan, procs, servers, topology
from .errors import LabError, LabNameError, LabSetupError, LabUnavailable
from .state import STATE_ROOT, LabState, load, locked, save

DEFAULT_NAME: Final = "default"
NETNS_ETC: Final = Path("/etc/netns")
# Bumped when what `up` builds changes, so an `up` after an upgrade rebuilds an older lab.
# 2: large bodies on every path, 4 KiB TLS records, no GSO on veths; 3: Telegram DC and
# WhatsApp chat emulators (probe.lab.emulators) in place of silent TCP listeners; 4: the ringprobe
# reflector (call flows) on the reflector set's first address, with a secret made at up; 5: the
# border's ``table inet border`` (the same sets and empty chain forward as the tspu's), for
# scenarios placed at hop 3
BUILD_VERSION: Final = 5
# Servers start in well under a second; this bounds a slow machine, not a normal start.
READY_TIMEOUT: Final = 20.0
# A single `ip`/`nft`/`sysctl` call takes milliseconds.
COMMAND_TIMEOUT: Final = 30.0
# dnsmasq re-reads its hosts file within milliseconds of SIGHUP.
RELOAD_TIMEOUT: Final = 5.0

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def prefix_for(name: str) -> str:
    """The namespace prefix of a lab: ``rp`` and 4 hex digits of the name's SHA-256."""
    return "rp" + hashlib.sha256(name.encode()).hexdigest()[:4]


@dataclass(frozen=True, slots=True)
class UpResult:
    elapsed: float
    """Seconds ``up`` took."""
    reused: bool
    """True when a healthy lab of the same build was already up and was left as it was."""


@dataclass(frozen=True, slots=True)
class DownResult:
    stopped: tuple[str, ...]
    """``name (pid N)`` of every process stopped."""
    namespaces: tuple[str, ...]
    """Namespaces removed."""
    elapsed: float


@dataclass(frozen=True, slots=True)
class LabStatus:
    name: str
    prefix: str
    state: str
    """none (no lab), building, or up."""
    namespaces: tuple[str, ...]
    """The lab's namespaces that exist."""
    processes: Mapping[str, bool] = field(default_factory=dict)
    """Recorded server -> running."""
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.state == "up" and not self.problems


class Lab:
    """One lab, by name. Nothing happens on construction; ``up()`` builds it.

    The named sets (``sets``), addresses and the lab catalog are known before ``up`` (they
    depend only on the catalog); everything else needs the lab up. Only root on Linux can build
    one (``LabUnavailable`` says why not).
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        catalog: Catalog | None = None,
        state_root: Path = STATE_ROOT,
        netns_etc: Path = NETNS_ETC,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise LabNameError(
                f"lab name {name!r}: use 1-32 lower-case letters, digits and '-', "
                "starting with a letter or digit"
            )
        self.name = name
        self.prefix = prefix_for(name)
        self._catalog = catalog
        self._state_root = state_root
        self.state_dir = state_root / name
        self._layout = servers.Layout(self.state_dir)
        self._netns_etc = netns_etc / self.namespace("client")

    # --- what the lab is made of -------------------------------------------------------------

    @functools.cached_property
    def plan(self) -> plan.Plan:
        """Addresses, sets, listeners and the lab catalog's entries."""
        return plan.build_plan(self._catalog if self._catalog is not None else builtin_catalog())

    def namespace(self, role: str) -> str:
        """The namespace name of a role (client, isp, tspu, border, internet)."""
        if role not in plan.NAMESPACES:
            raise LabError(f"no namespace {role!r} in a lab (known: {', '.join(plan.NAMESPACES)})")
        return topology.namespace(self.prefix, role)

    @property
    def namespaces(self) -> dict[str, str]:
        return {role: self.namespace(role) for role in plan.NAMESPACES}

    @property
    def sets(self) -> dict[str, tuple[str, ...]]:
        """nft set name in ``table inet tspu`` (and the border's ``table inet border``) -> its
        addresses: ``<set>`` holds IPv4, ``<set>6`` IPv6 (an nft set holds one family)."""
        return self.plan.sets()

    @property
    def catalog_path(self) -> Path:
        """The lab catalog (TOML, probe/targets format), written by ``up``."""
        return self.state_dir / "catalog.toml"

    @property
    def ca_file(self) -> Path:
        """The lab CA's certificate (PEM), made by ``up``: the probe's ``--ca-file``."""
        return self.state_dir / "ca.pem"

    @property
    def client_resolv_conf(self) -> Path:
        """The client's resolv.conf (``ip netns exec`` bind-mounts it over /etc/resolv.conf)."""
        return self._netns_etc / "resolv.conf"

    @property
    def resolver(self) -> str:
        """The lab resolver's IPv4 address (the ``dns`` set)."""
        address = self.plan.resolver.v4
        assert address is not None
        return address

    @property
    def doh_url(self) -> str:
        return self.plan.doh_url

    @property
    def reflector_address(self) -> str:
        """The lab's ringprobe reflector, IPv4 (it listens on the IPv6 twin too)."""
        address = self.plan.reflector.v4
        assert address is not None
        return address

    @property
    def reflector_secret_file(self) -> Path:
        """The secret the lab's reflector shares with the probe (hex, 0600), made by ``up``."""
        return self._layout.reflector_secret

    def call_flow_args(self, duration: float) -> list[str]:
        """``ringprobe run`` options that send call flows of ``duration`` seconds to the lab's
        reflector (docs/callflow.md)."""
        return [
            "--reflector",
            self.reflector_address,
            "--reflector-secret-file",
            str(self.reflector_secret_file),
            "--call-duration",
            f"{duration:g}",
        ]

    @property
    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _lock_path(self) -> Path:
        return self._state_root / f"{self.name}.lock"

    def _config_hash(self, tools: Mapping[str, str]) -> str:
        text = "\n".join([str(BUILD_VERSION), self.plan.to_json(), repr(sorted(tools.items()))])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # --- up / down / status ------------------------------------------------------------------

    def up(self) -> UpResult:
        """Build the lab, or reuse an identical healthy one (after removing any scenario rules
        and DNS overrides: ``up`` always returns an open lab). A lab that crashed or is half
        built (stale namespaces, dead servers) is removed first."""
        started = time.monotonic()
        tools = doctor.require()
        self._state_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        with locked(self._lock_path):
            state = load(self._state_path)
            config_hash = self._config_hash(tools)
            if (
                state is not None
                and state.config_hash == config_hash
                and self._status(state, tools["ip"]).healthy
            ):
                # `up` means an open lab: drop what a scenario left behind.
                self.reset_rules()
                if state.dns_overrides:
                    self._apply_dns_overrides(state, {})
                return UpResult(time.monotonic() - started, reused=True)
            self._check_prefix_free()
            self._teardown(state, tools["ip"])
            try:
                self._build(tools, config_hash)
            except BaseException:
                # Leave nothing running; keep the logs for the error message's reader.
                self._teardown(load(self._state_path), tools["ip"], keep_logs=True)
                raise
        return UpResult(time.monotonic() - started, reused=False)

    def down(self) -> DownResult:
        """Stop every process the lab started and remove its namespaces and files. Safe to call
        when the lab is down, half built, or crashed."""
        started = time.monotonic()
        ip = self._ip()
        # Even without a state directory: the lab's namespaces may outlive it.
        self._state_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        with locked(self._lock_path):
            stopped, removed = self._teardown(load(self._state_path), ip)
            self._lock_path.unlink(missing_ok=True)
        return DownResult(stopped, removed, time.monotonic() - started)

    def status(self) -> LabStatus:
        """How the lab is: namespaces present, servers running, sockets listening."""
        return self._status(load(self._state_path), self._ip())

    def _ip(self) -> str:
        if doctor.find("ip") is None or os.geteuid() != 0:
            # Cheaper than a full doctor run, and enough to say why nothing can be done.
            doctor.require(doctor.TOOLS[:1])
        ip = doctor.find("ip")
        assert ip is not None
        return ip

    def _status(self, state: LabState | None, ip: str) -> LabStatus:
        present = tuple(topology.existing(self._netns_list(ip), self.prefix))
        problems: list[str] = []
        if state is None:
            if present:
                problems.append(f"stale namespaces without state: {', '.join(present)}")
            return LabStatus(self.name, self.prefix, "none", present, {}, tuple(problems))
        missing = [n for n in state.namespaces if n not in present]
        if missing:
            problems.append(f"namespaces missing: {', '.join(missing)}")
        running = {p.name: procs.is_running(p) for p in state.processes}
        dead = [name for name, ok in running.items() if not ok]
        if dead:
            problems.append(f"servers not running: {', '.join(dead)}")
        wanted = servers.expected_sockets(self.plan)
        for name in wanted:
            if name not in running:
                problems.append(f"server never started: {name}")
        alive = [p for p in state.processes if running.get(p.name)]
        found = procs.sockets(alive[0].pid) if alive else None
        if found is not None:
            for name, sockets in wanted.items():
                if running.get(name) and not sockets <= found:
                    problems.append(f"{name} is not listening on all its sockets")
        return LabStatus(self.name, self.prefix, state.status, present, running, tuple(problems))

    def _check_prefix_free(self) -> None:
        """Two names whose prefixes collide would share namespaces: refuse the second."""
        for other in self._state_root.glob("*/state.json"):
            if other.parent.name == self.name:
                continue
            try:
                state = load(other)
            except LabSetupError:
                continue
            if state is not None and state.prefix == self.prefix:
                raise LabNameError(
                    f"lab {self.name!r} would use the namespace prefix {self.prefix} of the "
                    f"running lab {state.name!r}; choose another name"
                )

    # --- building -----------------------------------------------------------------------------

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> None:
        try:
            done = subprocess.run(  # noqa: S603 - the lab's own fixed programs
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabSetupError(f"{' '.join(argv[:4])}: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().replace("\n", " | ")
            raise LabSetupError(f"{' '.join(argv[:6])} failed: {message}")

    def _build(self, tools: Mapping[str, str], config_hash: str) -> None:
        layout = self._layout
        layout.make()
        state = LabState(
            name=self.name,
            prefix=self.prefix,
            config_hash=config_hash,
            namespaces=list(self.namespaces.values()),
            netns_etc=str(self._netns_etc),
        )
        # Recorded before anything exists, so a crash part-way is cleaned by the next up/down.
        save(self._state_path, state)
        lab_plan = self.plan
        topology.build(tools["ip"], tools["sysctl"], self.prefix, lab_plan, self._run)
        for router in plan.PLACEMENTS:
            # The same sets and empty chain in every router a scenario may place its rules in.
            nft_file = layout.conf / f"{router}.nft"
            nft_file.write_text(plan.render_nft(lab_plan, router))
            namespace = self.namespace(router)
            self._run([tools["ip"], "netns", "exec", namespace, tools["nft"], "-f", str(nft_file)])

        self._netns_etc.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.client_resolv_conf.write_text(
            f"# ringprobe lab {self.name!r}: the lab resolver (written by `ringprobe lab up`)\n"
            f"nameserver {self.resolver}\n"
        )
        authority = pki.make_authority(self.name, self.ca_file, self.state_dir / "ca-key.pem")
        self.catalog_path.write_text(plan.render_catalog(lab_plan, self.name))
        (self.state_dir / "plan.json").write_text(lab_plan.to_json() + "\n")

        specs = servers.prepare(lab_plan, layout, tools, authority, {})
        internet = self.namespace("internet")
        for spec in specs:
            argv = (tools["ip"], "netns", "exec", internet, *spec.argv)
            state.processes.append(procs.spawn(spec.name, argv, layout.log(spec.name)))
            save(self._state_path, state)
        self._wait_ready(state, {s.name: s.sockets for s in specs})
        state.status = "up"
        save(self._state_path, state)

    def _wait_ready(self, state: LabState, wanted: Mapping[str, frozenset[procs.Socket]]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        missing: dict[str, frozenset[procs.Socket]] = dict(wanted)
        while True:
            for record in state.processes:
                if not procs.is_running(record):
                    raise LabSetupError(
                        f"{record.name} ({Path(record.argv[4]).name}) exited while starting: "
                        f"{procs.tail(record.log) or 'no output'} (log: {record.log})"
                    )
            found = procs.sockets(state.processes[0].pid) or set()
            missing = {name: s for name, s in missing.items() if not s <= found}
            if not missing:
                return
            if time.monotonic() > deadline:
                name, sockets = next(iter(missing.items()))
                example = sorted(sockets - found)[0]
                raise LabSetupError(
                    f"{name} did not listen on {example[0]} {example[1]}:{example[2]} within "
                    f"{READY_TIMEOUT:.0f} s (log: {self._layout.log(name)})"
                )
            time.sleep(procs.POLL_INTERVAL)

    # --- tearing down ------------------------------------------------------------------------

    def _netns_list(self, ip: str) -> str:
        done = subprocess.run(  # noqa: S603 - fixed program and arguments
            [ip, "netns", "list"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return done.stdout

    def _teardown(
        self, state: LabState | None, ip: str, *, keep_logs: bool = False
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        stopped = []
        if state is not None:
            stopped = [f"{p.name} (pid {p.pid})" for p in procs.stop(state.processes)]
        present = topology.existing(self._netns_list(ip), self.prefix)
        # Anything else still inside the lab's namespaces (started through run_in, or by an up
        # that crashed before recording it) would keep a deleted namespace alive.
        for name in present:
            done = subprocess.run(  # noqa: S603 - fixed program and arguments
                [ip, "netns", "pids", name],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
            pids = [int(p) for p in done.stdout.split() if p.isdigit()]
            stopped += [f"process in {name} (pid {pid})" for pid in procs.stop_pids(pids)]
        if present:
            self._run([ip, "-force", "-batch", "-"], "".join(f"netns del {n}\n" for n in present))
        etc = Path(state.netns_etc) if state is not None and state.netns_etc else self._netns_etc
        shutil.rmtree(etc, ignore_errors=True)
        with contextlib.suppress(OSError):
            etc.parent.rmdir()  # /etc/netns, only if no other namespace uses it
        if keep_logs:
            for child in self.state_dir.iterdir() if self.state_dir.exists() else ():
                if child != self._layout.logs:
                    _remove(child)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return tuple(stopped), tuple(present)

    # --- acting inside the lab ---------------------------------------------------------------

    def run_in(
        self,
        role: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program inside one of the lab's namespaces (``ip netns exec``), bounded by
        ``timeout``; output captured as text."""
        return subprocess.run(  # noqa: S603 - the caller's argv, run inside the lab only
            [self._ip(), "netns", "exec", self.namespace(role), *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def add_rule(self, rule: str, *, router: str = "tspu") -> None:
        """Append a rule to ``table inet tspu`` chain ``forward`` (``nft add rule inet tspu
        forward <rule>``, as LAB.md's scenario files say); ``router="border"``: to the border's
        ``table inet border`` instead (hop 3)."""
        self._nft(f"add rule inet {router} forward {rule}\n", router)

    def reset_rules(self) -> None:
        """Put every rule router (the tspu and the border, plan.PLACEMENTS) back as ``up`` left
        it: chain ``forward`` empty (the sets stay) and no other table, so iptables rules of a
        scenario (iptables-nft keeps them in tables such as ``ip mangle``) go too."""
        for router in plan.PLACEMENTS:
            listing = self._nft("list tables\n", router)
            script = [f"flush chain inet {router} forward"]
            for line in listing.splitlines():
                words = line.split()
                if len(words) == 3 and words[0] == "table" and words[1:] != ["inet", router]:
                    script.append(f"delete table {words[1]} {words[2]}")
            self._nft("".join(f"{line}\n" for line in script), router)

    def _nft(self, script: str, router: str = "tspu") -> str:
        if router not in plan.PLACEMENTS:
            raise LabError(
                f"no rule table in {router!r} (routers with one: {', '.join(plan.PLACEMENTS)})"
            )
        nft = doctor.find("nft")
        if nft is None:
            raise LabUnavailable("nft is missing; see 'ringprobe lab doctor'")
        done = self.run_in(router, [nft, "-f", "-"], input=script, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise LabError(f"nft refused {script.strip()!r} in the {router}: {done.stderr.strip()}")
        return done.stdout

    def set_dns_overrides(self, overrides: Mapping[str, str]) -> None:
        """Make the lab resolver answer differently for some names: ``"0.0.0.0"`` (or any
        address) instead of the lab address, or ``"nxdomain"``. Replaces earlier overrides; the
        DoH resolver keeps answering the truth."""
        wanted = {
            servers.normalize_name(k): servers.parse_override(v) for k, v in overrides.items()
        }
        self._ip()
        with locked(self._lock_path):
            state = load(self._state_path)
            if state is None or state.status != "up":
                raise LabError(f"lab {self.name!r} is not up; run 'ringprobe lab up' first")
            self._apply_dns_overrides(state, wanted)

    def _apply_dns_overrides(self, state: LabState, wanted: Mapping[str, str]) -> None:
        """Rewrite the resolver's hosts file and wait until it has re-read it (lock held)."""
        resolver = next((p for p in state.processes if p.name == "resolver"), None)
        if resolver is None or not procs.is_running(resolver):
            raise LabSetupError(f"the resolver of lab {self.name!r} is not running")
        log = self._layout.log("resolver")
        marker = f"read {self._layout.hosts}"  # dnsmasq logs this line each time it reads
        before = _count(log, marker)
        tmp = self._layout.hosts.with_suffix(".tmp")
        tmp.write_text(servers.render_hosts(self.plan.names(), wanted))
        os.replace(tmp, self._layout.hosts)
        os.kill(resolver.pid, signal.SIGHUP)  # dnsmasq(8): SIGHUP re-reads --addn-hosts
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while _count(log, marker) <= before:
            if time.monotonic() > deadline:
                raise LabSetupError(f"the resolver did not reload its hosts (log: {log})")
            time.sleep(procs.POLL_INTERVAL)
        state.dns_overrides = dict(wanted)
        save(self._state_path, state)

    def clear_dns_overrides(self) -> None:
        """The lab resolver answers every name with its lab address again."""
        self.set_dns_overrides({})

    def probe_command(self, out_dir: Path, extra_args: Sequence[str] = ()) -> list[str]:
        """The command line of a probe run from the client namespace against the lab catalog,
        allowed to contact the lab's ranges only."""
        allow = [arg for net in plan.LAB_RANGES for arg in ("--allow-net", net)]
        return [
            self._ip(),
            "netns",
            "exec",
            self.namespace("client"),
            sys.executable,
            "-m",
            "probe.cli",
            "run",
            "--targets",
            str(self.catalog_path),
            "--ca-file",
            str(self.ca_file),
            *allow,
            "--doh-url",
            self.doh_url,
            "--vantage",
            "lab",
            "--out",
            str(out_dir),
            *extra_args,
        ]

    def run_probe(
        self, out_dir: Path, extra_args: Sequence[str] = (), *, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ringprobe run`` in the client namespace (see probe_command); bounded."""
        if not self.catalog_path.exists():
            raise LabError(f"lab {self.name!r} is not up; run 'ringprobe lab up' first")
        # The allow-list is the union of --allow-net and the environment's: drop the latter so
        # the lab's ranges are all the probe may contact.
        env = {k: v for k, v in os.environ.items() if k != ALLOW_ENV}
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            self.probe_command(out_dir, extra_args),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _count(path: Path, marker: str) -> int:
    try:
        return path.read_text(errors="replace").count(marker)
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
