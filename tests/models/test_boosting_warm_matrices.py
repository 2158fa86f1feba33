"""XGBoost on a worker group inside a warm scope: the workers bin a fold's rows once and every
later fit on the same rows trains on those matrices, giving the booster a fresh build gives;
other rows or another ``max_bin`` build anew."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shardlearn import _warm
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import XGBoostClassifier

WORKERS = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 4))
    y = (X[:, 0] * X[:, 1] + rng.normal(scale=0.5, size=600) > 0).astype(np.int64)
    table = pa.table({**{f"x{i}": X[:, i] for i in range(4)}, "y": y})
    out = tmp_path_factory.mktemp("warm-matrices") / "ds"
    return write_dataset(table, out, label="y", partitions=4, split=(0.75, 0.25, 0.0))


def _fit(dataset, eng, **params):
    model = XGBoostClassifier(n_estimators=5, max_depth=3, subsample=0.8, execution="workers",
                              verbose=0, **params)  # fmt: skip
    return model.fit(dataset, engine=eng).booster_.get_dump()


def test_later_fits_on_the_same_rows_reuse_the_workers_matrices(dataset):
    with engine("local", workers=WORKERS) as eng:
        fresh = _fit(dataset, eng)  # no scope: built for this fit alone
        with _warm.scope("matrices-test", budget=10**9) as first:
            built = _fit(dataset, eng)
        with _warm.scope("matrices-test", budget=10**9) as second:
            reused = _fit(dataset, eng, learning_rate=0.2)
            again = _fit(dataset, eng)
        with _warm.scope("matrices-test", budget=10**9) as other:
            other_bins = _fit(dataset, eng, max_bin=32)
        _warm.release("matrices-test")
    assert first.builds["matrix_builds"] == WORKERS  # each worker's share, binned once
    assert second.builds["matrix_builds"] == 0
    assert second.hits["matrix_builds"] == 2 * WORKERS
    assert built == fresh and again == fresh  # the kept matrices train the same trees
    assert reused != fresh  # (another learning rate: the comparison can fail)
    assert other.builds["matrix_builds"] == WORKERS  # another max_bin bins again
    assert other_bins != fresh
