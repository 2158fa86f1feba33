"""ingest() checks its arguments through IngestOptions, the model a pipeline's ingest stage is
made from: the same rules, and the same words for what is expected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from shardlearn.data import ingest
from shardlearn.data.options import FileReadOptions, Format, IngestOptions
from shardlearn.data.readers import FORMATS
from shardlearn.data.schema import KINDS, Kind
from shardlearn.exceptions import SchemaError, SpecError
from shardlearn.pipeline import parse_spec

READ_KEYS = set(FileReadOptions.model_fields)
BAD = [
    ("partitions", 0, "an integer >= 1"),
    ("partitions", True, "an integer >= 1"),
    ("partitions", "4", "an integer >= 1"),
    ("max_reject_rate", 1.5, "a number between 0 and 1"),
    ("parsers", 0, "an integer >= 1"),
    ("block_size", -1, "an integer >= 1"),
    ("format", "xlsx", "one of 'csv', 'tsv', 'jsonl', 'parquet'"),
    ("delimiter", "::", "a single character"),
    ("columns", "a,b", "a list of strings"),
    ("na_values", [1, 2], "a list of strings"),
    ("seed", 1.5, "an integer"),
    ("label_strip", 3, "a string"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD)
def test_ingest_and_a_spec_refuse_a_value_with_the_same_words(
    tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("x,y\n1,a\n2,b\n")
    python = f"The '{key}' parameter of ingest must be {expected}. Got {value!r}."
    with pytest.raises(SchemaError, match=re.escape(python)):
        ingest(source, "y", tmp_path / "out", **{key: value})
    assert not (tmp_path / "out").exists()
    yaml = f"stage 'data'.{key}: expected {expected}. Got {value!r}."
    stage = {"type": "ingest", "source": "in.csv", "label": "y", key: value}
    with pytest.raises(SpecError, match=re.escape(yaml)):
        parse_spec({"stages": {"data": stage}})


def test_booleans_are_named_as_each_language_writes_them(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"'trim' parameter of ingest must be True or False"):
        ingest(tmp_path / "in.csv", "y", tmp_path / "out", trim="no")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"'data'\.trim: expected true or false\. Got 'no'\."):
        parse_spec({"stages": {"data": {"type": "ingest", "source": "a", "label": "y",
                                        "trim": "no"}}})  # fmt: skip


def test_a_strategy_or_split_error_is_the_partitioners_own(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"^Unknown partitioning strategy 'roundrobin'"):
        ingest(tmp_path / "in.csv", "y", tmp_path / "out", strategy="roundrobin")
    with pytest.raises(SchemaError, match=r"^The split fractions \[0\.5\] must sum to 1"):
        ingest(tmp_path / "in.csv", "y", tmp_path / "out", split=[0.5])


def test_python_only_forms_are_accepted(tmp_path: Path) -> None:
    """Paths, tuples and a Schema object: what a Python caller passes, not a YAML file."""
    source = tmp_path / "in.csv"
    source.write_text("x,y\n1,a\n2,b\n3,a\n4,b\n")
    first = ingest([source], "y", tmp_path / "a", partitions=1, split=(1.0,), progress=False)
    again = ingest(str(source), "y", str(tmp_path / "b"), partitions=1, split="1,0,0",
                   schema=first.schema, columns=None, progress=False)  # fmt: skip
    assert again.num_rows() == first.num_rows() == 4
    numpy = ingest(source, "y", tmp_path / "c", partitions=np.int64(1), seed=np.int32(0),
                   max_reject_rate=np.float32(0.5), split=(1.0,), progress=False)  # fmt: skip
    assert numpy.num_rows() == 4


def test_the_choices_are_the_readers_and_the_schemas() -> None:
    assert get_args(Format) == FORMATS
    assert get_args(Kind) == KINDS
    assert list(FileReadOptions.model_fields) == [
        k for k in IngestOptions.model_fields if k in FileReadOptions.model_fields
    ]


@pytest.mark.parametrize(("key", "value", "expected"), [b for b in BAD if b[0] in READ_KEYS])
def test_predict_batch_refuses_a_reader_option_as_ingest_does(
    tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    from shardlearn.registry.predict import predict_batch

    message = f"The '{key}' parameter of predict_batch must be {expected}. Got {value!r}."
    with pytest.raises(SchemaError, match=re.escape(message)):  # before any model or file
        predict_batch(None, tmp_path / "in.csv", tmp_path / "p.parquet", **{key: value})
