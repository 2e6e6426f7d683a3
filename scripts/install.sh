#!/usr/bin/env bash
# Install what ringprobe needs on a fresh Debian machine: system packages (as root), then the
# Python packages into ./.venv. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Python with venv support; the lab's tools join this list as the lab grows.
APT_PACKAGES=(python3 python3-venv python3-pip ca-certificates)

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
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
