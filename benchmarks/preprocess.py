"""Distributed preprocessing vs scikit-learn's ColumnTransformer in one process.

Data: ``--rows`` rows (10M by default) x 28 numeric columns (1% missing) + 4 categorical
columns (5, 20, 100 and 1,000 categories, Zipf-distributed) + a binary label, generated
deterministically under ``benchmarks/_data`` (git-ignored) as one Parquet file (the peer's
input) and, from it, a shardlearn dataset of 16 shards (``ingest``; not timed).

Measured in one run, each side in a fresh process:

- shardlearn: ``Preprocessor.auto`` (mean imputation + standard scaling, top-20 one-hot +
  "other") fitted on a 2-worker local WorkerGroup (per-shard statistics, merged), then every
  worker builds its float32 feature block from its shards (``load_block``) -- reading included.
- scikit-learn: ``pandas.read_parquet`` + ``ColumnTransformer([SimpleImputer -> StandardScaler,
  OneHotEncoder(max_categories=21)]).fit_transform`` -- the same work in one process.

Reported: seconds (shardlearn with and without starting its 2 worker processes), the speed-up
(scikit-learn seconds / shardlearn seconds, target >= 1.5x) and peak RSS (for shardlearn the
driver's plus each worker's peak).

Usage::

    python benchmarks/preprocess.py            # 10M rows (about 2.6 GB of Parquet in memory)
    python benchmarks/preprocess.py --quick    # 300k rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parent / "_data"
RESULTS = Path(__file__).resolve().parent / "results"
CHUNK_ROWS = 1_000_000
N_NUMERIC = 28
CARDINALITIES = {"cat_a": 5, "cat_b": 20, "cat_c": 100, "cat_d": 1000}
TOP_K = 20
WORKERS = 2
SHARDS = 16


def generate(rows: int, seed: int = 0) -> tuple[Path, Path]:
    """The Parquet source and the shardlearn dataset for ``rows`` (built once, then reused)."""
    source = DATA / f"preprocess-{rows}.parquet"
    dataset = DATA / f"preprocess-{rows}-ds"
    marker = DATA / f"preprocess-{rows}.done"
    if marker.exists():
        return source, dataset
    DATA.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(source, _chunk(0, 0, seed).schema) as writer:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            writer.write_table(_chunk(chunk, min(CHUNK_ROWS, rows - start), seed))
    from shardlearn.data import ingest

    ingest(source, "label", dataset, partitions=SHARDS, split=(1.0, 0.0, 0.0), overwrite=True)
    marker.write_text("ok")
    return source, dataset


def _chunk(chunk: int, count: int, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, chunk])
    numeric = rng.normal(size=(count, N_NUMERIC)) * rng.uniform(1, 100, N_NUMERIC)
    numeric[rng.random(numeric.shape) < 0.01] = np.nan
    columns: dict[str, object] = {f"x{i:02d}": numeric[:, i] for i in range(N_NUMERIC)}
    for name, cardinality in CARDINALITIES.items():
        weights = 1.0 / np.arange(1, cardinality + 1)
        codes = rng.choice(cardinality, count, p=weights / weights.sum())
        columns[name] = pa.DictionaryArray.from_arrays(
            pa.array(codes, pa.int32()), pa.array([f"{name[-1]}{i}" for i in range(cardinality)])
        ).cast(pa.string())
    columns["label"] = (np.nan_to_num(numeric[:, 0]) > 0).astype(np.int64)
    return pa.table(columns)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_block(state, split):
    from shardlearn.preprocess import load_block

    block = load_block(state, split)
    return block.X.shape, block.X.dtype.str, _peak_rss()


def run_shardlearn(dataset: str) -> dict:
    from shardlearn.data import Dataset
    from shardlearn.engine import engine
    from shardlearn.preprocess import Preprocessor

    ds = Dataset.open(dataset)
    started = time.perf_counter()
    with engine("local", workers=WORKERS) as eng, eng.workers(WORKERS) as group:
        group.assign(ds.shards("train"))
        ready = time.perf_counter()
        pre = Preprocessor.auto(ds.schema, categorical={"top_k": TOP_K}).fit_group(group)
        group.put("preprocessor", pre)
        group.put("classes", ds.classes)
        blocks = group.run(_worker_block, "train")
        done = time.perf_counter()
    rows = sum(shape[0] for shape, _, _ in blocks)
    return {
        "seconds": done - started,
        "seconds_after_start": done - ready,
        "rows": rows,
        "features": blocks[0][0][1],
        "dtype": blocks[0][1],
        "rss": _peak_rss() + sum(rss for _, _, rss in blocks),
    }


def run_sklearn(source: str) -> dict:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    started = time.perf_counter()
    frame = pd.read_parquet(source)
    numeric = [f"x{i:02d}" for i in range(N_NUMERIC)]
    transformer = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (
                "cat",
                OneHotEncoder(max_categories=TOP_K + 1, handle_unknown="infrequent_if_exist"),
                list(CARDINALITIES),
            ),
        ]
    )
    x = transformer.fit_transform(frame)
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "seconds_after_start": done - started,
        "rows": x.shape[0],
        "features": x.shape[1],
        "dtype": x.dtype.str,
        "rss": _peak_rss(),
    }


def measure(side: str, path: Path) -> dict:
    """Run one side in a fresh interpreter (clean peak RSS) and parse its JSON line."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {side} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300k rows")
    parser.add_argument("--rows", type=int, default=None, help="rows (default 10,000,000)")
    parser.add_argument(
        "--skip-peer",
        action="store_true",
        help="measure shardlearn only (the peer needs ~1.6 KB/row)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, path = args.child
        result = run_shardlearn(path) if side == "shardlearn" else run_sklearn(path)
        print(json.dumps(result))
        return
    rows = args.rows or (300_000 if args.quick else 10_000_000)
    started = time.perf_counter()
    source, dataset = generate(rows)
    print(f"# {rows:,} rows ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    peer = None if args.skip_peer else measure("sklearn", source)
    ours = measure("shardlearn", dataset)
    report(rows, ours, peer)


def report(rows: int, ours: dict, peer: dict | None) -> None:
    import sklearn

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"pyarrow {pa.__version__}; {rows:,} rows x (28 numeric + 4 categorical)\n"
    )
    print("| tool | seconds | seconds without worker start | speed-up vs scikit-learn "
          "| peak RSS | output |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    sides = [(f"shardlearn, {WORKERS} workers", ours)] + ([("scikit-learn", peer)] if peer else [])
    for name, r in sides:
        speedup = f"{peer['seconds'] / r['seconds']:.2f}x" if peer else "not measured"
        print(
            f"| {name} | {r['seconds']:.1f} | {r['seconds_after_start']:.1f} "
            f"| {speedup} | {r['rss'] / 2**30:.2f} GiB "
            f"| {r['rows']:,} x {r['features']} {np.dtype(r['dtype']).name} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"preprocess-{rows}.json").write_text(
        json.dumps({"rows": rows, "shardlearn": ours, "scikit-learn": peer}, indent=2)
    )


if __name__ == "__main__":
    main()
