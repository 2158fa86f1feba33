"""A dataset on storage: Parquet shards per split plus ``manifest.json``.

The manifest is the dataset: it is written last by ingest, so a directory without one is not a
dataset (an interrupted ingest leaves none). :class:`Dataset` only reads; it works on a local
path or on any ``pyarrow.fs`` URI (``s3://bucket/loans``, ``file:///data/loans``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shardlearn import _warm
from shardlearn._validation import unknown_name_message
from shardlearn.data.partition import SPLITS, UNLABELED_SPLIT
from shardlearn.data.schema import Schema
from shardlearn.exceptions import DataError

__all__ = ["MANIFEST_NAME", "Dataset", "FORMAT_VERSION", "Shard", "resolve_filesystem"]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "shardlearn-dataset"
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 22


def resolve_filesystem(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path of a local path or a ``pyarrow.fs`` URI."""
    text = os.fspath(uri)
    if "://" in text:
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
            raise DataError(f"Cannot open {text!r}: {error}") from None
    return pafs.LocalFileSystem(), os.path.abspath(text)


def join_uri(root: str, relative: str) -> str:
    """``root`` + ``/`` + ``relative`` for paths and URIs alike.

    A URI's query string (``s3://b/ds?endpoint_override=host:9000&scheme=http``) holds
    filesystem options, so it stays at the end: ``s3://b/ds/train/x.parquet?endpoint_...``.
    """
    query = ""
    if "://" in root and "?" in root:
        root, query = root.split("?", 1)
        query = "?" + query
    return root.rstrip("/") + "/" + relative.lstrip("/") + query


def sha256_of(filesystem: pafs.FileSystem, path: str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with filesystem.open_input_stream(path) as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Shard:
    """One Parquet file of one split.

    Parameters
    ----------
    split : str
        ``"train"``, ``"valid"``, ``"test"``, or ``"unlabeled"`` (rows without a label).
    index : int
        Shard number within the split (shard-level k-fold: fold i = shards with index ≡ i).
    path : str
        Path relative to the dataset root, e.g. ``"train/part-00003.parquet"``.
    uri : str
        Absolute local path or URI of the file; workers read the shard from here.
    rows : int
        Number of rows.
    bytes : int
        File size.
    sha256 : str
        Hex digest of the file, checked by ``shardlearn describe --verify``.
    class_counts : dict of str to int
        Rows per class, keyed by ``str(class)``.
    """

    split: str
    index: int
    path: str
    uri: str
    rows: int
    bytes: int
    sha256: str
    class_counts: dict[str, int] = field(default_factory=dict, compare=False, hash=False)

    def _open(self) -> pq.ParquetFile:
        filesystem, path = resolve_filesystem(self.uri)
        try:
            return pq.ParquetFile(filesystem.open_input_file(path))
        except FileNotFoundError:
            raise DataError(
                f"Shard {self.path!r} is missing at {self.uri!r}; the dataset is incomplete."
            ) from None

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole shard as a table (optionally only ``columns``).

        Inside a warm scope (a search, :mod:`shardlearn._warm`) the file is read once per
        process and kept; like Parquet, columns the file does not have are left out.
        """
        if _warm.active():
            table = self._warm_table()
            return (
                table
                if columns is None
                else table.select([c for c in columns if c in table.column_names])
            )
        with self._open() as parquet:
            return parquet.read(columns=columns)

    def iter_batches(
        self, batch_size: int = 65536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows (from memory in a warm scope; a
        missing column is a KeyError either way)."""
        if _warm.active():
            table = self._warm_table()
            table = table if columns is None else table.select(columns)
            yield from table.to_batches(max_chunksize=batch_size)
            return
        with self._open() as parquet:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)

    def _warm_table(self) -> pa.Table:
        """The whole file, read once per warm scope (its digest is part of the key)."""

        def read_all() -> pa.Table:
            with self._open() as parquet:
                return parquet.read()

        key = (self.uri, self.sha256, self.bytes)
        return _warm.fetch("shard_reads", key, read_all, lambda table: table.nbytes)

    def to_dict(self) -> dict[str, Any]:
        """Manifest entry (without ``uri``, which depends on where the dataset lives)."""
        return {
            "split": self.split,
            "index": self.index,
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "class_counts": dict(self.class_counts),
        }


