"""The data commands through the real CLI, and an ingest killed mid-way."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.data import Dataset, ingest
from shardlearn.exceptions import DataError

SHARDLEARN = Path(sys.executable).with_name("shardlearn")
runner = CliRunner()


def _write_csv(path: Path, n: int) -> Path:
    labels = np.where(np.arange(n) % 3 == 0, "yes", "no")
    lines = [f"{i},{i * 0.5},{lab}" for i, lab in zip(range(n), labels, strict=True)]
    path.write_text("id,x,label\n" + "\n".join(lines) + "\n")
    return path


def test_cli_ingest_then_describe_json(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "in.csv", 300)
    result = runner.invoke(
        app,
        ["ingest", str(source), "--label", "label", "--out", str(tmp_path / "ds"),
         "--partitions", "3", "--strategy", "stratified", "--split", "0.8,0.2", "--seed", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rows_read=300 = rows_written=300 + rows_rejected=0" in result.output
    result = runner.invoke(app, ["describe", str(tmp_path / "ds"), "--json", "--verify"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["splits"]["train"]["rows"] == 240
    assert described["splits"]["valid"]["class_counts"] == {"no": 40, "yes": 20}
    assert described["verify"] == {"ok": True, "problems": []}
    assert described["seed"] == 4 and described["strategy"] == "stratified"


def test_cli_describe_tables_and_verify_mismatch_exits_1(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "in.csv", 100)
    ds = ingest(source, "label", tmp_path / "ds", partitions=2)
    result = runner.invoke(app, ["describe", str(tmp_path / "ds")])
    assert result.exit_code == 0
    assert "schema" in result.output and "shards" in result.output
    shard = Path(ds.shards()[0].uri)
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    proc = subprocess.run(
        [str(SHARDLEARN), "describe", str(tmp_path / "ds"), "--verify"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "do not match the manifest" in proc.stderr
    assert ds.shards()[0].path in proc.stdout


def test_cli_errors_are_one_line_with_exit_1(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "in.csv", 10)
    proc = subprocess.run(
        [str(SHARDLEARN), "ingest", str(source), "--label", "lable", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: Unknown label column 'lable'. Did you mean 'label'? Valid: id, label, x."
    ]
    proc = subprocess.run(
        [str(SHARDLEARN), "describe", str(tmp_path / "nothing")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "manifest.json is missing" in proc.stderr


def test_cli_max_reject_rate_exit_1_and_no_dataset(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,x,label\n1,2,a\n2,3\n3,4,b\n4\n")
    result = runner.invoke(
        app,
        ["ingest", str(source), "--label", "label", "--out", str(tmp_path / "ds"),
         "--max-reject-rate", "0.2"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert not (tmp_path / "ds" / "manifest.json").exists()


def _open_fifo_for_writing(path: Path, proc: subprocess.Popen) -> int:
    """Open the FIFO once the ingest process opened it for reading (fails fast if it died)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise
            if proc.poll() is not None:
                pytest.fail(f"ingest exited early: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.01)
            continue
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return fd
    pytest.fail("ingest never opened its input")


def _wait_for_shard_file(out: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        staged = list(out.glob(".staging-*/train/part-*.parquet"))
        if staged:
            return staged[0]
        if proc.poll() is not None:
            pytest.fail("ingest exited before writing a shard")
        time.sleep(0.01)
    pytest.fail("no shard file appeared")


@pytest.mark.slow
def test_ingest_killed_mid_way_leaves_no_manifest(tmp_path: Path) -> None:
    # The input is a FIFO: the ingest blocks waiting for more rows after the first shard file
    # appears, so the kill lands mid-ingest every time (no sleeps, no timing luck).
    fifo = tmp_path / "input.csv"
    os.mkfifo(fifo)
    (tmp_path / "schema.yaml").write_text(
        "columns:\n  - {name: id, kind: numeric, dtype: int64}\n"
        "  - {name: x, kind: numeric, dtype: float64}\n  - {name: label, kind: categorical}\n"
    )
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [str(SHARDLEARN), "ingest", str(fifo), "--label", "label", "--out", str(out),
         "--no-header", "--columns", "id,x,label", "--schema", str(tmp_path / "schema.yaml"),
         "--partitions", "1", "--split", "1.0", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        fd = _open_fifo_for_writing(fifo, proc)
        rows = np.arange(2_000_000)  # well over one 8 MB row group
        chunk = "\n".join(f"{i},{i % 97}.5,{'ab'[i % 2]}" for i in rows.tolist()) + "\n"
        _write_all(fd, chunk.encode())
        staged = _wait_for_shard_file(out, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert staged.exists()
    assert not (out / "manifest.json").exists()
    with pytest.raises(DataError, match="manifest.json is missing"):
        Dataset.open(out)
    # The next ingest into the same place clears the leftovers and succeeds.
    ds = ingest(_write_csv(tmp_path / "ok.csv", 50), "label", out, partitions=2)
    assert ds.num_rows() == 50
    assert not list(out.glob(".staging-*"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            pytest.fail("ingest closed its input early")
        view = view[written:]
