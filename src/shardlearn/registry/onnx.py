"""Export of linear models and naive Bayes to ONNX, built node by node from the fitted arrays.

The graph is written with the ``onnx`` helper API directly from ``coef_``/``intercept_`` or the
naive Bayes statistics, so it needs no converter package and mirrors the model's own numpy
code step by step. Input ``X`` is a float32 (or float64) matrix of the model's features; the
arithmetic runs in float64 inside the graph, like the native ``predict_proba``. Outputs:

* ``label`` -- the predicted class (string or int64, values of ``classes_``);
* ``probabilities`` -- float32 ``(n, n_classes)``, columns in the order of ``classes_``, for
  models with ``predict_proba``; margin models (LinearSVC, SGD with hinge) give ``scores``
  (their ``decision_function``) instead.

A Pipeline's preprocessing is not exported: ``estimator_only=True`` exports its classifier,
whose input is then the preprocessed feature matrix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn.exceptions import ArtifactError

__all__ = ["EXPORTABLE", "export_onnx", "to_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; onnxruntime reads it everywhere
EXPORTABLE = (
    "LogisticRegression",
    "LinearSVC",
    "SGDClassifier",
    "GaussianNB",
    "MultinomialNB",
)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "ONNX export needs the onnx extra: pip install 'shardlearn[onnx]'"
        ) from None
    return onnx


class _Graph:
    """A tiny builder: constants and nodes with generated names."""

    def __init__(self) -> None:
        self.onnx = _onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], **attrs))
        return output


def _linear_scores(g: _Graph, X: str, model: Any) -> str:
    """``X coef_^T + intercept_`` as (n, K') float64."""
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
    return g.op("Add", g.op("MatMul", X, g.const(coef.T, "coef_t")), g.const(intercept, "b"))


def _binary_from_positive(g: _Graph, positive: str) -> str:
    """(n, 1) positive-class probability -> (n, 2) [1 - p, p]."""
    negative = g.op("Sub", g.const(np.array(1.0)), positive)
    return g.op("Concat", negative, positive, axis=1)


def _probabilities(g: _Graph, X: str, model: Any, kind: str) -> tuple[str, str]:
    """(output name, node holding it) for the model's probabilities or scores."""
    if kind in ("GaussianNB", "MultinomialNB"):
        return "probabilities", g.op("Softmax", _naive_bayes_jll(g, X, model, kind), axis=1)
    scores = _linear_scores(g, X, model)
    binary = np.asarray(model.coef_).shape[0] == 1
    has_proba = kind == "LogisticRegression" or (
        kind == "SGDClassifier" and getattr(model, "loss", None) == "log_loss"
    )
    if not has_proba:
        return "scores", scores
    if binary:
        return "probabilities", _binary_from_positive(g, g.op("Sigmoid", scores))
    if kind == "LogisticRegression":
        return "probabilities", g.op("Softmax", scores, axis=1)
    # SGD one-vs-rest: sigmoid(z_k) / sum_j sigmoid(z_j), computed as a softmax of the stable
    # log-sigmoid min(z, 0) - log(1 + exp(-|z|)), so very negative scores cannot underflow
    # every sigmoid of a row to 0 and divide 0 by 0.
    damped = g.op("Exp", g.op("Neg", g.op("Abs", scores)))
    log1p = g.op("Log", g.op("Add", g.const(np.array(1.0)), damped))
    log_sigmoid = g.op("Sub", g.op("Min", scores, g.const(np.array(0.0))), log1p)
    return "probabilities", g.op("Softmax", log_sigmoid, axis=1)


def _naive_bayes_jll(g: _Graph, X: str, model: Any, kind: str) -> str:
    if kind == "MultinomialNB":
        log_prob = np.asarray(model.feature_log_prob_, dtype=np.float64)
        prior = np.asarray(model.class_log_prior_, dtype=np.float64)
        return g.op("Add", g.op("MatMul", X, g.const(log_prob.T, "flp_t")), g.const(prior, "lp"))
    theta = np.asarray(model.theta_, dtype=np.float64)
    var = np.asarray(model.var_, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_prior = np.log(np.asarray(model.class_prior_, dtype=np.float64))
    offset = log_prior - 0.5 * np.sum(np.log(2.0 * np.pi * var), axis=1)
    expanded = g.op("Unsqueeze", X, g.const(np.array([1], dtype=np.int64)))  # (n, 1, p)
    diff = g.op("Sub", expanded, g.const(theta, "theta"))  # (n, K, p)
    scaled = g.op("Div", g.op("Mul", diff, diff), g.const(var, "var"))
    total = g.op("ReduceSum", scaled, g.const(np.array([2], dtype=np.int64)), keepdims=0)
    return g.op("Add", g.const(offset, "offset"), g.op("Mul", total, g.const(np.array(-0.5))))


def _classes_tensor(classes: np.ndarray) -> np.ndarray:
    if np.issubdtype(classes.dtype, np.integer) or classes.dtype == bool:
        return classes.astype(np.int64)
    return np.asarray([str(c) for c in classes.tolist()], dtype=object)


def _label(g: _Graph, output: str, model: Any, kind: str, out_name: str) -> None:
    """``label``: arg-max of probabilities, or of [-z, z] for a binary margin model."""
    scores = output
    if kind == "scores" and np.asarray(model.coef_).shape[0] == 1:
        scores = g.op("Concat", g.op("Neg", output), output, axis=1)
    index = g.op("ArgMax", scores, axis=1, keepdims=0)
    classes = _classes_tensor(np.asarray(model.classes_))
    g.op("Gather", g.const(classes, "classes"), index, out=out_name, axis=0)


def _estimator(model: Any, estimator_only: bool) -> Any:
    if hasattr(model, "preprocessor") and hasattr(model, "estimator"):
        if not estimator_only:
            raise ArtifactError(
                "ONNX export covers the classifier, not the Pipeline's preprocessing: pass "
                "estimator_only=True (--estimator-only) to export the classifier, whose input "
                "is then the preprocessed feature matrix"
            )
        return model.estimator
    return model


def to_onnx(model: Any, *, estimator_only: bool = False, dtype: str = "float32") -> Any:
    """The ``onnx.ModelProto`` of a fitted linear model or naive Bayes.

    Parameters
    ----------
    model : LogisticRegression, LinearSVC, SGDClassifier, GaussianNB, MultinomialNB or Pipeline
    estimator_only : bool, default False
        Required for a Pipeline: export its classifier only.
    dtype : {"float32", "float64"}, default "float32"
        Element type of the input ``X``.

    Raises
    ------
    ArtifactError
        For a model type that cannot be exported, naming the ones that can.
    """
    onnx = _onnx()
    estimator = _estimator(model, estimator_only)
    kind = type(estimator).__name__
    if kind not in EXPORTABLE:
        raise ArtifactError(
            f"ONNX export supports {', '.join(EXPORTABLE)}; {kind} cannot be exported "
            "(use the shardlearn artifact instead)"
        )
    if dtype not in ("float32", "float64"):
        raise ArtifactError(f"dtype must be 'float32' or 'float64'. Got {dtype!r}.")
    g = _Graph()
    X = g.op("Cast", "X", to=onnx.TensorProto.DOUBLE)
    output_name, node = _probabilities(g, X, estimator, kind)
    if output_name == "scores" and np.asarray(estimator.coef_).shape[0] == 1:
        # decision_function of a binary margin model is 1-d
        squeezed = g.op("Squeeze", node, g.const(np.array([1], dtype=np.int64)))
        g.op("Cast", squeezed, out=output_name, to=onnx.TensorProto.FLOAT)
    else:
        g.op("Cast", node, out=output_name, to=onnx.TensorProto.FLOAT)
    _label(g, node, estimator, "scores" if output_name == "scores" else kind, "label")
    return _assemble(g, estimator, output_name, dtype)


def _assemble(g: _Graph, estimator: Any, output_name: str, dtype: str) -> Any:
    onnx = g.onnx
    helper = onnx.helper
    n_features = int(estimator.n_features_in_)
    n_classes = len(estimator.classes_)
    elem = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.DOUBLE
    classes = _classes_tensor(np.asarray(estimator.classes_))
    label_type = onnx.TensorProto.INT64 if classes.dtype != object else onnx.TensorProto.STRING
    binary_scores = output_name == "scores" and np.asarray(estimator.coef_).shape[0] == 1
    output_shape = ["N"] if binary_scores else ["N", n_classes]
    graph = helper.make_graph(
        g.nodes,
        f"shardlearn_{type(estimator).__name__}",
        [helper.make_tensor_value_info("X", elem, ["N", n_features])],
        [
            helper.make_tensor_value_info("label", label_type, ["N"]),
            helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, output_shape),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="shardlearn"
    )
    model.ir_version = IR_VERSION
    names = getattr(estimator, "feature_names_in_", None)
    helper.set_model_props(
        model,
        {
            "classes": json.dumps(np.asarray(estimator.classes_).tolist()),
            "feature_names": json.dumps([str(n) for n in names] if names is not None else []),
            "model_type": type(estimator).__name__,
        },
    )
    onnx.checker.check_model(model)
    return model


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    estimator_only: bool = False,
    dtype: str = "float32",
) -> Path:
    """Write :func:`to_onnx` of ``model`` to ``path`` and return the path.

    Examples
    --------
    >>> import numpy as np
    >>> import shardlearn as sl
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> export_onnx(sl.LogisticRegression().fit(X, y, engine="local"), "loans.onnx")
    PosixPath('loans.onnx')
    """
    proto = to_onnx(model, estimator_only=estimator_only, dtype=dtype)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(proto.SerializeToString())
    return target
