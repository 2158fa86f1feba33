"""The model artifact: a directory that can be shared and loaded safely (no pickle, ever).

Layout::

    model.json      format header, descriptive metadata, sha256 and size of every other file
    arrays.npz      numeric arrays (``np.savez``; read back with ``allow_pickle=False``)
    files/NAME      native files a model brings (XGBoost UBJSON, torch safetensors)
    meta.json       only in encrypted artifacts: the descriptive metadata, encrypted
    signature       optional ``hmac-sha256:<hex>`` or ``ed25519:<hex>`` over the exact bytes
                    of ``model.json``

``model.json`` of a plain artifact::

    {"format": "shardlearn-model", "format_version": 1, "created_at": "...",
     "artifact_id": "<32 random hex digits>",
     "model": {"type": "LogisticRegression", "module": "...", "meta": {...hook metadata...}},
     "classes": [...], "input_schema": {"columns": [...], "label": ...},
     "metrics": {...} | null, "dataset_manifest_sha256": "..." | null,
     "training": {"engine": ..., "workers": ...}, "lineage": {...},
     "library_versions": {...}, "encryption": null,
     "files": {"arrays.npz": {"sha256": "...", "bytes": 123}, "files/booster.ubj": {...}}}

In an encrypted artifact every payload file (``arrays.npz``, ``files/*``, ``meta.json``) is
AES-256-GCM ciphertext and ``model.json`` keeps only the header (format, creation time,
encryption, file hashes, artifact id); everything descriptive moves into the encrypted
``meta.json``. The ciphertexts are bound to the artifact id (see :mod:`.crypto`).

Models take part through two hooks (see the Models contract): ``model._to_artifact() ->
(meta, arrays, files)`` and ``cls._from_artifact(meta, arrays, files)``. Classes are found by
type name in :mod:`shardlearn.models._registry`; nothing in an artifact can name arbitrary
code to import (the recorded ``module`` is descriptive and never imported).

Reading checks, in order: ``model.json`` exists; the folder holds no symbolic link, device or
FIFO (:mod:`._untrusted`); its sha256 when the caller knows it (the registry index); the
signature when a verification key is set (an unsigned artifact is then refused unless
allowed); no unlisted files; every listed file's size and sha256; plaintext is refused when an
encryption key is set (unless allowed); decryption; the descriptive metadata's shape (model
type, classes, input schema with dtypes from the fixed table of
:mod:`shardlearn.data.schema`); ``arrays.npz`` member by member (bounded size and deflate
ratio, plain dtypes) before any array is read. JSON is bounded in size and depth. The model
class comes from the model catalogue only, and its hook restores only the fitted attributes
the class declares. Any failure is an
:class:`~shardlearn.exceptions.ArtifactError` naming the file. :func:`load` reads through
:func:`shardlearn.registry.store.read_verified`, so a path inside a registry is checked
against the registry's index like a ``NAME@STAGE`` reference.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn.data.schema import arrow_type
from shardlearn.exceptions import ArtifactError, SchemaError
from shardlearn.registry import _remote, _untrusted, crypto
from shardlearn.registry._meta import describe_model, jsonable, resolve_model_class

__all__ = [
    "ARRAYS_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "SIGNATURE_FILE",
    "Artifact",
    "is_artifact",
    "load",
    "read_artifact",
    "save",
]

FORMAT = "shardlearn-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
ARRAYS_FILE = "arrays.npz"
SIGNATURE_FILE = "signature"
META_FILE = "meta.json"
FILES_DIR = "files"
_HEADER_KEYS = ("format", "format_version", "created_at", "artifact_id", "encryption", "files")
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # fullmatch: "$" allows "\n"


@dataclass
class Artifact:
    """A verified, decrypted artifact read from disk.

    Attributes
    ----------
    path : Path or str
        The artifact directory (the URI for an artifact read from a ``pyarrow.fs`` URI).
    header : dict
        The parsed ``model.json``.
    meta : dict
        The descriptive metadata (``model``, ``classes``, ``input_schema``, ``metrics``, ...).
    arrays : dict of str to ndarray
    files : dict of str to bytes
        Native files by the name the model gave them.
    signed, signature_verified, encrypted : bool
    """

    path: Path | str
    header: dict[str, Any]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    files: dict[str, bytes] = field(repr=False)
    signed: bool = False
    signature_verified: bool = False
    encrypted: bool = False

    @property
    def model_type(self) -> str:
        """The model's class name, e.g. ``"LogisticRegression"``."""
        return str(self.meta["model"]["type"])

    @property
    def classes(self) -> list[Any]:
        """The class labels in the order of the model's ``classes_``."""
        return list(self.meta.get("classes") or [])

    @property
    def input_schema(self) -> dict[str, Any] | None:
        """The input columns (name, kind, dtype, categories) the model expects."""
        return self.meta.get("input_schema")

    def to_model(self) -> Any:
        """Rebuild the model with its class's ``_from_artifact`` hook."""
        model = self.meta["model"]
        cls = resolve_model_class(model["type"])
        try:
            return cls._from_artifact(model.get("meta", {}), dict(self.arrays), dict(self.files))
        except ArtifactError as error:  # a hook's refusal: name the artifact it came from
            raise ArtifactError(f"{self.path}: {error}") from None
        except Exception as error:  # noqa: BLE001 - any failure means a bad artifact
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            raise ArtifactError(
                f"cannot rebuild {model['type']} from {self.path}: {type(error).__name__}: {reason}"
            ) from error


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not all(_NAME_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise ArtifactError(
            f"invalid artifact file name {name!r}: use letters, digits, '.', '_', '-' "
            "and '/' between parts"
        )
    return name


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    clean: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        _check_name(name)
        if not isinstance(value, np.ndarray):
            raise ArtifactError(
                f"artifact array {name!r} is a {type(value).__name__}, not a numpy array; "
                "convert sparse matrices to their data/indices/indptr arrays"
            )
        if value.dtype.hasobject:
            raise ArtifactError(
                f"artifact array {name!r} has dtype object, which would need pickle; "
                "store strings as np.asarray(values, dtype=str) or in the metadata"
            )
        clean[name] = value
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **clean)
    return buffer.getvalue()


