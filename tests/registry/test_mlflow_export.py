"""``models export --format mlflow``: a real MLflow pyfunc model that predicts like the model.

Loaded with the real ``mlflow.pyfunc.load_model``, whose loader reads the copied artifact with
``shardlearn.load`` (hashes and signature checked again).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.exceptions import ArtifactError
from shardlearn.registry import crypto
from shardlearn.testing import run_cli

ROWS = 240


def _frame(seed: int, rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(50.0, 10.0, rows),
            "age": rng.integers(18, 80, rows),
            "city": rng.choice(["north", "south", "east"], rows),
        }
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, sl.Pipeline]:
    """A registry holding ``shop:1``, a Pipeline with float, int and categorical inputs, and
    ``margin:1``, a LinearSVC (no probabilities) on the same data."""
    root = tmp_path_factory.mktemp("mlflow-export")
    frame = _frame(0)
    noise = np.random.default_rng(1).normal(0, 5, ROWS)
    label = np.where(frame["income"] + 8.0 * (frame["city"] == "north") + noise > 55, "yes", "no")
    table = pa.table({**{c: frame[c].to_numpy() for c in frame}, "bought": label})
    ds = write_dataset(table, root / "shop", label="bought", partitions=2, split=(0.8, 0.2, 0.0))
    with sl.engine("local", workers=1):
        model = sl.Pipeline(sl.Preprocessor.auto(ds.schema), sl.LogisticRegression()).fit(ds)
        margin = sl.Pipeline(sl.Preprocessor.auto(ds.schema), sl.LinearSVC()).fit(ds)
    sl.Registry(root / "models").register(model, "shop")
    sl.Registry(root / "models").register(margin, "margin")
    return str(root / "models"), model


def test_exported_mlflow_model_predicts_like_predict_proba(capsys, registry, tmp_path) -> None:
    mlflow = pytest.importorskip("mlflow.pyfunc")
    root, model = registry
    out = tmp_path / "shop-mlflow"
    args = ["models", "export", "shop:1", "--format", "mlflow", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args, "--registry", root)
    assert code == 0, err
    assert "Wrote MLflow model" in stdout

    loaded = mlflow.load_model(str(out))
    frame = _frame(7, 50)  # rows the model never saw, int64 ages included
    predicted = loaded.predict(frame)
    assert list(predicted.columns) == ["proba_no", "proba_yes"]
    np.testing.assert_array_equal(predicted.to_numpy(), model.predict_proba(frame))

    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    flavour = mlmodel["flavors"]["python_function"]
    assert flavour["loader_module"] == "shardlearn.registry.mlflow"
    assert (out / flavour["data"] / "model.json").is_file()
    inputs = loaded.metadata.get_input_schema().to_dict()
    assert [(c["name"], c["type"]) for c in inputs] == [
        ("income", "double"), ("age", "any"), ("city", "string")
    ]  # fmt: skip
    # pandas makes an integer column with a missing value float64: still predicted
    gappy = frame.astype({"age": "float64"})
    gappy.loc[0, "age"] = np.nan
    np.testing.assert_array_equal(loaded.predict(gappy).to_numpy(), model.predict_proba(gappy))
    requirements = (out / "requirements.txt").read_text().split()
    assert f"shardlearn=={sl.__version__}" in requirements


def test_exported_model_refuses_a_tampered_or_unsigned_copy(registry, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow.pyfunc")
    from shardlearn.registry.mlflow import export_mlflow

    root, _ = registry
    out = export_mlflow(sl.Registry(root).read("shop:1"), tmp_path / "export")
    copied = out / "data" / "model" / "arrays.npz"
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, sl.registry.generate_key())
    with pytest.raises(ArtifactError, match="not signed|unsigned"):
        mlflow.load_model(str(out))
    monkeypatch.delenv(crypto.SIGNING_KEY_ENV)
    data = bytearray(copied.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copied.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="arrays.npz"):
        mlflow.load_model(str(out))


def test_mlflow_option_without_the_extra_is_one_line_naming_it(capsys, registry, tmp_path):
    root, _ = registry
    missing = {"mlflow": None, "mlflow.pyfunc": None}  # None in sys.modules: ImportError
    with pytest.MonkeyPatch.context() as patch:
        for name, value in missing.items():
            patch.setitem(sys.modules, name, value)
        code, _, err = run_cli(
            capsys, "models", "export", "shop:1", "--format", "mlflow", "--registry", root,
            "--out", str(tmp_path / "x"),
        )  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0 and "pip install 'shardlearn[mlflow]'" in err
    assert not (tmp_path / "x").exists()


def test_a_model_without_probabilities_exports_its_predictions(registry, tmp_path):
    mlflow = pytest.importorskip("mlflow.pyfunc")
    from shardlearn.registry.mlflow import export_mlflow

    root, _ = registry
    reg = sl.Registry(root)
    out = export_mlflow(reg.read("margin:1"), tmp_path / "margin")
    frame = _frame(8, 30)
    predicted = mlflow.load_model(str(out)).predict(frame)
    assert list(predicted.columns) == ["prediction"]
    np.testing.assert_array_equal(predicted["prediction"], reg.load("margin:1").predict(frame))
