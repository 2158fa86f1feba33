"""A result-cache entry names the class of a cached model; that name selects nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.engine._cache import ResultCache

TOKEN = "ab" * 32


@pytest.fixture
def cached_model(tmp_path):
    """A fitted LogisticRegression stored in a cache at ``tmp_path``; its meta.json's path."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    with engine("local", workers=1):
        model = sl.LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    assert ResultCache(tmp_path).store(TOKEN, "stage", model)
    (meta_path,) = tmp_path.glob("*/*/meta.json")
    return model, meta_path


def _load_in_a_fresh_process(folder) -> list[str]:
    script = (
        "import sys; from shardlearn.engine._cache import ResultCache; "
        f"hit, value = ResultCache({str(folder)!r}).load({TOKEN!r}); "
        "print(hit, type(value).__name__, 'shardlearn.cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_an_entry_names_the_public_package_not_the_defining_module(tmp_path, cached_model):
    model, meta_path = cached_model
    assert json.loads(meta_path.read_text())["class"] == "shardlearn.models:LogisticRegression"
    assert _load_in_a_fresh_process(tmp_path) == ["True", "LogisticRegression", "False"]
    hit, loaded = ResultCache(tmp_path).load(TOKEN)
    assert hit and np.array_equal(loaded.coef_, model.coef_)


def test_a_preprocessor_is_cached_under_its_package(tmp_path):
    import pyarrow as pa

    table = pa.table({"a": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    with engine("local", workers=1):
        pre = sl.Preprocessor({"a": "numeric"}, label="y").fit(table)
    assert ResultCache(tmp_path).store(TOKEN, "stage", pre)
    (meta_path,) = tmp_path.glob("*/*/meta.json")
    assert json.loads(meta_path.read_text())["class"] == "shardlearn.preprocess:Preprocessor"
    hit, loaded = ResultCache(tmp_path).load(TOKEN)
    assert hit and type(loaded) is type(pre)


@pytest.mark.parametrize(
    "class_id",
    [
        "shardlearn.cli:app",  # the top layer: nothing below may import it
        "shardlearn.models.linear:LogisticRegression",  # a module of the flat layout (gone)
        "shardlearn.models.linear_model._linear:LogisticRegression",  # a defining module
        "shardlearn.models:renamed",  # in the package, but not an exported class
        "shardlearn.models:GradientBoostingClassifier",  # a deprecated alias, not exported
    ],
)
def test_a_cache_entry_cannot_import_a_module_of_its_choosing(tmp_path, cached_model, class_id):
    _, meta_path = cached_model
    meta = json.loads(meta_path.read_text())
    meta["class"] = class_id
    meta_path.write_text(json.dumps(meta))
    assert _load_in_a_fresh_process(tmp_path) == ["False", "NoneType", "False"]  # a miss
