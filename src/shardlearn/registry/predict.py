"""Batch prediction: a model applied to a dataset or to raw files, written as Parquet.

Two kinds of input:

* **A dataset** (a directory with ``manifest.json``): every shard of the chosen splits is
  predicted in parallel on the engine's WorkerGroup. Each worker reads its own shards, writes
  one output Parquet per shard (and one rejects Parquet per shard) into a parts directory; the
  driver then concatenates the parts in (split, shard index) order into the output file. A
  row's key is ``shard`` (its file in the dataset, e.g. ``train/part-00001.parquet``) and
  ``row`` (0-based within that shard), so ``Dataset.open(d)`` and the key find it again.
* **Raw files** (CSV/TSV, JSON Lines, Parquet, compressed or not; files, globs, URIs or a
  directory of files) are read by ingest's own reader,
  :class:`~shardlearn.data.readers.SourceReader` (through
  :mod:`shardlearn.registry._predict_input`), with ingest's options (format from the
  extension or ``format``, ``delimiter``, ``header``/``columns``, missing-value markers,
  trimming), and streamed batch by batch in this process, never read whole. A line the reader
  refuses (wrong number of fields, broken quoting, not UTF-8, longer than a block, not a JSON
  object) is a reject like any other, never an error. A row's key is ``source`` (the file) and
  ``line`` (its 1-based physical line). Blank lines are skipped, as ingest skips them.

Every row is validated against the model's input schema; rows that fail go to
``OUT.rejects.parquet`` with ingest's reject columns (``source``, ``line``, ``reason``, ``raw``:
the row's text; for a dataset ``line`` is ``row + 1``), in input order, and the counts
reconcile: ``rows_in == rows_predicted + rows_rejected``. Row order within each input file or
shard is kept. Output columns: the ``id_column`` if given, else the key above; the
``keep_columns`` (copied from the input as read: text for CSV and JSON Lines, trimmed, markers
made null); ``prediction``; and with ``proba`` one ``proba_<class>`` column per class in the
order of ``classes_``.

A progress bar (``verbose``) counts the rows done; on a dataset it runs one shard per worker
per call, so that the bar moves between calls (the output is the same).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shardlearn._options import check_call
from shardlearn.data.options import FileReadOptions
from shardlearn.data.readers import REJECTS_SCHEMA
from shardlearn.engine import StepProgress, show_progress
from shardlearn.exceptions import DataError, SchemaError
from shardlearn.registry._meta import input_schema
from shardlearn.registry._predict_input import (
    DATASET_KEY,
    FILE_KEY,
    Chunk,
    RawOptions,
    file_chunks,
    is_dataset,
    raw_files,
    raw_options,
    refuse_file_options,
    shard_chunks,
)
from shardlearn.registry._validate import check_columns, is_nan, validate_table

__all__ = ["DATASET_KEY", "FILE_KEY", "PredictionSummary", "Predictor", "predict_batch"]

DEFAULT_BATCH_SIZE = 65536


@dataclass
class SourceCount:
    """Row counts of one input file or shard (blank lines are not rows)."""

    source: str
    rows_in: int = 0
    rows_predicted: int = 0
    rows_rejected: int = 0
    blank_lines: int = 0


@dataclass
class PredictionSummary:
    """What :func:`predict_batch` did.

    Attributes
    ----------
    out : Path
        The predictions Parquet file.
    rejects : Path or None
        The rejects Parquet file (source, line, reason, raw), when any row was rejected.
    rows_in, rows_predicted, rows_rejected : int
    blank_lines : int
        Blank lines of raw text files, skipped (not rows).
    sources : list of SourceCount
        Per input file or shard, in output order.
    """

    out: Path
    rejects: Path | None
    rows_in: int
    rows_predicted: int
    rows_rejected: int
    blank_lines: int = 0
    sources: list[SourceCount] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        """``rows_in == rows_predicted + rows_rejected``."""
        return self.rows_in == self.rows_predicted + self.rows_rejected

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        out["out"] = str(self.out)
        out["rejects"] = None if self.rejects is None else str(self.rejects)
        return out


class Predictor:
    """A model plus what batch prediction needs to know about it; picklable for workers.

    Parameters
    ----------
    model : fitted model
    proba : bool
        Add ``proba_<class>`` columns.
    id_column : str, optional
        A column copied from the input to the output, first, as the row key.
    keep_columns : sequence of str
        Input columns copied to the output after the key.
    default_key : tuple of str
        The key columns written when there is no ``id_column`` (:data:`DATASET_KEY` or
        :data:`FILE_KEY`).
    """

    def __init__(
        self,
        model: Any,
        *,
        proba: bool = False,
        id_column: str | None = None,
        keep_columns: Sequence[str] = (),
        default_key: tuple[str, ...] = FILE_KEY,
    ) -> None:
        schema = input_schema(model)
        if schema is None:
            raise SchemaError(f"{type(model).__name__} does not say which input columns it needs")
        self.model = model
        self.proba = proba
        self.id_column = id_column
        self.key = (id_column,) if id_column else default_key
        self.keep_columns = [c for c in dict.fromkeys(keep_columns) if c != id_column]
        self.columns: list[dict[str, Any]] = list(schema["columns"])
        # A Pipeline imputes missing values; a bare estimator cannot.
        self.allow_missing = hasattr(model, "preprocessor")
        final = getattr(model, "estimator", model)
        if not callable(getattr(final, "predict", None)):
            raise DataError(
                f"{type(final).__name__} makes no predictions (it is a transformer); use "
                "shardlearn.load(MODEL).transform(table) in Python for its projections"
            )
        # A clustering model (KMeans) has no classes_: its predictions are cluster ids.
        self.classes = np.asarray(getattr(model, "classes_", np.zeros(0, np.int64)))
        if proba and not callable(getattr(final, "predict_proba", None)):
            raise DataError(
                f"{type(final).__name__} has no predict_proba; drop --proba to get predictions"
            )
        self._check_output_names()

    def _check_output_names(self) -> None:
        probas = [f"proba_{label}" for label in self.classes.tolist()] if self.proba else []
        taken = [*self.key, "prediction", *probas]
        for name in self.keep_columns:
            if name in taken:
                what = "the row key" if name in self.key else "an output column"
                raise SchemaError(
                    f"--keep-columns {name!r} has the name of {what} ({', '.join(taken)}); "
                    "drop it from --keep-columns, or pass --id COL to key rows by a column of "
                    "your own"
                )

    @property
    def needed(self) -> list[str]:
        """Input columns to read: the model's, the id column and the kept columns."""
        names = [c["name"] for c in self.columns]
        extra = [self.id_column] if self.id_column else []
        return list(dict.fromkeys([*names, *extra, *self.keep_columns]))

    def check(self, names: Sequence[str], source: str) -> None:
        """SchemaError when ``source`` (with columns ``names``) lacks a needed column."""
        check_columns(list(names), self.columns, source)
        if self.id_column and self.id_column not in names:
            raise SchemaError(
                f"{source} has no id column {self.id_column!r}; it has: {', '.join(names)}"
            )
        missing = [name for name in self.keep_columns if name not in names]
        if missing:
            raise SchemaError(
                f"{source} has no column {missing[0]!r} to keep (--keep-columns); it has: "
                f"{', '.join(names)}"
            )

    def _output(self, chunk: Chunk, valid: pa.Table, good: pa.Array) -> pa.Table:
        columns: dict[str, Any] = {}
        for name in self.key:
            source = chunk.table.column(name) if name == self.id_column else chunk.key[name]
            columns[name] = source.filter(good)
        for name in self.keep_columns:
            columns[name] = chunk.table.column(name).filter(good)
        if valid.num_rows:
            model, inputs = self.model, valid
            if hasattr(model, "transform_features") and hasattr(model, "estimator"):
                # A Pipeline: transform once (preprocessor and any PCA step), then the final
                # estimator's predict and predict_proba (exactly what Pipeline.predict and
                # predict_proba do, without transforming twice).
                model, inputs = model.estimator, model.transform_features(valid)
            columns["prediction"] = pa.array(np.asarray(model.predict(inputs)))
            probabilities = model.predict_proba(inputs) if self.proba else None
        else:
            columns["prediction"] = pa.array(self.classes[:0])
            probabilities = np.zeros((0, len(self.classes)))
        if self.proba:
            for j, label in enumerate(self.classes.tolist()):
                columns[f"proba_{label}"] = pa.array(np.asarray(probabilities)[:, j], pa.float64())
        return pa.table(columns)

    def predict_chunk(self, chunk: Chunk, source: str) -> tuple[pa.Table, pa.Table]:
        """(predictions of the valid rows, rejects in line order) of one chunk."""
        clean, reasons = validate_table(chunk.table, self.columns, self.allow_missing)
        good_mask = np.asarray([r is None for r in reasons], dtype=bool)
        good = pa.array(good_mask)
        bad = np.flatnonzero(~good_mask)
        lines = [*chunk.lines[bad].tolist(), *(line for line, _, _ in chunk.invalid)]
        rejects = pa.table(
            {
                "source": pa.array([source] * len(lines), pa.string()),
                "line": pa.array(lines, pa.int64()),
                "reason": [*(reasons[i] for i in bad), *(why for _, why, _ in chunk.invalid)],
                "raw": [*_row_texts(chunk, bad), *(text for _, _, text in chunk.invalid)],
            },
            schema=REJECTS_SCHEMA,
        )
        if chunk.invalid and len(bad):
            rejects = rejects.sort_by("line")
        return self._output(chunk, clean.filter(good), good), rejects

    def run(
        self,
        chunks: Iterable[Chunk],
        source: str,
        out: Path,
        rejects: Path,
        on_chunk: Callable[[SourceCount], None] | None = None,
    ) -> SourceCount:
        """Predict every chunk of one source into ``out`` (and ``rejects``); return the counts
        (``on_chunk`` sees them after every chunk)."""
        count = SourceCount(source)
        with _LazyWriter(out) as writer, _LazyWriter(rejects, REJECTS_SCHEMA) as reject_writer:
            for chunk in chunks:
                predicted, rejected = self.predict_chunk(chunk, source)
                writer.write(predicted)
                reject_writer.write(rejected)
                count.rows_in += chunk.table.num_rows + len(chunk.invalid)
                count.rows_predicted += predicted.num_rows
                count.rows_rejected += rejected.num_rows
                count.blank_lines += chunk.blank_lines
                if on_chunk is not None:
                    on_chunk(count)
        return count


