"""benchmarks/ingest.py --repeat N: shardlearn and its peer run in turn, the order reversed every
other run, and the table reports the medians of each and the ratio of the medians (issue 24: on
a shared machine one run each swung the peer's own time about 2x). Each run is still a whole
call in a fresh process; these tests check the bookkeeping, with stand-in runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ingest_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cases_alternate_and_each_keeps_its_own_runs() -> None:
    bench = _bench()
    order: list[str] = []
    walls = {"ours": iter([3.0, 1.0, 2.0, 9.0]), "peer": iter([5.0, 4.0, 6.0, 1.0])}

    def run(name: str) -> dict:
        order.append(name)
        return {"seconds": next(walls[name]), "cpu": 1.0, "rss": 1}

    runs = bench.alternating([(n, lambda n=n: run(n)) for n in ("ours", "peer")], repeat=4)
    assert order == ["ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]
    assert [r["seconds"] for r in runs["ours"]] == [3.0, 1.0, 2.0, 9.0]
    assert [r["seconds"] for r in runs["peer"]] == [5.0, 4.0, 6.0, 1.0]


def test_the_summary_is_the_median_run_with_the_largest_peak_memory() -> None:
    bench = _bench()
    runs = [
        {"seconds": 3.0, "cpu": 2.0, "rss": 10, "parsers": 2},
        {"seconds": 1.0, "cpu": 1.5, "rss": 30, "parsers": 1},
        {"seconds": 2.0, "cpu": 4.0, "rss": 20, "parsers": 3},
    ]
    row = bench.summary(runs)
    assert (row["seconds"], row["cpu"], row["rss"]) == (2.0, 2.0, 30)
    assert (row["fastest"], row["slowest"], row["runs"]) == (1.0, 3.0, 3)
    assert row["parsers"] == 3  # the median-wall run's own figures
    # An even count: the mean of the middle two walls, as the ratio of medians uses.
    assert bench.summary(runs + [{"seconds": 8.0, "cpu": 1.0, "rss": 5}])["seconds"] == 2.5


def test_a_repeat_below_one_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "10", "--repeat", "0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "--repeat must be at least 1; got 0" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before any file was generated


@pytest.mark.parametrize("repeat", [2])
def test_every_run_writes_a_fresh_dataset(tmp_path: Path, repeat: int) -> None:
    """Each timed ingest writes into a new folder (as one run does), none left behind."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "300", "--repeat", str(repeat),
         "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("ours:") == repeat and proc.stderr.count("peer:") == repeat
    assert "| 300 | csv |" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide-300.csv", "wide-300.rows"]
