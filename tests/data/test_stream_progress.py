"""The ingest's progress bar moves while a file read as one stream (a ``.gz``) is read, not only
when it ends: its bytes as the reader consumes them and its rows as its batches arrive, on the
local engine (a thread reads it) and on Ray (a task on a node reads it and reports how far it
read with each batch). The bar's updates are recorded (rich's ``Progress.update``), not timed."""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from rich.progress import Progress

import shardlearn.data._ranges as ranges_module
from shardlearn.data import ingest
from shardlearn.engine import engine


def _incompressible_gz(path: Path, rows: int) -> int:
    """A .gz CSV of ``rows`` rows of random hex (so its compressed bytes are read in many
    pieces); its size."""
    rng = random.Random(7)
    lines = ["x,s,label", *(f"{i},{rng.randbytes(64).hex()},{'ab'[i % 2]}" for i in range(rows))]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    return path.stat().st_size


def test_a_streamed_file_moves_the_bar_as_its_batches_arrive(
    engine_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .gz of 6000 rows (about 460 KB stored) read as one stream in 4 KiB blocks (its
    reader reads about 32 blocks ahead): the bar's bytes take several values strictly between
    0 and the file's size and its rows several values below 6000 before the end, never
    going back."""
    monkeypatch.setenv("SHARDLEARN_PROGRESS", "always")
    path = tmp_path / "in.csv.gz"
    size = _incompressible_gz(path, 6000)
    updates: list[tuple[int, int]] = []  # (bytes, rows) drawn by each update
    update = Progress.update

    def recorded(bar: Progress, task: Any, **fields: Any) -> None:
        if "completed" in fields:
            rows = re.match(r"ingest ([\d,]+) rows", fields["description"])
            assert rows is not None, fields["description"]
            updates.append((int(fields["completed"]), int(rows.group(1).replace(",", ""))))
        update(bar, task, **fields)

    with (
        engine(engine_name, workers=2) as eng,
        mock.patch.object(Progress, "update", recorded),
        mock.patch.object(ranges_module, "RANGE_BYTES", 256),  # the .gz is one stream
    ):
        ds = ingest(str(path), "label", tmp_path / "out", partitions=2, parsers=2,
                    kinds={"s": "text"}, block_size=4096, engine=eng)  # fmt: skip
    assert ds.manifest["rows_read"] == 6000
    assert updates[-1] == (size, 6000)
    during = [(done, rows) for done, rows in updates if rows < 6000]
    assert len({done for done, _ in during if 0 < done < size}) >= 3, updates
    assert len({rows for _, rows in during if rows > 0}) >= 3, updates
    assert updates == sorted(updates), updates  # never goes back
