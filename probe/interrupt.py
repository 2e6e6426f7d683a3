"""Run a coroutine in its own event loop until it ends or the user stops it (SIGINT, SIGTERM).

``ringprobe run`` and ``ringprobe upload`` both keep what they did when stopped: the signal
cancels the coroutine (its ``finally`` blocks save state), and the caller learns which signal it
was, to exit with 128 + its number as shells do.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")

# The signals that stop a run or an upload cleanly: Ctrl-C, and what `kill` and service managers
# send (systemd, docker stop).
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def run_until_signal(main: Callable[[], Coroutine[Any, Any, T]]) -> tuple[int | None, T | None]:
    """``asyncio.run(main())``, with SIGINT and SIGTERM cancelling it. Returns (the signal's
    number, None) when one stopped it, else (None, what ``main`` returned); a cancellation that
    no signal caused propagates."""
    received: list[int] = []

    async def guarded() -> T | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await main()
        except asyncio.CancelledError:
            if received:
                return None
            raise
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    result = asyncio.run(guarded())
    return (received[0] if received else None), result
