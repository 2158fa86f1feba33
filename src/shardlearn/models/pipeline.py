"""Pipeline: a Preprocessor and a classifier trained together, used as one model.

``Pipeline(Preprocessor.auto(ds.schema), LogisticRegression()).fit(ds)`` starts one
WorkerGroup, fits the preprocessor on the workers' train shards (merged partial statistics),
broadcasts it, and trains the classifier on the same workers' cached feature blocks: the shards
are read once. ``predict(table)`` transforms raw records with the fitted preprocessor and calls
the classifier, locally.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import ArtifactError, DataError
from shardlearn.models._fitting import is_dataset, prepare_training

__all__ = ["Pipeline"]

_PRE = "preprocessor/"
_EST = "estimator/"


class Pipeline(BaseEstimator):
    """Preprocessing followed by a classifier.

    Parameters
    ----------
    preprocessor : Preprocessor
        Fitted on the training shards during :meth:`fit` (unless already fitted).
    estimator : classifier
        Any shardlearn classifier.

    Attributes
    ----------
    classes_ : ndarray
        The classifier's classes.

    Examples
    --------
    >>> import shardlearn as sl                                          # doctest: +SKIP
    >>> ds = sl.Dataset.open("data/adult")                               # doctest: +SKIP
    >>> model = sl.Pipeline(sl.Preprocessor.auto(ds.schema),
    ...                     sl.LogisticRegression(C=1.0)).fit(ds)        # doctest: +SKIP
    >>> model.predict(ds.read("test"))                                   # doctest: +SKIP
    """

    _estimator_type = "classifier"

    def __init__(self, preprocessor: Any, estimator: Any) -> None:
        self.preprocessor = preprocessor
        self.estimator = estimator

    def fit(
        self,
        data: Any,
        y: Any = None,
        *,
        engine: Any = None,
        callback: Callable | None = None,
    ) -> Pipeline:
        """Fit preprocessing and classifier on a Dataset, or on an in-memory table.

        Parameters
        ----------
        data : Dataset or table-like
            A :class:`shardlearn.data.Dataset`; or a pyarrow Table / DataFrame / dict of
            columns, written once to a temporary dataset.
        y : str or array-like, optional
            For a table: the label column name (default: the preprocessor's label), or the
            labels themselves.
        engine : Engine or str, optional
        callback : callable, optional
            Passed to the classifier's iterations (progress bars).
        """
        if not is_dataset(data):
            with tempfile.TemporaryDirectory(prefix="shardlearn-pipeline-") as tmp:
                return self.fit(
                    self._table_to_dataset(data, y, tmp, engine), engine=engine, callback=callback
                )
        if y is not None:
            raise DataError("Pipeline.fit: a Dataset carries its label; do not pass y.")
        return self._fit_dataset(data, engine, callback)

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
        continuing = getattr(self.estimator, "warm_start", False) and hasattr(
            self.estimator, "classes_"
        )
        ctx = prepare_training(
            self.estimator,
            data,
            engine=engine,
            preprocessor=self.preprocessor,
            classes=self.estimator.classes_ if continuing else None,
        )
        with ctx:
            self.estimator._fit_context(ctx, callback=callback)
            self.preprocessor = ctx.preprocessor
            self.classes_ = self.estimator.classes_
            return self if after is None else after(ctx)

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
        if label is None or label not in table.column_names:
            raise DataError(
                "Pipeline.fit(table): name the label column with y='column' (or pass the labels "
                "as y); the table has " + ", ".join(table.column_names) + "."
            )
        workers = max(1, get_engine(engine).n_workers)
        return write_dataset(table, f"{out}/data", label=label, partitions=workers)

    # ------------------------------------------------------------------ prediction
    def _features(self, data: Any) -> Any:
        check_is_fitted(self)
        return self.preprocessor.transform(data)

    def predict(self, data: Any) -> np.ndarray:
        """Predicted labels for raw records (pyarrow Table/RecordBatch, DataFrame, dict)."""
        return self.estimator.predict(self._features(data))

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities for raw records, columns in the order of ``classes_``."""
        return self.estimator.predict_proba(self._features(data))

    def decision_function(self, data: Any) -> np.ndarray:
        """The classifier's scores for raw records."""
        return self.estimator.decision_function(self._features(data))

    def score(self, data: Any, y: Any) -> float:
        """Accuracy on raw records."""
        return float(np.mean(self.predict(data) == np.asarray(y)))

    # ------------------------------------------------------------------ artifact hooks
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """Both parts' artifacts, arrays and files prefixed ``preprocessor/``, ``estimator/``."""
        check_is_fitted(self)
        pre_meta, pre_arrays, pre_files = self.preprocessor._to_artifact()
        est_meta, est_arrays, est_files = self.estimator._to_artifact()
        meta = {
            "type": "Pipeline",
            "preprocessor": {"type": type(self.preprocessor).__name__, "meta": pre_meta},
            "estimator": {"type": type(self.estimator).__name__, "meta": est_meta},
            "classes": est_meta.get("attributes", {}).get("classes_"),
        }
        arrays = {_PRE + k: v for k, v in pre_arrays.items()}
        arrays |= {_EST + k: v for k, v in est_arrays.items()}
        files = {_PRE + k: v for k, v in pre_files.items()}
        files |= {_EST + k: v for k, v in est_files.items()}
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

        pre = Preprocessor._from_artifact(
            meta["preprocessor"]["meta"], part(_PRE, arrays), part(_PRE, files)
        )
        est_cls = model_class_by_type(meta["estimator"]["type"])
        est = est_cls._from_artifact(
            meta["estimator"]["meta"], part(_EST, arrays), part(_EST, files)
        )
        model = cls(pre, est)
        model.classes_ = est.classes_
        return model
