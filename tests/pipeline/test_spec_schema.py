"""The published spec schema is generated from the stage option models, and agrees with the
validator: the committed file is what the models generate, whatever the validator accepts the
schema accepts, and hostile specs give one-line SpecErrors, never another exception."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn._options import option_fields
from shardlearn.exceptions import SpecError
from shardlearn.pipeline import parse_spec, spec_json_schema
from shardlearn.pipeline.options import STAGE_MODELS
from shardlearn.pipeline.schema import generate_schema, main, schema_text
from shardlearn.pipeline.spec import STAGE_TYPES


def test_the_committed_schema_is_the_generated_one() -> None:
    assert spec_json_schema() == generate_schema(), (
        "src/shardlearn/pipeline/spec.schema.json is stale: regenerate it with "
        "`python -m shardlearn.pipeline.schema` and commit it"
    )
    assert main(["--check"]) == 0
    assert schema_text().endswith("}\n")


def test_every_stage_model_declares_its_own_type_and_its_keys() -> None:
    for kind, model in STAGE_MODELS.items():
        assert model.model_fields["type"].annotation.__args__ == (kind,)
        keys = set(option_fields(model))
        assert set(STAGE_TYPES[kind]["keys"]) < keys
        assert set(model.refs) <= keys


def test_the_schema_takes_a_variable_wherever_a_key_takes_no_string() -> None:
    document = {
        "vars": {"n": 4},
        "workers": "${n}",
        "stages": {"d": {"type": "ingest", "source": "a.csv", "label": "y",
                         "partitions": "${n}", "trim": "${t}", "retries": "${n}"}},
    }  # fmt: skip
    jsonschema.validate(document, spec_json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "workers": "four"}, spec_json_schema())


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"type": "train", "dataset": "d.csv", "model": "logistc"},
         r"stage 's'\.model: Unknown model 'logistc'\. Did you mean 'logistic'\?"),
        ({"type": "search", "dataset": "d.csv", "models": ["logistic"], "strategy": "rnd"},
         r"stage 's'\.strategy: Unknown search strategy 'rnd'"),
        ({"type": "search", "dataset": "d.csv", "models": ["logistic"], "cv": 1},
         r"stage 's'\.cv: expected an integer >= 2\. Got 1\."),
        ({"type": "evaluate", "model": "m.d", "dataset": "d.d", "split": "tset"},
         r"stage 's'\.split: expected one of 'train', 'valid', 'test'\. Got 'tset'\."),
        ({"type": "export", "model": "m.d", "format": "pmml"},
         r"stage 's'\.format: expected 'onnx'\. Got 'pmml'\."),
        ({"type": "ingest", "source": "a.csv", "label": "y", "kinds": {"zip": "categorial"}},
         r"stage 's'\.kinds: expected a mapping of names to one of 'numeric', 'categorical'"),
        ({"type": "ingest", "source": "a.csv", "label": "y", "strategy": "roundrobin"},
         r"stage 's'\.strategy: Unknown partitioning strategy 'roundrobin'"),
        ({"type": "ingest", "source": "a.csv", "label": "y", "split": "0.5,0.2"},
         r"stage 's'\.split: The split fractions \[0\.5, 0\.2\] must sum to 1"),
        ({"type": "predict", "model": "m.d", "input": "a.csv", "delimiter": ";;"},
         r"stage 's'\.delimiter: expected a single character\. Got ';;'\."),
        ({"type": "train", "dataset": "d.csv", "model": "logistic", "resources": {"cpus": -1}},
         r"stage 's'\.resources\.cpus: expected a number >= 0\. Got -1\."),
        ({"type": "train", "dataset": "d.csv", "model": "random_forest",
          "params": {"max_dept": 3}},
         r"stage 's'\.params: Unknown parameter of RandomForestClassifier 'max_dept'\. Did you "
         r"mean 'max_depth'\?"),
        ({"type": "train", "dataset": "d.csv", "model": "random_forest",
          "params": {"n_estimators": 0}},
         r"stage 's'\.params: The 'n_estimators' parameter of RandomForestClassifier must be an "
         r"int >= 1\. Got 0\."),
        ({"type": "train", "dataset": "d.csv", "model": "logistic", "workers": 2},
         r"stage 's': Unknown key for a train stage 'workers'"),
    ],
)  # fmt: skip
def test_stage_values_are_checked_when_the_spec_is_read(stage: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"stages": {"s": stage}})


def test_an_echoed_value_is_cut_short() -> None:
    stage = {"type": "ingest", "source": "a.csv", "label": "y", "partitions": "9" * 100_000}
    with pytest.raises(SpecError) as caught:
        parse_spec({"stages": {"s": stage}})
    assert len(str(caught.value)) < 200 and str(caught.value).endswith("...")


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.sampled_from([["a.csv"], ["logistic"], [0.5, 0.5], {"cpus": 1}, {"zip": "text"}])
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(
        [
            "",
            "a.csv",
            "data",
            "y",
            "0.8,0.1,0.1",
            "random",
            "logistic",
            "test",
            "onnx",
            ",",
            "csv",
            "${n}",
            "hash:id",
            "x/y.d",
        ]
    )  # fmt: skip
    | st.text(max_size=6)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=8,
)
_KEYS = sorted({k for model in STAGE_MODELS.values() for k in option_fields(model)})


# A valid stage of each type, which the fuzzer then changes (a key or two, or its type).
_VALID = {
    "ingest": {"source": "a.csv", "label": "y"},
    "train": {"dataset": "d.csv", "model": "logistic"},
    "search": {"dataset": "d.csv", "models": ["logistic"]},
    "evaluate": {"model": "m.d", "dataset": "d.d"},
    "compare": {"models": ["m.d"], "dataset": "d.d"},
    "register": {"model": "m.d", "name": "n"},
    "predict": {"model": "m.d", "input": "a.csv"},
    "export": {"model": "m.d"},
}


@st.composite
def _stages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(STAGE_TYPES)))
    stage: dict[Any, Any] = {"type": kind, **_VALID[kind]}
    keys = [k for k in option_fields(STAGE_MODELS[kind]) if k != "type"]
    for key in draw(st.lists(st.sampled_from([*keys, *_KEYS, "bogus"]), max_size=2, unique=True)):
        stage[key] = draw(_VALUES)
    if draw(st.integers(0, 9)) == 0:
        stage["type"] = draw(st.sampled_from(["trian", 3, None, [], {}, *STAGE_TYPES]))
    return stage


# No deadline: the first example that trains a model imports the model catalogue.
@settings(deadline=None, max_examples=200)
@given(stages=st.dictionaries(st.sampled_from(["a", "b", "data", "1x"]), _stages(), max_size=3),
       top=st.dictionaries(st.sampled_from(["name", "workers", "engine", "workdir", "vars"]),
                           _SCALARS, max_size=2))  # fmt: skip
def test_fuzzed_specs_give_a_spec_or_one_line_spec_error(
    stages: dict[str, Any], top: dict[str, Any]
) -> None:
    document = {**top, "stages": stages}
    try:
        parse_spec(document)
    except SpecError as error:
        assert "\n" not in str(error) and str(error)
        return
    # What the validator accepts (no ${variables} left), the published schema accepts too.
    jsonschema.validate(document, spec_json_schema())
