"""The model registry: named, versioned artifacts in a directory with an SQLite index.

A URI root (``Registry("s3://bucket/models")``) gives the same interface with everything kept
in the object store, no local index: see :mod:`._object_index` (version records created with
conditional writes, stages as an append-only event log). This module describes the local one.

Layout::

    ROOT/index.sqlite        versions, stages, metrics, lineage, stage history
    ROOT/NAME/VERSION/       one artifact directory per version (model.json, arrays.npz, ...)
    ROOT/.incoming/          artifacts being written, before they get a version number

Concurrency. Several processes may register at once. The slow part (writing the artifact)
happens outside any lock, into ``.incoming/``. Then one short ``BEGIN IMMEDIATE`` transaction
(SQLite's write lock; other writers wait on the busy timeout) picks the next version number,
renames the finished directory to ``NAME/VERSION`` (an atomic ``rename`` on one filesystem),
inserts the row and commits. If anything fails before the commit the rename is undone, so the
index and the directories never disagree and no version number is handed out twice. Version
numbers are one more than the larger of the indexed maximum and any directory already on disk,
so a directory left by a crash between rename and commit is never overwritten.

Version numbers are never reused, not even after a version is deleted: ``NAME:3`` always
means the same model.

Stages: a version is in no stage until promoted to ``staging``, ``production`` or
``archived``. Promoting a version to production archives the previous production version of
that name (unless ``archive_existing=False``). ``NAME@STAGE`` names the newest version in
that stage; ``NAME:3`` a version; ``NAME`` or ``NAME:latest`` the newest version.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import _remote, crypto
from shardlearn.registry._version import STAGES, ModelVersion, check_name, check_stage, now
from shardlearn.registry.artifact import MODEL_JSON, Artifact, is_artifact, read_artifact, save

__all__ = [
    "DEFAULT_ROOT",
    "INDEX_FILE",
    "STAGES",
    "ModelVersion",
    "Registry",
    "read_verified",
    "resolve_reference",
]

DEFAULT_ROOT = "models"
ROOT_ENV = "SHARDLEARN_MODELS"
INDEX_FILE = "index.sqlite"
INCOMING_DIR = ".incoming"
# Writers hold the lock for milliseconds; a generous timeout rides out bursts of registrations.
BUSY_TIMEOUT_SECONDS = 120.0
# Used with fullmatch ("$" would accept a trailing newline); the name is then check_name'd.
_REF = re.compile(r"(?P<name>[^@:]+?)(?:(?::(?P<version>[^@:]+))|(?:@(?P<stage>[^@:]+)))?")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    model_type TEXT NOT NULL,
    stage TEXT,
    created_at TEXT NOT NULL,
    metrics TEXT,
    lineage TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    signed INTEGER NOT NULL,
    encrypted INTEGER NOT NULL,
    description TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stage_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    stage TEXT,
    previous TEXT,
    at TEXT NOT NULL
);
"""
_COLUMNS = (
    "name, version, path, model_type, stage, created_at, metrics, lineage, artifact_sha256, "
    "signed, encrypted, description"
)


