"""Safe model artifacts (signed, optionally encrypted, never pickled), a versioned registry
with an SQLite index, batch prediction and ONNX export.

>>> import numpy as np
>>> import shardlearn as sl
>>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
>>> model = sl.LogisticRegression().fit(X, y, engine="local")
>>> sl.save(model, "models/loans-lr")
PosixPath('models/loans-lr')
>>> reg = sl.Registry("models"); mv = reg.register(model, "loans")
>>> reg.promote("loans", mv.version, "production").stage
'production'
>>> sl.load("models/loans@production").predict(X).tolist()
[0, 0, 1, 1]
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
