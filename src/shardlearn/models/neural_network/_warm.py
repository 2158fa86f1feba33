"""What a neural network's warm start continues from, and how an artifact carries it.

A fitted network keeps the driver's checkpoint of the epoch behind its weights
(:func:`shardlearn.models.neural_network._worker.checkpoint`, one part per rank: weights, optimiser
state, the best valid loss so far) together with the optimiser settings that state belongs to.
``fit`` with ``warm_start=True`` restores it on every rank, as a resumed fit does after a lost
worker, and continues the epoch numbers, so the data order and dropout masks are those of one
longer fit.

An artifact stores it only for a model saved with ``warm_start=True`` (a served model does not
need Adam's moments): the nested checkpoint becomes a JSON skeleton in ``model.json`` whose
arrays are in the artifact's ``.npz``. Reading it back accepts only that skeleton's tags and
arrays the artifact holds: it comes from a file, so it is untrusted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shardlearn.exceptions import ArtifactError

__all__ = ["OPTIMISER_SETTINGS", "decode", "encode"]

#: The parameters the optimiser state belongs to: a warm start must keep them (torch's
#: ``load_state_dict`` would otherwise bring back the old values without a word).
OPTIMISER_SETTINGS = ("optimizer", "learning_rate", "momentum", "weight_decay", "parallelism",
                      "stages")  # fmt: skip
_PREFIX = "warm_start/"
_FLOATS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` (dicts, lists, arrays, scalars) as JSON, its arrays added to ``arrays``."""
    if isinstance(value, np.ndarray):
        key = f"{_PREFIX}{len(arrays)}"
        arrays[key] = value
        return {"array": key}
    if isinstance(value, dict):
        # Tagged pairs: the optimiser's state is keyed by int, which JSON would make a string.
        return {"dict": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return {"list": [encode(item, arrays) for item in value]}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ArtifactError(f"The warm-start state holds a {type(value).__name__}; cannot save it.")


def decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The value :func:`encode` wrote; ArtifactError for anything else."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise ArtifactError("model.json: the warm-start state is malformed.")
    ((tag, body),) = value.items()
    if tag == "array" and isinstance(body, str) and body.startswith(_PREFIX) and body in arrays:
        return np.asarray(arrays[body])
    if tag == "dict" and isinstance(body, list) and all(_is_pair(p) for p in body):
        return {decode(k, arrays): decode(v, arrays) for k, v in body}
    if tag == "list" and isinstance(body, list):
        return [decode(item, arrays) for item in body]
    if tag == "float" and body in _FLOATS:
        return _FLOATS[body]
    raise ArtifactError(f"model.json: the warm-start state has an unknown entry {tag!r}.")


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and not isinstance(value[0], dict | list)
