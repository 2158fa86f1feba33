"""The package's public surface."""

from __future__ import annotations

import pytest

import shardlearn as sl
from shardlearn._validation import Interval, Options, validate_params
from shardlearn.base import BaseEstimator, clone


class _Toy(BaseEstimator):
    _parameter_constraints = {
        "C": [Interval("float", 0, None, "neither")],
        "kind": [Options(("a", "b"))],
    }

    def __init__(self, C: float = 1.0, kind: str = "a") -> None:
        self.C = C
        self.kind = kind


def test_version_is_exposed() -> None:
    assert sl.__version__.count(".") == 2


def test_unknown_attribute_names_itself() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = sl.no_such_thing


def test_clone_copies_params_not_state() -> None:
    toy = _Toy(C=2.0, kind="b")
    toy.coef_ = 1
    copy = clone(toy)
    assert copy.get_params() == {"C": 2.0, "kind": "b"}
    assert not hasattr(copy, "coef_")


def test_set_params_rejects_unknown_names_with_suggestion() -> None:
    with pytest.raises(ValueError, match="Did you mean 'C'"):
        _Toy().set_params(CC=3)


def test_validation_message_has_one_shape() -> None:
    with pytest.raises(
        ValueError, match=r"The 'C' parameter of _Toy must be a float > 0\. Got -1\."
    ):
        _Toy(C=-1)._validate_params()
    with pytest.raises(ValueError, match=r"The 'kind' parameter of X must be one of 'a', 'b'"):
        validate_params("X", {"kind": "c"}, _Toy._parameter_constraints)


@pytest.mark.parametrize("name", sorted(set(sl.__all__) - {"__version__", "engine"}))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(sl, name).__name__ == name


def test_sl_engine_is_callable_after_the_engine_package_was_imported() -> None:
    import shardlearn.engine as engine_package

    with sl.engine("local", workers=1) as eng:
        assert engine_package.get_engine() is eng


def test_estimators_are_scikit_learn_estimators() -> None:
    import sklearn.base

    toy = _Toy(C=2.0)
    assert isinstance(toy, sklearn.base.BaseEstimator)
    assert sklearn.base.clone(toy).get_params() == {"C": 2.0, "kind": "a"}
    assert repr(toy) == "_Toy(C=2.0)"  # ours: only the changed parameters


def test_expected_failed_checks_merge_along_the_class_hierarchy() -> None:
    class Child(_Toy):
        _sklearn_expected_failures = {"check_b": "the child's reason", "check_a": "overridden"}

    _Toy._sklearn_expected_failures = {"check_a": "the parent's reason"}
    try:
        assert _Toy._expected_failed_checks() == {"check_a": "the parent's reason"}
        assert Child._expected_failed_checks() == {
            "check_a": "overridden",
            "check_b": "the child's reason",
        }
    finally:
        del _Toy._sklearn_expected_failures


def test_importing_the_exceptions_does_not_import_scikit_learn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, shardlearn.exceptions as e; assert 'sklearn' not in sys.modules; "
        "import sklearn.exceptions as s; assert issubclass(e.NotFittedError, s.NotFittedError); "
        "assert issubclass(e.ConvergenceWarning, s.ConvergenceWarning)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
