"""Ingest's fixed and per-batch costs (issue 24): what it changes to be cheap at 500k rows
must not change what it writes, nor leave the process changed behind it."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data import _writer, ingest
from shardlearn.data._convert import DEFAULT_NA_VALUES, infer_schema
from shardlearn.data._writer import DatasetWriter
from shardlearn.data.ingest import schema_for_table
from shardlearn.data.partition import make_partitioner
from shardlearn.exceptions import SchemaError

from ._speculation import fingerprint


def _csv(path: Path, rows: int = 3000) -> Path:
    rng = np.random.default_rng(7)
    lines = ["x,y,colour,label"]
    colours = ["red", "green", "blue"]
    for i in range(rows):
        lines.append(f"{rng.normal():.4f},{int(rng.integers(0, 9))},{colours[i % 3]},{'ab'[i % 2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _jemalloc() -> pa.MemoryPool:
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow has no jemalloc")


def test_ingest_allocates_from_jemalloc_and_restores_the_default_pool(tmp_path: Path) -> None:
    pool = _jemalloc()
    before, allocated = pa.default_memory_pool(), pool.total_bytes_allocated()
    with mock.patch.dict(os.environ):
        os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
        ingest(_csv(tmp_path / "a.csv"), "label", tmp_path / "ds", progress=False)
    # The batches of the ingest came from jemalloc, and the caller's default is back.
    assert pool.total_bytes_allocated() > allocated
    assert pa.default_memory_pool().backend_name == before.backend_name


def test_an_allocator_the_user_chose_is_kept(tmp_path: Path) -> None:
    pool = _jemalloc()
    allocated = pool.total_bytes_allocated()
    with mock.patch.dict(os.environ, {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}):
        ingest(_csv(tmp_path / "a.csv"), "label", tmp_path / "ds", progress=False)
    assert pool.total_bytes_allocated() == allocated


def _huge_pages_disabled() -> int:
    """prctl(PR_GET_THP_DISABLE): 1 where transparent huge pages are off for this process."""
    return int(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2) is Linux's")
def test_huge_pages_are_off_while_an_ingest_writes_then_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transparent huge pages are off for the process while the rows are written (the Parquet
    encoders' allocator refaulted fresh 2 MiB pages), on again after; a process that had them
    off keeps them off."""
    if _huge_pages_disabled():
        pytest.skip("huge pages are already off for this process")
    seen: list[int] = []
    write = DatasetWriter.write

    def recording(self: DatasetWriter, batch: pa.RecordBatch) -> None:
        seen.append(_huge_pages_disabled())
        write(self, batch)

    monkeypatch.setattr(DatasetWriter, "write", recording)
    ingest(_csv(tmp_path / "a.csv"), "label", tmp_path / "ds", progress=False)
    assert seen and set(seen) == {1}
    assert _huge_pages_disabled() == 0
    assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0
    try:
        ingest(_csv(tmp_path / "a.csv"), "label", tmp_path / "ds", overwrite=True, progress=False)
        assert _huge_pages_disabled() == 1
    finally:
        ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)


def test_schema_inference_on_threads_is_the_one_column_by_column(tmp_path: Path) -> None:
    """infer_schema maps its columns through a thread pool (ingest's parsers) in their order."""
    table = pa.table(
        {
            "n": ["1", "2", "x"] * 50,
            "f": ["1.5", "2", ""] * 50,
            "when": ["2024-01-02", "2024-02-03", "2024-03-04"] * 50,
            "word": ["a", "b", "c"] * 50,
            "label": ["y", "n", "y"] * 50,
        }
    )
    one = infer_schema(table, "label", DEFAULT_NA_VALUES)
    with ThreadPoolExecutor(4) as pool:
        threaded = infer_schema(table, "label", DEFAULT_NA_VALUES, mapper=pool.map)
    assert threaded == one
    assert threaded.names == ["n", "f", "when", "word", "label"]


def _referenced(pieces: list[pa.RecordBatch]) -> int:
    """Bytes of the distinct Arrow buffers ``pieces`` keep alive (slices keep their parent's)."""
    seen: dict[int, int] = {}
    for piece in pieces:
        for column in piece.columns:
            for buffer in column.buffers():
                if buffer is not None:
                    seen[buffer.address] = buffer.size
    return sum(seen.values())


