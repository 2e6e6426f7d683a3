"""Properties of verdicts over generated runs: purity (order, duplicates), vocabulary, baselines."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.load import load
from analysis.rules import LAYERS, MECHANISMS, RULES, VERDICTS
from analysis.verdicts import verdicts
from probe.model import Failure, Record, Target, Vantage
from tests.recordsets import (
    APPS,
    DROP,
    INTERRUPTED,
    OK,
    RST,
    START,
    Fate,
    catalog,
    run_records,
    write_runs,
)

FATES = (
    OK,
    OK,
    DROP,
    RST,
    INTERRUPTED,
    Fate(dns_bogus=True),
    Fate(dns=Failure.DNS_NXDOMAIN),
    Fate(dns_mismatch=True, tcp=Failure.GENERIC_TIMEOUT),
    Fate(tls_real=Failure.CONNECTION_RESET),
    Fate(tls_real=Failure.GENERIC_TIMEOUT),
    Fate(real_bps=140_000),
    Fate(tcp=Failure.NETWORK_UNREACHABLE),
    Fate(tcp=Failure.ADDRESS_NOT_ALLOWED),
)
TARGET_IDS = tuple(t.id for t in catalog())
# Failure verdicts: what a baseline must never produce out of an ok.
FAILURES = frozenset(VERDICTS) - {"ok", "inconclusive"}

fates = st.sampled_from(FATES)
# A run: a fate per app, overrides for some targets, and whether the controls ran.
run_plans = st.tuples(
    st.dictionaries(st.sampled_from(APPS), fates),
    st.dictionaries(st.sampled_from(TARGET_IDS), fates, max_size=25),
    st.booleans(),
)
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def plan_fate(app_fates: dict[str, Fate], overrides: dict[str, Fate]) -> Callable[[Target], Fate]:
    return lambda t: overrides.get(t.id, app_fates.get(t.app, OK))


def build(
    plans: list[tuple[dict[str, Fate], dict[str, Fate], bool]],
    vantage: Vantage = "volunteer",
    cc: str = "RU",
    asn: str = "AS12389",
) -> list[Record]:
    records: list[Record] = []
    for i, (app_fates, overrides, controls) in enumerate(plans):
        apps = APPS if controls else APPS[:3]
        start = START + pd.Timedelta(minutes=i)
        fate = plan_fate(app_fates, overrides)
        records += run_records(fate, apps=apps, start=start, vantage=vantage, cc=cc, asn=asn)
    return records


def judged(directory: Path, baseline: Path | None = None) -> pd.DataFrame:
    return verdicts(load(directory), load(baseline) if baseline else None)


@SETTINGS
@given(plans=st.lists(run_plans, min_size=1, max_size=2), rnd=st.randoms(use_true_random=False))
def test_verdicts_are_pure_and_in_the_vocabulary(
    plans: list[tuple[dict[str, Fate], dict[str, Fate], bool]], rnd: random.Random
) -> None:
    records = build(plans)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference = judged(write_runs(root / "a", records))

        # Any order of the lines, spread over files differently.
        shuffled = records[:]
        rnd.shuffle(shuffled)
        cut = rnd.randrange(len(shuffled) + 1)
        other = judged(write_runs(root / "b", shuffled[:cut], shuffled[cut:]))
        pd.testing.assert_frame_equal(reference, other)

        # Any order of the loaded rows.
        frame = load(root / "a")
        order = list(range(len(frame)))
        rnd.shuffle(order)
        pd.testing.assert_frame_equal(reference, verdicts(frame.iloc[order].reset_index(drop=True)))

        # The same file twice, and part of it a third time.
        copy = root / "c"
        shutil.copytree(root / "a", copy)
        shutil.copy(root / "a" / "records-000.jsonl", copy / "again.jsonl")
        write_runs(copy, records[: len(records) // 3], name="partial")
        pd.testing.assert_frame_equal(reference, judged(copy))

    assert set(reference["verdict"].astype(str)) <= set(VERDICTS)
    assert set(reference["rule"].astype(str)) <= {rule.name for rule in RULES}
    assert set(reference["layer"].dropna().astype(str)) <= set(LAYERS)
    assert set(reference["mechanism"].dropna().astype(str)) <= set(MECHANISMS)
    # One row per (run, app) that has records.
    expected = {(r.run_id, r.app) for r in records}
    assert set(zip(reference["run_id"], reference["app"], strict=True)) == expected
    assert reference["evidence"].str.len().min() > 0


@SETTINGS
@given(
    plans=st.lists(run_plans, min_size=1, max_size=2),
    baseline_plans=st.lists(run_plans, min_size=1, max_size=2),
)
def test_a_baseline_never_turns_ok_into_a_failure(
    plans: list[tuple[dict[str, Fate], dict[str, Fate], bool]],
    baseline_plans: list[tuple[dict[str, Fate], dict[str, Fate], bool]],
) -> None:
    records = build(plans)
    baseline = build(baseline_plans, vantage="baseline", cc="DE", asn="AS3320")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone = judged(write_runs(root / "runs", records))
        based = judged(root / "runs", write_runs(root / "baseline", baseline))
    assert list(alone["run_id"]) == list(based["run_id"])
    assert list(alone["app"]) == list(based["app"])
    was_ok = (alone["verdict"] == "ok").to_numpy()
    now = based["verdict"].astype(str).to_numpy()[was_ok]
    assert not FAILURES & set(now)
    # Stronger, by construction: only failed targets are ever excluded, so ok stays ok.
    assert (now == "ok").all()
    # Exclusion only ever removes failures.
    assert (based["targets_failed"] <= alone["targets_failed"]).all()
