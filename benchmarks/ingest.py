"""Ingest throughput and memory: ``shardlearn ingest`` vs pyarrow's CSV and JSON readers.

Generates wide CSV files (28 numeric + 4 categorical columns + a binary label; deterministic
for a seed) under ``benchmarks/_data`` (git-ignored; ``--data DIR`` elsewhere), then measures,
in one run on the same files, each in a fresh process:

- shardlearn ``ingest`` (validation, stratified-free random partitioning into 8 shards per
  split, Parquet shards, rejects, manifest) — the whole pipeline, file to dataset, with its
  default parsers (one per core, byte ranges of 16 MiB; the table shows how many ran);
- ``pyarrow.csv.read_csv`` of the same file into memory (parse only, multi-threaded; the peer).

With ``--ray-nodes N`` the same ingest also runs on an N-node local Ray cluster
(``ray.cluster_utils.Cluster``, one CPU per node): the byte ranges are Ray tasks spread over the
nodes, and the rows each node parsed are printed (issue 24: the parse runs on all nodes). The
nodes share this machine's cores, so this shows the spread, not a speed-up.

The JSON Lines case (``--formats jsonl``) writes the same rows as JSON Lines (one object per
row, floats as Python writes them) and compares ingest with ``pyarrow.json.read_json``.
``parquet`` writes them as Parquet in row groups of 64k rows (peer ``pyarrow.parquet.read_table``);
``csv.zst`` compresses the CSV into Zstandard frames of 4 MiB of text each, as ``pzstd`` and
writers that flush a frame at a time do (peer ``pyarrow.csv.read_csv``, which decompresses it).

Ingest allocates from jemalloc while it runs (pyarrow's default, mimalloc, hands freed pages
back to the OS within 10 ms, which costs much system time on a busy machine); ``--peer-pool
jemalloc`` runs the peer on the same allocator, for a like-for-like parse.

Reported: wall seconds, MB/s of CSV, rows/s, peak RSS, and the ratio shardlearn / pyarrow.
With ``--repeat N`` every case runs N times, shardlearn and its peer alternating (ours first
in odd runs, the peer first in even ones, so a slow spell of a shared machine hits both), each
run still a whole ``ingest()`` (or peer call) in a fresh process; the table shows the median
wall and CPU of each, the range of the walls, the largest peak RSS, and the ratio of the
medians. One line per run goes to stderr.
Targets (issue 2): throughput >= 70% of pyarrow's, peak RSS < 1.5 GB at every size; JSON Lines
(issue 24) >= 60% of ``pyarrow.json.read_json``.

Usage::

    python benchmarks/ingest.py            # 5M and 20M rows (about 1.3 GB and 5.3 GB of CSV)
    python benchmarks/ingest.py --quick    # 500k rows
    python benchmarks/ingest.py --quick --repeat 5   # medians of 5 alternating runs each
    python benchmarks/ingest.py --quick --formats jsonl   # JSON Lines only
    python benchmarks/ingest.py --rows 200000 --formats parquet csv.zst
    python benchmarks/ingest.py --quick --ray-nodes 3      # and on a 3-node Ray cluster
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parent / "_data"
CHUNK_ROWS = 500_000
N_NUMERIC = 28
CATEGORIES = {
    "cat_a": [f"a{i}" for i in range(5)],
    "cat_b": [f"b{i}" for i in range(20)],
    "cat_c": [f"c{i}" for i in range(100)],
    "cat_d": [f"d{i}" for i in range(1000)],
}


def generate(path: Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` rows deterministically (skipped when the file already has them)."""
    marker = path.with_suffix(".rows")
    if path.exists() and marker.exists() and marker.read_text() == str(rows):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=True, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, rows - start)
            rng = np.random.default_rng([seed, chunk])
            numeric = np.round(rng.normal(size=(count, N_NUMERIC)) * 100, 3)
            columns = {f"x{i:02d}": numeric[:, i] for i in range(N_NUMERIC)}
            for name, values in CATEGORIES.items():
                weights = 1.0 / np.arange(1, len(values) + 1)
                columns[name] = np.array(values)[
                    rng.choice(len(values), count, p=weights / weights.sum())
                ]
            columns["label"] = (numeric[:, 0] + numeric[:, 1] * numeric[:, 2] / 100 > 0).astype(
                np.int64
            )
            pacsv.write_csv(pa.table(columns), sink, options)
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    marker.write_text(str(rows))
    return path


def generate_jsonl(path: Path, rows: int, seed: int = 0) -> Path:
    """The rows of :func:`generate` as JSON Lines (skipped when the file already has them)."""
    marker = path.with_suffix(".jsonl-rows")
    if path.exists() and marker.exists() and marker.read_text() == str(rows):
        return path
    source = generate(path.with_suffix(".csv"), rows, seed)
    reader = pacsv.open_csv(source)
    with open(path, "w") as sink:
        for batch in reader:
            names = batch.schema.names
            for values in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                sink.write(json.dumps(dict(zip(names, values, strict=True))) + "\n")
    marker.write_text(str(rows))
    return path


