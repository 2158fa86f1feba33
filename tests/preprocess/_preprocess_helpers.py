"""Shared helpers for the preprocessing tests: splitting tables into shards, merging fits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def split_rows(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    """``table`` cut at the sorted, de-duplicated row positions ``cuts`` (empty pieces kept)."""
    bounds = [0, *sorted(min(max(c, 0), table.num_rows) for c in cuts), table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def fit_merged(make, pieces: list[pa.Table]):
    """One partial fit per piece, merged left to right, finalized."""
    parts = [make().partial_fit(piece) for piece in pieces]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    return merged.finalize()


def assert_state_close(a, b, rtol: float = 1e-9) -> None:
    meta_a, arrays_a = a.get_state()
    meta_b, arrays_b = b.get_state()
    # Arrow type names may differ between a dataset's schema and the same data read back
    # (Parquet stores timestamp[s] as timestamp[ms]); the fitted statistics may not.
    meta_a.pop("input_schema", None)
    meta_b.pop("input_schema", None)
    assert meta_a == meta_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_allclose(arrays_a[name], arrays_b[name], rtol=rtol, atol=1e-12)
