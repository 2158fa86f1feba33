"""``shardlearn train``: end to end on a small dataset, warm start, and every user error."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shardlearn.cli.train import parse_params
from shardlearn.data import write_dataset
from shardlearn.testing import run_cli


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    income = rng.normal(50.0, 10.0, n)
    city = rng.choice(["north", "south", "east"], n)
    y = np.where(income + 8.0 * (city == "north") + rng.normal(0, 5, n) > 55, "yes", "no")
    table = pa.table({"income": income, "city": city, "bought": y})
    write_dataset(table, tmp_path / "shop", label="bought", partitions=2, split=(0.8, 0.2, 0.0))
    return str(tmp_path / "shop"), table


def test_train_logistic_saves_a_model_that_loads_and_predicts(capsys, dataset, tmp_path):
    from shardlearn.registry import load

    path, table = dataset
    out = tmp_path / "model"
    code, stdout, err = run_cli(
        capsys,
        "train",
        path,
        "--model",
        "logistic",
        "--param",
        "C=0.5",
        "--workers",
        "1",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "accuracy" in stdout and "valid" in stdout and "train" in stdout
    assert (out / "model.json").is_file() and (out / "arrays.npz").is_file()
    model = load(out)
    assert model.estimator.C == 0.5
    accuracy = float(np.mean(model.predict(table) == np.asarray(table.column("bought"))))
    assert accuracy > 0.75


def test_json_summary_and_warm_start_continue_a_saved_sgd_model(capsys, dataset, tmp_path):
    import json

    from shardlearn.registry import load

    path, _ = dataset
    first, second = tmp_path / "sgd1", tmp_path / "sgd2"
    args = ["--param", "max_iter=2", "--param", "tol=null", "--workers", "1", "--json"]
    code, stdout, err = run_cli(capsys, "train", path, "--model", "sgd", *args, "--out", str(first))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["model"] == "SGDClassifier" and summary["iterations"] == 2
    code, stdout, err = run_cli(
        capsys, "train", path, "--warm-start", str(first), *args, "--out", str(second)
    )
    assert code == 0, err
    before, after = load(first).estimator, load(second).estimator
    assert after.t_ == pytest.approx(2 * before.t_)
    assert after.epochs_ == 4


def test_unknown_model_name_lists_the_valid_ones(capsys, dataset, tmp_path):
    code, _, err = run_cli(
        capsys, "train", dataset[0], "--model", "logreg", "--out", str(tmp_path / "m")
    )
    assert code == 1
    assert "Unknown model 'logreg'" in err and "logistic" in err and "sgd" in err


def test_unknown_parameter_name_lists_the_valid_ones(capsys, dataset, tmp_path):
    code, _, err = run_cli(
        capsys, "train", dataset[0], "--param", "Cc=1", "--out", str(tmp_path / "m")
    )
    assert code == 1
    assert "Unknown parameter" in err and "Did you mean 'C'" in err and "max_iter" in err


def test_non_positive_C_is_a_clear_error(capsys, dataset, tmp_path):
    code, _, err = run_cli(
        capsys, "train", dataset[0], "--param", "C=0", "--out", str(tmp_path / "m")
    )
    assert code == 1
    assert "'C' parameter of LogisticRegression must be a number > 0" in err


def test_missing_dataset_path_is_a_one_line_error(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "train", str(missing), "--out", str(tmp_path / "m"))
    assert code == 1
    assert "nowhere" in err and "Traceback" not in err


def test_existing_out_needs_overwrite(capsys, dataset, tmp_path):
    (tmp_path / "m").mkdir()
    code, _, err = run_cli(capsys, "train", dataset[0], "--out", str(tmp_path / "m"))
    assert code == 1 and "--overwrite" in err


def test_preprocess_spec_file_replaces_auto(capsys, dataset, tmp_path):
    spec = tmp_path / "pre.yaml"
    spec.write_text("auto: true\ndefaults:\n  numeric: {scale: minmax}\n")
    out = tmp_path / "nb"
    code, stdout, err = run_cli(
        capsys,
        "train",
        dataset[0],
        "--model",
        "multinomial_nb",
        "--preprocess",
        str(spec),
        "--workers",
        "1",
        "--out",
        str(out),
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        "train",
        dataset[0],
        "--model",
        "multinomial_nb",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "nb2"),
    )
    assert code == 1 and "non-negative" in err and "minmax" in err


def test_params_are_parsed_as_yaml_scalars():
    assert parse_params(
        ["C=0.5", "max_iter=10", "fit_intercept=false", "class_weight=balanced", "tol=null"]
    ) == {"C": 0.5, "max_iter": 10, "fit_intercept": False, "class_weight": "balanced", "tol": None}


def test_register_adds_the_trained_model_to_the_registry(capsys, dataset, tmp_path):
    from shardlearn.registry import Registry, load

    path, table = dataset
    registry = tmp_path / "models"
    for _ in range(2):
        code, stdout, err = run_cli(
            capsys, "train", path, "--model", "gaussian_nb", "--workers", "1",
            "--out", str(tmp_path / "nb"), "--overwrite", "--register", "shop",
            "--registry", str(registry),
        )  # fmt: skip
        assert code == 0, err
    assert "Registered shop:2" in stdout
    versions = Registry(registry).list("shop")
    assert [v.version for v in versions] == [1, 2]
    np.testing.assert_array_equal(
        load(f"{registry}/shop:2").predict(table), load(tmp_path / "nb").predict(table)
    )


def test_overwrite_refuses_an_out_folder_that_is_not_a_model(capsys, dataset, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    code, _, err = run_cli(
        capsys, "train", dataset[0], "--out", str(project), "--overwrite", "--workers", "1"
    )
    assert code == 1 and "Traceback" not in err
    assert "project exists and is not a shardlearn model" in err
    assert [p.name for p in project.iterdir()] == ["notes.txt"]
    assert (project / "notes.txt").read_text() == "keep me"