def _signing_key(sign: Any) -> Any:
    """The HMAC key (bytes) or Ed25519 private key that signs, or ``None`` (see :func:`save`)."""
    if sign is False:
        return None
    if sign is not None and sign is not True:
        text = sign.encode() if isinstance(sign, str) else sign
        if isinstance(text, bytes) and not text.lstrip().startswith(crypto.PEM_PREFIX):
            return crypto.signing_key(sign)
        return crypto.ed25519_private_key(sign)
    hmac_key, private_key = crypto.signing_key(), crypto.ed25519_private_key()
    if hmac_key is not None and private_key is not None:
        raise ArtifactError(
            f"both an HMAC signing key ({crypto.SIGNING_KEY_ENV}) and an Ed25519 private key "
            f"({crypto.PRIVATE_KEY_FILE_ENV}) are set; an artifact carries one signature, "
            "unset one of them"
        )
    if sign is True and hmac_key is None and private_key is None:
        raise ArtifactError(
            f"sign=True but no signing key is set: export {crypto.SIGNING_KEY_ENV}, "
            f"{crypto.SIGNING_KEY_FILE_ENV} or {crypto.PRIVATE_KEY_FILE_ENV}"
        )
    return hmac_key if hmac_key is not None else private_key


def _resolve_keys(sign: Any, encrypt: Any) -> tuple[Any, bytes | None]:
    """``None`` = use a configured key if any; ``True`` = a key is required; ``False`` = off."""
    sign_key = _signing_key(sign)
    enc_key = None
    if encrypt is not False:
        explicit = encrypt if isinstance(encrypt, bytes | str) else None
        enc_key = crypto.encryption_key(explicit)
        if encrypt is True and enc_key is None:
            raise ArtifactError(
                f"encrypt=True but no encryption key is set: export {crypto.ENCRYPTION_KEY_ENV} "
                f"or {crypto.ENCRYPTION_KEY_FILE_ENV}"
            )
    return sign_key, enc_key


