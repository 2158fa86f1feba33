"""ONNX export of linear models and naive Bayes, checked with onnxruntime against native."""

from __future__ import annotations

import numpy as np
import pytest

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.exceptions import ArtifactError
from shardlearn.registry.onnx import export_onnx

ort = pytest.importorskip("onnxruntime")


def _data(n_classes: int, seed: int = 0, counts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 200)
    if counts:
        X = rng.poisson(1.0 + y[:, None] * np.arange(1, 7) / 3.0, size=(200, 6)).astype(float)
    else:
        X = rng.normal(size=(200, 6)) + y[:, None] * 0.8
    # Values exactly representable in float32, so the float32 ONNX input is the same data.
    return X.astype(np.float32).astype(np.float64), np.asarray(["low", "mid", "high"])[y]


MODELS = {
    "logistic-binary": (lambda: sl.LogisticRegression(C=0.5), 2, False),
    "logistic-multinomial": (lambda: sl.LogisticRegression(), 3, False),
    "sgd-log-binary": (lambda: sl.SGDClassifier(loss="log_loss", random_state=0), 2, False),
    "sgd-log-ovr": (lambda: sl.SGDClassifier(loss="log_loss", random_state=0), 3, False),
    "gaussian-nb": (lambda: sl.GaussianNB(), 3, False),
    "multinomial-nb": (lambda: sl.MultinomialNB(alpha=0.5), 3, True),
}
MARGIN_MODELS = {
    "linear-svc-binary": (lambda: sl.LinearSVC(), 2),
    "linear-svc-ovr": (lambda: sl.LinearSVC(), 3),
    "sgd-hinge": (lambda: sl.SGDClassifier(random_state=0), 3),
}


def _fit(make, n_classes, counts=False):
    X, y = _data(n_classes, counts=counts)
    with engine("local", workers=1):
        return make().fit(X, y), X


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", sorted(MODELS))
def test_onnx_probabilities_equal_native_to_1e_5(case, tmp_path):
    make, n_classes, counts = MODELS[case]
    model, X = _fit(make, n_classes, counts)
    session = _session(export_onnx(model, tmp_path / "m.onnx"))
    label, proba = session.run(["label", "probabilities"], {"X": X.astype(np.float32)})
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=0, atol=1e-5)
    assert label.tolist() == model.predict(X).tolist()


@pytest.mark.parametrize("case", sorted(MARGIN_MODELS))
def test_onnx_scores_of_margin_models_equal_decision_function(case, tmp_path):
    make, n_classes = MARGIN_MODELS[case]
    model, X = _fit(make, n_classes)
    session = _session(export_onnx(model, tmp_path / "m.onnx", dtype="float64"))
    label, scores = session.run(["label", "scores"], {"X": X})
    native = model.decision_function(X)
    assert scores.shape == native.shape
    np.testing.assert_allclose(scores, native, rtol=1e-5, atol=1e-5)
    assert label.tolist() == model.predict(X).tolist()


def test_integer_classes_come_back_as_int64(tmp_path):
    X, y = _data(3)
    with engine("local", workers=1):
        model = sl.GaussianNB().fit(X, (y == "mid").astype(np.int64) + 5)
    session = _session(export_onnx(model, tmp_path / "m.onnx"))
    (label,) = session.run(["label"], {"X": X.astype(np.float32)})
    assert label.dtype == np.int64 and label.tolist() == model.predict(X).tolist()


def test_models_that_cannot_be_exported_say_which_can(tmp_path):
    class Forest:
        classes_ = np.array([0, 1])

    with pytest.raises(ArtifactError, match="ONNX export supports LogisticRegression.*Forest"):
        export_onnx(Forest(), tmp_path / "m.onnx")


def test_pipeline_export_needs_estimator_only(tmp_path):
    import pyarrow as pa

    from shardlearn.preprocess import Preprocessor

    X, y = _data(2)
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "y": y})
    with engine("local", workers=1):
        pipe = sl.Pipeline(Preprocessor({"a": "numeric", "b": "numeric"}, label="y"),
                           sl.LogisticRegression()).fit(table, "y")  # fmt: skip
    with pytest.raises(ArtifactError, match="estimator_only=True"):
        export_onnx(pipe, tmp_path / "m.onnx")
    session = _session(export_onnx(pipe, tmp_path / "m.onnx", estimator_only=True))
    features = pipe.preprocessor.transform(table)
    (proba,) = session.run(["probabilities"], {"X": np.asarray(features, dtype=np.float32)})
    np.testing.assert_allclose(proba, pipe.predict_proba(table), atol=1e-5)
