"""Batch prediction: a model applied to a dataset or to raw files, written as Parquet.

Two kinds of input:

* **A dataset** (a directory with ``manifest.json``): every shard of the chosen splits is
  predicted in parallel on the engine's WorkerGroup. Each worker reads its own shards, writes
  one output Parquet per shard (and one rejects Parquet per shard) into a parts directory; the
  driver then concatenates the parts in (split, shard index) order into the output file.
* **Raw files** (CSV, Parquet, JSON Lines; a file, a directory of them or a list): streamed
  batch by batch through the model's preprocessing in this process, never read whole.

Either way every row is validated against the model's input schema first; rows that fail go to
``OUT.rejects.parquet`` (source, row, reason, record) and the counts reconcile:
``rows_in == rows_predicted + rows_rejected``. Row order within each input file or shard is
kept. Output columns: the ``id_column`` if given, ``prediction``, and with ``proba`` one
``proba_<class>`` column per class in the order of ``classes_``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardlearn.exceptions import DataError, SchemaError
from shardlearn.registry._meta import input_schema
from shardlearn.registry._validate import check_columns, is_nan, validate_table

__all__ = ["PredictionSummary", "Predictor", "predict_batch"]

DEFAULT_BATCH_SIZE = 65536
RAW_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# A column a reader may add: the reason a row could not be parsed (e.g. a malformed JSON line).
READ_ERROR = "__shardlearn_read_error__"
_REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("row", pa.int64()), ("reason", pa.string()), ("record", pa.string())]
)


@dataclass
class SourceCount:
    """Row counts of one input file or shard."""

    source: str
    rows_in: int = 0
    rows_predicted: int = 0
    rows_rejected: int = 0


@dataclass
class PredictionSummary:
    """What :func:`predict_batch` did.

    Attributes
    ----------
    out : Path
        The predictions Parquet file.
    rejects : Path or None
        The rejects Parquet file, when any row was rejected.
    rows_in, rows_predicted, rows_rejected : int
    sources : list of SourceCount
        Per input file or shard, in output order.
    """

    out: Path
    rejects: Path | None
    rows_in: int
    rows_predicted: int
    rows_rejected: int
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
        A column copied from the input to the output, first.
    """

    def __init__(self, model: Any, *, proba: bool = False, id_column: str | None = None) -> None:
        schema = input_schema(model)
        if schema is None:
            raise SchemaError(f"{type(model).__name__} does not say which input columns it needs")
        self.model = model
        self.proba = proba
        self.id_column = id_column
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

    @property
    def needed(self) -> list[str]:
        """Input columns to read: the model's and the id column."""
        names = [c["name"] for c in self.columns]
        if self.id_column and self.id_column not in names:
            names.append(self.id_column)
        return names

    def check(self, names: Sequence[str], source: str) -> None:
        """SchemaError when ``source`` (with columns ``names``) lacks a needed column."""
        check_columns(list(names), self.columns, source)
        if self.id_column and self.id_column not in names:
            raise SchemaError(
                f"{source} has no id column {self.id_column!r}; it has: {', '.join(names)}"
            )

    def _output(self, valid: pa.Table, ids: pa.Array | None) -> pa.Table:
        columns: dict[str, Any] = {}
        if self.id_column:
            columns[self.id_column] = ids
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

    def predict_table(
        self, table: pa.Table, source: str, first_row: int
    ) -> tuple[pa.Table, pa.Table]:
        """(predictions of the valid rows, rejects) of one batch; row order kept."""
        clean, reasons = validate_table(table, self.columns, self.allow_missing)
        if READ_ERROR in table.column_names:  # rows the reader could not parse at all
            for i, error in enumerate(table.column(READ_ERROR).to_pylist()):
                if error is not None:
                    reasons[i] = error
            table = table.drop_columns([READ_ERROR])
        good = np.asarray([r is None for r in reasons], dtype=bool)
        valid = clean.filter(pa.array(good))
        ids = table.column(self.id_column).filter(pa.array(good)) if self.id_column else None
        bad = np.flatnonzero(~good)
        rejects = pa.table(
            {
                "source": pa.array([source] * len(bad), pa.string()),
                "row": pa.array(first_row + bad, pa.int64()),
                "reason": pa.array([reasons[i] for i in bad], pa.string()),
                "record": pa.array([_record(table, int(i)) for i in bad], pa.string()),
            },
            schema=_REJECT_SCHEMA,
        )
        return self._output(valid, ids), rejects

    def run(self, batches: Iterable[Any], source: str, out: Path, rejects: Path) -> SourceCount:
        """Predict every batch of one source into ``out`` (and ``rejects``); return the counts."""
        count = SourceCount(source)
        with _LazyWriter(out) as writer, _LazyWriter(rejects, _REJECT_SCHEMA) as reject_writer:
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                predicted, rejected = self.predict_table(table, source, count.rows_in)
                writer.write(predicted)
                reject_writer.write(rejected)
                count.rows_in += table.num_rows
                count.rows_predicted += predicted.num_rows
                count.rows_rejected += rejected.num_rows
        return count


