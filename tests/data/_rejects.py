"""What an ingest rejected, as the data tests compare it."""

from __future__ import annotations

from shardlearn.data import Dataset


def rejects(ds: Dataset) -> list[tuple[int, str]]:
    """(line, reason) of every reject, by line (the file is in processing order)."""
    table = ds.read_rejects()
    if table is None:
        return []
    return sorted(zip(table["line"].to_pylist(), table["reason"].to_pylist(), strict=True))
