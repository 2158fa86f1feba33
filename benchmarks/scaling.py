"""Strong and weak scaling of logistic regression (L-BFGS) and GBDT (XGBoost collective).

What is measured, on THIS machine (read the caveat):

* 1, 2 and 4 *simulated nodes* = 1, 2 and 4 workers of the ``local`` engine (one process
  each; 1 runs in the calling process). All of them share the same cores (``os.cpu_count()``,
  2 on the team machine), so adding nodes adds communication and coordination but NO compute:
  the measured times cannot speed up. They measure the overheads, which is what the model
  below needs.
* strong scaling: the same rows on 1, 2, 4 nodes; weak scaling: rows proportional to nodes.
* communication per round, per algorithm, from the real payloads:
  L-BFGS: each function evaluation broadcasts the weights and every worker returns its loss
  and gradient (``pickle`` sizes of the real arrays) -> ``2 x nodes x (P x 8 bytes)`` through
  the driver. XGBoost hist: every tree level allreduces a gradient/hessian histogram of
  ``features x max_bin x 2 x 8 bytes`` per node being split (from the parameters; XGBoost does
  not report it).

Every configuration is fitted once untimed (worker start, imports), then the best of 2-3
timed fits is kept. Model, fitted with non-negative least squares per algorithm::

    time = setup + alpha * rows * rounds / cores + lam * rounds * nodes + bytes / bandwidth

(measured ``cores`` = min(nodes, cpu_count): one simulated node is one process.)

``lam * rounds * nodes``: the driver (or the tracker) talks to every node once per round. The
bytes term cannot be separated from latency on one machine (local pipes), so it is not fitted;
the projection uses 10 Gb/s. Projected: 16, 64, 256 nodes x 16 cores, 10 Gb/s, 1B rows.

Usage: ``python benchmarks/scaling.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.optimize import nnls

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import LogisticRegression, XGBoostClassifier

NODES = (1, 2, 4)
FEATURES = 20
MAX_BIN = 64
MAX_DEPTH = 4
TREES = 10
BANDWIDTH = 10e9 / 8  # 10 Gb/s in bytes per second
PROJECT_NODES = (16, 64, 256)
PROJECT_CORES = 16
PROJECT_ROWS = 1_000_000_000


def make_dataset(rows: int, root: Path, seed: int = 0):
    """A dense numeric binary problem, sharded 8 ways."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    w = rng.normal(size=FEATURES)
    y = (X @ w + rng.normal(scale=2.0, size=rows) > 0).astype(np.int64)
    columns = {f"x{i}": X[:, i] for i in range(FEATURES)}
    table = pa.table({**columns, "label": y})
    return write_dataset(table, root / f"rows{rows}", label="label", partitions=8, seed=seed)


def lbfgs_bytes_per_round(model: LogisticRegression, nodes: int) -> int:
    """Bytes through the DRIVER per evaluation: weights out + (loss, gradient) back, per node.

    From the pickled sizes of arrays of the real shapes (what the engine sends).
    """
    weights = np.zeros(model.coef_.size + model.intercept_.size)
    reply = np.zeros(weights.size + 1)
    return nodes * (len(pickle.dumps(weights)) + len(pickle.dumps(reply)))


def gbdt_bytes_per_round(nodes: int) -> int:
    """Bytes EACH node sends per tree level in a ring allreduce of the histograms.

    A ring allreduce sends ``2 (n-1)/n`` times the payload per node (about 2x), independent of
    the number of nodes; the nodes send in parallel. Averaged over the levels of a full tree.
    """
    per_level = FEATURES * MAX_BIN * 2 * 8
    split_nodes = 2**MAX_DEPTH - 1  # nodes split in a full tree of depth MAX_DEPTH
    return 2 * per_level * split_nodes // MAX_DEPTH  # ring: 2x the payload, per level-round


def fit_once(algorithm: str, dataset, eng) -> tuple[float, int]:
    """Seconds of one fit and its communication rounds."""
    start = time.perf_counter()
    if algorithm == "logistic":
        model = LogisticRegression(tol=1e-6, max_iter=100).fit(dataset, engine=eng)
        rounds = int(model.n_iter_)
    else:
        XGBoostClassifier(
            n_estimators=TREES, max_depth=MAX_DEPTH, max_bin=MAX_BIN, random_state=0
        ).fit(dataset, engine=eng)
        rounds = TREES * MAX_DEPTH  # one histogram allreduce per level of every tree
    return time.perf_counter() - start, rounds


