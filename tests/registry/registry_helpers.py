"""A small real classifier with the artifact hooks, and helpers the registry tests share.

The registry is built before (and independently of) the project's trainers, so its format,
crypto and index are exercised on this nearest-centroid classifier: a real model (fit on data,
predicts by distance to class centroids) that implements ``_to_artifact``/``_from_artifact``
exactly as the Models contract asks.
"""

from __future__ import annotations

import multiprocessing
import struct
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from shardlearn._validation import Interval
from shardlearn.base import BaseEstimator
from shardlearn.models import _registry

MODEL_NAME = "test-centroid"


class CentroidClassifier(BaseEstimator):
    """Nearest-centroid classifier; probabilities are a softmax of -distance² / temperature."""

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "temperature": [Interval("real", 0, None, closed="neither")],
    }

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def fit(self, X: Any, y: Any) -> CentroidClassifier:
        self._validate_params()
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray([f"f{i}" for i in range(X.shape[1])])
        return self

    def _as_matrix(self, X: Any) -> np.ndarray:
        if hasattr(X, "column_names"):  # a pyarrow Table / RecordBatch of feature columns
            X = np.column_stack([X.column(n).to_numpy() for n in self.feature_names_in_])
        return np.asarray(X, dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._as_matrix(X)
        distances = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        logits = -distances / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        meta = {"params": self.get_params(deep=False), "n_features_in": self.n_features_in_}
        arrays = {
            "centroids": self.centroids_,
            "classes": self.classes_,
            "feature_names": self.feature_names_in_,
        }
        # A native file, as XGBoost/torch models bring: the temperature as a raw double.
        files = {"temperature.bin": struct.pack("<d", self.temperature)}
        return meta, arrays, files

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> CentroidClassifier:
        model = cls(**meta["params"])
        (model.temperature,) = struct.unpack("<d", files["temperature.bin"])
        model.centroids_ = arrays["centroids"]
        model.classes_ = arrays["classes"]
        model.feature_names_in_ = arrays["feature_names"]
        model.n_features_in_ = meta["n_features_in"]
        return model


def install() -> None:
    """Register the test model class (idempotent)."""
    _registry.MODELS[MODEL_NAME] = CentroidClassifier


def uninstall() -> None:
    _registry.MODELS.pop(MODEL_NAME, None)


def make_data(n: int = 60, seed: int = 0, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Separable-ish blobs with string labels."""
    rng = np.random.default_rng(seed)
    y = np.asarray(["ant", "bee", "cat", "dog"][:n_classes])[rng.integers(0, n_classes, n)]
    centers = {"ant": 0.0, "bee": 2.0, "cat": 4.0, "dog": 6.0}
    X = rng.normal(size=(n, 4)) + np.asarray([centers[v] for v in y])[:, None]
    return X, y


def fitted_model(seed: int = 0) -> CentroidClassifier:
    X, y = make_data(seed=seed)
    return CentroidClassifier(temperature=2.0).fit(X, y)


def register_many(root: str, name: str, count: int, seed: int, start: Any, results: Any) -> None:
    """Child-process body of the concurrency test: wait for ``start``, register ``count`` times,
    put the version numbers it got on ``results``."""
    from shardlearn.registry import Registry

    install()
    model = fitted_model(seed)
    registry = Registry(root)
    start.wait()
    results.put(
        [registry.register(model, name, metrics={"seed": seed}).version for _ in range(count)]
    )


def race(target: Callable[..., None], arguments: list[tuple]) -> list[Any]:
    """Run ``target(*args, start=..., results=...)`` in one spawned process per ``args``, all
    released together (``start`` is set once every child is up) so that their work overlaps;
    what each put on ``results``, in the order they finished. Every child must exit with 0."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    shared = {"start": start, "results": results}
    processes = [context.Process(target=target, args=args, kwargs=shared) for args in arguments]
    for process in processes:
        process.start()
    start.set()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes
