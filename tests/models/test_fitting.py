"""prepare_training / training_block: arrays and datasets become cached worker blocks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError, SchemaError
from shardlearn.models import LogisticRegression
from shardlearn.models._training.fitting import prepare_training, training_block


def _rows(state):
    block = training_block(state, "train")
    X = block.X.toarray() if sp.issparse(block.X) else block.X
    w = block.sample_weight
    return X, block.y, w


def _count_blocks(state):
    from shardlearn.models._training.fitting import iter_training_blocks

    return sum(1 for _ in iter_training_blocks(state, "train"))


def _rebuild_after_cache_loss(state):
    first = training_block(state, "train")
    state.cache.clear()  # what a replacement worker sees
    again = training_block(state, "train")
    same_x = (
        (first.X != again.X).nnz == 0 if sp.issparse(first.X) else np.array_equal(first.X, again.X)
    )
    return bool(same_x and np.array_equal(first.y, again.y))


@pytest.mark.parametrize("sparse", [False, True])
def test_arrays_are_split_over_the_workers_without_losing_a_row(sparse):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(101, 5)).astype(np.float32)
    X[X < 0.5] = 0
    y = np.array(["b", "a", "c"])[rng.integers(0, 3, 101)]
    weights = rng.uniform(size=101)
    data = sp.csr_matrix(X) if sparse else X
    with (
        engine("local", workers=2),
        prepare_training(LogisticRegression(), data, y, sample_weight=weights) as ctx,
    ):
        parts = ctx.group.run(_rows)
        assert all(ctx.group.run(_rebuild_after_cache_loss))
    assert ctx.group is None  # closed
    assert list(ctx.classes) == ["a", "b", "c"] and ctx.n_features == 5
    # Workers own whole parts (balanced by bytes), so compare rows with their label and weight
    # as sets: every row exactly once, still paired with its own label and weight.
    got = np.column_stack(
        [
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        ]
    )
    codes = np.searchsorted(ctx.classes, y)
    want = np.column_stack([X, codes, weights])
    np.testing.assert_array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
    assert all(len(p[1]) > 0 for p in parts)


def test_dataset_numeric_columns_reach_the_workers(tmp_path):
    table = pa.table({"a": np.arange(10.0), "b": np.ones(10), "y": ["n", "p"] * 5})
    ds = write_dataset(table, tmp_path / "ds", label="y", partitions=3)
    with engine("local", workers=2), prepare_training(LogisticRegression(), ds) as ctx:
        parts = ctx.group.run(_rows)
    X = np.concatenate([p[0] for p in parts])
    assert ctx.feature_names == ["a", "b"] and X.shape == (10, 2)
    np.testing.assert_array_equal(np.sort(X[:, 0]), np.arange(10.0))
    assert ctx.splits == ("train",)


def test_weight_column_of_a_dataset_becomes_sample_weight(tmp_path):
    table = pa.table({"a": np.arange(6.0), "w": np.arange(6.0) + 1, "y": [0, 1] * 3})
    ds = write_dataset(table, tmp_path / "ds", label="y", partitions=2)
    with (
        engine("local", workers=1),
        prepare_training(LogisticRegression(), ds, sample_weight="w") as ctx,
    ):
        X, y, w = ctx.group.run(_rows)[0]
    assert ctx.feature_names == ["a"]
    np.testing.assert_array_equal(w, X[:, 0] + 1)


def test_bad_inputs_are_clear_errors(tmp_path):
    X = np.zeros((4, 2))
    model = LogisticRegression()
    with pytest.raises(DataError, match="y is required"):
        prepare_training(model, X)
    with pytest.raises(DataError, match="4 rows but y has 3"):
        prepare_training(model, X, [0, 1, 0], engine="local")
    with pytest.raises(DataError, match="sample_weight must hold 4"):
        prepare_training(model, X, [0, 1, 0, 1], sample_weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="must be 2-D"):
        prepare_training(model, np.zeros(4), [0, 1, 0, 1])
    with pytest.raises(DataError, match="must be numeric"):
        prepare_training(model, np.array([["a", "b"]] * 4), [0, 1, 0, 1])
    table = pa.table({"a": [1.0, 2.0], "y": [0, 1]})
    ds = write_dataset(table, tmp_path / "ds", label="y", partitions=1)
    with pytest.raises(SchemaError, match="'nope' is not in the dataset"):
        prepare_training(model, ds, sample_weight="nope")
    with pytest.raises(DataError, match="a Dataset carries its label"):
        prepare_training(model, ds, [0, 1])


def test_out_of_core_streaming_gives_the_same_models(tmp_path, monkeypatch):
    from shardlearn.models import GaussianNB, SGDClassifier

    rng = np.random.default_rng(0)
    table = pa.table(
        {"a": rng.normal(size=400), "b": rng.normal(size=400), "y": rng.integers(0, 3, 400)}
    )
    ds = write_dataset(table, tmp_path / "ds", label="y", partitions=4)
    tight = {"tol": 1e-9, "max_iter": 5000}
    with engine("local", workers=1):
        in_memory = LogisticRegression(**tight).fit(ds)
        nb_memory = GaussianNB().fit(ds)
        monkeypatch.setenv("SHARDLEARN_BLOCK_BUDGET", "1")  # every shard streamed, per pass
        streamed = LogisticRegression(**tight).fit(ds)
        nb_streamed = GaussianNB().fit(ds)
        sgd = SGDClassifier(max_iter=3, tol=None).fit(ds)
        with prepare_training(LogisticRegression(), ds) as ctx:
            assert ctx.group.run(_count_blocks) == [4]  # really streamed, shard by shard
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-7)
    np.testing.assert_allclose(nb_streamed.var_, nb_memory.var_, rtol=1e-10)
    assert sgd.n_iter_ == 3 and sgd.coef_.shape == (3, 2)
