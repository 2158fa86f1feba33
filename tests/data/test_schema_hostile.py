"""Dtype names from files are looked up in a fixed table, never resolved on the pyarrow module.

A dtype name reaches :func:`shardlearn.data.schema.arrow_type` from a dataset's
``manifest.json``, a ``--schema`` YAML and a saved model's ``model.json``; each is untrusted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shardlearn.data import Dataset, write_dataset
from shardlearn.data.schema import arrow_type, load_schema_file, type_name
from shardlearn.exceptions import DataError, SchemaError

# pyarrow functions a crafted file named; show_versions prints, create_library_symlinks writes
# into the pyarrow package folder, the others take arguments or return non-types.
PYARROW_FUNCTIONS = ["show_versions", "create_library_symlinks", "set_cpu_count", "schema", "Table"]


@pytest.mark.parametrize("name", PYARROW_FUNCTIONS)
def test_a_pyarrow_function_name_is_an_unknown_dtype(name, capfd):
    with pytest.raises(SchemaError, match=f"Unknown dtype '{name}'"):
        arrow_type(name)
    assert capfd.readouterr().out == ""


def test_a_schema_file_cannot_call_a_pyarrow_function(tmp_path, capfd):
    path = tmp_path / "schema.yaml"
    path.write_text("columns:\n  - {name: x, kind: numeric, dtype: show_versions}\n")
    with pytest.raises(SchemaError, match="Unknown dtype 'show_versions'"):
        load_schema_file(path)
    assert capfd.readouterr().out == ""


def test_a_dataset_manifest_cannot_call_a_pyarrow_function(tmp_path: Path, capfd):
    table = pa.table({"x": np.arange(20.0), "y": ["a", "b"] * 10})
    write_dataset(table, tmp_path / "ds", label="y", partitions=1)
    manifest_path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema"]["columns"][0]["dtype"] = "show_versions"
    manifest_path.write_text(json.dumps(manifest))
    capfd.readouterr()
    with pytest.raises(SchemaError, match="Unknown dtype 'show_versions'"):
        _ = Dataset.open(tmp_path / "ds").schema
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize(
    "dtype",
    [pa.int8(), pa.int64(), pa.uint32(), pa.float16(), pa.float32(), pa.float64(), pa.string()]
    + [pa.large_string(), pa.bool_(), pa.date32(), pa.date64(), pa.binary(), pa.null()]
    + [pa.timestamp("s"), pa.timestamp("ns"), pa.timestamp("us", tz="UTC")],
)
def test_every_type_the_ingest_names_is_in_the_table(dtype):
    expected = pa.string() if dtype == pa.large_string() else dtype
    assert arrow_type(type_name(dtype)) == expected


@pytest.mark.parametrize("name", ["timestamp[us, tz=../../etc]", "timestamp[fortnight]", "list"])
def test_other_type_names_are_refused(name):
    with pytest.raises(SchemaError, match="Unknown dtype"):
        arrow_type(name)


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, "[1]", '{"format": ' + "9" * 5000 + "}"]
)
def test_a_manifest_that_is_deep_or_not_an_object_is_a_data_error(tmp_path: Path, text: str):
    write_dataset(pa.table({"x": [1.0, 2.0], "y": ["a", "b"]}), tmp_path / "ds", label="y")
    (tmp_path / "ds" / "manifest.json").write_text(text)
    with pytest.raises(DataError, match="manifest"):
        Dataset.open(tmp_path / "ds")
