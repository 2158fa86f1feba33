"""Pipelines: a YAML spec of stages compiled into one task graph and run on any engine.

>>> from shardlearn.pipeline import load_spec, run_pipeline

Not run as a test (the loans example generates, ingests and trains on its full data):

>>> result = run_pipeline(load_spec("examples/loans.yaml"))      # doctest: +SKIP
"""

from __future__ import annotations

from shardlearn.pipeline.draw import draw
from shardlearn.pipeline.run import PipelineResult, StageTiming, compile_graph, run_pipeline
from shardlearn.pipeline.spec import (
    STAGE_TYPES,
    PipelineSpec,
    StageSpec,
    load_spec,
    parse_spec,
    spec_json_schema,
)

__all__ = [
    "STAGE_TYPES",
    "PipelineResult",
    "PipelineSpec",
    "StageSpec",
    "StageTiming",
    "compile_graph",
    "draw",
    "load_spec",
    "parse_spec",
    "run_pipeline",
    "spec_json_schema",
]
