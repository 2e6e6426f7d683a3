"""Suite-wide safety: every test runs with the probe's allow-list set to loopback and the lab's
documentation ranges, so even an accidental default run sends nothing anywhere else."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from probe import config
from probe.allowlist import ENV_VAR, LAB_NETS
from probe.consent import CONSENT_VERSION

# Set at import time, before any test module (or subprocess it starts) can read the environment.
os.environ[ENV_VAR] = ",".join(LAB_NETS)

# The volunteer's earlier consent (`ringprobe consent`): many tests run `ringprobe run` with the
# default vantage on loopback, without a terminal, so they stand for a volunteer who agreed once.
# Recorded through the consent API in a fresh directory, never the user's own config directory;
# subprocesses inherit it. tests/unit/test_consent.py makes its own empty directories.
_CONFIG_DIR = tempfile.mkdtemp(prefix="ringprobe-test-config-")
atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)
os.environ[config.ENV_CONFIG_DIR] = _CONFIG_DIR
config.record_consent(CONSENT_VERSION)
