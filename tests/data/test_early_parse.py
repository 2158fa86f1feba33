"""The first ranges of a CSV start parsing before its schema sample is read, with numeric types
guessed from the file's head; the dataset is the same whether the guess stands or not
(issue 24: no serial start before the parsers)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data._ingest_run import IngestRun

from ._speculation import fingerprint, ingest_in_ranges, recording_early_parses

ROWS = 24_000  # more than the schema sample (20,000 rows); the head guess sees about 6,000
PAD = "v" * 30  # rows of about 40 bytes: the head's 256 KiB hold about 6,000 of them


def _csv(path: Path, floats_from: int | None) -> Path:
    """x is an integer column up to row ``floats_from`` and a float column from there on
    (within the schema sample, past the head's first 256 KiB); None: integers throughout."""
    lines = ["x,s,label"]
    for i in range(ROWS):
        x = f"{i}.5" if floats_from is not None and i >= floats_from else str(i)
        lines.append(f"{x},{PAD}{i % 13},{'ab'[i * 7 % 3 % 2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("floats_from", "stands"), [(None, True), (10_000, False)])
def test_early_parses_give_the_dataset_of_one_parser(
    tmp_path: Path, floats_from: int | None, stands: bool
) -> None:
    """A right guess (x is int64 in the head and in the schema) is used; a wrong one (int64 in
    the head, float64 in the schema) is dropped and its ranges parsed again: either way 2 and
    4 parsers write the files 1 parser writes."""
    path = _csv(tmp_path / "in.csv", floats_from)
    range_bytes = path.stat().st_size // 6 + 1
    used: list[int] = []
    with mock.patch.object(IngestRun, "_early_parses", recording_early_parses(used)):
        prints = {
            n: fingerprint(ingest_in_ranges(path, tmp_path / f"o{n}", range_bytes, n))
            for n in (1, 2, 4)
        }
    assert prints[2] == prints[1] and prints[4] == prints[1]
    assert prints[1][1]["rows_read"] == ROWS
    # One early start per ingest with several parsers: 1 and 3 ranges parsed early (a core is
    # left to the sample), or none.
    assert used == ([1, 3] if stands else [0, 0])


def test_the_first_ranges_parse_while_the_schema_is_inferred(tmp_path: Path) -> None:
    """The inference waits until a range parse has begun: before, parses started only once the
    schema was known, so this waited in vain (and the ingest still ended, without a parse)."""
    path = _csv(tmp_path / "in.csv", None)
    parsing = threading.Event()
    seen: list[bool] = []
    parse, infer = ranges_module._parse_range, ingest_run.infer_schema

    def parse_range(*args: Any, **kwargs: Any) -> Any:
        parsing.set()
        return parse(*args, **kwargs)

    def infer_schema(*args: Any, **kwargs: Any) -> Any:
        seen.append(parsing.wait(timeout=20))
        return infer(*args, **kwargs)

    with (
        mock.patch.object(ranges_module, "_parse_range", parse_range),
        mock.patch.object(ingest_run, "infer_schema", infer_schema),
    ):
        ds = ingest_in_ranges(path, tmp_path / "out", path.stat().st_size // 4 + 1, 2)
    assert seen == [True]
    assert ds.manifest["rows_read"] == ROWS
