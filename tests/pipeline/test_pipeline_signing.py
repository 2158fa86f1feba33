"""Stages that load a model honour ``allow_unsigned``, the spec's ``--allow-unsigned``."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import ShardlearnError, SpecError
from shardlearn.pipeline import parse_spec, run_pipeline, spec_json_schema
from shardlearn.registry import crypto

LOADING_STAGES = ("evaluate", "compare", "predict", "export")


@pytest.fixture
def unsigned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An unsigned model and a dataset, with a signing key configured in the environment."""
    for variable in (crypto.SIGNING_KEY_FILE_ENV, crypto.ENCRYPTION_KEY_ENV,
                     crypto.ENCRYPTION_KEY_FILE_ENV, crypto.PRIVATE_KEY_FILE_ENV,
                     crypto.PUBLIC_KEY_ENV, crypto.PUBLIC_KEY_FILE_ENV):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    table = pa.table({"x": x, "y": np.where(x + rng.normal(0, 0.5, 200) > 0, "a", "b")})
    dataset = write_dataset(table, tmp_path / "data", "y", partitions=2, split=(0.5, 0, 0.5))
    with engine("local", workers=1):
        model = sl.LogisticRegression().fit(dataset)
    path = sl.save(model, tmp_path / "model", sign=False, encrypt=False)
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, "k" * 32)
    return Path(path), Path(dataset.uri)


def _spec(model: Path, dataset: Path, workdir: Path, **options: object) -> dict:
    return {
        "name": "signing",
        "workdir": str(workdir),
        "stages": {"check": {"type": "evaluate", "model": str(model), "dataset": str(dataset),
                             **options}},
    }  # fmt: skip


def test_an_evaluate_stage_refuses_an_unsigned_model_unless_allow_unsigned(
    unsigned: tuple[Path, Path], tmp_path: Path
) -> None:
    model, dataset = unsigned
    with engine("local", workers=1), pytest.raises(ShardlearnError, match="unsigned"):
        run_pipeline(parse_spec(_spec(model, dataset, tmp_path / "refused")), progress=False)
    spec = parse_spec(_spec(model, dataset, tmp_path / "allowed", allow_unsigned=True))
    with engine("local", workers=1):
        result = run_pipeline(spec, progress=False)
    assert 0.5 < result.results["check"]["metrics"]["accuracy"] <= 1.0


@pytest.mark.parametrize("kind", LOADING_STAGES)
def test_allow_unsigned_is_a_key_of_every_stage_that_loads_a_model(kind: str) -> None:
    stage = {"type": kind, "model": "m.d", "allow_unsigned": True}
    stage |= {"models": ["m.d"]} if kind == "compare" else {}
    stage |= {"dataset": "d.d"} if kind in ("evaluate", "compare") else {}
    stage |= {"input": "in.csv"} if kind == "predict" else {}
    stage.pop("model") if kind == "compare" else None
    document = {"name": "t", "stages": {"s": stage}}
    assert parse_spec(document).stages["s"].options["allow_unsigned"] is True
    jsonschema.validate(document, spec_json_schema())
    with pytest.raises(SpecError, match=r"'s'\.allow_unsigned: expected true or false"):
        parse_spec({"name": "t", "stages": {"s": {**stage, "allow_unsigned": "yes"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "t", "stages": {"s": {**stage, "allow_unsigned": 1}}},
                            spec_json_schema())  # fmt: skip
