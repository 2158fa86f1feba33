"""A one-process trial scores the kept feature block of its fold's scored shards: the metrics
are evaluate()'s on the same view, every key, on shuffled, keyed and ordered shard layouts."""

from __future__ import annotations

import pytest

from shardlearn import _warm
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.metrics import evaluate
from shardlearn.models import Pipeline, model_class
from shardlearn.preprocess import Preprocessor
from shardlearn.search._trial import IN_THREADS, fold_metrics
from shardlearn.search.cv import fold_views, holdout_view, trainer_view
from tests.search.conftest import make_table

MODELS = {"xgboost": {"n_estimators": 5, "max_depth": 3, "subsample": 0.7},
          "linear_svc": {}}  # fmt: skip


@pytest.fixture(scope="module", params=["random", "hash:x0", "range:x1"])
def layout(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("fold-metrics") / request.param.replace(":", "-")
    return write_dataset(make_table(400, 2), out, label="y", partitions=4,
                         strategy=request.param, split=(0.75, 0.25, 0.0))  # fmt: skip


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fold_metrics_equal_evaluate_on_every_layout(layout, model):
    views = [holdout_view(layout), *fold_views(layout, 2)]
    with engine("local", workers=1) as eng, _warm.scope("fold-metrics-test") as counters:
        for fold, view in enumerate(views):
            fit_view, _ = trainer_view(view, 0, fold, False)
            estimator = model_class(model)(**MODELS[model])
            pipeline = Pipeline(Preprocessor.for_schema(fit_view.schema, None), estimator)
            fitted = pipeline.fit(fit_view, engine=eng)
            expected = dict(evaluate(fitted, view, split="valid", engine=eng).metrics)
            assert fold_metrics(fitted, view, eng, IN_THREADS) == expected
            # Scored again from the kept block: the same again.
            assert fold_metrics(fitted, view, eng, IN_THREADS) == expected
    assert counters is not None and counters.hits["block_builds"] >= len(views)