def _row_texts(chunk: Chunk, rows: np.ndarray) -> list[str]:
    """The text of rejected rows: fields joined by the delimiter (as ingest writes them), or a
    JSON object for JSON Lines, Parquet and dataset rows."""
    if not len(rows):
        return []
    raw = chunk.raw.take(pa.array(rows))
    if chunk.delimiter is not None:
        fields = [pc.fill_null(column.cast(pa.string()), "") for column in raw.columns]
        return pc.binary_join_element_wise(*fields, chunk.delimiter).to_pylist()
    return [
        json.dumps({k: (None if is_nan(v) else v) for k, v in row.items()}, default=str)
        for row in raw.to_pylist()
    ]


class _LazyWriter:
    """A Parquet writer opened on the first non-empty table (schema from that table)."""

    def __init__(self, path: Path, schema: pa.Schema | None = None) -> None:
        self.path, self.schema, self.writer = path, schema, None
        self.first: pa.Table | None = None

    def write(self, table: pa.Table) -> None:
        if self.first is None:
            self.first = table  # kept so an all-empty source still records its schema
        if self.writer is None and table.num_rows:
            self.writer = pq.ParquetWriter(self.path, self.schema or table.schema)
        if self.writer is not None and table.num_rows:
            self.writer.write_table(table.cast(self.writer.schema))

    def __enter__(self) -> _LazyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
        elif self.first is not None and self.schema is None:
            pq.write_table(self.first, self.path)  # an empty part keeps the output schema


