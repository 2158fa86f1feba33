"""Search spaces: distributions, grids, and their validation against a model's parameters.

A space maps parameter names to one of

- a distribution: :func:`loguniform`, :func:`uniform`, :func:`randint`, :func:`choice`;
- a list of values (a grid axis; sampled uniformly by random search);
- a scalar (a fixed value).

One search may span several model types: a space is then keyed by CLI model name
(``{"logistic": {...}, "xgboost": {...}}``). In YAML a distribution is a one-key mapping::

    logistic:
      C: {loguniform: [0.001, 100]}
      class_weight: [null, balanced]
    xgboost:
      max_depth: {randint: [3, 12]}
      learning_rate: {loguniform: [0.01, 0.3]}
      n_estimators: 200

Random sampling goes through scikit-learn's ``ParameterSampler`` with the equivalent
``scipy.stats`` distributions, so a seeded random search draws exactly the candidates of a
``RandomizedSearchCV`` with the same ``random_state``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardlearn._validation import unknown_name_message
from shardlearn.exceptions import SpecError

__all__ = [
    "Distribution",
    "ModelSpace",
    "choice",
    "load_space",
    "loguniform",
    "parse_space",
    "randint",
    "uniform",
]


@dataclass(frozen=True)
class Distribution:
    """A one-dimensional distribution of a hyperparameter (build it with the helpers below)."""

    kind: str  # "loguniform", "uniform", "randint", "choice"
    args: tuple

    def to_scipy(self) -> Any:
        """The equivalent ``scipy.stats`` distribution (a list for ``choice``)."""
        from scipy import stats

        if self.kind == "loguniform":
            return stats.loguniform(*self.args)
        if self.kind == "uniform":
            low, high = self.args
            return stats.uniform(low, high - low)
        if self.kind == "randint":
            return stats.randint(*self.args)
        return list(self.args[0])

    def to_optuna(self) -> Any:
        """The equivalent Optuna distribution."""
        from optuna import distributions as od

        if self.kind == "loguniform":
            low, high = self.args
            return od.FloatDistribution(low, high, log=True)
        if self.kind == "uniform":
            low, high = self.args
            return od.FloatDistribution(low, high)
        if self.kind == "randint":
            return od.IntDistribution(self.args[0], self.args[1] - 1)
        return od.CategoricalDistribution(list(self.args[0]))

    def grid(self) -> list[Any]:
        """Grid values: only ``choice`` and small ``randint`` ranges have any."""
        if self.kind == "choice":
            return list(self.args[0])
        if self.kind == "randint" and self.args[1] - self.args[0] <= MAX_INT_GRID:
            return list(range(*self.args))
        raise SpecError(
            f"Grid search needs a list of values, not {self!r}; give the values as a list "
            "or use --strategy random/halving/asha/tpe."
        )

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.args))})"


#: randint ranges up to this size expand to a grid axis; wider ones must be lists.
MAX_INT_GRID = 32


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{what} must be a finite number. Got {value!r}.")
    return float(value)


def loguniform(low: float, high: float) -> Distribution:
    """Log-uniform on ``[low, high]`` (both > 0), e.g. ``loguniform(1e-3, 1e2)`` for ``C``."""
    low, high = _number(low, "loguniform low"), _number(high, "loguniform high")
    if not 0 < low < high:
        raise SpecError(f"loguniform needs 0 < low < high. Got ({low}, {high}).")
    return Distribution("loguniform", (low, high))


def uniform(low: float, high: float) -> Distribution:
    """Uniform on ``[low, high]``."""
    low, high = _number(low, "uniform low"), _number(high, "uniform high")
    if not low < high:
        raise SpecError(f"uniform needs low < high. Got ({low}, {high}).")
    return Distribution("uniform", (low, high))


def randint(low: int, high: int) -> Distribution:
    """Integers ``low <= x < high`` (``scipy.stats.randint``'s convention)."""
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"randint bounds must be integers. Got ({low!r}, {high!r}).")
    if not low < high:
        raise SpecError(f"randint needs low < high (high is excluded). Got ({low}, {high}).")
    return Distribution("randint", (low, high))


def choice(values: Any) -> Distribution:
    """One of ``values`` (a non-empty list), each equally likely."""
    values = list(values) if isinstance(values, list | tuple) else None
    if not values:
        raise SpecError(f"choice needs a non-empty list of values. Got {values!r}.")
    return Distribution("choice", (tuple(values),))


_YAML_KINDS: dict[str, Callable[..., Distribution]] = {
    "loguniform": loguniform,
    "uniform": uniform,
    "randint": randint,
    "choice": choice,
}