def _payload(model: Any, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Descriptive metadata and the payload files (name -> plain bytes) of ``model``."""
    hook = getattr(model, "_to_artifact", None)
    if hook is None:
        raise ArtifactError(
            f"{type(model).__name__} cannot be saved: it has no _to_artifact() hook"
        )
    meta, arrays, files = hook()
    described = describe_model(model, meta, info)
    payload = {ARRAYS_FILE: _npz_bytes(dict(arrays))}
    for name, data in dict(files).items():
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ArtifactError(f"artifact file {name!r} must be bytes, not {type(data).__name__}")
        payload[f"{FILES_DIR}/{_check_name(name)}"] = bytes(data)
    return described, payload


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    sign: bool | bytes | str | None = None,
    encrypt: bool | bytes | str | None = None,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path | str:
    """Write ``model`` as an artifact directory at ``path`` (atomically) and return the path.

    Parameters
    ----------
    model : estimator, Pipeline or Preprocessor
        Anything with the ``_to_artifact`` hook.
    path : path or str
        The artifact directory to create: a local path or a ``pyarrow.fs`` URI such as
        ``s3://bucket/models/loans-lr`` (written locally, then uploaded with model.json last).
    sign : bool, bytes, str or Ed25519PrivateKey, optional
        ``None`` signs when a signing key is configured (HMAC: ``SHARDLEARN_SIGNING_KEY`` /
        ``SHARDLEARN_SIGNING_KEY_FILE``; Ed25519: ``SHARDLEARN_SIGNING_PRIVATE_KEY_FILE``);
        ``True`` requires one; ``False`` never signs; a bytes/str value is the HMAC key itself,
        or an Ed25519 private key as PEM; a ``cryptography`` Ed25519PrivateKey also works.
    encrypt : bool, bytes or str, optional
        Same, for AES-256-GCM encryption (``SHARDLEARN_ENCRYPTION_KEY`` / ``..._FILE``).
    metrics : dict, optional
        Evaluation metrics to record (e.g. ``report.to_dict()["metrics"]``).
    lineage : dict, optional
        ``dataset_manifest_sha256``, ``parent`` (``"name:version"``), ``engine``, ``workers``
        and anything else worth recording; ``params`` is filled in from the model.
    overwrite : bool, default False
        Replace an existing artifact at ``path``. Anything else there (a file, a link, a
        folder holding other files) is refused: see :func:`check_replaceable`.

    Examples
    --------
    >>> import numpy as np
    >>> import shardlearn as sl
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> model = sl.LogisticRegression().fit(X, y, engine="local")
    >>> save(model, "models/loans-lr")
    PosixPath('models/loans-lr')
    >>> load("models/loans-lr").predict(X).tolist()
    [0, 0, 1, 1]
    """
    if _remote.is_uri(path):
        return _save_remote(model, str(path), overwrite=overwrite, sign=sign, encrypt=encrypt,
                            metrics=metrics, lineage=lineage)  # fmt: skip
    target = Path(path)
    if target.exists() and not overwrite:
        raise ArtifactError(f"{target} already exists; pass overwrite=True to replace it")
    check_replaceable(target)
    sign_key, enc_key = _resolve_keys(sign, encrypt)
    meta, payload = _payload(model, {"metrics": metrics, "lineage": lineage or {}})
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact_id": uuid.uuid4().hex,
        "encryption": None,
    }
    if enc_key is not None:
        header["encryption"] = {
            "algorithm": "AES-256-GCM",
            "key_fingerprint": crypto.key_fingerprint(enc_key),
        }
        payload[META_FILE] = json.dumps(meta, sort_keys=True).encode()
        binding = {"artifact_id": header["artifact_id"], "format_version": FORMAT_VERSION}
        payload = {n: crypto.encrypt_bytes(d, enc_key, n, **binding) for n, d in payload.items()}
    else:
        header.update(meta)
    header["files"] = {
        n: {"sha256": crypto.sha256_bytes(d), "bytes": len(d)} for n, d in sorted(payload.items())
    }
    model_json = json.dumps(header, indent=2, sort_keys=True, default=jsonable).encode()
    _write_atomically(target, payload, model_json, sign_key, overwrite)
    return target


def _save_remote(model: Any, uri: str, *, overwrite: bool, **options: Any) -> str:
    if _remote.remote_exists(uri):
        if not overwrite:
            raise ArtifactError(f"{uri} already exists; pass overwrite=True to replace it")
        check_replaceable(uri)
        _remote.remove(uri)
    else:
        check_replaceable(uri)  # no model.json: anything there is someone else's
    with tempfile.TemporaryDirectory(prefix="shardlearn-save-") as tmp:
        local = save(model, Path(tmp) / "artifact", **options)
        _remote.upload(Path(local), uri)
    return uri


def _write_atomically(
    target: Path, payload: dict[str, bytes], model_json: bytes, key: Any, overwrite: bool
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        for name, data in payload.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / MODEL_JSON).write_bytes(model_json)
        if key is not None:
            (tmp / SIGNATURE_FILE).write_bytes(crypto.sign(model_json, key))
        if target.exists() and overwrite:
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to overwrite ``path`` unless it is absent, an empty folder or a shardlearn artifact.

    An artifact here is a folder (local or at a ``pyarrow.fs`` URI) whose ``model.json`` has
    the shardlearn format header and which holds nothing but that header's listed files (and
    the signature): replacing it loses no other file. Anything else -- a file, a symbolic link,
    a dataset, someone's project folder -- raises, since a mistyped ``out:`` or ``--out`` must
    never delete it.
    """
    if _remote.is_uri(path):
        uri = str(path)
        present = _remote.file_names(uri)
        if present is None:
            raise _not_replaceable(uri, "it is not a folder")
        if present:
            model_json = _remote.read_member(uri, MODEL_JSON) if MODEL_JSON in present else None
            _check_only_artifact_files(uri, model_json, present)
        return
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise _not_replaceable(str(target), "it is not a folder")
    if next(target.iterdir(), None) is None:
        return
    try:
        read: bytes | None = (target / MODEL_JSON).read_bytes()
    except OSError:  # absent, a folder, unreadable: not an artifact
        read = None
    present = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    linked = tuple(n for n in present if (target / n).is_symlink())
    _check_only_artifact_files(str(target), read, present, linked)


def _check_only_artifact_files(
    where: str, model_json: bytes | None, present: list[str], linked: tuple[str, ...] = ()
) -> None:
    try:
        header = json.loads(model_json) if model_json is not None else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _not_replaceable(where, f"it has no shardlearn {MODEL_JSON}")
    files = header.get("files")
    allowed = {MODEL_JSON, SIGNATURE_FILE, *(files if isinstance(files, dict) else {})}
    parts = [name.split("/") for name in allowed]
    folders = {"/".join(p[:i]) for p in parts for i in range(1, len(p))}
    foreign = [n for n in present if n in linked or (n not in allowed and n not in folders)]
    if foreign:
        raise _not_replaceable(where, f"it also holds {', '.join(foreign[:3])}")


def _not_replaceable(where: str, why: str) -> ArtifactError:
    return ArtifactError(
        f"{where} exists and is not a shardlearn model ({why}); refusing to replace it. "
        "Choose another output path, or move the folder away yourself"
    )


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory (or ``pyarrow.fs`` URI) holding a ``model.json``."""
    if _remote.is_uri(path):
        return _remote.remote_exists(str(path))
    return (Path(path) / MODEL_JSON).is_file()


def _check_signature(
    root: Path, model_json: bytes, keys: crypto.VerificationKeys, allow_unsigned: bool
) -> bool:
    signature_path = root / SIGNATURE_FILE
    signature = signature_path.read_bytes() if signature_path.is_file() else None
    return crypto.check_signature(
        model_json, signature, keys, str(root), allow_unsigned=allow_unsigned
    )


def _check_files(root: Path, listed: dict[str, Any], present: dict[str, int]) -> dict[str, bytes]:
    """The listed files' bytes; ``present`` is every file in the folder (see _untrusted)."""
    allowed = {MODEL_JSON, SIGNATURE_FILE, *listed}
    for relative in sorted(present):
        if relative not in allowed:
            raise ArtifactError(f"unexpected file {relative} in {root}: not listed in {MODEL_JSON}")
    contents: dict[str, bytes] = {}
    for name, entry in listed.items():
        _check_name(name)
        if name not in present:
            raise ArtifactError(f"{name} is missing from {root}")
        data = _untrusted.read_file(root / name, size=entry["bytes"])
        if crypto.sha256_bytes(data) != entry["sha256"]:
            raise ArtifactError(
                f"{name} in {root} is corrupt or was modified: its sha256 does not match "
                f"{MODEL_JSON}"
            )
        contents[name] = data
    return contents


def _parse_header(root: Path, model_json: bytes) -> dict[str, Any]:
    header = _untrusted.parse_json(model_json, str(root / MODEL_JSON))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArtifactError(f"{root / MODEL_JSON} is not a shardlearn model artifact")
    if header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{root} has artifact format version {header.get('format_version')}; this "
            f"shardlearn reads version {FORMAT_VERSION}. Upgrade shardlearn or re-save the model"
        )
    files = header.get("files")
    if not isinstance(files, dict) or not all(_valid_entry(e) for e in files.values()):
        raise ArtifactError(
            f"{root / MODEL_JSON} has no valid 'files' list ({{name: {{sha256, bytes}}}})"
        )
    return header


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and type(entry.get("bytes")) is int
        and entry["bytes"] >= 0
    )


