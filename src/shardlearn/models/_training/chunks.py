"""Rows per chunk of a pass over a feature block, sized to stay in cache.

Shared by the loss kernels of the linear models and naive Bayes's per-class sums.
"""

from __future__ import annotations

__all__ = ["CHUNK_BYTES", "MIN_CHUNK_ROWS", "chunk_rows_for"]

# A chunk of about 1 MiB of values stays in L2/L3 (1 MiB L2 per core here) next to its scores and
# residuals, so the second product (R^T X_c) reads the chunk from cache, not from memory.
CHUNK_BYTES = 1024 * 1024
MIN_CHUNK_ROWS = 64


def chunk_rows_for(n_features: int, itemsize: int = 8) -> int:
    """Rows per chunk so that a chunk of ``n_features`` columns fits in cache."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (itemsize * max(1, n_features)))