class Registry:
    """Versioned model artifacts under ``root`` with an SQLite index.

    Parameters
    ----------
    root : path or URI, default "models"
        The registry directory; created on first registration. A ``pyarrow.fs`` URI such as
        ``s3://bucket/models?endpoint_override=HOST:PORT&scheme=http`` builds an
        :class:`~shardlearn.registry._object_index.ObjectRegistry` (no local index file).
    allow_unsigned, allow_unencrypted : bool, default False
        The default policy of :meth:`read` and :meth:`load` (a server sets it once): accept
        unsigned (plaintext) versions although a signing (encryption) key is configured.

    Examples
    --------
    >>> import numpy as np
    >>> import shardlearn as sl
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> model = sl.LogisticRegression().fit(X, y, engine="local")
    >>> reg = sl.Registry("models")
    >>> mv = reg.register(model, "loans", metrics={"accuracy": 0.91})
    >>> reg.promote("loans", mv.version, "production").stage
    'production'
    >>> model = sl.load("models/loans@production")
    """

    def __new__(cls, root: str | os.PathLike[str] = DEFAULT_ROOT, **_: Any) -> Registry:
        # A URI root (s3://...) is a registry kept entirely in the object store.
        if cls is Registry and _remote.is_uri(root):
            from shardlearn.registry._object_index import ObjectRegistry

            return super().__new__(ObjectRegistry)
        return super().__new__(cls)

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_ROOT,
        *,
        allow_unsigned: bool = False,
        allow_unencrypted: bool = False,
    ) -> None:
        self.root = Path(root)
        self.allow_unsigned = allow_unsigned
        self.allow_unencrypted = allow_unencrypted

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def index_path(self) -> Path:
        """The SQLite index file."""
        return self.root / INDEX_FILE

    @property
    def exists(self) -> bool:
        """Whether the registry has an index yet."""
        return self.index_path.is_file()

    # -- the index ------------------------------------------------------------------------
    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.exists:
            raise ArtifactError(f"no model registry at {self.root} (no {INDEX_FILE})")
        connection = sqlite3.connect(
            self.index_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            if write:
                # Take the write lock up front, so two writers never both read the same max.
                connection.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
            yield connection
            if write:
                connection.execute("COMMIT")
        except BaseException:
            if write and connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def _row_to_version(self, row: tuple) -> ModelVersion:
        (name, version, path, model_type, stage, created, metrics, lineage, sha, signed,
         encrypted, description) = row  # fmt: skip
        return ModelVersion(
            name=name,
            version=int(version),
            path=self.root / path,
            model_type=model_type,
            stage=stage,
            created_at=created,
            metrics=json.loads(metrics) if metrics else None,
            lineage=json.loads(lineage),
            artifact_sha256=sha,
            signed=bool(signed),
            encrypted=bool(encrypted),
            description=description,
        )

    def _query(self, sql: str, params: tuple = ()) -> list[ModelVersion]:
        if not self.exists:
            return []
        with self._connect() as connection:
            rows = connection.execute(f"SELECT {_COLUMNS} FROM versions {sql}", params).fetchall()
        return [self._row_to_version(row) for row in rows]

    # -- registering ----------------------------------------------------------------------
    def _next_version(self, connection: sqlite3.Connection, name: str) -> int:
        (indexed,) = connection.execute(
            "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (name,)
        ).fetchone()
        (issued,) = connection.execute(
            "SELECT COALESCE(MAX(last_version), 0) FROM names WHERE name = ?", (name,)
        ).fetchone()
        directory = self.root / name
        on_disk = (
            [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
            if (directory.is_dir())
            else []
        )
        # Never hand out a number twice, not even one whose version was deleted: a reference
        # such as "loans:3" must always mean the same model.
        version = max([int(indexed), int(issued), *on_disk]) + 1
        connection.execute(
            "INSERT INTO names (name, last_version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version",
            (name, version),
        )
        return version

    def register(
        self,
        model: Any,
        name: str,
        *,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        parent: str | None = None,
        stage: str | None = None,
        description: str | None = None,
        sign: bool | bytes | str | None = None,
        encrypt: bool | bytes | str | None = None,
    ) -> ModelVersion:
        """Save ``model`` as the next version of ``name`` and index it.

        Parameters
        ----------
        model : estimator, Pipeline or Preprocessor
        name : str
            Letters, digits, ``.``, ``_``, ``-``.
        metrics : dict, optional
            Evaluation metrics (numbers), shown by ``shardlearn models list``.
        lineage : dict, optional
            ``dataset_manifest_sha256``, ``engine``, ``workers`` and anything else to record;
            the model's parameters are added automatically.
        parent : str, optional
            The model this one derives from, ``"NAME:VERSION"`` (checked to exist).
        stage : {"staging", "production", "archived"}, optional
            Promote the new version right away.
        description : str, optional
        sign, encrypt : optional
            As in :func:`shardlearn.registry.save`.

        Returns
        -------
        ModelVersion
            With ``.version`` the new version number.
        """
        check_name(name)
        if stage is not None:
            check_stage(stage)
        lineage = dict(lineage or {})
        if parent is not None:
            lineage["parent"] = self.resolve(parent).ref
        incoming = self._incoming()
        save(model, incoming, sign=sign, encrypt=encrypt, metrics=metrics, lineage=lineage)
        keys = {  # explicit keys given to save are needed to read the artifact back
            "signing_key": sign if isinstance(sign, bytes | str) else None,
            "encryption_key": encrypt if isinstance(encrypt, bytes | str) else None,
        }
        try:
            return self._index_artifact(incoming, name, stage, description, keys)
        finally:
            if incoming.exists():
                shutil.rmtree(incoming, ignore_errors=True)

    def add_artifact(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        stage: str | None = None,
        description: str | None = None,
        signing_key: bytes | str | None = None,
        encryption_key: bytes | str | None = None,
    ) -> ModelVersion:
        """Copy an existing artifact (directory or URI) into the registry as the next version.

        The artifact is verified first (signature and hashes), so a tampered artifact never
        enters the registry.
        """
        check_name(name)
        if stage is not None:
            check_stage(stage)
        keys: dict[str, Any] = {"signing_key": signing_key, "encryption_key": encryption_key}
        incoming = self._incoming()
        incoming.parent.mkdir(parents=True, exist_ok=True)
        if _remote.is_uri(path):
            with _remote.downloaded(str(path)) as local:
                read_artifact(local, **keys)
                shutil.copytree(local, incoming)
        else:
            read_artifact(path, **keys)
            shutil.copytree(path, incoming)
        try:
            return self._index_artifact(incoming, name, stage, description, keys)
        finally:
            if incoming.exists():
                shutil.rmtree(incoming, ignore_errors=True)

    def _incoming(self) -> Path:
        """A fresh folder path (not yet created) for an artifact being written."""
        return self.root / INCOMING_DIR / uuid.uuid4().hex

    @staticmethod
    def _describe(incoming: Path, description: str | None, keys: dict) -> dict[str, Any]:
        """The index fields of the finished artifact in ``incoming`` (read back and checked)."""
        header_bytes = (incoming / MODEL_JSON).read_bytes()
        # Registering records what was written; the signing/encryption policy applies on load.
        artifact = read_artifact(incoming, allow_unsigned=True, allow_unencrypted=True, **keys)
        meta = artifact.meta
        lineage = dict(meta.get("lineage") or {})
        if meta.get("dataset_manifest_sha256"):
            lineage["dataset_manifest_sha256"] = meta["dataset_manifest_sha256"]
        lineage.update({k: v for k, v in (meta.get("training") or {}).items()})
        return {
            "model_type": artifact.model_type,
            "created_at": now(),
            "metrics": meta["metrics"] if meta.get("metrics") else None,
            "lineage": lineage,
            "artifact_sha256": crypto.sha256_bytes(header_bytes),
            "signed": bool(artifact.signed),
            "encrypted": bool(artifact.encrypted),
            "description": description,
        }

    def _index_artifact(
        self, incoming: Path, name: str, stage: str | None, description: str | None, keys: dict
    ) -> ModelVersion:
        row = self._describe(incoming, description, keys)
        metrics = json.dumps(row["metrics"]) if row["metrics"] else None
        renamed: Path | None = None
        try:
            with self._connect(write=True) as connection:
                version = self._next_version(connection, name)
                target = self.root / name / str(version)
                target.parent.mkdir(parents=True, exist_ok=True)
                incoming.rename(target)
                renamed = target
                connection.execute(
                    f"INSERT INTO versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, version, f"{name}/{version}", row["model_type"], None,
                     row["created_at"], metrics, json.dumps(row["lineage"]),
                     row["artifact_sha256"], int(row["signed"]), int(row["encrypted"]),
                     row["description"]),
                )  # fmt: skip
                if stage is not None:
                    self._set_stage(connection, name, version, stage, archive_existing=True)
        except BaseException:
            # Not committed: take the directory back out, so index and disk agree.
            if renamed is not None and renamed.exists() and not incoming.exists():
                renamed.rename(incoming)
            raise
        return self.get(name, version)

    # -- reading --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered model names, sorted."""
        return sorted({mv.name for mv in self._query("")})

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of ``name``, or of all names), ordered by name then version."""
        if name is None:
            return self._query("ORDER BY name, version")
        return self._query("WHERE name = ? ORDER BY version", (check_name(name),))

    def get(
        self, name: str, version: int | None = None, *, stage: str | None = None
    ) -> ModelVersion:
        """One version: by number, the newest in ``stage``, or the newest of all.

        Raises
        ------
        ArtifactError
            If there is no such model, version or stage, naming what exists.
        """
        versions = self.list(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ArtifactError(
                f"no model named {name!r} in the registry at {self.root} (models: {known})"
            )
        if version is not None:
            found = [mv for mv in versions if mv.version == int(version)]
            if not found:
                numbers = ", ".join(str(mv.version) for mv in versions)
                raise ArtifactError(f"{name} has no version {version} (versions: {numbers})")
            return found[0]
        if stage is not None:
            found = [mv for mv in versions if mv.stage == check_stage(stage)]
            if not found:
                raise ArtifactError(
                    f"{name} has no version in stage {stage!r}; promote one with "
                    f"`shardlearn models promote {name} VERSION {stage}`"
                )
            return found[-1]
        return versions[-1]

    def resolve(self, ref: str) -> ModelVersion:
        """The version named by ``"NAME"``, ``"NAME:latest"``, ``"NAME:3"`` or ``"NAME@STAGE"``."""
        match = _REF.fullmatch(ref)
        if match is None:
            raise ArtifactError(
                f"invalid model reference {ref!r}: use NAME, NAME:VERSION or NAME@STAGE"
            )
        name, version, stage = match["name"], match["version"], match["stage"]
        if version is not None and version != "latest":
            if not version.isdigit():
                raise ArtifactError(f"invalid version {version!r} in {ref!r}: use a number")
            return self.get(name, int(version))
        return self.get(name, stage=stage)

    def read(self, ref: str, **options: Any) -> Artifact:
        """The verified :class:`~shardlearn.registry.artifact.Artifact` of ``ref``.

        Every loader of a registered version ends here: the artifact's ``model.json`` must
        have the sha256 the index recorded for this name and version (which pins its
        artifact id and every file's hash), besides the checks of
        :func:`~shardlearn.registry.artifact.read_artifact`, whose keyword ``options``
        (keys, ``allow_unsigned``, ``allow_unencrypted``; the last two default to the
        registry's own) are passed on.
        """
        mv = self.resolve(ref)
        options.setdefault("allow_unsigned", self.allow_unsigned)
        options.setdefault("allow_unencrypted", self.allow_unencrypted)
        return read_artifact(mv.path, expected_sha256=mv.artifact_sha256, **options)

    def load(self, ref: str, **keys: Any) -> Any:
        """The model of ``ref`` (see :meth:`resolve`), verified and rebuilt."""
        return self.read(ref, **keys).to_model()

    # -- changing -------------------------------------------------------------------------
    def _set_stage(
        self,
        connection: sqlite3.Connection,
        name: str,
        version: int,
        stage: str | None,
        archive_existing: bool,
    ) -> None:
        (previous,) = connection.execute(
            "SELECT stage FROM versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        if stage == "production" and archive_existing:
            for (other,) in connection.execute(
                "SELECT version FROM versions WHERE name = ? AND stage = 'production' "
                "AND version != ?",
                (name, version),
            ).fetchall():
                self._record_stage(connection, name, other, "archived", "production")
        self._record_stage(connection, name, version, stage, previous)

    def _record_stage(
        self, connection: sqlite3.Connection, name: str, version: int, stage: str | None,
        previous: str | None,
    ) -> None:  # fmt: skip
        connection.execute(
            "UPDATE versions SET stage = ? WHERE name = ? AND version = ?", (stage, name, version)
        )
        connection.execute(
            "INSERT INTO stage_events (name, version, stage, previous, at) VALUES (?,?,?,?,?)",
            (name, version, stage, previous, now()),
        )

    def promote(
        self, name: str, version: int, stage: str, *, archive_existing: bool = True
    ) -> ModelVersion:
        """Move ``name:version`` to ``stage``; promoting to production archives the previous one.

        Parameters
        ----------
        name : str
        version : int
        stage : {"staging", "production", "archived"}
        archive_existing : bool, default True
            When promoting to production, move the current production version to archived.
        """
        check_stage(stage)
        self.get(name, version)
        with self._connect(write=True) as connection:
            self._set_stage(connection, name, int(version), stage, archive_existing)
        return self.get(name, version)

    def history(self, name: str) -> builtins.list[dict[str, Any]]:
        """Stage changes of ``name``, oldest first: version, stage, previous, at."""
        self.get(name)
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT version, stage, previous, at FROM stage_events WHERE name = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [dict(zip(("version", "stage", "previous", "at"), r, strict=True)) for r in rows]

    def delete(
        self, name: str, version: int | None = None, *, force: bool = False
    ) -> builtins.list[int]:
        """Delete one version (or every version of ``name``); returns the deleted numbers.

        A production version is kept unless ``force=True``.
        """
        targets = [self.get(name, version)] if version is not None else self.list(name)
        if not targets:
            self.get(name)  # raises the "no model named" error
        live = [mv.version for mv in targets if mv.stage == "production"]
        if live and not force:
            raise ArtifactError(
                f"{name}:{live[0]} is in production; archive it first or pass force=True (--force)"
            )
        trash = self.root / INCOMING_DIR / f"deleted-{uuid.uuid4().hex}"
        moved: list[tuple[Path, Path]] = []
        try:
            with self._connect(write=True) as connection:
                for mv in targets:
                    connection.execute(
                        "DELETE FROM versions WHERE name = ? AND version = ?", (name, mv.version)
                    )
                    path = Path(mv.path)  # a local registry's versions are directories
                    if path.exists():
                        destination = trash / str(mv.version)
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        path.rename(destination)
                        moved.append((destination, path))
        except BaseException:
            for destination, original in moved:
                destination.rename(original)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return [mv.version for mv in targets]

    # -- checking -------------------------------------------------------------------------
    def verify(
        self, ref: str | None = None, **keys: Any
    ) -> builtins.list[tuple[ModelVersion, str | None]]:
        """Check every version (or ``ref``): signature, file hashes, index hash.

        Returns
        -------
        list of (ModelVersion, error message or None)
        """
        versions = [self.resolve(ref)] if ref else self.list()
        results: list[tuple[ModelVersion, str | None]] = []
        for mv in versions:
            try:
                self.read(mv.ref, **keys)
            except ArtifactError as error:
                results.append((mv, str(error)))
            else:
                results.append((mv, None))
        return results

    def orphans(self) -> builtins.list[Path]:
        """Version directories on disk that the index does not know (left by a crash)."""
        known = {mv.path for mv in self.list()}
        found = []
        for directory in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if directory.is_dir() and not directory.name.startswith("."):
                found += [p for p in directory.iterdir() if p.name.isdigit() and p not in known]
        return found


def _reference_registry(ref: str) -> tuple[Registry, str]:
    """The registry of a reference such as ``"models/loans@production"`` and its ``NAME...``."""
    text = str(ref)
    head, _, tail = text.rpartition("/")
    root = head or os.environ.get(ROOT_ENV, DEFAULT_ROOT)
    registry = Registry(root)
    if not registry.exists:
        if Path(text).exists():
            raise ArtifactError(f"{text} is not a model artifact: no {MODEL_JSON} in it")
        raise ArtifactError(
            f"cannot find model {text!r}: it is neither an artifact directory nor in a "
            f"registry (no {INDEX_FILE} in {root})"
        )
    return registry, tail


def resolve_reference(ref: str) -> Path | str:
    """The artifact directory of a registry reference such as ``"models/loans@production"``
    (its URI in a registry at an ``s3://`` root).

    ``ROOT/NAME@STAGE``, ``ROOT/NAME:VERSION`` and ``ROOT/NAME`` (newest version) are
    accepted; without ``ROOT/`` the root is ``$SHARDLEARN_MODELS`` or ``models``. To read the
    version, use :func:`read_verified`, which also checks it against the index.
    """
    registry, tail = _reference_registry(ref)
    mv = registry.resolve(tail)
    if not is_artifact(mv.path):
        raise ArtifactError(f"{mv.ref} is indexed but its directory {mv.path} is missing")
    return mv.path


def _registry_version_at(path: Path) -> tuple[Registry, str] | None:
    """``(registry, "NAME:VERSION")`` when ``path`` is a version directory of a registry.

    Symbolic links are resolved first, so a link to a version directory is checked too.
    """
    directory = path.resolve()
    root = directory.parent.parent
    if not directory.name.isdigit() or not (root / INDEX_FILE).is_file():
        return None
    return Registry(root), f"{directory.parent.name}:{int(directory.name)}"


def read_verified(path_or_ref: str | os.PathLike[str], **options: Any) -> Artifact:
    """The verified artifact of a path, URI or registry reference: the one entry point of
    every loader (``shardlearn.load``, ``predict``, ``evaluate``, ``serve``).

    A registry reference (``ROOT/NAME@STAGE``, ``ROOT/NAME:VERSION``, ``ROOT/NAME``) and a
    version directory inside a registry (``ROOT/NAME/3``) are read with
    :meth:`Registry.read`, so they must match the index: a version directory replaced by a
    copy of another version (a rollback) is refused even though its own signature verifies.
    An artifact outside any registry, or at a URI, is read with
    :func:`~shardlearn.registry.artifact.read_artifact`. ``options`` are passed on (keys,
    ``allow_unsigned``, ``allow_unencrypted``).
    """
    if _remote.is_uri(path_or_ref):
        return _read_verified_uri(str(path_or_ref), **options)
    if is_artifact(path_or_ref):
        located = _registry_version_at(Path(path_or_ref))
        if located is None:
            return read_artifact(path_or_ref, **options)
        registry, ref = located
        return registry.read(ref, **options)
    registry, tail = _reference_registry(str(path_or_ref))
    mv = registry.resolve(tail)
    if not is_artifact(mv.path):
        raise ArtifactError(f"{mv.ref} is indexed but its directory {mv.path} is missing")
    return registry.read(mv.ref, **options)


def _read_verified_uri(uri: str, **options: Any) -> Artifact:
    """:func:`read_verified` of a URI: an artifact, or a reference into an object registry.

    ``s3://bucket/models/loans@production?endpoint_override=...`` names a version of the
    registry at ``s3://bucket/models?endpoint_override=...``; an artifact inside such a
    registry is checked against its version record like a local version directory.
    """
    from shardlearn.registry._object_index import ObjectRegistry, is_object_registry

    location, _, query = uri.partition("?")
    head, _, tail = location.rstrip("/").rpartition("/")
    suffix = f"?{query}" if query else ""
    if is_artifact(uri):
        # ROOT/NAME/artifacts/<id>: the registry root is three levels up.
        root, _, parts = head.rpartition("/")
        root, _, name = root.rpartition("/")
        if parts == "artifacts" and is_object_registry(root + suffix):
            registry = ObjectRegistry(root + suffix)
            ref = registry.version_at(name, tail)
            if ref is None:
                raise ArtifactError(
                    f"{uri} is an artifact of the registry at {root} that no version refers "
                    "to (deleted, or a registration that never completed); refusing to load it"
                )
            return registry.read(ref, **options)
        return read_artifact(uri, **options)
    if head and "://" in head and is_object_registry(head + suffix):
        return Registry(head + suffix).read(tail, **options)
    return read_artifact(uri, **options)
