"""Round trip of every registered model type through the artifact: bit-identical predictions.

The test is parametrised over ``shardlearn.models._registry.MODELS`` at collection time, so a
model type that lands later is covered automatically (give it fast parameters below if its
defaults are slow).
"""

from __future__ import annotations

import importlib

import numpy as np
import pyarrow as pa
import pytest

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.models import _registry
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import crypto, read_artifact

for _module in ("linear", "bayes", "sgd", "forest", "boosting", "neural"):
    try:  # make sure every model module that exists has registered its classes
        importlib.import_module(f"shardlearn.models.{_module}")
    except ImportError:
        pass

# Small settings so every model trains in well under a second on the test data.
FAST_PARAMS = {
    "mlp": {"hidden_layer_sizes": (8,), "epochs": 2, "random_state": 0, "verbose": False},
    "convnet": {
        "image_shape": (1, 4, 4),
        "channels": (2,),
        "hidden_layer_sizes": (4,),
        "epochs": 1,
        "random_state": 0,
        "verbose": False,
    },
    "random_forest": {"n_estimators": 4, "max_depth": 4, "random_state": 0},
    "extra_trees": {"n_estimators": 4, "max_depth": 4, "random_state": 0},
    "xgboost": {"n_estimators": 5, "max_depth": 3},
    "sgd": {"loss": "log_loss", "random_state": 0},
}
MODEL_NAMES = sorted(n for n in _registry.MODELS if not n.startswith("test-"))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    X = np.abs(rng.normal(size=(120, 16)) + y[:, None] * 0.7)  # non-negative: MultinomialNB
    return X, np.asarray(["ant", "bee", "cat"])[y]


def _make(name: str):
    cls = _registry.MODELS[name]
    params = {k: v for k, v in FAST_PARAMS.get(name, {}).items() if k in cls._param_names()}
    return cls(**params)


def _outputs(model, X) -> dict[str, np.ndarray]:
    out = {}
    # A transformer (PCA) has no predict: its transform is what must round-trip.
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        try:
            out[method] = np.asarray(getattr(model, method)(X))
        except (AttributeError, NotImplementedError):
            pass
    assert out, f"{type(model).__name__} has neither predict nor transform"
    return out


def _assert_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert np.array_equal(before[key], after[key]), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_type_round_trips_bit_identically(name, tmp_path, monkeypatch):
    X, y = _data()
    with engine("local", workers=1):
        model = _make(name).fit(X, y)
    expected = _outputs(model, X)
    path = sl.save(model, tmp_path / "plain")
    _assert_identical(expected, _outputs(sl.load(path), X))
    # The same through a signed and encrypted artifact (native files included).
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, "s" * 32)
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, crypto.generate_key())
    secured = sl.save(model, tmp_path / "secured")
    artifact = read_artifact(secured)
    assert artifact.signature_verified and artifact.encrypted
    assert artifact.model_type == type(model).__name__
    _assert_identical(expected, _outputs(artifact.to_model(), X))


def test_pipeline_round_trips_bit_identically(tmp_path):
    rng = np.random.default_rng(1)
    n = 150
    table = pa.table(
        {
            "age": rng.normal(40, 9, n),
            "city": rng.choice(["oslo", "rome", "lima", "kyiv"], n),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    pre = Preprocessor({"age": "numeric", "city": "categorical"}, label="y")
    with engine("local", workers=1):
        model = sl.Pipeline(pre, sl.GaussianNB()).fit(table, "y")
    loaded = sl.load(sl.save(model, tmp_path / "pipe"))
    assert type(loaded) is sl.Pipeline and type(loaded.estimator) is sl.GaussianNB
    _assert_identical(_outputs(model, table), _outputs(loaded, table))
    schema = read_artifact(tmp_path / "pipe").input_schema
    assert [c["name"] for c in schema["columns"]] == ["age", "city"]
    assert schema["columns"][1]["categories"] == ["kyiv", "lima", "oslo", "rome"]
