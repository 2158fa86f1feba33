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


# Issue #21 finding 10: 343 bytes, 7 alias levels, 9**7 (4.8 million) values once expanded.
BILLION_LAUGHS = """\
name: lol
vars:
  a: &a [l,l,l,l,l,l,l,l,l]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
stages:
  t: {type: train, dataset: d.csv, model: logistic, params: {C: *g}}
"""


def test_alias_expansion_spec_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) == 343
    with pytest.raises(SpecError, match=r"laughs\.yaml, line 3: YAML anchors and aliases"):
        load_spec(path)


def test_merge_keys_and_set_values_with_aliases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "base: &train {type: train, dataset: d.csv}\nstages:\n  lr: {<<: *train, model: logistic}\n"
    )
    with pytest.raises(SpecError, match=r"merge\.yaml, line 1: YAML anchors"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"--set rows, line 1: YAML anchors"):
        parse_spec(minimal(), {"rows": "&x [1, *x]"})


def test_every_yaml_file_reader_refuses_aliases(tmp_path: Path) -> None:
    from shardlearn.data.schema import load_schema_file
    from shardlearn.exceptions import SchemaError
    from shardlearn.preprocess import Preprocessor
    from shardlearn.search.space import load_space

    path = tmp_path / "aliased.yaml"
    path.write_text("a: &x [1, 2]\nb: *x\n")
    readers = [(load_space, SpecError), (load_schema_file, SchemaError),
               (Preprocessor.from_spec, SpecError)]  # fmt: skip
    for read, error in readers:
        with pytest.raises(error, match=r"aliased\.yaml'?, line 1: YAML anchors and aliases"):
            read(path)


def test_yaml_errors_are_one_line_and_nesting_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [1,\n")
    with pytest.raises(SpecError, match=r"bad\.yaml is not valid YAML: .*\(line 2") as caught:
        load_spec(path)
    assert "\n" not in str(caught.value)
    path.write_text("stages: " + "[" * 10_000 + "]" * 10_000)
    with pytest.raises(SpecError, match=r"line 1: nested more than 64 levels deep"):
        load_spec(path)


def test_a_stage_name_with_a_trailing_newline_is_refused() -> None:
    raw = minimal()
    raw["stages"]["lr\n"] = raw["stages"].pop("lr")
    with pytest.raises(SpecError, match=r"stage 'lr\\n': a stage name starts with a letter"):
        parse_spec(raw)
