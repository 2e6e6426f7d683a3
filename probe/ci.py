"""`ringprobe run --ci`: one JSON summary of a run and an exit status a scheduler can act on.

A scheduled check (a CI job, a systemd timer, docs/scheduled.md) needs one number: is everything
fine, did the run see interference, or could it not tell. The verdicts come from the analysis
package, as for every run (probe.cli.run computes them in a child process); this module only
reads them, never a copy of the rules. The exit status, first match wins:

* **1, interference**: some app's verdict is one of INTERFERENCE_VERDICTS (blocked, throttled,
  calls_blocked, calls_throttled, calls_cut; analysis.rules.INTERFERENCE_VERDICTS). Found is found:
  this holds even when the run did not complete, since verdicts cover what finished.
* **2, not measured**: nothing is interference, but something could not be judged: an app's
  verdict is network_degraded or inconclusive (or one this module does not know), an app of the
  run has no verdict (none of its checks wrote a record), there are no verdicts at all (no
  records, or the analysis failed), the run did not complete (deadline reached), or the summary
  file (``--ci-summary``) could not be written.
* **0, ok**: the run completed and every app of the run is ``ok``.

A run stopped by SIGINT or SIGTERM is not analysed; its summary says ``interrupted`` and the
process exits as every interrupted run does, 128 + the signal number (``exit_status`` says so
too). Usage errors exit 2 before anything is measured, with one line on stderr and no summary;
a crash (a traceback) exits 1 with no summary, which is why a scheduler should read the summary
and not only the status (the example workflow does).

The summary (SUMMARY_VERSION) holds the run id, status, vantage, paths, per app the verdict,
layer, mechanism, rule, evidence sentence and summary line, the counts (records, failures,
targets, verdicts per name) and the exit status with its reasons.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from probe.runner import RunResult

# Ours: bumped when a field of the summary changes meaning or goes away.
SUMMARY_VERSION: Final = 1

EXIT_OK: Final = 0
EXIT_INTERFERENCE: Final = 1
# Ours: the same number as a usage error (probe.cli.EXIT_USAGE); both mean "no answer, look".
EXIT_NOT_MEASURED: Final = 2

# ../shared/METHOD.md's vocabulary in its order: analysis.rules.VERDICTS, spelled out so that the
# measuring process never imports pandas (tests/unit/test_ci_mode.py checks that they agree).
VERDICTS: Final = (
    "ok",
    "blocked",
    "throttled",
    "calls_blocked",
    "calls_throttled",
    "calls_cut",
    "network_degraded",
    "inconclusive",
)
OK_VERDICT: Final = "ok"
# analysis.rules.INTERFERENCE_VERDICTS, spelled out for the same reason (a test checks).
INTERFERENCE_VERDICTS: Final = (
    "blocked",
    "throttled",
    "calls_blocked",
    "calls_throttled",
    "calls_cut",
)
# METHOD.md: the network is bad for everything, or the evidence is too weak: nothing measured.
NOT_MEASURED_VERDICTS: Final = ("network_degraded", "inconclusive")
# The count of apps that got no verdict (no record of theirs was written).
NO_VERDICT: Final = "no_verdict"

OUTCOMES: Final = {
    EXIT_OK: "ok",
    EXIT_INTERFERENCE: "interference",
    EXIT_NOT_MEASURED: "not_measured",
}
# probe.runner.RunStatus of a run that measured everything it planned.
COMPLETE: Final = "complete"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scheduled check reports: the exit status, its name and why."""

    exit_status: int
    outcome: str
    """ok, interference, not_measured or interrupted"""
    reasons: tuple[str, ...]
    """One line per app or fact that decided the status (empty when all is ok)."""


def _app_line(app: str, row: dict[str, Any]) -> str:
    how = ", ".join(str(row[key]) for key in ("layer", "mechanism") if row.get(key))
    return f"{app}: {row.get('verdict')}" + (f" ({how})" if how else "")


