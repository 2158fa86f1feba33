"""The one numpy-to-JSON conversion (shardlearn._json) and the places that use it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shardlearn._json import json_default, to_json
from shardlearn.exceptions import ArtifactError
from shardlearn.metrics.report import _json_safe
from shardlearn.models._base import _to_json


def test_nested_numpy_values_become_plain_json():
    value = {1: (np.int32(2), np.array([[0.5, np.nan]])), "b": [np.bool_(True), np.str_("x")]}
    converted = to_json(value)
    assert converted == {"1": [2, [[0.5, converted["1"][1][0][1]]]], "b": [True, "x"]}
    assert math.isnan(converted["1"][1][0][1])
    assert type(converted["b"][0]) is bool and type(converted["1"][0]) is int
    assert to_json([np.float32(np.inf), -np.inf, 1.5], finite=True) == [None, None, 1.5]


def test_other_values_go_to_the_default_or_are_refused():
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        to_json(object())
    assert to_json({"x": {1, 2}}, repr) == {"x": "{1, 2}"}
    with pytest.raises(TypeError):
        json.dumps(object(), default=json_default)


def test_artifacts_keep_their_policy():
    """Artifacts keep other numbers and refuse objects; reports write strict JSON."""
    assert _to_json({"c": 1 + 2j}) == {"c": 1 + 2j}
    with pytest.raises(ArtifactError, match="type object"):
        _to_json([object()])
    assert _json_safe({"auc": np.float64(np.nan), "x": object}) == {"auc": None, "x": repr(object)}


def test_a_numpy_bool_in_a_report_is_a_json_bool():
    """Reports wrote a numpy bool as its repr ('np.True_') before the shared conversion."""
    assert _json_safe({"flag": np.bool_(True)}) == {"flag": True}
