"""Ingest on Ray cuts plain files speculatively, as the local engine does: no pass over the
input (no scan task) before the range tasks parse; a cut inside a quoted value is found from the
range's own scan and the file is planned exactly and parsed again. Files read as one stream
(.gz) are read by tasks, not the driver. The dataset is the local engine's byte for byte, and
the manifest still shows the rows each node read.

The session's real local Ray cluster (``ray_cluster``) runs the tasks; the driver-side calls
(the plans, the tasks submitted, the plan's scan tasks) are recorded in this process."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data import ingest
from shardlearn.data._ingest_ray import RayParsers
from shardlearn.data.readers import SourceReader
from shardlearn.engine import engine
from shardlearn.exceptions import DataError

from ._rejects import rejects
from ._speculation import (
    RecordedPlans,
    fingerprint,
    ingest_in_ranges,
    numbered_lines,
    write_quoted_csv,
)

pytestmark = pytest.mark.ray


class _RecordedTasks:
    """Patched over RayParsers: the ranges submitted to parse (speculative or not) and how
    many times a plan ran its reads as tasks (``map``: the exact plan's scans)."""

    def __init__(self) -> None:
        self.speculative: list[bool] = []
        self.scans = 0
        self._submit, self._map = RayParsers._submit, RayParsers.map

    def submit(self, parsers: RayParsers, fn: Any, *args: Any) -> Any:
        self.speculative.append(bool(args[0].speculative))
        return self._submit(parsers, fn, *args)

    def map(self, parsers: RayParsers, fn: Any, items: Any) -> Any:
        self.scans += 1
        return self._map(parsers, fn, items)


def _on_ray(
    path: Path | str, out: Path, range_bytes: int, **options: Any
) -> tuple[Any, RecordedPlans, _RecordedTasks]:
    plans, tasks = RecordedPlans(), _RecordedTasks()
    with (
        engine("ray") as eng,
        mock.patch.object(ingest_run, "plan_ranges", plans),
        mock.patch.object(RayParsers, "_submit", lambda s, fn, *a: tasks.submit(s, fn, *a)),
        mock.patch.object(RayParsers, "map", lambda s, fn, items: tasks.map(s, fn, items)),
    ):
        ds = ingest_in_ranges(path, out, range_bytes, 2, engine=eng, **options)
    return ds, plans, tasks


def _node_rows_shown(ds: Any) -> None:
    nodes = ds.manifest["nodes"]
    assert nodes and all(rows > 0 for rows in nodes.values()), nodes
    assert sum(nodes.values()) == ds.manifest["rows_read"]


def test_ray_parses_speculative_ranges_without_a_scan_first(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """A clean CSV on Ray: every range task parses a speculative range and no scan task
    runs before them (the exact plan scanned every range in tasks first)."""
    lines = numbered_lines(3000)
    lines[1234] = "1233,bad"
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(lines) + "\n")
    local = ingest_in_ranges(path, tmp_path / "local", path.stat().st_size // 6, 2)
    ds, plans, tasks = _on_ray(path, tmp_path / "ray", path.stat().st_size // 6)
    assert plans.speculative == [True]
    assert tasks.scans == 0
    assert len(tasks.speculative) == ds.manifest["ranges"] >= 6 and all(tasks.speculative)
    assert rejects(ds) == [(1235, "wrong number of fields (expected 3)")]
    assert fingerprint(ds) == fingerprint(local)
    _node_rows_shown(ds)


def test_a_quoted_newline_across_a_cut_on_ray_plans_again_as_the_local_engine_does(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """The middle of the file lies in a value of 200 lines: the speculative cut there is found
    wrong from its range's scan on a node, the file is planned exactly (scan tasks) and parsed
    again; rejects keep their physical lines and the dataset is the local engine's."""
    path = write_quoted_csv(tmp_path)
    range_bytes = path.stat().st_size // 2
    local = ingest_in_ranges(path, tmp_path / "local", range_bytes, 2)
    ds, plans, tasks = _on_ray(path, tmp_path / "ray", range_bytes)
    assert plans.speculative == [True, False]
    assert tasks.scans == 1
    assert True in tasks.speculative and tasks.speculative[-2:] == [False, False]
    assert ds.manifest["ranges"] == 2
    assert rejects(ds) == [(500, "wrong number of fields (expected 3)")]
    assert fingerprint(ds) == fingerprint(local)
    _node_rows_shown(ds)


def test_files_read_as_streams_are_read_by_tasks_largest_first(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """Three .gz files too large to be one range: on Ray each is read by a task (none by the
    driver), the largest started right after the first to consume; the dataset is the local
    engine's and the manifest shows the rows each node read."""
    paths = []
    for name, count in (("a", 300), ("b", 200), ("c", 3000)):
        lines = numbered_lines(count)
        lines[count // 2] = f"{count // 2 - 1},bad"
        path = tmp_path / f"{name}.csv.gz"
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        paths.append(str(path))
    local = ingest(paths, "label", tmp_path / "local", partitions=3, progress=False,
                   parsers=2, kinds={"s": "text"})  # fmt: skip
    on_driver: list[str] = []
    streamed: list[str] = []
    batches, stream = SourceReader.batches, RayParsers._stream

    def driver_batches(reader: SourceReader) -> Any:
        if type(reader) is SourceReader:  # not a schema sample's head
            on_driver.append(reader.path)
        return batches(reader)

    def recorded_stream(parsers: RayParsers, reader: SourceReader) -> Any:
        streamed.append(Path(reader.path).name)
        return stream(parsers, reader)

    with (
        engine("ray") as eng,
        mock.patch.object(SourceReader, "batches", driver_batches),
        mock.patch.object(RayParsers, "_stream", recorded_stream),
        mock.patch.object(ranges_module, "RANGE_BYTES", 256),
    ):
        ds = ingest(paths, "label", tmp_path / "ray", partitions=3, progress=False,
                    parsers=2, kinds={"s": "text"}, engine=eng)  # fmt: skip
    assert on_driver == []
    assert streamed == ["a.csv.gz", "c.csv.gz", "b.csv.gz"]
    assert ds.manifest["ranges"] == 3 and ds.manifest["parsers"] == 2
    assert [line for line, _ in rejects(ds)] == [101, 151, 1501]
    assert fingerprint(ds) == fingerprint(local)
    _node_rows_shown(ds)


def test_a_stream_tasks_error_is_the_local_engines(ray_cluster: Any, tmp_path: Path) -> None:
    """A .gz cut short: the task's error reaches the caller as the local engine raises it
    (same message, with the last good line), and nothing is written."""
    lines = numbered_lines(3000)
    packed = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    errors = []
    for name in ("local", "ray"):
        with (
            mock.patch.object(ranges_module, "RANGE_BYTES", 256),
            engine(name, workers=2) as eng,
            pytest.raises(DataError) as caught,
        ):
            ingest(str(path), "label", tmp_path / name, partitions=3, progress=False,
                   parsers=2, kinds={"s": "text"}, engine=eng)  # fmt: skip
        errors.append(str(caught.value))
        assert not (tmp_path / name).exists()
    assert errors[0] == errors[1] and "last good line" in errors[0]


def test_a_zst_of_unsized_frames_is_cut_without_a_scan_on_ray(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """Six frames that do not state their data sizes (a streaming writer's): on Ray too the
    file is cut at its chunks of frames without a scan task (each chunk was decompressed by a
    scan task, then again by its parse task), and the dataset is the local engine's."""
    lines = numbered_lines(3000)
    lines[2000] = "1999,bad"
    text = ("\n".join(lines) + "\n").encode()
    frames = []
    for k in range(6):
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as stream:
            stream.write(text[k * len(text) // 6 : (k + 1) * len(text) // 6])
        frames.append(sink.getvalue().to_pybytes())
    path = tmp_path / "frames.csv.zst"
    path.write_bytes(b"".join(frames))
    local = ingest_in_ranges(path, tmp_path / "local", len(text) // 6, 2)
    ds, plans, tasks = _on_ray(path, tmp_path / "ray", len(text) // 6)
    assert plans.speculative == [True]
    assert tasks.scans == 0
    assert len(tasks.speculative) == ds.manifest["ranges"] >= 3 and all(tasks.speculative)
    assert rejects(ds) == [(2001, "wrong number of fields (expected 3)")]
    assert fingerprint(ds) == fingerprint(local)
    _node_rows_shown(ds)


@pytest.mark.parametrize("quoted", [False, True], ids=["clean", "quoted-newline"])
def test_an_s3_csv_is_cut_without_a_scan_on_ray(
    ray_cluster: Any, tmp_path: Path, s3_endpoint: str, s3_bucket: Any, quoted: bool
) -> None:
    """A CSV in object storage (moto's S3 server) on Ray: cut at newlines without a scan task
    (each range was read over the network by a scan task, then again by its parse task); with
    a value of 200 lines across a cut, the cut is found wrong and the object planned exactly
    (scan tasks) and parsed again. The dataset is the one the local engine writes reading it
    as one stream. The credentials travel in the URI: the session's Ray workers may have
    started before the server."""
    if quoted:
        text = write_quoted_csv(tmp_path).read_text()
        bad = 500
    else:
        lines = numbered_lines(3000)
        lines[1234] = "1233,bad"
        text, bad = "\n".join(lines) + "\n", 1235
    filesystem = s3_bucket("lake")
    key = f"lake/{'quoted' if quoted else 'clean'}.csv"
    with filesystem.open_output_stream(key) as stream:
        stream.write(text.encode())
    uri = f"s3://testing:testing@{key}?endpoint_override={s3_endpoint}&scheme=http"
    range_bytes = len(text) // (2 if quoted else 6)
    local = ingest_in_ranges(uri, tmp_path / "local", range_bytes, 2, format="csv")
    assert local.manifest["ranges"] == 1  # one stream
    ds, plans, tasks = _on_ray(uri, tmp_path / "ray", range_bytes, format="csv")
    assert plans.speculative == ([True, False] if quoted else [True])
    assert tasks.scans == int(quoted)
    assert tasks.speculative[0] and ds.manifest["ranges"] >= (2 if quoted else 6)
    assert rejects(ds) == [(bad, "wrong number of fields (expected 3)")]
    assert fingerprint(ds) == fingerprint(local)
    _node_rows_shown(ds)
