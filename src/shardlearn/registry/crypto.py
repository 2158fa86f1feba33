"""Integrity, signatures and encryption at rest for model artifacts.

Three independent layers, each optional except the first:

* **sha256 of every file.** ``model.json`` lists the sha256 of every other file of the
  artifact, so one hash (of ``model.json``) pins the whole artifact.
* **A signature** over the exact bytes of ``model.json`` (which lists every other file's hash,
  so it covers the whole artifact), in the ``signature`` file, one of two schemes:

  - ``hmac-sha256:<hex>``, a shared secret from ``SHARDLEARN_SIGNING_KEY`` (the key text) or
    ``SHARDLEARN_SIGNING_KEY_FILE``. Whoever can verify can also sign.
  - ``ed25519:<hex>``, signed with a private key (``SHARDLEARN_SIGNING_PRIVATE_KEY_FILE``, a
    PEM file from ``shardlearn models keygen --ed25519``) and verified with the public key
    alone (``SHARDLEARN_SIGNING_PUBLIC_KEY_FILE``, or the PEM text in
    ``SHARDLEARN_SIGNING_PUBLIC_KEY``), so a serving fleet holds nothing that can sign.

  When any verification key is configured, a signature is required: an unsigned artifact, or
  one signed with a scheme for which no key is configured, is refused unless the caller
  explicitly allows unsigned artifacts.
* **AES-256-GCM encryption at rest.** Every payload file is stored as
  ``SLENC2\0 || nonce(12) || ciphertext+tag``. The associated data binds the artifact's random
  id (recorded in ``model.json``), the artifact format version and the file's name, so a
  ciphertext cannot be swapped for another file's, nor moved into another artifact. The
  32-byte key comes from ``SHARDLEARN_ENCRYPTION_KEY`` (64 hex digits or base64) or
  ``SHARDLEARN_ENCRYPTION_KEY_FILE``. A short fingerprint of the key is stored so that a wrong
  key is reported as such; GCM's tag check guarantees that a wrong key or altered ciphertext
  never yields garbage. Files of the previous format (``SLENC1\0``, the file name alone as
  associated data) are decrypted only when the caller vouches that ``model.json`` is
  authenticated (signature verified, or its hash matched against the registry index): then
  its per-file hashes already pin every ciphertext to this artifact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardlearn.exceptions import ArtifactError

__all__ = [
    "ENCRYPTION_KEY_ENV",
    "ENCRYPTION_KEY_FILE_ENV",
    "PRIVATE_KEY_FILE_ENV",
    "PUBLIC_KEY_ENV",
    "PUBLIC_KEY_FILE_ENV",
    "SIGNING_KEY_ENV",
    "SIGNING_KEY_FILE_ENV",
    "VerificationKeys",
    "check_signature",
    "decrypt_bytes",
    "ed25519_private_key",
    "ed25519_public_key",
    "encrypt_bytes",
    "encryption_key",
    "generate_ed25519_keypair",
    "generate_key",
    "key_fingerprint",
    "sha256_bytes",
    "sha256_file",
    "sign",
    "signature_matches",
    "signing_key",
    "verification_keys",
]

SIGNING_KEY_ENV = "SHARDLEARN_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "SHARDLEARN_SIGNING_KEY_FILE"
ENCRYPTION_KEY_ENV = "SHARDLEARN_ENCRYPTION_KEY"
ENCRYPTION_KEY_FILE_ENV = "SHARDLEARN_ENCRYPTION_KEY_FILE"
PRIVATE_KEY_FILE_ENV = "SHARDLEARN_SIGNING_PRIVATE_KEY_FILE"
PUBLIC_KEY_ENV = "SHARDLEARN_SIGNING_PUBLIC_KEY"
PUBLIC_KEY_FILE_ENV = "SHARDLEARN_SIGNING_PUBLIC_KEY_FILE"

# A shorter HMAC key is brute-forceable; 16 bytes (128 bits) is the usual floor.
MIN_SIGNING_KEY_BYTES = 16
AES_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce size
ENCRYPTED_MAGIC = b"SLENC2\x00"
# The previous format: the file name alone as associated data (see the module docstring).
LEGACY_ENCRYPTED_MAGIC = b"SLENC1\x00"
SIGNATURE_PREFIX = b"hmac-sha256:"
ED25519_PREFIX = b"ed25519:"
PEM_PREFIX = b"-----BEGIN"
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


def _load_pem(data: bytes, source: str, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    kind = "private" if private else "public"
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    try:
        if private:
            key: Any = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise ArtifactError(
            f"{source} is not a PEM Ed25519 {kind} key ({error}); create a key pair with "
            "`shardlearn models keygen --ed25519`"
        ) from None
    if not isinstance(key, wanted):
        raise ArtifactError(f"{source} holds a {type(key).__name__}, not an Ed25519 {kind} key")
    return key


def _explicit_pem(key: Any, source: str, private: bool) -> Any:
    """``key`` as a key object: already one, or its PEM text/bytes."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if isinstance(key, str | bytes):
        return _load_pem(key.encode() if isinstance(key, str) else key, source, private)
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ArtifactError(
            f"{source} must be an {wanted.__name__} or its PEM text, not {type(key).__name__}"
        )
    return key


