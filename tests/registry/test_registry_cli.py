"""``shardlearn models ...`` and ``shardlearn predict``, run through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry
from shardlearn.testing import run_cli


def _table(n: int = 80, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "blue"], n)
    y = np.where(x + (color == "red") > 0.5, "yes", "no")
    return pa.table({"id": np.arange(n), "x": x, "color": color, "y": y})


@pytest.fixture(scope="module")
def pipeline():
    with engine("local", workers=1):
        pre = Preprocessor({"x": "numeric", "color": "categorical"}, label="y")
        return sl.Pipeline(pre, sl.LogisticRegression()).fit(_table(), "y")


@pytest.fixture
def registry(tmp_path, pipeline, monkeypatch) -> Registry:
    monkeypatch.setenv("SHARDLEARN_MODELS", str(tmp_path / "models"))
    registry = Registry(tmp_path / "models")
    registry.register(pipeline, "colors", metrics={"accuracy": 0.875})
    registry.register(pipeline, "colors", metrics={"accuracy": 0.9})
    return registry


def test_list_shows_versions_and_json(registry, capsys):
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and "colors" in out and "accuracy=0.875" in out
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert [(v["name"], v["version"]) for v in json.loads(out)] == [("colors", 1), ("colors", 2)]


def test_list_of_an_empty_registry_says_how_to_fill_it(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "models", "list", "--registry", str(tmp_path / "none"))
    assert code == 0 and "--register NAME" in out


def test_show_promote_and_stage_reference(registry, capsys):
    code, out, _ = run_cli(capsys, "models", "promote", "colors", "1", "production")
    assert code == 0 and "colors:1 is now in production" in out
    code, out, _ = run_cli(capsys, "models", "show", "colors@production", "--json")
    info = json.loads(out)
    assert info["version"] == 1 and info["stage"] == "production"
    assert info["model_type"] == "Pipeline" and info["classes"] == ["no", "yes"]
    assert info["input_columns"] == ["x", "color"]
    assert info["metrics"] == {"accuracy": 0.875}


def test_show_ranks_a_forest_features_by_gain(tmp_path, capsys):
    with engine("local", workers=1):
        pre = Preprocessor({"x": "numeric", "color": "categorical"}, label="y")
        forest = sl.RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0)
        model = sl.Pipeline(pre, forest).fit(_table(200), "y")
    path = str(tmp_path / "forest")
    sl.save(model, path)
    code, out, _ = run_cli(capsys, "models", "show", path, "--json")
    ranked = json.loads(out)["feature_importances"]
    gains = model.estimator.importances()["gain"]
    assert [row["feature"] for row in ranked] == sorted(gains, key=lambda f: -gains[f])
    assert ranked[0]["gain"] == pytest.approx(max(gains.values()))
    code, out, _ = run_cli(capsys, "models", "show", path)
    assert code == 0 and f"top {len(ranked)} features" in out and ranked[0]["feature"] in out


def test_show_of_a_linear_model_has_no_importances(registry, capsys):
    code, out, _ = run_cli(capsys, "models", "show", "colors:1", "--json")
    assert code == 0 and json.loads(out)["feature_importances"] is None


def test_unknown_reference_is_one_line_and_exit_1(registry, capsys):
    code, _, err = run_cli(capsys, "models", "show", "colors:9")
    assert code == 1 and "colors has no version 9" in err and "Traceback" not in err


def test_verify_passes_then_fails_on_a_tampered_file(registry, capsys):
    code, out, _ = run_cli(capsys, "models", "verify")
    assert code == 0 and "2 artifacts verified" in out
    arrays = registry.root / "colors" / "2" / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "models", "verify")
    assert code == 1 and "FAIL" in out and "arrays.npz" in out
    assert "1 of 2 artifacts failed verification" in err


def test_delete_needs_force_for_production(registry, capsys):
    registry.promote("colors", 2, "production")
    code, _, err = run_cli(capsys, "models", "delete", "colors", "2", "--yes")
    assert code == 1 and "in production" in err
    code, out, _ = run_cli(capsys, "models", "delete", "colors", "1", "--yes")
    assert code == 0 and [mv.version for mv in registry.list()] == [2]


def test_register_an_artifact_and_export_it(registry, pipeline, tmp_path, capsys):
    path = sl.save(pipeline.estimator, tmp_path / "loose")
    code, out, _ = run_cli(capsys, "models", "register", str(path), "bare", "--stage", "staging")
    assert code == 0 and "Registered bare:1 (staging)" in out
    code, _, _ = run_cli(
        capsys, "models", "export", "bare@staging", "--out", str(tmp_path / "b.onnx")
    )
    assert code == 0 and (tmp_path / "b.onnx").stat().st_size > 0
    code, _, err = run_cli(
        capsys, "models", "export", "colors:1", "--out", str(tmp_path / "c.onnx")
    )
    assert code == 1 and "--estimator-only" in err
    code, _, _ = run_cli(
        capsys, "models", "export", "colors:1", "--format", "artifact", "--out", str(tmp_path / "c")
    )
    assert code == 0 and sl.load(tmp_path / "c").classes_.tolist() == ["no", "yes"]


def test_keygen_prints_a_256_bit_hex_key(capsys):
    code, out, _ = run_cli(capsys, "models", "keygen")
    assert code == 0 and len(bytes.fromhex(out.strip())) == 32


def test_predict_command_writes_predictions_and_reconciles(registry, pipeline, tmp_path, capsys):
    rows = _table(n=30, seed=5)
    lines = ["id,x,color"] + [
        f"{r['id']},{r['x'] if r['id'] != 7 else 'oops'},{r['color']}" for r in rows.to_pylist()
    ]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "preds.parquet"
    code, stdout, _ = run_cli(
        capsys, "predict", "colors:2", str(tmp_path / "new.csv"), "--out", str(out),
        "--proba", "--id", "id", "--workers", "1",
    )  # fmt: skip
    assert code == 0, stdout
    assert "rows_in=30 = rows_predicted=29 + rows_rejected=1" in stdout
    got = pq.read_table(out)
    assert got.column_names == ["id", "prediction", "proba_no", "proba_yes"]
    kept = rows.filter(pa.array([i != 7 for i in range(30)]))
    assert got.column("prediction").to_pylist() == pipeline.predict(kept).tolist()
    rejects = pq.read_table(tmp_path / "preds.rejects.parquet").to_pylist()
    assert [r["line"] for r in rejects] == [9]  # id 7 is on line 9 (after the header)
