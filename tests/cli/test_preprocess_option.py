"""``--preprocess`` on train and search, the memory check's one-line error, and the train
summary's ROC-AUC (issue #22 findings 1 and 7)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from shardlearn.data import write_dataset
from shardlearn.data.demo import generate_loans
from shardlearn.preprocess.profiles import MEMORY_BUDGET_ENV
from shardlearn.testing import run_cli


@pytest.fixture(scope="module")
def loans(tmp_path_factory):
    """300 demo loan rows with a free-text 'description'; train/valid/test, 4 shards each."""
    out = tmp_path_factory.mktemp("preprocess-option") / "loans"
    write_dataset(generate_loans(300, seed=1), out, label="default", partitions=4,
                  split=(0.6, 0.2, 0.2), strategy="stratified")  # fmt: skip
    return str(out)


def _spec(tmp_path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


def test_train_summary_shows_roc_auc_equal_to_scikit_learn(capsys, loans, tmp_path):
    from shardlearn.data import Dataset
    from shardlearn.registry import load

    out = tmp_path / "model"
    args = ["train", loans, "--model", "logistic", "--workers", "2", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "ROC-AUC" in stdout
    code, stdout, err = run_cli(capsys, *args, "--overwrite", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    model = load(out)
    valid = Dataset.open(loans).read("valid")
    truth = np.asarray(valid.column("default")) == model.classes_[1]
    expected = roc_auc_score(truth, model.predict_proba(valid)[:, 1])
    assert summary["splits"]["valid"]["roc_auc"] == pytest.approx(expected, abs=1e-9)


def test_train_summary_roc_auc_is_macro_one_vs_rest_for_three_classes(capsys, tmp_path):
    from shardlearn.data import Dataset
    from shardlearn.registry import load

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = np.array(["a", "b", "c"])[
        np.argmax(x @ rng.normal(size=(2, 3)) + rng.normal(size=(300, 3)), 1)
    ]
    write_dataset(pa.table({"x0": x[:, 0], "x1": x[:, 1], "y": y}), tmp_path / "three",
                  label="y", partitions=2, split=(0.6, 0.4, 0.0))  # fmt: skip
    out = tmp_path / "m"
    code, stdout, err = run_cli(capsys, "train", str(tmp_path / "three"), "--workers", "1",
                                "--out", str(out), "--json")  # fmt: skip
    assert code == 0, err
    valid = Dataset.open(tmp_path / "three").read("valid")
    expected = roc_auc_score(np.asarray(valid.column("y")), load(out).predict_proba(valid),
                             multi_class="ovr", average="macro")  # fmt: skip
    assert json.loads(stdout)["splits"]["valid"]["roc_auc"] == pytest.approx(expected, abs=1e-9)
    code, stdout, err = run_cli(capsys, "train", str(tmp_path / "three"), "--workers", "1",
                                "--out", str(out), "--overwrite")  # fmt: skip
    assert "ROC-AUC (macro OvR)" in stdout


def test_train_refuses_a_too_wide_spec_for_a_dense_model_before_fitting(
    capsys, loans, tmp_path, monkeypatch
):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(20 * 2**20))
    spec = _spec(tmp_path, "auto: true\ncolumns: {description: {kind: text, n_features: 262144}}")
    out = tmp_path / "mlp"
    code, stdout, err = run_cli(capsys, "train", loans, "--model", "mlp", "--preprocess", spec,
                                "--workers", "1", "--out", str(out))  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "MLPClassifier densifies" in lines[0] and "'description'" in lines[0]
    assert "n_features: 256" in lines[0] and "--preprocess FILE" in lines[0]
    assert not out.exists()


def test_train_refuses_preprocess_with_warm_start(capsys, loans, tmp_path):
    first = tmp_path / "sgd"
    code, _, err = run_cli(capsys, "train", loans, "--model", "sgd", "--workers", "1",
                           "--out", str(first))  # fmt: skip
    assert code == 0, err
    spec = _spec(tmp_path, "auto: true")
    code, _, err = run_cli(capsys, "train", loans, "--warm-start", str(first), "--preprocess",
                           spec, "--out", str(tmp_path / "again"))  # fmt: skip
    assert code == 1 and "--preprocess cannot be combined with --warm-start" in err


def _search(capsys, loans, out, spec):
    return run_cli(capsys, "search", loans, "--model", "gaussian_nb", "--strategy", "grid",
                   "--workers", "1", "--out", str(out), "--preprocess", spec,
                   "--json")  # fmt: skip


def test_search_preprocess_spec_is_used_by_the_trials_and_the_refit(capsys, loans, tmp_path):
    from shardlearn.registry import load

    spec = _spec(tmp_path, "auto: true\ncolumns: {description: {kind: text, n_features: 8}}")
    code, stdout, err = _search(capsys, loans, tmp_path / "run", spec)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["leaderboard"][0]["status"] == "ok"
    names = load(result["model"]).preprocessor.feature_names_out_
    assert [n for n in names if n.startswith("description#")] == [
        f"description#tok{i}" for i in range(8)
    ]
    # A spec the trials cannot use fails every trial: they read it.
    broken = _spec(tmp_path, "columns: {no_such_column: numeric}")
    code, stdout, err = _search(capsys, loans, tmp_path / "broken", broken)
    board = json.loads(stdout)["leaderboard"]
    assert board and all(row["status"] == "error" for row in board)
    assert all("no_such_column" in row["error"] for row in board)