def _record(table: pa.Table, row: int) -> str:
    values = {name: table.column(name)[row].as_py() for name in table.column_names}
    values = {k: (None if is_nan(v) else v) for k, v in values.items()}
    return json.dumps(values, default=str)


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


# -- reading raw files ---------------------------------------------------------------------


def _raw_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in RAW_SUFFIXES:
            return RAW_SUFFIXES[suffix]
    raise DataError(
        f"cannot tell the format of {path}: use a .csv, .parquet or .jsonl file, or a dataset "
        "directory (with manifest.json)"
    )


def _csv_batches(path: Path, predictor: Predictor, batch_size: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    tsv = ".tsv" in [s.lower() for s in path.suffixes]
    # TSV has no quoting: a '"' is data (as in ingest).
    parse = pacsv.ParseOptions(delimiter="\t" if tsv else ",", quote_char=False if tsv else '"')
    header = pacsv.open_csv(path, parse_options=parse)
    predictor.check(header.schema.names, str(path))
    header.close()
    # Every needed column is read as text and converted by the validator: type inference on
    # the first block would otherwise turn one bad value later in the file into a hard error.
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=parse,
        convert_options=pacsv.ConvertOptions(
            include_columns=predictor.needed,
            column_types={name: pa.string() for name in predictor.needed},
            strings_can_be_null=True,
        ),
    )
    for batch in reader:
        for start in range(0, batch.num_rows, batch_size):
            yield batch.slice(start, batch_size)


def _jsonl_batches(path: Path, predictor: Predictor, batch_size: int) -> Iterator[pa.Table]:
    """JSON Lines read line by line: a malformed line is one rejected row, not a failed file."""
    names = predictor.needed
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                seen.update(record)
            except ValueError as error:
                text = line.rstrip("\r\n")[:200]
                record = {READ_ERROR: f"line is not a JSON object ({error}): {text!r}"}
            rows.append(record)
            if len(rows) >= batch_size:
                yield _rows_to_table(rows, names)
                rows = []
    if rows:
        yield _rows_to_table(rows, names)
    if not seen:
        return
    missing = [n for n in names if n not in seen]
    if missing:
        predictor.check(sorted(seen), str(path))


def _rows_to_table(rows: list[dict[str, Any]], names: list[str]) -> pa.Table:
    columns = {}
    for name in [*names, READ_ERROR]:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: text, the validator decides
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def _parquet_batches(path: Path, predictor: Predictor, batch_size: int) -> Iterator[Any]:
    parquet = pq.ParquetFile(path)
    predictor.check(parquet.schema_arrow.names, str(path))
    yield from parquet.iter_batches(batch_size=batch_size, columns=predictor.needed)


_READERS = {"csv": _csv_batches, "jsonl": _jsonl_batches, "parquet": _parquet_batches}


def _raw_files(source: Any) -> list[Path]:
    if isinstance(source, list | tuple):
        return [Path(p) for p in source]
    path = Path(source)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and any(s in RAW_SUFFIXES for s in p.suffixes)
        )
        if not files:
            raise DataError(f"{path} holds no .csv, .parquet or .jsonl files and no manifest.json")
        return files
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    return [path]


def _is_dataset(source: Any) -> bool:
    if isinstance(source, list | tuple):
        return False
    if "://" in os.fspath(source):  # a dataset on object storage (s3://...): ask its filesystem
        import pyarrow.fs as pafs

        from shardlearn.data.dataset import join_uri, resolve_filesystem

        filesystem, path = resolve_filesystem(source)
        info = filesystem.get_file_info(join_uri(path, "manifest.json"))
        return info.type == pafs.FileType.File
    return (Path(source) / "manifest.json").is_file()


