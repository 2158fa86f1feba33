"""Batch prediction throughput: shardlearn predict vs pandas + scikit-learn, same data, same run.

Both sides use a logistic regression on the generated loan data without its free-text column
(shardlearn: its Pipeline of
Preprocessor.auto + LogisticRegression trained on the dataset; peer: scikit-learn's
ColumnTransformer(SimpleImputer + StandardScaler, OneHotEncoder) + LogisticRegression, the
usual "read it with pandas and call predict_proba"). Each case reads the input, predicts
probabilities for every row and writes one Parquet file:

* shardlearn, dataset input: every shard predicted in parallel on the local engine's workers,
  one Parquet per shard, concatenated in order (``predict_batch(model, dataset_dir, ...)``);
* shardlearn, CSV input: streamed batch by batch in one process, validated row by row;
* pandas + scikit-learn: ``pd.read_csv`` of the whole file, ``predict_proba``, ``to_parquet``.

    python benchmarks/predict.py            # 1,000,000 rows
    python benchmarks/predict.py --quick    # 100,000 rows
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from shardlearn.data import write_dataset
from shardlearn.data.demo import LABEL, generate_loans
from shardlearn.engine import engine
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry.predict import predict_batch

RESULTS = Path(__file__).resolve().parent / "results"


def _sklearn_model(frame, label: str):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = frame.drop(columns=[label])
    numeric = [c for c in features.columns if features[c].dtype.kind in "if"]
    categorical = [c for c in features.columns if c not in numeric]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        ),
        SkLogistic(max_iter=1000),
    )
    filled = features.fillna({c: "missing" for c in categorical})
    return model.fit(filled, frame[label]), categorical


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(rows: int, workers: int, tmp: Path) -> list[dict]:
    import pandas as pd

    # The free-text column is dropped: scikit-learn's one-hot of it would not be the same
    # feature engineering as shardlearn's hashed TF-IDF, and the point is prediction overhead.
    table = generate_loans(rows, seed=1).drop_columns(["description"])
    features = table.drop_columns([LABEL])
    pacsv.write_csv(features, tmp / "new.csv")
    with engine("local", workers=workers) as eng:
        dataset = write_dataset(table, tmp / "ds", label=LABEL, partitions=2 * workers)
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression()).fit(dataset)
        eng.workers(workers).close()  # start the worker processes before timing
        shard_seconds = _timed(
            lambda: predict_batch(model, dataset.uri, tmp / "a.parquet", proba=True, engine=eng)
        )
    csv_seconds = _timed(
        lambda: predict_batch(model, tmp / "new.csv", tmp / "b.parquet", proba=True)
    )
    sk_model, categorical = _sklearn_model(table.to_pandas(), LABEL)

    def peer() -> None:
        frame = pd.read_csv(tmp / "new.csv").fillna({c: "missing" for c in categorical})
        proba = sk_model.predict_proba(frame)
        out = pd.DataFrame({"prediction": sk_model.classes_[np.argmax(proba, axis=1)]})
        for j, label in enumerate(sk_model.classes_):
            out[f"proba_{label}"] = proba[:, j]
        out.to_parquet(tmp / "c.parquet")

    peer_seconds = _timed(peer)
    cases = [
        (f"shardlearn predict, dataset ({workers} workers)", shard_seconds),
        ("shardlearn predict, CSV streamed", csv_seconds),
        ("pandas read_csv + scikit-learn predict_proba", peer_seconds),
    ]
    return [
        {
            "case": name,
            "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds),
            "vs_pandas_sklearn": round(peer_seconds / seconds, 2),
        }
        for name, seconds in cases
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory(prefix="shardlearn-bench-predict-") as tmp:
        results = run(rows, args.workers, Path(tmp))
    print(f"\nBatch prediction, {rows:,} loan rows, {platform.processor() or platform.machine()}")
    print("| case | seconds | rows/s | speed vs pandas+sklearn |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['case']} | {r['seconds']:.2f} | {r['rows_per_second']:,} | "
            f"{r['vs_pandas_sklearn']:.2f}x |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"predict-{rows}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
