#!/usr/bin/env bash
# The README's first command: install, then run the lab demo. The lab (five network namespaces
# with real servers, TSPU-like rules in the middle) runs every built-in scenario, the probe
# measures each from the lab's client namespace, and the analysis's verdicts are printed next to
# what each scenario expects: scenario / app / expected / got / pass. Exit status 1 on any miss.
# Needs root on Linux (network namespaces); `ringprobe lab doctor` says what else is missing.
# Extra arguments go to `ringprobe lab demo` (e.g. --json, --keep-records DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The probe in the lab is always limited to the lab's ranges; this keeps any other run from this
# shell limited to loopback and the documentation ranges too.
export RINGPROBE_ALLOW_NETS="127.0.0.0/8,::1/128,192.0.2.0/24,198.51.100.0/24,203.0.113.0/24,2001:db8::/32"
exec .venv/bin/ringprobe lab demo "$@"
