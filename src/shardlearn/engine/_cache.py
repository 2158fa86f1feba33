"""Deterministic task tokens and the on-disk result cache of the task-graph scheduler.

A token is the SHA-256 of a canonical description of a task: the function's identity
(``module:qualname``), the fingerprints of its arguments, and the tokens of the tasks it
depends on -- so changing anything upstream changes every token downstream. Arguments are
fingerprinted by value (numbers, strings, containers, numpy arrays), by content hash when the
object carries one (a ``Shard``'s ``sha256``, a ``Dataset``'s ``manifest_sha256``), by path,
size and modification time for paths, and by ``get_params()`` for estimators.

Results are stored without pickle: JSON for plain values, ``.npy``/``.npz`` (no pickle
allowed) for arrays, Arrow IPC for tables, raw bytes, and the artifact hooks
(``_to_artifact`` / ``_from_artifact``) for shardlearn models and preprocessors. A result of any
other type is simply not cached; the task runs again next time.

A cached model or preprocessor records its class as the public package that exports it and its
exported name (``shardlearn.models:LogisticRegression``), never the module that defines it: the
loader imports only ``shardlearn.models`` or ``shardlearn.preprocess`` and takes only a name in
its ``__all__``, so an entry selects nothing else, and survives moving a class between modules.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn._typing import Restorable, is_restorable

__all__ = ["ResultCache", "fingerprint", "task_token"]

_FORMAT = 1

# The packages whose exported classes a cache entry may name (models and preprocessors).
_ARTIFACT_PACKAGES = ("shardlearn.models", "shardlearn.preprocess")


def _callable_id(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def fingerprint(value: Any, refs: dict[str, str] | None = None) -> Any:
    """A JSON-able, deterministic description of ``value`` (see the module docstring)."""
    from shardlearn.engine.graph import TaskRef

    refs = refs or {}
    if isinstance(value, TaskRef):
        return {"ref": refs.get(value.key, value.key)}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"float": value.hex()}
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__qualname__}.{value.name}"}
    if isinstance(value, list | tuple):
        return {type(value).__name__: [fingerprint(v, refs) for v in value]}
    if isinstance(value, set | frozenset):
        return {"set": sorted(json.dumps(fingerprint(v, refs), sort_keys=True) for v in value)}
    if isinstance(value, dict):
        items = [[fingerprint(k, refs), fingerprint(v, refs)] for k, v in value.items()]
        return {"dict": sorted(items, key=lambda kv: json.dumps(kv, sort_keys=True))}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": hashlib.sha256(value).hexdigest()}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(
            data.view(np.uint8).data if data.dtype != object else pickle.dumps(data)
        )
        return {"ndarray": [str(value.dtype), list(value.shape), digest.hexdigest()]}
    if isinstance(value, os.PathLike):
        path = Path(value)
        stat = path.stat() if path.exists() else None
        return {"path": [str(path), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1]}
    return _fingerprint_object(value, refs)


def _fingerprint_object(value: Any, refs: dict[str, str]) -> Any:
    kind = f"{type(value).__module__}:{type(value).__qualname__}"
    for attribute in ("manifest_sha256", "sha256"):
        content = getattr(value, attribute, None)
        if isinstance(content, str) and content:
            return {"object": kind, attribute: content}
    if callable(value) and hasattr(value, "__qualname__"):
        return {"callable": _callable_id(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"object": kind, "fields": fingerprint(fields, refs)}
    get_params = getattr(value, "get_params", None)
    if callable(get_params):
        return {"object": kind, "params": fingerprint(get_params(deep=False), refs)}
    # Last resort: the pickled bytes (writing pickles is fine; the cache never loads them).
    return {"object": kind, "pickle": hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest()}


def task_token(fn: Any, args: tuple, kwargs: dict, dep_tokens: dict[str, str]) -> str:
    """The deterministic cache token of one task."""
    description = {
        "format": _FORMAT,
        "fn": _callable_id(fn),
        "args": fingerprint(list(args), dep_tokens),
        "kwargs": fingerprint(dict(kwargs), dep_tokens),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _is_plain_json(value: Any) -> bool:
    """True if ``json.loads(json.dumps(value)) == value`` with the same types."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return bool(np.isfinite(value))
    if isinstance(value, list):
        return all(_is_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    return False


class ResultCache:
    """Task results on disk under ``root/<token[:2]>/<token>/``, written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, token: str) -> Path:
        return self.root / token[:2] / token

    def contains(self, token: str) -> bool:
        return (self._dir(token) / "meta.json").is_file()

    def load(self, token: str) -> tuple[bool, Any]:
        """``(True, result)`` on a hit, ``(False, None)`` on a miss or an unreadable entry."""
        folder = self._dir(token)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            return True, _decode(meta, folder)
        except (OSError, ValueError, KeyError, ImportError, AttributeError):
            return False, None

    def store(self, token: str, key: str, value: Any) -> bool:
        """Store ``value``; False (and nothing written) when its type cannot be stored."""
        final = self._dir(token)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            kind = _encode(value, staging)
            if kind is None:
                return False
            meta = {"format": _FORMAT, "key": key, "kind": kind}
            if kind == "artifact":
                class_id = _artifact_id(type(value))
                if class_id is None:
                    return False
                meta["class"] = class_id
            (staging / "meta.json").write_text(json.dumps(meta))
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _encode(value: Any, folder: Path) -> str | None:
    if _is_plain_json(value):
        (folder / "value.json").write_text(json.dumps(value))
        return "json"
    if isinstance(value, np.ndarray) and value.dtype != object:
        np.save(folder / "value.npy", value, allow_pickle=False)
        return "npy"
    if isinstance(value, bytes):
        (folder / "value.bin").write_bytes(value)
        return "bytes"
    if type(value).__name__ == "Table" and type(value).__module__.startswith("pyarrow"):
        import pyarrow as pa

        with pa.OSFile(str(folder / "value.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, value.schema) as writer:
                writer.write_table(value)
        return "arrow"
    if callable(getattr(value, "_to_artifact", None)) and type(value).__module__.startswith(
        "shardlearn."
    ):
        meta, arrays, files = value._to_artifact()
        (folder / "artifact.json").write_text(json.dumps(meta))
        np.savez(folder / "arrays.npz", **arrays)
        (folder / "files").mkdir()
        for name, blob in files.items():
            (folder / "files" / name).write_bytes(blob)
        return "artifact"
    return None


def _decode(meta: dict, folder: Path) -> Any:
    kind = meta["kind"]
    if kind == "json":
        return json.loads((folder / "value.json").read_text())
    if kind == "npy":
        return np.load(folder / "value.npy", allow_pickle=False)
    if kind == "bytes":
        return (folder / "value.bin").read_bytes()
    if kind == "arrow":
        import pyarrow as pa

        with pa.memory_map(str(folder / "value.arrow")) as source:
            return pa.ipc.open_file(source).read_all()
    if kind == "artifact":
        cls = _artifact_class(str(meta["class"]))
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        files = {p.name: p.read_bytes() for p in (folder / "files").iterdir()}
        return cls._from_artifact(json.loads((folder / "artifact.json").read_text()), arrays, files)
    raise ValueError(f"unknown cache entry kind {kind!r}")


def _artifact_id(cls: type) -> str | None:
    """``package:name`` of a class that ``shardlearn.models`` or ``shardlearn.preprocess``
    exports; None for any other class (its results are not cached)."""
    package = ".".join(cls.__module__.split(".")[:2])
    module = sys.modules.get(package) if package in _ARTIFACT_PACKAGES else None
    if module is None or cls.__name__ not in getattr(module, "__all__", ()):
        return None
    return f"{package}:{cls.__name__}" if vars(module).get(cls.__name__) is cls else None


def _artifact_class(class_id: str) -> type[Restorable]:
    """The class a cache entry names: a class with ``_from_artifact`` that ``shardlearn.models``
    or ``shardlearn.preprocess`` exports (in ``__all__``). A cache folder is a file like any
    other; its names select nothing else (no attribute walk, no other module)."""
    package, _, name = class_id.partition(":")
    if package not in _ARTIFACT_PACKAGES:
        raise ImportError(f"refusing to load {class_id!r} from a cache entry")
    module = importlib.import_module(package)
    cls = vars(module).get(name) if name in getattr(module, "__all__", ()) else None
    if not is_restorable(cls):
        raise ImportError(f"{class_id!r} in a cache entry is not a model class")
    return cls
