"""Integrity, signatures and encryption at rest for model artifacts.

Three independent layers, each optional except the first:

* **sha256 of every file.** ``model.json`` lists the sha256 of every other file of the
  artifact, so one hash (of ``model.json``) pins the whole artifact.
* **HMAC-SHA256 signature.** The ``signature`` file holds ``hmac-sha256:<hex>`` computed over
  the exact bytes of ``model.json``. Because ``model.json`` lists every other file's hash,
  the signature covers the whole artifact. The key comes from ``SHARDLEARN_SIGNING_KEY`` (the
  key text itself) or ``SHARDLEARN_SIGNING_KEY_FILE`` (a file holding it). When a key is
  configured, unsigned artifacts are refused.
* **AES-256-GCM encryption at rest.** Every payload file is stored as
  ``MAGIC || nonce(12) || ciphertext+tag``, with the file's name as associated data, so a
  ciphertext cannot be swapped for another file's. The 32-byte key comes from
  ``SHARDLEARN_ENCRYPTION_KEY`` (64 hex digits or base64) or ``SHARDLEARN_ENCRYPTION_KEY_FILE``.
  A short fingerprint of the key is stored so that a wrong key is reported as such; GCM's
  tag check guarantees that a wrong key or altered ciphertext never yields garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from shardlearn.exceptions import ArtifactError

__all__ = [
    "ENCRYPTION_KEY_ENV",
    "ENCRYPTION_KEY_FILE_ENV",
    "SIGNING_KEY_ENV",
    "SIGNING_KEY_FILE_ENV",
    "decrypt_bytes",
    "encrypt_bytes",
    "encryption_key",
    "generate_key",
    "key_fingerprint",
    "sha256_bytes",
    "sha256_file",
    "sign",
    "signature_matches",
    "signing_key",
]

SIGNING_KEY_ENV = "SHARDLEARN_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "SHARDLEARN_SIGNING_KEY_FILE"
ENCRYPTION_KEY_ENV = "SHARDLEARN_ENCRYPTION_KEY"
ENCRYPTION_KEY_FILE_ENV = "SHARDLEARN_ENCRYPTION_KEY_FILE"

# A shorter HMAC key is brute-forceable; 16 bytes (128 bits) is the usual floor.
MIN_SIGNING_KEY_BYTES = 16
AES_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce size
ENCRYPTED_MAGIC = b"SLENC1\x00"
SIGNATURE_PREFIX = b"hmac-sha256:"
_HASH_CHUNK = 1 << 20
_KEYGEN_HINT = "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def generate_key() -> str:
    """A new random 256-bit key as 64 hex digits (usable for signing and encryption)."""
    return secrets.token_hex(AES_KEY_BYTES)


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret identifier of ``key`` (16 hex digits of a domain-separated hash)."""
    return hashlib.sha256(b"shardlearn-key-fingerprint\x00" + key).hexdigest()[:16]