def generate_parquet(path: Path, rows: int, seed: int = 0) -> Path:
    """The rows of :func:`generate` as Parquet, in row groups of 64k rows."""
    marker = path.with_suffix(".parquet-rows")
    if path.exists() and marker.exists() and marker.read_text() == str(rows):
        return path
    table = pacsv.read_csv(generate(path.with_suffix(".csv"), rows, seed))
    pq.write_table(table, path, row_group_size=1 << 16)
    marker.write_text(str(rows))
    return path


def generate_zst(path: Path, rows: int, seed: int = 0) -> Path:
    """The CSV of :func:`generate` as Zstandard frames of 4 MiB of text each."""
    marker = path.with_suffix(".zst-rows")
    if path.exists() and marker.exists() and marker.read_text() == str(rows):
        return path
    codec = pa.Codec("zstd")
    with open(generate(path.with_suffix(""), rows, seed), "rb") as source, open(path, "wb") as sink:
        while piece := source.read(4 << 20):
            sink.write(codec.compress(piece, asbytes=True))
    marker.write_text(str(rows))
    return path


#: The end of every child script (measure adds it): its figures as one JSON line; the script
#: sets ``seconds``, ``rows`` and ``extra``; peak RSS and CPU are the child's own.
_REPORT = """
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "rows": rows, "cpu": usage.ru_utime + usage.ru_stime,
                  "rss": usage.ru_maxrss * 1024, **extra}))
"""
_SHARDLEARN = """
import json, resource, sys, time
from shardlearn.data import ingest
start = time.perf_counter()
ds = ingest(sys.argv[1], "label", sys.argv[2], partitions=8, overwrite=True)
seconds = time.perf_counter() - start
rows = ds.num_rows()
extra = {"parsers": ds.manifest["parsers"], "ranges": ds.manifest["ranges"]}
"""
_SHARDLEARN_RAY = """
import json, resource, sys, time, warnings
import ray
from ray.cluster_utils import Cluster
from shardlearn.data import _ranges, ingest
from shardlearn.engine import create_engine
if int(sys.argv[4]):
    _ranges.RANGE_BYTES = int(sys.argv[4])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    for _ in range(int(sys.argv[3]) - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    with create_engine("ray") as eng:
        start = time.perf_counter()
        ds = ingest(sys.argv[1], "label", sys.argv[2], partitions=8, overwrite=True,
                    progress=False, engine=eng)
        seconds = time.perf_counter() - start
finally:
    ray.shutdown()
    cluster.shutdown()
rows = ds.num_rows()
extra = {"parsers": ds.manifest["parsers"], "ranges": ds.manifest["ranges"],
         "nodes": ds.manifest["nodes"], "rows_read": ds.manifest["rows_read"]}
"""


def _peer(reader: str) -> tuple[str, str]:
    """A peer: its name and the child script timing ``reader(path)`` (a pyarrow function)."""
    module = reader.rsplit(".", 1)[0]
    code = f"""
import json, resource, sys, time
import {module}
start = time.perf_counter()
table = {reader}(sys.argv[1])
seconds = time.perf_counter() - start
rows, extra = table.num_rows, {{}}
"""
    return reader, code


PEERS = {
    "csv": _peer("pyarrow.csv.read_csv"),
    "jsonl": _peer("pyarrow.json.read_json"),
    "parquet": _peer("pyarrow.parquet.read_table"),
    "csv.zst": _peer("pyarrow.csv.read_csv"),
}
GENERATORS = {
    "csv": generate,
    "jsonl": generate_jsonl,
    "parquet": generate_parquet,
    "csv.zst": generate_zst,
}