def run_one(algorithm: str, dataset, nodes: int, repeats: int) -> dict:
    """Best of ``repeats`` fits after one untimed warm-up (worker start, imports, page cache)."""
    with engine("local", workers=nodes) as eng:
        fit_once(algorithm, dataset, eng)
        timings = [fit_once(algorithm, dataset, eng) for _ in range(repeats)]
    seconds, rounds = min(timings)
    if algorithm == "logistic":
        per_round = lbfgs_bytes_per_round(_shape_only(), nodes)
    else:
        per_round = gbdt_bytes_per_round(nodes)
    return {"algorithm": algorithm, "nodes": nodes, "rows": dataset.num_rows("train"),
            "rounds": rounds, "seconds": seconds, "bytes_per_round": per_round}  # fmt: skip


def fit_model(results: list[dict], cores: int) -> dict:
    """NNLS fit of setup, alpha (s per row-round per core) and lam (s per round per node)."""
    # A simulated node is one process: 1 node computes on 1 core, more share all the cores.
    A = np.array([[1.0, r["rows"] * r["rounds"] / min(r["nodes"], cores),
                   r["rounds"] * r["nodes"]] for r in results])  # fmt: skip
    b = np.array([r["seconds"] for r in results])
    coef, residual = nnls(A, b)
    return {"setup": coef[0], "alpha": coef[1], "lam": coef[2],
            "rms_error": float(residual / math.sqrt(len(b)))}  # fmt: skip


def project(algorithm: str, model: dict, rounds: int) -> list[dict]:
    """Projected time for 1B rows on PROJECT_NODES nodes x 16 cores at 10 Gb/s."""
    out = []
    for nodes in PROJECT_NODES:
        cores = nodes * PROJECT_CORES
        compute = model["alpha"] * PROJECT_ROWS * rounds / cores
        if algorithm == "logistic":
            latency = model["lam"] * rounds * nodes  # the driver calls every node per round
            per_round = lbfgs_bytes_per_round(_shape_only(), nodes)
        else:
            latency = model["lam"] * rounds * math.log2(nodes)  # allreduce tree depth
            per_round = gbdt_bytes_per_round(nodes)  # ring: every node sends this, in parallel
        network = rounds * per_round / BANDWIDTH
        total = model["setup"] + compute + latency + network
        out.append({"algorithm": algorithm, "nodes": nodes, "cores": cores,
                    "compute_s": compute, "latency_s": latency, "network_s": network,
                    "total_s": total})  # fmt: skip
    return out


def _shape_only() -> LogisticRegression:
    model = LogisticRegression()
    model.coef_ = np.zeros((1, FEATURES))
    model.intercept_ = np.zeros(1)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data (a few minutes)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    base = 5_000 if args.quick else 50_000
    repeats = 2 if args.quick else 3
    cores = os.cpu_count() or 1
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="shardlearn-scaling-") as tmp:
        datasets = {n: make_dataset(base * n, Path(tmp)) for n in NODES}
        for algorithm in ("logistic", "gbdt"):
            for nodes in NODES:
                strong = run_one(algorithm, datasets[max(NODES)], nodes, repeats)
                weak = run_one(algorithm, datasets[nodes], nodes, repeats)
                results += [{**strong, "kind": "strong"}, {**weak, "kind": "weak"}]
    report(results, cores, args)


def report(results: list[dict], cores: int, args: argparse.Namespace) -> None:
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print("\n| algorithm | kind | nodes | rows | rounds | seconds | bytes/round |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['algorithm']} | {r['kind']} | {r['nodes']} | {r['rows']:,} | "
              f"{r['rounds']} | {r['seconds']:.2f} | {r['bytes_per_round']:,} |")  # fmt: skip
    models, projections = {}, []
    print("\n| algorithm | setup s | alpha s/(row·round/core) | lam s/(round·node) | rms s |")
    print("|---|---|---|---|---|")
    for algorithm in ("logistic", "gbdt"):
        rows = [r for r in results if r["algorithm"] == algorithm]
        model = models[algorithm] = fit_model(rows, cores)
        print(f"| {algorithm} | {model['setup']:.3f} | {model['alpha']:.3e} | "
              f"{model['lam']:.3e} | {model['rms_error']:.3f} |")  # fmt: skip
        projections += project(algorithm, model, max(r["rounds"] for r in rows))
    print(f"\nprojection: {PROJECT_ROWS:,} rows, nodes x {PROJECT_CORES} cores, 10 Gb/s")
    print("| algorithm | nodes | cores | compute s | latency s | network s | total s |")
    print("|---|---|---|---|---|---|---|")
    for p in projections:
        print(f"| {p['algorithm']} | {p['nodes']} | {p['cores']} | {p['compute_s']:.1f} | "
              f"{p['latency_s']:.2f} | {p['network_s']:.3f} | {p['total_s']:.1f} |")  # fmt: skip
    if args.json:
        payload = {"results": results, "models": models, "projections": projections}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
