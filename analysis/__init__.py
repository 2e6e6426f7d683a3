"""ringprobe's researcher package: load records (ringprobe's and OONI's), compute verdicts.

    import analysis
    df = analysis.load("ringprobe-results/")           # one row per record, see analysis.COLUMNS
    table = analysis.verdicts(df, baseline=analysis.load("baseline/"))
    for line in analysis.explain(table):
        print(line)
    shares = analysis.aggregate(table, by=["app", "asn", "day"])  # share of runs per verdict

Verdicts are pure functions of the records and live only here: the probe's own closing summary
calls this package, never a copy of its rules.
"""

from analysis.columns import COLUMNS
from analysis.errors import AnalysisError, LoadError, LoadWarning, SchemaVersionError
from analysis.load import concat, load
from analysis.ooni import load_ooni, ooni_verdicts
from analysis.rules import LAYERS, MECHANISMS, RULES, VERDICTS, Rule
from analysis.shares import CALL_VERDICTS, MIN_RUNS, aggregate, wilson
from analysis.summary import explain
from analysis.verdicts import target_status, verdicts

__all__ = [
    "CALL_VERDICTS",
    "COLUMNS",
    "LAYERS",
    "MECHANISMS",
    "MIN_RUNS",
    "RULES",
    "VERDICTS",
    "AnalysisError",
    "LoadError",
    "LoadWarning",
    "Rule",
    "SchemaVersionError",
    "aggregate",
    "concat",
    "explain",
    "load",
    "load_ooni",
    "ooni_verdicts",
    "target_status",
    "verdicts",
    "wilson",
]
