"""Safe model artifacts (signed, optionally encrypted, never pickled), a versioned registry
with an SQLite index, batch prediction and ONNX export.

>>> import shardlearn as sl
>>> sl.save(model, "models/loans-lr")                       # doctest: +SKIP
>>> reg = sl.Registry("models"); mv = reg.register(model, "loans")   # doctest: +SKIP
>>> reg.promote("loans", mv.version, "production")          # doctest: +SKIP
>>> model = sl.load("models/loans@production")              # doctest: +SKIP
"""

from __future__ import annotations

from shardlearn.registry.artifact import Artifact, is_artifact, load, read_artifact, save
from shardlearn.registry.crypto import generate_key
from shardlearn.registry.store import (
    STAGES,
    ModelVersion,
    Registry,
    read_verified,
    resolve_reference,
)

__all__ = [
    "STAGES",
    "Artifact",
    "ModelVersion",
    "Registry",
    "generate_key",
    "is_artifact",
    "load",
    "read_artifact",
    "read_verified",
    "resolve_reference",
    "save",
]
