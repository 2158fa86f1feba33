"""Neural-network classifiers trained across a WorkerGroup with torch.

:class:`MLPClassifier` (tabular) and :class:`ConvNetClassifier` (images) share one driver:

* ``parallelism="data"`` — data parallel as torch DistributedDataParallel (bucketed gradient
  all-reduce), one rank per worker, each rank on its own shards
  (:mod:`shardlearn.models.neural_network._ddp`);
* ``parallelism="pipeline"`` — the layers split over ``stages`` workers, micro-batches on a
  GPipe schedule (:mod:`shardlearn.models.neural_network._gpipe`).

The driver probes the workers (rows per shard, GPUs), picks the backend (nccl when every
worker has a GPU, else gloo) and a free port, sets every rank up once, then runs one
``group.run`` per epoch so that it can show the epoch's loss and valid accuracy and stop early;
the weights and optimiser state stay on the workers in between. Both modes equal single-process
training with the same global ``batch_size``, seed and dropout masks, for any worker count (see
the module docstrings).

Where an MLP's fit runs is chosen per fit (``execution``,
:mod:`shardlearn.models._training.execution`): every optimiser step of data-parallel training has a
fixed cost on every rank and waits for an all-reduce, and workers that never trained a network
must first import torch, so 2 processes pay off only for enough rows x epochs; ``"auto"``
compares the estimates (the local workers that already trained a network in this interpreter
start warm, :func:`~shardlearn.models.neural_network._driver.warm_workers`) and otherwise trains
in the calling process (``execution_ == "in_process"``); ``"workers"`` forces the worker group.
Both give the same model (single-process torch with the same global batch).

Continue-training (``MLPClassifier(warm_start=True)``, scikit-learn's contract): a refit of a
fitted network trains ``epochs`` more epochs from its weights *and* its optimiser state (Adam's
moments and step count, SGD's momentum buffers) and its early-stopping best, numbering the
epochs on, in every execution mode and parallelism (:mod:`shardlearn.models.neural_network._warm`).
So ``epochs=a`` then ``epochs=b`` warm equals one fit of ``a + b`` epochs without early stopping.

torch is imported only inside functions: ``import shardlearn.models`` never imports it.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.engine import VERBOSE_CONSTRAINTS
from shardlearn.exceptions import ArtifactError, DataError
from shardlearn.models._base import ClassifierMixin, _to_json, artifact_params
from shardlearn.models._registry import register_model
from shardlearn.models._training.execution import (
    EXECUTION_OPTIONS,
    Machine,
    Work,
    execution_engine,
    recording,
    timed,
)
from shardlearn.models.neural_network._ddp import BUCKET_BYTES
from shardlearn.models.neural_network._driver import train_on_group, warm_workers
from shardlearn.models.neural_network._shared import AVAILABLE as SHARED_MEMORY
from shardlearn.models.neural_network._torch import (
    ACTIVATIONS,
    build_network,
    load_weights,
    require_torch,
    save_weights,
)
from shardlearn.models.neural_network._warm import OPTIMISER_SETTINGS, decode, encode

__all__ = ["ConvNetClassifier", "MLPClassifier"]

WEIGHTS_FILE = "weights.safetensors"
# Output width the cost model assumes before the classes are known: the output layer is a
# small share of an MLP's multiply-adds, and a binary task's 2 is the lower bound.
_COST_CLASSES = 2
# Rows per forward pass in predict_proba: bounds memory, does not change results.
PREDICT_CHUNK = 8192
# estimator -> (the state_dict_ it was built from, the eval-mode torch network). Kept out of the
# estimator's __dict__ so that predicting leaves the fitted state (what pickling, the artifact
# and scikit-learn's check_dict_unchanged see) untouched; an entry dies with its estimator.
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_SIZES = [Type((tuple, list), "a tuple of positive ints")]
_COMMON_CONSTRAINTS: dict[str, list] = {
    "hidden_layer_sizes": _SIZES,
    "activation": [Options(ACTIVATIONS)],
    "dropout": [Interval("real", 0, 1, "left")],
    "batch_size": [Interval("int", 1, None)],
    "epochs": [Interval("int", 1, None)],
    "learning_rate": [Interval("real", 0, None, "neither")],
    "optimizer": [Options(("adam", "sgd"))],
    "momentum": [Interval("real", 0, 1, "left")],
    "weight_decay": [Interval("real", 0, None)],
    "early_stopping": [Type(bool)],
    "n_iter_no_change": [Interval("int", 1, None)],
    "tol": [Interval("real", 0, None)],
    "device": [Options(("auto", "cpu", "cuda"))],
    "random_state": [Interval("int", 0, None), Type(type(None))],
    "parallelism": [Options(("data", "pipeline"))],
    "stages": [Interval("int", 1, None)],
    "micro_batches": [Interval("int", 1, None)],
    "verbose": VERBOSE_CONSTRAINTS,
}


def _best_epoch(
    history: list[dict], early_stopping: bool, first: int = 0, kept: bool = False
) -> int:
    """The number of epochs behind the kept weights (see ``best_epoch_``).

    With early stopping the workers return the weights of the last epoch whose valid loss
    improved by more than ``tol``, if any epoch did -- or, continuing a fit (epochs numbered
    from ``first``) that ``kept`` a best epoch, that epoch's; otherwise the last epoch's.
    """
    improved = [first + epoch + 1 for epoch, report in enumerate(history) if report["improved"]]
    if early_stopping and improved:
        return improved[-1]
    return first if early_stopping and kept else first + len(history)


def _check_sizes(owner: str, name: str, sizes: Any) -> list[int]:
    sizes = list(sizes)
    if not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise ValueError(
            f"The {name!r} parameter of {owner} must be a tuple of positive ints. Got {sizes!r}."
        )
    return [int(s) for s in sizes]


class _NeuralClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict/artifact logic; subclasses describe their architecture."""

    # Preprocessing defaults (preprocess.profiles): torch trains on dense blocks.
    _preprocess_profile: ClassVar[str] = "dense"
    _parameter_constraints: ClassVar[dict[str, list]] = _COMMON_CONSTRAINTS
    # scikit-learn checks both networks fail, and why (BaseEstimator._expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        (
            "check_sample_weight_equivalence_on_dense_data",
            "check_sample_weight_equivalence_on_sparse_data",
        ),
        "mini-batch SGD: a row given twice lands in other batches than a row of weight 2, "
        "so the two paths differ (equal in expectation only)",
    )
    # Fitted epochs, set by _set_fitted and _from_artifact (declared for the type checker).
    n_iter_: int
    best_epoch_: int

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        preprocessor: Any = None,
    ) -> Any:
        """Train on a Dataset (``y=None``) or arrays, on ``engine`` (default: the current one).

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix
            Training data. A dataset's "valid" split drives early stopping.
        y : array-like, optional
            Labels for array input.
        engine : Engine, str or None
            Where to train; one rank per worker of the engine's default group.
        sample_weight : array-like, optional
            Per-row weights (array input), multiplying each row's loss.
        preprocessor : Preprocessor, optional
            For a Dataset: the (fitted or unfitted) preprocessor producing the features.

        Returns
        -------
        self
        """
        self._validate_params()
        require_torch()
        X, data = self._training_input(X, scale_pixels=preprocessor is None)
        from shardlearn.models._training.fitting import prepare_training

        kwargs = {"preprocessor": preprocessor} if preprocessor is not None else {}
        with recording(), execution_engine(self, X, engine) as run_on:
            with prepare_training(
                self, X, y, engine=run_on, sample_weight=sample_weight, **kwargs
            ) as ctx:
                return self._fit_context(ctx, data=data)

    def _fit_context(
        self, ctx: Any, callback: Callable | None = None, data: dict | None = None
    ) -> Any:
        """Train on a prepared TrainingContext (used by ``fit`` and by ``Pipeline``).

        ``callback``, when given, receives after every epoch an object with ``iteration``,
        ``loss``, ``grad_norm`` (NaN: not computed) and ``valid_accuracy``.
        """
        self._validate_params()
        require_torch()
        if data is None:
            _, data = self._training_input(None, scale_pixels=False)
        arch = self._architecture(ctx.n_features, len(ctx.classes))
        spec = self._spec(arch, {**data, "n_features": int(ctx.n_features)})
        resume = self._warm_start_from(arch, ctx.classes)
        if resume is not None:
            spec.update(resume=resume, first_epoch=self.best_epoch_)
        mode = self._execution_mode(ctx.group)
        with recording() as timings:
            with timed("train"):
                weights, history, kept = train_on_group(
                    self, ctx.group, spec, list(ctx.splits), callback
                )
            self.execution_ = mode
            self.fit_timings_ = timings.as_dict()
        self._set_fitted(ctx, arch, weights, history, resume)
        self._warm_state = {"checkpoint": kept, "settings": self._optimiser_settings()}
        return self

    def _set_fitted(
        self, ctx: Any, arch: dict, weights: dict, history: list[dict], resume: list | None
    ) -> None:
        """The fitted attributes; a warm start extends the curves of the fit it continued."""
        curves = {"loss_curve_": [h["loss"] for h in history],
                  "validation_scores_": [h["valid_accuracy"] for h in history
                                         if h["valid_accuracy"] is not None],
                  "epoch_seconds_": [h["seconds"] for h in history]}  # fmt: skip
        first, epochs = 0, len(history)
        if resume is not None:
            curves = {name: [*getattr(self, name), *values] for name, values in curves.items()}
            first, epochs = self.best_epoch_, self.n_iter_ + len(history)
        kept = resume is not None and any(p and p["best"] is not None for p in resume)
        self.classes_ = np.asarray(ctx.classes)
        self.n_features_in_ = int(ctx.n_features)
        self.feature_names_in_ = list(ctx.feature_names)
        self.architecture_ = arch
        self.state_dict_ = weights
        for name, values in curves.items():
            setattr(self, name, values)
        self.n_iter_ = epochs
        self.best_epoch_ = _best_epoch(history, self.early_stopping, first, kept)

    def _optimiser_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OPTIMISER_SETTINGS}

    def _warm_start_from(self, arch: dict, classes: Any) -> list | None:
        """The checkpoint a warm start continues from, after checking it can; None for a
        new fit."""
        if not getattr(self, "warm_start", False) or not hasattr(self, "state_dict_"):
            return None
        owner = f"{type(self).__name__}(warm_start=True)"
        if arch != self.architecture_ or not np.array_equal(np.asarray(classes), self.classes_):
            raise ValueError(
                f"{owner} continues a network of architecture {self.architecture_} with "
                f"classes {self.classes_.tolist()}; this fit asks for {arch} with classes "
                f"{np.asarray(classes).tolist()}. Keep the layers, features and classes, or "
                "set warm_start=False to train a new network."
            )
        state = getattr(self, "_warm_state", None)
        if state is None:
            raise ValueError(
                f"{owner} continues the optimiser state of the previous fit, which this model "
                "does not hold: it was loaded from an artifact saved with warm_start=False. "
                "Save it with warm_start=True, or set warm_start=False to train anew."
            )
        now = self._optimiser_settings()
        changed = sorted(k for k in now if now[k] != state["settings"][k])
        if changed:
            was = ", ".join(f"{k}={state['settings'][k]!r} (now {now[k]!r})" for k in changed)
            raise ValueError(
                f"{owner} continues an optimiser state that belongs to {was}. Set them back, "
                "or set warm_start=False to train a new network."
            )
        return state["checkpoint"]

    def _execution_mode(self, group: Any) -> str:
        """Where this fit runs on ``group``; refuses ``in_process`` on a group of workers."""
        here = group.size == 1 and group.shares_memory
        if getattr(self, "execution", "auto") == "in_process" and not here:
            raise ValueError(
                f"{type(self).__name__}: execution='in_process' cannot be honoured here: the "
                f"caller has already started {group.size} worker(s) in other processes. Use "
                "execution='auto' or 'workers', or fit the estimator itself."
            )
        if here:
            return "in_process"
        return "ray" if type(group).__module__.startswith("shardlearn.engine.ray") else "workers"

    def _training_input(self, X: Any, scale_pixels: bool) -> tuple[Any, dict]:
        """The input to hand to prepare_training and how workers read it."""
        return X, {"kind": "block"}

    def _architecture(self, n_features: int, n_classes: int) -> dict:
        raise NotImplementedError

    def _spec(self, arch: dict, data: dict) -> dict:
        seed = self.random_state
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
        return {
            "fit_id": uuid.uuid4().hex,
            "arch": arch,
            "seed": int(seed),
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate),
            "momentum": float(self.momentum),
            "weight_decay": float(self.weight_decay),
            "tol": float(self.tol),
            "stages": self.stages if self.parallelism == "pipeline" else 1,
            "micro_batches": self.micro_batches,
            "data": data,
        }

    # ---------------------------------------------------------------- prediction
    def _net(self) -> Any:
        """The eval-mode torch network holding ``state_dict_``, built once per fitted state."""
        check_is_fitted(self)
        cached = _NETWORKS.get(self)
        # A refit or an assigned state_dict_ is a new dict: the cached network is stale.
        if cached is not None and cached[0] is self.state_dict_:
            return cached[1]
        torch = require_torch()
        net = build_network(self.architecture_, 0)
        net.load_state_dict(
            {k: torch.from_numpy(np.asarray(v)) for k, v in self.state_dict_.items()}
        )
        _NETWORKS[self] = (self.state_dict_, net.eval())
        return net

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (columns in the order of ``classes_``), computed locally."""
        X = self._check_predict_input(self._prediction_input(X))
        torch = require_torch()
        from shardlearn.models.neural_network._torch import to_dense_float32

        net = self._net()
        out = []
        with torch.no_grad():
            for start in range(0, X.shape[0], PREDICT_CHUNK):
                chunk = to_dense_float32(X[start : start + PREDICT_CHUNK])
                out.append(torch.softmax(net(torch.from_numpy(chunk)), dim=1).double().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.classes_)))

    def _prediction_input(self, X: Any) -> Any:
        return X

    # ---------------------------------------------------------------- artifacts
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """Metadata (params, classes, architecture, curves) and the safetensors weights."""
        check_is_fitted(self)
        torch = require_torch()
        meta = {
            "type": type(self).__name__,
            "params": {k: _to_json(v) for k, v in self.get_params(deep=False).items()},
            "architecture": self.architecture_,
            "attributes": {
                "classes_": _to_json(self.classes_),
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": list(self.feature_names_in_),
                "loss_curve_": _to_json(self.loss_curve_),
                "validation_scores_": _to_json(self.validation_scores_),
                "n_iter_": self.n_iter_,
                "best_epoch_": self.best_epoch_,
                "epoch_seconds_": _to_json(self.epoch_seconds_),
            },
        }
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in self.state_dict_.items()}
        blob = save_weights(tensors, {"type": meta["type"], "architecture": self.architecture_})
        arrays: dict[str, np.ndarray] = {}
        # Only a model meant to continue carries its optimiser state (see _neural_warm).
        if getattr(self, "warm_start", False) and getattr(self, "_warm_state", None):
            meta["warm_state"] = encode(self._warm_state, arrays)
        return meta, arrays, {WEIGHTS_FILE: blob}

    @classmethod
    def _from_artifact(cls, meta: dict, arrays: dict, files: dict[str, bytes]) -> Any:
        """Rebuild a fitted model from :meth:`_to_artifact` output (weights via safetensors)."""
        if meta.get("type") != cls.__name__:
            raise ArtifactError(f"Artifact holds a {meta.get('type')!r}, not a {cls.__name__}.")
        if WEIGHTS_FILE not in files:
            raise ArtifactError(f"{cls.__name__} artifact is missing {WEIGHTS_FILE}.")
        tensors, weights_meta = load_weights(files[WEIGHTS_FILE])
        if weights_meta.get("architecture") != meta.get("architecture"):
            raise ArtifactError(
                f"{WEIGHTS_FILE} was saved for a different architecture than model.json says."
            )
        _check_weight_shapes(meta["architecture"], tensors)
        params = artifact_params(cls, meta)
        for name in ("hidden_layer_sizes", "channels", "image_shape"):
            if isinstance(params.get(name), list):
                params[name] = tuple(params[name])
        model = cls(**params)
        attributes = meta.get("attributes", {})
        model.classes_ = np.asarray(attributes["classes_"])
        model.n_features_in_ = int(attributes["n_features_in_"])
        model.feature_names_in_ = list(attributes["feature_names_in_"])
        model.loss_curve_ = list(attributes.get("loss_curve_", []))
        model.validation_scores_ = list(attributes.get("validation_scores_", []))
        model.n_iter_ = int(attributes.get("n_iter_", 0))
        # Artifacts saved before best_epoch_ existed: their weights are the last epoch's or,
        # with early stopping, an unknown earlier one; n_iter_ is the best available bound.
        model.best_epoch_ = int(attributes.get("best_epoch_", model.n_iter_))
        model.epoch_seconds_ = list(attributes.get("epoch_seconds_", []))
        model.architecture_ = meta["architecture"]
        model.state_dict_ = {k: v.numpy() for k, v in tensors.items()}
        if meta.get("warm_state") is not None:
            model._warm_state = _checked_warm_state(decode(meta["warm_state"], arrays))
        return model


def _checked_warm_state(state: Any) -> dict:
    """A decoded warm-start state with the shape a warm start reads (it came from a file)."""
    parts = state.get("checkpoint") if isinstance(state, dict) else None
    settings = state.get("settings") if isinstance(state, dict) else None
    valid = (
        isinstance(parts, list)
        and isinstance(settings, dict)
        and set(settings) == set(OPTIMISER_SETTINGS)
        and all(
            p is None
            or (isinstance(p, dict) and {"weights", "optimizer", "best", "best_loss"} <= set(p))
            for p in parts
        )
    )
    if not valid:
        raise ArtifactError("model.json: the warm-start state is malformed.")
    return state


def _check_weight_shapes(architecture: Any, tensors: dict[str, Any]) -> None:
    """Refuse weights that are not those of ``architecture``, allocating nothing for it.

    The network is built on torch's meta device (shapes only), so a crafted architecture
    with huge layers costs no memory; predicting would otherwise build it for real.
    """
    torch = require_torch()
    try:
        with torch.device("meta"):
            network = build_network(architecture, 0)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise ArtifactError(f"model.json has an invalid network architecture: {error}") from None
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    if expected != {k: tuple(v.shape) for k, v in tensors.items()}:
        raise ArtifactError(
            f"{WEIGHTS_FILE} does not hold the weights of the architecture model.json describes."
        )


@register_model("mlp")
class MLPClassifier(_NeuralClassifier):
    """A multi-layer perceptron trained data-parallel or pipeline-parallel with torch.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer.
    activation : {"relu", "tanh", "logistic", "gelu"}, default="relu"
    dropout : float in [0, 1), default=0.0
        Dropout after every hidden layer.
    batch_size : int, default=256
        The GLOBAL batch: rows per optimiser step summed over all workers.
    epochs : int, default=20
        Maximum passes over the training rows.
    learning_rate : float, default=1e-3
    optimizer : {"adam", "sgd"}, default="adam"
    momentum : float, default=0.9
        SGD momentum (ignored by Adam).
    weight_decay : float, default=0.0
        L2 penalty applied by the optimiser.
    early_stopping : bool, default=True
        With a "valid" split: stop after ``n_iter_no_change`` epochs without the valid loss
        improving by ``tol``, and keep the best epoch's weights.
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    device : {"auto", "cpu", "cuda"}, default="auto"
        "auto" uses the GPUs (nccl) when every worker has one, else the CPU (gloo).
    random_state : int or None, default=None
        Seed of the initial weights and of the data order.
    parallelism : {"data", "pipeline"}, default="data"
        "data": every worker holds the whole model and trains on its own shards
        (gradients all-reduced in buckets, as torch DDP; a network of up to 25 MB on CPUs
        exchanges them through shared memory, one all-reduce per step).
        "pipeline": the layers are split over ``stages`` workers (for models too big for one).
    stages : int, default=2
        Pipeline stages (``parallelism="pipeline"`` only); at most the number of workers.
    micro_batches : int, default=4
        Micro-batches per global batch on the pipeline schedule.
    verbose : bool or int, default=True
        Show a progress bar on stderr with each epoch's training loss, valid loss and valid
        accuracy, when stderr is a terminal (see :func:`shardlearn.engine.show_progress`);
        0 or False never.
    warm_start : bool, default=False
        When the model is already fitted, ``fit`` trains ``epochs`` more epochs from its
        weights and optimiser state (scikit-learn's continue-training; see the module notes).
        The architecture, classes and optimiser settings (``optimizer``, ``learning_rate``,
        ``momentum``, ``weight_decay``, ``parallelism``, ``stages``) must be those of the
        fitted network. The curves (``loss_curve_``...) are extended. A model saved with
        ``warm_start=True`` keeps its optimiser state in the artifact, so a loaded one can
        continue too.
    execution : {"auto", "in_process", "workers"}, default="auto"
        Where a data-parallel fit runs: ``"in_process"`` trains in the calling process (one
        torch thread, no workers, no all-reduce); ``"workers"`` on the engine's workers (Ray
        actors on Ray); ``"auto"`` picks the faster by a deterministic cost model (rows,
        network multiply-adds, epochs, optimiser steps -- one all-reduce each, through shared
        memory or gloo --, cores, whether the workers already trained a network in this
        interpreter; see :mod:`shardlearn.models._training.execution`). The model is the
        same either way, within the worker-count tolerance. Pipeline parallelism always runs
        on the workers.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_
        As for every classifier.
    execution_ : str
        Where the fit ran: ``"in_process"``, ``"workers"`` or ``"ray"``.
    fit_timings_ : dict
        Seconds per phase of the fit (``start``, ``read``, ``preprocess``, ``train``,
        ``evaluate``; see :mod:`shardlearn.models._training.execution`).
    architecture_ : dict
        The network description (saved in the artifact next to the weights).
    state_dict_ : dict of str to ndarray
        The trained weights (the best valid epoch's with early stopping).
    loss_curve_, validation_scores_, epoch_seconds_ : list of float
        Per epoch: mean training loss, valid accuracy (when there is a valid split) and
        wall seconds.
    n_iter_ : int
        Epochs trained; ``epochs`` is a hard budget, so ``1 <= n_iter_ <= epochs`` (fewer when
        early stopping ended the fit).
    best_epoch_ : int
        The number of epochs behind ``state_dict_``: with early stopping and a valid split,
        the last epoch whose valid loss improved by more than ``tol`` (its weights are the
        ones kept); otherwise ``n_iter_``. Refitting with ``epochs=best_epoch_`` and no
        early stopping trains the same number of epochs on other rows.

    Notes
    -----
    Both kinds of parallelism give the same weights as single-process torch with the same
    global ``batch_size``, seed and dropout masks, whatever the worker count and whichever
    worker owns which shard (up to float32 rounding of the order in which gradients are
    summed): epoch ``e`` visits the rows (by global index: shards by index, rows in shard
    order; for arrays, the input order) in the order of one seeded permutation, every step
    is one global batch however the rows are spread over the workers, and a row's dropout
    mask depends only on (seed, epoch, layer, global row). The model does depend on the row
    order of the data: label-sorted rows give other (equally random) batches than shuffled
    rows, so the two models differ like two seeds do.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, random_state=0)
    >>> model = MLPClassifier(hidden_layer_sizes=(16,), epochs=5, random_state=0,
    ...                       verbose=False).fit(X, y, engine="local")
    >>> model.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **_COMMON_CONSTRAINTS,
        "execution": [Options(EXECUTION_OPTIONS)],
        "warm_start": [Type(bool)],
    }

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_size: int = 256,
        epochs: int = 20,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        early_stopping: bool = True,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        device: str = "auto",
        random_state: int | None = None,
        parallelism: str = "data",
        stages: int = 2,
        micro_batches: int = 4,
        verbose: bool | int = True,
        execution: str = "auto",
        warm_start: bool = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.parallelism = parallelism
        self.stages = stages
        self.micro_batches = micro_batches
        self.verbose = verbose
        self.execution = execution
        self.warm_start = warm_start

    @property
    def _execution_algorithm(self) -> str | None:
        """The cost model's algorithm (models._execution); a pipeline-parallel fit is not
        planned: its stages need the workers."""
        return "mlp" if self.parallelism == "data" else None

    def _execution_work(self, rows: int, features: int) -> Work:
        """The fit's size for the cost model: multiply-adds of the network per row, forward
        and backward (3 forward's worth) per epoch, one all-reduce per optimiser step of the
        gradients' bytes (plus the loss) through shared memory when the network is one
        bucket on CPUs, else gloo (nccl on GPUs: the algorithm's own sync figure)."""
        hidden = _check_sizes(type(self).__name__, "hidden_layer_sizes", self.hidden_layer_sizes)
        sizes = [features, *hidden, _COST_CLASSES]
        layers = list(zip(sizes[:-1], sizes[1:], strict=False))
        multiply_adds = sum(a * b for a, b in layers)
        gradient_bytes = 4 * (1 + sum(a * b + b for a, b in layers))  # float32 weights, biases
        transport = "shared_memory" if SHARED_MEMORY and gradient_bytes <= BUCKET_BYTES else "gloo"
        return Work(
            "mlp",
            rows,
            features,
            passes=self.epochs * 3 * math.ceil(multiply_adds / features),
            syncs=self.epochs * math.ceil(rows / self.batch_size),
            transport=None if self.device == "cuda" else transport,
            sync_bytes=gradient_bytes,
        )

    def _execution_machine(self, machine: Machine) -> Machine:
        """The cost model's machine with the local workers that already trained a network in
        this interpreter (warm: torch imported, a fit starts in a fraction of a second)."""
        if machine.engine != "local":
            return machine
        return dataclasses.replace(machine, warm_workers=warm_workers())

    def _architecture(self, n_features: int, n_classes: int) -> dict:
        return {
            "kind": "mlp",
            "n_features": int(n_features),
            "hidden": _check_sizes(
                type(self).__name__, "hidden_layer_sizes", self.hidden_layer_sizes
            ),
            "activation": self.activation,
            "dropout": float(self.dropout),
            "n_classes": int(n_classes),
        }


