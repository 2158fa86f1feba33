"""Pipeline spec validation: every error names the stage and the key, with a suggestion."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from shardlearn.engine import Resources
from shardlearn.exceptions import SpecError
from shardlearn.pipeline import compile_graph, load_spec, parse_spec, spec_json_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def minimal(**stages: dict) -> dict:
    base = {
        "data": {"type": "ingest", "source": "loans.csv", "label": "default"},
        "lr": {"type": "train", "dataset": "data", "model": "logistic"},
    }
    base.update(stages)
    return {"name": "t", "stages": base}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": {"type": "trian", "dataset": "data", "model": "logistic"}},
         r"stage 'lr'\.type: Unknown stage type 'trian'\. Did you mean 'train'\?"),
        ({"lr": {"type": "train", "dataset": "data", "modle": "logistic"}},
         r"stage 'lr': Unknown key for a train stage 'modle'\. Did you mean 'model'\?"),
        ({"lr": {"type": "train", "dataset": "data"}},
         r"stage 'lr': missing key 'model'"),
        ({"lr": {"type": "train", "dataset": "dta", "model": "logistic"}},
         r"stage 'lr'\.dataset: 'dta' is neither a stage .* Did you mean 'data'\?"),
        ({"lr": {"type": "train", "dataset": "data", "model": "logistic", "depends_on": ["nope"]}},
         r"stage 'lr'\.depends_on: Unknown stage 'nope'"),
        ({"lr": {"type": "train", "dataset": "data", "model": "logistic", "retries": -1}},
         r"stage 'lr'\.retries: expected an integer >= 0"),
        ({"lr": {"type": "train", "dataset": "data", "model": "logistic",
                 "resources": {"gpu": 1}}},
         r"stage 'lr'\.resources: Unknown resource 'gpu'\. Did you mean 'gpus'\?"),
        ({"lr": {"type": "train", "dataset": "data", "model": "logistic", "depends_on": "ev"},
          "ev": {"type": "evaluate", "model": "lr", "dataset": "data"}},
         r"Cycle detected between stages: (lr -> ev -> lr|ev -> lr -> ev)"),
    ],
)  # fmt: skip
def test_spec_errors_name_stage_key_and_suggest(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(minimal(**change))


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(SpecError, match=r"Unknown top-level key 'stage'\. Did you mean 'stages'"):
        parse_spec({"stage": {}})


def test_variables_are_substituted_and_set_overrides_keep_types() -> None:
    raw = minimal()
    raw["vars"] = {"rows": 10, "file": "a.csv"}
    raw["stages"]["data"]["source"] = "${file}"
    raw["stages"]["data"]["partitions"] = "${rows}"
    spec = parse_spec(raw, overrides={"rows": "4"})
    assert spec.stages["data"].options["source"] == "a.csv"
    assert spec.stages["data"].options["partitions"] == 4


def test_an_undefined_variable_names_where_and_how_to_set_it() -> None:
    raw = minimal()
    raw["stages"]["data"]["source"] = "data/${missing}.csv"
    with pytest.raises(SpecError, match=r"pipeline\.stages\.data\.source: .*--set missing=VALUE"):
        parse_spec(raw)


def test_compiled_graph_has_one_node_per_stage_and_the_spec_edges() -> None:
    spec = load_spec(EXAMPLES / "loans.yaml")
    graph = compile_graph(spec, Resources(cpus=2))
    assert list(graph.tasks) == list(spec.stages)
    edges = {(dep, key) for key, task in graph.tasks.items() for dep in task.dependencies}
    assert edges == {
        ("data", "logistic"), ("data", "forest"), ("data", "xgboost"),
        ("logistic", "leaderboard"), ("forest", "leaderboard"), ("xgboost", "leaderboard"),
        ("data", "leaderboard"), ("leaderboard", "release"), ("release", "scores"),
        ("data", "scores"),
    }  # fmt: skip
    assert graph.tasks["forest"].resources.cpus == 1


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_passes_the_validator_and_the_json_schema(example: str) -> None:
    load_spec(EXAMPLES / example)
    document = yaml.safe_load((EXAMPLES / example).read_text())
    jsonschema.validate(document, spec_json_schema())


def test_json_schema_rejects_what_the_validator_rejects() -> None:
    document = minimal(lr={"type": "train", "dataset": "data", "modle": "x", "model": "y"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, spec_json_schema())
    json.dumps(spec_json_schema())  # serialisable for `shardlearn run --schema`