def ed25519_private_key(key: Any = None) -> Any:
    """The Ed25519 private key that signs: ``key`` (a key object or its PEM), else the PEM
    file named by ``SHARDLEARN_SIGNING_PRIVATE_KEY_FILE``; ``None`` if neither is set."""
    if key is not None:
        return _explicit_pem(key, "the private key", private=True)
    path = os.environ.get(PRIVATE_KEY_FILE_ENV)
    if not path:
        return None
    return _load_pem(_read_key_file(path, PRIVATE_KEY_FILE_ENV), path, private=True)


def ed25519_public_key(key: Any = None) -> Any:
    """The Ed25519 public key that verifies: ``key`` (a key object or its PEM), else
    ``SHARDLEARN_SIGNING_PUBLIC_KEY`` (PEM text), else the file named by
    ``SHARDLEARN_SIGNING_PUBLIC_KEY_FILE``; ``None`` if none is set."""
    if key is not None:
        return _explicit_pem(key, "the public key", private=False)
    if os.environ.get(PUBLIC_KEY_ENV):
        return _load_pem(os.environ[PUBLIC_KEY_ENV].encode(), PUBLIC_KEY_ENV, private=False)
    path = os.environ.get(PUBLIC_KEY_FILE_ENV)
    if not path:
        return None
    return _load_pem(_read_key_file(path, PUBLIC_KEY_FILE_ENV), path, private=False)


def generate_ed25519_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM in PKCS#8, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def sign(data: bytes, key: Any) -> bytes:
    """The content of a ``signature`` file for ``data``.

    ``b"hmac-sha256:<hex>"`` for an HMAC key (bytes), ``b"ed25519:<hex>"`` for an Ed25519
    private key object.
    """
    if isinstance(key, bytes):
        return SIGNATURE_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest().encode()
    return ED25519_PREFIX + key.sign(data).hex().encode()


def signature_matches(data: bytes, signature: bytes, key: bytes) -> bool:
    """Whether the HMAC ``signature`` (the whole file, byte for byte) signs ``data``."""
    return hmac.compare_digest(sign(data, key), signature)


