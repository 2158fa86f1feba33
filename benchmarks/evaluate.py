"""Evaluation: every metric on 20M predictions, shardlearn (2 workers) vs sklearn.metrics.

The predictions are generated once (softmax scores with some signal) and written as a sharded
dataset with the stored probabilities as columns. shardlearn evaluates them with
``shardlearn.evaluate`` and a model that returns the stored columns, so the workers read their
shards, "predict", fill the accumulators and merge -- the whole distributed path. The peer is
``sklearn.metrics`` in one process on the same numbers: accuracy, balanced accuracy,
precision/recall/F1 (per class, micro, macro, weighted), ROC-AUC, average precision, log loss,
Brier, Cohen's kappa, MCC, confusion matrix and a calibration curve. sklearn's time counts the
metric calls only (the arrays are already in memory; reading them is shown separately);
shardlearn's time includes reading the shards.

Each peer runs in its own subprocess; peak memory is the highest total RSS of that process and
all its children (the worker processes), sampled every 20 ms.

    python benchmarks/evaluate.py            # 20M predictions, 2 classes
    python benchmarks/evaluate.py --quick    # 1M predictions
    python benchmarks/evaluate.py --classes 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

CHUNK = 1_000_000
SHARDS = 16


class StoredScores:
    """A "model" whose predict_proba returns the probability columns p0..p{K-1} of the batch."""

    def __init__(self, classes: list[int]) -> None:
        self.classes_ = np.array(classes)

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        return np.column_stack(
            [table.column(f"p{k}").to_numpy() for k in range(len(self.classes_))]
        )


def generate(rows: int, classes: int, out: Path) -> None:
    """Write ``rows`` labelled predictions as a dataset (test split only)."""
    from shardlearn.data import write_dataset

    rng = np.random.default_rng(0)
    tables = []
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        y = rng.integers(0, classes, n)
        logits = rng.normal(size=(n, classes))
        logits[np.arange(n), y] += 1.5
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        columns = {f"p{k}": proba[:, k] for k in range(classes)}
        columns["label"] = y.astype(np.int64)
        tables.append(pa.table(columns))
    write_dataset(
        pa.concat_tables(tables), out, label="label", partitions=SHARDS, split=(0.0, 0.0, 1.0)
    )


def run_shardlearn(data: Path, workers: int) -> dict:
    # The model travels to the workers with group.put; a class pickled from __main__ cannot
    # be found there, so use it through this file's importable name (its directory is on the
    # sys.path the workers inherit).
    from evaluate import StoredScores as ImportableStoredScores
    from shardlearn.data import Dataset
    from shardlearn.engine import engine
    from shardlearn.metrics import UndefinedMetricWarning, evaluate

    ds = Dataset.open(data)
    model = ImportableStoredScores(list(ds.classes))
    with engine("local", workers=workers) as eng:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            report = evaluate(model, ds, split="test", engine=eng)
        seconds = time.perf_counter() - started
    metrics = {k: v for k, v in report.metrics.items() if isinstance(v, float)}
    return {"seconds": seconds, "metrics": metrics}


def run_sklearn(data: Path) -> dict:
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    from shardlearn.data import Dataset

    started = time.perf_counter()
    table = Dataset.open(data).read("test")
    k = sum(1 for name in table.column_names if name.startswith("p"))
    y = table.column("label").to_numpy()
    proba = np.column_stack([table.column(f"p{j}").to_numpy() for j in range(k)])
    del table
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pred = np.argmax(proba, axis=1)
    labels = list(range(k))
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "log_loss": skm.log_loss(y, proba, labels=labels),
        "brier": skm.brier_score_loss(y, proba, labels=labels),
        "cohen_kappa": skm.cohen_kappa_score(y, pred),
        "mcc": skm.matthews_corrcoef(y, pred),
    }
    skm.precision_recall_fscore_support(y, pred, labels=labels, average=None)
    for average in ("micro", "macro", "weighted"):
        _, _, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=average)
        out[f"f1_{average}"] = f1
    skm.confusion_matrix(y, pred, labels=labels)
    if k == 2:
        out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        out["pr_auc"] = skm.average_precision_score(y, proba[:, 1])
        calibration_curve(y, proba[:, 1], n_bins=10)
    else:
        out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
        out["roc_auc_weighted"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="weighted")
        out["pr_auc"] = float(
            np.mean([skm.average_precision_score(y == j, proba[:, j]) for j in labels])
        )
        for j in labels:
            calibration_curve(y == j, proba[:, j], n_bins=10)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "load_seconds": load_seconds, "metrics": out}


def measure(args: list[str]) -> dict:
    """Run this script with ``args`` in a subprocess; its JSON result plus resource use.

    Every 20 ms the process tree (the step and its worker processes) is sampled: peak total
    RSS, and the last CPU time seen per process (summed at the end, so workers that exit
    early still count). CPU time covers the whole step, imports included.
    """
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    parent = psutil.Process(process.pid)
    peak, cpu = 0, {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            total = 0
            try:
                tree = [parent, *parent.children(recursive=True)]
            except psutil.Error:  # the step has just exited
                break
            for proc in tree:
                try:
                    with proc.oneshot():
                        total += proc.memory_info().rss
                        times = proc.cpu_times()
                        cpu[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            peak = max(peak, total)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"benchmark step {args} failed with exit code {process.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_bytes"] = peak
    result["cpu_seconds"] = sum(cpu.values())
    return result


def table(rows: int, classes: int, results: dict[str, dict]) -> str:
    reference = results["sklearn.metrics (1 process)"]
    lines = [
        f"{rows:,} predictions, {classes} classes, {SHARDS} shards; "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "",
        "| peer | wall time (s) | CPU time (s) | peak memory (MiB) | wall time vs sklearn "
        "| max diff, exact metrics | ROC-AUC diff (bound) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    areas = ("roc_auc", "roc_auc_weighted", "pr_auc")
    for name, result in results.items():
        ours = result["metrics"]
        diffs = [
            abs(ours[key] - value)
            for key, value in reference["metrics"].items()
            if key in ours and key not in areas
        ]
        auc_diff = abs(ours["roc_auc"] - reference["metrics"]["roc_auc"])
        bound = ours.get("roc_auc_error_bound", 0.0)
        lines.append(
            f"| {name} | {result['seconds']:.2f} | {result['cpu_seconds']:.2f} | "
            f"{result['peak_bytes'] / 2**20:,.0f} | "
            f"{result['seconds'] / reference['seconds']:.2f}x | {max(diffs):.1e} | "
            f"{auc_diff:.1e} ({bound:.1e}) |"
        )
    lines.append("")
    lines.append(
        f"sklearn's time excludes reading the data into memory "
        f"({reference['load_seconds']:.2f} s); shardlearn's includes reading the shards and "
        f"starting the workers. Load average at the end: {os.getloadavg()[0]:.1f}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M predictions instead of 20M")
    parser.add_argument("--rows", type=int, default=None, help="number of predictions")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--step", choices=["shardlearn", "sklearn"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "shardlearn":
        print(json.dumps(run_shardlearn(args.data, args.workers)))
        return
    if args.step == "sklearn":
        print(json.dumps(run_sklearn(args.data)))
        return
    rows = args.rows or (1_000_000 if args.quick else 20_000_000)
    with tempfile.TemporaryDirectory(prefix="shardlearn-bench-eval-") as tmp:
        data = Path(tmp) / "predictions"
        started = time.perf_counter()
        generate(rows, args.classes, data)
        print(
            f"generated {rows:,} predictions in {time.perf_counter() - started:.1f} s", flush=True
        )
        results = {}
        for workers in (2, 1):
            step = ["--step", "shardlearn", "--data", str(data), "--workers", str(workers)]
            results[f"shardlearn evaluate ({workers} worker{'s' * (workers > 1)})"] = measure(step)
        results["sklearn.metrics (1 process)"] = measure(["--step", "sklearn", "--data", str(data)])
    print(table(rows, args.classes, results))


if __name__ == "__main__":
    main()
