"""Suite-wide safety: every test runs with the probe's allow-list set to loopback and the lab's
documentation ranges, so even an accidental default run sends nothing anywhere else."""

from __future__ import annotations

import os

from probe.allowlist import ENV_VAR, LAB_NETS

# Set at import time, before any test module (or subprocess it starts) can read the environment.
os.environ[ENV_VAR] = ",".join(LAB_NETS)
