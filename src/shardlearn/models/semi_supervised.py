"""Self-training: a classifier that pseudo-labels the unlabelled rows it is confident about.

One fit (after scikit-learn's ``SelfTrainingClassifier``, with re-labelling):

1. The unlabelled rows are written once to a WorkerGroup of their own (their shards stay on
   the workers for the whole fit).
2. Round r: the base classifier is trained (distributed, like any shardlearn classifier) on
   the labelled rows plus the rows pseudo-labelled in round r-1; the fitted model is put on
   the unlabelled group and every worker predicts its shards and returns the rows whose
   highest class probability is at least ``threshold``, with that class.
3. It stops after ``max_rounds`` rounds, or when a round adds no new confident rows.

Unlike scikit-learn, a row's pseudo-label is recomputed each round from the current model
(nothing is kept in ``state.cache`` between rounds, so a replacement worker simply predicts
its shards again). ``history_`` records per round the pseudo-labelled rows, the rows added
compared with the previous round and, with ``validation_data``, the accuracy on it.

From a Dataset (``Pipeline(pre, SelfTrainingClassifier()).fit(ds)``, ``shardlearn train``),
the unlabelled rows are the dataset's ``unlabeled`` split (``ingest --allow-unlabeled``) and
never leave the workers: the training group also gets the unlabeled shards; each round the
model is put on the workers, every worker transforms its unlabeled shards with the fitted
preprocessor (shard by shard when they exceed the block budget), keeps the rows predicted with
probability >= ``threshold`` and appends them, with their predicted class, to its own train
block (:data:`shardlearn.models._training.fitting.EXTRA_TRAIN_ROWS`); the base is then retrained on
the group as usual. Only the model and per-round row counts cross the network. The valid score in
``history_`` comes from the dataset's ``valid`` split, scored on the workers.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from shardlearn._validation import Interval, Type
from shardlearn.base import BaseEstimator, check_is_fitted, clone
from shardlearn.engine import VERBOSE_CONSTRAINTS, StepProgress, show_progress
from shardlearn.exceptions import ArtifactError, DataError
from shardlearn.models._base import ClassifierMixin, _to_json
from shardlearn.models._registry import model_class, model_class_by_type, register_model
from shardlearn.models._training.fitting import (
    EXTRA_TRAIN_ROWS,
    as_feature_matrix,
    extra_training_rows,
    is_dataset,
    label_vector,
    prepare_training,
)
from shardlearn.models.cluster import dense_blocks, prepare_unsupervised

__all__ = ["SelfTrainingClassifier", "unlabelled_mask"]

_MODEL_KEY = "shardlearn.self_training.model"
_THRESHOLD_KEY = "shardlearn.self_training.threshold"
_EST = "estimator/"
_UNLABELED = "unlabeled"  # shardlearn.data's UNLABELED_SPLIT (models never import data eagerly)
NO_UNLABELED_NOTE = (
    "the dataset has no unlabeled split (ingest with --allow-unlabeled to keep rows without a "
    "label), so only the base was trained, on the labelled rows"
)


def _round_figures(record: dict) -> str:
    """A round of ``history_`` as its progress bar shows it."""
    figures = f"{record['rows_pseudo_labelled']:,} rows pseudo-labelled"
    if record.get("valid_accuracy") is not None:
        figures += f"  valid acc {record['valid_accuracy']:.4f}"
    return figures


def unlabelled_mask(y: Any) -> np.ndarray:
    """True where a label is missing: None, NaN, or -1 (scikit-learn's convention)."""
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        return y == -1
    if y.dtype.kind == "f":
        return np.isnan(y) | (y == -1)
    return np.array([v is None or v != v or (isinstance(v, int) and v == -1) for v in y])


def _pseudo_label_worker(state: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """This worker's rows predicted with probability >= threshold, and their class index."""
    model = state.context[_MODEL_KEY]
    rows, labels = [], []
    for X, _w in dense_blocks(state):
        if X.shape[0] == 0:
            continue
        proba = model.predict_proba(X)
        keep = proba.max(1) >= threshold
        rows.append(X[keep])
        labels.append(proba.argmax(1)[keep])
    if not rows:
        return np.empty((0, 0)), np.empty(0, dtype=np.int64)
    return np.vstack(rows), np.concatenate(labels)


def _pseudo_label_shards(state: Any) -> Any:
    """This worker's unlabeled rows predicted with probability >= threshold, as a labelled
    FeatureBlock (``y`` = index in the dataset's classes); the EXTRA_TRAIN_ROWS function."""
    from shardlearn.preprocess import FeatureBlock, iter_blocks

    model = state.context[_MODEL_KEY]
    threshold = float(state.context[_THRESHOLD_KEY])
    position = {str(c): i for i, c in enumerate(state.context["classes"])}
    to_dataset_class = np.array([position[str(c)] for c in model.classes_], dtype=np.int64)
    kept = []
    for block in iter_blocks(state, _UNLABELED):  # cached, or shard by shard when too big
        if block.n_rows == 0:
            continue
        proba = model.predict_proba(block.X)
        rows = np.flatnonzero(proba.max(1) >= threshold)
        labels = to_dataset_class[proba.argmax(1)[rows]]
        kept.append(FeatureBlock(block.X[rows], labels, None, block.feature_names))
    pre = state.context["preprocessor"]
    return FeatureBlock.concatenate(kept, list(pre.feature_names_out_))


def _count_pseudo_labelled(state: Any) -> int:
    extra = extra_training_rows(state, "train")
    return 0 if extra is None else extra.n_rows


def _concat_pseudo(a: tuple, b: tuple) -> tuple:
    if a[0].shape[0] == 0:
        return b
    if b[0].shape[0] == 0:
        return a
    return np.vstack([a[0], b[0]]), np.concatenate([a[1], b[1]])


@register_model("self_training")
class SelfTrainingClassifier(ClassifierMixin, BaseEstimator):
    """Self-training around any probabilistic shardlearn classifier.

    Parameters
    ----------
    base : str or classifier, default="logistic"
        The base classifier: a registered model name (``shardlearn train --model`` names) or an
        unfitted estimator with ``predict_proba``.
    threshold : float, default=0.9
        Rows predicted with at least this probability are pseudo-labelled.
    max_rounds : int, default=5
        Training rounds after the first fit on the labelled rows.
    verbose : bool or int, default=True
        Show a progress bar on stderr over the rounds with the rows pseudo-labelled, when
        stderr is a terminal (see :func:`shardlearn.engine.show_progress`); 0 or False never.
        The base classifier's own bars follow its own ``verbose``.

    Attributes
    ----------
    estimator_ : classifier
        The base classifier fitted in the last round.
    classes_, n_features_in_, feature_names_in_
    history_ : list of dict
        Per round: ``round``, ``rows_pseudo_labelled``, ``rows_added``, ``valid_accuracy``.
    n_rounds_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.models import SelfTrainingClassifier
    >>> X = np.array([[0.0], [0.2], [2.8], [3.0]]); y = np.array([0, -1, -1, 1])
    >>> SelfTrainingClassifier(threshold=0.5).fit(X, y, engine="local").predict(X).tolist()
    [0, 0, 1, 1]
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "base": [Type(str), Type(BaseEstimator, "a shardlearn classifier")],
        "threshold": [Interval("real", 0, 1, closed="right")],
        "max_rounds": [Interval("int", 0, None, closed="left")],
        "verbose": VERBOSE_CONSTRAINTS,
    }

    def __init__(
        self,
        base: Any = "logistic",
        threshold: float = 0.9,
        max_rounds: int = 5,
        verbose: bool | int = True,
    ):
        self.base = base
        self.threshold = threshold
        self.max_rounds = max_rounds
        self.verbose = verbose

    @property
    def _preprocess_profile(self) -> str:
        """The base classifier's preprocessing profile (shardlearn.preprocess.profiles)."""
        if not isinstance(self.base, str):
            return getattr(self.base, "_preprocess_profile", "compact")
        try:
            return getattr(model_class(self.base), "_preprocess_profile", "compact")
        except ValueError:  # an unknown name: fit names the valid ones
            return "compact"

    def _rounds_bar(self, callback: Any = None) -> StepProgress:
        """The bar over the rounds; a caller that passes a callback (the CLI) shows its own."""
        show = callback is None and show_progress(self.verbose)
        return StepProgress("SelfTrainingClassifier rounds", self.max_rounds, enabled=show)

    def _new_base(self) -> Any:
        base = model_class(self.base)() if isinstance(self.base, str) else clone(self.base)
        if not hasattr(base, "predict_proba"):
            raise DataError(
                f"SelfTrainingClassifier needs a base with predict_proba; "
                f"{type(base).__name__} has none (use e.g. base='logistic')."
            )
        return base

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        **_ignored: Any,
    ) -> SelfTrainingClassifier:
        """Fit on arrays (rows whose label is None, NaN or -1 are unlabelled) or a Dataset.

        Parameters
        ----------
        X : ndarray or csr_matrix of shape (n_samples, n_features), or Dataset
            A Dataset's ``unlabeled`` split holds its unlabelled rows (numeric feature
            columns only; use ``Pipeline`` to encode the others).
        y : array-like of shape (n_samples,), optional
            For arrays only.
        engine : Engine or str, optional
        validation_data : (X_valid, y_valid), optional
            Scored after every round into ``history_``.

        Returns
        -------
        self
        """
        self._validate_params()
        if "sample_weight" in _ignored:
            raise TypeError(
                "SelfTrainingClassifier.fit does not take sample_weight: the pseudo-labelled rows "
                "it adds have no weights."
            )
        if is_dataset(X):
            if y is not None:
                raise DataError("SelfTrainingClassifier.fit: a Dataset carries its label; no y.")
            # A bare estimator uses the numeric columns (a clear error names the others).
            with prepare_training(self, X, engine=engine) as ctx:
                return self._fit_context(ctx)
        if y is None:
            raise DataError(
                "SelfTrainingClassifier.fit requires y to be passed, but the target y is None. "
                "It takes arrays X, y (None/NaN/-1 = unlabelled), or a "
                "Dataset with an 'unlabeled' split (ingest --allow-unlabeled); for raw columns "
                "use shardlearn.Pipeline(Preprocessor.auto(ds.schema), SelfTrainingClassifier())."
            )
        X = as_feature_matrix(type(self).__name__, X)
        X = X.toarray() if hasattr(X, "toarray") else X
        y = label_vector(type(self).__name__, y)
        missing = unlabelled_mask(y)
        if missing.shape[0] != X.shape[0]:
            raise DataError(f"SelfTrainingClassifier: X has {X.shape[0]} rows but y has {len(y)}.")
        if missing.all():
            raise DataError("SelfTrainingClassifier: every row is unlabelled; label some rows.")
        X_lab, y_lab = X[~missing], y[~missing]
        if y_lab.dtype == object:
            y_lab = np.asarray(y_lab.tolist())
        self.history_: list[dict] = []
        model = self._new_base().fit(X_lab, y_lab, engine=engine)
        self._record(0, 0, 0, model, validation_data)
        if missing.any() and self.max_rounds > 0:
            with prepare_unsupervised(self, X[missing], engine=engine) as ctx:
                model = self._rounds(ctx, model, X_lab, y_lab, engine, validation_data)
        self.estimator_ = model
        self.classes_ = np.asarray(model.classes_)
        self.n_features_in_ = int(X.shape[1])
        self.feature_names_in_ = list(getattr(model, "feature_names_in_", []))
        self.n_rounds_ = len(self.history_) - 1
        return self

    def _fit_context(self, ctx: Any, callback: Any = None) -> SelfTrainingClassifier:
        """Fit on a prepared Dataset context (``Pipeline``, ``shardlearn train``).

        The unlabelled rows are the dataset's ``unlabeled`` split (see the module notes).
        Without one, only the base is trained (round 0), with a warning and a ``note`` in
        ``history_``.
        """
        self._validate_params()
        ds = ctx.dataset
        unlabeled = ds is not None and bool(getattr(ds, "has_unlabeled", False))
        if unlabeled:
            labelled = [shard for split in ctx.splits for shard in ds.shards(split)]
            ctx.group.assign(labelled + ds.shards(_UNLABELED))
        model = self._new_base()
        model._fit_context(ctx, callback=callback)
        self.history_ = []
        self._record_on_group(0, 0, 0, model, ctx)
        if not unlabeled:
            warnings.warn(
                f"SelfTrainingClassifier: {NO_UNLABELED_NOTE}.", UserWarning, stacklevel=3
            )
            self.history_[0]["note"] = NO_UNLABELED_NOTE
        elif self.max_rounds > 0:
            try:
                model = self._dataset_rounds(ctx, model, callback)
            finally:
                # Later users of the group (the CLI's train score) see the labelled rows only.
                ctx.group.put(EXTRA_TRAIN_ROWS, None)
        self.estimator_ = model
        self.classes_ = np.asarray(model.classes_)
        self.n_features_in_ = int(ctx.n_features)
        self.feature_names_in_ = list(ctx.feature_names)
        self.n_rounds_ = len(self.history_) - 1
        return self

    def _rounds(
        self, ctx: Any, model: Any, X_lab: np.ndarray, y_lab: np.ndarray, engine: Any, valid: Any
    ) -> Any:
        previous = 0
        with self._rounds_bar() as bar:
            for round_index in range(1, self.max_rounds + 1):
                ctx.group.put(_MODEL_KEY, model)
                rows, labels = ctx.group.reduce(
                    _pseudo_label_worker, float(self.threshold), combine=_concat_pseudo
                )
                if rows.shape[0] == previous and round_index > 1:
                    break  # the same confident set as the last round: the model would not change
                if rows.shape[0] == 0:
                    break
                X_round = np.vstack([X_lab, rows])
                y_round = np.concatenate([y_lab, np.asarray(model.classes_)[labels]])
                model = self._new_base().fit(X_round, y_round, engine=engine)
                self._record(round_index, rows.shape[0], rows.shape[0] - previous, model, valid)
                previous = rows.shape[0]
                bar.update(round_index, info=_round_figures(self.history_[-1]))
        return model

    def _dataset_rounds(self, ctx: Any, model: Any, callback: Any) -> Any:
        ctx.group.put(_THRESHOLD_KEY, float(self.threshold))
        previous = 0
        with self._rounds_bar(callback) as bar:
            for round_index in range(1, self.max_rounds + 1):
                ctx.group.put(_MODEL_KEY, model)
                # The round number is the token: every round's pseudo-labels are computed afresh.
                ctx.group.put(EXTRA_TRAIN_ROWS, (_pseudo_label_shards, round_index))
                rows = int(ctx.group.reduce(_count_pseudo_labelled))
                if rows == 0 or (rows == previous and round_index > 1):
                    break  # nothing confident, or the same confident set: the model stays
                candidate = self._new_base()
                candidate._fit_context(ctx, callback=callback)
                model = candidate
                self._record_on_group(round_index, rows, rows - previous, model, ctx)
                previous = rows
                bar.update(round_index, info=_round_figures(self.history_[-1]))
        return model

    def _record_on_group(self, index: int, rows: int, added: int, model: Any, ctx: Any) -> None:
        """Like :meth:`_record`, with the valid accuracy scored on the workers' valid blocks."""
        score = None
        if "valid" in ctx.splits:
            from shardlearn.models._training.scoring import accuracy_and_f1, block_confusion

            score = accuracy_and_f1(block_confusion(ctx, model, "valid"))["accuracy"]
        self._record(index, rows, added, model, None)
        self.history_[-1]["valid_accuracy"] = score

    def _record(self, index: int, rows: int, added: int, model: Any, valid: Any) -> None:
        score = None
        if valid is not None:
            score = float(np.mean(model.predict(valid[0]) == np.asarray(valid[1])))
        self.history_.append(
            {
                "round": index,
                "rows_pseudo_labelled": int(rows),
                "rows_added": int(added),
                "valid_accuracy": score,
            }
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the final base model."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    # ------------------------------------------------------------------ artifact hooks
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """The base model's artifact under ``estimator/`` plus params and history."""
        check_is_fitted(self)
        est_meta, est_arrays, est_files = self.estimator_._to_artifact()
        base = self.base
        if not isinstance(base, str):
            base = {"type": type(base).__name__, "params": _to_json(base.get_params(deep=False))}
        meta = {
            "type": type(self).__name__,
            "params": {"base": base, "threshold": self.threshold, "max_rounds": self.max_rounds},
            "estimator": {"type": type(self.estimator_).__name__, "meta": est_meta},
            "attributes": {
                "classes_": _to_json(self.classes_),
                "history_": self.history_,
                "n_rounds_": self.n_rounds_,
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": self.feature_names_in_,
            },
        }
        arrays = {_EST + k: v for k, v in est_arrays.items()}
        files = {_EST + k: v for k, v in est_files.items()}
        return meta, arrays, files

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> SelfTrainingClassifier:
        """Rebuild a fitted model from :meth:`_to_artifact` output."""
        if meta.get("type") != cls.__name__:
            raise ArtifactError(f"Artifact holds a {meta.get('type')!r}, not a {cls.__name__}.")
        params = dict(meta["params"])
        if isinstance(params["base"], dict):
            base_cls = model_class_by_type(params["base"]["type"])
            params["base"] = base_cls(**params["base"]["params"])
        model = cls(**params)

        def part(source: dict) -> dict:
            return {k[len(_EST) :]: v for k, v in source.items() if k.startswith(_EST)}

        est_cls = model_class_by_type(meta["estimator"]["type"])
        model.estimator_ = est_cls._from_artifact(
            meta["estimator"]["meta"], part(arrays), part(files)
        )
        attributes = meta["attributes"]
        model.classes_ = np.asarray(attributes["classes_"])
        model.history_ = list(attributes["history_"])
        model.n_rounds_ = int(attributes["n_rounds_"])
        model.n_features_in_ = int(attributes["n_features_in_"])
        model.feature_names_in_ = list(attributes["feature_names_in_"])
        return model
