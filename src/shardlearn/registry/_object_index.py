"""The model registry kept in an object store (``s3://bucket/models``): no local index file.

Layout under the root URI::

    registry.json                         marks the root as a registry (format, layout)
    NAME/artifacts/<32 hex>/...           one artifact per registration, uploaded model.json last
    NAME/versions/0000000042.json         the version record: the commit point of NAME:42
    NAME/events/0000000007.json           a stage change (or deletion), in order

Every record and event is written once and never changed, with a *conditional create*
(S3 ``PUT`` with ``If-None-Match: *``; a hard link on a local ``file://`` root): of two
writers racing for ``NAME/versions/0000000042.json`` exactly one succeeds, the other gets
HTTP 412 and tries 43. That is the whole allocation protocol -- no lock and no lease, so a
writer that stalls (a GC pause, a lost network, a killed process) holds nothing up and can
never later overwrite someone else's version.

Registering uploads the artifact to a fresh ``artifacts/<uuid>`` prefix first (slow, outside
any coordination), then writes the version record (one small ``PUT``). A writer killed
before that ``PUT`` (or failing in it) leaves an unreferenced artifact (see
:meth:`ObjectRegistry.orphans`) and no visible version; the record is a single object, so a
half-written version cannot be seen. A ``PUT`` that S3 applied but whose response was lost is
retried by the client and answered 412; the writer then finds its own record (the artifact
path is unique to it) and keeps that number instead of taking a second one.

Stages and history are an append-only log: each promotion (with the archiving of the previous
production version) or deletion is one event object, created conditionally under the next
event number; the current stage of every version is the replay of the log. Two concurrent
promotions therefore serialise: the loser re-reads the log and retries on top of it.

The design relies on the store's strong read-after-write consistency for ``PUT``, ``GET`` and
``LIST`` (S3 since December 2020, GCS, Azure, MinIO) and on conditional create. Stores that
pyarrow reaches but where shardlearn cannot create-if-absent are refused, never used unsafely.

Records are untrusted input like artifacts: bounded in size and depth, every field checked,
and a record's artifact path must be ``NAME/artifacts/<32 hex>`` (never a path of its
choosing). Loading still verifies the artifact against the record's ``model.json`` sha256,
its signature and every file hash, exactly as for a local registry.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from shardlearn.exceptions import ArtifactError, ShardlearnError
from shardlearn.registry import _remote, _untrusted
from shardlearn.registry._version import ModelVersion, check_name, check_stage, now
from shardlearn.registry.store import Registry

__all__ = ["MARKER", "ObjectRegistry", "ObjectStore", "is_object_registry"]

MARKER = "registry.json"
LAYOUT = {"format": "shardlearn-registry", "layout": "objects", "format_version": 1}
# Records are a few hundred bytes; metrics and lineage of real models stay far below this.
MAX_RECORD_BYTES = 1024 * 1024
# Each attempt moves one number up; this many concurrent writers of one name is implausible.
MAX_ATTEMPTS = 10_000
_DIGITS = 10
_RECORD = re.compile(r"\d{10}\.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ARTIFACT = re.compile(r"[0-9a-f]{32}")
# pyarrow's S3 URI options that the conditional PUT (through boto3) must honour as well.
_S3_OPTIONS = {"endpoint_override", "scheme", "region", "access_key", "secret_key",
               "session_token"}  # fmt: skip


class ObjectStore:
    """Reads, listings and conditional creates of small objects under a ``pyarrow.fs`` root."""

    def __init__(self, uri: str) -> None:
        from shardlearn.data.dataset import resolve_filesystem

        try:
            self.filesystem, base = resolve_filesystem(uri)
        except ShardlearnError as error:
            raise ArtifactError(str(error)) from None
        self.uri = uri
        self.base = base.rstrip("/")
        self._create = self._creator()

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def uri_of(self, relative: str) -> str:
        """The full URI of ``relative`` (the root's query options kept at the end)."""
        from shardlearn.data.dataset import join_uri

        return join_uri(self.uri, relative)

    def read(self, relative: str) -> bytes | None:
        """The object's bytes (at most :data:`MAX_RECORD_BYTES`), or ``None`` if absent."""
        try:
            with self.filesystem.open_input_stream(self.path(relative)) as stream:
                data = stream.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ArtifactError(f"cannot read {self.uri_of(relative)}: {error}") from None
        if len(data) > MAX_RECORD_BYTES:
            raise ArtifactError(f"{self.uri_of(relative)} is larger than {MAX_RECORD_BYTES} B")
        return data

    def listing(self, relative: str, kind: pafs.FileType) -> list[str]:
        """Base names of the files (or directories) directly under ``relative``, sorted."""
        selector = pafs.FileSelector(self.path(relative).rstrip("/"), allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except OSError as error:
            raise ArtifactError(f"cannot list {self.uri_of(relative)}: {error}") from None
        return sorted(i.base_name for i in infos if i.type == kind)

    def create(self, relative: str, data: bytes) -> bool:
        """Write ``data`` only if nothing is at ``relative``; False if something already was."""
        return self._create(self.path(relative), data)

    def remove_dir(self, relative: str) -> None:
        try:
            self.filesystem.delete_dir(self.path(relative))
        except FileNotFoundError:
            pass
        except OSError as error:
            raise ArtifactError(f"cannot delete {self.uri_of(relative)}: {error}") from None

    def _creator(self) -> Any:
        if isinstance(self.filesystem, pafs.S3FileSystem):
            return _s3_creator(self.uri)
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            return _local_create
        raise ArtifactError(
            f"a registry at {self.uri} needs a store that can create an object only if it is "
            f"absent; shardlearn does this on s3:// (and file://), not on "
            f"{type(self.filesystem).__name__}. Use an s3:// root (MinIO and other S3 servers "
            "work) or a local directory"
        )


def _local_create(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.link(tmp, path)  # atomic, and fails if the name exists: create-if-absent
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _s3_creator(uri: str) -> Any:
    """``create(path, data)`` through boto3's ``PutObject(IfNoneMatch="*")``.

    pyarrow's S3 filesystem has no conditional write, so this one request goes through
    boto3, configured from the same URI options (endpoint, scheme, region, keys) and the
    same environment (``AWS_*``) as pyarrow.
    """
    try:
        import boto3
        from botocore.exceptions import ClientError
    except ImportError:
        raise ArtifactError(
            f"a registry at {uri} needs boto3 for S3's conditional writes: "
            "pip install 'shardlearn[s3]'"
        ) from None
    query = {k: v[-1] for k, v in parse_qs(urlsplit(uri).query).items() if k in _S3_OPTIONS}
    endpoint = query.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=query.get("region"),
        aws_access_key_id=query.get("access_key"),
        aws_secret_access_key=query.get("secret_key"),
        aws_session_token=query.get("session_token"),
    )

    def create(path: str, data: bytes) -> bool:
        bucket, _, key = path.partition("/")
        for _ in range(MAX_ATTEMPTS):
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # 409: a racing PUT, ask again
                    raise ArtifactError(f"cannot write s3://{path}: {error}") from None
        raise ArtifactError(f"s3://{path}: conflicting writes did not settle")

    return create


def is_object_registry(uri: str) -> bool:
    """Whether ``uri`` is the root of an object-store registry (holds its marker)."""
    try:
        return ObjectStore(uri).read(MARKER) is not None
    except ArtifactError:
        return False


def _number(n: int) -> str:
    return f"{n:0{_DIGITS}d}.json"


class ObjectRegistry(Registry):
    """A :class:`~shardlearn.registry.store.Registry` whose root is a ``pyarrow.fs`` URI.

    Built by ``Registry("s3://bucket/models?...")``; the interface is the same. Version
    numbers, stages and history live in the bucket (see the module docstring).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        allow_unsigned: bool = False,
        allow_unencrypted: bool = False,
    ) -> None:
        uri = os.fspath(root)
        # The interface of Registry with a URI for its root, index file and orphans: those
        # three are str here where the local Registry has Path (by design, not a subtype slip).
        self.root = uri  # type: ignore[assignment]
        self.allow_unsigned = allow_unsigned
        self.allow_unencrypted = allow_unencrypted
        self._store = ObjectStore(uri)

    def __reduce__(self) -> tuple[Any, tuple]:
        # The S3 client is not picklable; a copy in another process builds its own.
        return _rebuild, (self.root, self.allow_unsigned, self.allow_unencrypted)

    @property
    def index_path(self) -> str:  # type: ignore[override]  # a URI (see __init__)
        """The registry's marker object (there is no index file)."""
        return self._store.uri_of(MARKER)

    @property
    def exists(self) -> bool:
        return self._store.read(MARKER) is not None

    def _check_marker(self) -> None:
        data = self._store.read(MARKER)
        if data is None:
            self._store.create(MARKER, json.dumps(LAYOUT).encode())
            data = self._store.read(MARKER)
        marker = _untrusted.parse_json(data or b"null", self.index_path)
        if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in LAYOUT.items()):
            raise ArtifactError(
                f"{self.index_path} is not a shardlearn object-store registry marker; "
                "choose another root"
            )

    # -- registering ----------------------------------------------------------------------
    def _incoming(self) -> Path:
        return Path(tempfile.gettempdir()) / f"shardlearn-incoming-{uuid.uuid4().hex}"

    def _index_artifact(
        self, incoming: Path, name: str, stage: str | None, description: str | None, keys: dict
    ) -> ModelVersion:
        record = {"name": name, **self._describe(incoming, description, keys)}
        self._check_marker()
        record["path"] = f"{name}/artifacts/{uuid.uuid4().hex}"
        _remote.upload(incoming, self._store.uri_of(record["path"]))
        # On a failure from here on the artifact stays, unreferenced (an orphan): when the
        # commit's outcome is unknown (a lost response) deleting it could break a version.
        version = self._commit(name, record)
        if stage is not None:
            return self.promote(name, version, stage)
        return self._version(name, record, None)

    def _commit(self, name: str, record: dict[str, Any]) -> int:
        """Create ``NAME/versions/N.json`` for the smallest free N above every existing one."""
        taken = self._numbers(f"{name}/versions")
        version = max(taken, default=0) + 1
        for _ in range(MAX_ATTEMPTS):
            record["version"] = version
            data = json.dumps(record, sort_keys=True).encode()
            if self._store.create(f"{name}/versions/{_number(version)}", data):
                return version
            if (self._record(name, version) or {}).get("path") == record["path"]:
                return version  # our own PUT, retried after a lost response
            version += 1  # another writer took it: numbers are never shared or reused
        raise ArtifactError(f"could not allocate a version of {name}: too many writers")

    def _numbers(self, relative: str) -> list[int]:
        files = self._store.listing(relative, pafs.FileType.File)
        return [int(f[:_DIGITS]) for f in files if _RECORD.fullmatch(f)]

    # -- reading --------------------------------------------------------------------------
    def _record(self, name: str, version: int) -> dict[str, Any] | None:
        where = self._store.uri_of(f"{name}/versions/{_number(version)}")
        data = self._store.read(f"{name}/versions/{_number(version)}")
        if data is None:
            return None
        record = _untrusted.parse_json(data, where)
        if not (
            isinstance(record, dict)
            and record.get("name") == name
            and record.get("version") == version
            and isinstance(record.get("path"), str)
            and record["path"].startswith(f"{name}/artifacts/")
            and _ARTIFACT.fullmatch(record["path"].rsplit("/", 1)[-1])
            and isinstance(record.get("artifact_sha256"), str)
            and _SHA256.fullmatch(record["artifact_sha256"])
            and isinstance(record.get("model_type"), str)
            and isinstance(record.get("created_at"), str)
            and isinstance(record.get("lineage"), dict)
            and isinstance(record.get("metrics") or {}, dict)
            and isinstance(record.get("description") or "", str)
        ):
            raise ArtifactError(f"{where} is not a valid registry version record; remove it")
        return record

    def _events(self, name: str) -> list[dict[str, Any]]:
        events = []
        for number in self._numbers(f"{name}/events"):
            where = self._store.uri_of(f"{name}/events/{_number(number)}")
            event = _untrusted.parse_json(
                self._store.read(f"{name}/events/{_number(number)}") or b"null", where
            )
            if not _valid_event(event):
                raise ArtifactError(f"{where} is not a valid registry event; remove it")
            events.append(event)
        return events

    @staticmethod
    def _replay(events: list[dict[str, Any]]) -> tuple[dict[int, str | None], set[int]]:
        stages: dict[int, str | None] = {}
        deleted: set[int] = set()
        for event in events:
            if event["kind"] == "delete":
                deleted.update(event["versions"])
            for change in event.get("changes", []):
                stages[change["version"]] = change["stage"]
        return stages, deleted

    def _version(self, name: str, record: dict[str, Any], stage: str | None) -> ModelVersion:
        return ModelVersion(
            name=name,
            version=int(record["version"]),
            path=self._store.uri_of(record["path"]),
            model_type=record["model_type"],
            stage=stage,
            created_at=record["created_at"],
            metrics=record.get("metrics"),
            lineage=record["lineage"],
            artifact_sha256=record["artifact_sha256"],
            signed=bool(record.get("signed")),
            encrypted=bool(record.get("encrypted")),
            description=record.get("description"),
        )

    def _list_name(self, name: str) -> list[ModelVersion]:
        stages, deleted = self._replay(self._events(name))
        versions = []
        for number in self._numbers(f"{name}/versions"):
            record = self._record(name, number)
            if record is not None and number not in deleted:
                versions.append(self._version(name, record, stages.get(number)))
        return versions

    def names(self) -> list[str]:
        """Registered model names (with at least one version), sorted."""
        return sorted({mv.name for mv in self.list()})

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of ``name``, or of all names), ordered by name then version."""
        if name is not None:
            return self._list_name(check_name(name))
        found = []
        for directory in self._store.listing("", pafs.FileType.Directory):
            try:
                check_name(directory)
            except ArtifactError:
                continue
            found += self._list_name(directory)
        return found

    def get(
        self, name: str, version: int | None = None, *, stage: str | None = None
    ) -> ModelVersion:
        if version is None:
            return super().get(name, stage=stage)
        record = self._record(check_name(name), int(version))
        stages, deleted = self._replay(self._events(name))
        if record is None or int(version) in deleted:
            return super().get(name, version)  # raises, naming the versions that exist
        return self._version(name, record, stages.get(int(version)))

    # -- changing -------------------------------------------------------------------------
    def _append(self, name: str, build: Any) -> None:
        """Create the next event ``build(stages, deleted)``; on a race re-read and retry."""
        for _ in range(MAX_ATTEMPTS):
            events_numbers = self._numbers(f"{name}/events")
            stages, deleted = self._replay(self._events(name))
            event = {**build(stages, deleted), "at": now(), "id": uuid.uuid4().hex}
            number = max(events_numbers, default=0) + 1
            data = json.dumps(event, sort_keys=True).encode()
            if self._store.create(f"{name}/events/{_number(number)}", data):
                return
            if self._store.read(f"{name}/events/{_number(number)}") == data:
                return  # our own PUT, retried after a lost response
        raise ArtifactError(f"could not record a change of {name}: too many writers")

    def promote(
        self, name: str, version: int, stage: str, *, archive_existing: bool = True
    ) -> ModelVersion:
        check_stage(stage)
        self.get(name, version)
        version = int(version)

        def change(stages: dict[int, str | None], deleted: set[int]) -> dict[str, Any]:
            changes = []
            if stage == "production" and archive_existing:
                changes += [
                    {"version": v, "stage": "archived", "previous": "production"}
                    for v, s in sorted(stages.items())
                    if s == "production" and v != version and v not in deleted
                ]
            changes.append({"version": version, "stage": stage, "previous": stages.get(version)})
            return {"kind": "stage", "changes": changes}

        self._append(name, change)
        return self.get(name, version)

    def history(self, name: str) -> builtins.list[dict[str, Any]]:
        self.get(name)
        return [
            {**change, "at": event["at"]}
            for event in self._events(name)
            for change in event.get("changes", [])
        ]

    def delete(
        self, name: str, version: int | None = None, *, force: bool = False
    ) -> builtins.list[int]:
        targets = [self.get(name, version)] if version is not None else self.list(name)
        if not targets:
            self.get(name)  # raises the "no model named" error
        live = [mv.version for mv in targets if mv.stage == "production"]
        if live and not force:
            raise ArtifactError(
                f"{name}:{live[0]} is in production; archive it first or pass force=True (--force)"
            )
        numbers = [mv.version for mv in targets]
        records = [self._record(name, number) for number in numbers]
        self._append(name, lambda stages, deleted: {"kind": "delete", "versions": numbers})
        for record in records:  # the records stay (tombstoned), so numbers are never reused
            if record is not None:
                self._store.remove_dir(record["path"])
        return numbers

    def orphans(self) -> builtins.list[str]:  # type: ignore[override]  # URIs (see __init__)
        """Artifacts no version record points to (left by a writer killed before its commit).

        A registration in progress has one too, until it commits: remove only old ones.
        """
        found = []
        for name in self._store.listing("", pafs.FileType.Directory):
            referenced = set()
            for number in self._numbers(f"{name}/versions"):
                record = self._record(name, number)
                referenced.add(record["path"] if record else None)
            for artifact in self._store.listing(f"{name}/artifacts", pafs.FileType.Directory):
                if f"{name}/artifacts/{artifact}" not in referenced:
                    found.append(self._store.uri_of(f"{name}/artifacts/{artifact}"))
        return found

    def version_at(self, name: str, artifact_id: str) -> str | None:
        """``"NAME:VERSION"`` of the live version whose artifact is ``artifact_id``, if any."""
        suffix = f"/{name}/artifacts/{artifact_id}"
        for mv in self.list(name):
            if str(mv.path).partition("?")[0].endswith(suffix):
                return mv.ref
        return None


def _rebuild(root: str, allow_unsigned: bool, allow_unencrypted: bool) -> ObjectRegistry:
    return ObjectRegistry(root, allow_unsigned=allow_unsigned, allow_unencrypted=allow_unencrypted)


def _valid_event(event: Any) -> bool:
    if not isinstance(event, dict) or not isinstance(event.get("at"), str):
        return False
    if event.get("kind") == "delete":
        return isinstance(event.get("versions"), list) and all(
            type(v) is int for v in event["versions"]
        )
    changes = event.get("changes")
    return (
        event.get("kind") == "stage"
        and isinstance(changes, list)
        and all(
            isinstance(c, dict)
            and type(c.get("version")) is int
            and c.get("stage") in (None, "staging", "production", "archived")
            and c.get("previous") in (None, "staging", "production", "archived")
            for c in changes
        )
    )
