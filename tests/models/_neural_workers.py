"""Small data and an MLP forced onto the worker group, for the neural process-group tests.

Shared by ``test_neural_rendezvous.py`` and ``test_neural_fixed_costs.py``; import it after
``pytest.importorskip("torch")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import make_classification

from shardlearn.models.neural_network._neural import MLPClassifier


def small_tabular() -> tuple[np.ndarray, np.ndarray]:
    """200 rows of 6 float32 features, 2 classes (seeded)."""
    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)
    return X.astype(np.float32), y


def workers_mlp(**params: Any) -> MLPClassifier:
    """A small seeded MLP that always trains on the worker group (never in-process)."""
    defaults = dict(
        hidden_layer_sizes=(8, 8),
        batch_size=32,
        epochs=2,
        random_state=3,
        early_stopping=False,
        verbose=False,
        execution="workers",  # the process group under test, never the in-process choice
    )
    return MLPClassifier(**{**defaults, **params})
