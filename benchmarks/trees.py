"""Gradient boosting: shardlearn (2 workers) against XGBoost, LightGBM, scikit-learn, H2O, Spark.

Every library trains 100 trees of depth 10 with learning rate 0.1 on the same rows and is
scored by test AUC and training time (the ``fit``/``train`` call; data conversion into each
library's own frame is excluded, shardlearn's hand-off of arrays to its workers is included):

* shardlearn ``XGBoostClassifier`` on the ``local`` engine, 2 workers (started before
  timing, as a running cluster would be);
* XGBoost ``hist``, ``nthread=2``; LightGBM ``num_threads=2`` (``num_leaves=1024`` so that depth
  10 is reachable); scikit-learn ``HistGradientBoostingClassifier`` (``max_leaf_nodes=None``);
  H2O GBM (``h2o.init(nthreads=2)``); Spark ``GBTClassifier`` on ``local[2]`` (``maxBins=256``).

Datasets: (a) the real airline delay set ``../shared/datasets/airline/test-100k-intenc.csv``
split 80/20; (b) airline-like rows generated deterministically (same columns, category codes
and ranges, a label from a fixed logistic model with interactions): 1M rows (10M with
``--full``; 200k with ``--quick``), split 80/20. Spark runs on (a) and on the 1M set only.

A peer that fails to start (no Java, package missing) is reported as such, not dropped.

Usage: ``python benchmarks/trees.py [--quick | --full] [--peers xgboost,lightgbm,...]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent
AIRLINE = ROOT.parents[1] / "shared" / "datasets" / "airline" / "test-100k-intenc.csv"
CACHE = ROOT / "_data"
COLUMNS = ["Month", "DayofMonth", "DayOfWeek", "DepTime", "UniqueCarrier", "Origin", "Dest",
           "Distance"]  # fmt: skip
TREES, DEPTH, RATE = 100, 10, 0.1
THREADS = 2
SPARK_MAX_ROWS = 1_000_000
GENERATOR_CHUNK = 1_000_000  # rows per seeded chunk: the data does not depend on --full

PEERS = ["shardlearn", "xgboost", "lightgbm", "sklearn", "h2o", "spark"]


# ------------------------------------------------------------------ data
def airline() -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(AIRLINE)
    return frame[COLUMNS].to_numpy(np.float32), frame["dep_delayed_15min"].to_numpy(np.int64)


def _effects() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12345)
    return {
        "carrier": rng.normal(0, 0.35, 24),
        "origin": rng.normal(0, 0.3, 309),
        "dest": rng.normal(0, 0.2, 309),
        "month": rng.normal(0, 0.25, 13),
    }


def _airport_probabilities(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** 0.9  # a few hubs, a long tail, as in the real data
    return weights / weights.sum()


def _generate_chunk(n: int, seed: int, fx: dict[str, np.ndarray]) -> tuple:
    rng = np.random.default_rng(seed)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 32, n)
    weekday = rng.integers(1, 8, n)
    hour = np.clip(rng.normal(13.5, 4.5, n).round(), 0, 23).astype(int)
    dep_time = np.maximum(hour * 100 + rng.integers(0, 60, n), 1)
    carrier = rng.integers(1, 24, n)
    origin = rng.choice(np.arange(1, 308), n, p=_airport_probabilities(307))
    dest = rng.choice(np.arange(1, 309), n, p=_airport_probabilities(308))
    distance = np.clip(rng.lognormal(6.4, 0.6, n), 31, 4962).round()
    evening = hour >= 17
    logit = (
        -1.75
        + 0.7 * evening
        + 0.05 * (hour - 12)
        + fx["carrier"][carrier]
        + fx["origin"][origin]
        + fx["dest"][dest]
        + fx["month"][month]
        + 0.2 * np.isin(weekday, (4, 5))
        + 0.1 * np.log(distance / 600)
        + 0.45 * (np.isin(month, (6, 7, 12)) & evening)
        + 0.3 * ((day > 20) & (month == 12))
    )
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    columns = (month, day, weekday, dep_time, carrier, origin, dest, distance)
    return np.column_stack(columns).astype(np.float32), label


def airline_like(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` airline-like rows, identical for a given ``n`` on every machine (cached)."""
    x_path, y_path = CACHE / f"airline-like-{n}.X.npy", CACHE / f"airline-like-{n}.y.npy"
    if x_path.exists() and y_path.exists():
        return np.load(x_path), np.load(y_path)
    fx = _effects()
    parts = [
        _generate_chunk(min(GENERATOR_CHUNK, n - start), 1000 + i, fx)
        for i, start in enumerate(range(0, n, GENERATOR_CHUNK))
    ]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    CACHE.mkdir(exist_ok=True)
    np.save(x_path, X)
    np.save(y_path, y)
    return X, y


