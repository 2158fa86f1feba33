"""A pipeline's ingest stage takes every option ``ingest()`` takes: the spec's key list, the
published JSON schema and ``ingest()``'s signature all follow ``data.options.IngestOptions``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from shardlearn._options import option_fields
from shardlearn.data import Dataset, ingest
from shardlearn.data.options import CALL_ONLY, PIPELINE_SETS, IngestOptions
from shardlearn.exceptions import SpecError
from shardlearn.pipeline import parse_spec, spec_json_schema
from shardlearn.pipeline.spec import COMMON_KEYS, STAGE_TYPES
from shardlearn.pipeline.stages import run_ingest


def _ingest_schema_properties() -> set[str]:
    stages = spec_json_schema()["properties"]["stages"]
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("title") == "ingest stage":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk([stages, spec_json_schema()["$defs"]])
    assert len(found) == 1
    return set(found[0]["properties"])


def test_spec_schema_and_ingest_name_the_same_options() -> None:
    """ingest()'s parameters are IngestOptions' fields (names, order, defaults); the spec's
    ingest keys and the published schema are those fields minus what a pipeline sets itself."""
    parameters = {
        name: p.default
        for name, p in inspect.signature(ingest).parameters.items()
        if name not in CALL_ONLY
    }
    fields = option_fields(IngestOptions)
    assert list(parameters) == list(fields)
    for name, info in fields.items():
        expected = inspect.Parameter.empty if info.is_required() else info.default
        assert parameters[name] == expected, name
    in_spec = set(fields) - PIPELINE_SETS
    assert set(STAGE_TYPES["ingest"]["keys"]) == in_spec
    assert _ingest_schema_properties() - set(COMMON_KEYS) == in_spec


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rows = [f"{i},{i % 7}.5,  c{i % 3}  ,{'yes' if i % 2 else 'no'}" for i in range(60)]
    rows[10] = "10,1.5,c1,"  # no label
    rows[20] = f"20,1.5,{'x' * 3000},no"  # longer than a small block
    path = tmp_path / "in.csv"
    path.write_text("id,amount,city,label\n" + "\n".join(rows) + "\n")
    return path


def _run(tmp_path: Path, csv: Path, name: str, **options: Any) -> Dataset:
    stage = {"type": "ingest", "source": str(csv), "label": "label", "partitions": 1, **options}
    spec = parse_spec({"workdir": str(tmp_path / "run"), "stages": {name: stage}})
    result = run_ingest(name, spec.stages[name].options, str(spec.workdir))
    return Dataset.open(result["dataset"])


def _cities(ds: Dataset) -> set[str]:
    values = [pc.unique(shard.read(columns=["city"]).column("city")) for shard in ds.shards(None)]
    return {v for chunk in values for v in chunk.to_pylist()}


def test_each_ingest_option_from_a_spec_changes_the_result(tmp_path: Path, csv: Path) -> None:
    base = _run(tmp_path, csv, "base", max_reject_rate=0.5)
    assert base.manifest["rows_rejected"] == 1  # the unlabeled row
    assert "c1" in _cities(base)
    untrimmed = _run(tmp_path, csv, "untrimmed", max_reject_rate=0.5, trim=False)
    assert "  c1  " in _cities(untrimmed) and "c1" not in _cities(untrimmed)
    unlabeled = _run(tmp_path, csv, "unlabeled", max_reject_rate=0.5, allow_unlabeled=True)
    assert unlabeled.manifest["rows_rejected"] == 0
    assert unlabeled.manifest["rows_unlabeled"] == 1
    blocks = _run(tmp_path, csv, "blocks", max_reject_rate=0.5, block_size=1024)
    assert blocks.manifest["rows_rejected"] == 2  # and the 3,000-byte line
    one = _run(tmp_path, csv, "one", max_reject_rate=0.5, parsers=1)
    assert one.manifest["parsers"] == 1
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "columns:\n  - {name: id, kind: categorical}\n  - {name: amount, kind: numeric}\n"
        "  - {name: city, kind: categorical}\n  - {name: label, kind: categorical}\n"
    )
    assert base.schema["id"].kind == "numeric"
    typed = _run(tmp_path, csv, "typed", max_reject_rate=0.5, schema=str(schema))
    assert typed.schema["id"].kind == "categorical"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("trim", "no", "expected true or false"),
        ("allow_unlabeled", 1, "expected true or false"),
        ("block_size", 0, "expected an integer >= 1"),
        ("block_size", True, "expected an integer >= 1"),
        ("parsers", -2, "expected an integer >= 1"),
        ("parsers", "2", "expected an integer >= 1"),
    ],
)
def test_invalid_ingest_options_are_spec_errors(key: str, value: Any, expected: str) -> None:
    stage = {"type": "ingest", "source": "in.csv", "label": "y", key: value}
    with pytest.raises(SpecError, match=f"stage .data.\\.{key}: {expected}"):
        parse_spec({"stages": {"data": stage}})