class Dataset:
    """A sharded dataset written by :func:`shardlearn.ingest` or :func:`write_dataset`.

    Parameters
    ----------
    uri : str
        The dataset directory: a local path or a ``pyarrow.fs`` URI.
    manifest : dict
        The parsed ``manifest.json``. Use :meth:`open` rather than this constructor.

    Examples
    --------
    >>> from shardlearn.data import ingest
    >>> from shardlearn.data.demo import write_loans_csv
    >>> _ = ingest(write_loans_csv("loans.csv", rows=400), label="default", out="data/loans")
    >>> ds = Dataset.open("data/loans")
    >>> ds.classes, ds.splits, ds.num_rows("train")
    (['no', 'yes'], ['train', 'valid', 'test'], 313)
    >>> sum(batch.num_rows for batch in ds.iter_batches("train"))
    313
    """

    def __init__(self, uri: str, manifest: dict[str, Any], manifest_sha256: str = "") -> None:
        self.uri = uri
        self.manifest = manifest
        self.manifest_sha256 = (
            manifest_sha256
            or hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        )
        self.schema = Schema.from_dict(manifest["schema"])
        self.label: str | None = manifest.get("label")
        self.classes: list[Any] = list(manifest.get("classes", []))

    @classmethod
    def open(cls, uri: str | os.PathLike[str]) -> Dataset:
        """Open the dataset at a local path or ``pyarrow.fs`` URI."""
        filesystem, path = resolve_filesystem(uri)
        text = os.fspath(uri)
        root = text.rstrip("/") if "://" in text else path
        manifest_path = join_uri(path, MANIFEST_NAME)
        try:
            with filesystem.open_input_stream(manifest_path) as stream:
                raw = stream.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DataError(
                f"No dataset at {text!r}: {MANIFEST_NAME} is missing. Create one with "
                "`shardlearn ingest` (an interrupted ingest leaves no manifest)."
            ) from None
        try:
            manifest = json.loads(raw)
        except RecursionError:  # json's C parser recurses once per nesting level
            raise DataError(f"{MANIFEST_NAME} of {text!r} is nested too deeply.") from None
        except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, int digit limit
            raise DataError(f"{MANIFEST_NAME} of {text!r} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise DataError(f"{text!r} does not hold a shardlearn dataset manifest.")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(
                f"Dataset {text!r} has format version {manifest['format_version']}; this "
                f"shardlearn reads up to {FORMAT_VERSION}. Upgrade shardlearn."
            )
        return cls(root, manifest, hashlib.sha256(raw).hexdigest())

    def __repr__(self) -> str:
        return (
            f"Dataset({self.uri!r}, rows={self.num_rows()}, splits={self.splits}, "
            f"label={self.label!r}, classes={len(self.classes)})"
        )

    @cached_property
    def _shards(self) -> list[Shard]:
        return [
            Shard(
                split=entry["split"],
                index=int(entry["index"]),
                path=entry["path"],
                uri=join_uri(self.uri, entry["path"]),
                rows=int(entry["rows"]),
                bytes=int(entry["bytes"]),
                sha256=entry["sha256"],
                class_counts={str(k): int(v) for k, v in entry.get("class_counts", {}).items()},
            )
            for entry in self.manifest["shards"]
        ]

    @property
    def splits(self) -> list[str]:
        """The splits that hold rows, in the order train, valid, test (every row of a dataset
        without a label column; the labelled rows otherwise).

        The ``unlabeled`` split (``ingest --allow-unlabeled``) is never listed here: everything
        that trains or evaluates on ``splits`` sees labelled rows only. See :attr:`has_unlabeled`.
        """
        present = {s.split for s in self._shards}
        return [s for s in SPLITS if s in present]

    @property
    def has_label(self) -> bool:
        """Whether the dataset has a label column (``ingest`` without ``--label``: False).

        A dataset without a label serves clustering and PCA; its train/valid/test splits hold
        every row, :attr:`classes` is empty and no shard has class counts.
        """
        return self.label is not None

    @property
    def has_unlabeled(self) -> bool:
        """Whether the dataset holds rows without a label (the ``unlabeled`` split)."""
        return any(s.split == UNLABELED_SPLIT and s.rows for s in self._shards)

    @property
    def rows_unlabeled(self) -> int:
        """Rows without a label (0 unless ingested with ``--allow-unlabeled``)."""
        return sum(s.rows for s in self._shards if s.split == UNLABELED_SPLIT)

    def _check_split(self, split: str) -> None:
        if split == UNLABELED_SPLIT:
            if not any(s.split == UNLABELED_SPLIT for s in self._shards):
                raise DataError(
                    f"Dataset {self.uri!r} has no {UNLABELED_SPLIT!r} split: it holds no rows "
                    "without a label (ingest with --allow-unlabeled to keep such rows)."
                )
            return
        if split not in self.splits:
            if split in SPLITS:
                raise DataError(
                    f"Dataset {self.uri!r} has no {split!r} split; it has {', '.join(self.splits)}."
                )
            known = self.splits + ([UNLABELED_SPLIT] if self.has_unlabeled else [])
            raise DataError(unknown_name_message("split", split, known))

    def shards(self, split: str | None = "train") -> list[Shard]:
        """The shards of ``split`` ordered by index (``None``: every shard, unlabeled too)."""
        if split is None:
            return list(self._shards)
        self._check_split(split)
        return [s for s in self._shards if s.split == split]

    def num_rows(self, split: str | None = None) -> int:
        """Rows in ``split`` (``None``: all splits, unlabeled rows included)."""
        return sum(s.rows for s in self.shards(split))

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Rows per class (keys are ``str(class)``) in ``split`` or the whole dataset."""
        totals = {str(c): 0 for c in self.classes}
        for shard in self.shards(split):
            for key, value in shard.class_counts.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def read(self, split: str = "train", columns: list[str] | None = None) -> pa.Table:
        """All shards of ``split`` concatenated (small data only)."""
        tables = [shard.read(columns) for shard in self.shards(split)]
        if not tables:
            arrow = self.schema.to_arrow()
            if columns is not None:
                arrow = pa.schema([arrow.field(c) for c in columns])
            return arrow.empty_table()
        return pa.concat_tables(tables)

    def iter_batches(
        self, split: str = "train", batch_size: int = 65536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of every shard of ``split``, shard by shard."""
        for shard in self.shards(split):
            yield from shard.iter_batches(batch_size=batch_size, columns=columns)

    def to_pandas(self, split: str = "train") -> Any:
        """``split`` as a pandas DataFrame (needs pandas; small data only)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError(
                "Dataset.to_pandas needs pandas: pip install 'shardlearn[pandas]'."
            ) from None
        return self.read(split).to_pandas()

    @property
    def rejects_uri(self) -> str | None:
        """URI of the rejected-rows file, or None when no row was rejected."""
        path = self.manifest.get("rejects", {}).get("path")
        return join_uri(self.uri, path) if path else None

    def read_rejects(self) -> pa.Table | None:
        """The rejected rows (source, line, reason, raw), or None when there are none."""
        uri = self.rejects_uri
        if uri is None:
            return None
        filesystem, path = resolve_filesystem(uri)
        with filesystem.open_input_file(path) as handle:
            return pq.read_table(handle)

    def verify(self) -> list[str]:
        """Re-hash every shard; return one message per missing or changed shard."""
        problems = []
        for shard in self.shards(None):
            filesystem, path = resolve_filesystem(shard.uri)
            try:
                digest = sha256_of(filesystem, path)
            except FileNotFoundError:
                problems.append(f"{shard.path}: missing")
                continue
            if digest != shard.sha256:
                problems.append(
                    f"{shard.path}: sha256 {digest[:12]}… does not match the manifest's "
                    f"{shard.sha256[:12]}…"
                )
        return problems
