"""Fitting on a WorkerGroup, feature blocks in the workers, and out-of-core streaming.

Distributed results are checked against the same preprocessor fitted in one process on the
concatenated data, and blocks must be bit-identical for 1, 2 and 4 workers and on both engines:
partial fits are merged in shard order, so the worker count cannot change a single bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from _preprocess_helpers import assert_state_close
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shardlearn.data import Shard, ingest, write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError, EngineError, TaskFailed
from shardlearn.preprocess import Preprocessor, iter_blocks, load_block
from shardlearn.preprocess.blocks import BUDGET_ENV


def _blocks_by_shard(state, split):
    """(shard index, X, y) per shard of this worker, cut out of the worker's one block."""
    block = load_block(state, split)
    out, start = [], 0
    for shard in sorted((s for s in state.shards if s.split == split), key=lambda s: s.index):
        stop = start + shard.rows
        x = block.X[start:stop]
        out.append((shard.index, x.toarray() if sp.issparse(x) else x, block.y[start:stop]))
        start = stop
    return out


def _streamed(state, split, budget):
    """Blocks as iter_blocks yields them under ``budget``, and whether a block got cached."""
    blocks = [(b.X, b.y) for b in iter_blocks(state, split, budget=budget)]
    cached = any(isinstance(k, tuple) and k[:1] == ("feature_block",) for k in state.cache)
    return blocks, cached


