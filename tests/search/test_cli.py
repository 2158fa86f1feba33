"""``shardlearn search``: the command, its errors, and resume after a real SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from shardlearn.testing import SYNC_TIMEOUT, interruptible, run_cli

SPACE = """
logistic:
  C: {loguniform: [0.001, 100]}
gaussian_nb:
  var_smoothing: [1.0e-9, 1.0e-3]
"""


def _run(capsys, *args: str) -> tuple[int, str]:
    code, out, err = run_cli(capsys, *args)
    return code, out + err


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_search_command_writes_results_and_registers(capsys, split_dataset, tmp_path):
    out = tmp_path / "out"
    args = ["search", split_dataset.uri, "--model", "logistic", "--model", "gaussian_nb",
            "--space", str(_space(tmp_path)), "--trials", "4", "--workers", "1",
            "--out", str(out), "--register", "best", "--registry", str(tmp_path / "reg"),
            "--json"]  # fmt: skip
    code, output = _run(capsys, *args)
    assert code == 0, output
    summary = json.loads(output)
    assert summary["registered"] == "best:1"
    assert {row["model"] for row in summary["leaderboard"]} == {"logistic", "gaussian_nb"}
    assert 0.5 < summary["test_metrics"]["roc_auc"] <= 1
    table = pq.read_table(out / "leaderboard.parquet")
    assert table.num_rows == 4 and (out / "leaderboard.csv").is_file()
    assert summary["model"] == str(out / "best_model")


def test_unknown_parameter_names_the_valid_ones(capsys, split_dataset, tmp_path):
    space = _space(tmp_path, "logistic:\n  Cee: [1, 2]\n")
    args = ["search", split_dataset.uri, "--model", "logistic", "--space", str(space),
            "--out", str(tmp_path / "out")]  # fmt: skip
    code, output = _run(capsys, *args)
    assert code == 1
    assert "Cee" in output and "Valid: C," in output


def test_unknown_strategy_and_bad_distribution_are_clear_errors(capsys, split_dataset, tmp_path):
    base = ["search", split_dataset.uri, "--model", "logistic", "--out", str(tmp_path / "o")]
    code, output = _run(capsys, *base, "--strategy", "hyperband")
    assert code == 1 and "asha" in output
    space = _space(tmp_path, "C: {lognormal: [1, 2]}\n")
    code, output = _run(capsys, *base, "--space", str(space))
    assert code == 1 and "loguniform" in output


def test_too_many_folds_for_the_shards_is_a_clear_error(capsys, split_dataset, tmp_path):
    args = ["search", split_dataset.uri, "--model", "logistic", "--cv", "9",
            "--out", str(tmp_path / "o")]  # fmt: skip
    code, output = _run(capsys, *args)
    assert code == 1 and "at least 9" in output


def _finished_trials(cache: Path) -> set[str]:
    # A result is written into a ".tmp-*" staging folder and renamed into place: only renamed
    # folders hold finished trials (a staging meta.json may be half written, or gone).
    metas = (p for p in cache.glob("*/*/meta.json") if not p.parent.name.startswith("."))
    return {json.loads(p.read_text())["key"] for p in metas}


def test_sigint_then_resume_reruns_no_finished_trial(split_dataset, tmp_path):
    out = tmp_path / "out"
    grid = [round(10.0 ** (-12 + i / 3), 12) for i in range(30)]
    space = _space(tmp_path, f"var_smoothing: {json.dumps(grid)}\n")
    command = interruptible(Path(sys.executable).parent / "shardlearn", "search", split_dataset.uri,
               "--model", "gaussian_nb", "--space", str(space), "--strategy", "grid",
               "--workers", "1", "--out", str(out))  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not _finished_trials(out / "cache") if (out / "cache").exists() else True:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=SYNC_TIMEOUT) != 0
    finally:
        process.kill()
        process.wait()
    finished = _finished_trials(out / "cache")
    assert 0 < len(finished) < len(grid)
    log = out / "log.jsonl"  # one line per finished wave: none if the first was interrupted
    lines_before = len(log.read_text().splitlines()) if log.exists() else 0
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    resumed = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    resumed = resumed[lines_before:]
    started = {key for entry in resumed for key in entry["started"]}
    cached = {key for entry in resumed for key in entry["cached"]}
    assert not started & finished
    assert finished <= cached
    assert len(started | cached) == len(grid)
    assert pq.read_table(out / "leaderboard.parquet").num_rows == len(grid)
