"""Helpers the range-parsing tests share: an ingest with a given range size, the files and row
accounting two ingests compare, and a record of which plans were speculative."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset, ingest
from shardlearn.data._ingest_run import IngestRun


def ingest_in_ranges(
    path: Path | str, out: Path, range_bytes: int, parsers: int, **options: Any
) -> Dataset:
    """Ingest ``path`` (label ``label``; a text column ``s`` unless ``options`` give the
    kinds or a schema) cut into ranges of ``range_bytes``."""
    if "schema" not in options:
        options.setdefault("kinds", {"s": "text"})
    with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The label column 'label' has a single class")
        return ingest(
            str(path),
            "label",
            str(out),
            partitions=3,
            max_reject_rate=1.0,
            overwrite=True,
            progress=False,
            parsers=parsers,
            **options,
        )


def fingerprint(ds: Dataset) -> tuple[dict[str, str], dict[str, object]]:
    """Hashes of every Parquet file (shards and rejects) and the manifest's row accounting."""
    root = Path(ds.uri)
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }
    manifest = json.loads((root / "manifest.json").read_text())
    keys = ("rows_read", "rows_written", "rows_rejected", "class_counts", "shards", "rejects")
    return files, {key: manifest[key] for key in keys}


class RecordedPlans:
    """Records whether each plan of the ingest was speculative (patch it over plan_ranges)."""

    def __init__(self) -> None:
        self.speculative: list[bool] = []
        self.plan = ranges_module.plan_ranges

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.speculative.append(bool(kwargs.get("speculate")))
        return self.plan(*args, **kwargs)


def recording_early_parses(used: list[int]) -> Any:
    """IngestRun._early_parses, appending to ``used`` how many early parses each call that had
    some handed over (patch it in with ``mock.patch.object(IngestRun, "_early_parses", ...)``)."""
    method = IngestRun._early_parses

    def early_parses(run: IngestRun, *args: Any) -> Any:
        started = len(run._early)
        result = method(run, *args)
        if started:
            used.append(len(result))
        return result

    return early_parses


def numbered_lines(count: int) -> list[str]:
    """A CSV's header and ``count`` rows ``i,vi,a|b`` (label alternating)."""
    return ["x,s,label", *(f"{i},v{i},{'ab'[i % 2]}" for i in range(count))]


def write_quoted_csv(folder: Path) -> Path:
    """``quoted.csv`` in ``folder``: 400 rows whose middle lies in a quoted value of 200 lines
    (physical lines 151-350), and a bad row at physical line 500."""
    lines = numbered_lines(400)
    value = "\n".join(f"part {k}" for k in range(200))
    lines[150] = f'149,"{value}",b'
    lines[300] = "299,bad"
    path = folder / "quoted.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