def _check_meta(root: Path, meta: Any) -> dict[str, Any]:
    """``meta`` when its parts have the types readers rely on (model, classes, input schema)."""
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("type"), str):
        raise ArtifactError(f"{root / MODEL_JSON} does not say which model it holds")
    if not isinstance(model.get("meta", {}), dict):
        raise ArtifactError(f"{root / MODEL_JSON}: model.meta must be a JSON object")
    if not isinstance(meta.get("classes") or [], list):
        raise ArtifactError(f"{root / MODEL_JSON}: classes must be a list")
    schema = meta.get("input_schema")
    if schema is not None:
        columns = schema.get("columns") if isinstance(schema, dict) else None
        if not isinstance(columns, list) or not all(_valid_column(c) for c in columns):
            raise ArtifactError(
                f"{root / MODEL_JSON}: input_schema.columns must be a list of "
                "{name, kind, dtype} objects with known dtypes"
            )
    return meta


def _valid_column(column: Any) -> bool:
    if not isinstance(column, dict) or not isinstance(column.get("name"), str):
        return False
    if not isinstance(column.get("kind", ""), str):
        return False
    dtype = column.get("dtype")
    if dtype is None:
        return True
    try:
        arrow_type(dtype)
    except SchemaError:
        return False
    return True


def _decrypt(
    root: Path, header: dict, contents: dict[str, bytes], key: bytes | None, authenticated: bool
) -> dict:
    info = header["encryption"]
    if key is None:
        raise ArtifactError(
            f"{root} is encrypted: set {crypto.ENCRYPTION_KEY_ENV} or "
            f"{crypto.ENCRYPTION_KEY_FILE_ENV} to the key it was saved with"
        )
    expected = info.get("key_fingerprint")
    if expected and expected != crypto.key_fingerprint(key):
        raise ArtifactError(
            f"wrong encryption key for {root}: it was encrypted with the key whose fingerprint "
            f"is {expected}, the configured key's fingerprint is {crypto.key_fingerprint(key)}"
        )
    binding: dict[str, Any] = {
        "artifact_id": header.get("artifact_id"),
        "format_version": FORMAT_VERSION,
    }
    return {
        name: crypto.decrypt_bytes(data, key, name, allow_legacy=authenticated, **binding)
        for name, data in contents.items()
    }