def split(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple:
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return X[train], y[train], X[test], y[test]


# ------------------------------------------------------------------ peers
# Each peer: (X, y, X_test) -> (train seconds, positive-class scores of X_test).
def run_shardlearn(X, y, X_test):
    from shardlearn.engine import engine
    from shardlearn.models import XGBoostClassifier

    params = {"n_estimators": TREES, "max_depth": DEPTH, "learning_rate": RATE}
    with engine("local", workers=2):
        XGBoostClassifier(n_estimators=1).fit(X[:1000], y[:1000])  # start the workers
        start = time.perf_counter()
        model = XGBoostClassifier(**params).fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, model.predict_proba(X_test)[:, 1]


def run_xgboost(X, y, X_test):
    import xgboost as xgb

    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": DEPTH,
              "eta": RATE, "nthread": THREADS}  # fmt: skip
    start = time.perf_counter()
    booster = xgb.train(params, xgb.QuantileDMatrix(X, y), TREES)
    seconds = time.perf_counter() - start
    return seconds, booster.predict(xgb.DMatrix(X_test))


def run_lightgbm(X, y, X_test):
    import lightgbm as lgb

    params = {"objective": "binary", "max_depth": DEPTH, "num_leaves": 2**DEPTH,
              "learning_rate": RATE, "num_threads": THREADS, "verbose": -1}  # fmt: skip
    start = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(X, y), TREES)
    seconds = time.perf_counter() - start
    return seconds, booster.predict(X_test)


def run_sklearn(X, y, X_test):
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=TREES, max_depth=DEPTH, max_leaf_nodes=None, learning_rate=RATE,
        early_stopping=False, random_state=0,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, model.predict_proba(X_test)[:, 1]


def run_h2o(X, y, X_test):
    import h2o
    import pandas as pd
    from h2o.estimators import H2OGradientBoostingEstimator

    h2o.init(nthreads=THREADS, max_mem_size="6G", verbose=False)
    h2o.no_progress()
    try:
        train = h2o.H2OFrame(pd.DataFrame(X, columns=COLUMNS).assign(label=y.astype(str)))
        train["label"] = train["label"].asfactor()
        test = h2o.H2OFrame(pd.DataFrame(X_test, columns=COLUMNS))
        model = H2OGradientBoostingEstimator(ntrees=TREES, max_depth=DEPTH, learn_rate=RATE, seed=0)
        start = time.perf_counter()
        model.train(x=COLUMNS, y="label", training_frame=train)
        seconds = time.perf_counter() - start
        scores = model.predict(test).as_data_frame()["p1"].to_numpy()
    finally:
        h2o.cluster().shutdown()
    return seconds, scores


def run_spark(X, y, X_test):
    import pandas as pd
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{THREADS}]")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        assemble = VectorAssembler(inputCols=COLUMNS, outputCol="features")
        frame = pd.DataFrame(X.astype(np.float64), columns=COLUMNS).assign(label=y.astype(float))
        train = assemble.transform(spark.createDataFrame(frame)).select("features", "label")
        train = train.cache()
        train.count()
        test_frame = pd.DataFrame(X_test.astype(np.float64), columns=COLUMNS)
        test = assemble.transform(spark.createDataFrame(test_frame))
        gbt = GBTClassifier(maxIter=TREES, maxDepth=DEPTH, stepSize=RATE, maxBins=256, seed=0)
        start = time.perf_counter()
        model = gbt.fit(train)
        seconds = time.perf_counter() - start
        rows = model.transform(test).select("probability").collect()
        scores = np.array([row[0][1] for row in rows])
    finally:
        spark.stop()
    return seconds, scores


