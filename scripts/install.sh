#!/usr/bin/env bash
# Install what ringprobe needs on a fresh Debian machine: system packages (as root), then the
# Python packages into ./.venv. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Python with venv support, then the lab's tools (probe/lab/doctor.py lists the
# same: namespaces and routing, nftables/iptables, and the real servers of the lab's internet;
# iputils-ping for the lab tests' TTL probes).
APT_PACKAGES=(python3 python3-venv python3-pip ca-certificates
  iproute2 procps nftables iptables dnsmasq-base nginx coturn dnsdist ngtcp2-server iputils-ping)

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    # The lab starts nginx, coturn and dnsdist itself, inside its namespaces; keep the packages'
    # own services from starting on the host while they install (policy-rc.d, exit 101 = deny).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
  else
    echo "install: not root, skipping apt-get (${APT_PACKAGES[*]} must already be installed)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "install: ready (.venv/bin/ringprobe $(.venv/bin/ringprobe --version | awk '{print $NF}'))"