def test_a_slowly_filling_shard_keeps_no_more_than_a_few_batches_alive(tmp_path: Path) -> None:
    """Each batch is taken into shard order once and its shards get slices of it; a shard that
    is never flushed must not keep every batch alive through its slices (memory would grow
    with the input): it holds its own rows plus at most COMPACT_PIECES - 1 batches."""
    rows, batches = 2000, 30
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "x": rng.normal(size=rows * batches),
            "label": pa.array(["ab"[i % 2] for i in range(rows * batches)]),
        }
    )
    schema = schema_for_table(table, "label")
    partitioner = make_partitioner(
        "random", label="label", partitions=4, split=(0.8, 0.1, 0.1), seed=1,
        column_names=table.column_names,
    )  # fmt: skip
    writer = DatasetWriter(str(tmp_path / "ds"), schema, partitioner, flush_bytes=1 << 40)
    try:
        batch_bytes = 0
        for batch in table.cast(schema.to_arrow()).to_batches(max_chunksize=rows):
            writer.write(batch)
            batch_bytes = max(batch_bytes, batch.nbytes)
        for buffer in writer._buffers.values():
            own = sum(piece.nbytes for piece in buffer.pending)
            limit = own + (_writer.COMPACT_PIECES - 1) * batch_bytes * 2
            assert _referenced(buffer.pending) <= limit, buffer.path
    finally:
        writer.abort()


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_small_multi_frame_zst_is_decompressed_once(tmp_path: Path, kind: str) -> None:
    """An exact plan (frames that do not state their data sizes, or after a wrong cut; sized
    frames are cut speculatively: test_zst_decompress_once.py) decompresses every chunk of
    frames to place the cuts; the first KEPT_CHUNKS ranges keep those bytes, so their parsers
    never decompress them again (decompressing a range is an error here), and the dataset is
    the one a single stream writes."""
    text = _csv(tmp_path / "a.csv").read_bytes()
    if kind == "jsonl":
        header, *lines = text.decode().splitlines()
        names = header.split(",")
        text = "".join(
            json.dumps(dict(zip(names, line.split(","), strict=True))) + "\n" for line in lines
        ).encode()
    codec = pa.Codec("zstd")
    path = tmp_path / f"in.{kind}.zst"
    step = len(text) // 5 + 1
    frames = [codec.compress(text[a : a + step], asbytes=True) for a in range(0, len(text), step)]
    path.write_bytes(b"".join(frames))
    whole = fingerprint(ingest(path, "label", tmp_path / "one", progress=False, parsers=1))

    def decompressed_again(*args: object) -> bytes:
        raise AssertionError("a range kept by the plan was decompressed again")

    with (
        mock.patch.object(ranges_module, "RANGE_BYTES", step),
        mock.patch.object(ranges_module, "read_plain", decompressed_again),
        mock.patch.object(ranges_module, "_frame_cuts", lambda *args: None),
    ):
        split = ingest(path, "label", tmp_path / "split", progress=False, parsers=2)
    assert split.manifest["ranges"] >= 4
    assert fingerprint(split) == whole


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"label": "lable"}, "label column"),
        ({"strategy": "hash:colur"}, "partitioning column"),
    ],
)
def test_a_mistake_in_the_call_is_reported_before_the_plan_reads_the_input(
    tmp_path: Path, arguments: dict, message: str
) -> None:
    """The range plan reads every byte of the input beside the schema's inference; a wrong
    label or key must fail before it starts, not after a plan of the whole input."""
    planned: list[object] = []
    plan = ranges_module.plan_ranges

    def recording(*args: object, **kwargs: object) -> object:
        planned.append(args[0])
        return plan(*args, **kwargs)

    call = {"label": "label", **arguments}
    with (
        mock.patch.object(ingest_run, "plan_ranges", recording),
        pytest.raises(SchemaError, match=message),
    ):
        ingest(_csv(tmp_path / "a.csv"), out=tmp_path / "ds", progress=False, parsers=2, **call)
    assert planned == []
