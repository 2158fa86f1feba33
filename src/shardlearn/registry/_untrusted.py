"""Reading an artifact folder as untrusted input: bounded, with no symlinks, one-line errors.

Everything here runs before a byte of an artifact reaches a parser that could be abused:

- the folder is scanned without following links; a symbolic link, device, FIFO or socket
  anywhere in it is refused (a link could point out of the folder or hide an unlisted file),
  as are folders nested deeper than :data:`MAX_FOLDER_DEPTH` or holding more than
  :data:`MAX_FOLDER_ENTRIES` entries;
- files are opened with ``O_NOFOLLOW`` and must have the size ``model.json`` lists for them;
- JSON is at most :data:`MAX_JSON_BYTES` long and :data:`MAX_JSON_DEPTH` deep;
- ``arrays.npz`` is inspected member by member from the zip directory and each ``.npy``
  header before any array is read: member names as ``np.savez`` writes them, stored or
  deflated only, a deflate ratio of at most :data:`MAX_COMPRESSION_RATIO`, a plain numeric or
  string dtype, and a declared shape × itemsize equal to the member's size. So the memory a
  load costs is bounded by the artifact's size on disk, never by what a header claims.

Every failure is an :class:`~shardlearn.exceptions.ArtifactError` whose one line names the file.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shardlearn.exceptions import ArtifactError

__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "folder_files",
    "parse_json",
    "read_file",
    "read_npz",
]

# model.json of the largest real models (a pipeline with thousands of categories) is a few MB.
MAX_JSON_BYTES = 64 * 1024 * 1024
# A pipeline's metadata nests about a dozen levels; anything far deeper is hostile.
MAX_JSON_DEPTH = 64
# np.savez stores members uncompressed (ratio 1); real float data deflates < 5:1. The slack lets
# small, very regular arrays (all zeros) through while a zip bomb (1000:1) is refused.
MAX_COMPRESSION_RATIO = 20
_RATIO_SLACK_BYTES = 1024 * 1024
MAX_NPZ_MEMBERS = 10_000
MAX_FOLDER_DEPTH = 8
MAX_FOLDER_ENTRIES = 10_000
# bool, signed/unsigned integers, floats, complex, unicode and byte strings: never object,
# structured (void) or datetime arrays.
_ARRAY_KINDS = "biufcUS"
_MEMBER = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*/)*[A-Za-z0-9_][A-Za-z0-9._-]*\.npy\Z")
_NPZ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    ValueError,
    TypeError,
    KeyError,
    OSError,
    EOFError,
    NotImplementedError,
    MemoryError,
)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def folder_files(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (relative POSIX path -> size), following no link."""
    found: dict[str, int] = {}
    pending: list[tuple[Path, int]] = [(root, 0)]
    entries = 0
    while pending:
        folder, depth = pending.pop()
        if depth > MAX_FOLDER_DEPTH:
            raise ArtifactError(f"{folder} is nested more than {MAX_FOLDER_DEPTH} levels deep")
        with os.scandir(folder) as listing:
            for entry in listing:
                entries += 1
                if entries > MAX_FOLDER_ENTRIES:
                    raise ArtifactError(f"{root} holds more than {MAX_FOLDER_ENTRIES} entries")
                path = Path(entry.path)
                if entry.is_symlink():
                    raise ArtifactError(
                        f"{path} is a symbolic link; an artifact holds regular files only"
                    )
                if entry.is_dir(follow_symlinks=False):
                    pending.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    found[path.relative_to(root).as_posix()] = size
                else:
                    raise ArtifactError(f"{path} is not a regular file (a device, FIFO or socket)")
    return found


def read_file(path: Path, size: int | None = None, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, not following a link, checked for its size."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise ArtifactError(f"{path} cannot be opened: {_one_line(error)}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{path} is not a regular file")
        if size is not None and info.st_size != size:
            raise ArtifactError(
                f"{path} is {info.st_size} bytes but model.json lists {size}: it was modified"
            )
        if limit is not None and info.st_size > limit:
            raise ArtifactError(f"{path} is {info.st_size} bytes; the limit is {limit}")
        return file.read()


def parse_json(data: bytes, where: str) -> Any:
    """``data`` parsed as JSON, refused beyond :data:`MAX_JSON_BYTES` / :data:`MAX_JSON_DEPTH`."""
    if len(data) > MAX_JSON_BYTES:
        raise ArtifactError(f"{where} is {len(data)} bytes; the limit is {MAX_JSON_BYTES}")
    try:
        value = json.loads(data)
    except RecursionError:
        raise ArtifactError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, int digit limit
        raise ArtifactError(f"{where} is not valid JSON: {_one_line(error)}") from None
    _check_depth(value, where)
    return value


def _check_depth(value: Any, where: str) -> None:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ArtifactError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            pending.extend((child, depth + 1) for child in children)


def read_npz(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``np.savez`` archive, every member checked before it is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise ArtifactError(f"{where} has more than {MAX_NPZ_MEMBERS} arrays")
            names = [m.filename for m in members]
            if len(set(names)) != len(names):
                raise ArtifactError(f"{where} holds an array name twice")
            return {m.filename[: -len(".npy")]: _read_member(archive, m, where) for m in members}
    except ArtifactError:
        raise
    except _NPZ_ERRORS as error:
        raise ArtifactError(f"{where} cannot be read safely: {_one_line(error)}") from None


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> np.ndarray:
    name = member.filename
    if not _MEMBER.match(name):
        raise ArtifactError(f"{where} has an unexpected member {name[:80]!r}")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArtifactError(f"{where}: {name} uses an unsupported compression")
    if member.flag_bits & 0x1:
        raise ArtifactError(f"{where}: {name} is encrypted")
    bound = MAX_COMPRESSION_RATIO * member.compress_size + _RATIO_SLACK_BYTES
    if member.file_size > bound:
        raise ArtifactError(
            f"{where}: {name} inflates {member.compress_size} bytes to {member.file_size} "
            f"(more than {MAX_COMPRESSION_RATIO}:1)"
        )
    with archive.open(member) as file:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            raise ArtifactError(f"{where}: {name} has npy format version {version}")
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
            raise ArtifactError(f"{where}: {name} has dtype {dtype}, which is not allowed")
        declared = math.prod(shape) * dtype.itemsize
        if file.tell() + declared != member.file_size:
            raise ArtifactError(
                f"{where}: {name} declares shape {shape} of {dtype} ({declared} bytes) but "
                f"holds {member.file_size - file.tell()} bytes"
            )
        payload = file.read(declared)
    if len(payload) != declared:
        raise ArtifactError(f"{where}: {name} is truncated")
    order: Literal["C", "F"] = "F" if fortran else "C"
    return np.frombuffer(payload, dtype=dtype).reshape(shape, order=order).copy(order="K")