# -- the driver ----------------------------------------------------------------------------


def _part_name(index: int, label: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
    return f"{index:06d}-{safe[-80:]}"


def _predict_worker_shards(state: Any, parts_dir: str, batch_size: int) -> list[dict[str, Any]]:
    """On a worker: predict each of its shards into its own part file; return the counts."""
    predictor: Predictor = state.context["predictor"]
    order: dict[str, int] = state.context["shard_order"]
    results = []
    for shard in state.shards:
        position = order[shard.path]
        name = _part_name(position, shard.path)
        count = predictor.run(
            shard.iter_batches(batch_size=batch_size, columns=predictor.needed),
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
        results = [r for worker in group.run(_predict_worker_shards, str(parts), batch_size)
                   for r in worker]  # fmt: skip
    results.sort(key=lambda r: r.pop("position"))
    return [SourceCount(**r) for r in results]


def _predict_files(
    predictor: Predictor, source: Any, parts: Path, batch_size: int
) -> list[SourceCount]:
    counts = []
    for position, path in enumerate(_raw_files(source)):
        reader = _READERS[_raw_format(path)]
        name = _part_name(position, path.name)
        counts.append(
            predictor.run(
                reader(path, predictor, batch_size),
                str(path),
                parts / f"{name}.parquet",
                parts / f"{name}.rejects.parquet",
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
                        f"({error}); is the id column of one type in every input file?"
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
    splits: Sequence[str] | None = None,
    engine: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PredictionSummary:
    """Predict every row of a dataset or of raw files into one Parquet file.

    Parameters
    ----------
    model : fitted model, or str/path
        A model, or an artifact path / registry reference (``"models/loans@production"``).
    source : path or list of paths
        A dataset directory (its shards run in parallel on ``engine``), or CSV / Parquet /
        JSON Lines files (a file, a directory of files, or a list; streamed in this process).
    out : path
        The output Parquet file. Rejected rows go to ``OUT.rejects.parquet``.
    proba : bool, default False
        Add one ``proba_<class>`` column per class, in the order of ``classes_``.
    id_column : str, optional
        An input column copied to the output (first column).
    splits : list of str, optional
        Dataset input only: the splits to predict (default: all, in manifest order).
    engine : Engine or str, optional
        Dataset input only (explicit > current context > ``$SHARDLEARN_ENGINE`` > local).
    batch_size : int, default 65536
        Rows per batch read from each input.

    Returns
    -------
    PredictionSummary
        Counts that reconcile: ``rows_in == rows_predicted + rows_rejected``.

    Examples
    --------
    >>> s = predict_batch("models/loans@production", "new.csv", "preds.parquet",
    ...                   proba=True, id_column="id")                  # doctest: +SKIP
    >>> s.rows_in == s.rows_predicted + s.rows_rejected                # doctest: +SKIP
    True
    """
    if isinstance(model, str | os.PathLike):
        from shardlearn.registry.artifact import load

        model = load(model)
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1. Got {batch_size!r}.")
    predictor = Predictor(model, proba=proba, id_column=id_column)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = out.with_name(f".{out.name}.parts-{uuid.uuid4().hex}")
    parts.mkdir()
    try:
        if _is_dataset(source):
            counts = _predict_dataset(
                predictor, source, parts, splits=splits, engine=engine, batch_size=batch_size
            )
        else:
            if splits:
                raise DataError("splits= applies to a dataset input, not to raw files")
            counts = _predict_files(predictor, source, parts, batch_size)
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
    rejected = _combine(rejects, reject_file, _REJECT_SCHEMA) if rejects else 0
    summary = PredictionSummary(
        out=out,
        rejects=reject_file if rejected else None,
        rows_in=sum(c.rows_in for c in counts),
        rows_predicted=sum(c.rows_predicted for c in counts),
        rows_rejected=sum(c.rows_rejected for c in counts),
        sources=counts,
    )
    if written != summary.rows_predicted or rejected != summary.rows_rejected:
        raise DataError(
            f"batch prediction lost rows: wrote {written} predictions and {rejected} rejects "
            f"for {summary.rows_predicted} + {summary.rows_rejected} counted"
        )
    return summary
