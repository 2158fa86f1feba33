"""Helpers for the cluster tests: a small, seeded CSV and module-level worker functions."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


def write_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A small binary problem with a numeric and a categorical feature."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(40.0, 12.0, n), 3)
    job = rng.choice(["clerk", "nurse", "pilot", "chef"], n)
    score = age / 10 + 2.0 * (job == "pilot") - (job == "chef") + rng.normal(0, 1, n)
    label = np.where(score > 4.5, "high", "low")
    pacsv.write_csv(pa.table({"age": age, "job": job, "label": label}), path)
    return path


def read_own_shards(state) -> list[dict]:
    """On a worker: read each assigned shard from storage itself and say who read it."""
    out = []
    for shard in state.shards:
        table = shard.read()
        digest = hashlib.sha256(repr(table.to_pydict()).encode()).hexdigest()
        out.append(
            {
                "rank": state.rank,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "node": _node_id(),
                "path": shard.path,
                "rows": table.num_rows,
                "digest": digest,
            }
        )
    return out


def _node_id() -> str | None:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray
        return None
    return None
