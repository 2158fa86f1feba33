"""A pipeline run is one warm scope (:mod:`shardlearn._warm`) for all its stages: two train
stages with the same preprocessing on the same dataset fit it once, every worker process reads
each shard once, and the models equal those of the same fits outside any scope; a search stage
works in the run's scope instead of ending it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shardlearn import _warm
from shardlearn.data import Dataset, ingest
from shardlearn.data.demo import write_loans_csv
from shardlearn.engine import create_engine
from shardlearn.models import Pipeline, model_class
from shardlearn.pipeline import parse_spec, run_pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import load

# Tiny models on a few thousand rows may predict one class only (undefined precision).
pytestmark = pytest.mark.filterwarnings(
    "ignore::shardlearn.metrics.functions.UndefinedMetricWarning"
)
PREPROCESSING = {"defaults": {"text": {"n_features": 32}}}
TRAIN = {
    "forest": {"model": "random_forest",
               "params": {"n_estimators": 4, "max_depth": 4, "random_state": 0}},
    "xgboost": {"model": "xgboost", "params": {"n_estimators": 5, "max_depth": 3}},
}  # fmt: skip


@pytest.fixture(scope="module")
def loans(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("warm-run")
    csv = write_loans_csv(folder / "loans.csv", 1500, seed=0)
    return ingest(csv, "default", folder / "data", partitions=2, strategy="stratified")


def _train_stage(name: str, dataset: Dataset, **extra: object) -> dict:
    return {"type": "train", "dataset": str(dataset.uri), **TRAIN[name],
            "preprocessing": PREPROCESSING, **extra}  # fmt: skip


def _reference_fit(name: str, dataset: Dataset, eng: object) -> Pipeline:
    """The stage's fit outside any warm scope (as run_train builds it)."""
    pre = Preprocessor.from_spec({"auto": True, **PREPROCESSING}, schema=dataset.schema)
    estimator = model_class(TRAIN[name]["model"])(**TRAIN[name]["params"])
    return Pipeline(pre, estimator).fit(dataset, engine=eng)


def test_two_train_stages_fit_preprocessing_once_and_read_each_shard_once_per_process(
    loans: Dataset, tmp_path: Path
) -> None:
    spec = parse_spec({
        "workdir": str(tmp_path / "run"),
        "stages": {name: _train_stage(name, loans) for name in TRAIN},
    })  # fmt: skip
    eng = create_engine("local", workers=2)
    try:
        result = run_pipeline(spec, engine=eng, progress=False)
        assert _warm.current() is None
        references = {name: _reference_fit(name, loans, eng) for name in TRAIN}
    finally:
        eng.close()
    assert set(result.warm) == set(TRAIN)
    built = sum(c.builds["preprocessor_builds"] for c in result.warm.values())
    reused = sum(c.hits["preprocessor_builds"] for c in result.warm.values())
    assert (built, reused) == (1, 1)  # one stage fitted it, the other took it
    assert result.reuse["preprocessors_built"] == result.reuse["preprocessors_reused"] == 1
    shown = [result.results[name]["reused"].get("preprocessors_reused", 0) for name in TRAIN]
    assert sorted(shown) == [0, 1]  # the train stages' results say it
    reads = Counter(
        pair for c in result.warm.values() for pair in zip(c.readers, c.shards, strict=True)
    )
    assert reads and max(reads.values()) == 1  # each process read each shard once
    assert _warm._STORE is None  # the run's values were dropped when it ended
    test_rows = loans.read("test")
    for name, reference in references.items():
        model = load(result.results[name]["model"])
        assert model.preprocessor.fingerprint == reference.preprocessor.fingerprint
        np.testing.assert_array_equal(
            model.predict_proba(test_rows), reference.predict_proba(test_rows)
        )


def test_a_search_stage_works_in_the_run_scope_and_keeps_its_values(
    loans: Dataset, tmp_path: Path
) -> None:
    """first → tune (a search) → second: the search must not end the run's scope, so the
    second train stage still reuses the first one's preprocessor and shard tables."""
    spec = parse_spec({
        "workdir": str(tmp_path / "run"),
        "stages": {
            "first": _train_stage("xgboost", loans),
            "tune": {"type": "search", "dataset": str(loans.uri), "models": ["xgboost"],
                     "space": {"n_estimators": 3, "max_depth": [2, 3]}, "trials": 2, "cv": 2,
                     "depends_on": ["first"]},
            "second": _train_stage("xgboost", loans, depends_on=["tune"]),
        },
    })  # fmt: skip
    eng = create_engine("local", workers=1)
    try:
        result = run_pipeline(spec, engine=eng, progress=False)
    finally:
        eng.close()
    assert len(result.results["tune"]["leaderboard"]) == 2
    second = result.results["second"]["reused"]
    assert second["preprocessors_reused"] == 1 and second["preprocessors_built"] == 0
    assert second.get("shards_built", 0) == second.get("blocks_built", 0) == 0
    assert second["blocks_reused"] > 0
    assert result.results["tune"]["reuse"]["shard_reads"] == 0  # the trials too
    first = load(result.results["first"]["model"])
    again = load(result.results["second"]["model"])
    rows = loans.read("test")
    np.testing.assert_array_equal(first.predict_proba(rows), again.predict_proba(rows))


def test_every_stage_thread_runs_in_the_run_scope_with_its_workers_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages run on driver threads (a context variable does not follow them there): each
    sees the run's scope, and its worker groups get a share of the memory sized for all the
    groups the run's stages may open at once (2 workers x 2 stages + the driver)."""
    from shardlearn.pipeline import stages

    monkeypatch.delenv(_warm.BUDGET_ENV, raising=False)
    seen: dict[str, tuple] = {}

    def fake_export(name, options, workdir, model):  # noqa: ANN001, ARG001 - stage signature
        handle = _warm.current()
        seen[name] = (handle.name, handle.budget)
        return {"output": name}

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "export", fake_export)
    spec = parse_spec({
        "workdir": str(tmp_path),
        "stages": {name: {"type": "export", "model": str(tmp_path / "m")} for name in "ab"},
    })  # fmt: skip
    eng = create_engine("local", workers=2)
    try:
        run_pipeline(spec, engine=eng, progress=False)
    finally:
        eng.close()
    (name_a, budget_a), (name_b, budget_b) = seen["a"], seen["b"]
    assert name_a == name_b and name_a.startswith("pipeline ")
    assert budget_a == budget_b == _warm.default_budget(2 * 2 + 1)
    assert _warm.current() is None and _warm._STORE is None
