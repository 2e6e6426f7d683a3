"""The benchmark's naive implementation gives the same verdicts as the vectorised one.

This keeps the benchmark honest: the speedup it prints is between two implementations of the
same rules, on the benchmark's own generated records.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from analysis.load import load
from analysis.verdicts import verdicts
from bench.bench_analysis import Scenario, generate, run_lines
from bench.naive_verdicts import naive_verdicts
from tests.recordcheck import assert_valid


def _vectorised(
    directory: Path, baseline: Path | None = None
) -> dict[tuple[str, str], tuple[str, str]]:
    table = verdicts(load(directory), load(baseline) if baseline else None)
    return {
        (str(r.run_id), str(r.app)): (str(r.verdict), str(r.rule))
        for r in table[["run_id", "app", "verdict", "rule"]].itertuples()
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_naive_and_vectorised_agree_on_generated_runs(tmp_path: Path, seed: int) -> None:
    written = generate(tmp_path, 8000, seed=seed, runs_per_file=7)
    assert written == 8000
    files = sorted(tmp_path.glob("*.jsonl"))
    # The generator writes records the schema accepts (a sample of each file).
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in random.Random(seed).sample(lines, min(40, len(lines))):
            assert_valid(line)
    ours = _vectorised(tmp_path)
    theirs = naive_verdicts(files)
    assert ours == theirs
    verdict_mix = {verdict for verdict, _rule in ours.values()}
    assert {"ok", "blocked", "inconclusive"} <= verdict_mix


def test_agreement_with_a_separate_baseline(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    generate(runs, 5000, seed=3)
    base = tmp_path / "baseline"
    base.mkdir()
    rng = random.Random(3)
    lines = [
        line
        for _ in range(2)
        for line in run_lines(rng, Scenario("baseline", {}), vantage="baseline")
    ]
    (base / "baseline.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert all(json.loads(line)["probe"]["vantage"] == "baseline" for line in lines)
    ours = _vectorised(runs, base)
    theirs = naive_verdicts(sorted(runs.glob("*.jsonl")), [base / "baseline.jsonl"])
    assert ours == theirs
    # The stale endpoints fail everywhere: the baseline keeps them out of some verdicts.
    table = verdicts(load(runs), load(base))
    assert table["excluded_by_baseline"].sum() > 0
