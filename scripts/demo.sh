#!/usr/bin/env bash
# The README's first command: install, then run the demo. Today the demo is a loopback run of
# the probe; the lab demo (emulated censored network, all built-in scenarios) replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RINGPROBE_ALLOW_NETS="127.0.0.0/8,::1/128,192.0.2.0/24,198.51.100.0/24,203.0.113.0/24,2001:db8::/32"
exec .venv/bin/python scripts/loopback_demo.py "$@"