def read_artifact(
    path: str | os.PathLike[str],
    *,
    signing_key: bytes | str | None = None,
    public_key: Any = None,
    encryption_key: bytes | str | None = None,
    allow_unsigned: bool = False,
    allow_unencrypted: bool = False,
    expected_sha256: str | None = None,
) -> Artifact:
    """Read, verify and decrypt the artifact at ``path``.

    Parameters
    ----------
    path : path
        An artifact directory.
    signing_key, public_key, encryption_key : optional
        Keys to use instead of the configured ones (environment variables / key files): the
        HMAC key, the Ed25519 public key (object or PEM), the AES key.
    allow_unsigned : bool, default False
        Accept an unsigned artifact although a verification key is configured.
    allow_unencrypted : bool, default False
        Accept a plaintext artifact although an encryption key is configured.
    expected_sha256 : str, optional
        The sha256 ``model.json`` must have (the registry index's record of this version).

    Raises
    ------
    ArtifactError
        Naming the file at fault: missing, unsigned, tampered, replaced, unlisted, plaintext
        or undecryptable.
    """
    options = {
        "signing_key": signing_key,
        "public_key": public_key,
        "encryption_key": encryption_key,
        "allow_unsigned": allow_unsigned,
        "allow_unencrypted": allow_unencrypted,
        "expected_sha256": expected_sha256,
    }
    if _remote.is_uri(path):
        with _remote.downloaded(str(path)) as local:
            artifact = read_artifact(local, **options)
        artifact.path = str(path)
        return artifact
    root = Path(path)
    if not is_artifact(root):
        raise ArtifactError(f"{root} is not a model artifact: no {MODEL_JSON} in it")
    present = _untrusted.folder_files(root)  # before anything is read: no links, no devices
    model_json = _untrusted.read_file(root / MODEL_JSON, limit=_untrusted.MAX_JSON_BYTES)
    if expected_sha256 is not None and crypto.sha256_bytes(model_json) != expected_sha256:
        raise ArtifactError(
            f"{root / MODEL_JSON} does not match the registry index: the version was replaced "
            "(e.g. another version copied over it); refusing to load it"
        )
    keys = crypto.verification_keys(signing_key, public_key)
    verified = _check_signature(root, model_json, keys, allow_unsigned)
    header = _parse_header(root, model_json)
    contents = _check_files(root, header["files"], present)
    encrypted = bool(header.get("encryption"))
    meta = {k: v for k, v in header.items() if k not in _HEADER_KEYS}
    enc_key = crypto.encryption_key(encryption_key)
    if encrypted:
        authenticated = verified or expected_sha256 is not None
        contents = _decrypt(root, header, contents, enc_key, authenticated)
        meta = _untrusted.parse_json(contents.pop(META_FILE, b"{}"), f"{root}/{META_FILE}")
    elif enc_key is not None and not allow_unencrypted:
        raise ArtifactError(
            f"{root} is not encrypted but an encryption key is configured; refusing to load "
            "it. Re-save it with the key, or pass --allow-unencrypted (allow_unencrypted=True)"
        )
    meta = _check_meta(root, meta)
    npz = contents.pop(ARRAYS_FILE, None)
    arrays = {} if npz is None else _untrusted.read_npz(npz, f"{root}/{ARRAYS_FILE}")
    prefix = f"{FILES_DIR}/"
    files = {n[len(prefix) :]: d for n, d in contents.items() if n.startswith(prefix)}
    return Artifact(
        path=root,
        header=header,
        meta=meta,
        arrays=arrays,
        files=files,
        signed=(root / SIGNATURE_FILE).is_file(),
        signature_verified=verified,
        encrypted=encrypted,
    )


