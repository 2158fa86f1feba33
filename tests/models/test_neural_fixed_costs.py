"""What a distributed neural fit pays beyond its epochs, counted rather than timed (issue #23).

A fit on warm workers used to spend more on leaving its process group than on training: every
teardown ran a full ``gc.collect()`` in every worker, which scans every object torch's import
created (0.3-0.9 s per fit on a shared 2-core machine). The run is now freed by reference
counting and collected only when a reference cycle keeps part of it alive.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.models._neural_workers import small_tabular  # noqa: E402
from tests.models._neural_workers import workers_mlp as _mlp  # noqa: E402

from shardlearn.engine import engine  # noqa: E402
from shardlearn.models._training.fitting import prepare_training  # noqa: E402

MODES = [{}, {"parallelism": "pipeline", "stages": 2}]
# Per worker process: gc.collect as it was before _count_collections replaced it, and the count.
_COUNT: dict[str, Any] = {}


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray]:
    return small_tabular()


def _count_collections(state: Any) -> None:
    """On a worker: count explicit full collections from now on."""
    _COUNT["original"], _COUNT["calls"] = gc.collect, 0

    def counting(*args: Any, **kwargs: Any) -> int:
        _COUNT["calls"] += 1
        return _COUNT["original"](*args, **kwargs)

    gc.collect = counting


def _collections(state: Any) -> int:
    """On a worker: the explicit collections counted, and gc.collect put back."""
    gc.collect = _COUNT.pop("original")
    return _COUNT.pop("calls")


@pytest.mark.parametrize("mode", MODES, ids=["data", "pipeline"])
def test_teardown_runs_no_full_collection_when_nothing_cycles(tabular, mode):
    X, y = tabular
    with engine("local", workers=2):
        model = _mlp(**mode)
        with prepare_training(model, X, y) as ctx:
            ctx.group.run(_count_collections)
            try:
                model._fit_context(ctx)
            finally:
                counts = ctx.group.run(_collections)
        reference = _mlp(**mode).fit(X, y)
    assert counts == [0, 0]
    assert model.n_iter_ == 2
    for name, value in reference.state_dict_.items():
        np.testing.assert_array_equal(model.state_dict_[name], value)