def decide(
    status: str,
    apps: Sequence[str],
    verdicts: list[dict[str, Any]] | str,
    signum: int | None = None,
) -> Outcome:
    """The exit status of a run (see the module docstring): ``status`` is the run's
    (probe.runner.RunStatus), ``apps`` the apps it measured, ``verdicts`` the rows of
    ``ringprobe analyze --format json`` or why there are none, ``signum`` the signal that
    stopped it."""
    if signum is not None:
        return Outcome(128 + signum, "interrupted", (f"the run was stopped by signal {signum}",))
    if isinstance(verdicts, str):
        return Outcome(
            EXIT_NOT_MEASURED, OUTCOMES[EXIT_NOT_MEASURED], (f"no verdicts: {verdicts}",)
        )
    rows = {str(row["app"]): row for row in verdicts}
    interference = [
        _app_line(a, r) for a, r in rows.items() if r["verdict"] in INTERFERENCE_VERDICTS
    ]
    if interference:
        return Outcome(EXIT_INTERFERENCE, OUTCOMES[EXIT_INTERFERENCE], tuple(interference))
    unmeasured = [_app_line(a, r) for a, r in rows.items() if r["verdict"] != OK_VERDICT]
    unmeasured += [
        f"{app}: no verdict (no record of it was written)" for app in apps if app not in rows
    ]
    if not rows:
        unmeasured.append("no verdicts: the analysis returned none")
    if status != COMPLETE:
        unmeasured.append(f"the run ended {status.replace('_', ' ')}: not every check ran")
    if unmeasured:
        return Outcome(EXIT_NOT_MEASURED, OUTCOMES[EXIT_NOT_MEASURED], tuple(unmeasured))
    return Outcome(EXIT_OK, OUTCOMES[EXIT_OK], ())


# The verdict row's fields a summary keeps per app (the figures stay in `ringprobe analyze`).
APP_FIELDS: Final = ("verdict", "layer", "mechanism", "rule", "evidence", "summary")


def summarize(
    result: RunResult,
    verdicts: list[dict[str, Any]] | str,
    *,
    vantage: str,
    signum: int | None = None,
) -> dict[str, Any]:
    """The JSON-ready summary of a finished (or interrupted) run, exit status included."""
    apps: list[str] = list(result.settings.get("apps", []))
    outcome = decide(result.status, apps, verdicts, signum)
    rows = {} if isinstance(verdicts, str) else {str(row["app"]): row for row in verdicts}
    per_app: dict[str, dict[str, Any]] = {}
    for app in [*apps, *(app for app in rows if app not in apps)]:
        row = rows.get(app, {})
        per_app[app] = {field: row.get(field) for field in APP_FIELDS}
    counted = Counter(entry["verdict"] or NO_VERDICT for entry in per_app.values())
    summary: dict[str, Any] = {
        "summary_version": SUMMARY_VERSION,
        "run_id": result.run_id,
        "status": result.status,
        "vantage": vantage,
        "started": result.started,
        "ended": result.ended,
        "records_path": str(result.records_path),
        "manifest_path": str(result.manifest_path),
        "apps": per_app,
        "counts": {
            "records": result.records,
            "failures": result.failures,
            "targets": result.targets,
            "targets_done": result.targets_done,
            "skipped": len(result.skipped),
            "verdicts": {
                name: counted[name] for name in (*VERDICTS, *sorted(set(counted) - set(VERDICTS)))
            },
        },
        "exit_status": outcome.exit_status,
        "outcome": outcome.outcome,
        "reasons": list(outcome.reasons),
    }
    if isinstance(verdicts, str):
        summary["verdicts_error"] = verdicts
    return summary


def write_summary(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write ``summary`` to ``path`` (write, then rename: a reader never sees half a file) and
    return it; if the file cannot be written, return a copy whose exit status is
    EXIT_NOT_MEASURED with the reason (a scheduler must not act on a status whose summary it will
    not find)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        failed = dict(summary)
        if failed["outcome"] != "interrupted":
            failed["exit_status"] = EXIT_NOT_MEASURED
            failed["outcome"] = OUTCOMES[EXIT_NOT_MEASURED]
        failed["reasons"] = [
            *summary["reasons"],
            f"the summary could not be written to {path}: {exc.strerror}",
        ]
        return failed
    return summary


def headline(summary: dict[str, Any]) -> str:
    """One line for a log, e.g. ``ringprobe: ci: exit 1 (interference): telegram: blocked``."""
    reasons = "; ".join(summary["reasons"]) or "every app ok"
    return f"ringprobe: ci: exit {summary['exit_status']} ({summary['outcome']}): {reasons}"


__all__ = [
    "EXIT_INTERFERENCE",
    "EXIT_NOT_MEASURED",
    "EXIT_OK",
    "INTERFERENCE_VERDICTS",
    "NOT_MEASURED_VERDICTS",
    "OK_VERDICT",
    "SUMMARY_VERSION",
    "VERDICTS",
    "Outcome",
    "decide",
    "headline",
    "summarize",
    "write_summary",
]
