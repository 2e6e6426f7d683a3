#!/usr/bin/env bash
# The README's test command: install everything, then run every check the project holds itself to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

# The suite's allow-list, set globally (tests/conftest.py sets it too): even an accidental default
# run sends nothing outside loopback and the documentation ranges.
export RINGPROBE_ALLOW_NETS="127.0.0.0/8,::1/128,192.0.2.0/24,198.51.100.0/24,203.0.113.0/24,2001:db8::/32"

echo "== ruff check";        .venv/bin/ruff check .
echo "== ruff format";       .venv/bin/ruff format --check .
echo "== mypy";              .venv/bin/mypy
echo "== pytest";            .venv/bin/pytest "$@"
