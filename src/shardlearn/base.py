"""The estimator contract and the mergeable-statistics protocol.

Estimators follow scikit-learn's contract: ``__init__`` stores keyword arguments unchanged,
``fit`` validates and returns ``self``, fitted attributes end in ``_``. ``get_params``,
``set_params`` and :func:`clone` work from the ``__init__`` signature alone.

:class:`BaseEstimator` *is* a scikit-learn estimator (it subclasses
``sklearn.base.BaseEstimator``), so scikit-learn's tooling -- ``clone``, ``Pipeline``,
``GridSearchCV``, ``cross_val_score``, tags, ``check_estimator`` -- accepts every shardlearn
estimator. What stays ours: the parameter validation and its one message format
(``_parameter_constraints``, see :mod:`shardlearn._validation`), ``set_params``'s suggestions
for misspelt names, and the short ``repr``. scikit-learn's check suite is run on every
estimator; the checks a class cannot pass are declared on the class in
``_sklearn_expected_failures`` (check name -> reason) and collected along the class hierarchy by
:meth:`BaseEstimator._expected_failed_checks`. Nothing scikit-learn adds lives in ``vars(self)``,
so the artifact code, which stores fitted attributes (names ending in ``_``), sees only ours.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

import sklearn.base

from shardlearn._validation import unknown_name_message, validate_params
from shardlearn.exceptions import NotFittedError

__all__ = ["BaseEstimator", "Mergeable", "check_is_fitted", "clone"]

M = TypeVar("M", bound="Mergeable")


@runtime_checkable
class Mergeable(Protocol):
    """Statistics that can be computed per shard and combined.

    ``merge`` must be associative: ``a.merge(b).merge(c) == a.merge(b.merge(c))``, and merging
    the per-shard results must equal one pass over the concatenated data.
    """

    def merge(self, other: Self) -> Self: ...


class BaseEstimator(sklearn.base.BaseEstimator):
    """Base class providing ``get_params``/``set_params`` and parameter validation.

    A scikit-learn estimator: mixins (classifier, transformer) go on its left, as in
    scikit-learn.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {}
    # scikit-learn checks this class cannot pass: check name -> why (see _expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = {}

    @classmethod
    def _expected_failed_checks(cls) -> dict[str, str]:
        """scikit-learn ``check_estimator`` checks this class is known to fail, with the reason.

        The ``_sklearn_expected_failures`` dicts of the class and its bases, a subclass's entry
        winning; pass it to ``parametrize_with_checks(expected_failed_checks=...)``.
        """
        failures: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            failures.update(vars(klass).get("_sklearn_expected_failures", {}))
        return failures

    @classmethod
    def _get_param_names(cls) -> list[str]:
        # scikit-learn's version refuses an __init__ with *args (our Pipeline's steps).
        return cls._param_names()

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator; with ``deep``, nested ones as ``step__param``."""
        params = {name: getattr(self, name) for name in self._param_names()}
        if deep:
            for name, value in list(params.items()):
                if hasattr(value, "get_params") and not isinstance(value, type):
                    for sub, sub_value in value.get_params(deep=True).items():
                        params[f"{name}__{sub}"] = sub_value
        return params

    def set_params(self, **params: Any) -> Self:
        """Set parameters; unknown names raise ``ValueError`` listing the valid ones."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    unknown_name_message(f"parameter of {type(self).__name__}", name, valid)
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def _validate_params(self) -> None:
        validate_params(
            type(self).__name__, self.get_params(deep=False), self._parameter_constraints
        )

    def __repr__(self) -> str:
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params(deep=False).items()
            if name not in defaults or not _same(defaults[name], value)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - arrays and odd objects compare ambiguously
        return a is b


def clone(estimator: Any) -> Any:
    """A new unfitted estimator with the same parameters (deep-copied).

    scikit-learn's ``clone``; lists and tuples are cloned item by item and any other
    non-estimator value is deep-copied.
    """
    return sklearn.base.clone(estimator, safe=False)


def check_is_fitted(estimator: Any, attribute: str = "classes_") -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} is not fitted yet. Call 'fit' before using it."
        )
