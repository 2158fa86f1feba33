"""A result-cache entry names the class of a cached model; that name selects nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.engine._cache import ResultCache

TOKEN = "ab" * 32


def test_a_cache_entry_cannot_import_a_module_of_its_choosing(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    with engine("local", workers=1):
        model = sl.LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    cache = ResultCache(tmp_path)
    assert cache.store(TOKEN, "stage", model)
    (meta_path,) = tmp_path.glob("*/*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["class"] == "shardlearn.models.linear_model._linear:LogisticRegression"
    meta["class"] = "shardlearn.cli:app"  # the top layer: nothing below may import it
    meta_path.write_text(json.dumps(meta))
    script = (
        "import sys; from shardlearn.engine._cache import ResultCache; "
        f"hit, _ = ResultCache({str(tmp_path)!r}).load({TOKEN!r}); "
        "print(hit, 'shardlearn.cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]  # a cache miss, nothing imported