RUNNERS: dict[str, Callable] = {
    "shardlearn": run_shardlearn,
    "xgboost": run_xgboost,
    "lightgbm": run_lightgbm,
    "sklearn": run_sklearn,
    "h2o": run_h2o,
    "spark": run_spark,
}
LABELS = {
    "shardlearn": "shardlearn GBDT (2 workers)",
    "xgboost": "XGBoost hist (nthread=2)",
    "lightgbm": "LightGBM (num_threads=2)",
    "sklearn": "scikit-learn HistGradientBoosting",
    "h2o": "H2O GBM (nthreads=2)",
    "spark": "Spark GBTClassifier (local[2])",
}


def measure(peer: str, data: tuple) -> dict:
    X, y, X_test, y_test = data
    try:
        seconds, scores = RUNNERS[peer](X, y, X_test)
    except Exception as error:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        traceback.print_exc(file=sys.stderr)
        return {"peer": peer, "error": f"{type(error).__name__}: {str(error)[:120]}"}
    return {"peer": peer, "seconds": seconds, "auc": float(roc_auc_score(y_test, scores))}


# ------------------------------------------------------------------ report
def table(name: str, rows: list[dict]) -> str:
    base = {r["peer"]: r for r in rows if "seconds" in r}
    ours = base.get("shardlearn")
    lines = [
        f"**{name}**",
        "",
        "| library | train time (s) | test AUC | time / shardlearn |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        label = LABELS[row["peer"]]
        if "error" in row:
            lines.append(f"| {label} | failed to run: {row['error']} | | |")
            continue
        ratio = f"{row['seconds'] / ours['seconds']:.2f}x" if ours else "n/a"
        lines.append(f"| {label} | {row['seconds']:.1f} | {row['auc']:.4f} | {ratio} |")
    return "\n".join(lines)


def summary(results: dict[str, list[dict]]) -> list[str]:
    notes = []
    for name, rows in results.items():
        by = {r["peer"]: r for r in rows if "seconds" in r}
        if "shardlearn" in by and "xgboost" in by:
            overhead = by["shardlearn"]["seconds"] / by["xgboost"]["seconds"] - 1
            # The targets: +30% on the real airline rows (80k), +10% on the generated 1M.
            target = 0.10 if name.startswith("airline-like") else 0.30
            notes.append(f"{name}: distribution overhead over single-process XGBoost "
                         f"{overhead:+.0%} (target <= {target:+.0%})")  # fmt: skip
        if "shardlearn" in by and "spark" in by:
            speedup = by["spark"]["seconds"] / by["shardlearn"]["seconds"]
            gap = by["shardlearn"]["auc"] - by["spark"]["auc"]
            notes.append(f"{name}: {speedup:.1f}x faster than Spark, AUC difference "
                         f"{gap:+.4f} (target >= 50x at +-0.005)")  # fmt: skip
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="200k generated rows")
    size.add_argument("--full", action="store_true", help="also 10M generated rows")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument("--sets", default="airline,generated", help="airline and/or generated")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--report", help="print the tables of an earlier --json file and exit")
    args = parser.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    sizes = [200_000] if args.quick else [1_000_000] + ([10_000_000] if args.full else [])
    datasets: list[tuple[str, Callable[[], tuple]]] = []
    if "airline" in args.sets:
        datasets.append(("airline delay, real, 100k rows split 80/20", lambda: split(*airline())))
    if "generated" in args.sets:
        for n in sizes:
            datasets.append((f"airline-like, generated, {n:,} rows split 80/20",
                             lambda n=n: split(*airline_like(n))))  # fmt: skip
    results: dict[str, list[dict]] = {}
    for name, load in datasets:
        data = load()
        rows = []
        for peer in peers:
            if peer == "spark" and len(data[1]) + len(data[3]) > SPARK_MAX_ROWS:
                continue
            print(f"[{name}] {peer} ...", file=sys.stderr, flush=True)
            rows.append(measure(peer, data))
            print(f"[{name}] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
            results[name] = rows
            if args.json:  # written after every peer, so a long run keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2))
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    for name, rows in results.items():
        print(table(name, rows) + "\n", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; {TREES} trees, depth {DEPTH}, learning rate {RATE}.")
    for note in summary(results):
        print("- " + note)


if __name__ == "__main__":
    main()
