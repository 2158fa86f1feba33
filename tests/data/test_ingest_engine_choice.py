"""Which engine ingest parses on when it is not given one (DESIGN §6, §10): ``engine=`` >
``with shardlearn.engine(...)`` > ``$SHARDLEARN_ENGINE`` > threads of this process.

Seen through the parsers: by default ingest runs as many as the engine has CPUs (a local
engine's workers), so an engine of ``default_parsers() + 1`` workers shows which engine was
used in ``manifest["parsers"]``. The dataset is the same whichever engine parsed it. On a
Ray cluster, tests/cluster/test_ray_ingest.py checks the same choices (the ``nodes``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import shardlearn.data._ranges as ranges_module
import shardlearn.engine.base as engine_base
from shardlearn.data import Dataset, ingest
from shardlearn.data._ranges import default_parsers
from shardlearn.engine import create_engine, engine, get_engine
from shardlearn.exceptions import EngineError

RANGES = 8  # the CSV is cut into about this many byte ranges
WORKERS = default_parsers() + 1  # never the parsers of an ingest without an engine


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    columns = rng.normal(size=600), rng.choice(["a", "b"], 600), rng.integers(0, 2, 600)
    lines = ["x,s,label"] + [f"{x:.3f},{s},{y}" for x, s, y in zip(*columns, strict=True)]
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def shared_engines(monkeypatch: pytest.MonkeyPatch):
    """get_engine's shared engines (made from $SHARDLEARN_ENGINE): none before this test,
    closed after it."""
    created: dict = {}
    monkeypatch.setattr(engine_base, "_defaults", created)
    monkeypatch.delenv("SHARDLEARN_ENGINE", raising=False)
    yield created
    for eng in created.values():
        eng.close()


def _ingest(csv: Path, out: Path, **kwargs) -> Dataset:
    range_bytes = csv.stat().st_size // RANGES + 1
    with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
        return ingest(str(csv), "label", str(out), partitions=2, progress=False, **kwargs)


def _fingerprint(ds: Dataset) -> dict[str, str]:
    root = Path(str(ds.uri))
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def test_without_a_choice_ingest_parses_on_threads_and_creates_no_engine(
    csv: Path, tmp_path: Path, shared_engines: dict
) -> None:
    ds = _ingest(csv, tmp_path / "out")
    assert ds.manifest["parsers"] == min(default_parsers(), ds.manifest["ranges"])
    assert ds.manifest["ranges"] >= WORKERS and "nodes" not in ds.manifest
    assert shared_engines == {}


def test_the_with_block_engine_parses(csv: Path, tmp_path: Path, shared_engines: dict) -> None:
    reference = _ingest(csv, tmp_path / "threads")
    with engine("local", workers=WORKERS):
        ds = _ingest(csv, tmp_path / "out")
    assert ds.manifest["parsers"] == WORKERS
    assert _fingerprint(ds) == _fingerprint(reference)


def test_the_environment_variable_names_the_engine(
    csv: Path, tmp_path: Path, shared_engines: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDLEARN_ENGINE", "local")
    monkeypatch.setenv("SHARDLEARN_WORKERS", str(WORKERS))
    ds = _ingest(csv, tmp_path / "out")
    assert ds.manifest["parsers"] == WORKERS
    assert list(shared_engines.values()) == [get_engine()]  # the env's engine, shared
    monkeypatch.setenv("SHARDLEARN_ENGINE", "spark")
    with pytest.raises(EngineError, match="Unknown engine 'spark'"):
        _ingest(csv, tmp_path / "refused")


def test_the_with_block_wins_over_the_environment(
    csv: Path, tmp_path: Path, shared_engines: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDLEARN_ENGINE", "spark")  # an error, were it read
    with engine("local", workers=WORKERS):
        ds = _ingest(csv, tmp_path / "out")
    assert ds.manifest["parsers"] == WORKERS


def test_an_explicit_engine_wins_over_the_with_block_and_the_environment(
    csv: Path, tmp_path: Path, shared_engines: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDLEARN_ENGINE", "spark")
    with create_engine("local", workers=WORKERS) as chosen, engine("local", workers=1):
        ds = _ingest(csv, tmp_path / "out", engine=chosen)
        one = _ingest(csv, tmp_path / "one")  # the with block's single worker
    assert ds.manifest["parsers"] == WORKERS and one.manifest["parsers"] == 1
    assert _fingerprint(ds) == _fingerprint(one)
