"""The ringprobe reflector: the cooperating server an operator runs outside the censored network.

UDP echo on the call ports (docs/callflow.md: a datagram whose trailer's MAC verifies under the
shared secret gets one echo of exactly its length, with the reflector's receive counters), and a
TLS endpoint that accepts any SNI and streams bytes on request for the SNI-throttling test
(probe.reflector.stream). ``ringprobe reflector`` runs it; ``Reflector`` is the library object.

Exceptions (all ``RingprobeError``, so the CLI reports them in one line):

    ReflectorError
    ├── ConfigError     a config file, option or secret is unusable (names file and key)
    └── BindError       a socket could not be bound (names the transport, address and port)
"""

from __future__ import annotations

from probe.reflector.config import Config, ConfigError, ReflectorError, load_config
from probe.reflector.server import BindError, Reflector

__all__ = ["BindError", "Config", "ConfigError", "Reflector", "ReflectorError", "load_config"]