def measure(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` and :data:`_REPORT` in a fresh interpreter (clean peak RSS); its figures."""
    proc = subprocess.run(
        [sys.executable, "-c", code + _REPORT, *args],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_out(data: Path, code: str, source: str, *args: str) -> dict:
    """:func:`measure` of an ingest into a folder of its own, removed after the run (outside
    the timed call): every run writes a new dataset, as a single run does, instead of
    overwriting the last run's (which costs more system time)."""
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        return measure(code, source, str(Path(tmp) / "ds"), *args)


def alternating(cases: list[tuple[str, Callable[[], dict]]], repeat: int) -> dict[str, list[dict]]:
    """Every case's figures from ``repeat`` runs, the cases run in turn: in input order in
    odd runs and in reverse order in even ones (a drift of the machine's load hits each case
    alike; the first case is not always the one that starts on an idle machine)."""
    runs: dict[str, list[dict]] = {name: [] for name, _ in cases}
    for index in range(repeat):
        for name, run in cases if index % 2 == 0 else cases[::-1]:
            figures = run()
            runs[name].append(figures)
            print(f"#   run {index + 1}/{repeat} {name}: {figures['seconds']:.2f} s wall, "
                  f"{figures['cpu']:.2f} s CPU", file=sys.stderr)  # fmt: skip
    return runs


def summary(runs: list[dict]) -> dict:
    """One case's runs as one row: the median wall seconds and CPU, the fastest and slowest
    wall, and the largest peak RSS (the memory target holds for every run); other figures
    (parsers, ranges, nodes) from the run of median wall time."""
    walls = sorted(r["seconds"] for r in runs)
    middle = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {
        **middle,
        "seconds": statistics.median(walls),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "rss": max(r["rss"] for r in runs),
        "fastest": walls[0],
        "slowest": walls[-1],
        "runs": len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size (500k rows)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each case, shardlearn and its peer alternating; medians are reported",
    )
    parser.add_argument("--rows", type=int, nargs="*", help="row counts to measure")
    parser.add_argument(
        "--formats", nargs="*", choices=sorted(PEERS), default=["csv"], help="input formats"
    )
    parser.add_argument(
        "--ray-nodes", type=int, default=0, help="also ingest on a local Ray cluster of N nodes"
    )
    parser.add_argument(
        "--range-mib", type=float, default=0, help="byte range size on Ray (default 16 MiB)"
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder of the generated inputs and outputs"
    )
    parser.add_argument(
        "--peer-pool",
        choices=["jemalloc", "mimalloc", "system"],
        help="Arrow allocator of the pyarrow peer (default pyarrow's, mimalloc; ingest uses "
        "jemalloc while it runs)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1; got {args.repeat}")
    sizes = args.rows or ([500_000] if args.quick else [5_000_000, 20_000_000])
    results = []
    for rows, kind in ((r, k) for r in sizes for k in args.formats):
        started = time.perf_counter()
        make = GENERATORS[kind]
        path = make(args.data / f"wide-{rows}.{kind}", rows)
        mb = path.stat().st_size / 1e6
        print(f"# {rows:,} rows, {mb:,.0f} MB ({time.perf_counter() - started:.0f} s to generate)",
              file=sys.stderr)  # fmt: skip
        peer_name, peer_code = PEERS[kind]
        pool = {"ARROW_DEFAULT_MEMORY_POOL": args.peer_pool} if args.peer_pool else None
        range_bytes, nodes = str(int(args.range_mib * 2**20)), str(args.ray_nodes)
        cases = [
            ("ours", partial(fresh_out, args.data, _SHARDLEARN, str(path))),
            ("peer", partial(measure, peer_code, str(path), env=pool)),
        ]
        if args.ray_nodes:
            ray = partial(fresh_out, args.data, _SHARDLEARN_RAY, str(path), nodes, range_bytes)
            cases.append(("ray", ray))
        runs = alternating(cases, args.repeat)
        ours, peer = summary(runs["ours"]), summary(runs["peer"])
        on_ray = summary(runs["ray"]) if args.ray_nodes else None
        results.append((rows, mb, ours, peer, kind, peer_name, on_ray))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, pyarrow {pa.__version__}; load average at the end "
        f"{load:.1f} (other processes share the cores: compare the ratio, not the MB/s); "
        f"peer allocator: {args.peer_pool or 'pyarrow default'}; "
        f"{_runs_text(args.repeat)}\n"
    )
    print(
        "| rows | input | MB | tool | wall s | fastest-slowest s | MB/s | rows/s | CPU s "
        "| peak RSS | throughput vs pyarrow |"
    )
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for rows, mb, ours, peer, kind, peer_name, on_ray in results:
        ingest_name = f"shardlearn ingest ({ours['parsers']} parsers, {ours['ranges']} ranges)"
        cases = [(ingest_name, ours), (peer_name, peer)]
        if on_ray is not None:
            nodes = len(on_ray["nodes"])
            cases.append((f"ingest on {nodes} Ray nodes ({on_ray['ranges']} ranges)", on_ray))
        for name, r in cases:
            ratio = peer["seconds"] / r["seconds"]
            print(
                f"| {rows:,} | {kind} | {mb:,.0f} | {name} | {r['seconds']:.2f} "
                f"| {r['fastest']:.2f}-{r['slowest']:.2f} | {mb / r['seconds']:.0f} "
                f"| {rows / r['seconds'] / 1e6:.2f}M | {r['cpu']:.2f} | {r['rss'] / 2**30:.2f} GiB "
                f"| {ratio:.0%} |"
            )
    _print_nodes(results)


def _runs_text(repeat: int) -> str:
    """How the table's figures were taken."""
    if repeat == 1:
        return "one run of each"
    return (
        f"{repeat} runs of each, alternating; wall and CPU are medians, the ratio is of the "
        "median walls, peak RSS the largest"
    )


def _print_nodes(results: list) -> None:
    """Rows parsed per Ray node (node ids shortened), for the runs on a Ray cluster."""
    for rows, _, _, _, kind, _, on_ray in results:
        if on_ray is None:
            continue
        print(f"\nrows parsed per Ray node ({rows:,} rows, {kind}):\n")
        print("| node | rows | share |")
        print("|---|---:|---:|")
        for node, count in on_ray["nodes"].items():
            print(f"| {node[:12]} | {count:,} | {count / max(on_ray['rows_read'], 1):.0%} |")


if __name__ == "__main__":
    main()
