"""Hyperparameter search and shard-level cross-validation across the cluster.

Selection does not leak: a trial's early stopping watches an inner split of its training
shards, never the rows it is scored on, and the best configuration is refitted with the rounds
or epochs its trials selected (``SearchResult.refit_params``).

Not run as a test (forty trials of two model families, five folds each, take minutes):

>>> from shardlearn.search import search, loguniform, randint          # doctest: +SKIP
>>> result = search("data/adult", models=["logistic", "xgboost"],
...                 space={"logistic": {"C": loguniform(1e-3, 1e2)},
...                        "xgboost": {"max_depth": randint(3, 10)}},
...                 strategy="tpe", trials=40, cv=5, out="runs/s1")  # doctest: +SKIP
>>> result.leaderboard[0], result.test_metrics["roc_auc"]              # doctest: +SKIP
"""

from __future__ import annotations

from shardlearn.search._progress import leaderboard_table
from shardlearn.search._search import SearchResult, parse_duration, search
from shardlearn.search.cv import (
    fold_assignment,
    fold_views,
    holdout_view,
    shard_folds,
    trainer_view,
)
from shardlearn.search.space import (
    Distribution,
    ModelSpace,
    choice,
    load_space,
    loguniform,
    parse_space,
    randint,
    uniform,
)
from shardlearn.search.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "Distribution",
    "ModelSpace",
    "SearchResult",
    "choice",
    "fold_assignment",
    "fold_views",
    "holdout_view",
    "leaderboard_table",
    "load_space",
    "loguniform",
    "parse_duration",
    "parse_space",
    "randint",
    "search",
    "shard_folds",
    "trainer_view",
    "uniform",
]
