"""Hive-partitioned Parquet folders, as Spark, Dask and Ray write them.

A folder given as input is a Parquet dataset: its files (recursively; names starting with ``_``
or ``.`` such as ``_SUCCESS``, ``_metadata`` and ``.crc`` files are not data) are read one by
one, each an ordinary Parquet source whose row numbers are its own. The ``key=value`` folders
between the root and a file are partition columns, appended after the file's columns, with one
type per key over the whole folder (pyarrow.dataset's hive discovery: integers when every value
is one, else text; ``__HIVE_DEFAULT_PARTITION__`` is a missing value; values are URL-decoded).

Files are listed without following symbolic links out of the folder: a link to a file inside
the folder is read, a link that leads outside it (or to a folder) is an error naming it.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from shardlearn.data.dataset import join_uri, resolve_filesystem
from shardlearn.exceptions import DataError

__all__ = ["PartitionedFile", "partitioned_files"]

_PARQUET_EXTENSIONS = (".parquet", ".pq", ".parq")
_MAGIC = b"PAR1"


@dataclass(frozen=True)
class PartitionKey:
    """One partition column of a file: its name, the folder-wide type and this file's value."""

    name: str
    type: pa.DataType
    value: Any  # None: __HIVE_DEFAULT_PARTITION__


class PartitionedFile(str):
    """The path of one Parquet file of a partitioned folder (a ``str``: it goes wherever a path
    goes), with the partition columns its folders give it."""

    keys: tuple[PartitionKey, ...]

    def __new__(cls, path: str, keys: tuple[PartitionKey, ...]) -> PartitionedFile:
        self = super().__new__(cls, path)
        self.keys = keys
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return PartitionedFile, (str(self), self.keys)

    def columns(self, rows: int) -> list[tuple[str, pa.Array]]:
        """The partition columns for ``rows`` rows of this file."""
        index = np.zeros(rows, dtype=np.int64)
        return [(k.name, pa.array([k.value], k.type).take(index)) for k in self.keys]


def partitioned_files(folder: str) -> list[PartitionedFile]:
    """The Parquet files of ``folder`` (a local path or a pyarrow.fs URI), sorted, with their
    partition columns."""
    filesystem, root = resolve_filesystem(folder)
    if isinstance(filesystem, pafs.LocalFileSystem):
        found = _local_files(root)
    else:
        selector = pafs.FileSelector(root, recursive=True)
        found = [i.path for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File]
    files = [f for f in found if not _hidden(os.path.relpath(f, root))]
    if not files:
        raise DataError(f"The folder {folder!r} holds no data file.")
    for path in files:
        if not _is_parquet(filesystem, path):
            raise DataError(
                f"{path!r} in the folder {folder!r} is not a Parquet file; a folder is read as "
                "a (Hive-partitioned) Parquet dataset: give text files by name or as a glob."
            )
    try:
        dataset = pads.dataset(
            files,
            filesystem=filesystem,
            format="parquet",
            partitioning=pads.HivePartitioning.discover(infer_dictionary=False),
            partition_base_dir=root,
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(
            f"Cannot read the folder {folder!r} as a Parquet dataset: {error}"
        ) from None
    names = [f.name for f in dataset.partitioning.schema] if dataset.partitioning else []
    types = {n: _widen(dataset.schema.field(n).type) for n in names}
    out = []
    for fragment in dataset.get_fragments():
        values = pads.get_partition_keys(fragment.partition_expression)
        keys = tuple(PartitionKey(n, types[n], values.get(n)) for n in names)
        relative = os.path.relpath(fragment.path, root).replace(os.sep, "/")
        if "://" in folder:  # a URI's path is percent-decoded when opened
            path = join_uri(folder, urllib.parse.quote(relative, safe="/="))
        else:
            path = os.path.join(folder, relative)
        out.append(PartitionedFile(path, keys))
    return sorted(out)


def _local_files(root: str) -> list[str]:
    """Every file under ``root``, refusing symbolic links that leave it (or lead to folders)."""
    real_root = os.path.realpath(root)
    files = []
    for folder, folders, names in os.walk(root, followlinks=False):
        for name in folders:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not _hidden(os.path.relpath(path, root)):
                raise DataError(
                    f"{path!r} is a symbolic link to a folder; ingest reads a partitioned "
                    "folder's own files only: copy the data into the folder."
                )
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise DataError(
                        f"{path!r} is a symbolic link out of {root!r}; ingest does not follow "
                        "it: copy the file into the folder or give it by name."
                    )
            files.append(path)
    return sorted(files)


def _hidden(relative: str) -> bool:
    """Spark/Hadoop bookkeeping (``_SUCCESS``, ``_metadata``, ``.crc``): not data."""
    return any(part.startswith(("_", ".")) for part in relative.split(os.sep))


def _is_parquet(filesystem: pafs.FileSystem, path: str) -> bool:
    if path.lower().endswith(_PARQUET_EXTENSIONS):
        return True
    with filesystem.open_input_file(path) as handle:
        return handle.read(4) == _MAGIC


def _widen(kind: pa.DataType) -> pa.DataType:
    """Discovery's int32 as int64 (the type ingest gives integers)."""
    return pa.int64() if pa.types.is_integer(kind) else kind
