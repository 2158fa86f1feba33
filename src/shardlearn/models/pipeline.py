"""Pipeline: a Preprocessor, optional transformers (PCA) and a final estimator, as one model.

``Pipeline(Preprocessor.auto(ds.schema), LogisticRegression()).fit(ds)`` starts one
WorkerGroup, fits the preprocessor on the workers' train shards (merged partial statistics),
broadcasts it, and trains the classifier on the same workers' cached feature blocks. Before
that, a preprocessor from ``Preprocessor.auto`` takes the defaults of the model it feeds
(``_preprocess_profile``: 256 hashed text terms for trees and nets, 2**18 for linear models),
and a model that densifies its features is refused when they would exceed the memory budget
(:mod:`shardlearn.preprocess.profiles`).

``Pipeline(Preprocessor.auto(ds.schema), PCA(n_components=10), LogisticRegression())`` adds
steps between them, like scikit-learn's ``make_pipeline``. On the same workers: the PCA is
fitted on the preprocessed blocks (merged moments), then a :class:`FeatureChain` -- the fitted
preprocessor followed by the fitted PCA -- replaces the preprocessor in the workers' context.
Every trainer loads its blocks through ``state.context["preprocessor"]``
(:func:`shardlearn.preprocess.load_block`), so the classifier then trains on the projected
blocks, built on the workers. Why a chain and not "transform the cached block in place": a
replacement worker (after WorkerLost) and an out-of-core pass rebuild their blocks from the
context, and must get the projected features too. The price is one more read of the shards.

Inside a warm scope (a pipeline run, a ``with engine(...)`` block, a search;
:mod:`shardlearn._warm`) an unfitted :class:`~shardlearn.preprocess.Preprocessor` is fitted
once per scope for its parameters and the dataset's training shards: a second Pipeline fit with
an identical preprocessor on the same data gets a copy of the first one's fitted preprocessor
(``preprocessor_builds`` in the scope's counters), equal to what its own fit would give, and
skips the preprocessing pass over the shards.

The final estimator may also be a :class:`~shardlearn.models.KMeans` (``predict`` gives cluster
ids) or a :class:`~shardlearn.models.PCA` (``transform`` gives projections, no ``predict``).
``predict(table)`` and friends apply every step locally. Like scikit-learn's ``Pipeline``,
``named_steps`` names every step and the final step's extra methods (``importances()`` of a
forest or booster) are the Pipeline's own, present only when that step has them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.utils import Bunch, get_tags

from shardlearn import _warm
from shardlearn.base import BaseEstimator
from shardlearn.exceptions import ArtifactError, DataError, NotFittedError
from shardlearn.models._training.execution import execution_engine, recording
from shardlearn.models._training.fitting import is_dataset, prepare_training

__all__ = ["FeatureChain", "Pipeline"]

_PRE = "preprocessor/"
_EST = "estimator/"
_STEP = "transformers/{}/"


def step_feature_names(transformer: Any) -> list[str]:
    """Output feature names of a fitted transformer step (``pca0``, ``pca1``, ...)."""
    names = getattr(transformer, "get_feature_names_out", None)
    if callable(names):
        return [str(n) for n in names()]
    width = int(transformer.transform(np.zeros((1, transformer.n_features_in_))).shape[1])
    return [f"{type(transformer).__name__.lower()}{i}" for i in range(width)]


class FeatureChain:
    """A fitted preprocessor followed by fitted transformers, as one feature map.

    It has the small interface :func:`shardlearn.preprocess.load_block` needs
    (``transform``, ``input_columns``, ``label_``, ``feature_names_out_``,
    ``n_features_out_``, ``fingerprint``), so a WorkerGroup given it as
    ``"preprocessor"`` builds its feature blocks with every step applied.

    Parameters
    ----------
    preprocessor : Preprocessor
        Fitted.
    transformers : list
        Fitted transformers (``transform(X)`` on the previous step's output).
    """

    sparse_ = False

    def __init__(self, preprocessor: Any, transformers: list[Any]) -> None:
        self.preprocessor = preprocessor
        self.transformers = list(transformers)
        self.label_ = getattr(preprocessor, "label_", None)
        self.input_columns = list(preprocessor.input_columns)
        self.feature_names_out_ = (
            step_feature_names(self.transformers[-1])
            if self.transformers
            else list(preprocessor.feature_names_out_)
        )
        self.n_features_out_ = len(self.feature_names_out_)
        digest = hashlib.sha256(str(preprocessor.fingerprint).encode())
        for step in self.transformers:
            _meta, arrays, _files = step._to_artifact()
            for name in sorted(arrays):
                digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
        self.fingerprint = "chain-" + digest.hexdigest()[:16]

    def transform(self, batch: Any) -> Any:
        """Raw records -> preprocessed features -> every transformer, in order."""
        X = self.preprocessor.transform(batch)
        for step in self.transformers:
            X = step.transform(X)
        return X

    def estimated_nbytes(self, rows: int) -> int:
        """Bytes of a dense float64 block of ``rows`` rows (the projections are dense)."""
        return int(rows) * self.n_features_out_ * 8


def _preprocessor_key(pre: Any, data: Any) -> tuple | None:
    """What fitting ``pre`` on ``data``'s training shards depends on, for reusing the fit
    within a warm scope; None when it is not reused (already fitted, or not a
    :class:`~shardlearn.preprocess.Preprocessor`, whose fit we cannot describe).

    A Preprocessor's fit reads only the feature columns of the training split, shard by shard,
    merged in shard order (the worker count and the model's classes and sample weights do not
    enter it): its parameters and the shards' digests decide it. One whose parameters are not
    plain JSON is not reused: a ``repr`` may print two different objects alike.
    """
    from shardlearn.preprocess import Preprocessor

    if type(pre) is not Preprocessor or hasattr(pre, "transformers_"):
        return None
    try:  # a value that is not plain JSON (an object) has no trustworthy key: no reuse
        params = json.dumps(pre.get_params(deep=False), sort_keys=True)
    except (TypeError, ValueError):
        return None
    shards = tuple((s.index, s.uri, s.sha256, s.bytes) for s in data.shards("train"))
    return ("pipeline_preprocessor", params, str(data.uri), data.manifest_sha256, "train", shards)


def _preprocessor_nbytes(pre: Any) -> int:
    """What keeping a fitted preprocessor costs: its arrays and its metadata."""
    meta, arrays = pre.get_state()
    return sum(np.asarray(a).nbytes for a in arrays.values()) + len(json.dumps(meta, default=str))


def _forget_training_blocks(state: Any) -> None:
    """Drop this worker's cached training blocks: the features they hold are out of date.

    ``training_block`` caches by split only (under ``_fitting._CACHE_KEY``); the next call
    rebuilds the block from the new ``state.context["preprocessor"]``.
    """
    from shardlearn.models._training.fitting import _CACHE_KEY

    for key in [k for k in state.cache if isinstance(k, tuple) and k and k[0] == _CACHE_KEY]:
        del state.cache[key]


def _is_fitted(step: Any) -> bool:
    return hasattr(step, "n_features_in_")


class _IfFinalHas:
    """A Pipeline method that exists only when the final step has it (scikit-learn's
    ``available_if``): ``hasattr(pipe, "predict_proba")`` is False for a LinearSVC, KMeans or
    PCA pipeline, so callers that probe for a method (evaluation, serving) take their other path.
    """

    def __init__(self, function: Callable, hint: str) -> None:
        self.function = function
        self.hint = hint
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __get__(self, pipeline: Any, owner: type | None = None) -> Any:
        if pipeline is None:
            return self.function
        final = pipeline.estimator
        if not callable(getattr(final, self.__name__, None)):
            raise AttributeError(
                f"{type(final).__name__} has no {self.__name__}(), so neither has this Pipeline; "
                f"{self.hint}"
            )
        return self.function.__get__(pipeline, owner)


def _if_final_has(hint: str) -> Callable[[Callable], _IfFinalHas]:
    return lambda function: _IfFinalHas(function, hint)


class Pipeline(BaseEstimator):
    """Preprocessing, optional transformers, then a final estimator.

    Parameters
    ----------
    preprocessor : Preprocessor
        Fitted on the training shards during :meth:`fit` (unless already fitted).
    *steps : estimators
        Zero or more transformers (e.g. :class:`~shardlearn.models.PCA`) followed by the
        final estimator: any shardlearn classifier, or ``KMeans`` / ``PCA``.
    transformers : sequence, default ()
        Keyword form of the middle steps (what :meth:`get_params` and ``clone`` use).
    estimator : estimator, optional
        Keyword form of the final step.

    Attributes
    ----------
    classes_ : ndarray
        The classifier's classes (absent when the final step is KMeans or PCA).
    named_steps : Bunch
        Every step by name, as scikit-learn's ``Pipeline.named_steps``: ``"preprocessor"``,
        then each step's lower-cased class name (``"pca"``, ``"logisticregression"``), numbered
        ``"pca-1"``, ``"pca-2"`` when a name repeats.

    Examples
    --------
    >>> import shardlearn as sl
    >>> from shardlearn.data.demo import write_loans_csv
    >>> ds = sl.ingest(write_loans_csv("loans.csv", rows=400), label="default", out="data/loans")
    >>> with sl.engine("local", workers=1):
    ...     model = sl.Pipeline(sl.Preprocessor.auto(ds.schema),
    ...                         sl.LogisticRegression(C=1.0)).fit(ds)
    >>> model.predict(ds.read("test"))[:3].tolist()
    ['no', 'no', 'no']

    A transformer between the preprocessor and the classifier (here on three numeric columns):

    >>> numeric = sl.Preprocessor({c: "numeric" for c in ["age", "income", "credit_score"]},
    ...                           label="default")
    >>> reduced = sl.Pipeline(numeric, sl.PCA(n_components=2),
    ...                       sl.LogisticRegression()).fit(ds, engine="local")
    >>> reduced.named_steps["pca"].components_.shape
    (2, 3)
    """

    def __init__(
        self,
        preprocessor: Any,
        *steps: Any,
        transformers: Any = (),
        estimator: Any = None,
    ) -> None:
        if steps and (estimator is not None or tuple(transformers)):
            raise TypeError(
                "Pipeline takes its steps either positionally, Pipeline(pre, PCA(), model), "
                "or as transformers=/estimator= keywords, not both."
            )
        if steps:
            transformers, estimator = steps[:-1], steps[-1]
        self.preprocessor = preprocessor
        self.transformers = tuple(transformers)
        self.estimator = estimator

    @property
    def named_steps(self) -> Bunch:
        """Every step by name (see the class docstring); ``model.named_steps.pca``."""
        steps = [*self.transformers, self.estimator]
        names = [type(step).__name__.lower() for step in steps]
        total = Counter(["preprocessor", *names])
        seen: Counter[str] = Counter()
        for index, name in enumerate(names):
            if total[name] > 1:  # scikit-learn's make_pipeline numbering: pca-1, pca-2
                seen[name] += 1
                names[index] = f"{name}-{seen[name]}"
        return Bunch(preprocessor=self.preprocessor, **dict(zip(names, steps, strict=True)))

    @property
    def _estimator_type(self) -> str:
        return getattr(self.estimator, "_estimator_type", "classifier")

    def __sklearn_tags__(self) -> Any:
        """scikit-learn tags: those of the final estimator (a classifier pipeline is one)."""
        tags = super().__sklearn_tags__()
        if self.estimator is not None:
            final = get_tags(self.estimator)
            tags.estimator_type = final.estimator_type
            tags.target_tags = final.target_tags
            tags.classifier_tags = final.classifier_tags
            tags.transformer_tags = final.transformer_tags
        return tags

    def fit(
        self,
        data: Any,
        y: Any = None,
        *,
        engine: Any = None,
        callback: Callable | None = None,
    ) -> Pipeline:
        """Fit every step on a Dataset, or on an in-memory table.

        Parameters
        ----------
        data : Dataset or table-like
            A :class:`shardlearn.data.Dataset`; or a pyarrow Table / DataFrame / dict of
            columns, written once to a temporary dataset.
        y : str or array-like, optional
            For a table: the label column name (default: the preprocessor's label), or the
            labels themselves. Not needed for KMeans or PCA.
        engine : Engine or str, optional
        callback : callable, optional
            Passed to the final estimator's iterations (progress bars).
        """
        if not is_dataset(data):
            with tempfile.TemporaryDirectory(prefix="shardlearn-pipeline-") as tmp:
                return self.fit(
                    self._table_to_dataset(data, y, tmp, engine), engine=engine, callback=callback
                )
        if y is not None:
            raise DataError("Pipeline.fit: a Dataset carries its label; do not pass y.")
        return self._fit_dataset(data, engine, callback)

    def _check_steps(self) -> None:
        if self.estimator is None:
            raise DataError(
                "Pipeline needs a final estimator, e.g. Pipeline(pre, LogisticRegression())."
            )
        for step in self.transformers:
            if not (callable(getattr(step, "transform", None)) and hasattr(step, "_fit_context")):
                raise DataError(
                    "Pipeline steps between the preprocessor and the final estimator must be "
                    f"shardlearn transformers such as PCA; got {type(step).__name__}."
                )

    def _fit_dataset(
        self,
        data: Any,
        engine: Any,
        callback: Callable | None,
        after: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Fit on a Dataset; ``after(ctx)`` runs on the still-open training context.

        Returns ``self``, or ``after``'s result when given (the CLI scores the cached blocks
        this way without reading the shards again).
        """
        self._check_steps()
        self._plan_preprocessing(data)
        continuing = getattr(self.estimator, "warm_start", False) and hasattr(
            self.estimator, "classes_"
        )
        # The estimator may choose to run in this process (models._execution), before any
        # worker starts; the fit's phases are timed for its fit_timings_ and the CLI.
        with recording(), execution_engine(self.estimator, data, engine) as run_on:
            return self._fit_prepared(data, run_on, callback, after, continuing)

    def _fit_prepared(
        self, data: Any, engine: Any, callback: Callable | None, after: Any, continuing: bool
    ) -> Any:
        classes = self.estimator.classes_ if continuing else None
        with self._training_context(data, engine, classes) as ctx:
            self._fit_transformers(ctx)
            self.estimator._fit_context(ctx, callback=callback)
            self.preprocessor = ctx.preprocessor
            if hasattr(self.estimator, "classes_"):
                self.classes_ = self.estimator.classes_
            return self if after is None else after(ctx)

    def _training_context(self, data: Any, engine: Any, classes: Any) -> Any:
        """The open training context, its preprocessor fitted -- or, inside a warm scope,
        reused: a preprocessor with the same parameters fitted on the same training shards by
        an earlier fit of the scope (``preprocessor_builds``, see the module notes). Two fits
        asking at once wait for one fit (:func:`shardlearn._warm.fetch`)."""

        def prepare(preprocessor: Any) -> Any:
            return prepare_training(
                self.estimator, data, engine=engine, preprocessor=preprocessor, classes=classes
            )

        key = _preprocessor_key(self.preprocessor, data) if _warm.active() else None
        if key is None:
            return prepare(self.preprocessor)
        opened: list[Any] = []

        def fit_here() -> Any:  # the training context fits it, as outside a scope
            opened.append(prepare(self.preprocessor))
            return copy.deepcopy(opened[0].preprocessor)  # kept apart from this model's

        try:
            fitted = _warm.fetch("preprocessor_builds", key, fit_here, _preprocessor_nbytes)
        except BaseException:
            for ctx in opened:
                ctx.close()
            raise
        return opened[0] if opened else prepare(copy.deepcopy(fitted))

    def _plan_preprocessing(self, data: Any) -> None:
        """Before anything is read: defaults for the model the pipeline ends in, and a
        refusal when that model would densify more than the memory budget.

        A preprocessor made by ``Preprocessor.auto`` (``profile="auto"``) takes the declared
        profile of the step that reads its features -- the first transformer, else the final
        estimator: compact text for trees and nets, wide hashed text for linear models
        (:mod:`shardlearn.preprocess.profiles`). A duck-typed or fitted preprocessor is used
        as given.
        """
        pre = self.preprocessor
        if not hasattr(pre, "for_estimator") or hasattr(pre, "transformers_"):
            return
        # The first step after the preprocessor reads its features (a PCA before a linear
        # model densifies them).
        reader = self.transformers[0] if self.transformers else self.estimator
        self.preprocessor = pre.for_estimator(reader)
        self.preprocessor.check_memory(reader, data.num_rows("train"))

    def _fit_transformers(self, ctx: Any) -> None:
        """Fit each middle step on the current blocks, then give the workers the chain."""
        for index, step in enumerate(self.transformers):
            if not _is_fitted(step):
                step._fit_context(ctx)
            chain = FeatureChain(ctx.preprocessor, list(self.transformers[: index + 1]))
            ctx.group.run(_forget_training_blocks)
            ctx.group.put("preprocessor", chain)
            ctx.feature_names = list(chain.feature_names_out_)
            ctx.n_features = chain.n_features_out_

    def _table_to_dataset(self, table: Any, y: Any, out: str, engine: Any) -> Any:
        import pyarrow as pa

        from shardlearn.data import write_dataset
        from shardlearn.engine import get_engine

        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table) if hasattr(table, "iloc") else pa.table(table)
        label = y if isinstance(y, str) or y is None else "__label__"
        if y is not None and not isinstance(y, str):
            table = table.append_column(label, pa.array(np.asarray(y)))
        if label is None:
            label = getattr(self.preprocessor, "label", None)
        # KMeans / PCA need no label: without one the table becomes a label-free dataset.
        unsupervised = label is None and self._estimator_type != "classifier"
        if not unsupervised and (label is None or label not in table.column_names):
            raise DataError(
                "Pipeline.fit(table): name the label column with y='column' (or pass the labels "
                "as y); the table has " + ", ".join(table.column_names) + "."
            )
        workers = max(1, get_engine(engine).n_workers)
        return write_dataset(table, f"{out}/data", label=label, partitions=workers)

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        estimator = self.estimator
        if estimator is None or not (_is_fitted(estimator) or hasattr(estimator, "classes_")):
            raise NotFittedError("This Pipeline is not fitted yet. Call 'fit' before using it.")

    def transform_features(self, data: Any) -> Any:
        """What the final estimator sees: raw records through the preprocessor and every
        transformer step (local, no engine)."""
        self._check_fitted()
        X = self.preprocessor.transform(data)
        for step in self.transformers:
            X = step.transform(X)
        return X

    @_if_final_has("it is a transformer: use model.transform(records) for its projections.")
    def predict(self, data: Any) -> np.ndarray:
        """Predicted labels (a classifier) or cluster ids (KMeans) for raw records."""
        return self.estimator.predict(self.transform_features(data))

    @_if_final_has("use predict() (or decision_function() for a margin classifier).")
    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities for raw records, columns in the order of ``classes_``."""
        return self.estimator.predict_proba(self.transform_features(data))

    @_if_final_has("use predict().")
    def decision_function(self, data: Any) -> np.ndarray:
        """The classifier's scores for raw records."""
        return self.estimator.decision_function(self.transform_features(data))

    @_if_final_has("it is a classifier: use predict() or predict_proba().")
    def transform(self, data: Any) -> np.ndarray:
        """The final step's ``transform``: PCA projections, or KMeans distances to centres."""
        return self.estimator.transform(self.transform_features(data))

    @_if_final_has("only tree models (forests, gradient boosting) have importances().")
    def importances(self) -> dict[str, dict[str, float]]:
        """The final step's feature importances, by feature name.

        The names are those of the features the final step was trained on: the preprocessed
        features (``age``, ``workclass=Private``, ...), or the last middle step's outputs
        (``pca0``, ...) when there are middle steps.

        Returns
        -------
        dict
            ``{"gain": {feature: importance}, "split": {feature: number of splits}}``, as the
            final step's ``importances()``.
        """
        self._check_fitted()
        return self.estimator.importances()

    def score(self, data: Any, y: Any = None) -> float:
        """Accuracy on raw records (classifiers); the final step's ``score`` otherwise."""
        if self._estimator_type != "classifier":
            if not callable(getattr(self.estimator, "score", None)):
                raise DataError(f"{type(self.estimator).__name__} has no score().")
            return float(self.estimator.score(self.transform_features(data)))
        return float(np.mean(self.predict(data) == np.asarray(y)))

    # ------------------------------------------------------------------ artifact hooks
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """Every part's artifact; arrays and files prefixed ``preprocessor/``,
        ``transformers/<i>/`` and ``estimator/``."""
        self._check_fitted()
        parts = [(_PRE, self.preprocessor)]
        parts += [(_STEP.format(i), step) for i, step in enumerate(self.transformers)]
        parts.append((_EST, self.estimator))
        described: list[Any] = []
        arrays: dict[str, Any] = {}
        files: dict[str, Any] = {}
        for prefix, part in parts:
            part_meta, part_arrays, part_files = part._to_artifact()
            described.append({"type": type(part).__name__, "meta": part_meta})
            arrays |= {prefix + k: v for k, v in part_arrays.items()}
            files |= {prefix + k: v for k, v in part_files.items()}
        meta = {
            "type": "Pipeline",
            "preprocessor": described[0],
            "transformers": described[1:-1],
            "estimator": described[-1],
            "classes": described[-1]["meta"].get("attributes", {}).get("classes_"),
        }
        return meta, arrays, files

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Pipeline:
        """Rebuild a fitted Pipeline from :meth:`_to_artifact` output."""
        from shardlearn.models._registry import model_class_by_type
        from shardlearn.preprocess import Preprocessor

        if meta.get("type") != "Pipeline":
            raise ArtifactError(f"Artifact holds a {meta.get('type')!r}, not a Pipeline.")

        def part(prefix: str, source: dict) -> dict:
            return {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}

        def build(prefix: str, described: dict) -> Any:
            part_cls = model_class_by_type(described["type"])
            return part_cls._from_artifact(
                described["meta"], part(prefix, arrays), part(prefix, files)
            )

        pre = Preprocessor._from_artifact(
            meta["preprocessor"]["meta"], part(_PRE, arrays), part(_PRE, files)
        )
        steps = [
            build(_STEP.format(i), described)
            for i, described in enumerate(meta.get("transformers") or [])
        ]
        model = cls(pre, transformers=tuple(steps), estimator=build(_EST, meta["estimator"]))
        if hasattr(model.estimator, "classes_"):
            model.classes_ = model.estimator.classes_
        return model
