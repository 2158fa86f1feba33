"""The end-to-end demo: generated loan applications through the whole loan pipeline.

``shardlearn demo`` (what ``make demo`` runs) writes ``--rows`` loan applications as CSV, then
runs the packaged loan pipeline (``specs/loans.yaml``, also ``examples/loans.yaml``): ingest →
logistic regression, random forest and XGBoost side by side → compare on the test split →
register the best in production → batch predictions.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from shardlearn.pipeline.run import PipelineResult, run_pipeline
from shardlearn.pipeline.spec import PipelineSpec, load_spec

__all__ = ["LOANS_SPEC", "loans_spec", "run_demo"]

LOANS_SPEC = "loans.yaml"


def loans_spec(data: Path, workdir: Path, partitions: int) -> PipelineSpec:
    """The packaged loan pipeline, reading ``data`` and writing under ``workdir``."""
    spec_file = resources.files("shardlearn.pipeline").joinpath("specs", LOANS_SPEC)
    with resources.as_file(spec_file) as path:
        return load_spec(
            path,
            {"data": str(data), "workdir": str(workdir), "partitions": str(partitions)},
        )


def run_demo(
    rows: int, out: Path, seed: int = 0, partitions: int = 8, progress: bool = True
) -> PipelineResult:
    """Generate ``rows`` loan applications into ``out`` and run the loan pipeline on them."""
    from shardlearn.data.demo import write_loans_csv

    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_loans_csv(out / "loans.csv", rows, seed)
    return run_pipeline(loans_spec(csv_path, out / "run", partitions), progress=progress)
