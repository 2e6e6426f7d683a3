"""Checks: one module per network operation, each an ``async`` function that returns a Record.

A check never raises on a network failure: it records the failure string and returns. Only
programming errors (and cancellation) propagate. Shared machinery lives in ``probe.checks.base``.
"""
