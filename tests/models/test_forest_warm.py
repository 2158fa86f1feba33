"""A forest's per-shard feature blocks in a warm scope (:mod:`shardlearn._warm`): every worker
of a forest fit transforms every training shard, and the scope's next forest fit on the same
shards takes them from memory, so each shard is transformed once per process; the forests are
the ones fits without a scope grow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shardlearn import _warm
from shardlearn.data import write_dataset
from shardlearn.engine import create_engine, engine
from shardlearn.models import ExtraTreesClassifier, Pipeline, RandomForestClassifier
from shardlearn.preprocess import Preprocessor

SHARDS = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(1)
    n = 800
    X = rng.normal(size=(n, 3))
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = (X[:, 0] + (colour == "red") + 0.5 * rng.normal(size=n) > 0.3).astype(np.int64)
    table = pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "colour": colour, "y": y})
    out = tmp_path_factory.mktemp("forest-warm") / "ds"
    # Ordered shards (by x0), not shuffled.
    return write_dataset(table, out, label="y", partitions=SHARDS, strategy="range:x0")


def _forests():
    return [
        RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0),
        ExtraTreesClassifier(n_estimators=5, random_state=1, class_weight="balanced"),
        RandomForestClassifier(n_estimators=4, max_samples=0.5, random_state=2),
    ]


def _fit_all(dataset, eng=None):
    return [
        Pipeline(Preprocessor.auto(dataset.schema), forest).fit(dataset, engine=eng)
        for forest in _forests()
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_forests_in_one_scope_transform_each_shard_once_per_process(dataset, workers) -> None:
    with engine("local", workers=workers):
        counters = _warm.current().counters
        models = _fit_all(dataset)
    fits = len(models)
    # Each worker (every one grows trees: a process each, or this one) transforms every shard
    # once, in the first fit; the other fits take the blocks.
    assert counters.builds["block_builds"] == SHARDS * workers
    assert counters.hits["block_builds"] == SHARDS * workers * (fits - 1)
    assert counters.refused == 0
    plain = create_engine("local", workers=workers)
    try:
        fresh = _fit_all(dataset, plain)
    finally:
        plain.close()
    rows = dataset.read("train")
    for model, alone in zip(models, fresh, strict=True):
        forest, reference = model.estimator, alone.estimator
        for name in ("feature_", "threshold_", "value_", "children_left_"):
            np.testing.assert_array_equal(getattr(forest, name), getattr(reference, name))
        np.testing.assert_array_equal(model.predict_proba(rows), alone.predict_proba(rows))
