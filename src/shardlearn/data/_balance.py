"""How many ranges a file is cut into, and where, so that every parser stays busy.

A plan of ``n`` even ranges on ``p`` parsers takes ``ceil(n / p)`` rounds of parses; when ``n``
is not a multiple of ``p`` the last round leaves parsers idle (7 ranges on 2 parsers: one
idles for a seventh of the parse). :func:`range_count` rounds the count up to a multiple of
the parsers (ranges only get smaller, so memory stays bounded) and :func:`even_bounds` cuts a
file made of units (``.zst`` frames, Parquet row groups) into that many runs of about the same
size. Byte ranges of a plain file are cut by :func:`shardlearn.data._ranges.cut_targets` (then
at the next newline): evenly, except that with several parsers the last round is cut into
smaller pieces, so the parsers finish together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["even_bounds", "range_count"]


def range_count(size: int, range_bytes: int, parsers: int) -> int:
    """Ranges to cut ``size`` bytes into: ``ceil(size / range_bytes)``, and when that is more
    than one, rounded up to a multiple of ``parsers``; the rounding is skipped when it would
    make ranges smaller than half of ``range_bytes`` (fewer ranges than parsers: a parse has
    a fixed cost). A file of one range stays whole."""
    count = -(-size // max(range_bytes, 1))
    if count < 2 or parsers < 2:
        return count
    rounded = -(-count // parsers) * parsers
    return rounded if 2 * size >= rounded * range_bytes else count


def even_bounds(sizes: Sequence[int], count: int) -> list[int]:
    """Where ``count`` runs of consecutive units of ``sizes`` bytes start (unit indexes, from
    0), then ``len(sizes)``: the unit boundary nearest to each ``k / count`` of the bytes, each
    used once (fewer runs when units are coarse). ``count`` of at least the units: one run
    each."""
    if count >= len(sizes):
        return list(range(len(sizes) + 1))
    before = np.cumsum(sizes)[:-1]  # bytes before unit boundary i + 1
    total = int(sum(sizes))
    bounds = [0]
    for k in range(1, count):
        nearest = int(np.argmin(np.abs(before - k * total / count))) + 1
        if nearest > bounds[-1]:
            bounds.append(nearest)
    return [*bounds, len(sizes)]