def load(
    path_or_ref: str | os.PathLike[str],
    *,
    signing_key: bytes | str | None = None,
    public_key: Any = None,
    encryption_key: bytes | str | None = None,
    allow_unsigned: bool = False,
    allow_unencrypted: bool = False,
) -> Any:
    """Load a model from an artifact path or a registry reference.

    Parameters
    ----------
    path_or_ref : str or path
        An artifact directory or ``pyarrow.fs`` URI (``s3://bucket/models/loans-lr``), or
        a registry reference: ``"ROOT/NAME@STAGE"``, ``"ROOT/NAME:VERSION"``, ``"ROOT/NAME"``
        (latest version) with ROOT a registry directory (default ``$SHARDLEARN_MODELS`` or
        ``models`` when only ``NAME@STAGE`` is given). A version directory inside a registry
        (``ROOT/NAME/3``) is checked against the registry's index like ``ROOT/NAME:3``.
    signing_key, public_key, encryption_key : optional
        Keys to use instead of the configured ones (see :func:`read_artifact`).
    allow_unsigned, allow_unencrypted : bool, default False
        Accept an unsigned (plaintext) artifact although a signing (encryption) key is set.

    Examples
    --------
    >>> import numpy as np
    >>> import shardlearn as sl
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> model = sl.LogisticRegression().fit(X, y, engine="local")
    >>> mv = sl.Registry("models").register(model, "loans", stage="production")
    >>> load("models/loans@production").predict(X).tolist()
    [0, 0, 1, 1]
    """
    from shardlearn.registry.store import read_verified

    artifact = read_verified(
        path_or_ref, signing_key=signing_key, public_key=public_key,
        encryption_key=encryption_key, allow_unsigned=allow_unsigned,
        allow_unencrypted=allow_unencrypted,
    )  # fmt: skip
    return artifact.to_model()
