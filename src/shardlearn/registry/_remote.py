"""Artifacts at ``pyarrow.fs`` URIs (``s3://bucket/models/loans``, ``gs://...``, ``file://...``).

An artifact at a URI is written locally first (with all its checks), then uploaded file by
file with ``model.json`` last, so a reader never sees a ``model.json`` whose files are not all
there yet. Reading downloads the artifact's files into a temporary directory and verifies them
exactly like a local artifact; error messages name the URI, not the temporary copy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

from shardlearn.exceptions import ArtifactError, ShardlearnError

__all__ = ["downloaded", "file_names", "is_uri", "read_member", "remote_exists", "remove", "upload"]

MODEL_JSON = "model.json"


def is_uri(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    from shardlearn.data.dataset import resolve_filesystem

    try:
        return resolve_filesystem(uri)
    except ShardlearnError as error:
        raise ArtifactError(str(error)) from None


def remote_exists(uri: str) -> bool:
    """Whether an artifact (its ``model.json``) exists at ``uri``."""
    filesystem, root = _filesystem(uri)
    info = filesystem.get_file_info(f"{root.rstrip('/')}/{MODEL_JSON}")
    return info.type == pafs.FileType.File


def file_names(uri: str) -> list[str] | None:
    """Paths (relative to ``uri``) of every file under ``uri``; ``None`` if ``uri`` is a file."""
    filesystem, root = _filesystem(uri)
    root = root.rstrip("/")
    try:
        kind = filesystem.get_file_info(root).type
        if kind == pafs.FileType.File:
            return None
        if kind == pafs.FileType.NotFound:
            return []
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as error:
        raise ArtifactError(f"cannot list {uri}: {error}") from None
    return [i.path[len(root) :].lstrip("/") for i in infos if i.type == pafs.FileType.File]


def read_member(uri: str, relative: str) -> bytes:
    """The bytes of the file ``relative`` under ``uri``."""
    filesystem, root = _filesystem(uri)
    try:
        with filesystem.open_input_stream(f"{root.rstrip('/')}/{relative}") as stream:
            return stream.read()
    except OSError as error:
        raise ArtifactError(f"cannot read {relative} at {uri}: {error}") from None


def remove(uri: str) -> None:
    """Delete the artifact at ``uri`` (before overwriting it, so no stale file stays)."""
    filesystem, root = _filesystem(uri)
    try:
        filesystem.delete_dir(root.rstrip("/"))
    except OSError as error:
        raise ArtifactError(f"cannot replace the artifact at {uri}: {error}") from None


def upload(local: Path, uri: str) -> None:
    """Copy the artifact directory ``local`` to ``uri``, ``model.json`` last."""
    filesystem, root = _filesystem(uri)
    root = root.rstrip("/")
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == MODEL_JSON)  # stable: model.json goes last
    try:
        filesystem.create_dir(root, recursive=True)
        for file in files:
            relative = file.relative_to(local).as_posix()
            if "/" in relative:
                filesystem.create_dir(f"{root}/{relative.rsplit('/', 1)[0]}", recursive=True)
            with filesystem.open_output_stream(f"{root}/{relative}") as stream:
                stream.write(file.read_bytes())
    except OSError as error:
        raise ArtifactError(f"cannot write the artifact to {uri}: {error}") from None


@contextmanager
def downloaded(uri: str) -> Iterator[Path]:
    """A temporary local copy of the artifact at ``uri`` (removed on exit).

    ArtifactErrors raised inside the block name ``uri`` instead of the temporary directory.
    """
    filesystem, root = _filesystem(uri)
    root = root.rstrip("/")
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (FileNotFoundError, OSError) as error:
        raise ArtifactError(f"cannot read the artifact at {uri}: {error}") from None
    with tempfile.TemporaryDirectory(prefix="shardlearn-artifact-") as tmp:
        local = Path(tmp) / "artifact"
        local.mkdir()
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(root) :].lstrip("/")
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with filesystem.open_input_stream(info.path) as stream:
                target.write_bytes(stream.read())
        try:
            yield local
        except ArtifactError as error:
            raise ArtifactError(str(error).replace(str(local), uri)) from None
