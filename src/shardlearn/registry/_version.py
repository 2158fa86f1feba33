"""One registered version (:class:`ModelVersion`) and the checks of names and stages."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shardlearn.exceptions import ArtifactError

__all__ = ["STAGES", "ModelVersion", "check_name", "check_stage", "now"]

STAGES = ("staging", "production", "archived")
# Used with fullmatch: "$" also matches before a trailing newline, so "loans\n" passed.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    Attributes
    ----------
    name : str
    version : int
    path : Path or str
        The artifact directory (its URI in a registry at an ``s3://`` root).
    model_type : str
    stage : str or None
        ``"staging"``, ``"production"``, ``"archived"`` or ``None``.
    created_at : str
        ISO-8601 UTC time of registration.
    metrics : dict or None
    lineage : dict
        ``dataset_manifest_sha256``, ``params``, ``parent`` (``"name:version"``), ...
    artifact_sha256 : str
        sha256 of the artifact's ``model.json`` (which pins every other file).
    signed, encrypted : bool
    description : str or None
    """

    name: str
    version: int
    path: Path | str
    model_type: str
    stage: str | None
    created_at: str
    metrics: dict[str, Any] | None
    lineage: dict[str, Any]
    artifact_sha256: str
    signed: bool
    encrypted: bool
    description: str | None = None

    @property
    def ref(self) -> str:
        """``"NAME:VERSION"``."""
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ArtifactError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ArtifactError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    return stage


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
