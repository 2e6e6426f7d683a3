"""The ``tcp_connect`` check: does a TCP handshake to the target's port complete?

details: none beyond the shared ones (``error`` on failure). timings: ``connect``.
"""

from __future__ import annotations

import asyncio
import contextlib

from probe.checks.base import CheckContext, measured
from probe.model import Record, Target

CHECK = "tcp_connect"

__all__ = ["CHECK", "tcp_connect"]


async def tcp_connect(
    ctx: CheckContext, target: Target, address: str, transaction_id: int
) -> Record:
    """Connect to ``address:target.port``, note the local address for scrubbing, close."""
    async with measured(ctx, CHECK, target, address, transaction_id) as step:
        ctx.guard(address)  # before any socket exists: a refused address sees no SYN
        _reader, writer = await asyncio.open_connection(address, target.port)
        step.mark("connect")
        try:
            ctx.note_local(writer.get_extra_info("sockname"))
        finally:
            writer.close()
            # The connect is what was measured; a reset while hanging up does not undo it.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return step.record