def _parse_value(name: str, value: Any) -> Any:
    """A YAML value -> Distribution, list (grid axis) or fixed scalar."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in _YAML_KINDS:
            raise SpecError(
                f"Parameter {name!r}: a distribution is a one-key mapping such as "
                f"{{loguniform: [0.001, 100]}}; the kinds are {', '.join(_YAML_KINDS)}. "
                f"Got {dict(value)!r}."
            )
        kind, args = next(iter(value.items()))
        if kind == "choice":
            return choice(args)
        if not isinstance(args, list | tuple) or len(args) != 2:
            raise SpecError(f"Parameter {name!r}: {kind} takes [low, high]. Got {args!r}.")
        return _YAML_KINDS[kind](*args)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) and not value:
        raise SpecError(f"Parameter {name!r}: an empty list of values.")
    return value


@dataclass
class ModelSpace:
    """The space of one model type: CLI model name and ``{param: Distribution|list|value}``."""

    model: str
    params: dict[str, Any]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the grid axes (scikit-learn's ``ParameterGrid`` order)."""
        from sklearn.model_selection import ParameterGrid

        axes = {name: self._axis(name, v) for name, v in self.params.items()}
        return [dict(p) for p in ParameterGrid(axes)] if axes else [{}]

    @staticmethod
    def _axis(name: str, value: Any) -> list[Any]:
        if isinstance(value, Distribution):
            return value.grid()
        return value if isinstance(value, list) else [value]

    def scipy_space(self) -> dict[str, Any]:
        """``param_distributions`` for scikit-learn's ``ParameterSampler``."""
        return {
            name: v.to_scipy() if isinstance(v, Distribution) else self._axis(name, v)
            for name, v in self.params.items()
        }

    def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` candidates, exactly those of ``RandomizedSearchCV(random_state=seed)``."""
        from sklearn.model_selection import ParameterSampler

        if not self.params:
            return [{} for _ in range(n)]
        space = self.scipy_space()
        if all(isinstance(v, list) for v in space.values()):
            n = min(n, math.prod(len(v) for v in space.values()))
        return [plain(p) for p in ParameterSampler(space, n, random_state=seed)]


def plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Numpy scalars -> Python scalars, so trial parameters are JSON-able."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[key] = value.item() if hasattr(value, "item") and not isinstance(value, list) else value
    return out


def _check_names(model: str, params: Mapping[str, Any]) -> None:
    from shardlearn.models import model_class

    try:
        cls = model_class(model)
    except ValueError as error:
        raise SpecError(str(error)) from None
    valid = cls._param_names()
    for name in params:
        if name not in valid:
            raise SpecError(
                f"Search space for {model!r} ({cls.__name__}): "
                + unknown_name_message("parameter", name, valid)
            )


def _keyed_by_model(space: dict[str, Any], models: list[str] | None) -> bool:
    """Whether ``space`` is keyed by model name: every key names a model of the catalogue."""
    if not space or models is None:
        return False
    import shardlearn.models  # noqa: F401  (fills the catalogue)
    from shardlearn.models import MODELS

    return all(k in models or k in MODELS for k in space)


def parse_space(
    space: Mapping[str, Any] | None,
    models: list[str] | None,
    *,
    validate: bool = True,
    notes: list[str] | None = None,
) -> list[ModelSpace]:
    """Turn a Python or YAML-loaded space into one :class:`ModelSpace` per model.

    Parameters
    ----------
    space : dict or None
        Flat ``{param: value}`` (one model, or shared by every model), or keyed by model name.
        A keyed space may hold blocks for models not searched (one space file for several
        searches): they are skipped, each with a note.
    models : list of str or None
        CLI model names; ``None`` for a plain objective function (no validation of names).
    validate : bool, default=True
        Check every parameter name against the model's parameters.
    notes : list of str, optional
        Receives one line per skipped block.
    """
    space = dict(space or {})
    if models is not None and not models:
        raise SpecError("A search needs at least one model, e.g. models=['logistic'].")
    names = list(models) if models else [""]
    keyed = _keyed_by_model(space, models)
    skipped = [k for k in space if keyed and k not in names]
    if skipped and notes is not None:
        notes.extend(
            f"space: the block for {k!r} is ignored (not among the searched models: "
            f"{', '.join(names)})"
            for k in skipped
        )
    out = []
    for name in names:
        raw = space.get(name, {}) if keyed else space
        if not isinstance(raw, Mapping):
            raise SpecError(f"The space of model {name!r} must be a mapping. Got {raw!r}.")
        params = {str(k): _parse_value(str(k), v) for k, v in raw.items()}
        if validate and models is not None:
            _check_names(name, params)
        out.append(ModelSpace(name, params))
    return out


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a YAML space file (see the module docstring) into a dict for :func:`parse_space`."""
    from shardlearn._yaml import read_yaml

    loaded = read_yaml(path, f"search space {str(path)!r}", SpecError)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SpecError(f"The search space {str(path)!r} must be a YAML mapping of parameters.")
    return loaded


def grid_size(spaces: list[ModelSpace]) -> int:
    """How many candidates a grid search over ``spaces`` has."""
    return sum(len(s.grid()) for s in spaces)


def interleave(lists: list[list[Any]]) -> list[Any]:
    """Round-robin merge, so a multi-model search tries every model early."""
    return [x for group in itertools.zip_longest(*lists) for x in group if x is not None]