# -- the driver ----------------------------------------------------------------------------


def _part_name(index: int, label: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
    return f"{index:06d}-{safe[-80:]}"


def _shard_count(state: Any) -> int:
    return len(state.shards)


def _predict_worker_shards(
    state: Any, parts_dir: str, batch_size: int, round_: int | None = None
) -> list[dict[str, Any]]:
    """On a worker: predict each of its shards (or only its ``round_``-th) into its own part
    file; return the counts."""
    predictor: Predictor = state.context["predictor"]
    order: dict[str, int] = state.context["shard_order"]
    results = []
    for shard in state.shards if round_ is None else state.shards[round_ : round_ + 1]:
        position = order[shard.path]
        name = _part_name(position, shard.path)
        count = predictor.run(
            shard_chunks(shard, predictor.needed, batch_size),
            shard.path,
            Path(parts_dir) / f"{name}.parquet",
            Path(parts_dir) / f"{name}.rejects.parquet",
        )
        results.append({"position": position, **asdict(count)})
    return results


def _predict_dataset(
    predictor: Predictor,
    source: Any,
    parts: Path,
    *,
    splits: Sequence[str] | None,
    engine: Any,
    batch_size: int,
    verbose: bool | int,
) -> list[SourceCount]:
    from shardlearn.data import Dataset
    from shardlearn.engine import get_engine

    dataset = Dataset.open(source)
    predictor.check(dataset.schema.names, f"dataset {source}")
    chosen = list(splits) if splits else dataset.splits
    shards = [shard for split in chosen for shard in dataset.shards(split)]
    if not shards:
        raise DataError(f"dataset {source} has no shards in split(s) {', '.join(chosen)}")
    eng = get_engine(engine)
    with eng.workers(max(1, min(eng.n_workers, len(shards)))) as group:
        group.assign(shards)
        group.put("predictor", predictor)
        group.put("shard_order", {shard.path: i for i, shard in enumerate(shards)})
        total = sum(shard.rows for shard in shards)
        with StepProgress("predict rows", total, enabled=show_progress(verbose)) as bar:
            if not bar.enabled:
                rounds: list[int | None] = [None]  # every shard of a worker in one call
            else:  # one shard per worker per call, so the bar moves between calls
                rounds = list(range(max(group.run(_shard_count))))
            results: list[dict[str, Any]] = []
            for round_ in rounds:
                for worker in group.run(_predict_worker_shards, str(parts), batch_size, round_):
                    results.extend(worker)
                rejected = sum(r["rows_rejected"] for r in results)
                bar.update(sum(r["rows_in"] for r in results), info=f"{rejected:,} rejected")
    results.sort(key=lambda r: r.pop("position"))
    return [SourceCount(**r) for r in results]


def _predict_files(
    predictor: Predictor,
    paths: list[str],
    parts: Path,
    options: RawOptions,
    batch_size: int,
    verbose: bool | int,
) -> list[SourceCount]:
    counts: list[SourceCount] = []
    with StepProgress("predict rows", None, enabled=show_progress(verbose)) as bar:

        def advance(count: SourceCount) -> None:
            done = [*counts, count]
            rejected = sum(c.rows_rejected for c in done)
            bar.update(sum(c.rows_in for c in done), info=f"{rejected:,} rejected")

        for position, path in enumerate(paths):
            name = _part_name(position, os.path.basename(path))
            counts.append(
                predictor.run(
                    file_chunks(path, predictor.needed, predictor.check, options, batch_size),
                    path,
                    parts / f"{name}.parquet",
                    parts / f"{name}.rejects.parquet",
                    on_chunk=advance,
                )
            )
    return counts


def _combine(parts: list[Path], out: Path, schema: pa.Schema | None = None) -> int:
    """Concatenate ``parts`` (in order) into ``out`` atomically; returns the rows written."""
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for part in parts:
            parquet = pq.ParquetFile(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema or parquet.schema_arrow)
            for batch in parquet.iter_batches():
                table = pa.Table.from_batches([batch])
                try:
                    table = table.cast(writer.schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise DataError(
                        f"the output of {part.name} does not match the first part's columns "
                        f"({error}); are the id and kept columns of one type in every input "
                        "file?"
                    ) from None
                writer.write_table(table)
                rows += table.num_rows
        if writer is None:
            return 0
        writer.close()
        writer = None
        os.replace(tmp, out)
        return rows
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()


def rejects_path(out: str | os.PathLike[str]) -> Path:
    """Where the rejects of ``out`` go: ``preds.parquet`` -> ``preds.rejects.parquet``."""
    out = Path(out)
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(f"{stem}.rejects.parquet")


def predict_batch(
    model: Any,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    proba: bool = False,
    id_column: str | None = None,
    keep_columns: Sequence[str] = (),
    splits: Sequence[str] | None = None,
    engine: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    format: str | None = None,
    delimiter: str | None = None,
    header: bool = True,
    columns: Sequence[str] | None = None,
    na_values: Sequence[str] | None = None,
    trim: bool = True,
    verbose: bool | int = True,
) -> PredictionSummary:
    """Predict every row of a dataset or of raw files into one Parquet file.

    Raw files are read exactly as :func:`shardlearn.ingest` reads them (same reader, same
    options); a line it cannot parse is a reject with its file, line and reason, never an
    error.

    Parameters
    ----------
    model : fitted model, or str/path
        A model, or an artifact path / registry reference (``"models/loans@production"``).
    source : path, glob, URI or a list of them
        A dataset directory or URI (its shards run in parallel on ``engine``), or CSV/TSV,
        JSON Lines and Parquet files, ``.gz``/``.zst``/``.bz2`` included: files, globs, URIs,
        a (Hive-partitioned) Parquet folder read as ingest reads one (``key=value`` folders
        become columns), or a list (streamed in this process, in the order given).
    out : path
        The output Parquet file. Rejected rows go to ``OUT.rejects.parquet`` with the columns
        of ingest's rejects: ``source``, ``line``, ``reason``, ``raw``.
    proba : bool, default False
        Add one ``proba_<class>`` column per class, in the order of ``classes_``.
    id_column : str, optional
        An input column copied to the output (first) as the row key. Without it the key is
        ``shard`` and ``row`` (0-based) for a dataset, ``source`` and ``line`` for files.
    keep_columns : sequence of str, default ()
        Input columns copied to the output after the key, as read.
    splits : list of str, optional
        Dataset input only: the splits to predict (default: all, in manifest order).
    engine : Engine or str, optional
        Dataset input only (explicit > current context > ``$SHARDLEARN_ENGINE`` > local).
    batch_size : int, default 65536
        Rows per prediction batch.
    format : {"csv", "tsv", "jsonl", "parquet"}, optional
        Raw files only: the format (default: from the extension; ``.data``, ``.test`` and
        ``.txt`` are CSV).
    delimiter : str, optional
        Raw text files only: the field separator (default ``,``, tab for TSV).
    header : bool, default True
        Raw text files only: whether they start with a header line; with ``False`` give
        ``columns``.
    columns : list of str, optional
        Raw files only: the column names of files without a header.
    na_values : list of str, optional
        Raw files only: strings read as missing (default: ingest's, e.g. "", NA, NaN, ?).
    trim : bool, default True
        Raw files only: strip whitespace around text values (``"a, b"`` reads ``b``).
    verbose : bool or int, default True
        Show the rows predicted (and rejected) so far on a progress bar; ``0``/``False``
        never, else when stderr is a terminal (see :func:`shardlearn.engine.show_progress`).

    Returns
    -------
    PredictionSummary
        Counts that reconcile: ``rows_in == rows_predicted + rows_rejected``.

    Examples
    --------
    >>> import shardlearn as sl
    >>> from shardlearn.data.demo import write_loans_csv
    >>> ds = sl.ingest(write_loans_csv("loans.csv", rows=400), label="default", out="data/loans")
    >>> model = sl.Pipeline(sl.Preprocessor.auto(ds.schema),
    ...                     sl.LogisticRegression()).fit(ds, engine="local")
    >>> s = predict_batch(model, "loans.csv", "preds.parquet", proba=True, keep_columns=["age"])
    >>> s.rows_in, s.rows_predicted, s.rows_rejected
    (400, 399, 1)
    """
    if isinstance(model, str | os.PathLike):
        from shardlearn.registry.artifact import load

        model = load(model)
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1. Got {batch_size!r}.")
    # ingest's reader options, checked by the model ingest and `shardlearn predict` use.
    reading = {"format": format, "delimiter": delimiter, "header": header, "columns": columns,
               "na_values": na_values, "trim": trim}  # fmt: skip
    check_call(FileReadOptions, reading, "predict_batch", SchemaError)
    dataset = is_dataset(source)
    predictor = Predictor(
        model,
        proba=proba,
        id_column=id_column,
        keep_columns=list(keep_columns),
        default_key=DATASET_KEY if dataset else FILE_KEY,
    )
    if dataset:
        refuse_file_options(source, {
            "format": format is not None, "delimiter": delimiter is not None,
            "no-header/header=False": not header, "columns": bool(columns),
            "na_values": na_values is not None, "trim=False": not trim,
        })  # fmt: skip
    else:
        if splits:
            raise DataError("splits= applies to a dataset input, not to raw files")
        options = raw_options(
            format=format, delimiter=delimiter, header=header, columns=columns,
            na_values=na_values, trim=trim,
        )  # fmt: skip
        paths = raw_files(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = out.with_name(f".{out.name}.parts-{uuid.uuid4().hex}")
    parts.mkdir()
    try:
        if dataset:
            counts = _predict_dataset(
                predictor, source, parts, splits=splits, engine=engine, batch_size=batch_size,
                verbose=verbose,
            )  # fmt: skip
        else:
            counts = _predict_files(predictor, paths, parts, options, batch_size, verbose)
        return _finish(parts, out, counts)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _finish(parts: Path, out: Path, counts: list[SourceCount]) -> PredictionSummary:
    outputs = sorted(p for p in parts.glob("*.parquet") if not p.name.endswith(".rejects.parquet"))
    rejects = sorted(parts.glob("*.rejects.parquet"))
    written = _combine(outputs, out)
    if not out.exists():
        raise DataError("the input has no rows: nothing to predict")
    reject_file = rejects_path(out)
    if reject_file.exists():
        reject_file.unlink()  # never leave a stale rejects file next to fresh predictions
    rejected = _combine(rejects, reject_file, REJECTS_SCHEMA) if rejects else 0
    summary = PredictionSummary(
        out=out,
        rejects=reject_file if rejected else None,
        rows_in=sum(c.rows_in for c in counts),
        rows_predicted=sum(c.rows_predicted for c in counts),
        rows_rejected=sum(c.rows_rejected for c in counts),
        blank_lines=sum(c.blank_lines for c in counts),
        sources=counts,
    )
    if written != summary.rows_predicted or rejected != summary.rows_rejected:
        raise DataError(
            f"batch prediction lost rows: wrote {written} predictions and {rejected} rejects "
            f"for {summary.rows_predicted} + {summary.rows_rejected} counted"
        )
    return summary