def _ed25519_matches(data: bytes, signature: bytes, public_key: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        raw = bytes.fromhex(signature[len(ED25519_PREFIX) :].decode("ascii"))
        public_key.verify(raw, data)
    except (InvalidSignature, ValueError, UnicodeDecodeError):
        return False
    return True


@dataclass(frozen=True)
class VerificationKeys:
    """The keys a reader verifies signatures with (either may be ``None``)."""

    hmac_key: bytes | None
    public_key: Any

    @property
    def configured(self) -> bool:
        """Whether any key is set (then artifacts must be signed)."""
        return self.hmac_key is not None or self.public_key is not None


def verification_keys(
    hmac_key: bytes | str | None = None, public_key: Any = None
) -> VerificationKeys:
    """The configured verification keys: the HMAC key, and the Ed25519 public key (given,
    configured, or derived from a configured private key, so a signer verifies its own work)."""
    public = ed25519_public_key(public_key)
    if public is None:
        private = ed25519_private_key()
        public = None if private is None else private.public_key()
    return VerificationKeys(signing_key(hmac_key), public)


def check_signature(
    data: bytes, signature: bytes | None, keys: VerificationKeys, where: str, *,
    allow_unsigned: bool,
) -> bool:  # fmt: skip
    """Verify the ``signature`` file's content over ``data``; returns whether it was verified.

    Raises
    ------
    ArtifactError
        If a key is configured and the artifact is unsigned or signed with a scheme no
        configured key verifies (unless ``allow_unsigned``), or if the signature does not
        verify under the configured key of its scheme.
    """
    hint = "pass --allow-unsigned (allow_unsigned=True) to accept it anyway"
    if signature is None:
        if keys.configured and not allow_unsigned:
            raise ArtifactError(
                f"{where} is unsigned (no signature file) but a signing key is configured; "
                f"refusing to load it. Re-save it with the key, or {hint}"
            )
        return False
    matches: Callable[[bytes, bytes, Any], bool]
    if signature.startswith(ED25519_PREFIX):
        scheme, key, matches = "ed25519", keys.public_key, _ed25519_matches
    else:
        scheme, key, matches = "hmac-sha256", keys.hmac_key, signature_matches
    if key is None:
        if keys.configured and not allow_unsigned:
            raise ArtifactError(
                f"{where} is signed with {scheme} but no {scheme} key is configured to verify "
                f"it; set {PUBLIC_KEY_FILE_ENV if scheme == 'ed25519' else SIGNING_KEY_ENV}, "
                f"or {hint}"
            )
        return False
    if not matches(data, signature, key):
        raise ArtifactError(
            f"signature check failed for {where}: model.json or the signature was modified, "
            "or it was signed with another key"
        )
    return True


def _associated_data(artifact_id: str, format_version: int, name: str) -> bytes:
    return f"shardlearn-artifact\x00{artifact_id}\x00{format_version}\x00{name}".encode()


def encrypt_bytes(
    data: bytes, key: bytes, name: str, *, artifact_id: str, format_version: int
) -> bytes:
    """AES-256-GCM encrypt ``data``, binding the artifact id, format version and file name."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES)
    aad = _associated_data(artifact_id, format_version, name)
    return ENCRYPTED_MAGIC + nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt_bytes(
    blob: bytes, key: bytes, name: str, *, artifact_id: str | None, format_version: int,
    allow_legacy: bool = False,
) -> bytes:  # fmt: skip
    """Decrypt what :func:`encrypt_bytes` wrote for file ``name`` of artifact ``artifact_id``.

    ``allow_legacy`` also accepts the previous format (file name alone as associated data);
    pass it only when the artifact's ``model.json`` is authenticated (see the module docstring).

    Raises
    ------
    ArtifactError
        Naming ``name``, if the blob is not an encrypted file, or the key is wrong, or the
        ciphertext was altered or belongs to another artifact (the GCM tag does not verify),
        or it is in the previous format and ``allow_legacy`` is false.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    magic = blob[: len(ENCRYPTED_MAGIC)]
    header = len(ENCRYPTED_MAGIC) + NONCE_BYTES
    if magic not in (ENCRYPTED_MAGIC, LEGACY_ENCRYPTED_MAGIC) or len(blob) < header:
        raise ArtifactError(f"{name} is not an encrypted shardlearn file")
    if magic == LEGACY_ENCRYPTED_MAGIC and not allow_legacy:
        raise ArtifactError(
            f"{name} was encrypted by an older shardlearn that does not bind files to their "
            "artifact, and this artifact is neither signed nor read through a registry; "
            "re-register (or re-save) it with this version"
        )
    if magic == ENCRYPTED_MAGIC and artifact_id is None:
        raise ArtifactError(f"cannot decrypt {name}: model.json records no artifact id")
    aad = (
        name.encode()
        if magic == LEGACY_ENCRYPTED_MAGIC
        else _associated_data(str(artifact_id), format_version, name)
    )
    try:
        return AESGCM(key).decrypt(blob[len(magic) : header], blob[header:], aad)
    except InvalidTag:
        raise ArtifactError(
            f"cannot decrypt {name}: wrong encryption key, or the file was altered or "
            "belongs to another artifact"
        ) from None
