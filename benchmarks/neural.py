"""Neural-network training speed and accuracy: shardlearn MLP (1 and 2 workers) vs scikit-learn.

One run, same machine, same data: synthetic tabular classification (deterministic for a seed;
``--rows`` rows, 20 features, 4 classes, 10% held out for testing). Measured:

- shardlearn ``MLPClassifier`` (torch) with 1 worker (in-process, torch limited to one
  thread so that one worker means one core), with 2 workers forced (``execution="workers"``:
  data parallel, one all-reduce per step -- through shared memory for a network of one
  bucket, else gloo --, one thread per worker) and with
  ``execution="auto"`` on an engine of 2 workers (the cost model picks in-process or the
  workers; the chosen mode and the model's estimates are printed; it runs after the forced
  2-worker fits, so its workers are warm: torch imported), the same global batch, seed and
  epochs;
- scikit-learn ``MLPClassifier`` (adam, same layers, batch, learning rate and epochs; BLAS
  limited to one thread, the same one core as shardlearn's single worker).

Reported per trainer: seconds per epoch and per optimiser step (for shardlearn, the median of
the epochs after the first of the fit on warm workers: the steady speed, which a cold first
fit's young worker processes do not reach at once; for scikit-learn, its one fit's mean),
epochs/s, total fit seconds (incl. start-up: the workers' start and torch import are paid by
the first fit of an interpreter), the same fit again on the warm workers, test accuracy, and
the speed ratio to scikit-learn; then the first fit's phases (``fit_timings_``).
The closing note gives the scaling efficiency of 2 workers
(``epochs/s(2) / (2 * epochs/s(1))``) and where ``auto`` trained.

Usage::

    python benchmarks/neural.py            # 1M rows, 4 epochs
    python benchmarks/neural.py --quick    # 100k rows, 3 epochs
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

HIDDEN = (64, 64)
BATCH = 1024
LEARNING_RATE = 1e-3
N_FEATURES = 20
N_CLASSES = 4


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A deterministic non-linear task: labels from a random two-layer teacher network."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    w1 = rng.normal(size=(N_FEATURES, 32)) / np.sqrt(N_FEATURES)
    w2 = rng.normal(size=(32, N_CLASSES))
    logits = np.tanh(X @ w1) @ w2 + 0.3 * rng.normal(size=(rows, N_CLASSES))
    y = logits.argmax(axis=1)
    cut = int(rows * 0.9)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def bench_shardlearn(data: tuple, workers: int, epochs: int, execution: str) -> dict:
    import torch

    from shardlearn.engine import engine
    from shardlearn.models import MLPClassifier

    X, y, X_test, y_test = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in-process worker: one core, like each of the 2 workers
    try:
        model = MLPClassifier(
            hidden_layer_sizes=HIDDEN,
            batch_size=BATCH,
            epochs=epochs,
            learning_rate=LEARNING_RATE,
            early_stopping=False,
            random_state=0,
            verbose=False,
            execution=execution,
        )
        start = time.perf_counter()
        with engine("local", workers=workers):
            model.fit(X, y)
            total = time.perf_counter() - start
            # The same fit again on the now warm workers (torch imported, rows cached in
            # this interpreter's idle pool): the fixed cost every later fit pays.
            start = time.perf_counter()
            again = MLPClassifier(**model.get_params()).fit(X, y)
            warm = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    per_epoch = statistics.median(again.epoch_seconds_[1:] or again.epoch_seconds_)
    accuracy = float(np.mean(model.predict(X_test) == y_test))
    return {
        "seconds_per_epoch": per_epoch,
        "total": total,
        "warm": warm,
        "accuracy": accuracy,
        "execution": model.execution_,
        "phases": model.fit_timings_,
        "estimates": model._execution_plan.estimates if model._execution_plan else {},
    }


def bench_sklearn(data: tuple, epochs: int) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    X, y, X_test, y_test = data
    model = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        batch_size=BATCH,
        max_iter=epochs,
        learning_rate_init=LEARNING_RATE,
        random_state=0,
        tol=0.0,
        n_iter_no_change=epochs + 1,
    )
    start = time.perf_counter()
    # One BLAS thread: the same one core per trainer as shardlearn's single worker (and a
    # BLAS thread pool on a busy 2-core machine only slows small matrix products down).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    total = time.perf_counter() - start
    accuracy = float(np.mean(model.predict(X_test) == y_test))
    return {"seconds_per_epoch": total / model.n_iter_, "total": total, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 epochs")
    args = parser.parse_args()
    rows, epochs = (100_000, 3) if args.quick else (args.rows, args.epochs)
    data = make_data(rows)
    print(
        f"# {rows:,} rows x {N_FEATURES} features, {N_CLASSES} classes, MLP {HIDDEN}, "
        f"global batch {BATCH}, {epochs} epochs; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    results = {
        "scikit-learn MLPClassifier": bench_sklearn(data, epochs),
        "shardlearn MLP, 1 worker": bench_shardlearn(data, 1, epochs, "workers"),
        "shardlearn MLP, 2 workers (forced)": bench_shardlearn(data, 2, epochs, "workers"),
        "shardlearn MLP, 2 workers, execution=auto": bench_shardlearn(data, 2, epochs, "auto"),
    }
    base = results["scikit-learn MLPClassifier"]["seconds_per_epoch"]
    steps = -(-data[0].shape[0] // BATCH)  # optimiser steps per epoch
    print(
        "| trainer | s/epoch | ms/step | epochs/s | fit s (total) | fit s (warm) "
        "| test accuracy | vs scikit-learn |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        warm = f"{r['warm']:.1f}" if "warm" in r else "-"
        print(
            f"| {name} | {r['seconds_per_epoch']:.2f} | "
            f"{1000 * r['seconds_per_epoch'] / steps:.3f} | {1 / r['seconds_per_epoch']:.3f} | "
            f"{r['total']:.1f} | {warm} | {r['accuracy']:.4f} | "
            f"{base / r['seconds_per_epoch']:.2f}x |"
        )
    print("\nPhases of the first fit (s):")
    for name, r in results.items():
        if "phases" in r:
            print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
    one = 1 / results["shardlearn MLP, 1 worker"]["seconds_per_epoch"]
    two = 1 / results["shardlearn MLP, 2 workers (forced)"]["seconds_per_epoch"]
    auto = results["shardlearn MLP, 2 workers, execution=auto"]
    print(
        f"\nScaling efficiency, 2 workers vs 1: {two / (2 * one):.0%} "
        f"(speed-up {two / one:.2f}x on {os.cpu_count()} cores). "
        f"execution=auto trained {auto['execution']}: "
        f"{one * auto['seconds_per_epoch']:.2f}x the 1-worker time per epoch "
        "(estimated fit s: "
        + ", ".join(f"{mode} {value:.2f}" for mode, value in auto["estimates"].items())
        + ")."
    )


if __name__ == "__main__":
    main()
