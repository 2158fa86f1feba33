"""Engine overheads, measured against their peers in the same run.

* overhead per task: one ``submit(...).result()`` round trip of a no-op task, sequentially;
* overhead per ``WorkerGroup.run`` round trip (2 workers, no-op);
* 1,000 tasks of 10 ms on 2 workers, with ``submit`` and through the TaskGraph scheduler,
  against the ideal 1,000 x 10 ms / 2 = 5 s (targets: <= 10 % overhead local, <= 25 % Ray);
* tree-reduce of a 1M-float64 vector over 2 and 8 workers (``group.reduce(..., combine=np.add)``).

Peers: ``concurrent.futures.ProcessPoolExecutor`` (2 processes) for ``local`` and plain Ray
tasks/actors for ``ray``; a ratio > 1 means shardlearn is slower than the peer.

Usage: ``python benchmarks/engine.py [--quick] [--engines local,ray] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import wait as wait_futures

import numpy as np

from shardlearn.engine import TaskGraph, engine

VECTOR = 1_000_000  # floats per worker result in the reduce benchmark
TASK_SECONDS = 0.010


def noop(*_args):
    return None


def noop_state(state):
    return None


def sleep_task(seconds: float) -> None:
    time.sleep(seconds)


def vector(state) -> np.ndarray:
    return np.full(VECTOR, float(state.rank))


def vector_plain(rank: int) -> np.ndarray:
    return np.full(VECTOR, float(rank))


def _mean_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: process start, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _graph_of_sleeps(n_tasks: int) -> TaskGraph:
    graph = TaskGraph()
    for i in range(n_tasks):
        graph.add(f"t{i}", sleep_task, TASK_SECONDS, cache=False)
    return graph


def bench_shardlearn(name: str, n_tasks: int, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with engine(name, workers=2) as eng:
        out["task"] = _mean_seconds(lambda: eng.submit(noop).result(), repeats)
        with eng.workers(2) as group:
            out["run"] = _mean_seconds(lambda: group.run(noop_state), repeats)
        graph = _graph_of_sleeps(n_tasks)
        graph.run(eng, outputs=["t0"], progress=False)  # warm the task processes
        start = time.perf_counter()
        wait_futures([eng.submit(sleep_task, TASK_SECONDS) for _ in range(n_tasks)])
        out["submit_10ms"] = time.perf_counter() - start
        start = time.perf_counter()
        graph.run(eng, progress=False)
        out["tasks_10ms"] = time.perf_counter() - start
        for size in (2, 8):
            with eng.workers(size) as group:
                out[f"reduce_{size}"] = _mean_seconds(
                    lambda g=group: g.reduce(vector, combine=np.add), max(repeats // 10, 3)
                )
    return out


def bench_process_pool(n_tasks: int, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with ProcessPoolExecutor(2) as pool:
        out["task"] = _mean_seconds(lambda: pool.submit(noop).result(), repeats)
        out["run"] = _mean_seconds(lambda: [f.result() for f in [pool.submit(noop)] * 2], repeats)
        start = time.perf_counter()
        wait_futures([pool.submit(sleep_task, TASK_SECONDS) for _ in range(n_tasks)])
        out["tasks_10ms"] = out["submit_10ms"] = time.perf_counter() - start
    for size in (2, 8):
        with ProcessPoolExecutor(size) as pool:

            def reduce(pool=pool, size=size):
                return np.sum(list(pool.map(vector_plain, range(size))), axis=0)

            out[f"reduce_{size}"] = _mean_seconds(reduce, max(repeats // 10, 3))
    return out


def bench_plain_ray(n_tasks: int, repeats: int) -> dict[str, float]:
    import ray

    out: dict[str, float] = {}
    remote_noop = ray.remote(noop)
    remote_sleep = ray.remote(sleep_task)
    remote_vector = ray.remote(vector_plain)
    out["task"] = _mean_seconds(lambda: ray.get(remote_noop.remote()), repeats)

    @ray.remote
    class Worker:
        def noop(self):
            return None

    actors = [Worker.remote() for _ in range(2)]
    out["run"] = _mean_seconds(lambda: ray.get([a.noop.remote() for a in actors]), repeats)
    start = time.perf_counter()
    ray.get([remote_sleep.remote(TASK_SECONDS) for _ in range(n_tasks)])
    out["tasks_10ms"] = out["submit_10ms"] = time.perf_counter() - start
    for size in (2, 8):
        out[f"reduce_{size}"] = _mean_seconds(
            lambda size=size: np.sum(ray.get([remote_vector.remote(r) for r in range(size)]), 0),
            max(repeats // 10, 3),
        )
    for actor in actors:
        ray.kill(actor)
    return out


ROWS = [
    ("task", "overhead per task (no-op submit + result)", "ms"),
    ("run", "overhead per WorkerGroup.run round trip, 2 workers", "ms"),
    ("submit_10ms", "{n} tasks x 10 ms on 2 workers, submit (ideal {ideal:.1f} s)", "s"),
    ("tasks_10ms", "{n} tasks x 10 ms on 2 workers, TaskGraph (ideal {ideal:.1f} s)", "s"),
    ("reduce_2", "tree-reduce of 1M float64 over 2 workers", "ms"),
    ("reduce_8", "tree-reduce of 1M float64 over 8 workers", "ms"),
]


def table(results: dict[str, dict[str, dict[str, float]]], n_tasks: int) -> str:
    ideal = n_tasks * TASK_SECONDS / 2
    lines = [
        "| engine | measurement | shardlearn | peer | peer time | ratio | vs ideal |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for name, measured in results.items():
        ours, peer = measured["shardlearn"], measured["peer"]
        peer_name = "ProcessPoolExecutor" if name == "local" else "plain Ray"
        for key, label, unit in ROWS:
            scale = 1000.0 if unit == "ms" else 1.0
            versus = f"+{100 * (ours[key] / ideal - 1):.1f} %" if key.endswith("10ms") else ""
            lines.append(
                f"| {name} | {label.format(n=n_tasks, ideal=ideal)} | "
                f"{ours[key] * scale:.2f} {unit} | {peer_name} | {peer[key] * scale:.2f} {unit} | "
                f"{ours[key] / peer[key]:.2f} | {versus} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 tasks, fewer repeats")
    parser.add_argument("--engines", default="local,ray", help="comma-separated: local,ray")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()
    n_tasks, repeats = (200, 30) if args.quick else (1000, 100)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.engines.split(","):
        if name == "local":
            results["local"] = {
                "shardlearn": bench_shardlearn("local", n_tasks, repeats),
                "peer": bench_process_pool(n_tasks, repeats),
            }
        elif name == "ray":
            import warnings

            import ray

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            # Warm-up: a fresh Ray keeps starting worker processes for a while, which would
            # slow whichever side is measured first.
            ray.get([ray.remote(sleep_task).remote(TASK_SECONDS) for _ in range(n_tasks)])
            try:
                results["ray"] = {
                    "shardlearn": bench_shardlearn("ray", n_tasks, repeats),
                    "peer": bench_plain_ray(n_tasks, repeats),
                }
            finally:
                ray.shutdown()
        else:
            parser.error(f"unknown engine {name!r}; use local and/or ray")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"{' (--quick)' if args.quick else ''}"
    )
    print(table(results, n_tasks))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
