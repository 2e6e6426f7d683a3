"""Benchmark: load + verdicts + aggregate over 10M records, pandas in one process beside Dask.

Generates records with ``bench_analysis``'s generator (the same realistic mix of runs, written as
JSON Lines one file per 50 runs, so generation holds one file's lines at a time), converts them to
a partitioned Parquet data set with ``analysis.jsonl_to_parquet`` (batch by batch of files), then
measures, each in a fresh child process:

* pandas: ``analysis.load`` (JSON Lines) + ``verdicts`` + ``aggregate`` (by app, ASN, day);
* pandas from Parquet: ``load_parquet`` + ``verdicts`` + ``aggregate`` (for comparison);
* Dask: a ``LocalCluster`` of 2 worker processes (1 thread each, bound to 127.0.0.1, no
  dashboard), ``analysis.scale.verdicts_dask`` over the Parquet data set + ``aggregate``.

Wall time excludes interpreter start-up and imports (reported apart, as is the cluster's start).
Peak memory: a pandas child's own peak RSS (``getrusage``); for Dask, the peak of the summed RSS
of the child and every process under it (scheduler, nannies, workers), sampled every 50 ms with
psutil (a dependency of distributed). The verdict tables of all three must be identical.
Targets: Dask peak <= 4 GB and time <= 1.5x pandas; pandas alone <= 5 minutes.

    .venv/bin/python bench/bench_scale.py [--records 10000000] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_analysis import generate  # noqa: E402 - after the path fix for direct runs

BY = ("app", "asn", "day")
GB = 1e9
TARGET_DASK_PEAK_GB = 4.0
TARGET_RATIO = 1.5
TARGET_PANDAS_S = 300.0


def _peak_rss_bytes() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux


class TreeMemory:
    """Samples the summed RSS of this process and all its descendants; keeps the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._psutil = psutil
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0.0
        self.peak_processes = 0

    def _sample(self) -> None:
        me = self._psutil.Process()
        total, count = 0.0, 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
                count += 1
            except self._psutil.Error:  # exited between listing and reading
                continue
        if total > self.peak:
            self.peak, self.peak_processes = total, count

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> TreeMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- the children --------------------------------------------------------------------------------


