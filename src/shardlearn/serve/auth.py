"""Bearer-token authentication for the prediction service.

Tokens are random strings shown once, when created; the token file keeps only their sha256
hashes, one per line as ``NAME sha256:HEX CREATED``. Checking a token hashes it and compares
with every stored hash in constant time, so neither the file nor the timing reveals a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shardlearn.exceptions import ShardlearnError

__all__ = ["TOKEN_PREFIX", "TokenStore"]

TOKEN_PREFIX = "sl_"
# 32 random bytes: far beyond brute force, so a plain sha256 (no slow KDF) is enough to store.
_TOKEN_BYTES = 32
# Used with fullmatch: "$" also matches before a trailing newline, and a name "ci\n" broke
# the one-entry-per-line token file.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Entry:
    name: str
    digest: str
    created: str


class TokenStore:
    """The hashed bearer tokens in one file.

    Parameters
    ----------
    path : path-like
        The token file. It is created (mode 0600) by :meth:`create`.

    Examples
    --------
    >>> store = TokenStore("tokens")
    >>> token = store.create("ci")
    >>> store.verify(token)
    True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries = self._read()

    def _read(self) -> list[_Entry]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or not parts[1].startswith("sha256:"):
                raise ShardlearnError(
                    f"{self.path}, line {number}: not a token entry 'NAME sha256:HEX CREATED'; "
                    "create tokens with `shardlearn serve token create`"
                )
            entries.append(_Entry(parts[0], parts[1].removeprefix("sha256:"), parts[2]))
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Names of the stored tokens."""
        return [entry.name for entry in self._entries]

    def create(self, name: str = "default") -> str:
        """Create a token, store its hash and return the token (the only time it is shown)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ShardlearnError(
                f"invalid token name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a") as handle:
            handle.write(f"{name} sha256:{_digest(token)} {created}\n")
        self._entries = self._read()
        return token

    def verify(self, token: str) -> bool:
        """Whether ``token`` matches a stored hash (constant time in the token's content)."""
        offered = _digest(token)
        matched = False
        for entry in self._entries:
            # No early exit: every entry is compared whatever the outcome.
            matched |= hmac.compare_digest(offered, entry.digest)
        return matched
