"""The options of :func:`~shardlearn.data.ingest` and of reading raw files, declared once.

:class:`FileReadOptions` is how raw files are read (format, delimiter, header, ...), shared by
``ingest`` and by batch predictions on files; :class:`IngestOptions` adds the rest of
:func:`~shardlearn.data.ingest`'s parameters. One declaration serves four readers:

- :func:`~shardlearn.data.ingest` checks its arguments through :class:`IngestOptions`
  (:func:`shardlearn._options.check_call`);
- a pipeline's ``ingest`` stage is this model without :data:`PIPELINE_SETS`
  (:mod:`shardlearn.pipeline.options`), which also makes its part of the published JSON schema;
- ``shardlearn ingest`` and ``shardlearn predict`` build their options from the fields: names,
  defaults, help (the ``description``), ranges and choices (:mod:`shardlearn.cli._options`).

Tests keep ``ingest()``'s signature (names and defaults), the stage's keys and the commands'
options equal to the fields here. The Python-only forms (a path object, a
:class:`~shardlearn.data.schema.Schema`) are accepted by ``ingest()`` and left out of the JSON
schema, which describes what a YAML file can hold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, InstanceOf
from pydantic.json_schema import SkipJsonSchema

from shardlearn._options import ACCEPT_NUMPY, Integer, OptionsModel, subset_model
from shardlearn.data.partition import parse_split, parse_strategy
from shardlearn.data.schema import Kind, Schema

__all__ = [
    "CALL_ONLY",
    "CLI_SETS",
    "PIPELINE_SETS",
    "FileReadOptions",
    "Format",
    "IngestOptions",
]

Format = Literal["csv", "tsv", "jsonl", "parquet"]  # readers.FORMATS (a test keeps them equal)
# ingest() parameters that are not options: objects of a Python call (an Engine), checked by
# ingest itself; a pipeline and the CLI pass their own.
CALL_ONLY = frozenset({"engine"})
# ingest() parameters a pipeline sets itself: it replaces its own dataset on every run and
# draws its own progress.
PIPELINE_SETS = frozenset({"overwrite", "progress"})
# ingest() parameters the CLI derives from its own options: progress is off with --json.
CLI_SETS = frozenset({"progress"})

Count = Annotated[int, Field(ge=1), ACCEPT_NUMPY]  # an integer >= 1 (numpy's too)
Fraction = Annotated[float, Field(ge=0.0, le=1.0), ACCEPT_NUMPY]
PathText = str | SkipJsonSchema[InstanceOf[os.PathLike]]


def _strategy(value: str) -> str:
    parse_strategy(value)  # its SchemaError names the valid strategies
    return value


def _split(value: Any) -> Any:
    parse_split(value)  # its SchemaError says what a split looks like
    return value


class IngestOptions(OptionsModel):
    """Every parameter of :func:`~shardlearn.data.ingest`, in its signature's order."""

    source: PathText | Sequence[PathText] = Field(
        description="Input files or globs (csv, tsv, jsonl, parquet; .gz/.zst/.bz2), or a "
        "(Hive-partitioned) Parquet folder."
    )
    label: str | None = Field(
        description="Label column; none makes a dataset without a label (clustering, PCA)."
    )
    out: PathText = Field(description="Dataset directory to write (a path or a URI).")
    partitions: Count = Field(8, description="Shards per split.")
    strategy: Annotated[str, AfterValidator(_strategy)] = Field(
        "random", description="Partitioning: random, stratified, hash:COL or range:COL."
    )
    split: Annotated[str | Sequence[float], AfterValidator(_split)] = Field(
        (0.8, 0.1, 0.1), description="Train, valid, test fractions (a list or '0.8,0.1,0.1')."
    )
    seed: Integer = Field(0, description="Seed of the partitioner.")
    overwrite: bool = Field(False, description="Replace an existing dataset.")
    format: Format | None = Field(
        None, description="Input format (default: from the file extension)."
    )
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = Field(
        None, description="Field separator of CSV files (default , or tab for tsv)."
    )
    header: bool = Field(
        True, description="Text files start with a header line (without one, give columns)."
    )
    columns: Sequence[str] | None = Field(
        None, description="Column names for text files without a header line."
    )
    na_values: Sequence[str] | None = Field(
        None, description="Strings read as missing (replaces the defaults: '', NA, null, ...)."
    )
    schema_: PathText | SkipJsonSchema[InstanceOf[Schema]] | None = Field(
        None,
        alias="schema",
        description="YAML schema file: column kinds and types (default: inferred from the "
        "first file).",
    )
    kinds: Mapping[str, Kind] | None = Field(
        None, description="Column kinds that override the inferred ones, e.g. zip: categorical."
    )
    label_strip: str | None = Field(
        None, description="Characters stripped from the end of labels, e.g. '.'."
    )
    max_reject_rate: Fraction = Field(
        0.05, description="Fail when a larger fraction of rows is rejected."
    )
    trim: bool = Field(True, description="Strip whitespace around text values.")
    block_size: Count | None = Field(
        None, description="Bytes per read block (default 4 MiB); a longer line is a reject."
    )
    progress: bool = Field(True, description="Show a progress bar while stderr is a terminal.")
    allow_unlabeled: bool = Field(
        False,
        description="Keep rows with a missing label in an 'unlabeled' split instead of "
        "rejecting them.",
    )
    allow_non_finite: bool = Field(
        False,
        description="Keep infinite numbers (inf, -Infinity, 1e999) and NaNs instead of "
        "rejecting infinities and reading NaN as missing.",
    )
    parsers: Count | None = Field(
        None,
        description="Parsers at once (threads; Ray tasks on the ray engine): CSV/TSV and JSON "
        "Lines files (uncompressed or multi-frame .zst) cut into byte ranges, Parquet into row "
        "groups, small compressed files side by side (default: the engine's CPUs, else the "
        "cores); the dataset is the same whatever the number.",
    )


# How raw files are read: the options ingest and batch predictions on files share.
FileReadOptions = subset_model(
    IngestOptions,
    "FileReadOptions",
    ("format", "delimiter", "header", "columns", "na_values", "trim"),
    doc="How raw files are read: the options ingest and batch predictions on files share.",
)