def _child_convert(records: Path, parquet: Path, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from analysis.parquet import jsonl_to_parquet

    t0 = time.perf_counter()
    rows = jsonl_to_parquet(
        records, parquet, buckets=args["buckets"], batch_bytes=args["batch_bytes"]
    )
    return {"total": time.perf_counter() - t0, "rows": rows, "peak": _peak_rss_bytes()}


def _child_pandas(records: Path, parquet: Path, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """load (JSON Lines) + verdicts + aggregate with pandas."""
    return _pandas_path(records, out, parquet_input=False)


def _child_pandas_parquet(
    records: Path, parquet: Path, out: Path, args: dict[str, Any]
) -> dict[str, Any]:
    """load_parquet + verdicts + aggregate with pandas."""
    return _pandas_path(parquet, out, parquet_input=True)


def _pandas_path(source: Path, out: Path, *, parquet_input: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    from analysis.load import load
    from analysis.parquet import load_parquet
    from analysis.shares import aggregate
    from analysis.verdicts import verdicts

    t1 = time.perf_counter()
    df = load_parquet(source) if parquet_input else load(source)
    t2 = time.perf_counter()
    table = verdicts(df)
    t3 = time.perf_counter()
    shares = aggregate(table, by=BY)
    t4 = time.perf_counter()
    peak = _peak_rss_bytes()
    table.to_parquet(out)
    return {
        "import": t1 - t0,
        "load": t2 - t1,
        "verdicts": t3 - t2,
        "aggregate": t4 - t3,
        "total": t4 - t1,
        "records": len(df),
        "rows": len(table),
        "groups": len(shares),
        "peak": peak,
    }


def _child_dask(records: Path, parquet: Path, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    with TreeMemory() as memory:
        t0 = time.perf_counter()
        from distributed import Client, LocalCluster

        from analysis.scale import verdicts_dask
        from analysis.shares import aggregate

        t1 = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args["workers"],
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=args["memory_limit"],
            ) as cluster,
            Client(cluster),
        ):
            t2 = time.perf_counter()
            table = verdicts_dask(parquet)
            t3 = time.perf_counter()
            shares = aggregate(table, by=BY)
            t4 = time.perf_counter()
        t5 = time.perf_counter()
    table.to_parquet(out)
    return {
        "import": t1 - t0,
        "cluster_start": t2 - t1,
        "verdicts": t3 - t2,
        "aggregate": t4 - t3,
        "total": t4 - t2,
        "cluster_stop": t5 - t4,
        "rows": len(table),
        "groups": len(shares),
        "peak": memory.peak,
        "processes": memory.peak_processes,
        "own_peak": _peak_rss_bytes(),
    }


CHILDREN = {
    "convert": _child_convert,
    "pandas": _child_pandas,
    "pandas-parquet": _child_pandas_parquet,
    "dask": _child_dask,
}


def _measure(side: str, records: Path, parquet: Path, out: Path, args: dict[str, Any]) -> Any:
    command = [sys.executable, __file__, "--child", side, "--records-dir", str(records)]
    command += ["--parquet", str(parquet), "--out", str(out), "--child-args", json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{side} child failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verdict_tables_equal(*paths: Path) -> bool:
    import pandas as pd

    first = pd.read_parquet(paths[0])
    return all(first.equals(pd.read_parquet(path)) for path in paths[1:])


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--batch-bytes", type=int, default=256 * 2**20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="auto", help="per Dask worker (e.g. 1.5GiB)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument(
        "--keep", action="store_true", help="keep --dir; reuse records already there"
    )
    parser.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--records-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-args", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                CHILDREN[args.child](args.records_dir, args.parquet, args.out, args.child_args)
            )
        )
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="ringprobe-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    records, parquet = work / "records", work / "records.parquet"
    child_args = {
        "buckets": args.buckets,
        "batch_bytes": args.batch_bytes,
        "workers": args.workers,
        "memory_limit": args.memory_limit,
    }
    try:
        if args.keep and records.is_dir() and any(records.iterdir()):
            print(f"reusing the records in {records}")
        else:
            t0 = time.perf_counter()
            written = generate(records, args.records, args.seed)
            print(f"generated {written:,} records in {time.perf_counter() - t0:.0f} s")
        size = sum(p.stat().st_size for p in records.glob("*.jsonl"))
        files = len(list(records.glob("*.jsonl")))
        print(f"JSON Lines: {files} files, {size / GB:.2f} GB")
        shutil.rmtree(parquet, ignore_errors=True)
        conv = _measure("convert", records, parquet, work / "unused", child_args)
        on_disk = sum(p.stat().st_size for p in parquet.rglob("*.parquet"))
        print(
            f"jsonl_to_parquet: {conv['rows']:,} records, {args.buckets} buckets, "
            f"{on_disk / GB:.2f} GB, in {conv['total']:.1f} s, peak RSS {conv['peak'] / GB:.2f} GB"
        )
        pan = _measure("pandas", records, parquet, work / "pandas.parquet", child_args)
        print(
            f"pandas (JSON Lines): load {pan['load']:.1f} s + verdicts {pan['verdicts']:.1f} s + "
            f"aggregate {pan['aggregate']:.2f} s = {pan['total']:.1f} s "
            f"(imports {pan['import']:.1f} s more); peak RSS {pan['peak'] / GB:.2f} GB; "
            f"{pan['records']:,} records, {pan['rows']:,} verdict rows, {pan['groups']:,} shares"
        )
        pqt = _measure("pandas-parquet", records, parquet, work / "pandas-pq.parquet", child_args)
        print(
            f"pandas (Parquet):    load_parquet {pqt['load']:.1f} s + verdicts "
            f"{pqt['verdicts']:.1f} s, total {pqt['total']:.1f} s; "
            f"peak RSS {pqt['peak'] / GB:.2f} GB"
        )
        dsk = _measure("dask", records, parquet, work / "dask.parquet", child_args)
        print(
            f"dask ({args.workers} workers, Parquet): verdicts_dask {dsk['verdicts']:.1f} s + "
            f"aggregate {dsk['aggregate']:.2f} s = {dsk['total']:.1f} s (cluster start "
            f"{dsk['cluster_start']:.1f} s, stop {dsk['cluster_stop']:.1f} s, imports "
            f"{dsk['import']:.1f} s more); peak RSS of the process tree "
            f"{dsk['peak'] / GB:.2f} GB ({dsk['processes']} processes, psutil samples every "
            f"50 ms; client process alone {dsk['own_peak'] / GB:.2f} GB)"
        )
        same = _verdict_tables_equal(
            work / "pandas.parquet", work / "pandas-pq.parquet", work / "dask.parquet"
        )
        print(f"verdict tables identical (pandas JSONL, pandas Parquet, Dask): {same}")
        ratio = dsk["total"] / pan["total"]
        with_start = (dsk["total"] + dsk["cluster_start"]) / pan["total"]
        print(
            f"targets: Dask peak {dsk['peak'] / GB:.2f} GB <= {TARGET_DASK_PEAK_GB} GB "
            f"{_ok(dsk['peak'] / GB <= TARGET_DASK_PEAK_GB)}; Dask/pandas time {ratio:.2f}x "
            f"(with cluster start {with_start:.2f}x) <= {TARGET_RATIO}x "
            f"{_ok(ratio <= TARGET_RATIO)}; "
            f"pandas {pan['total']:.0f} s <= {TARGET_PANDAS_S:.0f} s "
            f"{_ok(pan['total'] <= TARGET_PANDAS_S)}"
        )
        if not same:
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
