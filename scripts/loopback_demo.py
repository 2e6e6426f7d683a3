"""A small demonstration on loopback, until the lab (network namespaces, real servers, TSPU-like
rules) replaces it: three endpoints on 127.0.9.x that accept, refuse, and silently drop, measured
by `ringprobe run` with its allow-list set to 127.0.0.0/8. Nothing leaves the machine.

    .venv/bin/python scripts/loopback_demo.py [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _accept_forever(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("ringprobe-results/loopback-demo"))
    args = parser.parse_args()
    sockets: list[socket.socket] = []
    try:
        accepting = socket.socket()
        accepting.bind(("127.0.9.1", 0))
        accepting.listen(16)
        sockets.append(accepting)
        threading.Thread(target=_accept_forever, args=(accepting,), daemon=True).start()

        refusing = socket.socket()
        refusing.bind(("127.0.9.2", 0))
        refused_port = refusing.getsockname()[1]
        refusing.close()  # nothing listens there now: the kernel answers with RST

        # Backlog 0 with its one slot taken: Linux drops further SYNs silently, as a censor does.
        dropping = socket.socket()
        dropping.bind(("127.0.9.3", 0))
        dropping.listen(0)
        sockets.append(dropping)
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(dropping.getsockname())
            sockets.append(filler)
        time.sleep(0.1)

        entries = [
            ("demo-open", "127.0.9.1", accepting.getsockname()[1], "accepts"),
            ("demo-refused", "127.0.9.2", refused_port, "refuses (RST)"),
            ("demo-dropped", "127.0.9.3", dropping.getsockname()[1], "drops silently"),
        ]
        with tempfile.TemporaryDirectory() as tmp:
            catalog = Path(tmp) / "demo.toml"
            catalog.write_text(
                '[defaults]\napp = "control"\nrole = "control"\ntransport = "tcp"\n'
                'expect = "tcp"\nsource = "loopback demo"\ndate = "2026-11-28"\n\n'
                + "".join(
                    f'[[target]]\nid = "{tid}"\naddress = "{addr}"\nport = {port}\n'
                    f'note = "{what}"\n\n'
                    for tid, addr, port, what in entries
                )
            )
            print("loopback demo: one endpoint accepts, one refuses, one drops silently\n")
            ringprobe = Path(sys.executable).with_name("ringprobe")
            return subprocess.call(
                [str(ringprobe), "run", "--targets", str(catalog), "--out", str(args.out),
                 "--allow-net", "127.0.0.0/8", "--no-doh", "--timeout", "2", "--vantage", "lab"]
            )  # fmt: skip
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
