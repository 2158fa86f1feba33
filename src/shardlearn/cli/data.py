"""Dataset commands: ``demo``, ``ingest``, ``describe``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from shardlearn.cli._common import (
    EngineOption,
    WorkersOption,
    console,
    engine_context,
    fail,
    labelled,
    print_table,
)
from shardlearn.cli._options import model_options
from shardlearn.data.options import CALL_ONLY, CLI_SETS, IngestOptions

DEMO_ROWS = 1_000_000
DEMO_EPILOG = "Example: shardlearn demo --rows 200000 --out demo-output --workers 2"
INGEST_EPILOG = (
    "Example: shardlearn ingest 'data/loans-*.csv.gz' --label default --out data/loans "
    "--partitions 16 --strategy stratified --split 0.8,0.1,0.1  (add --allow-unlabeled to keep "
    "rows without a label in an 'unlabeled' split, for self-training). Without --label: "
    "shardlearn ingest points.csv --out data/points  (a dataset without a label, for "
    "train --model kmeans|pca)"
)
NO_LABEL_USE = "a dataset for clustering and PCA: train --model kmeans|pca"
DESCRIBE_EPILOG = "Example: shardlearn describe data/loans --verify"


def _unlabeled_note(m: dict[str, Any]) -> str:
    unlabeled = int(m.get("rows_unlabeled", 0))
    return f" (of which unlabeled {unlabeled:,})" if unlabeled else ""


def _parsers_note(m: dict[str, Any]) -> str:
    if "parsers" not in m:  # a dataset written before parallel ingest, or write_dataset
        return ""
    parsers, ranges = int(m["parsers"]), int(m["ranges"])
    note = f"; parsed by {parsers} parser{'s' if parsers != 1 else ''} ({ranges:,} ranges)"
    nodes = m.get("nodes") or {}  # on the ray engine: rows read per node
    if nodes:
        rows = ", ".join(f"{node[:8]} {count:,}" for node, count in nodes.items())
        note += f" on {len(nodes)} Ray node{'s' if len(nodes) != 1 else ''} (rows: {rows})"
    return note


def _ingest_summary(ds: Any) -> None:
    m = ds.manifest
    console.print(
        Text.assemble(
            (str(ds.uri), "bold"),
            f": rows_read={m['rows_read']:,} = rows_written={m['rows_written']:,}"
            f"{_unlabeled_note(m)} + rows_rejected={m['rows_rejected']:,}",
            _parsers_note(m),
        ),
        highlight=False,
        soft_wrap=True,
    )
    table = Table("split", "shards", "rows", *[str(c) for c in ds.classes][:8], box=None)
    for split in ds.splits:
        counts = ds.class_counts(split)
        table.add_row(
            split,
            str(len(ds.shards(split))),
            f"{ds.num_rows(split):,}",
            *[f"{counts.get(str(c), 0):,}" for c in ds.classes][:8],
        )
    if ds.has_unlabeled:
        table.add_row(
            "unlabeled",
            str(len(ds.shards("unlabeled"))),
            f"{ds.rows_unlabeled:,}",
            *["-" for _ in ds.classes][:8],
        )
    print_table(table)
    if not ds.has_label:
        console.print(f"no label column: {NO_LABEL_USE}", highlight=False, markup=False)
    for item in m["rejects"]["reasons"][:3]:
        console.print(
            f"  rejected {item['count']:,}: {item['reason']}", highlight=False, markup=False
        )


def ingest_command(
    source: list[str] = typer.Argument(
        ...,
        help="Input files or globs (csv, tsv, jsonl, parquet; .gz/.zst/.bz2), or a "
        "(Hive-partitioned) Parquet folder.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
    engine: EngineOption = None,
    **options: Any,
) -> None:
    """Ingest files into a sharded, validated dataset (Parquet shards + manifest)."""
    from shardlearn.data import ingest
    from shardlearn.engine import ENGINE_ENV

    # Without --engine (or $SHARDLEARN_ENGINE) no engine is made: the parsers are threads.
    spec = engine or os.environ.get(ENGINE_ENV)
    with engine_context(spec, None) if spec else contextlib.nullcontext() as eng:
        ds = ingest(
            source,
            progress=not as_json,
            **options,
            engine=eng,
        )
    if as_json:
        typer.echo(json.dumps(_describe_dict(ds, verify=None), indent=2))
    else:
        _ingest_summary(ds)


def _all_splits(ds: Any) -> list[str]:
    return [*ds.splits, *(["unlabeled"] if ds.has_unlabeled else [])]


def _describe_dict(ds: Any, verify: list[str] | None) -> dict[str, Any]:
    m = ds.manifest
    result = {
        "uri": ds.uri,
        "manifest_sha256": ds.manifest_sha256,
        "label": ds.label,
        "has_label": ds.has_label,
        "classes": ds.classes,
        "schema": ds.schema.to_dict(),
        "strategy": m["strategy"],
        "seed": m["seed"],
        "splits": {s: {"rows": ds.num_rows(s), "shards": len(ds.shards(s)),
                       "class_counts": ds.class_counts(s)} for s in _all_splits(ds)},
        "rows_read": m["rows_read"],
        "rows_written": m["rows_written"],
        "rows_unlabeled": int(m.get("rows_unlabeled", 0)),
        "rows_rejected": m["rows_rejected"],
        "reject_reasons": m["rejects"]["reasons"],
        # How the input was parsed (absent for write_dataset); nodes: rows per Ray node.
        **{key: m[key] for key in ("parsers", "ranges", "nodes") if key in m},
        "shards": [s.to_dict() for s in ds.shards(None)],
    }  # fmt: skip
    if verify is not None:
        result["verify"] = {"ok": not verify, "problems": verify}
    return result


def _print_description(ds: Any) -> None:
    m = ds.manifest
    console.print(
        Text.assemble((str(ds.uri), "bold"), f"  manifest sha256 {ds.manifest_sha256[:16]}…"),
        highlight=False,
        soft_wrap=True,
    )
    labels = (
        Text.assemble("label ", (str(ds.label), "bold"), f", {len(ds.classes)} classes")
        if ds.has_label
        else Text.assemble(("no label column", "bold"), f" ({NO_LABEL_USE})")
    )
    console.print(
        labels,
        f"; strategy {m['strategy']}, "
        f"seed {m['seed']}; rows_read {m['rows_read']:,} = written {m['rows_written']:,}"
        f"{_unlabeled_note(m)} + rejected {m['rows_rejected']:,}",
        sep="",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    schema = Table("column", "kind", "dtype", title="schema", box=None, title_justify="left")
    for column in ds.schema:
        schema.add_row(column.name + (" (label)" if column.name == ds.label else ""),
                       column.kind, column.dtype)  # fmt: skip
    print_table(schema)
    shown = [str(c) for c in ds.classes][:6]
    shards = Table("split", "shard", "rows", "bytes", *shown, title="shards", box=None,
                   title_justify="left")  # fmt: skip
    for shard in ds.shards(None):
        shards.add_row(shard.split, str(shard.index), f"{shard.rows:,}", f"{shard.bytes:,}",
                       *[f"{shard.class_counts.get(c, 0):,}" for c in shown])  # fmt: skip
    print_table(shards)
    if len(ds.classes) > len(shown):
        console.print(f"({len(ds.classes) - len(shown)} more classes: see --json)")
    if m["rejects"]["reasons"]:
        rejects = Table("rejected", "reason", title="top reject reasons", box=None,
                        title_justify="left")  # fmt: skip
        for item in m["rejects"]["reasons"][:5]:
            rejects.add_row(f"{item['count']:,}", item["reason"])
        print_table(rejects)


def describe_command(
    path: str = typer.Argument(..., help="Dataset directory or URI."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash every shard; exit 1 on a mismatch."
    ),
) -> None:
    """Show a dataset's schema, splits, shards and rejects."""
    from shardlearn.data import Dataset

    ds = Dataset.open(path)
    problems = ds.verify() if verify else None
    if as_json:
        typer.echo(json.dumps(_describe_dict(ds, problems), indent=2))
    else:
        _print_description(ds)
        if problems == []:
            console.print(f"verified: all {len(ds.shards(None))} shards match the manifest")
    if problems:
        for problem in problems[:20]:
            console.print(labelled("mismatch", "red", problem), highlight=False, soft_wrap=True)
        raise fail(f"{len(problems)} shard(s) do not match the manifest of {path}.")