def _whole(results) -> tuple[np.ndarray, np.ndarray]:
    parts = sorted((p for worker in results for p in worker), key=lambda p: p[0])
    return np.vstack([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _mixed_table(rows: int = 600, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 1, rows)
    income[rng.random(rows) < 0.1] = np.nan
    words = np.array(["cheap", "loan", "offer", "hello", "meeting", "today"])
    return pa.table(
        {
            "income": income,
            "age": rng.integers(18, 90, rows),
            "city": rng.choice(["paris", "rome", "oslo", "lima", "kiev"], rows),
            "note": [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(rows)],
            "when": pa.array(
                np.datetime64("2020-01-01") + rng.integers(0, 10**8, rows).astype("timedelta64[s]")
            ),
            "vip": pa.array(rng.integers(0, 2, rows).astype(np.int8)),
            "label": rng.choice(["bad", "good"], rows),
        }
    )


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "ds"
    return write_dataset(
        _mixed_table(), out, label="label", partitions=5, kinds={"note": "text", "vip": "boolean"}
    )


def _spec(ds):
    return Preprocessor.auto(ds.schema, text={"n_features": 64}, categorical={"top_k": 3})


def _fit_and_load(ds, name: str, workers: int):
    with engine(name, workers=workers) as eng:
        pre = _spec(ds).fit(ds, engine=eng)
        with eng.workers(workers) as group:
            group.assign(ds.shards("train"))
            group.put("preprocessor", pre)
            group.put("classes", ds.classes)
            return pre, _whole(group.run(_blocks_by_shard, "train"))


def test_distributed_fit_equals_one_fit_of_the_concatenated_data(mixed_dataset, any_engine):
    ds = mixed_dataset
    distributed = _spec(ds).fit(ds, engine=any_engine)
    local = _spec(ds).fit(ds.read("train"))
    assert_state_close(distributed, local)
    assert distributed.label_ == "label" and "label" not in distributed.input_columns


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_blocks_are_identical_for_any_worker_count(mixed_dataset, workers):
    reference_pre, (x_ref, y_ref) = _fit_and_load(mixed_dataset, "local", 1)
    pre, (x, y) = _fit_and_load(mixed_dataset, "local", workers)
    assert pre.fingerprint == reference_pre.fingerprint
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    expected = reference_pre.transform(mixed_dataset.read("train"))
    assert x.shape == (mixed_dataset.num_rows("train"), reference_pre.n_features_out_)
    labels = mixed_dataset.read("train").column("label").to_pylist()
    np.testing.assert_array_equal(
        np.sort(y), np.sort([mixed_dataset.classes.index(v) for v in labels])
    )
    assert np.isclose(x.sum(), np.asarray(expected.sum()), rtol=1e-5)


@pytest.mark.ray
def test_blocks_are_identical_on_ray(mixed_dataset, ray_cluster):
    reference_pre, (x_ref, y_ref) = _fit_and_load(mixed_dataset, "local", 1)
    pre, (x, y) = _fit_and_load(mixed_dataset, "ray", 2)
    assert pre.fingerprint == reference_pre.fingerprint
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_out_of_core_streams_shard_by_shard_with_the_same_rows(mixed_dataset, monkeypatch):
    ds = mixed_dataset
    pre = _spec(ds).fit(ds.read("train"))
    with engine("local", workers=1) as eng, eng.workers(1) as group:
        group.assign(ds.shards("train"))
        group.put("preprocessor", pre)
        group.put("classes", ds.classes)
        [(streamed, cached)] = group.run(_streamed, "train", 1)
        assert len(streamed) == len(ds.shards("train")) and not cached
        monkeypatch.setenv(BUDGET_ENV, "1")
        [(from_env, cached)] = group.run(_streamed, "train", None)
        assert len(from_env) == len(streamed) and not cached
        [(whole, cached)] = group.run(_streamed, "train", 10**12)
        assert len(whole) == 1 and cached
    x_whole, y_whole = whole[0]
    np.testing.assert_array_equal(np.vstack([x for x, _ in streamed]), x_whole)
    np.testing.assert_array_equal(np.concatenate([y for _, y in streamed]), y_whole)


def test_empty_shards_are_fitted_and_loaded(mixed_dataset, tmp_path):
    ds = mixed_dataset
    empty_file = tmp_path / "empty.parquet"
    pq.write_table(ds.read("train").slice(0, 0), empty_file)
    empty = Shard("train", 99, "train/empty.parquet", str(empty_file), 0, 0, "")
    shards = [*ds.shards("train"), empty]
    with engine("local", workers=2) as eng, eng.workers(2) as group:
        group.assign(shards)
        pre = _spec(ds).fit_group(group, "train")
        group.put("preprocessor", pre)
        group.put("classes", ds.classes)
        x, y = _whole(group.run(_blocks_by_shard, "train"))
    assert_state_close(pre, _spec(ds).fit(ds, engine="local"))
    assert x.shape == (ds.num_rows("train"), pre.n_features_out_) and y.shape == (x.shape[0],)
    assert x.dtype == np.float32


def _load(state, split):
    return load_block(state, split).n_rows


def test_load_block_errors_name_what_is_missing(mixed_dataset):
    ds = mixed_dataset
    pre = _spec(ds).fit(ds.read("train"))
    with engine("local", workers=1) as eng, eng.workers(1) as group:
        group.assign(ds.shards("train"))
        with pytest.raises((EngineError, TaskFailed), match="group.put\\('preprocessor'"):
            group.run(_load, "train")
        group.put("preprocessor", pre)
        group.put("classes", ["bad"])
        with pytest.raises((DataError, TaskFailed), match="'good' in column 'label' is not one"):
            group.run(_load, "train")


def test_adult_end_to_end_matches_a_column_transformer(shared_datasets: Path, tmp_path, any_engine):
    ds = ingest(shared_datasets / "adult" / "adult.data", "Y", tmp_path / "adult", partitions=4)
    pre = Preprocessor.auto(ds.schema).fit(ds, engine=any_engine)
    with any_engine.workers(2) as group:
        group.assign(ds.shards("train"))
        group.put("preprocessor", pre)
        group.put("classes", ds.classes)
        x, y = _whole(group.run(_blocks_by_shard, "train"))
    frame = ds.read("train").to_pandas()
    numeric = [c.name for c in ds.schema.feature_columns if c.kind == "numeric"]
    categorical = [c.name for c in ds.schema.feature_columns if c.kind == "categorical"]
    frame[categorical] = frame[categorical].fillna("__missing__")
    reference = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (
                "cat",
                OneHotEncoder(max_categories=21, handle_unknown="infrequent_if_exist"),
                categorical,
            ),
        ],
        sparse_threshold=0,
    )
    expected = reference.fit_transform(frame)
    rows = np.concatenate(
        [
            np.arange(s.rows) + sum(t.rows for t in ds.shards("train") if t.index < s.index)
            for s in sorted(ds.shards("train"), key=lambda s: s.index)
        ]
    )
    assert x.shape[0] == ds.num_rows("train") == expected.shape[0]
    np.testing.assert_allclose(x[:, : len(numeric)], expected[rows, : len(numeric)], atol=1e-5)
    assert set(np.unique(y)) == {0, 1}
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert pre.n_features_out_ == len(pre.feature_names_out_) == x.shape[1]