def _read_key_file(path: str | os.PathLike[str], variable: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactError(
            f"cannot read the key file {path} (from {variable}): {error.strerror or error}"
        ) from None
    return data.rstrip(b"\r\n")


def signing_key(
    key: bytes | str | None = None, key_file: str | os.PathLike[str] | None = None
) -> bytes | None:
    """The HMAC key: ``key``, else ``key_file``, else the environment; ``None`` if none is set.

    Parameters
    ----------
    key : bytes or str, optional
        The key itself (text is encoded as UTF-8).
    key_file : path, optional
        A file holding the key (a trailing newline is ignored).

    Raises
    ------
    ArtifactError
        If the key is shorter than 16 bytes or the key file cannot be read.
    """
    source = "the signing key"
    if key is None and key_file is not None:
        key, source = _read_key_file(key_file, "key_file"), str(key_file)
    if key is None and os.environ.get(SIGNING_KEY_ENV):
        key, source = os.environ[SIGNING_KEY_ENV], SIGNING_KEY_ENV
    if key is None and os.environ.get(SIGNING_KEY_FILE_ENV):
        path = os.environ[SIGNING_KEY_FILE_ENV]
        key, source = _read_key_file(path, SIGNING_KEY_FILE_ENV), path
    if key is None:
        return None
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_SIGNING_KEY_BYTES:
        raise ArtifactError(
            f"{source} is too short ({len(raw)} bytes); use at least {MIN_SIGNING_KEY_BYTES} "
            f"random bytes, {_KEYGEN_HINT}"
        )
    return raw


def _decode_aes_key(raw: bytes, source: str) -> bytes:
    if len(raw) == AES_KEY_BYTES and not raw.isascii():
        return raw  # a key file holding the 32 raw bytes
    text = raw.strip()
    candidates = []
    try:
        candidates.append(bytes.fromhex(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + b"=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    if len(raw) == AES_KEY_BYTES:
        candidates.append(raw)
    for candidate in candidates:
        if len(candidate) == AES_KEY_BYTES:
            return candidate
    raise ArtifactError(
        f"{source} is not a 256-bit key: give 64 hex digits or the base64 of 32 bytes; "
        f"{_KEYGEN_HINT}"
    )


def encryption_key(
    key: bytes | str | None = None, key_file: str | os.PathLike[str] | None = None
) -> bytes | None:
    """The 32-byte AES key: ``key``, else ``key_file``, else the environment; ``None`` if unset.

    Text keys are 64 hex digits or base64; a key file may also hold the 32 raw bytes.

    Raises
    ------
    ArtifactError
        If the value does not decode to exactly 32 bytes, or the key file cannot be read.
    """
    if key is not None:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if isinstance(key, bytes) and len(key) == AES_KEY_BYTES:
            return raw
        return _decode_aes_key(raw, "the encryption key")
    if key_file is not None:
        return _decode_aes_key(_read_key_file(key_file, "key_file"), str(key_file))
    if os.environ.get(ENCRYPTION_KEY_ENV):
        return _decode_aes_key(os.environ[ENCRYPTION_KEY_ENV].encode(), ENCRYPTION_KEY_ENV)
    if os.environ.get(ENCRYPTION_KEY_FILE_ENV):
        path = os.environ[ENCRYPTION_KEY_FILE_ENV]
        return _decode_aes_key(_read_key_file(path, ENCRYPTION_KEY_FILE_ENV), path)
    return None


def sign(data: bytes, key: bytes) -> bytes:
    """The content of a ``signature`` file for ``data``: ``b"hmac-sha256:<hex>"``."""
    return SIGNATURE_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest().encode()


def signature_matches(data: bytes, signature: bytes, key: bytes) -> bool:
    """Whether ``signature`` (the whole file, byte for byte) signs ``data`` under ``key``."""
    return hmac.compare_digest(sign(data, key), signature)


def encrypt_bytes(data: bytes, key: bytes, name: str) -> bytes:
    """AES-256-GCM encrypt ``data``; ``name`` (the file name) is bound as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES)
    return ENCRYPTED_MAGIC + nonce + AESGCM(key).encrypt(nonce, data, name.encode())


def decrypt_bytes(blob: bytes, key: bytes, name: str) -> bytes:
    """Decrypt what :func:`encrypt_bytes` wrote for file ``name``.

    Raises
    ------
    ArtifactError
        Naming ``name``, if the blob is not an encrypted file, or the key is wrong, or the
        ciphertext was altered (the GCM tag does not verify).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = len(ENCRYPTED_MAGIC) + NONCE_BYTES
    if not blob.startswith(ENCRYPTED_MAGIC) or len(blob) < header:
        raise ArtifactError(f"{name} is not an encrypted shardlearn file")
    nonce = blob[len(ENCRYPTED_MAGIC) : header]
    try:
        return AESGCM(key).decrypt(nonce, blob[header:], name.encode())
    except InvalidTag:
        raise ArtifactError(
            f"cannot decrypt {name}: wrong encryption key, or the file was altered"
        ) from None
