"""Chan, Golub & LeVeque's (1979) pairwise merge of (count, mean, M2) summaries.

The one implementation behind every merged mean and variance: GaussianNB's per-class
statistics (models/naive_bayes.py), PCA's centred scatter matrix (models/decomposition.py) and the
numeric preprocessor's scaler statistics (preprocess/numeric.py). Two summaries of disjoint
row sets merge exactly::

    n = na + nb,  delta = mb - ma,  m = ma + delta * nb / n,
    M2 = M2a + M2b + delta^2 * na * nb / n

which, unlike summing squares and subtracting ``n m^2``, does not lose precision when the mean
is large compared with the spread. It sits in the bottom layer (DESIGN §11) so that
``preprocess`` and ``models`` can both use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["merge_moments"]


def merge_moments(a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """Merge two ``(count, mean, M2)`` summaries of disjoint rows into the summary of both.

    Parameters
    ----------
    a, b : tuple of (count, mean, M2)
        ``count`` (a number, or an array broadcasting against ``mean``: per-feature weights),
        ``mean`` (array), and ``M2`` either of ``mean``'s shape (sums of squared deviations,
        feature by feature) or ``mean``'s shape plus its last axis again (the centred scatter
        matrix ``sum (x - m)(x - m)^T``). Where a count is 0 the merged mean is 0.

    Returns
    -------
    tuple of (count, mean, M2)
        The summary of the union, in the same layout. The merge is associative.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    >>> def summary(v):
    ...     return len(v), v.mean(), ((v - v.mean()) ** 2).sum()
    >>> n, mean, m2 = merge_moments(summary(x[:2]), summary(x[2:]))
    >>> n, float(mean), float(m2 / n), float(x.var())
    (5, 4.0, 10.0, 10.0)
    """
    count_a, mean_a, m2_a = a
    count_b, mean_b, m2_b = b
    count = count_a + count_b
    safe = np.where(count > 0, count, 1.0)
    delta = mean_b - mean_a
    mean = np.where(count > 0, mean_a + delta * (count_b / safe), 0.0)
    square = np.multiply.outer(delta, delta) if np.ndim(m2_a) > np.ndim(delta) else delta * delta
    m2 = m2_a + m2_b + square * (count_a * count_b / safe)
    return count, mean, m2
