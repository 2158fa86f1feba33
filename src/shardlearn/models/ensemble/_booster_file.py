"""A saved XGBoost booster, checked before XGBoost parses it.

XGBoost's model loader trusts its input: single flipped or cut-off bytes in a booster file
crashed the process (a segmentation fault, not an exception) in about one case in ten. An
artifact is untrusted, so its booster never reaches that loader as it is. :func:`checked_booster`
decodes the UBJSON (or JSON) here, with bounds, checks it against the structure shardlearn's
boosting writes -- a ``gbtree`` of numeric splits for ``binary:logistic`` or
``multi:softprob``, every tree's arrays as long as its node count, children after their parent
and each node the child of exactly one other, split features below ``num_feature``, finite
values, tree, round and class counts that agree -- and hands XGBoost the same model re-encoded
as plain JSON. Anything else is one :class:`~shardlearn.exceptions.ArtifactError` line.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from shardlearn.exceptions import ArtifactError

__all__ = ["checked_booster"]

_MAX_DEPTH = 16
_ROOT_PARENT = 2**31 - 1  # XGBoost's "no parent" for node 0
_OBJECTIVES = {"binary:logistic", "multi:softprob"}
_SCALARS = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8",
            b"d": ">f4", b"D": ">f8"}  # fmt: skip
_NUMERIC_TYPES = {"q", "float", "int", "i"}
_INTEGER = re.compile(r"\d{1,9}\Z")
_NUMBERS = re.compile(r"\[?[-+0-9.eE,]{0,4096}\]?\Z")
_INT_ARRAYS = ("left_children", "right_children", "parents", "split_indices", "split_type",
               "default_left")  # fmt: skip
_FLOAT_ARRAYS = ("split_conditions", "base_weights", "loss_changes", "sum_hessian")
_EMPTY_ARRAYS = ("categories", "categories_nodes", "categories_segments", "categories_sizes")
_TREE_KEYS = {"id", "tree_param", *_INT_ARRAYS, *_FLOAT_ARRAYS, *_EMPTY_ARRAYS}


def checked_booster(data: bytes, where: str) -> bytes:
    """``data`` (XGBoost UBJSON or JSON) as JSON bytes XGBoost can load safely.

    Raises
    ------
    ArtifactError
        The file is not a booster of the structure shardlearn writes.
    """
    try:
        document = _decode(data)
        _check(document)
        return json.dumps(document, allow_nan=False).encode()
    except ArtifactError as error:
        raise ArtifactError(f"{where} is not a valid XGBoost booster: {error}") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as error:
        raise ArtifactError(
            f"{where} is not a valid XGBoost booster: {type(error).__name__}: {error}"
        ) from None


# ------------------------------------------------------------------ decoding
def _decode(data: bytes) -> Any:
    if data[:1] == b"{" and data[1:2] in (b'"', b" ", b"\n", b"}"):
        return json.loads(data)  # XGBoost's JSON format (depth checked by _check's shape)
    reader = _UBJReader(data)
    value = reader.value(reader.marker(), 0)
    if reader.position != len(data):
        raise ArtifactError(f"{len(data) - reader.position} bytes follow the document")
    return value


class _UBJReader:
    """Universal Binary JSON as XGBoost writes it, within the bytes given and 16 levels."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise ArtifactError("the document is cut off")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def marker(self) -> bytes:
        return self.take(1)

    def scalar(self, marker: bytes) -> Any:
        dtype = _SCALARS.get(marker)
        if dtype is None:
            raise ArtifactError(f"unexpected UBJSON marker {marker!r}")
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(size), dtype)[0].item()

    def count(self) -> int:
        value = self.scalar(self.marker())
        if not isinstance(value, int) or value < 0:
            raise ArtifactError(f"a length of {value!r}")
        return value

    def string(self) -> str:
        return self.take(self.count()).decode("utf-8")

    def value(self, marker: bytes, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ArtifactError(f"nested deeper than {_MAX_DEPTH} levels")
        if marker == b"{":
            return self.object(depth)
        if marker == b"[":
            return self.array(depth)
        if marker == b"S":
            return self.string()
        if marker in (b"T", b"F"):
            return marker == b"T"
        if marker == b"Z":
            return None
        return self.scalar(marker)

    def object(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while self.marker() != b"}":
            self.position -= 1  # the marker was the key's length's
            key = self.string()
            if key in out:
                raise ArtifactError(f"key {key!r} twice")
            out[key] = self.value(self.marker(), depth + 1)
        return out

    def array(self, depth: int) -> list[Any]:
        marker = self.marker()
        if marker == b"$":
            kind = self.marker()
            if self.marker() != b"#" or kind not in _SCALARS:
                raise ArtifactError(f"unsupported typed array of {kind!r}")
            dtype = np.dtype(_SCALARS[kind])
            count = self.count()
            if count > (len(self.data) - self.position) // dtype.itemsize:
                raise ArtifactError("the document is cut off")
            return np.frombuffer(self.take(count * dtype.itemsize), dtype).tolist()
        if marker == b"#":
            count = self.count()
            if count > len(self.data) - self.position:
                raise ArtifactError("the document is cut off")
            return [self.value(self.marker(), depth + 1) for _ in range(count)]
        out = []
        while marker != b"]":
            out.append(self.value(marker, depth + 1))
            marker = self.marker()
        return out


# ------------------------------------------------------------------ checking
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _keys(node: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()):
    if not isinstance(node, dict):
        raise ArtifactError(f"{where} is not an object")
    missing, unknown = required - set(node), set(node) - required - optional
    if missing or unknown:
        detail = f"lacks {sorted(missing)}" if missing else f"has unknown keys {sorted(unknown)}"
        raise ArtifactError(f"{where} {detail}")
    return node


def _strings(node: Any, where: str) -> dict[str, str]:
    if not isinstance(node, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) <= 4096 for k, v in node.items()
    ):
        raise ArtifactError(f"{where} is not a mapping of short strings")
    return node


def _integer(text: Any, where: str, low: int, high: int) -> int:
    if not isinstance(text, str) or not _INTEGER.match(text) or not low <= int(text) <= high:
        raise ArtifactError(f"{where} is {text!r}, not an integer from {low} to {high}")
    return int(text)


def _check(document: Any) -> None:
    _keys(document, "the document", {"learner", "version"})
    version = document["version"]
    if not (isinstance(version, list) and len(version) == 3 and all(_is_int(v) for v in version)):
        raise ArtifactError(f"version is {version!r}")
    learner = _keys(
        document["learner"],
        "learner",
        {"gradient_booster", "learner_model_param", "objective"},
        frozenset({"attributes", "feature_names", "feature_types"}),
    )
    _strings(learner.get("attributes", {}), "learner.attributes")
    param = _strings(learner["learner_model_param"], "learner_model_param")
    _keys(param, "learner_model_param", {"base_score", "boost_from_average", "num_class",
                                         "num_feature", "num_target"})  # fmt: skip
    features = _integer(param["num_feature"], "num_feature", 1, 10**7)
    classes = _integer(param["num_class"], "num_class", 0, 10**5)
    _integer(param["num_target"], "num_target", 1, 1)
    _integer(param["boost_from_average"], "boost_from_average", 0, 1)
    if not _NUMBERS.match(param["base_score"]):
        raise ArtifactError(f"base_score is {param['base_score']!r}")
    for key in ("feature_names", "feature_types"):
        names = learner.get(key, [])
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ArtifactError(f"learner.{key} is not a list of strings")
        if len(names) not in (0, features):
            raise ArtifactError(f"learner.{key} has {len(names)} entries for {features} features")
    if not set(learner.get("feature_types", [])) <= _NUMERIC_TYPES:
        raise ArtifactError("learner.feature_types names a type that is not numeric")
    _check_objective(learner["objective"], classes)
    booster = _keys(learner["gradient_booster"], "gradient_booster", {"name", "model"})
    if booster["name"] != "gbtree":
        raise ArtifactError(f"gradient_booster is {booster['name']!r}, not 'gbtree'")
    _check_trees(booster["model"], features, max(classes, 1))


def _check_objective(objective: Any, classes: int) -> None:
    if not isinstance(objective, dict) or objective.get("name") not in _OBJECTIVES:
        raise ArtifactError("the objective is not binary:logistic or multi:softprob")
    for key, value in objective.items():
        if key != "name":
            _strings(value, f"objective.{key}")
    binary = objective["name"] == "binary:logistic"
    if binary != (classes == 0):
        raise ArtifactError(f"objective {objective['name']} with num_class {classes}")
    if not binary:
        softmax = objective.get("softmax_multiclass_param", {})
        if softmax.get("num_class") != str(classes):
            raise ArtifactError("the objective's num_class differs from the model's")


def _check_trees(model: Any, features: int, groups: int) -> None:
    model = _keys(model, "gbtree model", {"gbtree_model_param", "iteration_indptr", "tree_info",
                                          "trees"}, frozenset({"cats"}))  # fmt: skip
    cats = model.get("cats", {})
    if not isinstance(cats, dict) or any(v != [] for v in cats.values()):
        raise ArtifactError("the booster has categorical splits, which shardlearn never writes")
    param = _strings(model["gbtree_model_param"], "gbtree_model_param")
    _keys(param, "gbtree_model_param", {"num_parallel_tree", "num_trees"})
    trees, info, indptr = model["trees"], model["tree_info"], model["iteration_indptr"]
    count = _integer(param["num_trees"], "num_trees", 0, 10**7)
    if not isinstance(trees, list) or not isinstance(info, list):
        raise ArtifactError("trees or tree_info is not a list")
    if not len(trees) == len(info) == count:
        raise ArtifactError(f"num_trees is {count} but there are other numbers of trees")
    parallel = _integer(param["num_parallel_tree"], "num_parallel_tree", 1, 10**4)
    indptr = np.asarray(indptr, dtype=np.int64)
    if indptr.ndim != 1 or not len(indptr) or indptr[0] != 0 or indptr[-1] != count:
        raise ArtifactError("iteration_indptr does not span the trees")
    if np.any(np.diff(indptr) != groups * parallel):
        raise ArtifactError(f"a round does not hold {groups * parallel} trees")
    info = np.asarray(info, dtype=np.int64)
    if info.size and (info.min() < 0 or info.max() >= groups):
        raise ArtifactError("tree_info names an output group the model does not have")
    model["iteration_indptr"], model["tree_info"] = indptr.tolist(), info.tolist()
    for index, tree in enumerate(trees):
        _check_tree(tree, index, features)


def _check_tree(tree: Any, index: int, features: int) -> None:
    where = f"tree {index}"
    _keys(tree, where, _TREE_KEYS)
    if not _is_int(tree["id"]) or tree["id"] != index:
        raise ArtifactError(f"{where} has id {tree['id']!r}")
    param = _strings(tree["tree_param"], f"{where}.tree_param")
    _keys(param, f"{where}.tree_param", {"num_deleted", "num_feature", "num_nodes",
                                          "size_leaf_vector"})  # fmt: skip
    nodes = _integer(param["num_nodes"], f"{where}.num_nodes", 1, 2**24)
    _integer(param["num_deleted"], f"{where}.num_deleted", 0, 0)
    _integer(param["size_leaf_vector"], f"{where}.size_leaf_vector", 0, 1)
    if _integer(param["num_feature"], f"{where}.num_feature", 1, 10**7) != features:
        raise ArtifactError(f"{where} has another num_feature than the model")
    arrays = {}
    for name in (*_INT_ARRAYS, *_FLOAT_ARRAYS):
        values = tree[name]
        if not isinstance(values, list) or len(values) != nodes:
            raise ArtifactError(f"{where}.{name} does not hold {nodes} values")
        kind = np.int64 if name in _INT_ARRAYS else np.float64
        arrays[name] = np.asarray(values, dtype=kind)
        if kind is np.float64 and not np.isfinite(arrays[name]).all():
            raise ArtifactError(f"{where}.{name} holds a value that is not finite")
        tree[name] = arrays[name].tolist()  # plain numbers of the type XGBoost reads
    for name in _EMPTY_ARRAYS:
        if tree[name] != []:
            raise ArtifactError(f"{where}.{name} is not empty: categorical splits")
    _check_shape(arrays, where, nodes, features)


def _check_shape(arrays: dict[str, np.ndarray], where: str, nodes: int, features: int) -> None:
    left, right, parents = arrays["left_children"], arrays["right_children"], arrays["parents"]
    leaf = (left == -1) & (right == -1)
    inner = np.flatnonzero(~leaf)
    ids = np.arange(nodes)
    # Children after their parent (no cycle) and every node but the root the child of exactly
    # one: the nodes form one tree that every walk leaves at a leaf.
    if np.any(left[inner] <= inner) or np.any(right[inner] <= inner):
        raise ArtifactError(f"{where} has a child that is not after its parent")
    if np.any(left[inner] >= nodes) or np.any(right[inner] >= nodes):
        raise ArtifactError(f"{where} has a child outside its {nodes} nodes")
    children = np.concatenate([left[inner], right[inner]])
    if not np.array_equal(np.sort(children), ids[1:]):
        raise ArtifactError(f"{where}'s nodes are not one tree")
    if parents[0] != _ROOT_PARENT or np.any(parents[left[inner]] != inner):
        raise ArtifactError(f"{where}'s parents do not match its children")
    if np.any(parents[right[inner]] != inner):
        raise ArtifactError(f"{where}'s parents do not match its children")
    split = arrays["split_indices"]
    if np.any((split < 0) | (split >= features)):
        raise ArtifactError(f"{where} splits on a feature outside 0 to {features - 1}")
    if np.any(arrays["split_type"] != 0) or np.any((arrays["default_left"] & ~1) != 0):
        raise ArtifactError(f"{where} has a split type or direction shardlearn never writes")
