"""The two exceptions that subclass scikit-learn's, re-exported by :mod:`shardlearn.exceptions`.

Import them from :mod:`shardlearn.exceptions`; they live here so that importing that module does
not import scikit-learn (see its docstring).
"""

from __future__ import annotations

import sklearn.exceptions

from shardlearn.exceptions import ShardlearnError

__all__ = ["ConvergenceWarning", "NotFittedError"]


class NotFittedError(ShardlearnError, sklearn.exceptions.NotFittedError):
    """An estimator or transformer was used before ``fit``.

    Also a ``ValueError`` and an ``AttributeError``, as scikit-learn's ``NotFittedError``.
    """

    __module__ = "shardlearn.exceptions"


class ConvergenceWarning(sklearn.exceptions.ConvergenceWarning):
    """An iterative trainer stopped at ``max_iter`` before meeting its tolerance.

    A ``UserWarning``, and scikit-learn's ``ConvergenceWarning``.
    """

    __module__ = "shardlearn.exceptions"
