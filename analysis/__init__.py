"""ringprobe's researcher package: load records, compute verdicts, aggregate and plot.

Filled by the analysis issue; the probe's own summary will call it, never copy its rules.
"""

__all__: list[str] = []
