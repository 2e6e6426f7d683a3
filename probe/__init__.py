"""ringprobe's volunteer-side package: the catalog, the checks, the runner and the CLI.

Importing this package is cheap on purpose: heavy dependencies (aiohttp, dnspython, scapy, aioquic)
are imported by the modules that use them, so ``ringprobe --help`` starts fast.
"""

__version__ = "0.1.0"

SOFTWARE_NAME = "ringprobe"

__all__ = ["SOFTWARE_NAME", "__version__"]