def demo_command(
    rows: int = typer.Option(
        DEMO_ROWS,
        "--rows",
        min=100,
        envvar="SHARDLEARN_DEMO_ROWS",  # the docs' tests run the demo on small data
        help="Loan applications to generate.",
    ),
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator and the partitioner."),
    partitions: int = typer.Option(8, "--partitions", min=1, help="Shards per split."),
    engine: EngineOption = None,
    workers: WorkersOption = None,
) -> None:
    """Run the whole flow on generated loan applications.

    Generates the loans CSV, then runs the loan pipeline (examples/loans.yaml): ingest ->
    logistic regression, random forest and XGBoost side by side -> compare on the test split ->
    register the best -> batch predictions.
    """
    from shardlearn.cli.run import print_summary
    from shardlearn.pipeline.demo import run_demo

    with engine_context(engine, workers) as eng:
        console.print(
            f"Generating {rows:,} loan applications in {out}, then running the loan pipeline "
            f"on the {eng.name} engine with {eng.n_workers} workers",
            markup=False,
        )
        result = run_demo(rows, out, seed=seed, partitions=partitions)
    print_summary(result)
    console.print(f"HTML report: {result.results['leaderboard']['report']}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the dataset commands to ``app``."""
    app.command("demo", epilog=DEMO_EPILOG)(demo_command)
    # Every ingest() option but progress (off with --json) is an option of the command, made
    # from IngestOptions: names, defaults, help, ranges and choices (cli/_options.py).
    options = model_options(IngestOptions, exclude=CLI_SETS | CALL_ONLY)
    app.command("ingest", epilog=INGEST_EPILOG)(options(ingest_command))
    app.command("describe", epilog=DESCRIBE_EPILOG)(describe_command)
