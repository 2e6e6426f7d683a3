"""The exceptions of the lab (``probe.lab``).

    RingprobeError                      (probe.errors)
    └── LabError                        anything the lab refuses or fails to do
        ├── LabUnavailable              this machine cannot run a lab: not Linux, not root, a
        │                               tool missing (``ringprobe lab doctor`` says which)
        ├── LabNameError                a lab name that cannot be used (shape, or its prefix is
        │                               taken by another lab)
        ├── LabSetupError               a step of ``up``/``down`` failed: a command exited
        │                               non-zero, a server did not start (names its log)
        ├── ScenarioError               a scenario file that cannot be read or is not valid, or
        │                               a rule of it the kernel refuses (names the file, the
        │                               rule and its line)
        └── ScenarioRunError            the probe run of a scenario failed (exit status, output)

LabUnavailable, LabNameError and ScenarioError are the user's to fix (the CLI exits 2); a
LabSetupError or ScenarioRunError is the lab's (exit 1).
"""

from __future__ import annotations

from probe.errors import RingprobeError


class LabError(RingprobeError):
    """Base class of every error the lab raises on purpose."""


class LabUnavailable(LabError):
    """This machine cannot run the lab (not Linux, not root, or a prerequisite is missing)."""


class LabNameError(LabError):
    """A lab name that cannot be used."""


class LabSetupError(LabError):
    """A step of bringing the lab up or down failed."""


class ScenarioError(LabError):
    """A scenario file cannot be used: unreadable, invalid, or a rule the kernel refuses."""


class ScenarioRunError(LabError):
    """The probe run of a scenario did not produce records to judge."""
