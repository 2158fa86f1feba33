"""A Ray generator task reading a ``.gz`` as one stream whose worker process is killed (SIGKILL,
for real) after the driver took some of its batches (a range task killed mid-ingest:
tests/cluster/test_ray_ingest.py, on three nodes). With a retry left the ingest writes the
dataset an undisturbed ingest writes, byte for byte (no row twice, none lost:
``rows_read == rows_written + rows_rejected``); with none it fails with a clear error and
writes nothing (no manifest).

The session's real local Ray cluster (``ray_cluster``) runs the task: the ingest's own
(:func:`~shardlearn.data._ingest_ray.stream_on_node`), wrapped so that its first attempt
announces its process id in a file and waits there to be killed: the kill lands at that point
every time (no sleeps)."""

from __future__ import annotations

import gzip
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import shardlearn.data._ingest_ray as ingest_ray
import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset, ingest
from shardlearn.data._ingest_ray import RayParsers
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.testing import wait_for_file

from ._rejects import rejects
from ._speculation import fingerprint, numbered_lines

pytestmark = pytest.mark.ray

WAIT = 120.0  # seconds a paused task or the test waits for the other side at most


def _first_attempt(workdir: str) -> bool:
    """True once, for the first task attempt that asks (the file is created atomically)."""
    try:
        os.close(os.open(os.path.join(workdir, "claimed"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _announce_and_wait(workdir: str) -> None:
    """Runs in the task: write this process's id, then wait to be killed."""
    pid = Path(workdir) / "task.pid"
    pid.with_suffix(".tmp").write_text(str(os.getpid()))
    pid.with_suffix(".tmp").rename(pid)
    wait_for_file(Path(workdir) / "never", timeout=WAIT)  # fails the task if not killed


def _dying_stream(workdir: str) -> Callable[..., Iterator[Any]]:
    """stream_on_node whose first attempt dies after its third batch, once the driver has
    taken a batch of it (``consumed``, written by the driver)."""

    def stream(path: str, options: Any, fast_types: Any) -> Iterator[Any]:
        for count, item in enumerate(ingest_ray.stream_on_node(path, options, fast_types)):
            yield item
            if count == 2 and _first_attempt(workdir):
                wait_for_file(Path(workdir) / "consumed", timeout=WAIT)
                _announce_and_wait(workdir)

    return stream


def _ingest(path: Path, out: Path, eng: Any = None) -> Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The label column 'label' has a single class")
        return ingest(str(path), "label", str(out), partitions=3, progress=False, parsers=2,
                      kinds={"s": "text"}, block_size=4096, engine=eng)  # fmt: skip


def _kill_during(run: Callable[[], Dataset], workdir: Path) -> Dataset:
    """``run()`` on a thread; SIGKILL the task process that announces itself; its result
    (or its error, raised here)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["dataset"] = run()
        except BaseException as error:  # raised on the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    pid = workdir / "task.pid"
    wait_for_file(pid, timeout=WAIT)
    os.kill(int(pid.read_text()), signal.SIGKILL)
    thread.join(WAIT)
    assert not thread.is_alive(), "the ingest did not end after the kill"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["dataset"]


def _write_gz(tmp_path: Path) -> Path:
    """A .gz CSV of 3000 rows with two bad rows (lines 1001 and 2501)."""
    lines = numbered_lines(3000)
    lines[1000], lines[2500] = "999,bad", "2499,bad"
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    return path


@pytest.mark.parametrize("retries", [1, 0], ids=["retried", "no-retry"])
def test_a_stream_task_killed_mid_stream(ray_cluster: Any, tmp_path: Path, retries: int) -> None:
    """The .gz's task dies after the driver took part of its batches: retried, the dataset is
    the undisturbed one (no batch of the dead attempt twice); without a retry, a DataError
    saying what to do, and no dataset."""
    path = _write_gz(tmp_path)
    workdir = tmp_path / "sync"
    workdir.mkdir()
    with mock.patch.object(ranges_module, "RANGE_BYTES", 256):  # the .gz is one stream
        undisturbed = _ingest(path, tmp_path / "undisturbed")
    import ray

    get = RayParsers._get

    def consumed(parsers: RayParsers, ref: Any, what: str) -> Any:
        result = get(parsers, ref, what)
        if "as one stream" in what:
            (workdir / "consumed").touch()
        return result

    out = tmp_path / "ray"
    dying = ray.remote(_dying_stream(str(workdir)))
    with (
        engine("ray", max_retries=retries) as eng,
        mock.patch.object(ranges_module, "RANGE_BYTES", 256),
        mock.patch.object(ingest_ray, "_remote_stream", lambda: dying),
        mock.patch.object(RayParsers, "_get", consumed),
    ):
        run = lambda: _ingest(path, out, eng)  # noqa: E731
        if retries:
            ds = _kill_during(run, workdir)
        else:
            with pytest.raises(DataError, match="worker process or node died") as caught:
                _kill_during(run, workdir)
    if retries:
        _same_as(ds, undisturbed)
    else:
        assert "as one stream" in str(caught.value) and "max_retries" in str(caught.value)
        assert not out.exists()


def _same_as(ds: Dataset, undisturbed: Dataset) -> None:
    manifest = ds.manifest
    assert manifest["rows_read"] == manifest["rows_written"] + manifest["rows_rejected"] == 3000
    assert rejects(ds) == [(1001, "wrong number of fields (expected 3)"),
                           (2501, "wrong number of fields (expected 3)")]  # fmt: skip
    written = [x for split in ds.splits for x in ds.read(split, ["x"])["x"].to_pylist()]
    assert sorted(written) == sorted(set(range(3000)) - {999, 2499})  # each row once
    assert fingerprint(ds) == fingerprint(undisturbed)
