"""ringprobe's researcher package: load records (ringprobe's and OONI's), compute verdicts.

    import analysis
    df = analysis.load("ringprobe-results/")           # one row per record, see analysis.COLUMNS
    table = analysis.verdicts(df, baseline=analysis.load("baseline/"))
    for line in analysis.explain(table):
        print(line)
    shares = analysis.aggregate(table, by=["app", "asn", "day"])  # share of runs per verdict
    changes = analysis.onsets(table, by=["app", "asn"])  # onsets and ends of call restrictions

Figures: ``from analysis import plots`` (each function returns a matplotlib Figure) and
``analysis.report.write_report``. More records than memory: ``analysis.jsonl_to_parquet`` once,
then ``analysis.scale.verdicts_dask`` on a Dask cluster (``analysis.scale`` needs the
``analysis`` extra: dask).

Verdicts are pure functions of the records and live only here: the probe's own closing summary
calls this package, never a copy of its rules.
"""

from analysis.columns import COLUMNS
from analysis.differential import DIFFERENTIAL_COLUMNS, differential
from analysis.errors import AnalysisError, LoadError, LoadWarning, SchemaVersionError
from analysis.load import concat, load
from analysis.onset import ONSET_COLUMNS, onsets
from analysis.ooni import load_ooni, ooni_verdicts
from analysis.parquet import jsonl_to_parquet, load_parquet, to_parquet
from analysis.rules import LAYERS, MECHANISMS, RULES, VERDICTS, Rule
from analysis.shares import CALL_VERDICTS, MIN_RUNS, aggregate, wilson
from analysis.summary import explain
from analysis.verdicts import target_status, verdicts

__all__ = [
    "CALL_VERDICTS",
    "COLUMNS",
    "DIFFERENTIAL_COLUMNS",
    "LAYERS",
    "MECHANISMS",
    "MIN_RUNS",
    "ONSET_COLUMNS",
    "RULES",
    "VERDICTS",
    "AnalysisError",
    "LoadError",
    "LoadWarning",
    "Rule",
    "SchemaVersionError",
    "aggregate",
    "concat",
    "differential",
    "explain",
    "jsonl_to_parquet",
    "load",
    "load_ooni",
    "load_parquet",
    "onsets",
    "ooni_verdicts",
    "target_status",
    "to_parquet",
    "verdicts",
    "wilson",
]
