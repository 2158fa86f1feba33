"""Small synthetic datasets for the search tests (a few hundred rows, a handful of shards)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sklearn.datasets import make_classification

from shardlearn.data import write_dataset


def make_table(rows: int = 360, seed: int = 0) -> pa.Table:
    X, y = make_classification(
        rows, 5, n_informative=3, n_redundant=0, class_sep=0.6, flip_y=0.1, random_state=seed
    )
    return pa.table({**{f"x{i}": X[:, i] for i in range(X.shape[1])}, "y": y})


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory):
    """Train-only, 4 stratified shards: for k-fold tests."""
    out = tmp_path_factory.mktemp("search-data") / "cv"
    return write_dataset(make_table(), out, label="y", partitions=4, strategy="stratified")


@pytest.fixture(scope="session")
def split_dataset(tmp_path_factory: pytest.TempPathFactory):
    """Train/valid/test, 4 shards per split: for holdout, refit and CLI tests."""
    out = tmp_path_factory.mktemp("search-data") / "split"
    return write_dataset(make_table(480, 1), out, label="y", partitions=4, split=(0.6, 0.2, 0.2))
