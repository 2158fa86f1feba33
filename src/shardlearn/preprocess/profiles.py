"""Preprocessing profiles: what feature matrix a model family can use, and a memory check.

Every estimator declares, as the class attribute ``_preprocess_profile``, one of
:data:`ESTIMATOR_PROFILES`:

* ``"wide_sparse"`` -- linear models, SGD, multinomial naive Bayes: their cost grows with the
  non-zeros, not the columns, so text keeps 2**18 hashed terms per column (few collisions);
* ``"compact"`` -- trees, forests, boosting, Gaussian naive Bayes: their cost grows with the
  columns (split search or per-feature statistics), so text gets :data:`COMPACT_TEXT_FEATURES`
  hashed terms and hashed categoricals :data:`COMPACT_HASH_FEATURES`;
* ``"dense"`` -- neural nets, KMeans, PCA: compact features too, and the fit densifies the
  feature matrix, so a fit whose dense matrix would exceed the memory budget is refused
  before anything is read (:func:`dense_overflow`, :meth:`Preprocessor.check_memory`).

The attribute is read through the allow-list (:func:`estimator_profile`); an estimator that
declares nothing gets ``"compact"`` -- the one that is never pathologically slow. The profile
changes only the *defaults*: an option a spec sets (``n_features: 4096``) is kept as written.
"""

from __future__ import annotations

import os
from typing import Any

from shardlearn._validation import unknown_name_message

__all__ = [
    "COMPACT_HASH_FEATURES",
    "COMPACT_TEXT_FEATURES",
    "ESTIMATOR_PROFILES",
    "MEMORY_BUDGET_ENV",
    "PREPROCESSOR_PROFILES",
    "dense_overflow",
    "format_bytes",
    "estimator_profile",
    "memory_budget",
    "preprocessor_profile",
]

#: Hashed terms per text column for trees and nets: enough for the frequent words that carry
#: signal, few enough that split search stays as cheap as on the other columns (the demo's
#: loans: 10 s instead of >12 min for XGBoost at 2**18).
COMPACT_TEXT_FEATURES = 256
#: Hashed buckets per hashed categorical column in the compact profile.
COMPACT_HASH_FEATURES = 256
ESTIMATOR_PROFILES = ("wide_sparse", "compact", "dense")
#: ``auto`` is resolved to the estimator's profile when a Pipeline fits (else wide_sparse).
PREPROCESSOR_PROFILES = ("auto", "wide_sparse", "compact")
DEFAULT_ESTIMATOR_PROFILE = "compact"
MEMORY_BUDGET_ENV = "SHARDLEARN_MEMORY_BUDGET"
#: Bytes per value of a densified feature matrix: float64 (KMeans, PCA) or a float32 block
#: plus the float32 copy torch trains from.
DENSE_BYTES_PER_VALUE = 8

#: Per transformer class name: the option defaults of the compact profile.
COMPACT_DEFAULTS: dict[str, dict[str, Any]] = {
    "TextVectorizer": {"n_features": COMPACT_TEXT_FEATURES},
    "HashingEncoder": {"n_features": COMPACT_HASH_FEATURES},
}


def estimator_profile(estimator: Any) -> str:
    """The declared profile of ``estimator`` (a Pipeline's is its final step's).

    Raises ValueError for a value outside :data:`ESTIMATOR_PROFILES`.
    """
    final = getattr(estimator, "estimator", None)
    if final is not None and hasattr(estimator, "preprocessor"):
        estimator = final
    profile = getattr(estimator, "_preprocess_profile", DEFAULT_ESTIMATOR_PROFILE)
    if profile not in ESTIMATOR_PROFILES:
        raise ValueError(
            f"{type(estimator).__name__}: "
            + unknown_name_message("preprocessing profile", str(profile), ESTIMATOR_PROFILES)
        )
    return str(profile)


def preprocessor_profile(estimator: Any) -> str:
    """The Preprocessor ``profile`` that suits ``estimator`` (``dense`` needs compact)."""
    profile = estimator_profile(estimator)
    return "wide_sparse" if profile == "wide_sparse" else "compact"


def profile_defaults(profile: str, transformer: str) -> dict[str, Any]:
    """Option defaults of ``profile`` for a transformer class name (``auto`` = wide_sparse)."""
    return dict(COMPACT_DEFAULTS.get(transformer, {})) if profile == "compact" else {}


def memory_budget() -> int:
    """Bytes a dense feature matrix may take: ``$SHARDLEARN_MEMORY_BUDGET``, else the memory
    available now."""
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(
                f"${MEMORY_BUDGET_ENV} must be a number of bytes, e.g. 8e9; got {env!r}."
            ) from None
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(nbytes: float) -> str:
    """``1.5 GiB``, ``512 bytes``."""
    if nbytes < 1024:
        return f"{nbytes:,.0f} bytes"
    for unit in ("KiB", "MiB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:,.1f} GiB"


def dense_overflow(estimator: Any, features: int, rows: int, budget: int | None = None) -> str:
    """Why a fit of ``estimator`` cannot densify ``rows x features``, or "" when it can.

    Only a ``"dense"``-profile estimator densifies; its matrix takes
    ``rows * features * DENSE_BYTES_PER_VALUE`` bytes, compared with ``budget`` (default
    :func:`memory_budget`).
    """
    if estimator_profile(estimator) != "dense":
        return ""
    needed = rows * features * DENSE_BYTES_PER_VALUE
    budget = memory_budget() if budget is None else int(budget)
    if needed <= budget:
        return ""
    final = getattr(estimator, "estimator", None) or estimator
    return (
        f"{type(final).__name__} densifies its features: {rows:,} rows x {features:,} features "
        f"x {DENSE_BYTES_PER_VALUE} bytes = {format_bytes(needed)}, more than the memory budget "
        f"of {format_bytes(budget)} (${MEMORY_BUDGET_ENV})"
    )
