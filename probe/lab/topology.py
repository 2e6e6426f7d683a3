"""The namespaces, links, addresses and routes of a lab, as ``ip -batch`` lines (pure), and the
few calls that apply them.

Each veth pair is created from inside the namespace on its client side with its peer placed
straight into the neighbour (``link add NAME type veth peer name PEER netns NEIGHBOUR``): no
interface of the lab ever exists in the root namespace, so the host's networking is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from .plan import LINKS, NAMESPACES, Plan

ROUTERS: Final = ("isp", "tspu", "border")

# Every namespace: no duplicate address detection (nothing else is on these links, and DAD would
# hold each IPv6 address "tentative" for a second), no router advertisements, and no ICMP rate
# limit (icmp_ratelimit, icmpv6 ratelimit in ip-sysctl.rst), so a localization scan that sends
# many expiring probes gets every time-exceeded back.
_COMMON_SYSCTLS: Final = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv6.icmp.ratelimit=0",
)
# Routers forward (and so decrement TTL / hop limit and answer time-exceeded, RFC 1812 §5.3.1).
_ROUTER_SYSCTLS: Final = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

# veth hands the kernel's 64 KiB GSO super-packets to the next namespace whole; a real link
# carries MTU-sized packets, and that is what a censor's byte counters and policers act on. One
# segment per packet (ip-link(8) gso_max_segs) makes a cut-off after N bytes cut near N, not at
# the next 64 KiB boundary.
Runner = Callable[[Sequence[str], str | None], None]
"""Runs argv (with optional stdin text), raising LabSetupError on failure."""


def namespace(prefix: str, role: str) -> str:
    """The namespace name of a role in the lab with this prefix, e.g. ``rp1a2b-tspu``."""
    return f"{prefix}-{role}"


def sysctls(role: str) -> tuple[str, ...]:
    return _COMMON_SYSCTLS + (_ROUTER_SYSCTLS if role in ROUTERS else ())


def batch(prefix: str, role: str, plan: Plan) -> list[str]:
    """``ip -n <namespace> -batch -`` lines that configure one namespace. Run them in NAMESPACES
    order: each creates the link to its right-hand neighbour, whose other end the neighbour's
    own batch then configures."""
    index = NAMESPACES.index(role)
    left = LINKS[index - 1] if index > 0 else None
    right = LINKS[index] if index < len(LINKS) else None
    lines = ["link set lo up"]
    if right is not None:
        peer = namespace(prefix, right.right)
        lines.append(f"link add name {right.right} type veth peer name {role} netns {peer}")
        lines += [
            f"addr add {right.left_v4}/{right.net_v4.prefixlen} dev {right.right}",
            f"addr add {right.left_v6}/{right.net_v6.prefixlen} dev {right.right} nodad",
            f"link set {right.right} gso_max_segs 1",
            f"link set {right.right} up",
            f"route add default via {right.right_v4}",
            f"route add ::/0 via {right.right_v6}",
        ]
    if left is not None:
        lines += [
            f"addr add {left.right_v4}/{left.net_v4.prefixlen} dev {left.left}",
            f"addr add {left.right_v6}/{left.net_v6.prefixlen} dev {left.left} nodad",
            f"link set {left.left} gso_max_segs 1",
            f"link set {left.left} up",
        ]
        # Links further towards the client are reached through the left neighbour.
        for farther in LINKS[: index - 1]:
            lines.append(f"route add {farther.net_v4} via {left.left_v4}")
            lines.append(f"route add {farther.net_v6} via {left.left_v6}")
    if role == "internet":
        for address in plan.service_addresses():
            length = 128 if ":" in address else 32
            lines.append(f"addr add {address}/{length} dev lo")
    return lines


def build(ip: str, sysctl: str, prefix: str, plan: Plan, run: Runner) -> None:
    """Create and wire every namespace of the lab (the namespaces must not exist yet)."""
    names = [namespace(prefix, role) for role in NAMESPACES]
    run([ip, "-batch", "-"], "".join(f"netns add {name}\n" for name in names))
    # Before any link exists, so the settings for new interfaces (default.*) apply to them.
    for role, name in zip(NAMESPACES, names, strict=True):
        run([ip, "netns", "exec", name, sysctl, "-q", "-w", *sysctls(role)], None)
    for role, name in zip(NAMESPACES, names, strict=True):
        run(
            [ip, "-n", name, "-batch", "-"],
            "".join(f"{line}\n" for line in batch(prefix, role, plan)),
        )


def existing(ip_netns_list: str, prefix: str) -> list[str]:
    """The lab's namespaces in the output of ``ip netns list`` (names, NAMESPACES order)."""
    present = {line.split()[0] for line in ip_netns_list.splitlines() if line.strip()}
    return [namespace(prefix, r) for r in NAMESPACES if namespace(prefix, r) in present]