@register_model("convnet")
class ConvNetClassifier(_NeuralClassifier):
    """A small configurable CNN on the same distributed machinery as :class:`MLPClassifier`.

    ``Conv2d -> activation [-> MaxPool2d(2)]`` per entry of ``channels``, then dense hidden
    layers and the output layer. Images are fed as rows of ``C * H * W`` pixels.

    Flat 2-D rows of ``n`` features with no ``image_shape`` are read as one-row images,
    ``(1, 1, n)``: the convolutions slide along the row (kernel ``1 x kernel_size``) and the
    pooling halves only its length -- a 1-D convolutional network. The pixel layout of a flat
    row is never guessed (a square ``n`` is not taken for a square image): pass
    ``image_shape`` (or 3-D / 4-D arrays) to read flat rows as 2-D images.

    The parameters after ``hidden_layer_sizes`` (``activation`` ... ``verbose``) are those of
    :class:`MLPClassifier`.

    Parameters
    ----------
    image_shape : tuple of int or None, default=None
        ``(C, H, W)`` or ``(H, W)``. Inferred from 3-D ``(n, H, W)`` / 4-D ``(n, C, H, W)``
        arrays and from image datasets written by :func:`shardlearn.data.images.ingest_images`;
        flat 2-D arrays and tabular datasets without it are one-row images ``(1, 1, n)``.
    channels : tuple of int, default=(16, 32)
        Output channels of each convolution.
    kernel_size : int, default=3
        Square kernel (1 along a side of length 1); padding ``kernel_size // 2`` keeps the
        spatial size of an odd kernel.
    pool : bool, default=True
        2x2 max-pooling after each convolution (1x2 / 2x1 on a one-row / one-column image),
        skipped once a side longer than 1 is below 4 pixels.
    hidden_layer_sizes : tuple of int, default=(64,)
        Dense layers after the convolutions.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> digits = load_digits()
    >>> model = ConvNetClassifier(epochs=2, random_state=0, verbose=False)
    >>> model = model.fit(digits.images / 16.0, digits.target, engine="local")
    >>> model.predict(digits.images[:2] / 16.0).shape
    (2,)
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **_COMMON_CONSTRAINTS,
        "image_shape": [Type((tuple, list), "a tuple (C, H, W) or (H, W)"), Type(type(None))],
        "channels": _SIZES,
        "kernel_size": [Interval("int", 1, None)],
        "pool": [Type(bool)],
    }

    def __init__(
        self,
        image_shape: tuple[int, ...] | None = None,
        channels: tuple[int, ...] = (16, 32),
        kernel_size: int = 3,
        pool: bool = True,
        hidden_layer_sizes: tuple[int, ...] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_size: int = 64,
        epochs: int = 20,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        early_stopping: bool = True,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        device: str = "auto",
        random_state: int | None = None,
        parallelism: str = "data",
        stages: int = 2,
        micro_batches: int = 4,
        verbose: bool | int = True,
    ) -> None:
        self.image_shape = image_shape
        self.channels = channels
        self.kernel_size = kernel_size
        self.pool = pool
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.parallelism = parallelism
        self.stages = stages
        self.micro_batches = micro_batches
        self.verbose = verbose

    def _declared_shape(self) -> list[int] | None:
        if self.image_shape is None:
            return None
        shape = _check_sizes(type(self).__name__, "image_shape", self.image_shape)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"The 'image_shape' parameter of {type(self).__name__} must be (C, H, W) or "
                f"(H, W). Got {self.image_shape!r}."
            )
        return [1, *shape] if len(shape) == 2 else shape

    def _training_input(self, X: Any, scale_pixels: bool) -> tuple[Any, dict]:
        from shardlearn.models._training.fitting import is_dataset

        self._input_shape = self._declared_shape()
        self._input_scale = None
        if is_dataset(X):
            from shardlearn.data.images import image_info

            info = image_info(X)
            if info is not None:
                self._input_shape = list(info["shape"])
                # Raw 0..255 pixel columns (no preprocessor): the network scales them itself.
                self._input_scale = 1.0 / 255.0 if scale_pixels else None
        elif hasattr(X, "ndim") and X.ndim in (3, 4):
            self._input_shape = [1, *X.shape[1:]] if X.ndim == 3 else list(X.shape[1:])
            X = np.asarray(X).reshape(X.shape[0], -1)
        return X, {"kind": "block"}

    def _prediction_input(self, X: Any) -> Any:
        if hasattr(X, "ndim") and X.ndim in (3, 4):
            return np.asarray(X).reshape(X.shape[0], -1)
        return X

    def _architecture(self, n_features: int, n_classes: int) -> dict:
        owner = type(self).__name__
        # Flat rows of unknown layout: a one-row image (see the class notes).
        shape = self._input_shape or [1, 1, int(n_features)]
        if int(np.prod(shape)) != n_features:
            raise DataError(
                f"{owner}: image_shape {tuple(shape)} holds {int(np.prod(shape))} pixels but "
                f"the rows have {n_features} features."
            )
        return {
            "kind": "convnet",
            "image_shape": [int(s) for s in shape],
            "channels": _check_sizes(owner, "channels", self.channels),
            "kernel_size": int(self.kernel_size),
            "pool": bool(self.pool),
            "hidden": _check_sizes(owner, "hidden_layer_sizes", self.hidden_layer_sizes),
            "activation": self.activation,
            "dropout": float(self.dropout),
            "n_classes": int(n_classes),
            "input_scale": self._input_scale,
        }
